//! Interleavings that threaten the revocation promise, each reproduced on purpose (a
//! latency fault, a watch held back by a proxy, an unreadable scope, a kill at a chosen
//! point) on the real control plane and the Vultr simulator.

use vio_harness::{e2e, support};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::*;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::json;
use support::watch_delay::WatchDelayProxy;
use support::{ControlPlane, TestNamespace, wait_for};
use vultr_iam_operator::crd::READY;
use vultr_sim::{Behaviour, Fault, FaultKind};

/// Watches `b` (DNS_ADMIN for ALICE) for `span`: whenever it says Ready=True, the
/// grant must exist in Vultr. Returns how often it was seen Ready.
async fn ready_only_with_the_grant(env: &Env, span: Duration) -> usize {
    let deadline = Instant::now() + span;
    let mut ready_seen = 0;
    while Instant::now() < deadline {
        if let Some(b) = env.api.get_opt("b").await.expect("get b")
            && is_ready(&b)
        {
            ready_seen += 1;
            assert!(
                env.sim.is_user_attached(DNS_ADMIN, ALICE),
                "b says Ready=True but the grant is gone from Vultr"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ready_seen
}

/// A rename (delete `a`, create `b` for the same pair) while `a`'s DELETE is slow (1.5 s,
/// under the client timeout): whenever `b` says Ready=True, the grant exists in Vultr,
/// and `b` ends Ready with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_never_leaves_the_new_object_ready_without_its_grant() {
    let env = Env::start("il-rename").await;
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    env.sim.add_fault(
        Fault::new(FaultKind::Latency { ms: 1500 })
            .on(
                Some("DELETE"),
                Some(&format!("/v2/policies/{DNS_ADMIN}/users/")),
            )
            .times(1),
    );
    let (_, created) = tokio::join!(env.delete("a"), env.create("b", by_ids(DNS_ADMIN, ALICE)));
    drop(created);

    let ready_seen = ready_only_with_the_grant(&env, Duration::from_secs(15)).await;
    env.wait_gone("a").await;
    env.wait_ready("b", "True", "Attached").await;
    assert!(ready_seen > 0, "b never became Ready");
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
}

/// A rename while Vultr's listings lag 3 s behind detaches: `a` is deleted and its grant
/// revoked, then `b` declares the same pair. Whenever `b` says Ready=True, the grant
/// exists in Vultr, and `b` ends Ready with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_lagging_a_detach_never_makes_the_new_object_ready() {
    let env = Env::start("il-detach-lag").await;
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    env.sim.set_behaviour(Behaviour {
        detach_lag: Duration::from_secs(3),
        ..Behaviour::default()
    });
    env.delete_and_wait_gone("a").await;
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE), "a was revoked");
    env.create("b", by_ids(DNS_ADMIN, ALICE)).await;

    let ready_seen = ready_only_with_the_grant(&env, Duration::from_secs(10)).await;
    env.wait_ready("b", "True", "Attached").await;
    assert!(ready_seen > 0, "b never became Ready");
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
}

/// Create and delete at once while the operator's watch lags 6 s behind (a proxy): the
/// cleanup runs on a cached object from before the pair was recorded. A DELETE must be
/// sent anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_racing_the_first_attach_still_revokes() {
    let mut env = Env::start("il-stale").await;
    env.operator.kill();
    let proxy = WatchDelayProxy::start(env.cp, Duration::from_secs(6)).await;
    let kubeconfig = proxy.kubeconfig.display().to_string();
    env.operator = env.start_operator(
        // No verification pass in the middle of the race.
        &["--resync-interval", "60s"],
        &[("KUBECONFIG", &kubeconfig)],
    );
    // The first resolution is slow, so the deletion lands before the pair is recorded.
    env.sim.add_fault(
        Fault::new(FaultKind::Latency { ms: 2000 })
            .on(Some("GET"), Some("/v2/users"))
            .times(1),
    );
    env.create(
        "racy",
        json!({"policy": {"id": DNS_ADMIN}, "user": {"email": "alice@example.com"}}),
    )
    .await;
    // The first Apply has started (it says Attaching before it resolves): delete now,
    // while it is still resolving, so the pair is recorded after the deletion.
    wait_for("the first Apply", WAIT, || async {
        let obj = env.api.get_opt("racy").await.ok().flatten()?;
        obj.status.as_ref()?.condition(READY).map(|_| ())
    })
    .await;
    env.delete_and_wait_gone("racy").await;

    let posts = env.requests("POST", &format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}"));
    let deletes = env.requests("DELETE", &format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}"));
    assert!(
        !env.sim.is_user_attached(DNS_ADMIN, ALICE),
        "the grant outlived its object: POSTs {posts:?}, DELETEs {deletes:?}\n{}",
        env.operator.logs()
    );
    // The race really happened: the attach went out, and so did its revocation.
    assert!(
        !posts.is_empty(),
        "no attach was sent; the race did not happen"
    );
    assert!(!deletes.is_empty());
}

