//! Real installs: the whole life of a release (the operator run with the chart's
//! ServiceAccount identity), a watched namespace deleted, missing watched namespaces.

use super::*;
use crate::argocd::argocd_health;
use crate::e2e::Operator;
use crate::rbac::{check_rbac_is_minimal, check_user_roles};

/// `watchNamespaces` that do not exist yet: the install fails with the API server's
/// message naming the namespace, unless `createWatchNamespaces` creates them, and an
/// uninstall keeps what it created (deleting a namespace would revoke its grants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn watched_namespaces_that_do_not_exist_yet() {
    let _cluster = CLUSTER.lock().await;
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let release_ns = TestNamespace::new(&client, "chart-later").await;
    let suffix = &release_ns.name["chart-later-".len()..];
    let missing = format!("team-later-{suffix}");
    let install = |create: bool| {
        output(
            cp.helm()
                .args(["install", "later"])
                .arg(repo_path(CHART))
                .args(["-n", &release_ns.name])
                .args([
                    "--set",
                    "crds.install=false",
                    "--set",
                    "rbac.userRoles=false",
                ])
                .args(["--set", &format!("fullnameOverride=vio-later-{suffix}")])
                .args(["--set", &format!("watchNamespaces={{{missing}}}")])
                .args(["--set", &format!("createWatchNamespaces={create}")]),
        )
    };
    let out = install(false);
    let text = combined(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("namespaces \"{missing}\" not found")),
        "{text}"
    );
    let _ = output(
        cp.helm()
            .args(["uninstall", "later", "-n", &release_ns.name]),
    );

    let out = install(true);
    assert!(out.status.success(), "{}", combined(&out));
    run_ok(cp.kubectl().args([
        "get",
        "rolebinding",
        &format!("vio-later-{suffix}-events"),
        "-n",
        &missing,
    ]));
    run_ok(
        cp.helm()
            .args(["uninstall", "later", "-n", &release_ns.name, "--wait"]),
    );
    let ns = run_ok(cp.kubectl().args([
        "get",
        "namespace",
        &missing,
        "-o",
        "jsonpath={.status.phase}",
    ]));
    assert_eq!(ns, "Active", "the uninstall deleted the watched namespace");
    run_ok(
        cp.kubectl()
            .args(["delete", "namespace", &missing, "--wait=false"]),
    );
}

/// Removes the release (and restores the committed CRD) even if the test fails.
pub(super) struct Release<'a> {
    cp: &'a ControlPlane,
}

impl Release<'static> {
    /// The release namespace prepared (see [`prepare_release_namespace`]) on the shared
    /// control plane, and an admin client.
    async fn prepare() -> (Release<'static>, kube::Client) {
        let cp = ControlPlane::shared();
        let client = cp.client().await;
        prepare_release_namespace(cp, &client).await;
        (Release { cp }, client)
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = output(self.cp.helm().args(["uninstall", RELEASE, "-n", NAMESPACE]));
        e2e::restore_crd_and_drop(self.cp, &repo_path(&format!("crds/{CRD_FILE}")), NAMESPACE);
    }
}

/// If the test fails while the operator is gone, its PolicyAttachments would keep their
/// finalizers (and their namespace would never go): strip them. A no-op on success.
pub(super) struct StripFinalizers<'a> {
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

/// The whole life of a release, phase by phase: bad values refused at install, an
/// install, the operator binary as the chart's ServiceAccount through an attach and a
/// revoke, the RBAC's limits, a CRD change through `helm upgrade`, the uninstall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn installed_chart_runs_the_operator_with_least_privilege() {
    let _cluster = CLUSTER.lock().await;
    let (release, client) = Release::prepare().await;
    let cp = release.cp;

    bad_values_install_nothing(cp);
    let (chart_args, key) = install_with_two_replicas(cp).await;
    let ns = attach_and_revoke_as_the_service_account(cp, &client, &chart_args, &key).await;
    check_rbac_is_minimal(cp, &ns.name);
    check_user_roles(cp, &ns.name);
    upgrade_changes_the_crd(cp);
    uninstall_keeps_only_the_crd(cp);
    drop(release);
}

/// Phase: bad values fail `helm install`, and nothing is installed.
fn bad_values_install_nothing(cp: &ControlPlane) {
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
}

/// Phase: the install; returns the Deployment's container args and the API key the
/// chart's Secret holds.
async fn install_with_two_replicas(cp: &ControlPlane) -> (Vec<String>, String) {
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
    let deployment: Value = deployment(cp);
    let chart_args = args_of(&deployment);
    assert!(
        chart_args.contains(&"--leader-election".to_owned()),
        "{chart_args:?}"
    );
    let key = secret_value(cp, "vultr-iam-operator-api-key", "api-key");
    assert_eq!(key, API_KEY);

    (chart_args, key)
}

