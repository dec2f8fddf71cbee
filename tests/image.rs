//! The operator's image (`deploy/image/build.sh`, `make image`), built from this test
//! binary's operator: the digest is reproducible, the config is what the chart expects
//! (UID 65532, the binary as entrypoint, no shell), and the entrypoint runs from the
//! image's own root filesystem (chroot, read-only, as 65532) with exactly the args, env
//! and files the chart's Deployment gives the container: the API key Secret file and the
//! in-cluster ServiceAccount files, `KUBERNETES_SERVICE_HOST/PORT` pointing at the local
//! API server. It goes through an attach and a revoke under the chart's RBAC, and the
//! chart's liveness and readiness probes answer on the chart's port.
//!
//! Running the image needs root (chroot, a private mount namespace).

use vio_harness::{e2e, support};

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use e2e::{API_KEY, DNS_ADMIN, Operator, repo_path, run_ok};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use serde::Deserialize as _;
use serde_json::{Value, json};
use support::{ControlPlane, TestNamespace, wait_for};
use vultr_iam_operator::crd::{PolicyAttachment, READY};

use e2e::{CHART_NAMESPACE as NAMESPACE, CHART_RELEASE as RELEASE};
const SERVICE_ACCOUNT: &str = "vultr-iam-operator";
/// Names of the chart's objects here, so that its cluster-wide RBAC and its Lease never
/// clash with the chart tests' release on a shared control plane.
const FULLNAME: &str = "vio-image-test";
const POD_NAME: &str = "vultr-iam-operator-image-test";
const ENTRYPOINT: &str = "/usr/local/bin/vultr-iam-operator";
const SA_DIR: &str = "var/run/secrets/kubernetes.io/serviceaccount";
const WAIT: Duration = Duration::from_secs(90);

/// Builds the image of this test binary's operator into `out`; returns its digest.
fn build_image(out: &Path) -> String {
    run_ok(
        Command::new(repo_path("deploy/image/build.sh"))
            .arg("--binary")
            .arg(support::operator_binary())
            .arg("--out")
            .arg(out),
    );
    let digest = std::fs::read_to_string(out.join("digest")).expect("read the digest");
    digest.trim().to_owned()
}

