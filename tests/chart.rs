//! The Helm chart (`charts/vultr-iam-operator`) and the plain manifests (`deploy/`):
//! lint, renders applied with `kubectl apply --dry-run=server`, the schema, a real
//! install whose ServiceAccount identity runs the operator through an attach and a
//! revoke (the RBAC is sufficient) and cannot do anything else (it is minimal), a CRD
//! upgrade through `helm upgrade`, the uninstall; plus the CRD copy, the generated
//! kustomize base and the Argo CD health check, which need no cluster.
//!
//! Tests that use the control plane take [`CLUSTER`]: the release, its namespace and
//! the CRD are cluster-wide.
//!
//! `VIO_UPDATE_MANIFESTS=1 cargo test --test chart plain_manifests` (`make manifests`)
//! rewrites `deploy/kustomize/base` from the chart.

mod e2e;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use e2e::{API_KEY, DNS_ADMIN, repo_path, run_ok};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::Deserialize as _;
use serde_json::{Value, json};
use support::{ControlPlane, TestNamespace, wait_for};
use vultr_iam_operator::crd::{PolicyAttachment, READY};
use vultr_sim::{Seed, Sim, SimConfig};

const CHART: &str = "charts/vultr-iam-operator";
const RELEASE: &str = "vultr-iam-operator";
const NAMESPACE: &str = "vultr-iam-operator";
const CRD_FILE: &str = "policyattachments.iam.vultr-operator.io.yaml";
const CRD_NAME: &str = "policyattachments.iam.vultr-operator.io";
const SA_USER: &str = support::OPERATOR_USER;
const NON_DEFAULT_VALUES: &str = "charts/vultr-iam-operator/ci/non-default-values.yaml";
const KUSTOMIZE_BASE: &str = "deploy/kustomize/base";
const WAIT: Duration = Duration::from_secs(90);

/// Serializes the tests that use the control plane.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- tools -----------------------------------------------------------------------------

/// The directory with `helm` and `kubectl`: the running control plane's, else the one
/// `build.sh` prints (cached after the first build), so offline tests start no cluster.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("VIO_CLUSTER_DIR")
            && let Ok(bin) = std::fs::read_to_string(Path::new(&dir).join("bin-dir"))
        {
            return PathBuf::from(bin.trim());
        }
        let out = run_ok(&mut Command::new(repo_path("tests/control-plane/build.sh")));
        PathBuf::from(
            out.lines()
                .last()
                .expect("build.sh prints the bin dir")
                .trim(),
        )
    })
}

