//! Fixture for operator end-to-end tests: the real control plane (from `support`), an
//! in-process Vultr simulator, and the operator binary as a child process restricted
//! to the test's own namespace, so tests run in parallel without seeing each other.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::Value;
use vultr_iam_operator::crd::{PolicyAttachment, READY, SYNCED};
use vultr_sim::{Sim, SimConfig};

use crate::support::{ControlPlane, TestNamespace, free_port, kept_dir, operator_binary, wait_for};
pub use crate::support::{WAIT, repo_path, wait_gone};

/// The key the simulator accepts. Distinctive, so a test can look for leaks of it.
pub const API_KEY: &str = "vk-SECRET-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// A key the simulator answers 403 to on writes.
pub const READ_ONLY_KEY: &str = "vk-READONLY-aa11bb22cc33dd44ee55ff66";

pub const DNS_ADMIN: &str = "62948e0d-b09d-4d08-9554-3985b635cb17";
pub const BILLING_READ: &str = "0b6b6c1e-5f0a-4c55-9d3e-6f2f1c3e9a01";
pub const COMPUTE_ADMIN: &str = "3c1d7a52-8e4b-4f6a-b2d9-7a0e5c4b1f02";
pub const ALICE: &str = "8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b";
pub const BOB: &str = "5d2c9b71-3a4e-4b8f-9c6d-1e0f2a3b4c03";
pub const OPS: &str = "7f3e2d1c-0b9a-4876-a543-210fedcba907";
pub const DEVELOPERS: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c08";
pub const AUDITORS: &str = "4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09";
pub const ON_CALL: &str = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e510";

/// Four distinct user grants of the demo organisation, none attached at the start.
pub const FOUR_PAIRS: [(&str, &str, &str); 4] = [
    ("a", DNS_ADMIN, ALICE),
    ("b", DNS_ADMIN, BOB),
    ("c", BILLING_READ, ALICE),
    ("d", BILLING_READ, BOB),
];

/// The simulator of the operator tests: the demo organization, no rate limit, and
/// [`API_KEY`] and [`READ_ONLY_KEY`]; a test changes what it needs (seed, rate limit).
pub fn sim_config() -> SimConfig {
    SimConfig::demo().keys(&[API_KEY], &[READ_ONLY_KEY])
}

/// A running [`sim_config`] simulator.
pub async fn demo_sim() -> Sim {
    start_sim(sim_config()).await
}

/// Starts a simulator (panics when it cannot).
pub async fn start_sim(config: SimConfig) -> Sim {
    config.start().await.expect("start the simulator")
}

/// Installs the committed CRD once per test binary and waits until it is Established.
pub fn install_crd(cp: &ControlPlane) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let crd = repo_path("crds/policyattachments.iam.vultr-operator.io.yaml");
        run_ok(
            cp.kubectl()
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(&crd),
        );
        run_ok(cp.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/policyattachments.iam.vultr-operator.io",
        ]));
    });
}

/// A PolicyAttachment named `name` with this spec (the one fixture builder).
pub fn policy_attachment(name: &str, spec: Value) -> PolicyAttachment {
    serde_json::from_value(manifest(name, spec)).expect("a valid PolicyAttachment")
}

/// [`policy_attachment`] as JSON, for a test that adds what the type would refuse or
/// a tool reads as JSON (metadata, a status).
pub fn manifest(name: &str, spec: Value) -> Value {
    let mut manifest = typed(serde_json::json!({"metadata": {"name": name}}));
    manifest["spec"] = spec;
    manifest
}

/// A server-side apply of this status (the body of a `patch_status` with
/// `Patch::Apply`).
pub fn status_apply(status: Value) -> Value {
    typed(serde_json::json!({"status": status}))
}

/// `object` with the PolicyAttachment's apiVersion and kind.
fn typed(mut object: Value) -> Value {
    object["apiVersion"] = PolicyAttachment::api_version(&()).into();
    object["kind"] = PolicyAttachment::kind(&()).into();
    object
}