/// Phase: the operator binary, out of process, with the chart's arguments and the
/// ServiceAccount's identity, through an attach and a revoke; returns the namespace of
/// the PolicyAttachment.
async fn attach_and_revoke_as_the_service_account(
    cp: &'static ControlPlane,
    client: &kube::Client,
    chart_args: &[String],
    key: &str,
) -> TestNamespace {
    let sim = e2e::demo_sim().await;
    let user = sim.add_user("rbac@example.com");
    let ns = TestNamespace::new(client, "chart-rbac").await;
    let unstick = StripFinalizers { cp, ns: &ns.name };
    wait_for_quiet_cluster(client, &ns.name).await;
    let mut operator = start_service_account_operator(cp, &sim.url(), key, chart_args);

    let api: Api<PolicyAttachment> = Api::namespaced(client.clone(), &ns.name);
    let spec = e2e::spec_names("user", "dns-admin", "rbac@example.com");
    e2e::create(&api, "rbac-dns-admin", spec).await;
    let deadline = std::time::Instant::now() + WAIT;
    let attached = loop {
        assert!(
            operator.is_running(),
            "the operator exited:\n{}",
            operator.logs()
        );
        if let Some(obj) = api.get_opt("rbac-dns-admin").await.ok().flatten()
            && e2e::has_condition(&obj, READY, "True", "Attached")
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
    crate::e2e::wait_gone(&api, "rbac-dns-admin").await;
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
    // Success: nothing to strip.
    drop(unstick);
    ns
}

/// Phase: uninstall; the CRD stays (resource-policy keep), everything else goes.
fn uninstall_keeps_only_the_crd(cp: &ControlPlane) {
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
}

/// `kubectl delete namespace` of a watched namespace, with the operator running as the
/// chart's ServiceAccount and `watchNamespaces` set: the namespace's RoleBindings go in
/// the same sweep as its PolicyAttachments, yet every grant in it is revoked and the
/// namespace goes away: a `Detaching` status write refused with 403 does not hold back
/// the DELETE, and the namespace does not stay Terminating with its grants live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn deleting_a_watched_namespace_revokes_its_grants_under_the_chart_rbac() {
    let _cluster = CLUSTER.lock().await;
    let (release, client) = Release::prepare().await;
    let cp = release.cp;
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
    let deployment: Value = deployment(cp);
    let chart_args = args_of(&deployment);
    assert!(
        chart_args.contains(&format!("--watch-namespace={}", ns.name)),
        "{chart_args:?}"
    );
    let sim = e2e::demo_sim().await;
    let users: Vec<String> = (0..3)
        .map(|i| sim.add_user(&format!("nsdel-{i}@example.com")))
        .collect();
    let mut operator = start_service_account_operator(cp, &sim.url(), API_KEY, &chart_args);

    let api: Api<PolicyAttachment> = Api::namespaced(client.clone(), &ns.name);
    for (i, user) in users.iter().enumerate() {
        let spec = if i == 0 {
            e2e::spec_names("user", "dns-admin", "nsdel-0@example.com")
        } else {
            e2e::by_ids(DNS_ADMIN, user)
        };
        e2e::create(&api, &format!("grant-{i}"), spec).await;
    }
    wait_for("every grant Ready", WAIT, || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        let ready = list.items.iter().filter(|o| e2e::is_ready(o)).count();
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

pub(super) const POD_NAME: &str = "vultr-iam-operator-chart-test";

/// A namespace `vultr-iam-operator` that enforces the restricted Pod Security Standard,
/// without a release in it.
pub(super) async fn prepare_release_namespace(cp: &ControlPlane, client: &kube::Client) {
    e2e::empty_release_namespace(cp, client, RELEASE, NAMESPACE).await;
}

/// Another test binary (or `make crds`) may have created the CRD with kubectl: hand it
/// to the release, as the chart README describes.
pub(super) fn adopt_existing_crd(cp: &ControlPlane) {
    e2e::adopt_crd(cp, CRD_NAME, RELEASE, NAMESPACE);
}

pub(super) fn secret_value(cp: &ControlPlane, name: &str, key: &str) -> String {
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
pub(super) async fn wait_for_quiet_cluster(client: &kube::Client, own: &str) {
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

/// The operator binary, out of process, with the chart's container args (a few
/// overridden for the test: key file, Vultr URL, metrics address, short timings) and
/// the chart's ServiceAccount (`operator.kubeconfig`), watching the whole cluster.
/// Killed when dropped.
fn start_service_account_operator(
    cp: &ControlPlane,
    vultr_url: &str,
    key: &str,
    chart_args: &[String],
) -> Operator {
    let dir = support::kept_dir("vio-chart-operator-");
    // What the kubelet would mount from the Secret.
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, key).expect("write the key file");
    let metrics_addr = format!("127.0.0.1:{}", support::free_port());
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
    let binary = support::operator_binary();
    e2e::as_chart_service_account(cp, &binary, &args, POD_NAME, NAMESPACE, &dir, metrics_addr)
}

/// `helm upgrade` with a chart whose CRD gained a printer column updates the live CRD;
/// upgrading back to the repository's chart restores it.
pub(super) fn upgrade_changes_the_crd(cp: &ControlPlane) {
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

pub(super) fn copy_dir(from: &Path, to: &Path) {
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

/// The chart's Deployment as installed.
fn deployment(cp: &ControlPlane) -> Value {
    e2e::installed_deployment(cp, RELEASE, NAMESPACE)
}
