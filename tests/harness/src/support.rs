//! Test harness: a real local Kubernetes control plane (etcd, kube-apiserver and
//! kube-controller-manager built from the Kubernetes sources by `tests/control-plane/`),
//! one per test binary, plus a namespace per test.
//!
//! `ControlPlane::shared()` uses the control plane in `$VIO_CLUSTER_DIR` when it names a
//! running one (`make test` starts one for the whole run); otherwise it starts one in a
//! temporary directory with `start.sh --watch-pid <this process>`, whose watchdog stops
//! it and deletes the directory when the test binary exits, however it exits.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod watch_delay;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub mod proxy;

/// The identity of the static token in `operator.kubeconfig`.
pub const OPERATOR_USER: &str = "system:serviceaccount:vultr-iam-operator:vultr-iam-operator";

/// A running control plane and the files `start.sh` wrote for it.
pub struct ControlPlane {
    /// State directory (certificates, etcd data, logs).
    pub dir: PathBuf,
    /// Admin kubeconfig (group `system:masters`).
    pub kubeconfig: PathBuf,
    /// Kubeconfig with the static token of [`OPERATOR_USER`].
    pub operator_kubeconfig: PathBuf,
    /// Directory holding `kubectl`, `helm`, `kube-apiserver`, ...
    pub bin_dir: PathBuf,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this test binary, started on first use.
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| Self::from_env().unwrap_or_else(Self::start))
    }

    fn from_env() -> Option<ControlPlane> {
        let dir = PathBuf::from(std::env::var_os("VIO_CLUSTER_DIR")?);
        if dir.join("kubeconfig").is_file() && dir.join("pids").is_file() {
            return Some(Self::in_dir(dir));
        }
        eprintln!(
            "VIO_CLUSTER_DIR={} holds no running control plane; starting one for this test binary",
            dir.display()
        );
        None
    }

    fn start() -> ControlPlane {
        Self::start_own("vio-cluster-")
    }

    /// A control plane of this process's own, in a fresh directory named `prefix...`:
    /// stopped by start.sh's watchdog when this process exits (for tests that restart
    /// or partition it).
    pub fn start_own(prefix: &str) -> ControlPlane {
        let dir = kept_dir(prefix);
        let script = repo_path("tests/control-plane/start.sh");
        let status = Command::new(&script)
            .arg("--dir")
            .arg(&dir)
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            status.success(),
            "{} failed ({status}); its logs are in {}",
            script.display(),
            dir.display()
        );
        Self::in_dir(dir)
    }

    fn in_dir(dir: PathBuf) -> ControlPlane {
        let bin_dir = std::fs::read_to_string(dir.join("bin-dir"))
            .unwrap_or_else(|e| panic!("read {}/bin-dir: {e}", dir.display()));
        ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            operator_kubeconfig: dir.join("operator.kubeconfig"),
            bin_dir: PathBuf::from(bin_dir.trim()),
            dir,
        }
    }

    /// A client with the admin identity.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig).await
    }

    /// A client with the operator ServiceAccount's identity ([`OPERATOR_USER`]).
    pub async fn operator_client(&self) -> kube::Client {
        client_from(&self.operator_kubeconfig).await
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// `helm` with the admin kubeconfig and its cache/config/data kept in `dir`.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("helm"));
        let home = self.dir.join("helm");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }
}

/// A fresh directory `/tmp/<prefix>...` that outlives the test (for logs and files a
/// process of the test keeps using).
pub fn kept_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory")
        .keep()
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A path in the repository, from its root.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the harness sits in tests/harness")
        .join(rel)
}

/// The operator binary cargo built for the integration tests: it sits in the profile
/// directory (e.g. `target/debug`) above the test binary's `deps/`.
pub fn operator_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .ancestors()
        .nth(2)
        .expect("a test binary in <profile>/deps")
        .join("vultr-iam-operator");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with cargo test",
        bin.display()
    );
    bin
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("read {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("load {}: {e}", kubeconfig.display()));
    kube::Client::try_from(config).expect("build a kube client")
}

/// A namespace of its own for one test, deleted (without waiting) when dropped, also
/// when the test panics.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates `<prefix>-<8 random hex digits>`.
    pub async fn new(client: &kube::Client, prefix: &str) -> TestNamespace {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{prefix}-{}", &suffix[..8]);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("app.kubernetes.io/created-by".into(), "vio-tests".into())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // A separate kubectl process: the test's async runtime may be unwinding, and the
        // process outlives this test binary if it exits first.
        if let Some(cp) = SHARED.get() {
            let _ = cp
                .kubectl()
                .args([
                    "delete",
                    "namespace",
                    &self.name,
                    "--wait=false",
                    "--ignore-not-found",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
    }
}

/// How long a test waits for something the cluster or the operator does.
pub const WAIT: Duration = Duration::from_secs(60);

/// Waits until `name` is gone from `api` (its finalizers released).
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(&format!("{name} to disappear"), WAIT, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
}

/// Polls `probe` every 200 ms until it returns `Some`, panicking after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