/// A revocation is final. The live lane's watch lags the deleted lane's by 3 s (a proxy
/// delays only the live watch) and listings lag Vultr's writes: after the deleted lane
/// revokes and releases an object, live-lane reconciles of its stale, not-deleted
/// snapshot (drift passes every second) must never attach it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_live_watch_never_re_attaches_a_revoked_grant() {
    let mut env = Env::start("il-lane-lag").await;
    env.operator.kill();
    let live_watch = format!(
        "timeoutSeconds={}",
        vultr_iam_operator::watch_cache::Lane::Live.watch_timeout_secs()
    );
    let proxy =
        WatchDelayProxy::start_matching(env.cp, Duration::from_secs(3), Some(&live_watch)).await;
    let kubeconfig = proxy.kubeconfig.display().to_string();
    env.sim.set_behaviour(Behaviour {
        listing_lag: Duration::from_millis(500),
        ..env.sim.behaviour()
    });
    env.operator = env.start_operator(&["--resync-interval", "1s"], &[("KUBECONFIG", &kubeconfig)]);
    let pairs = FOUR_PAIRS;
    env.attach_then_delete(&pairs).await;
    // The live watch catches up 3 s later; drift passes run every second meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (name, policy, user) in pairs {
        let path = format!("/v2/policies/{policy}/users/{user}");
        let writes: Vec<_> = env
            .sim
            .journal()
            .into_iter()
            .filter(|e| e.path == path && (e.method == "POST" || e.method == "DELETE"))
            .map(|e| (e.method, e.status))
            .collect();
        let revoked_at = writes
            .iter()
            .position(|(m, s)| m == "DELETE" && *s == 204)
            .unwrap_or_else(|| panic!("{name}: no revocation: {writes:?}"));
        assert!(
            !writes[revoked_at..].iter().any(|(m, _)| m == "POST"),
            "{name}: a POST after its revocation: {writes:?}\n{}",
            env.operator.logs()
        );
        assert!(
            !env.sim.is_user_attached(policy, user),
            "{name}: the grant outlived its object: {writes:?}"
        );
    }
}

/// A 404 to the DELETE while the policy's listing still shows the grant (a proxy or a
/// misrouted URL answering 404) is not a revocation: the finalizer holds until a real
/// 204.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_that_vultr_contradicts_is_not_a_revocation() {
    let env = Env::start("il-404").await;
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    let path = format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}");
    env.sim
        .add_fault(Fault::status(404).on(Some("DELETE"), Some(&path)).times(2));
    env.delete_and_wait_gone("a").await;
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    let statuses: Vec<u16> = env
        .requests("DELETE", &path)
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, [404, 404, 204]);
}

