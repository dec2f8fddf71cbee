//! Two operator replicas with leader election, each behind its own TCP proxy to the API
//! server (so the leader can be partitioned) and, in front of that, an HTTP proxy that
//! can delay the live lane's watch (so one lane lags the other), restarted like a
//! kubelet would when they exit or are killed. Every incarnation has its own Lease identity (`chaos-a-003`), so
//! the journal's writes can be matched with the Lease holder at that time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{Cluster, SYSTEM_NS};
use super::model::{Captured, Stopped};
use crate::support::proxy::TcpProxy;
use crate::support::watch_delay::WatchDelayProxy;

pub const LEASE: &str = "vultr-iam-operator";

/// `--directory-max-age` of the replicas: how long after a name reuse in Vultr a name
/// may still resolve to the old object.
pub const DIRECTORY_MAX_AGE: Duration = Duration::from_secs(5);

/// What a replica logs when it picks up a new key from its key file.
const KEY_REREAD: &str = "the Vultr API key file changed";

/// Flags and environment shared by every incarnation.
pub struct Launch {
    pub binary: PathBuf,
    pub sim_url: String,
    /// `--vultr-api-key-file`: the key rotation swaps its content.
    pub api_key_file: PathBuf,
    pub namespaces: Vec<String>,
    pub resync: Duration,
    pub lease: Duration,
    /// `--renew-deadline`, if this build of the operator has the flag.
    pub renew_deadline: Option<Duration>,
}

impl Launch {
    fn args(&self, metrics: &str) -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "--vultr-api-url",
            &self.sim_url,
            "--metrics-bind-address",
            metrics,
            "--leader-election",
            "--lease-name",
            LEASE,
            "--lease-namespace",
            SYSTEM_NS,
            "--backoff-base",
            "200ms",
            "--backoff-max",
            "2s",
            "--attach-visibility-timeout",
            "5s",
            "--vultr-rate-limit",
            "25",
            "--vultr-burst",
            "25",
            "--vultr-timeout",
            "2s",
        ]
        .map(str::to_owned)
        .into();
        a.extend([
            "--vultr-api-key-file".into(),
            self.api_key_file.display().to_string(),
            "--directory-max-age".into(),
            format!("{}ms", DIRECTORY_MAX_AGE.as_millis()),
            "--resync-interval".into(),
            format!("{}ms", self.resync.as_millis()),
            "--lease-duration".into(),
            format!("{}s", self.lease.as_secs()),
        ]);
        if let Some(d) = self.renew_deadline {
            a.extend(["--renew-deadline".into(), format!("{}ms", d.as_millis())]);
        }
        for ns in &self.namespaces {
            a.extend(["--watch-namespace".into(), ns.clone()]);
        }
        a
    }
}

