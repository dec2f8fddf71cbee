//! The run's own control plane: it restarts kube-apiserver, so it never uses the one
//! other tests share. RBAC exactly as the chart renders it for two replicas with
//! `watchNamespaces` (rendered by helm from `charts/`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::e2e::{repo_path, run_ok, with_stdin};
use crate::support::ControlPlane;

/// Namespace of the Lease (the chart's release namespace); never deleted by the run.
pub const SYSTEM_NS: &str = "vultr-iam-operator";

pub struct Cluster {
    pub cp: ControlPlane,
    pub api_port: u16,
}

impl Cluster {
    /// Starts a control plane in a fresh directory, stopped and deleted by start.sh's
    /// watchdog when this process exits, and by `Drop` before that.
    pub fn start() -> Cluster {
        let cp = ControlPlane::start_own("vio-chaos-cluster-");
        let api_port = std::fs::read_to_string(cp.dir.join("apiserver-port"))
            .expect("apiserver-port")
            .trim()
            .parse()
            .expect("a port");
        let cluster = Cluster { cp, api_port };
        cluster.install();
        cluster
    }

    fn install(&self) {
        let crd = repo_path("crds/policyattachments.iam.vultr-operator.io.yaml");
        run_ok(
            self.cp
                .kubectl()
                .args(["apply", "--server-side", "-f"])
                .arg(&crd),
        );
        run_ok(self.cp.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/policyattachments.iam.vultr-operator.io",
        ]));
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {SYSTEM_NS}}}\n"
        ));
    }

    /// The chart's RBAC for two replicas watching `namespaces`, rendered by helm and
    /// applied: the run holds the operator to exactly the rights it ships with. The
    /// static token of `operator.kubeconfig` is the chart's ServiceAccount.
    pub fn try_rbac(&self, namespaces: &[String]) -> Result<(), String> {
        let out = self
            .cp
            .helm()
            .args(["template", "vultr-iam-operator"])
            .arg(repo_path("charts/vultr-iam-operator"))
            .args(["--namespace", SYSTEM_NS, "--set", "replicaCount=2"])
            .args([
                "--set",
                &format!("leaderElection.leaseName={}", super::replicas::LEASE),
            ])
            .args([
                "--set",
                &format!("watchNamespaces={{{}}}", namespaces.join(",")),
            ])
            .args(["--show-only", "templates/rbac.yaml"])
            .output()
            .map_err(|e| format!("helm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "helm template failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.try_apply(&String::from_utf8_lossy(&out.stdout))
    }

    /// Creates a watched namespace and binds the operator's ClusterRole in it.
    pub fn namespace(&self, name: &str, run: &str) {
        if let Err(e) = self.try_namespace(name, run) {
            panic!("{e}");
        }
    }

    pub fn try_namespace(&self, name: &str, run: &str) -> Result<(), String> {
        self.try_apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{vio-chaos/run: \"{run}\"}}}}\n"
        ))
    }

    pub fn apply(&self, yaml: &str) {
        if let Err(e) = self.try_apply(yaml) {
            panic!("{e}");
        }
    }

    fn try_apply(&self, yaml: &str) -> Result<(), String> {
        let out = with_stdin(self.cp.kubectl().args(["apply", "-f", "-"]), yaml);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Copies the control plane's logs into `dir` (before `Drop` deletes them).
    pub fn keep_logs(&self, dir: &Path) {
        for name in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            let _ = std::fs::copy(
                self.cp.dir.join(format!("{name}.log")),
                dir.join(format!("{name}.log")),
            );
        }
    }

    /// Stops kube-apiserver and starts it again with the same flags (etcd kept);
    /// returns how long it was unavailable. Blocking.
    pub fn restart_apiserver(&self, down: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let out = Command::new(repo_path("tests/control-plane/restart-apiserver.sh"))
            .arg("--dir")
            .arg(&self.cp.dir)
            .args(["--down", &down.as_secs().to_string(), "--timeout", "5"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(started.elapsed())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo_path("tests/control-plane/stop.sh"))
            .arg("--dir")
            .arg(&self.cp.dir)
            .arg("--purge")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
