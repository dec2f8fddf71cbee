//! Renders applied with `kubectl apply --dry-run=server` (restricted Pod Security).

use super::*;

/// `kubectl apply --dry-run=server` of renders with default and non-default values and
/// of the kustomize base, in namespaces that enforce the restricted Pod Security
/// Standard (a Deployment whose pods would violate it draws a warning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn renders_pass_a_server_side_dry_run() {
    let _cluster = CLUSTER.lock().await;
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let default_ns = restricted_namespace(cp, &client, "chart-default").await;
    let other_ns = restricted_namespace(cp, &client, "chart-values").await;
    let watched = TestNamespace::new(&client, "chart-watched").await;

    let renders = [
        (default_ns.name.as_str(), vec![]),
        (other_ns.name.as_str(), vec!["-f", NON_DEFAULT_VALUES]),
        (other_ns.name.as_str(), vec!["-f", REAL_CLUSTER_VALUES]),
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
pub(super) fn relative_to(from: &Path, to: &Path) -> String {
    let from = from.canonicalize().expect("canonical path");
    let to = to.canonicalize().expect("canonical path");
    let up = from.components().count() - 1;
    let down: PathBuf = to.components().skip(1).collect();
    format!("{}{}", "../".repeat(up), down.display())
}

pub(super) async fn restricted_namespace(
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

pub(super) fn dry_run(cp: &ControlPlane, yaml: &str) -> String {
    let out = e2e::with_stdin(
        cp.kubectl().args(["apply", "--dry-run=server", "-f", "-"]),
        yaml,
    );
    let text = combined(&out);
    assert!(out.status.success(), "dry run failed: {text}\n{yaml}");
    text
}
