//! What an on-call engineer relies on: metrics, health, leader election with a fast
//! hand-over, JSON logs, namespace scoping.

use vio_harness::{e2e, support};

use std::time::{Duration, Instant};

use e2e::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use serde_json::json;
use support::wait_for;
use vultr_sim::{Fault, FaultKind};

/// The value of the first sample line starting with `prefix` (name plus labels).
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sample starting with `prefix` is `value`.
fn assert_sample(metrics: &str, prefix: &str, value: f64) {
    assert_eq!(
        sample(metrics, prefix),
        Some(value),
        "{prefix} in {metrics}"
    );
}

/// The sample starting with `prefix` is at least 1.
fn assert_counted(metrics: &str, prefix: &str) {
    assert!(
        sample(metrics, prefix).is_some_and(|v| v >= 1.0),
        "{prefix} in {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_tell_the_truth() {
    let env = Env::start("op-metrics").await;
    let body = wait_for("healthz", WAIT, || async {
        let (status, body) = env.operator.http_get("/healthz").await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(body, "ok");
    wait_for("readyz", WAIT, || async {
        (env.operator.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;

    env.create_all(&[
        ("a", by_ids(DNS_ADMIN, ALICE)),
        (
            "missing",
            json!({"policy": {"name": "nope"}, "user": {"id": ALICE}}),
        ),
    ])
    .await;
    env.wait_ready("a", "True", "Attached").await;
    env.wait_ready("missing", "False", "PolicyNotFound").await;

    let (_, m) = env.operator.http_get("/metrics").await;
    for (prefix, value) in [
        (
            r#"vultr_iam_policyattachments{ready="True",reason="Attached"}"#,
            1.0,
        ),
        (
            r#"vultr_iam_policyattachments{ready="False",reason="PolicyNotFound"}"#,
            1.0,
        ),
        (
            r#"vultr_iam_vultr_requests_total{route="POST /v2/policies/{policy_id}/users/{user_id}",status="201"}"#,
            1.0,
        ),
        ("vultr_iam_revocations_pending", 0.0),
    ] {
        assert_sample(&m, prefix, value);
    }
    for prefix in [
        r#"vultr_iam_reconciles_total{result="success",reason=""}"#,
        r#"vultr_iam_reconciles_total{result="error",reason="PolicyNotFound"}"#,
        r#"vultr_iam_vultr_requests_total{route="GET /v2/policies/{policy_id}/users",status="200"}"#,
        "vultr_iam_reconcile_duration_seconds_count",
        "vultr_iam_vultr_limiter_wait_seconds_count",
    ] {
        assert_counted(&m, prefix);
    }
    // Label values stay bounded: no IDs, names or emails.
    for raw in [DNS_ADMIN, ALICE, "nope", "alice@example.com"] {
        assert!(!m.contains(raw), "metrics carry {raw}");
    }

    // A stuck revocation shows up as pending, with a growing age.
    env.sim
        .add_fault(Fault::status(503).on(Some("DELETE"), None));
    env.delete("a").await;
    env.wait_synced("a", "False", "ApiUnavailable").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, m) = env.operator.http_get("/metrics").await;
    assert_sample(&m, "vultr_iam_revocations_pending", 1.0);
    assert_counted(&m, "vultr_iam_oldest_pending_revocation_age_seconds");
    assert_counted(
        &m,
        r#"vultr_iam_vultr_requests_total{route="DELETE /v2/policies/{policy_id}/users/{user_id}",status="503"}"#,
    );
    env.sim.clear_faults();
    env.wait_gone("a").await;
    let (_, m) = env.operator.http_get("/metrics").await;
    assert_sample(&m, "vultr_iam_revocations_pending", 0.0);

    // Drift repairs are counted.
    env.attach("b", by_ids(DNS_ADMIN, BOB)).await;
    env.sim.detach_user(DNS_ADMIN, BOB);
    env.wait_event("b", "DriftRepaired").await;
    let (_, m) = env.operator.http_get("/metrics").await;
    assert_counted(&m, "vultr_iam_drift_repairs_total");
}

/// SIGTERM; the exit status if the process ended within `limit` (else it is left
/// running, for the caller to report and drop).
async fn terminate_within(op: &mut Operator, limit: Duration) -> Option<std::process::ExitStatus> {
    let pid = op.pid().expect("the operator runs");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = op.exit_status() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Two replicas: only the leader reconciles; SIGKILL the leader while revocations are
/// pending and the standby finishes every one of them after taking the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_pending_revocations() {
    let mut env = Env::start("op-leader").await;
    env.operator.kill();
    let mut first = env.replica("replica-a", &[], &[]);
    wait_for("replica-a to lead", WAIT, || async {
        (env.lease_holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let mut second = env.replica("replica-b", &[], &[]);
    // The standby is ready although it does not hold the lease.
    wait_for("standby readyz", WAIT, || async {
        (second.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;

    let names = ["r1", "r2", "r3"];
    for (name, user) in names.iter().zip([ALICE, BOB, ALICE]) {
        let policy = if *name == "r3" {
            BILLING_READ
        } else {
            DNS_ADMIN
        };
        env.create(name, by_ids(policy, user)).await;
    }
    for name in names {
        env.wait_ready(name, "True", "Attached").await;
    }
    assert!(
        !second.logs().contains("reconcile{"),
        "the standby reconciled:\n{}",
        second.logs()
    );

    let fault = env
        .sim
        .add_fault(Fault::status(500).on(Some("DELETE"), None));
    for name in names {
        env.delete(name).await;
    }
    for name in names {
        env.wait_synced(name, "False", "ApiUnavailable").await;
    }
    first.kill();
    let killed = Instant::now();
    env.sim.remove_fault(fault);
    env.sim.clear_journal();
    for name in names {
        env.wait_gone(name).await;
    }
    let first_delete = env
        .requests("DELETE", "/v2/")
        .first()
        .map(|e| e.at)
        .expect("the standby sent DELETEs");
    let handover = first_delete
        .duration_since(std::time::SystemTime::now() - killed.elapsed())
        .unwrap_or_default();
    eprintln!("hand-over after SIGKILL: {handover:?} (lease duration 6s)");
    assert_eq!(env.lease_holder().await.as_deref(), Some("replica-b"));
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert!(!env.sim.is_user_attached(DNS_ADMIN, BOB));
    assert!(!env.sim.is_user_attached(BILLING_READ, ALICE));

    // SIGTERM releases the lease: a new standby takes over without waiting for expiry.
    let mut third = env.replica("replica-c", &[], &[]);
    wait_for("replica-c ready", WAIT, || async {
        (third.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let term = Instant::now();
    assert!(
        second.terminate(),
        "leader did not exit cleanly:\n{}",
        second.logs()
    );
    wait_for("replica-c to lead", WAIT, || async {
        (env.lease_holder().await.as_deref() == Some("replica-c")).then_some(())
    })
    .await;
    eprintln!("hand-over after SIGTERM: {:?}", term.elapsed());
    env.attach("after", by_ids(DNS_ADMIN, ALICE)).await;
    assert!(third.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_object_and_watch_namespace_scopes() {
    let env = Env::start_with("op-json", API_KEY, &["--log-format", "json"]).await;
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    let logs = env.operator.logs();
    let mut with_object = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v.pointer("/span/namespace").and_then(|n| n.as_str()) == Some(env.ns.name.as_str()) {
            assert_eq!(
                v.pointer("/span/object").and_then(|n| n.as_str()),
                Some("a")
            );
            with_object += 1;
        }
    }
    assert!(with_object > 0, "no log line carries the object:\n{logs}");

    // An object outside the watched namespace is left alone.
    let other = support::TestNamespace::new(&env.client, "op-other").await;
    let api: Api<vultr_iam_operator::crd::PolicyAttachment> =
        Api::namespaced(env.client.clone(), &other.name);
    let obj = policy_attachment("elsewhere", by_ids(BILLING_READ, BOB));
    api.create(&Default::default(), &obj).await.expect("create");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let obj = api.get("elsewhere").await.expect("get");
    assert!(
        obj.status.is_none() && obj.metadata.finalizers.is_none(),
        "{obj:?}"
    );
    assert!(!env.sim.is_user_attached(BILLING_READ, BOB));
}

/// The promise of SIGTERM: exit, and the Lease released, within 5 s.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// SIGTERM stops a leader in the middle of a drift pass whose listings Vultr answers
/// slowly (each held 8 s, under a 10 s Vultr timeout: a pass of three takes 24 s) and
/// releases its Lease; and it stops a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_leader_in_a_long_drift_pass_and_a_standby() {
    let mut env = Env::start("op-sigterm").await;
    env.operator.kill();
    let slow = ["--vultr-timeout", "10s"];
    let mut leader = env.replica("replica-a", &slow, &[]);
    wait_for("replica-a to lead", WAIT, || async {
        (env.lease_holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let mut standby = env.replica("replica-b", &slow, &[]);
    wait_for("standby readyz", WAIT, || async {
        (standby.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let objects = [
        ("s1", DNS_ADMIN, ALICE),
        ("s2", BILLING_READ, BOB),
        ("s3", COMPUTE_ADMIN, BOB),
    ];
    for (name, policy, user) in objects {
        env.create(name, by_ids(policy, user)).await;
    }
    for (name, _, _) in objects {
        env.wait_ready(name, "True", "Attached").await;
    }

    // Every attachment listing (what a drift pass reads, one after another) is slow.
    env.sim.add_fault(
        Fault::new(FaultKind::Hold { ms: 8_000 }).on(Some("GET"), Some("/v2/policies/")),
    );
    wait_for("a listing in progress", WAIT, || async {
        (env.sim.held_requests() > 0).then_some(())
    })
    .await;
    let exit = terminate_within(&mut leader, STOP_WITHIN).await;
    let holder = env.lease_holder().await;
    let tail = last_lines(&leader.logs(), 20);
    assert!(
        exit.is_some_and(|s| s.success()),
        "the leader did not exit cleanly within {STOP_WITHIN:?} of SIGTERM: {exit:?}\n{tail}"
    );
    assert_ne!(
        holder.as_deref(),
        Some("replica-a"),
        "the Lease was not released\n{tail}"
    );
    // The held listing was the pass's (its reconciles come only after its listings).
    assert!(
        leader
            .logs()
            .contains("verification pass cancelled by shutdown"),
        "{tail}"
    );

    // The standby has become the leader; a new standby stops too, leaving it alone.
    let mut third = env.replica("replica-c", &slow, &[]);
    wait_for("replica-c ready", WAIT, || async {
        (third.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    wait_for("replica-b to lead", WAIT, || async {
        (env.lease_holder().await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let exit = terminate_within(&mut third, STOP_WITHIN).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "the standby did not exit cleanly within {STOP_WITHIN:?} of SIGTERM: {exit:?}\n{}",
        last_lines(&third.logs(), 20)
    );
    assert_eq!(env.lease_holder().await.as_deref(), Some("replica-b"));
    env.sim.clear_faults();
    let exit = terminate_within(&mut standby, STOP_WITHIN).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A kubeconfig like the admin one, acting as `user` (impersonation): a user with no
/// permissions but those the test binds to it.
fn kubeconfig_as(env: &Env, user: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&env.cp.kubeconfig).expect("read the kubeconfig");
    let mut doc: yaml_serde::Value = yaml_serde::from_str(&text).expect("kubeconfig YAML");
    let users = doc["users"].as_sequence_mut().expect("users");
    for u in users {
        u["user"]["as"] = user.into();
    }
    let path = dir.join("as-user.kubeconfig");
    std::fs::write(&path, yaml_serde::to_string(&doc).expect("YAML")).expect("write");
    path
}

/// A standby whose RBAC on Leases goes away for a while (as right after an API server
/// restart) stays up, says why in /readyz, and takes the Lease once allowed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_forbidden_the_lease_stays_up_and_takes_it_once_allowed() {
    let mut env = Env::start("op-lease-rbac").await;
    env.operator.kill();
    let ns = env.ns.name.clone();
    let user = format!("vio-standby-{ns}");
    let pp = kube::api::PostParams::default();
    let roles: Api<Role> = Api::namespaced(env.client.clone(), &ns);
    let bindings: Api<RoleBinding> = Api::namespaced(env.client.clone(), &ns);
    let role = |name: &str, rules: serde_json::Value| -> Role {
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).expect("Role")
    };
    let binding = |name: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }))
        .expect("RoleBinding")
    };
    for r in [
        role(
            "leases",
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch"]}]),
        ),
        role(
            "objects",
            json!([
                {"apiGroups": ["iam.vultr-operator.io"], "resources": ["*"], "verbs": ["*"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
                 "verbs": ["get", "list", "watch", "create", "update", "patch"]},
            ]),
        ),
    ] {
        roles.create(&pp, &r).await.expect("create a Role");
    }
    for name in ["leases", "objects"] {
        bindings
            .create(&pp, &binding(name))
            .await
            .expect("create a RoleBinding");
    }
    // Someone else holds the Lease for an hour: the replica stands by.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &ns);
    let held: Lease = serde_json::from_value(json!({
        "metadata": {"name": "vultr-iam-operator"},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600},
    }))
    .expect("Lease");
    leases.create(&pp, &held).await.expect("create the Lease");

    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_as(&env, &user, dir.path());
    let mut standby = env.replica(
        "replica-a",
        &[],
        &[("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path"))],
    );
    wait_for("standby readyz", WAIT, || async {
        (standby.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;

    bindings
        .delete("leases", &kube::api::DeleteParams::default())
        .await
        .expect("remove the Lease RoleBinding");
    let deadline = Instant::now() + WAIT;
    let reported = loop {
        assert!(
            standby.is_running(),
            "the standby exited on a forbidden Lease:\n{}",
            last_lines(&standby.logs(), 20)
        );
        let (status, body) = standby.http_get("/readyz").await;
        if status == 503 && body.contains("leader election") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never told: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reported.contains("forbidden"), "{reported}");

    bindings
        .create(&pp, &binding("leases"))
        .await
        .expect("restore the Lease RoleBinding");
    wait_for("readyz again", WAIT, || async {
        (standby.http_get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let released = json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": null}});
    leases
        .patch(
            "vultr-iam-operator",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&released),
        )
        .await
        .expect("release the Lease");
    wait_for("replica-a to lead", WAIT, || async {
        (env.lease_holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    assert!(standby.is_running());
    assert!(standby.terminate(), "{}", last_lines(&standby.logs(), 20));
}