#[test]
fn the_image_digest_is_reproducible() {
    let (a, b) = (tempdir(), tempdir());
    let first = build_image(a.path());
    let second = build_image(b.path());
    assert!(first.starts_with("sha256:"), "{first}");
    assert_eq!(first, second, "two builds of one commit differ");
    let archive = |dir: &tempfile::TempDir| {
        std::fs::read(dir.path().join("vultr-iam-operator.tar")).expect("read the archive")
    };
    assert!(archive(&a) == archive(&b), "the archives differ byte-wise");
    // The OCI layout holds the same manifest.
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(a.path().join("oci/index.json")).expect("index.json"),
    )
    .expect("index JSON");
    assert_eq!(index["manifests"][0]["digest"], first.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_the_operator_as_the_chart_configures_it() {
    assert!(
        is_root(),
        "running the image needs root (chroot and a private mount namespace)"
    );
    let out = tempdir();
    build_image(out.path());
    let image = Image::unpack(&out.path().join("vultr-iam-operator.tar"), out.path());

    // The config: non-root, the binary as entrypoint, `run` as its default argument.
    let config = &image.config["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], json!([ENTRYPOINT]));
    assert_eq!(config["Cmd"], json!(["run"]));
    assert_eq!(image.config["os"], "linux");
    // No shell, nothing executable but the operator and the libraries it loads.
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash", "bin/busybox"] {
        assert!(!image.rootfs.join(shell).exists(), "{shell} in the image");
    }
    let executables = executables(&image.rootfs);
    assert!(
        executables
            .iter()
            .all(|f| f == &ENTRYPOINT[1..] || f.starts_with("lib") && f.contains(".so")),
        "{executables:?}"
    );

    // The cluster: the CRD, a namespace for the PolicyAttachments, the simulator.
    let cp = ControlPlane::shared();
    e2e::install_crd(cp);
    let client = cp.client().await;
    let ns = TestNamespace::new(&client, "image").await;
    let sim = e2e::demo_sim().await;
    let user = sim.add_user("image@example.com");

    // The chart, rendered for this cluster: the simulator as the Vultr API, a free port
    // (the machine is shared), the test namespace watched (a cluster-wide operator
    // would take other tests' objects).
    let port = support::free_port();
    let docs = render(
        cp,
        &[
            format!("vultr.apiUrl={}", sim.url()),
            format!("metrics.port={port}"),
            format!("watchNamespaces={{{}}}", ns.name),
            format!("fullnameOverride={FULLNAME}"),
            "serviceAccount.create=false".to_owned(),
            format!("serviceAccount.name={SERVICE_ACCOUNT}"),
        ],
    );
    let _rbac = ChartRbac::apply(cp, &docs);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(
        container.get("command").is_none(),
        "the chart keeps the image's entrypoint"
    );

    // What the kubelet would give the container: its volumes, the ServiceAccount files,
    // its env (plus the image's, and the API server's address).
    image.mount_volumes(pod, container);
    let sa = image.rootfs.join(SA_DIR);
    assert_eq!(pod["automountServiceAccountToken"], true);
    std::fs::create_dir_all(&sa).expect("create the ServiceAccount directory");
    std::fs::write(sa.join("token"), operator_token(cp)).expect("write the token");
    std::fs::copy(cp.dir.join("pki/ca.crt"), sa.join("ca.crt")).expect("copy the CA");
    std::fs::write(sa.join("namespace"), NAMESPACE).expect("write the namespace");
    let api_port = std::fs::read_to_string(cp.dir.join("apiserver-port")).expect("API port");
    let mut env = container_env(container);
    for var in image.config["config"]["Env"].as_array().expect("image env") {
        let (k, v) = var.as_str().expect("KEY=value").split_once('=').expect("=");
        env.entry(k.to_owned()).or_insert_with(|| v.to_owned());
    }
    env.insert("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into());
    env.insert("KUBERNETES_SERVICE_PORT".into(), api_port.trim().into());
    env.insert("HOSTNAME".into(), POD_NAME.into());
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect();
    let user_id = pod["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    let group_id = pod["securityContext"]["runAsGroup"]
        .as_u64()
        .expect("runAsGroup");
    let fs_group = pod["securityContext"]["fsGroup"].as_u64().expect("fsGroup");
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"], true,
        "the run below mounts the root filesystem read-only"
    );
    let operator = start_contained(
        &image.rootfs,
        &args,
        &env,
        &format!("{user_id}:{group_id}"),
        fs_group,
        out.path(),
        format!("127.0.0.1:{port}"),
    );
    let running = || lock(&operator).is_running();
    let logs = || lock(&operator).logs();

    // The chart's probes, on the chart's port, over IPv4 and IPv6 (dual-stack bind).
    let probe_url = |probe: &str, host: &str| {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["port"], "metrics", "{probe} targets the metrics port");
        let port = container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == "metrics")
            .expect("the metrics port")["containerPort"]
            .as_u64()
            .expect("containerPort");
        format!(
            "http://{host}:{port}{}",
            get["path"].as_str().expect("path")
        )
    };
    for host in ["127.0.0.1", "[::1]"] {
        for probe in ["livenessProbe", "readinessProbe"] {
            let url = probe_url(probe, host);
            wait_for(&format!("{url} to answer 200"), WAIT, || async {
                assert!(running(), "the operator exited:\n{}", logs());
                let status = reqwest::get(&url).await.ok()?.status();
                status.is_success().then_some(())
            })
            .await;
        }
    }

    // It holds the Lease named after the release (its full name), in the release
    // namespace (the in-cluster namespace and identity came through).
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for("the leader Lease", WAIT, || async {
        let lease = leases.get_opt(FULLNAME).await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some(POD_NAME)).then_some(())
    })
    .await;

    // Attach, then revoke.
    let api: Api<PolicyAttachment> = Api::namespaced(client.clone(), &ns.name);
    let spec = e2e::spec_names("user", "dns-admin", "image@example.com");
    e2e::create(&api, "image-dns-admin", spec).await;
    wait_for("Ready=True Attached", WAIT, || async {
        assert!(running(), "the operator exited:\n{}", logs());
        let obj = api.get_opt("image-dns-admin").await.ok()??;
        e2e::has_condition(&obj, READY, "True", "Attached").then_some(())
    })
    .await;
    assert!(sim.is_user_attached(DNS_ADMIN, &user), "no grant in Vultr");
    api.delete("image-dns-admin", &DeleteParams::default())
        .await
        .expect("delete the PolicyAttachment");
    e2e::wait_gone(&api, "image-dns-admin").await;
    assert!(
        !sim.is_user_attached(DNS_ADMIN, &user),
        "grant still in Vultr"
    );

    let log = logs();
    assert!(!log.contains(API_KEY), "the key leaked into the log");
    assert!(
        !log.contains("is forbidden"),
        "the chart's RBAC denied something:\n{log}"
    );
    assert!(
        log.lines().all(|l| l.starts_with('{')),
        "the chart asks for JSON logs:\n{log}"
    );
    assert!(lock(&operator).terminate(), "no graceful stop:\n{}", logs());
}

