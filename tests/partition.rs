//! A leader cut off from the API server (but not from Vultr) must stop writing to
//! Vultr at its renew deadline, cancel its reconciles and exit, while the standby
//! takes over. The partition is a TCP proxy between that replica and the API server.
//! A write the cut leader sent just before the cut is held by Vultr and applied late:
//! it must land before the new leader's writes.

use vio_harness::{e2e, support};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use e2e::*;
use support::proxy::{Link, TcpProxy};
use support::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vultr_sim::{Fault, FaultKind};

/// Echoes every byte back, one task per connection.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Sends `msg` and reads the echo; None if the connection fails or closes first.
async fn round_trip(conn: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
    conn.write_all(msg).await.ok()?;
    let mut buf = vec![0; msg.len()];
    match tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

/// True when the connection ends (EOF or error) within a second.
async fn closes(conn: &mut TcpStream) -> bool {
    let mut buf = [0; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn the_proxy_forwards_cuts_and_restores() {
    let proxy = TcpProxy::start(echo_server().await).await;
    let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(
        round_trip(&mut open, b"ping").await.as_deref(),
        Some(&b"ping"[..])
    );

    // A cut closes the open connection and refuses new ones.
    proxy.cut();
    assert_eq!(proxy.link(), Link::Refusing);
    assert!(
        closes(&mut open).await,
        "the open connection survived the cut"
    );
    let mut fresh = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert!(
        closes(&mut fresh).await,
        "a new connection was served while cut"
    );

    // Restored: new connections are forwarded again.
    proxy.restore();
    let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(
        round_trip(&mut again, b"pong").await.as_deref(),
        Some(&b"pong"[..])
    );

    // A black hole closes open connections and leaves new ones unanswered.
    proxy.black_hole();
    assert!(closes(&mut again).await, "the open connection survived");
    let mut held = TcpStream::connect(proxy.addr()).await.expect("connect");
    held.write_all(b"lost").await.expect("write");
    let mut buf = [0; 4];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), held.read(&mut buf))
            .await
            .is_err(),
        "a black-holed connection answered"
    );
    // A quick cut-and-restore still closes what was open.
    proxy.restore();
    assert!(
        closes(&mut held).await,
        "the held connection survived restore"
    );
    let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert!(round_trip(&mut open, b"x").await.is_some());
    proxy.cut();
    proxy.restore();
    assert!(
        closes(&mut open).await,
        "a quick cut-and-restore missed the connection"
    );
}

/// Lease timings of the replicas: the renew deadline defaults to two thirds of it.
const LEASE_DURATION: &str = "6s";
const RENEW_DEADLINE: Duration = Duration::from_secs(4);
const RESYNC: &str = "2s";
const RESYNC_INTERVAL: Duration = Duration::from_secs(2);

/// The API server's address in a kubeconfig (of its only cluster) and the document.
fn api_server(kubeconfig: &Path) -> (SocketAddr, yaml_serde::Value) {
    let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
    let doc: yaml_serde::Value = yaml_serde::from_str(&text).expect("kubeconfig YAML");
    let clusters = doc["clusters"].as_sequence().expect("clusters");
    assert_eq!(clusters.len(), 1, "one cluster in {}", kubeconfig.display());
    let server = clusters[0]["cluster"]["server"]
        .as_str()
        .expect("server URL");
    let url = url::Url::parse(server).expect("server URL");
    let addr = url
        .socket_addrs(|| Some(443))
        .expect("server address")
        .into_iter()
        .next()
        .expect("server address");
    // The API server's certificate names 127.0.0.1: TLS verifies through a local proxy.
    assert!(addr.ip().is_loopback(), "{url}: TLS would not verify");
    (addr, doc)
}

/// A copy of `admin` whose server is `proxy`.
fn kubeconfig_through(admin: &Path, proxy: SocketAddr, dir: &Path) -> PathBuf {
    let (_, mut doc) = api_server(admin);
    doc["clusters"][0]["cluster"]["server"] = format!("https://{proxy}").into();
    let path = dir.join("through-proxy.kubeconfig");
    std::fs::write(&path, yaml_serde::to_string(&doc).expect("YAML")).expect("write");
    path
}

