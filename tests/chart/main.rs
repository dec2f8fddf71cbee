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
//! One file per concern: `render` (template, lint, schema), `docs` (the values table
//! and schema generated from values.yaml), `manifests` (kustomize base), `argocd`
//! (health check), `dry_run` (server-side dry runs), `install` (real installs), `rbac`
//! (least privilege), `prometheus` (alert rules), `grafana` (the dashboard: import
//! fields, PromQL under promtool, metric names, its ConfigMap); shared helpers here.
//!
//! `VIO_UPDATE_MANIFESTS=1 cargo test --test chart plain_manifests` (`make manifests`)
//! rewrites `deploy/kustomize/base` from the chart.

use vio_harness::{e2e, support};

mod argocd;
mod docs;
mod dry_run;
mod grafana;
mod install;
mod manifests;
mod prometheus;
mod rbac;
mod render;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use e2e::{API_KEY, DNS_ADMIN, combined, output, repo_path, run_ok};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams};
use serde::Deserialize as _;
use serde_json::{Value, json};
use support::{ControlPlane, TestNamespace, wait_for};
use vultr_iam_operator::crd::{PolicyAttachment, READY};

const CHART: &str = "charts/vultr-iam-operator";
const RELEASE: &str = "vultr-iam-operator";
const NAMESPACE: &str = "vultr-iam-operator";
const CRD_FILE: &str = "policyattachments.iam.vultr-operator.io.yaml";
const CRD_NAME: &str = "policyattachments.iam.vultr-operator.io";
const SA_USER: &str = support::OPERATOR_USER;
const NON_DEFAULT_VALUES: &str = "charts/vultr-iam-operator/ci/non-default-values.yaml";
const REAL_CLUSTER_VALUES: &str = "charts/vultr-iam-operator/ci/real-cluster-values.yaml";
const KUSTOMIZE_BASE: &str = "deploy/kustomize/base";
const WAIT: Duration = Duration::from_secs(90);

/// `helm template` checks Chart.yaml's kubeVersion against this (the control plane's
/// version); the control plane's helm build would otherwise assume v1.20.
const KUBE_VERSION: &str = "v1.37.2";

/// Serializes the tests that use the control plane.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Asserts that `what` exited successfully, with its output when it did not.
fn assert_success(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", combined(out));
}

/// `helm template` of the chart in the repository as release [`RELEASE`].
fn render(namespace: &str, args: &[&str]) -> String {
    run_ok(
        offline_helm()
            .args(["template", RELEASE, CHART, "--namespace", namespace])
            .args(["--kube-version", KUBE_VERSION])
            .args(args),
    )
}

/// The documents of the chart rendered into [`NAMESPACE`] with these `--set` values.
fn rendered_with(set: &[&str]) -> Vec<Value> {
    let args: Vec<&str> = set.iter().flat_map(|value| ["--set", value]).collect();
    documents(&render(NAMESPACE, &args))
}

/// The YAML documents of a multi-document stream, as JSON values (empty ones skipped).
fn documents(yaml: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| {
            let value = yaml_serde::Value::deserialize(doc).expect("valid YAML");
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