/// Runs `cmd` without input and returns its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// A command's standard output and error, one after the other.
pub fn combined(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The path of a tool `deploy/image/tools.sh` builds (and caches): crane, promtool...
pub fn tool(name: &str) -> String {
    let printed = run_ok(Command::new(repo_path("deploy/image/tools.sh")).arg(name));
    printed
        .lines()
        .last()
        .unwrap_or_else(|| panic!("tools.sh printed no path for {name}"))
        .trim()
        .to_owned()
}

/// The namespace `namespace`, enforcing the restricted Pod Security Standard, without the
/// Helm release `release` in it (a failed earlier run may have left one).
pub async fn empty_release_namespace(
    cp: &ControlPlane,
    client: &kube::Client,
    release: &str,
    namespace: &str,
) {
    let _ = output(
        cp.helm()
            .args(["uninstall", release, "-n", namespace, "--wait"]),
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    wait_for(
        &format!("namespace {namespace} to finish terminating"),
        WAIT,
        || async {
            match namespaces.get_opt(namespace).await.ok()? {
                Some(ns) if ns.metadata.deletion_timestamp.is_some() => None,
                _ => Some(()),
            }
        },
    )
    .await;
    let manifest = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n"
    );
    let out = with_stdin(cp.kubectl().args(["apply", "-f", "-"]), &manifest);
    assert!(out.status.success(), "{}", combined(&out));
}

/// Hands the CRD `crd`, if another test binary created it with kubectl, to the Helm
/// release `release` of `namespace`, as the chart README describes.
pub fn adopt_crd(cp: &ControlPlane, crd: &str, release: &str, namespace: &str) {
    if !output(cp.kubectl().args(["get", "crd", crd, "-o", "name"]))
        .status
        .success()
    {
        return;
    }
    run_ok(
        cp.kubectl()
            .args(["label", "--overwrite", "crd", crd])
            .arg("app.kubernetes.io/managed-by=Helm"),
    );
    run_ok(
        cp.kubectl()
            .args(["annotate", "--overwrite", "crd", crd])
            .args([
                format!("meta.helm.sh/release-name={release}"),
                format!("meta.helm.sh/release-namespace={namespace}"),
            ]),
    );
}

/// The operator `binary` with `args`, run as the chart's ServiceAccount (the control
/// plane's `operator.kubeconfig`) as pod `pod` of `namespace`, the key only from its
/// file; its log in `dir`.
pub fn as_chart_service_account(
    cp: &ControlPlane,
    binary: &Path,
    args: &[String],
    pod: &str,
    namespace: &str,
    dir: &Path,
    metrics_addr: String,
) -> Operator {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .env_remove("VULTR_API_KEY")
        .env("KUBECONFIG", &cp.operator_kubeconfig)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", namespace)
        .env("RUST_LOG", "info,vultr_iam_operator=debug");
    Operator::spawn(cmd, dir, metrics_addr)
}

/// The release name of the tests that install the chart; also its ServiceAccount's.
pub const CHART_RELEASE: &str = "vultr-iam-operator";
/// The namespace of that release: the static token of the control plane's
/// `operator.kubeconfig` is its ServiceAccount `vultr-iam-operator`.
pub const CHART_NAMESPACE: &str = "vultr-iam-operator";

/// After a chart test: the CRD of `crd_file` applied again (the test may have changed
/// it), and `namespace` deleted without waiting. Errors are ignored (a cleanup).
pub fn restore_crd_and_drop(cp: &ControlPlane, crd_file: &Path, namespace: &str) {
    let _ = output(
        cp.kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(crd_file),
    );
    let _ = output(cp.kubectl().args([
        "delete",
        "namespace",
        namespace,
        "--wait=false",
        "--ignore-not-found",
    ]));
}

/// The Deployment `name` of `namespace` as installed, as JSON.
pub fn installed_deployment(cp: &ControlPlane, name: &str, namespace: &str) -> Value {
    let json =
        run_ok(
            cp.kubectl()
                .args(["get", "deployment", name, "-n", namespace, "-o", "json"]),
        );
    serde_json::from_str(&json).expect("deployment JSON")
}

/// Runs a command and returns its output, panicking with stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` with `input` on its standard input (e.g. `kubectl apply -f -`).
pub fn with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to stdin");
    child.wait_with_output().expect("wait for the command")
}

/// The operator binary as a child process; killed when dropped.
pub struct Operator {
    child: Option<Child>,
    pub log: PathBuf,
    pub metrics_addr: String,
}

impl Operator {
    pub fn start(
        cp: &ControlPlane,
        vultr_url: &str,
        api_key: &str,
        namespace: &str,
        extra: &[&str],
    ) -> Operator {
        Self::start_with_env(cp, vultr_url, api_key, namespace, extra, &[])
    }

