//! What an on-call engineer relies on: metrics, health, leader election with a fast
//! hand-over, JSON logs, namespace scoping.

mod e2e;
mod support;

use std::time::{Duration, Instant};

use e2e::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::wait_for;
use vultr_sim::Fault;

/// The value of the first sample line starting with `prefix` (name plus labels).
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
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

    env.create("a", by_ids(DNS_ADMIN, ALICE)).await;
    env.create(
        "missing",
        json!({"policy": {"name": "nope"}, "user": {"id": ALICE}}),
    )
    .await;
    env.wait_ready("a", "True", "Attached").await;
    env.wait_ready("missing", "False", "PolicyNotFound").await;

    let (_, m) = env.operator.http_get("/metrics").await;
    assert!(
        sample(
            &m,
            r#"vultr_iam_policyattachments{ready="True",reason="Attached"}"#
        ) == Some(1.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            r#"vultr_iam_policyattachments{ready="False",reason="PolicyNotFound"}"#
        ) == Some(1.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            r#"vultr_iam_reconciles_total{result="success",reason=""}"#
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            r#"vultr_iam_reconciles_total{result="error",reason="PolicyNotFound"}"#
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert!(sample(&m, r#"vultr_iam_vultr_requests_total{route="GET /v2/policies/{policy_id}/users",status="200"}"#).is_some_and(|v| v >= 1.0), "{m}");
    assert!(
        sample(
            &m,
            r#"vultr_iam_vultr_requests_total{route="POST /v2/policies/{policy_id}/users/{user_id}",status="201"}"#
        ) == Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "vultr_iam_reconcile_duration_seconds_count").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert!(
        sample(&m, "vultr_iam_vultr_limiter_wait_seconds_count").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert!(
        sample(&m, "vultr_iam_revocations_pending") == Some(0.0),
        "{m}"
    );
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
    assert_eq!(
        sample(&m, "vultr_iam_revocations_pending"),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "vultr_iam_oldest_pending_revocation_age_seconds").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert!(sample(&m, r#"vultr_iam_vultr_requests_total{route="DELETE /v2/policies/{policy_id}/users/{user_id}",status="503"}"#).is_some_and(|v| v >= 1.0), "{m}");
    env.sim.clear_faults();
    env.wait_gone("a").await;
    let (_, m) = env.operator.http_get("/metrics").await;
    assert_eq!(
        sample(&m, "vultr_iam_revocations_pending"),
        Some(0.0),
        "{m}"
    );

    // Drift repairs are counted.
    env.create("b", by_ids(DNS_ADMIN, BOB)).await;
    env.wait_ready("b", "True", "Attached").await;
    env.sim.detach_user(DNS_ADMIN, BOB);
    env.wait_event("b", "DriftRepaired").await;
    let (_, m) = env.operator.http_get("/metrics").await;
    assert!(
        sample(&m, "vultr_iam_drift_repairs_total").is_some_and(|v| v >= 1.0),
        "{m}"
    );
}

async fn lease_holder(env: &Env) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns.name);
    leases
        .get_opt("vultr-iam-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

fn replica(env: &Env, name: &str) -> Operator {
    let ns = env.ns.name.clone();
    Operator::start_with_env(
        env.cp,
        &env.sim.url(),
        API_KEY,
        &ns,
        &[
            "--leader-election",
            "--lease-namespace",
            &ns,
            "--lease-duration",
            "6s",
        ],
        &[("POD_NAME", name)],
    )
}

/// Two replicas: only the leader reconciles; SIGKILL the leader while revocations are
/// pending and the standby finishes every one of them after taking the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_pending_revocations() {
    let mut env = Env::start("op-leader").await;
    env.operator.kill();
    let mut first = replica(&env, "replica-a");
    wait_for("replica-a to lead", WAIT, || async {
        (lease_holder(&env).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let mut second = replica(&env, "replica-b");
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
    assert_eq!(lease_holder(&env).await.as_deref(), Some("replica-b"));
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert!(!env.sim.is_user_attached(DNS_ADMIN, BOB));
    assert!(!env.sim.is_user_attached(BILLING_READ, ALICE));

    // SIGTERM releases the lease: a new standby takes over without waiting for expiry.
    let mut third = replica(&env, "replica-c");
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
        (lease_holder(&env).await.as_deref() == Some("replica-c")).then_some(())
    })
    .await;
    eprintln!("hand-over after SIGTERM: {:?}", term.elapsed());
    env.create("after", by_ids(DNS_ADMIN, ALICE)).await;
    env.wait_ready("after", "True", "Attached").await;
    assert!(third.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_object_and_watch_namespace_scopes() {
    let env = Env::start_with("op-json", API_KEY, &["--log-format", "json"]).await;
    env.create("a", by_ids(DNS_ADMIN, ALICE)).await;
    env.wait_ready("a", "True", "Attached").await;
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
    let obj = serde_json::from_value(json!({
        "apiVersion": "iam.vultr-operator.io/v1alpha1", "kind": "PolicyAttachment",
        "metadata": {"name": "elsewhere"}, "spec": by_ids(BILLING_READ, BOB),
    }))
    .expect("object");
    api.create(&Default::default(), &obj).await.expect("create");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let obj = api.get("elsewhere").await.expect("get");
    assert!(
        obj.status.is_none() && obj.metadata.finalizers.is_none(),
        "{obj:?}"
    );
    assert!(!env.sim.is_user_attached(BILLING_READ, BOB));
}