/// `helm` without a cluster (template, lint), its state kept out of $HOME.
fn offline_helm() -> Command {
    let mut cmd = Command::new(bin_dir().join("helm"));
    let home = std::env::temp_dir().join("vio-chart-helm");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(repo_path(""));
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` of the chart in the repository as release [`RELEASE`].
fn render(namespace: &str, args: &[&str]) -> String {
    run_ok(
        offline_helm()
            .args(["template", RELEASE, CHART, "--namespace", namespace])
            .args(args),
    )
}

/// The YAML documents of a multi-document stream, as JSON values (empty ones skipped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            let value = serde_yaml::Value::deserialize(doc).expect("valid YAML");
            serde_json::to_value(value).expect("YAML as JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", kinds_and_names(docs)))
}

fn kinds_and_names(docs: &[Value]) -> BTreeSet<(String, String)> {
    docs.iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_owned(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

// ---- the CRD ---------------------------------------------------------------------------

/// The chart's CRD is `crds/`, byte for byte (`make chart-crds` copies it), and the
/// rendered template is that object plus Helm's labels and the keep annotation.
#[test]
fn chart_crd_is_identical_to_crds() {
    let ours: BTreeSet<_> = dir_files("crds");
    let chart: BTreeSet<_> = dir_files(&format!("{CHART}/files/crds"));
    assert_eq!(
        ours, chart,
        "{CHART}/files/crds must hold exactly the files of crds/: run `make chart-crds`"
    );
    for file in &ours {
        assert!(
            read(&format!("crds/{file}")) == read(&format!("{CHART}/files/crds/{file}")),
            "{CHART}/files/crds/{file} differs from crds/{file}: run `make chart-crds`"
        );
    }

    let committed = documents(&read(&format!("crds/{CRD_FILE}")));
    let docs = documents(&render(NAMESPACE, &[]));
    let mut rendered = find(&docs, "CustomResourceDefinition", CRD_NAME).clone();
    let meta = rendered["metadata"].as_object_mut().expect("metadata");
    let annotations = meta.remove("annotations").expect("annotations");
    assert_eq!(annotations, json!({"helm.sh/resource-policy": "keep"}));
    let labels = meta.remove("labels").expect("labels");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
    assert_eq!(
        rendered, committed[0],
        "the chart renders a CRD that differs from crds/"
    );

    let docs = documents(&render(NAMESPACE, &["--set", "crds.install=false"]));
    assert!(
        !docs.iter().any(|d| d["kind"] == "CustomResourceDefinition"),
        "crds.install=false still renders the CRD"
    );
    let docs = documents(&render(NAMESPACE, &["--set", "crds.keep=false"]));
    let crd = find(&docs, "CustomResourceDefinition", CRD_NAME);
    assert!(crd["metadata"]["annotations"].is_null(), "{crd:#}");
}

fn dir_files(rel: &str) -> BTreeSet<String> {
    std::fs::read_dir(repo_path(rel))
        .unwrap_or_else(|e| panic!("read dir {rel}: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

// ---- the rendered chart ----------------------------------------------------------------

/// Defaults and non-default values render what the chart promises (the server-side
/// dry run is in `renders_pass_a_server_side_dry_run`).
#[test]
fn renders_follow_the_values() {
    let docs = documents(&render(NAMESPACE, &[]));
    let deploy = find(&docs, "Deployment", RELEASE);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(deploy);
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(pod["serviceAccountName"], RELEASE);
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert!(c["resources"]["requests"]["memory"].is_string());
    let env: Vec<_> = c["env"].as_array().expect("env").iter().collect();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env.iter().find(|e| e["name"] == name).expect(name);
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    assert!(
        !env.iter().any(|e| e["name"] == "VULTR_API_KEY"),
        "the key must come from a mounted file, not the environment"
    );
    let args = args_of(deploy);
    assert!(args.contains(&"--vultr-api-key-file=/var/run/secrets/vultr/api-key".into()));
    assert!(args.contains(&"--metrics-bind-address=0.0.0.0:8080".into()));
    assert!(!args.iter().any(|a| a.starts_with("--leader-election")));
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"], "vultr-api-key",
        "{pod:#}"
    );
    assert_eq!(c["volumeMounts"][0]["readOnly"], true);
    let sa = find(&docs, "ServiceAccount", RELEASE);
    assert_eq!(sa["automountServiceAccountToken"], false);
    // No Secret, no lease Role, nothing optional by default.
    let kinds: BTreeSet<_> = kinds_and_names(&docs).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
    );
    // People's roles exist and are not aggregated into view/edit/admin.
    for role in ["vultr-iam-operator-viewer", "vultr-iam-operator-editor"] {
        let labels = &find(&docs, "ClusterRole", role)["metadata"]["labels"];
        assert!(
            !labels
                .as_object()
                .expect("labels")
                .keys()
                .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to")),
            "{role} is aggregated by default: {labels:#}"
        );
    }

    // The non-default values of the lint/dry-run file.
    let docs = documents(&render("vio-nd", &["-f", NON_DEFAULT_VALUES]));
    let deploy = find(&docs, "Deployment", RELEASE);
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
    let args = args_of(deploy);
    for arg in [
        "--leader-election",
        "--lease-name=vio-leader",
        "--vultr-api-key-file=/var/run/secrets/vultr/token",
        "--metrics-bind-address=0.0.0.0:9090",
        "--attach-visibility-timeout=1m",
    ] {
        assert!(args.contains(&arg.to_owned()), "{arg} missing in {args:?}");
    }
    assert!(
        container(deploy)["image"]
            .as_str()
            .expect("image")
            .ends_with("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    assert_eq!(
        deploy["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "vultr-credentials"
    );
    let role = find(&docs, "Role", "vultr-iam-operator-leader-election");
    assert_eq!(role["metadata"]["namespace"], "vio-nd");
    assert_eq!(role["rules"][1]["resourceNames"], json!(["vio-leader"]));
    find(&docs, "RoleBinding", "vultr-iam-operator-leader-election");
    find(&docs, "PodDisruptionBudget", RELEASE);
    find(&docs, "NetworkPolicy", RELEASE);
    assert!(!docs.iter().any(|d| d["kind"] == "ServiceMonitor"));
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"));
    let viewer = find(&docs, "ClusterRole", "vultr-iam-operator-viewer");
    assert_eq!(
        viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );

    // replicaCount > 1 alone turns on leader election; the chart-made Secret; the
    // ServiceMonitor; watched namespaces bind the ClusterRole there only.
    let docs = documents(&render(
        NAMESPACE,
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "apiKey.create=true",
            "--set",
            "apiKey.value=dummy",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "watchNamespaces={team-a,team-b}",
        ],
    ));
    let deploy = find(&docs, "Deployment", RELEASE);
    let args = args_of(deploy);
    assert!(args.contains(&"--leader-election".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--watch-namespace=team-a".to_owned()),
        "{args:?}"
    );
    let secret = find(&docs, "Secret", "vultr-iam-operator-api-key");
    assert_eq!(secret["data"]["api-key"], "ZHVtbXk=");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "vultr-iam-operator-api-key"
    );
    let monitor = find(&docs, "ServiceMonitor", RELEASE);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    // PolicyAttachment rights stay cluster-wide (they must outlive a watched
    // namespace's RoleBindings during its deletion); Events are bound per namespace.
    let binding = find(&docs, "ClusterRoleBinding", RELEASE);
    assert_eq!(binding["roleRef"]["name"], RELEASE);
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRoleBinding" && d["roleRef"]["name"] != RELEASE)
    );
    let bindings: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" && d["roleRef"]["kind"] == "ClusterRole")
        .map(|d| {
            assert_eq!(d["roleRef"]["name"], "vultr-iam-operator-events");
            d["metadata"]["namespace"].as_str().unwrap_or_default()
        })
        .collect();
    assert_eq!(bindings, ["team-a", "team-b"]);
}

/// Bad values fail `helm template` (and `helm install`, see the install test) with the
/// schema's message naming the value.
#[test]
fn bad_values_fail_with_the_schema_message() {
    for (set, expected) in bad_values() {
        let out = output(
            offline_helm()
                .args(["template", RELEASE, CHART])
                .args(set.iter().flat_map(|s| ["--set", s])),
        );
        let text = combined(&out);
        assert!(!out.status.success(), "{set:?} rendered: {text}");
        assert!(
            text.contains("values don't meet the specifications of the schema"),
            "{set:?}: {text}"
        );
        assert!(
            text.contains(expected),
            "{set:?}: expected {expected:?} in {text}"
        );
    }
}

fn bad_values() -> Vec<(Vec<&'static str>, &'static str)> {
    vec![
        (vec!["replicaCount=-1"], "/replicaCount"),
        (vec!["replicaCount=two"], "/replicaCount"),
        (vec!["apiKey.create=true"], "/apiKey/value"),
        (vec!["apiKey.existingSecret="], "/apiKey/existingSecret"),
        (vec!["logFormat=xml"], "/logFormat"),
        (vec!["resyncInterval=ten minutes"], "/resyncInterval"),
        (vec!["vultr.rateLimit=100"], "/vultr/rateLimit"),
        (vec!["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (vec!["watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (
            vec!["replicas=2"],
            "additional properties 'replicas' not allowed",
        ),
    ]
}

#[test]
fn helm_lint_passes() {
    for args in [vec![], vec!["-f", NON_DEFAULT_VALUES]] {
        let out = output(offline_helm().args(["lint", "--strict", CHART]).args(&args));
        assert!(
            out.status.success(),
            "helm lint {args:?}: {}",
            combined(&out)
        );
    }
}

// ---- plain manifests -------------------------------------------------------------------

/// Files of `deploy/kustomize/base`, generated from the chart's default render.
fn plain_manifests() -> Vec<(&'static str, String)> {
    const HEADER: &str = "# Generated from charts/vultr-iam-operator by `make manifests` (helm template with\n\
         # default values, release and namespace vultr-iam-operator). Do not edit: change the\n\
         # chart and regenerate; tests/chart.rs fails when this file is stale.\n";
    let render = render(NAMESPACE, &[]);
    let mut rbac = Vec::new();
    let mut operator = Vec::new();
    for doc in render.split("\n---\n") {
        let text: String = doc
            .lines()
            .filter(|l| {
                let t = l.trim();
                !(t.is_empty()
                    || t == "---"
                    || t.starts_with("# Source:")
                    || t.starts_with("helm.sh/chart:")
                    || t == "app.kubernetes.io/managed-by: Helm")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let kind = text
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .unwrap_or_else(|| panic!("no kind in {text}"))
            .to_owned();
        match kind.as_str() {
            // The CRD is crds/ verbatim.
            "CustomResourceDefinition" => {}
            "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => rbac.push(text),
            _ => operator.push(text),
        }
    }
    let join = |docs: Vec<String>| format!("{HEADER}---\n{}", docs.join("---\n"));
    vec![
        (
            "kustomization.yaml",
            "# Plain manifests equivalent to the Helm chart's defaults:\n\
             #   kubectl apply --server-side -k deploy/kustomize/base\n\
             # then create the Secret vultr-api-key (key api-key) in namespace vultr-iam-operator.\n\
             # Generated by `make manifests` (tests/chart.rs); do not edit.\n\
             apiVersion: kustomize.config.k8s.io/v1beta1\n\
             kind: Kustomization\n\
             namespace: vultr-iam-operator\n\
             resources:\n  - namespace.yaml\n  - crd.yaml\n  - rbac.yaml\n  - operator.yaml\n"
                .to_owned(),
        ),
        (
            "namespace.yaml",
"# Generated by `make manifests` (tests/chart.rs); do not edit. The chart itself does\n\
                 # not create its namespace (helm install --create-namespace).\n\
                 apiVersion: v1\nkind: Namespace\nmetadata:\n  name: vultr-iam-operator\n  labels:\n    \
                 app.kubernetes.io/part-of: vultr-iam-operator\n    \
                 # The operator's pod meets the restricted Pod Security Standard.\n    \
                 pod-security.kubernetes.io/enforce: restricted\n"
                .to_owned(),
        ),
        ("crd.yaml", read(&format!("crds/{CRD_FILE}"))),
        ("rbac.yaml", join(rbac)),
        ("operator.yaml", join(operator)),
    ]
}

/// `deploy/kustomize/base` is the chart's default render (without Helm's labels), and
/// kustomize builds it into the same objects plus the Namespace.
#[test]
fn plain_manifests_match_the_chart() {
    let expected = plain_manifests();
    let base = repo_path(KUSTOMIZE_BASE);
    if std::env::var_os("VIO_UPDATE_MANIFESTS").is_some() {
        std::fs::create_dir_all(&base).expect("create the kustomize base");
        for (file, text) in &expected {
            std::fs::write(base.join(file), text).expect("write a manifest");
        }
    }
    let names: BTreeSet<String> = expected.iter().map(|(f, _)| (*f).to_owned()).collect();
    assert_eq!(
        dir_files(KUSTOMIZE_BASE),
        names,
        "{KUSTOMIZE_BASE} holds other files: run `make manifests`"
    );
    for (file, text) in &expected {
        assert!(
            read(&format!("{KUSTOMIZE_BASE}/{file}")) == *text,
            "{KUSTOMIZE_BASE}/{file} is stale: run `make manifests`"
        );
    }

    let built = documents(&run_ok(
        Command::new(bin_dir().join("kubectl"))
            .arg("kustomize")
            .arg(&base),
    ));
    let chart = documents(&render(NAMESPACE, &[]));
    let mut expected_objects = kinds_and_names(&chart);
    expected_objects.insert(("Namespace".into(), NAMESPACE.into()));
    assert_eq!(kinds_and_names(&built), expected_objects);
    // Same content as the chart except Helm's labels (and the CRD's keep annotation).
    for object in &chart {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let plain = find(&built, kind, name);
        assert_eq!(
            strip_helm(object.clone()),
            strip_helm(plain.clone()),
            "{kind} {name} differs between the chart and {KUSTOMIZE_BASE}"
        );
    }
}

/// The object without the metadata that differs between Helm and plain manifests.
fn strip_helm(mut object: Value) -> Value {
    let meta = object["metadata"].as_object_mut().expect("metadata");
    meta.remove("annotations");
    meta.remove("labels");
    object
}

// ---- the Argo CD health check ----------------------------------------------------------

fn lua() -> PathBuf {
    for name in ["lua5.4", "lua5.3", "lua5.1", "lua"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let path = dir.join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "no Lua interpreter on PATH: the Argo CD health check test needs one \
         (apt-get install -y lua5.4)"
    );
}

/// A JSON value as a Lua table constructor.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// Runs `deploy/argocd/health.lua` as Argo CD does (the object in the global `obj`) and
/// returns (status, message).
fn argocd_health(object: &Value) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let driver = dir.path().join("driver.lua");
    std::fs::write(
        &driver,
        format!(
            "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\n\", hs.message or \"\", \"\\n\")\n",
            lua_literal(object),
            lua_string(&repo_path("deploy/argocd/health.lua").to_string_lossy())
        ),
    )
    .expect("write the Lua driver");
    let out = run_ok(Command::new(lua()).arg(&driver));
    let (status, message) = out.split_once('\n').expect("status and message");
    (status.to_owned(), message.trim_end().to_owned())
}

fn pa_with(generation: i64, status: Value) -> Value {
    json!({
        "apiVersion": "iam.vultr-operator.io/v1alpha1",
        "kind": "PolicyAttachment",
        "metadata": {"name": "alice-dns-admin", "namespace": "platform", "generation": generation},
        "spec": {"policy": {"name": "dns-admin"}, "user": {"email": "alice@example.com"}},
        "status": status,
    })
}

fn ready(status: &str, reason: &str, message: &str, observed: i64) -> Value {
    json!({"observedGeneration": observed, "conditions": [
        {"type": "Ready", "status": status, "reason": reason, "message": message,
         "observedGeneration": observed, "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ]})
}

#[test]
fn argocd_health_check() {
    let cases = [
        (
            "no status",
            {
                let mut pa = pa_with(1, Value::Null);
                pa.as_object_mut().expect("object").remove("status");
                pa
            },
            "Progressing",
        ),
        (
            "status without conditions",
            pa_with(1, json!({})),
            "Progressing",
        ),
        (
            "no Ready condition",
            pa_with(
                1,
                json!({"conditions": [{"type": "Other", "status": "True", "observedGeneration": 1}]}),
            ),
            "Progressing",
        ),
        (
            "Ready=True, current",
            pa_with(2, ready("True", "Attached", "attached and verified", 2)),
            "Healthy",
        ),
        (
            "Ready=True for an older generation",
            pa_with(3, ready("True", "Attached", "attached", 2)),
            "Progressing",
        ),
        (
            "Ready=True, observedGeneration only in status",
            pa_with(
                1,
                json!({"observedGeneration": 1, "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Attached"}]}),
            ),
            "Healthy",
        ),
        (
            "Attaching",
            pa_with(1, ready("False", "Attaching", "attaching", 1)),
            "Progressing",
        ),
        (
            "Detaching",
            {
                let mut pa = pa_with(1, ready("False", "Detaching", "revoking", 1));
                pa["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                pa
            },
            "Progressing",
        ),
        (
            "PolicyNotFound",
            pa_with(
                1,
                ready(
                    "False",
                    "PolicyNotFound",
                    "no policy named \"dns-admin\"",
                    1,
                ),
            ),
            "Degraded",
        ),
        (
            "Forbidden",
            pa_with(
                1,
                ready("False", "Forbidden", "the API key may not attach", 1),
            ),
            "Degraded",
        ),
        (
            "ApiUnavailable",
            pa_with(1, ready("False", "ApiUnavailable", "503 from Vultr", 1)),
            "Degraded",
        ),
        (
            "Ready=Unknown",
            pa_with(1, ready("Unknown", "Reconciling", "", 1)),
            "Progressing",
        ),
        (
            "Synced=False",
            pa_with(
                1,
                json!({"conditions": [
                    {"type": "Ready", "status": "True", "reason": "Attached",
                     "message": "verified", "observedGeneration": 1},
                    {"type": "Synced", "status": "False", "reason": "ApiUnavailable",
                     "message": "503 from Vultr", "observedGeneration": 1},
                ]}),
            ),
            "Healthy",
        ),
    ];
    for (what, object, expected) in cases {
        let (status, message) = argocd_health(&object);
        assert_eq!(status, expected, "{what}: {message}");
        if what == "PolicyNotFound" {
            assert_eq!(message, "PolicyNotFound: no policy named \"dns-admin\"");
        }
        if what == "Synced=False" {
            assert!(
                message.contains("last reconcile failed: ApiUnavailable"),
                "{message}"
            );
        }
    }

    // argocd-cm.yaml embeds the same script.
    let cm = documents(&read("deploy/argocd/argocd-cm.yaml"));
    let embedded =
        cm[0]["data"]["resource.customizations.health.iam.vultr-operator.io_PolicyAttachment"]
            .as_str()
            .expect("the health check key in argocd-cm.yaml");
    assert!(
        embedded == read("deploy/argocd/health.lua"),
        "deploy/argocd/argocd-cm.yaml does not embed deploy/argocd/health.lua verbatim"
    );
}

// ---- against the control plane ---------------------------------------------------------

/// `kubectl apply --dry-run=server` of renders with default and non-default values and
/// of the kustomize base, in namespaces that enforce the restricted Pod Security
/// Standard (a Deployment whose pods would violate it draws a warning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_pass_a_server_side_dry_run() {
    let _cluster = CLUSTER.lock().await;
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let default_ns = restricted_namespace(cp, &client, "chart-default").await;
    let other_ns = restricted_namespace(cp, &client, "chart-values").await;
    let watched = TestNamespace::new(&client, "chart-watched").await;

    let renders = [
        (default_ns.name.as_str(), vec![]),
        (other_ns.name.as_str(), vec!["-f", NON_DEFAULT_VALUES]),
    ];
    let watch_values = format!("watchNamespaces={{{}}}", watched.name);
    let with_secret = [
        "--set",
        "apiKey.create=true",
        "--set",
        "apiKey.value=dummy",
        "--set",
        &watch_values,
        "--set",
        "fullnameOverride=vio-chart-dry-run",
    ];
    for (ns, args) in renders
        .into_iter()
        .chain([(other_ns.name.as_str(), with_secret.to_vec())])
    {
        let yaml = render(ns, &args);
        let out = dry_run(cp, &yaml);
        assert!(
            !out.contains("would violate PodSecurity"),
            "values {args:?}: {out}"
        );
        assert!(out.contains("deployment.apps/"), "{out}");
    }

    // The kustomize base, moved into a test namespace by an overlay.
    let overlay = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: {}\nresources:\n  - {}\n",
            default_ns.name,
            relative_to(overlay.path(), &repo_path(KUSTOMIZE_BASE))
        ),
    )
    .expect("write the overlay");
    let built = run_ok(cp.kubectl().arg("kustomize").arg(overlay.path()));
    let out = dry_run(cp, &built);
    assert!(!out.contains("would violate PodSecurity"), "{out}");
}

/// `to` as a path relative to the directory `from` (kustomize takes no absolute paths).
fn relative_to(from: &Path, to: &Path) -> String {
    let from = from.canonicalize().expect("canonical path");
    let to = to.canonicalize().expect("canonical path");
    let up = from.components().count() - 1;
    let down: PathBuf = to.components().skip(1).collect();
    format!("{}{}", "../".repeat(up), down.display())
}

async fn restricted_namespace(
    cp: &ControlPlane,
    client: &kube::Client,
    prefix: &str,
) -> TestNamespace {
    let ns = TestNamespace::new(client, prefix).await;
    run_ok(cp.kubectl().args([
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]));
    ns
}

fn dry_run(cp: &ControlPlane, yaml: &str) -> String {
    let out = e2e::with_stdin(
        cp.kubectl().args(["apply", "--dry-run=server", "-f", "-"]),
        yaml,
    );
    let text = combined(&out);
    assert!(out.status.success(), "dry run failed: {text}\n{yaml}");
    text
}

/// Removes the release (and restores the committed CRD) even if the test fails.
struct Release<'a> {
    cp: &'a ControlPlane,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = output(self.cp.helm().args(["uninstall", RELEASE, "-n", NAMESPACE]));
        let _ = output(
            self.cp
                .kubectl()
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(repo_path(&format!("crds/{CRD_FILE}"))),
        );
        let _ = output(self.cp.kubectl().args([
            "delete",
            "namespace",
            NAMESPACE,
            "--wait=false",
            "--ignore-not-found",
        ]));
    }
}

/// If the test fails while the operator is gone, its PolicyAttachments would keep their
/// finalizers (and their namespace would never go): strip them. A no-op on success.
struct StripFinalizers<'a> {
    cp: &'a ControlPlane,
    ns: &'a str,
}

impl Drop for StripFinalizers<'_> {
    fn drop(&mut self) {
        let out = output(self.cp.kubectl().args([
            "get",
            "policyattachments.iam.vultr-operator.io",
            "-n",
            self.ns,
            "-o",
            "name",
        ]));
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = output(self.cp.kubectl().args([
                "patch",
                name,
                "-n",
                self.ns,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]));
        }
    }
}

/// The whole life of a release: install (bad values refused), the operator binary as
/// the chart's ServiceAccount through an attach and a revoke, the RBAC's limits, a CRD
/// change through `helm upgrade`, uninstall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_chart_runs_the_operator_with_least_privilege() {
    let _cluster = CLUSTER.lock().await;
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    prepare_release_namespace(cp, &client).await;
    let release = Release { cp };

    // Bad values fail at install, and nothing is installed.
    let out = output(
        cp.helm()
            .args(["install", RELEASE])
            .arg(repo_path(CHART))
            .args(["-n", NAMESPACE, "--set", "apiKey.create=true"]),
    );
    let text = combined(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("at '/apiKey/value'"), "{text}");
    let out = output(cp.helm().args(["status", RELEASE, "-n", NAMESPACE]));
    assert!(!out.status.success(), "a failed install left a release");

    // Install for real, the key in a Secret the chart makes, two replicas (so leader
    // election and its Role are on).
    adopt_existing_crd(cp);
    let install = run_ok(
        cp.helm()
            .args(["install", RELEASE])
            .arg(repo_path(CHART))
            .args([
                "-n",
                NAMESPACE,
                "--set",
                "apiKey.create=true",
                "--set",
                &format!("apiKey.value={API_KEY}"),
                "--set",
                "replicaCount=2",
            ]),
    );
    assert!(
        install.contains("kubectl delete policyattachments --all -A"),
        "{install}"
    );
    run_ok(cp.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/{CRD_NAME}"),
    ]));
    // The pods pass the namespace's restricted Pod Security admission (they stay
    // Pending: there is no kubelet here).
    wait_for("the operator's pods", WAIT, || async {
        let out = output(cp.kubectl().args([
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/name=vultr-iam-operator",
            "-o",
            "name",
        ]));
        (String::from_utf8_lossy(&out.stdout).lines().count() == 2).then_some(())
    })
    .await;

    // The operator binary, out of process, with the chart's arguments, the key read
    // from the chart's Secret as the mounted file, and the ServiceAccount's identity.
    let deployment: Value = serde_json::from_str(&run_ok(cp.kubectl().args([
        "get",
        "deployment",
        RELEASE,
        "-n",
        NAMESPACE,
        "-o",
        "json",
    ])))
    .expect("deployment JSON");
    let chart_args = args_of(&deployment);
    assert!(
        chart_args.contains(&"--leader-election".to_owned()),
        "{chart_args:?}"
    );
    let key = secret_value(cp, "vultr-iam-operator-api-key", "api-key");
    assert_eq!(key, API_KEY);

    let sim = Sim::start(SimConfig {
        api_keys: vec![API_KEY.to_owned()],
        rate_limit: None,
        seed: Seed::demo(),
        ..SimConfig::default()
    })
    .await
    .expect("start the simulator");
    let user = sim.add_user("rbac@example.com");
    let ns = TestNamespace::new(&client, "chart-rbac").await;
    let _unstick = StripFinalizers { cp, ns: &ns.name };
    wait_for_quiet_cluster(&client, &ns.name).await;
    let mut operator = ServiceAccountOperator::start(cp, &sim.url(), &key, &chart_args);

    let api: Api<PolicyAttachment> = Api::namespaced(client.clone(), &ns.name);
    let pa: PolicyAttachment = serde_json::from_value(json!({
        "apiVersion": "iam.vultr-operator.io/v1alpha1",
        "kind": "PolicyAttachment",
        "metadata": {"name": "rbac-dns-admin"},
        "spec": {"policy": {"name": "dns-admin"}, "user": {"email": "rbac@example.com"}},
    }))
    .expect("a PolicyAttachment");
    api.create(&PostParams::default(), &pa)
        .await
        .expect("create the PolicyAttachment");
    let deadline = std::time::Instant::now() + WAIT;
    let attached = loop {
        assert!(
            operator.is_running(),
            "the operator exited:\n{}",
            operator.logs()
        );
        if let Some(obj) = api.get_opt("rbac-dns-admin").await.ok().flatten()
            && let Some(c) = obj.status.as_ref().and_then(|s| s.condition(READY))
            && c.status == "True"
            && c.reason == "Attached"
            && c.observed_generation == obj.metadata.generation
        {
            break obj;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for Ready=True Attached; operator log:\n{}",
            operator.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(sim.is_user_attached(DNS_ADMIN, &user), "no grant in Vultr");
    let status = attached.status.as_ref().expect("status");
    assert_eq!(status.subject_id.as_deref(), Some(user.as_str()));
    // Argo CD would call the live object Healthy.
    let live: Value = serde_json::to_value(&attached).expect("object as JSON");
    assert_eq!(argocd_health(&live).0, "Healthy");
    // Events were written (events.k8s.io create), the Lease is held in the release
    // namespace by this instance.
    wait_for("an Attached event", WAIT, || async {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(client.clone(), &ns.name);
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Attached"))
            .then_some(())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let lease = leases.get(RELEASE).await.expect("the leader Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(POD_NAME)
    );
    let ready = reqwest::get(format!("http://{}/readyz", operator.metrics_addr))
        .await
        .expect("GET /readyz");
    assert!(ready.status().is_success(), "/readyz: {}", ready.status());

    // Revoke: the object goes only once the grant is gone.
    api.delete("rbac-dns-admin", &DeleteParams::default())
        .await
        .expect("delete the PolicyAttachment");
    wait_for("the PolicyAttachment to go", WAIT, || async {
        matches!(api.get_opt("rbac-dns-admin").await, Ok(None)).then_some(())
    })
    .await;
    assert!(
        !sim.is_user_attached(DNS_ADMIN, &user),
        "grant still in Vultr"
    );
    let detaches: Vec<_> = sim
        .journal()
        .into_iter()
        .filter(|e| e.method == "DELETE" && e.path.contains(&user))
        .collect();
    // One revocation (a repeat from a stale watch cache is answered 404: also done).
    assert_eq!(
        detaches.iter().filter(|e| e.status == 204).count(),
        1,
        "{detaches:?}"
    );
    assert!(
        detaches.iter().all(|e| e.status == 204 || e.status == 404),
        "{detaches:?}"
    );

    // RBAC never denied anything (other 403s can happen: a cluster-wide operator may
    // finish other tests' deletions in terminating namespaces, where Events are refused),
    // and a graceful stop releases the Lease.
    let logs = operator.logs();
    let denied: Vec<_> = logs
        .lines()
        .filter(|l| l.contains("is forbidden: User"))
        .collect();
    assert!(denied.is_empty(), "RBAC denied the operator: {denied:#?}");
    assert!(!logs.contains(API_KEY), "the key leaked into the log");
    assert!(
        operator.terminate(),
        "no graceful stop:\n{}",
        operator.logs()
    );
    let lease = leases.get(RELEASE).await.expect("the leader Lease");
    assert!(
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .is_none_or(|h| h.is_empty()),
        "the Lease was not released"
    );
    drop(sim);

    check_rbac_is_minimal(cp, &ns.name);
    check_user_roles(cp, &ns.name);
    upgrade_changes_the_crd(cp);

    // Uninstall: the CRD stays (resource-policy keep), everything else goes.
    run_ok(
        cp.helm()
            .args(["uninstall", RELEASE, "-n", NAMESPACE, "--wait"]),
    );
    run_ok(cp.kubectl().args(["get", "crd", CRD_NAME]));
    for kind in ["clusterrole", "clusterrolebinding"] {
        let out = output(cp.kubectl().args(["get", kind, RELEASE]));
        assert!(
            !out.status.success(),
            "{kind} {RELEASE} survived the uninstall"
        );
    }
    drop(release);
}

/// `kubectl delete namespace` of a watched namespace, with the operator running as the
/// chart's ServiceAccount and `watchNamespaces` set: the namespace's RoleBindings go in
/// the same sweep as its PolicyAttachments, yet every grant in it is revoked and the
/// namespace goes away. (Before: the `Detaching` status write got 403, the DELETE was
/// never sent, and the namespace stayed Terminating with its grants live.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_watched_namespace_revokes_its_grants_under_the_chart_rbac() {
    let _cluster = CLUSTER.lock().await;
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    prepare_release_namespace(cp, &client).await;
    let release = Release { cp };
    let ns = TestNamespace::new(&client, "chart-nsdel").await;
    let _unstick = StripFinalizers { cp, ns: &ns.name };
    adopt_existing_crd(cp);
    run_ok(
        cp.helm()
            .args(["install", RELEASE])
            .arg(repo_path(CHART))
            .args(["-n", NAMESPACE, "--set", "apiKey.create=true"])
            .args(["--set", &format!("apiKey.value={API_KEY}")])
            .args(["--set", &format!("watchNamespaces={{{}}}", ns.name)]),
    );
    let deployment: Value = serde_json::from_str(&run_ok(cp.kubectl().args([
        "get",
        "deployment",
        RELEASE,
        "-n",
        NAMESPACE,
        "-o",
        "json",
    ])))
    .expect("deployment JSON");
    let chart_args = args_of(&deployment);
    assert!(
        chart_args.contains(&format!("--watch-namespace={}", ns.name)),
        "{chart_args:?}"
    );
    let sim = Sim::start(SimConfig {
        api_keys: vec![API_KEY.to_owned()],
        rate_limit: None,
        seed: Seed::demo(),
        ..SimConfig::default()
    })
    .await
    .expect("start the simulator");
    let users: Vec<String> = (0..3)
        .map(|i| sim.add_user(&format!("nsdel-{i}@example.com")))
        .collect();
    let mut operator = ServiceAccountOperator::start(cp, &sim.url(), API_KEY, &chart_args);

    let api: Api<PolicyAttachment> = Api::namespaced(client.clone(), &ns.name);
    for (i, user) in users.iter().enumerate() {
        let spec = if i == 0 {
            json!({"policy": {"name": "dns-admin"}, "user": {"email": "nsdel-0@example.com"}})
        } else {
            json!({"policy": {"id": DNS_ADMIN}, "user": {"id": user}})
        };
        let pa: PolicyAttachment = serde_json::from_value(json!({
            "apiVersion": "iam.vultr-operator.io/v1alpha1",
            "kind": "PolicyAttachment",
            "metadata": {"name": format!("grant-{i}")},
            "spec": spec,
        }))
        .expect("a PolicyAttachment");
        api.create(&PostParams::default(), &pa)
            .await
            .expect("create a PolicyAttachment");
    }
    wait_for("every grant Ready", WAIT, || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|o| {
                o.status
                    .as_ref()
                    .and_then(|s| s.condition(READY))
                    .is_some_and(|c| c.status == "True")
            })
            .count();
        (ready == users.len()).then_some(())
    })
    .await;
    assert!(users.iter().all(|u| sim.is_user_attached(DNS_ADMIN, u)));
    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.logs()
    );

    // Vultr hiccups: the first revocations fail, so they are retried after the
    // namespace's RoleBindings are gone.
    sim.add_fault(
        vultr_sim::Fault::status(503)
            .on(Some("DELETE"), None)
            .times(3),
    );
    run_ok(
        cp.kubectl()
            .args(["delete", "namespace", &ns.name, "--wait=false"]),
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let deadline = std::time::Instant::now() + WAIT;
    while namespaces.get_opt(&ns.name).await.ok().flatten().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "namespace {} still Terminating; live grants: {:?}; operator log:\n{}",
            ns.name,
            users
                .iter()
                .filter(|u| sim.is_user_attached(DNS_ADMIN, u))
                .collect::<Vec<_>>(),
            operator.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for user in &users {
        assert!(
            !sim.is_user_attached(DNS_ADMIN, user),
            "the grant of {user} survived its namespace"
        );
    }
    drop(operator);
    drop(release);
}

const POD_NAME: &str = "vultr-iam-operator-chart-test";

/// A namespace `vultr-iam-operator` that enforces the restricted Pod Security Standard,
/// without a release in it (a failed earlier run may have left one).
async fn prepare_release_namespace(cp: &ControlPlane, client: &kube::Client) {
    let _ = output(
        cp.helm()
            .args(["uninstall", RELEASE, "-n", NAMESPACE, "--wait"]),
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    wait_for(
        "namespace vultr-iam-operator to finish terminating",
        WAIT,
        || async {
            match namespaces.get_opt(NAMESPACE).await.ok()? {
                Some(ns) if ns.metadata.deletion_timestamp.is_some() => None,
                _ => Some(()),
            }
        },
    )
    .await;
    let manifest = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n"
    );
    let out = e2e::with_stdin(cp.kubectl().args(["apply", "-f", "-"]), &manifest);
    assert!(out.status.success(), "{}", combined(&out));
}

/// Another test binary (or `make crds`) may have created the CRD with kubectl: hand it
/// to the release, as the chart README describes.
fn adopt_existing_crd(cp: &ControlPlane) {
    let out = output(cp.kubectl().args(["get", "crd", CRD_NAME, "-o", "name"]));
    if !out.status.success() {
        return;
    }
    run_ok(cp.kubectl().args([
        "label",
        "--overwrite",
        "crd",
        CRD_NAME,
        "app.kubernetes.io/managed-by=Helm",
    ]));
    run_ok(cp.kubectl().args([
        "annotate",
        "--overwrite",
        "crd",
        CRD_NAME,
        &format!("meta.helm.sh/release-name={RELEASE}"),
        &format!("meta.helm.sh/release-namespace={NAMESPACE}"),
    ]));
}

fn secret_value(cp: &ControlPlane, name: &str, key: &str) -> String {
    run_ok(cp.kubectl().args([
        "get",
        "secret",
        name,
        "-n",
        NAMESPACE,
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ]))
}

/// The cluster-wide operator must not adopt other tests' objects: wait (briefly) until
/// every PolicyAttachment outside `own` is being deleted or gone.
async fn wait_for_quiet_cluster(client: &kube::Client, own: &str) {
    let all: Api<PolicyAttachment> = Api::all(client.clone());
    let quiet = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let busy = all
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items.iter().any(|pa| {
                        pa.metadata.namespace.as_deref() != Some(own)
                            && pa.metadata.deletion_timestamp.is_none()
                    })
                })
                .unwrap_or(true);
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    if quiet.is_err() {
        eprintln!(
            "note: other PolicyAttachments live in the cluster; the chart's operator will see them"
        );
    }
}

/// The operator binary with the chart's Deployment arguments and the static token of
/// the chart's ServiceAccount (`operator.kubeconfig`), watching the whole cluster.
/// Killed when dropped.
struct ServiceAccountOperator {
    child: Option<Child>,
    log: PathBuf,
    metrics_addr: String,
}

impl ServiceAccountOperator {
    fn start(cp: &ControlPlane, vultr_url: &str, key: &str, chart_args: &[String]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vio-chart-operator-")
            .tempdir()
            .expect("temp dir")
            .keep();
        // What the kubelet would mount from the Secret.
        let key_file = dir.join("api-key");
        std::fs::write(&key_file, key).expect("write the key file");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let overrides = [
            ("--vultr-api-key-file", key_file.display().to_string()),
            ("--vultr-api-url", vultr_url.to_owned()),
            ("--metrics-bind-address", metrics_addr.clone()),
            ("--resync-interval", "3s".to_owned()),
            ("--backoff-base", "200ms".to_owned()),
            ("--backoff-max", "2s".to_owned()),
        ];
        for (flag, _) in &overrides {
            assert!(
                chart_args
                    .iter()
                    .any(|a| a.starts_with(&format!("{flag}="))),
                "the chart does not pass {flag}: {chart_args:?}"
            );
        }
        let mut args: Vec<String> = chart_args
            .iter()
            .map(|arg| {
                let flag = arg.split('=').next().unwrap_or_default();
                match overrides.iter().find(|(f, _)| *f == flag) {
                    Some((f, v)) => format!("{f}={v}"),
                    None => arg.clone(),
                }
            })
            .collect();
        args.push("--attach-visibility-timeout=5s".to_owned());
        let log = dir.join("operator.log");
        let log_file = std::fs::File::create(&log).expect("create the log");
        let child = Command::new(env!("CARGO_BIN_EXE_vultr-iam-operator"))
            .args(&args)
            .env_remove("VULTR_API_KEY")
            .env("KUBECONFIG", &cp.operator_kubeconfig)
            .env("POD_NAME", POD_NAME)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("RUST_LOG", "info,vultr_iam_operator=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log handle"))
            .stderr(log_file)
            .spawn()
            .expect("spawn the operator");
        ServiceAccountOperator {
            child: Some(child),
            log,
            metrics_addr,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then waits up to 10 s; true if the process exited successfully.
    fn terminate(&mut self) -> bool {
        self.child.take().is_some_and(e2e::terminate)
    }
}

impl Drop for ServiceAccountOperator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `kubectl auth can-i ARGS` for the chart's ServiceAccount, asked twice: with its real
/// static token (`operator.kubeconfig`) and by impersonation from the admin.
fn service_account_can(cp: &ControlPlane, args: &[&str]) -> bool {
    let answer = |cmd: &mut Command| {
        let out = output(cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().last().map(str::trim) {
            Some("yes") => true,
            Some("no") => false,
            _ => panic!("kubectl auth can-i {args:?}: {}", combined(&out)),
        }
    };
    let with_token = answer(
        Command::new(cp.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &cp.operator_kubeconfig)
            .args(["auth", "can-i"])
            .args(args),
    );
    let impersonated = answer(
        cp.kubectl()
            .args(["auth", "can-i", &format!("--as={SA_USER}")])
            .args(args),
    );
    assert_eq!(
        with_token, impersonated,
        "token and impersonation disagree on {args:?}"
    );
    with_token
}

/// What the operator needs it has (the attach/revoke above proved it works), and
/// nothing else: no Secrets anywhere, no Pods, no other resources or groups, no Leases
/// outside its namespace or other than its own.
fn check_rbac_is_minimal(cp: &ControlPlane, ns: &str) {
    const PA: &str = "policyattachments.iam.vultr-operator.io";
    const LEASES: &str = "leases.coordination.k8s.io";
    let own_lease = format!("{LEASES}/{RELEASE}");
    let our_crd = format!("customresourcedefinitions.apiextensions.k8s.io/{CRD_NAME}");
    let allowed: Vec<Vec<&str>> = vec![
        vec!["list", PA, "-A"],
        vec!["watch", PA, "-A"],
        vec!["get", PA, "-n", ns],
        vec!["patch", PA, "-n", ns],
        vec!["update", PA, "-n", ns],
        vec!["update", PA, "--subresource=finalizers", "-n", ns],
        vec!["patch", PA, "--subresource=status", "-n", ns],
        vec!["create", "events.events.k8s.io", "-n", ns],
        vec!["patch", "events.events.k8s.io", "-n", "default"],
        vec!["create", LEASES, "-n", NAMESPACE],
        vec!["update", &own_lease, "-n", NAMESPACE],
        vec!["watch", &own_lease, "-n", NAMESPACE],
    ];
    for args in &allowed {
        assert!(
            service_account_can(cp, args),
            "the operator may not {args:?}"
        );
    }
    let denied: Vec<Vec<&str>> = vec![
        // Secrets: not in other namespaces, not cluster-wide, not even its own.
        vec!["get", "secrets", "-n", "default"],
        vec!["get", "secrets", "-n", ns],
        vec!["list", "secrets", "-A"],
        vec!["watch", "secrets", "-A"],
        vec!["get", "secrets", "-n", NAMESPACE],
        // Other resources and groups.
        vec!["create", "pods", "-n", NAMESPACE],
        vec!["list", "pods", "-A"],
        vec![
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            NAMESPACE,
        ],
        vec!["list", "configmaps", "-A"],
        vec!["list", "deployments.apps", "-A"],
        vec!["get", "customresourcedefinitions.apiextensions.k8s.io"],
        vec!["update", &our_crd],
        vec!["list", "widgets.chart-test.example.com", "-A"],
        vec!["create", "clusterrolebindings.rbac.authorization.k8s.io"],
        vec!["bind", "clusterroles.rbac.authorization.k8s.io"],
        vec!["impersonate", "users"],
        // Its own resource: never created or deleted by the operator.
        vec!["create", PA, "-n", ns],
        vec!["delete", PA, "-n", ns],
        vec!["deletecollection", PA, "-n", ns],
        vec!["list", "events.events.k8s.io", "-A"],
        // Leases: only its own namespace and its own Lease.
        vec!["create", LEASES, "-n", "default"],
        vec![
            "get",
            "leases.coordination.k8s.io/kube-controller-manager",
            "-n",
            "kube-system",
        ],
        vec![
            "update",
            "leases.coordination.k8s.io/someone-else",
            "-n",
            NAMESPACE,
        ],
        vec!["list", LEASES, "-n", NAMESPACE],
        vec!["delete", &own_lease, "-n", NAMESPACE],
    ];
    for args in &denied {
        assert!(!service_account_can(cp, args), "the operator may {args:?}");
    }
    // And the real thing, with the ServiceAccount's token.
    let out = output(
        Command::new(cp.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &cp.operator_kubeconfig)
            .args(["get", "secrets", "-n", "default"]),
    );
    assert!(!out.status.success());
    assert!(combined(&out).contains("Forbidden"), "{}", combined(&out));
}

/// The chart's ClusterRoles for people work, and the built-in namespace roles do not
/// carry the right to create PolicyAttachments (no aggregation by default).
fn check_user_roles(cp: &ControlPlane, ns: &str) {
    for (user, role) in [
        ("pa-editor", "vultr-iam-operator-editor"),
        ("pa-viewer", "vultr-iam-operator-viewer"),
        ("ns-edit", "edit"),
        ("ns-admin", "admin"),
    ] {
        run_ok(cp.kubectl().args([
            "create",
            "rolebinding",
            user,
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
            "-n",
            ns,
        ]));
    }
    let can = |user: &str, verb: &str| {
        let out = output(cp.kubectl().args([
            "auth",
            "can-i",
            verb,
            "policyattachments.iam.vultr-operator.io",
            "-n",
            ns,
            &format!("--as={user}"),
        ]));
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("pa-editor", "create") && can("pa-editor", "delete"));
    assert!(can("pa-viewer", "list") && !can("pa-viewer", "create"));
    for user in ["ns-edit", "ns-admin"] {
        assert!(
            !can(user, "create") && !can(user, "get"),
            "{user} reaches PolicyAttachments through a built-in role"
        );
    }
}

/// `helm upgrade` with a chart whose CRD gained a printer column updates the live CRD;
/// upgrading back to the repository's chart restores it.
fn upgrade_changes_the_crd(cp: &ControlPlane) {
    let copy = tempfile::tempdir().expect("temp dir");
    let chart = copy.path().join("vultr-iam-operator");
    copy_dir(&repo_path(CHART), &chart);
    let crd_path = chart.join("files/crds").join(CRD_FILE);
    let crd = std::fs::read_to_string(&crd_path).expect("read the chart's CRD");
    const COLUMNS: &str = "  - additionalPrinterColumns:\n";
    assert!(crd.contains(COLUMNS), "no printer columns in {crd}");
    let changed = crd.replacen(
        COLUMNS,
        &format!(
            "{COLUMNS}    - jsonPath: .spec.deletionPolicy\n      name: Deletion\n      priority: 1\n      type: string\n"
        ),
        1,
    );
    std::fs::write(&crd_path, changed).expect("write the changed CRD");

    let columns = || -> Vec<String> {
        let crd: Value = serde_json::from_str(&run_ok(
            cp.kubectl().args(["get", "crd", CRD_NAME, "-o", "json"]),
        ))
        .expect("CRD JSON");
        crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let before = columns();
    assert!(!before.contains(&"Deletion".to_owned()), "{before:?}");
    run_ok(cp.helm().args(["upgrade", RELEASE]).arg(&chart).args([
        "-n",
        NAMESPACE,
        "--reuse-values",
    ]));
    let after = columns();
    assert_eq!(
        after[0], "Deletion",
        "helm upgrade did not update the CRD: {after:?}"
    );
    assert_eq!(&after[1..], &before[..]);

    run_ok(
        cp.helm()
            .args(["upgrade", RELEASE])
            .arg(repo_path(CHART))
            .args(["-n", NAMESPACE, "--reuse-values"]),
    );
    assert_eq!(columns(), before);
    let live: Value = serde_json::from_str(&run_ok(
        cp.kubectl().args(["get", "crd", CRD_NAME, "-o", "json"]),
    ))
    .expect("CRD JSON");
    let committed = documents(&read(&format!("crds/{CRD_FILE}")));
    assert_eq!(live["spec"]["versions"], committed[0]["spec"]["versions"]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}