    /// Like [`Operator::start`], with extra environment variables (e.g. POD_NAME).
    pub fn start_with_env(
        cp: &ControlPlane,
        vultr_url: &str,
        api_key: &str,
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let dir = kept_dir("vio-operator-");
        let port = free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(operator_binary());
        cmd.args([
            "run",
            "--vultr-api-url",
            vultr_url,
            "--metrics-bind-address",
            &metrics_addr,
        ])
        .args(["--watch-namespace", namespace])
        .args(fast_defaults(extra))
        .args(extra)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("VULTR_API_KEY", api_key)
        .env("RUST_LOG", "info,vultr_iam_operator=debug")
        .envs(env.iter().copied());
        Self::spawn(cmd, &dir, metrics_addr)
    }

    /// The one way every test starts an operator process: `cmd` (the binary with its
    /// args and env) with its output in `dir/operator.log`; killed when dropped.
    pub fn spawn(mut cmd: Command, dir: &Path, metrics_addr: String) -> Operator {
        let log = dir.join("operator.log");
        let log_file = std::fs::File::create(&log).expect("create operator log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Operator {
            child: Some(child),
            log,
            metrics_addr,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        self.child.take().is_some_and(terminate)
    }

    /// GET `path` on the metrics listener: (status, body); status 0 if unreachable.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.metrics_addr);
        match reqwest::get(&url).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    /// The sum of the samples of metric `name` whose labels contain every one of
    /// `labels` (0 when there is none); `None` while /metrics does not answer.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let (status, body) = self.http_get("/metrics").await;
        (status == 200).then(|| {
            body.lines()
                .filter(|l| {
                    l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))
                })
                .filter(|l| labels.iter().all(|label| l.contains(label)))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
    }

    /// Reconcile failures with this reason, as the operator counts them (0 while it does
    /// not answer yet).
    pub async fn failures(&self, reason: &str) -> usize {
        let reason = format!("reason=\"{reason}\"");
        self.metric("vultr_iam_reconciles_total", &["result=\"error\"", &reason])
            .await
            .unwrap_or(0.0) as usize
    }

    /// The exit status once the process has ended by itself; `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Short timings for tests, except for the flags `extra` sets itself.
fn fast_defaults(extra: &[&str]) -> Vec<&'static str> {
    [
        ("--resync-interval", "3s"),
        ("--backoff-base", "200ms"),
        ("--backoff-max", "2s"),
        ("--attach-visibility-timeout", "5s"),
        ("--vultr-rate-limit", "50"),
        ("--vultr-burst", "50"),
        ("--vultr-timeout", "2s"),
    ]
    .into_iter()
    .filter(|(flag, _)| !extra.contains(flag))
    .flat_map(|(flag, value)| [flag, value])
    .collect()
}