/// The operator restarts right after a POST that Vultr does not list yet, and Vultr
/// answers 409 to the repeated POST: the object waits for the listing like after a
/// fresh attach and becomes Ready, never `Rejected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_attach_after_a_restart_is_not_rejected() {
    let mut env = Env::start("il-409").await;
    env.sim.set_behaviour(Behaviour {
        // Under the test operator's --attach-visibility-timeout (5s).
        listing_lag: Duration::from_secs(4),
        attach_existing: 409,
        ..Behaviour::default()
    });
    env.create("a", by_ids(DNS_ADMIN, ALICE)).await;
    let post = format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}");
    wait_for("the first POST", WAIT, || async {
        (!env.requests("POST", &post).is_empty()).then_some(())
    })
    .await;
    env.operator.kill();
    env.operator = env.start_operator(&[], &[]);

    let deadline = Instant::now() + WAIT;
    let mut reasons = Vec::new();
    loop {
        let obj = env.api.get_opt("a").await.expect("get").expect("a exists");
        let c = obj
            .status
            .as_ref()
            .and_then(|s| s.condition(READY))
            .cloned();
        if let Some(c) = c {
            if reasons.last() != Some(&c.reason) {
                reasons.push(c.reason.clone());
            }
            if c.status == "True" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "not Ready: {reasons:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !reasons.iter().any(|r| r == "Rejected"),
        "said Rejected on the way: {reasons:?}"
    );
    assert_eq!(env.requests("POST", &post).len(), 2, "{reasons:?}");
}

/// An identity of the test's own (admin impersonating it), for RBAC per namespace.
fn impersonating_kubeconfig(cp: &ControlPlane, user: &str) -> PathBuf {
    let admin = std::fs::read_to_string(&cp.kubeconfig).expect("read the admin kubeconfig");
    let config = admin.replacen("  user:\n", &format!("  user:\n    as: {user}\n"), 1);
    assert_ne!(config, admin, "cannot place `as:` in the kubeconfig");
    let path = tempfile::Builder::new()
        .prefix("vio-impersonate-")
        .suffix(".kubeconfig")
        .tempfile()
        .expect("kubeconfig file")
        .keep()
        .expect("keep it")
        .1;
    std::fs::write(&path, config).expect("write the kubeconfig");
    path
}

/// Lets `user` do, in `ns`, what the chart lets the operator do.
async fn grant_operator_rights(client: &kube::Client, role: &str, ns: &str, user: &str) {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("operator".into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the RoleBinding");
}

/// One watched namespace whose LIST is refused, and another whose holder candidate can
/// no longer be read: neither stalls a deletion elsewhere. The deletion revokes (an
/// unconfirmable holder never keeps a grant) and says so in a Warning Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_scope_stalls_no_other_deletion() {
    let mut env = Env::start("il-scope").await;
    env.operator.kill();
    let client = env.client.clone();
    let unreadable = TestNamespace::new(&client, "il-scope-denied").await;
    let other = TestNamespace::new(&client, "il-scope-other").await;
    let user = format!("vio-test-{}", &env.ns.name);
    let role_name = format!("vio-test-{}", env.ns.name);
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..Default::default()
        },
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec!["iam.vultr-operator.io".into()]),
                resources: Some(vec![
                    "policyattachments".into(),
                    "policyattachments/status".into(),
                    "policyattachments/finalizers".into(),
                ]),
                verbs: ["get", "list", "watch", "patch", "update"]
                    .map(String::from)
                    .into(),
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec!["events.k8s.io".into()]),
                resources: Some(vec!["events".into()]),
                verbs: ["create", "patch"].map(String::from).into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let roles: Api<ClusterRole> = Api::all(client.clone());
    roles
        .create(&PostParams::default(), &role)
        .await
        .expect("create the ClusterRole");
    grant_operator_rights(&client, &role_name, &env.ns.name, &user).await;
    grant_operator_rights(&client, &role_name, &other.name, &user).await;

    let kubeconfig = impersonating_kubeconfig(env.cp, &user);
    let kubeconfig = kubeconfig.display().to_string();
    env.operator = env.start_operator(
        &[
            "--watch-namespace",
            &unreadable.name,
            "--watch-namespace",
            &other.name,
        ],
        &[("KUBECONFIG", &kubeconfig)],
    );
    // `keeper` in the other namespace shares a's pair; `solo` has a pair of its own.
    let other_api: Api<vultr_iam_operator::crd::PolicyAttachment> =
        Api::namespaced(client.clone(), &other.name);
    env.create_all(&[
        ("a", by_ids(DNS_ADMIN, ALICE)),
        ("solo", by_ids(BILLING_READ, BOB)),
    ])
    .await;
    let keeper = policy_attachment("keeper", by_ids(DNS_ADMIN, ALICE));
    other_api
        .create(&PostParams::default(), &keeper)
        .await
        .expect("create keeper");
    env.wait_attached(&["a", "solo"]).await;
    wait_for("keeper Ready", WAIT, || async {
        is_ready(&other_api.get_opt("keeper").await.ok().flatten()?).then_some(())
    })
    .await;

    // A deletion in a readable scope completes although another scope never synced.
    env.delete_and_wait_gone("solo").await;
    assert!(!env.sim.is_user_attached(BILLING_READ, BOB));

    // Now keeper cannot be read any more: the shared grant is revoked, and a says why.
    Api::<RoleBinding>::namespaced(client.clone(), &other.name)
        .delete("operator", &DeleteParams::default())
        .await
        .expect("delete the RoleBinding");
    env.delete_and_wait_gone("a").await;
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    let note = env.wait_event("a", "HolderUnconfirmed").await;
    assert!(note.contains("keeper"), "{note}");

    let _ = roles.delete(&role_name, &DeleteParams::default()).await;
    let _ = other_api
        .patch(
            "keeper",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
}