fn replica(env: &Env, name: &str, kubeconfig: &Path) -> Operator {
    env.replica(
        name,
        &[
            "--lease-duration",
            LEASE_DURATION,
            "--resync-interval",
            RESYNC,
            // Longer than the hold of the late-applied write (Vultr applies a write
            // within this long of its sending, or never) and than the renew deadline,
            // so that waiting for an in-flight request would show.
            "--vultr-timeout",
            "10s",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path"))],
    )
}

fn pairs() -> [(&'static str, &'static str, &'static str); 4] {
    [
        ("p1", DNS_ADMIN, ALICE),
        ("p2", DNS_ADMIN, BOB),
        ("p3", BILLING_READ, ALICE),
        ("p4", COMPUTE_ADMIN, BOB),
    ]
}

/// The leader's connections to the API server are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_writing_and_exits() {
    partition(Link::Refusing).await;
}

/// The leader's requests to the API server hang (its lease renewal never answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_api_requests_hang_stops_writing_and_exits() {
    partition(Link::BlackHole).await;
}

/// How long Vultr holds the in-flight POST before applying it: longer than the margin
/// between renew deadline and lease duration, shorter than `--vultr-timeout`.
const HOLD: Duration = Duration::from_secs(8);

/// The leader loses the API server (a TCP proxy in between is cut) but not Vultr,
/// while Vultr holds one of its POSTs. The objects (that one's too) are deleted
/// through the API server; the standby takes over and revokes them. The cut replica
/// must send no Vultr write after its renew deadline, its held POST must land before
/// the new leader's first write, no revoked grant may come back, and the cut replica
/// must exit non-zero.
async fn partition(link: Link) {
    let mut env = Env::start("op-partition").await;
    env.operator.kill();
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = TcpProxy::start(api_server(&env.cp.kubeconfig).0).await;
    let cut_kubeconfig = kubeconfig_through(&env.cp.kubeconfig, proxy.addr(), dir.path());

    let mut first = replica(&env, "replica-a", &cut_kubeconfig);
    wait_for("replica-a to lead", WAIT, || async {
        (env.lease_holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let mut second = replica(&env, "replica-b", &env.cp.kubeconfig);
    wait_for("standby readyz", WAIT, || async {
        (second.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    for (name, policy, user) in pairs() {
        env.create(name, by_ids(policy, user)).await;
    }
    for (name, _, _) in pairs() {
        env.wait_ready(name, "True", "Attached").await;
    }
    // Let a drift pass run on the leader so that it has its listings cached.
    tokio::time::sleep(RESYNC_INTERVAL).await;
    // One reconcile is in flight at the cut: Vultr holds its POST, then applies it.
    let (policy, user) = IN_FLIGHT;
    env.sim.add_fault(
        Fault::new(FaultKind::Hold {
            ms: HOLD.as_millis() as u64,
        })
        .on(
            Some("POST"),
            Some(&format!("/v2/policies/{policy}/users/{user}")),
        )
        .times(1),
    );
    env.create("in-flight", by_ids(policy, user)).await;
    wait_for("the in-flight POST", WAIT, || async {
        (env.sim.held_requests() == 1).then_some(())
    })
    .await;

    let cut_at = SystemTime::now();
    let cut = Instant::now();
    match link {
        Link::BlackHole => proxy.black_hole(),
        _ => proxy.cut(),
    }
    for (name, _, _) in deleted() {
        env.delete(name).await;
    }
    // The cut replica's exit is noted as soon as it happens, while the rest goes on.
    let mut exit = None;
    let gone_by = Instant::now() + WAIT;
    loop {
        note_exit(&mut first, cut, &mut exit);
        let mut left = 0;
        for (name, _, _) in deleted() {
            left += usize::from(!matches!(env.api.get_opt(name).await, Ok(None)));
        }
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < gone_by,
            "{left} objects still there after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let revoked = cut.elapsed();
    eprintln!("every object revoked and gone {revoked:?} after the cut");
    // Several resync intervals of the cut replica, and the end of the hold: no revoked
    // grant comes back.
    let mut resurrected = Vec::new();
    let watch_until = Instant::now() + RESYNC_INTERVAL * 5;
    while Instant::now() < watch_until || env.sim.held_requests() > 0 {
        note_exit(&mut first, cut, &mut exit);
        for (name, policy, user) in deleted() {
            if env.sim.is_user_attached(policy, user) && !resurrected.contains(&name) {
                resurrected.push(name);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    while exit.is_none() && cut.elapsed() < RENEW_DEADLINE + Duration::from_secs(5) {
        note_exit(&mut first, cut, &mut exit);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Journal arrival times; a write checked just before the deadline may arrive a
    // moment after it, hence the small allowance.
    let deadline = cut_at + RENEW_DEADLINE + Duration::from_millis(500);
    let journal = env.sim.journal();
    let late_writes: Vec<String> = journal
        .iter()
        .filter(|e| e.method == "POST" || e.method == "DELETE")
        .filter(|e| e.user_agent.ends_with("(replica-a)") && e.at > deadline)
        .map(|e| {
            let after = e.at.duration_since(cut_at).unwrap_or_default();
            format!("{} {} {} at cut+{after:?}", e.method, e.path, e.status)
        })
        .collect();
    let standby_deletes = journal
        .iter()
        .filter(|e| e.method == "DELETE" && e.user_agent.ends_with("(replica-b)"))
        .count();
    // The held POST is journaled when applied: arrival plus latency.
    let first_standby_write = journal
        .iter()
        .filter(|e| e.method == "POST" || e.method == "DELETE")
        .filter(|e| e.user_agent.ends_with("(replica-b)"))
        .map(|e| e.at)
        .min()
        .expect("the standby wrote");
    let landed_after_standby: Vec<String> = journal
        .iter()
        .filter(|e| e.method == "POST" || e.method == "DELETE")
        .filter(|e| e.user_agent.ends_with("(replica-a)"))
        .filter(|e| e.at + Duration::from_secs_f64(e.latency_ms / 1000.0) > first_standby_write)
        .map(|e| {
            format!(
                "{} {} {} arrived at cut+{:?}, applied {:.0} ms later",
                e.method,
                e.path,
                e.status,
                e.at.duration_since(cut_at).unwrap_or_default(),
                e.latency_ms
            )
        })
        .collect();

    let logs = first.logs();
    let tail: String = logs
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!(
        "cut replica: exit (status, after the cut) {exit:?}; writes after its deadline: \
         {late_writes:?}; landed after the standby's first write: {landed_after_standby:?}; \
         grants back: {resurrected:?}; standby DELETEs: {standby_deletes}"
    );
    // Exit soon after the deadline: in-flight reconciles (the hung POST, 30 s timeout)
    // are dropped, not awaited.
    let exited_in_time = exit
        .is_some_and(|(s, after)| !s.success() && after < RENEW_DEADLINE + Duration::from_secs(2));
    assert!(
        late_writes.is_empty()
            && landed_after_standby.is_empty()
            && resurrected.is_empty()
            && exited_in_time,
        "the cut replica went on: writes after its renew deadline {late_writes:#?}, \
         writes landing after the new leader's first {landed_after_standby:#?}, \
         revoked grants back in Vultr {resurrected:?}, exit {exit:?}\n{tail}"
    );
    assert!(
        standby_deletes >= deleted().len(),
        "the standby revoked: {standby_deletes}"
    );
    assert_eq!(env.lease_holder().await.as_deref(), Some("replica-b"));
    assert!(logs.contains("lost the leader lease"), "{tail}");
    assert!(second.terminate(), "the new leader did not stop cleanly");
}

/// The pair of the object whose POST is in flight at the cut.
const IN_FLIGHT: (&str, &str) = (COMPUTE_ADMIN, ALICE);

/// Every object deleted after the cut.
fn deleted() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut all = pairs().to_vec();
    all.push(("in-flight", IN_FLIGHT.0, IN_FLIGHT.1));
    all
}

/// Records the operator's exit status and when (after `cut`) it was first seen.
fn note_exit(
    op: &mut Operator,
    cut: Instant,
    exit: &mut Option<(std::process::ExitStatus, Duration)>,
) {
    if exit.is_none() {
        *exit = op.exit_status().map(|status| (status, cut.elapsed()));
    }
}