// ---- the image ---------------------------------------------------------------------------

struct Image {
    config: Value,
    rootfs: PathBuf,
}

impl Image {
    /// Unpacks a docker-archive: its config, and its layers into `<dir>/rootfs`.
    fn unpack(archive: &Path, dir: &Path) -> Image {
        let unpacked = dir.join("archive");
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&unpacked).expect("create dir");
        std::fs::create_dir_all(&rootfs).expect("create dir");
        run_ok(
            Command::new("tar")
                .arg("-xf")
                .arg(archive)
                .arg("-C")
                .arg(&unpacked),
        );
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(unpacked.join("manifest.json")).expect("manifest.json"),
        )
        .expect("manifest JSON");
        let manifest = &manifest[0];
        let config_file = manifest["Config"].as_str().expect("Config");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(unpacked.join(config_file)).expect("the config"),
        )
        .expect("config JSON");
        for layer in manifest["Layers"].as_array().expect("Layers") {
            run_ok(
                Command::new("tar")
                    .arg("-xzf")
                    .arg(unpacked.join(layer.as_str().expect("layer")))
                    .arg("-C")
                    .arg(&rootfs),
            );
        }
        Image { config, rootfs }
    }

    /// Writes each volume mount of the container the way the kubelet would, into the
    /// root filesystem (it is mounted read-only afterwards). Only the kinds of volume the
    /// chart uses are known; another fails the test so that it is added here.
    fn mount_volumes(&self, pod: &Value, container: &Value) {
        let fs_group = pod["securityContext"]["fsGroup"].as_u64().expect("fsGroup") as u32;
        for mount in container["volumeMounts"].as_array().expect("volumeMounts") {
            let name = &mount["name"];
            let volume = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| &v["name"] == name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            let path = mount["mountPath"].as_str().expect("mountPath");
            let dir = self.rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).expect("create the mount point");
            let secret = volume
                .get("secret")
                .unwrap_or_else(|| panic!("unknown volume kind: {volume}"));
            // The API key Secret; the test's key under each projected item.
            let mode = secret["defaultMode"].as_u64().unwrap_or(0o644) as u32;
            for item in secret["items"].as_array().expect("secret items") {
                let file = dir.join(item["path"].as_str().expect("path"));
                std::fs::write(&file, API_KEY).expect("write the secret file");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
                std::os::unix::fs::chown(&file, Some(0), Some(fs_group)).expect("chown");
            }
        }
    }
}

/// Regular files with an executable bit, relative to `root`.
fn executables(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("dir entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_owned();
                found.insert(rel.display().to_string());
            }
        }
    }
    found
}

// ---- the chart -----------------------------------------------------------------------------