/// A write built from a stale snapshot never lands on an object re-created with the same
/// name: the status patch and the finalizer's removal both test the UID. The controls
/// show the interleaving is real: the same writes without a UID test (a server-side
/// apply of the status, kube-runtime's finalizer helper) do land on the new object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_snapshot_never_writes_onto_a_re_created_object() {
    use std::sync::Arc;

    use kube::ResourceExt;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::controller::Action;
    use vultr_iam_operator::crd::{FINALIZER, PolicyAttachment, PolicyAttachmentStatus};
    use vultr_iam_operator::reconcile::{finalizer, status};

    let mut env = Env::start("il-recreated").await;
    env.operator.kill();
    let with_finalizer = || {
        let mut obj = policy_attachment("x", by_ids(DNS_ADMIN, ALICE));
        obj.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        obj
    };
    let stale = env
        .api
        .create(&PostParams::default(), &with_finalizer())
        .await
        .expect("create x");
    env.delete("x").await;
    let release = json!({"metadata": {"finalizers": null}});
    env.api
        .patch("x", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("release x");
    env.wait_gone("x").await;
    let fresh = env
        .api
        .create(&PostParams::default(), &with_finalizer())
        .await
        .expect("re-create x");
    let live = || async { env.api.get("x").await.expect("get x") };

    // The status of the old object, written from its snapshot: refused.
    let old_status = PolicyAttachmentStatus {
        policy: Some("stale".to_owned()),
        ..PolicyAttachmentStatus::default()
    };
    let written = status::Update::new(old_status, None, k8s_openapi::jiff::Timestamp::now())
        .write(&env.api, &stale)
        .await;
    assert!(written.is_err(), "a stale status write landed: {written:?}");
    assert_eq!(live().await.status, None);

    // The old object's cleanup, from a snapshot that shows it deleting: it ends as done
    // (that object is gone) and the new object keeps its finalizer.
    let mut deleting = stale.clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    finalizer::finalizer(&env.api, FINALIZER, Arc::new(deleting.clone()), |_| async {
        Ok(Action::await_change())
    })
    .await
    .expect("the old object's cleanup ends");
    let now = live().await;
    assert_eq!(now.uid(), fresh.uid());
    assert!(now.finalizers().iter().any(|f| f == FINALIZER), "{now:?}");

    // Controls: without the UID test, both writes land on the new object.
    let mut apply = status_apply(json!({"policy": "stale"}));
    apply["metadata"] = json!({"uid": stale.uid()});
    env.api
        .patch_status(
            "x",
            &PatchParams::apply("control").force(),
            &Patch::Apply(&apply),
        )
        .await
        .expect("a server-side apply of the stale status");
    assert_eq!(
        live().await.status.and_then(|s| s.policy).as_deref(),
        Some("stale")
    );
    kube::runtime::finalizer::finalizer(&env.api, FINALIZER, Arc::new(deleting), |_| async {
        Ok::<_, vultr_iam_operator::error::Error>(Action::await_change())
    })
    .await
    .expect("kube-runtime's finalizer removal");
    let now: PolicyAttachment = live().await;
    assert!(
        !now.finalizers().iter().any(|f| f == FINALIZER),
        "the control removed the new object's finalizer"
    );
}