/// SIGTERM, then waits up to 10 s (SIGKILL after); true if the process exited cleanly.
pub fn terminate(mut child: Child) -> bool {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Everything one test needs. Field order matters for drop: operator first.
pub struct Env {
    pub operator: Operator,
    pub sim: Sim,
    pub api: Api<PolicyAttachment>,
    pub client: kube::Client,
    pub ns: TestNamespace,
    pub cp: &'static ControlPlane,
}

impl Drop for Env {
    /// The test's operator dies with it, so nobody would honour the finalizers left in
    /// its namespace: strip them (in the background) so the namespace really goes and no
    /// later cluster-wide operator inherits this test's objects.
    fn drop(&mut self) {
        let ns = &self.ns.name;
        let script = format!(
            "for o in $(kubectl get pa -n {ns} -o name); do \
             kubectl patch -n {ns} \"$o\" --type=merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'; done"
        );
        let path = format!(
            "{}:{}",
            self.cp.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Env {
    /// Demo organization, the regular key, default operator flags.
    pub async fn start(prefix: &str) -> Env {
        Self::start_with(prefix, API_KEY, &[]).await
    }

    pub async fn start_with(prefix: &str, operator_key: &str, extra: &[&str]) -> Env {
        let cp = ControlPlane::shared();
        install_crd(cp);
        let client = cp.client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let sim = demo_sim().await;
        let operator = Operator::start(cp, &sim.url(), operator_key, &ns.name, extra);
        let api = Api::namespaced(client.clone(), &ns.name);
        Env {
            operator,
            sim,
            api,
            client,
            ns,
            cp,
        }
    }

    pub async fn create(&self, name: &str, spec: Value) -> PolicyAttachment {
        create(&self.api, name, spec).await
    }

    /// Creates `name` and waits until it is Ready=True with reason Attached.
    pub async fn attach(&self, name: &str, spec: Value) -> PolicyAttachment {
        self.create(name, spec).await;
        self.wait_ready(name, "True", "Attached").await
    }

    /// Creates an object per (name, spec), in this order.
    pub async fn create_all(&self, objects: &[(&str, Value)]) {
        for (name, spec) in objects {
            self.create(name, spec.clone()).await;
        }
    }

    pub async fn delete(&self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }

    /// Waits until `name` is Ready=True, or until the operator counts more failures
    /// with `reason` than Vultr answered with one (`answered`): a failure served from a
    /// cache without a request. `None` when Ready came first, else (failures, answered).
    pub async fn failure_without_a_request(
        &self,
        name: &str,
        reason: &str,
        answered: impl Fn() -> usize,
    ) -> Option<(usize, usize)> {
        wait_for(
            &format!("{name} Ready, or a failure without a request"),
            WAIT,
            || async {
                let failed = self.operator.failures(reason).await;
                let answered = answered();
                if failed > answered {
                    return Some(Some((failed, answered)));
                }
                let obj = self.api.get_opt(name).await.ok().flatten()?;
                is_ready(&obj).then_some(None)
            },
        )
        .await
    }

    /// An operator process for this test: the simulator, the regular key, the test's
    /// namespace, plus these flags and variables.
    pub fn start_operator(&self, extra: &[&str], vars: &[(&str, &str)]) -> Operator {
        Operator::start_with_env(
            self.cp,
            &self.sim.url(),
            API_KEY,
            &self.ns.name,
            extra,
            vars,
        )
    }

    /// The holder of the Lease replicas of this test elect with (in its namespace).
    pub async fn lease_holder(&self) -> Option<String> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &self.ns.name);
        leases
            .get_opt("vultr-iam-operator")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    }

    /// A replica with leader election in the test's namespace, identity `name` (lease
    /// 6 s unless `extra` sets `--lease-duration`), plus these flags and variables.
    pub fn replica(&self, name: &str, extra: &[&str], vars: &[(&str, &str)]) -> Operator {
        let ns = self.ns.name.clone();
        let mut args = vec!["--leader-election", "--lease-namespace", &ns];
        if !extra.contains(&"--lease-duration") {
            args.extend(["--lease-duration", "6s"]);
        }
        args.extend_from_slice(extra);
        let mut vars = vars.to_vec();
        vars.push(("POD_NAME", name));
        self.start_operator(&args, &vars)
    }

    /// Creates an object per (name, spec), then waits until each is Ready=True with
    /// reason Attached.
    pub async fn attach_all(&self, objects: &[(&str, Value)]) {
        self.create_all(objects).await;
        let names: Vec<&str> = objects.iter().map(|(name, _)| *name).collect();
        self.wait_attached(&names).await;
    }

    /// Deletes `name` and waits until it is gone (its finalizer released).
    pub async fn delete_and_wait_gone(&self, name: &str) {
        self.delete(name).await;
        self.wait_gone(name).await;
    }

    /// Creates an object per (name, policy, user) by IDs, waits until each is Ready,
    /// deletes them all and waits until each is gone.
    pub async fn attach_then_delete(&self, pairs: &[(&str, &str, &str)]) {
        for (name, policy, user) in pairs {
            self.create(name, by_ids(policy, user)).await;
        }
        let names: Vec<&str> = pairs.iter().map(|(name, ..)| *name).collect();
        self.wait_attached(&names).await;
        for (name, ..) in pairs {
            self.delete(name).await;
        }
        for (name, ..) in pairs {
            self.wait_gone(name).await;
        }
    }

    /// Waits until `Ready` has this status and reason (and the current generation).
    pub async fn wait_ready(&self, name: &str, status: &str, reason: &str) -> PolicyAttachment {
        self.wait_condition(name, READY, status, reason).await
    }

    /// Waits until each of `names` is Ready=True with reason Attached.
    pub async fn wait_attached(&self, names: &[&str]) {
        for name in names {
            self.wait_ready(name, "True", "Attached").await;
        }
    }

    /// Waits until `Synced` (did the last reconcile succeed) has this status and reason.
    pub async fn wait_synced(&self, name: &str, status: &str, reason: &str) -> PolicyAttachment {
        self.wait_condition(name, SYNCED, status, reason).await
    }

    /// Waits until condition `type_` has this status and reason (and the current
    /// generation).
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> PolicyAttachment {
        wait_condition(&self.api, name, type_, status, reason).await
    }

    pub async fn wait_gone(&self, name: &str) {
        wait_gone(&self.api, name).await
    }

    /// (type, reason, note) of the Events about `name`, oldest first.
    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        let mut list = events
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        list.retain(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name));
        list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        list.into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    pub async fn wait_event(&self, name: &str, reason: &str) -> String {
        wait_for(&format!("event {reason} on {name}"), WAIT, || async {
            self.events(name)
                .await
                .into_iter()
                .find(|(_, r, _)| r == reason)
                .map(|(_, _, note)| note)
        })
        .await
    }

    /// Waits until the operator repaired the grant of `name` removed out of band: a
    /// DriftRepaired Event that says so, the grant in Vultr again (`attached`), and
    /// `name` Ready=True.
    pub async fn wait_drift_repaired(&self, name: &str, attached: impl Fn() -> bool) {
        let note = self.wait_event(name, "DriftRepaired").await;
        assert!(note.contains("out of band"), "{note}");
        wait_for("the grant attached again", WAIT, || async {
            attached().then_some(())
        })
        .await;
        self.wait_ready(name, "True", "Attached").await;
    }

    /// Journal entries of the simulator with this method whose path starts with `prefix`.
    pub fn requests(&self, method: &str, prefix: &str) -> Vec<vultr_sim::JournalEntry> {
        self.sim
            .journal()
            .into_iter()
            .filter(|e| e.method == method && e.path.starts_with(prefix))
            .collect()
    }

    /// A kubectl bound to the test namespace.
    pub fn kubectl(&self) -> Command {
        let mut cmd = self.cp.kubectl();
        cmd.args(["-n", &self.ns.name]);
        cmd
    }
}

/// Creates the PolicyAttachment `name` with this spec in `api`'s namespace.
pub async fn create(api: &Api<PolicyAttachment>, name: &str, spec: Value) -> PolicyAttachment {
    api.create(&PostParams::default(), &policy_attachment(name, spec))
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
}

/// Whether condition `type_` of `obj` has this status and reason, for the object's
/// current generation.
pub fn has_condition(obj: &PolicyAttachment, type_: &str, status: &str, reason: &str) -> bool {
    obj.status
        .as_ref()
        .and_then(|s| s.condition(type_))
        .is_some_and(|c| {
            c.status == status
                && c.reason == reason
                && c.observed_generation == obj.metadata.generation
        })
}

/// Waits until condition `type_` of `name` in `api` has this status and reason (and
/// the current generation).
pub async fn wait_condition(
    api: &Api<PolicyAttachment>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> PolicyAttachment {
    wait_for(
        &format!("{name} {type_}={status} reason {reason}"),
        WAIT,
        || async {
            let obj = api.get_opt(name).await.ok().flatten()?;
            has_condition(&obj, type_, status, reason).then_some(obj)
        },
    )
    .await
}

/// Whether `obj` is Ready=True (whatever the reason).
pub fn is_ready(obj: &PolicyAttachment) -> bool {
    obj.status
        .as_ref()
        .and_then(|s| s.condition(READY))
        .is_some_and(|c| c.status == "True")
}

/// The `Ready` condition of an object the operator has written status for.
pub fn ready(obj: &PolicyAttachment) -> &Condition {
    obj.status
        .as_ref()
        .and_then(|s| s.condition(READY))
        .expect("a Ready condition")
}

/// The `Synced` condition of an object the operator has written status for.
pub fn synced(obj: &PolicyAttachment) -> &Condition {
    obj.status
        .as_ref()
        .and_then(|s| s.condition(SYNCED))
        .expect("a Synced condition")
}

/// A spec naming the policy and the user by IDs.
pub fn by_ids(policy: &str, user: &str) -> Value {
    spec_ids("user", policy, user)
}

/// A spec naming the policy and the subject of `kind` ("user", "group" or "role") by
/// IDs.
pub fn spec_ids(kind: &str, policy: &str, subject: &str) -> Value {
    serde_json::json!({"policy": {"id": policy}, kind: {"id": subject}})
}

/// A spec naming the policy by name and the subject of `kind` by its natural key: a
/// user by email, a group or a role by name.
pub fn spec_names(kind: &str, policy: &str, subject: &str) -> Value {
    let key = if kind == "user" { "email" } else { "name" };
    serde_json::json!({"policy": {"name": policy}, kind: {key: subject}})
}