fn render(cp: &ControlPlane, values: &[String]) -> Vec<Value> {
    let mut cmd = cp.helm();
    cmd.args(["template", RELEASE])
        .arg(repo_path("charts/vultr-iam-operator"))
        .args(["--namespace", NAMESPACE, "--kube-version", "v1.37.2"]);
    for value in values {
        cmd.args(["--set", value]);
    }
    let yaml = run_ok(&mut cmd);
    yaml_serde::Deserializer::from_str(&yaml)
        .map(|doc| {
            let value = yaml_serde::Value::deserialize(doc).expect("valid YAML");
            serde_json::to_value(value).expect("YAML as JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The chart's RBAC objects, applied for the test and deleted afterwards.
struct ChartRbac<'a> {
    cp: &'a ControlPlane,
    list: String,
}

impl<'a> ChartRbac<'a> {
    fn apply(cp: &'a ControlPlane, docs: &[Value]) -> Self {
        let kinds = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
        let items: Vec<&Value> = docs
            .iter()
            .filter(|d| kinds.iter().any(|k| d["kind"] == *k))
            .collect();
        assert!(
            items.iter().any(|d| d["kind"] == "Role"),
            "no leader election Role"
        );
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
        let out = e2e::with_stdin(cp.kubectl().args(["apply", "-f", "-"]), &ns.to_string());
        assert!(out.status.success(), "{out:?}");
        let out = e2e::with_stdin(cp.kubectl().args(["apply", "-f", "-"]), &list);
        assert!(out.status.success(), "{out:?}");
        ChartRbac { cp, list }
    }
}

impl Drop for ChartRbac<'_> {
    fn drop(&mut self) {
        let _ = e2e::with_stdin(
            self.cp
                .kubectl()
                .args(["delete", "--ignore-not-found", "--wait=false", "-f", "-"]),
            &self.list,
        );
    }
}

/// The container's env with the downward API resolved; other sources fail the test.
fn container_env(container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("name").to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else {
            match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => POD_NAME.to_owned(),
                Some("metadata.namespace") => NAMESPACE.to_owned(),
                _ => panic!("unknown env source: {var}"),
            }
        };
        env.insert(name, value);
    }
    env
}

fn operator_token(cp: &ControlPlane) -> String {
    let kubeconfig: Value = yaml_serde::from_str(
        &std::fs::read_to_string(&cp.operator_kubeconfig).expect("operator.kubeconfig"),
    )
    .expect("kubeconfig YAML");
    kubeconfig["users"][0]["user"]["token"]
        .as_str()
        .expect("a static token")
        .to_owned()
}

// ---- the contained process ---------------------------------------------------------------

/// The entrypoint, run from the image's root filesystem mounted read-only (in a mount
/// namespace of its own), as the pod's user and group, with only the given env; its
/// output in `dir/operator.log`. Behind a mutex so that polling closures can look at it.
fn start_contained(
    rootfs: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    user: &str,
    fs_group: u64,
    dir: &Path,
    metrics_addr: String,
) -> Mutex<Operator> {
    // unshare execs sh, sh execs chroot, chroot execs the entrypoint: one PID, so
    // SIGTERM reaches the operator.
    let script = "/usr/bin/mount --bind \"$0\" \"$0\" \
         && /usr/bin/mount -o remount,bind,ro \"$0\" \
         && user=\"$1\" groups=\"$2\" && shift 2 \
         && exec /usr/sbin/chroot --userspec=\"$user\" --groups=\"$groups\" \"$0\" \"$@\"";
    let mut cmd = Command::new("/usr/bin/unshare");
    cmd.args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(script)
        .arg(rootfs)
        .arg(user)
        .arg(fs_group.to_string())
        .arg(ENTRYPOINT)
        .args(args)
        .env_clear()
        .envs(env);
    Mutex::new(Operator::spawn(cmd, dir, metrics_addr))
}

// ---- small helpers ---------------------------------------------------------------------------

fn lock(operator: &Mutex<Operator>) -> MutexGuard<'_, Operator> {
    operator.lock().unwrap_or_else(|e| e.into_inner())
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vio-image-")
        .tempdir()
        .expect("temp dir")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