/// True if `run --help` of the binary mentions `flag`.
pub fn has_flag(binary: &Path, flag: &str) -> bool {
    Command::new(binary)
        .args(["run", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
        .unwrap_or(false)
}

struct Slot {
    letter: char,
    incarnation: u32,
    identity: String,
    child: Option<Child>,
    proxy: TcpProxy,
    /// In front of `proxy`; the replica's kubeconfig points here.
    lag: WatchDelayProxy,
    /// Not restarted while held (a partition in progress).
    held: bool,
    started: Instant,
}

/// What happened to the replicas, for the report.
#[derive(Debug, Default, Clone)]
pub struct ReplicaStats {
    pub starts: usize,
    pub kills: usize,
    /// Exits the run did not cause (e.g. a lost lease), with their status.
    pub exits: Vec<String>,
}

pub struct Replicas {
    slots: Vec<Slot>,
    launch: Launch,
    dir: PathBuf,
    /// Every identity ever started and its log file.
    pub incarnations: Vec<(String, PathBuf)>,
    pub stats: ReplicaStats,
}

impl Replicas {
    pub async fn start(cluster: &Cluster, launch: Launch, dir: &Path, n: usize) -> Replicas {
        let upstream: std::net::SocketAddr = ([127, 0, 0, 1], cluster.api_port).into();
        let mut slots = Vec::new();
        for i in 0..n {
            let letter = (b'a' + i as u8) as char;
            let proxy = TcpProxy::start(upstream).await;
            let live_watch = format!(
                "timeoutSeconds={}",
                vultr_iam_operator::watch_cache::Lane::Live.watch_timeout_secs()
            );
            let lag = WatchDelayProxy::in_front_of(
                &cluster.cp,
                proxy.addr(),
                Some(&live_watch),
                &cluster.cp.operator_kubeconfig,
            )
            .await;
            slots.push(Slot {
                letter,
                incarnation: 0,
                identity: String::new(),
                child: None,
                proxy,
                lag,
                held: false,
                started: Instant::now(),
            });
        }
        let mut r = Replicas {
            slots,
            launch,
            dir: dir.to_owned(),
            incarnations: Vec::new(),
            stats: ReplicaStats::default(),
        };
        for i in 0..n {
            r.spawn(i);
        }
        r
    }

    fn spawn(&mut self, i: usize) {
        let metrics = format!(
            "127.0.0.1:{}",
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        );
        let args = self.launch.args(&metrics);
        let slot = &mut self.slots[i];
        slot.incarnation += 1;
        slot.identity = format!("chaos-{}-{:03}", slot.letter, slot.incarnation);
        let log = self.dir.join(format!("{}.log", slot.identity));
        let file = std::fs::File::create(&log).expect("create a replica log");
        let child = Command::new(&self.launch.binary)
            .args(&args)
            .env("KUBECONFIG", &slot.lag.kubeconfig)
            .env_remove("VULTR_API_KEY")
            .env("POD_NAME", &slot.identity)
            .env("POD_NAMESPACE", SYSTEM_NS)
            .env("RUST_LOG", "info,vultr_iam_operator=debug")
            .env_remove("VULTR_API_URL")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log handle"))
            .stderr(file)
            .spawn()
            .expect("spawn the operator");
        slot.child = Some(child);
        slot.started = Instant::now();
        self.incarnations.push((slot.identity.clone(), log));
        self.stats.starts += 1;
    }

    fn slot_of(&self, identity: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.identity == identity && s.child.is_some())
    }

    /// SIGKILLs the running incarnation with this identity; false if none runs.
    pub fn kill(&mut self, identity: &str) -> bool {
        let Some(i) = self.slot_of(identity) else {
            return false;
        };
        if let Some(mut child) = self.slots[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.stats.kills += 1;
            return true;
        }
        false
    }

    /// Restarts every replica that is not running and not held; records unexpected
    /// exits. Waits a second after an exit, as a crash-looping pod would.
    pub fn supervise(&mut self) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if let Some(child) = slot.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.stats.exits.push(format!(
                    "{} exited ({status}) after {:.0?}",
                    slot.identity,
                    slot.started.elapsed()
                ));
                slot.child = None;
                slot.started = Instant::now();
            }
            let slot = &self.slots[i];
            if slot.child.is_none() && !slot.held && slot.started.elapsed() > Duration::from_secs(1)
            {
                self.spawn(i);
            }
        }
    }

    /// Cuts the connection of the replica running `identity` to the API server and
    /// holds it (no restart) until [`Replicas::heal`].
    pub fn partition(&mut self, identity: &str) -> bool {
        let Some(i) = self.slot_of(identity) else {
            return false;
        };
        self.slots[i].held = true;
        self.slots[i].proxy.cut();
        true
    }

    /// Delays every replica's live-lane watch events by `delay` (zero: none).
    pub fn lag_live_watches(&self, delay: Duration) {
        for s in &self.slots {
            s.lag.set_delay(delay);
        }
    }

    /// Running incarnations that may still use the key the key file held before
    /// `written`: started before it, and their log does not report the file's change.
    pub fn on_old_key(&self, written: Instant) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.child.is_some() && s.started < written)
            .filter(|s| {
                let log = self.incarnations.iter().find(|(id, _)| *id == s.identity);
                !log.and_then(|(_, path)| std::fs::read_to_string(path).ok())
                    .is_some_and(|text| text.contains(KEY_REREAD))
            })
            .map(|s| s.identity.clone())
            .collect()
    }

    /// Whether the incarnation `identity` still runs.
    pub fn running(&mut self, identity: &str) -> bool {
        self.slots
            .iter_mut()
            .find(|s| s.identity == identity)
            .and_then(|s| s.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Restores every link and lets held replicas be restarted.
    pub fn heal(&mut self) {
        for s in &mut self.slots {
            s.proxy.restore();
            s.held = false;
        }
    }

    /// Identities of the incarnations running now.
    pub fn current(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.child.is_some())
            .map(|s| s.identity.clone())
            .collect()
    }

    /// SIGTERM to every replica at once, then SIGKILL to any still running after 10 s;
    /// says how (and how soon) each one ended.
    pub fn stop(&mut self) -> Vec<Stopped> {
        const GIVE_UP: Duration = Duration::from_secs(10);
        let sent = Instant::now();
        let mut running = Vec::new();
        for s in &mut self.slots {
            s.held = true;
            if let Some(child) = s.child.take() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
                running.push((s.identity.clone(), child));
            }
        }
        let mut stopped = Vec::new();
        while !running.is_empty() && sent.elapsed() < GIVE_UP {
            running.retain_mut(|(identity, child)| match child.try_wait() {
                Ok(Some(status)) => {
                    stopped.push(Stopped {
                        identity: identity.clone(),
                        after: Some(sent.elapsed()),
                        clean: status.success(),
                    });
                    false
                }
                _ => true,
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        for (identity, mut child) in running {
            let _ = child.kill();
            let _ = child.wait();
            stopped.push(Stopped {
                identity,
                after: None,
                clean: false,
            });
        }
        stopped
    }

    pub fn logs(&self) -> Vec<Captured> {
        self.incarnations
            .iter()
            .map(|(id, path)| Captured {
                label: format!("log of {id}"),
                text: std::fs::read_to_string(path).unwrap_or_default(),
            })
            .collect()
    }

    pub fn identities(&self) -> Vec<String> {
        self.incarnations.iter().map(|(id, _)| id.clone()).collect()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for s in &mut self.slots {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
