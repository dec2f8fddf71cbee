//! The grant boundary of the operator's key, end to end on the real control plane and
//! the simulator: a grant outside it is never sent, one made before it narrowed is
//! revoked, and `Audit` makes and keeps it but reports it.

use vio_harness::{e2e, support};

use e2e::*;
use serde_json::json;

/// Every POST the simulator received.
fn posts(env: &Env) -> Vec<String> {
    env.requests("POST", "/v2/")
        .into_iter()
        .map(|e| e.path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_the_boundary_reaches_vultr() {
    let bounded = [
        "--allowed-policy",
        "dns-admin",
        "--allowed-subject-kind",
        "User",
    ];
    let env = Env::start_with("pa-bound", API_KEY, &bounded).await;
    env.create("dns-alice", by_ids(DNS_ADMIN, ALICE)).await;
    env.create("compute-alice", by_ids(COMPUTE_ADMIN, ALICE))
        .await;
    env.create(
        "dns-ops",
        json!({"policy": {"name": "dns-admin"}, "group": {"id": OPS}}),
    )
    .await;

    // Listed by name, the policy also matches a spec that names it by ID.
    env.wait_ready("dns-alice", "True", "Attached").await;
    env.wait_ready("compute-alice", "False", "NotPermitted")
        .await;
    env.wait_ready("dns-ops", "False", "NotPermitted").await;
    let note = env.wait_event("compute-alice", "NotPermitted").await;
    assert!(
        note.contains("allows the policies dns-admin only, not compute-admin"),
        "{note}"
    );
    let note = env.wait_event("dns-ops", "NotPermitted").await;
    assert!(
        note.contains("subjects of kind User only, not Group"),
        "{note}"
    );
    assert_eq!(
        posts(&env),
        [format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}")],
        "only the grant inside the boundary was sent"
    );
    assert!(!env.sim.is_user_attached(COMPUTE_ADMIN, ALICE));
    assert!(!env.sim.is_group_attached(DNS_ADMIN, OPS));

    // Refused objects recorded no pair: deleting them revokes nothing.
    env.delete("compute-alice").await;
    env.delete("dns-ops").await;
    env.wait_gone("compute-alice").await;
    env.wait_gone("dns-ops").await;
    assert!(env.requests("DELETE", "/v2/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_boundary_revokes_and_an_audit_boundary_only_reports() {
    let mut env = Env::start("pa-narrow").await;
    env.create("compute-bob", by_ids(COMPUTE_ADMIN, BOB)).await;
    env.wait_ready("compute-bob", "True", "Attached").await;

    // The administrator narrows the boundary: the grant outside it goes.
    env.operator.kill();
    let narrowed = ["--allowed-policy", "dns-admin"];
    env.operator = env.start_operator(&narrowed, &[]);
    env.wait_ready("compute-bob", "False", "NotPermitted").await;
    assert!(!env.sim.is_user_attached(COMPUTE_ADMIN, BOB));
    support::wait_for("the revocation's Event", WAIT, || async {
        let events = env.events("compute-bob").await;
        events
            .into_iter()
            .find(|(_, reason, note)| reason == "NotPermitted" && note.starts_with("revoked"))
    })
    .await;
    assert_eq!(env.requests("DELETE", "/v2/").len(), 1);

    // In Audit, the same grant is made and kept, and reported.
    env.operator.kill();
    let audit = [narrowed.as_slice(), &["--boundary-enforcement", "Audit"]].concat();
    env.operator = env.start_operator(&audit, &[]);
    env.wait_ready("compute-bob", "True", "Attached").await;
    env.wait_condition("compute-bob", "Permitted", "False", "NotPermitted")
        .await;
    assert!(env.sim.is_user_attached(COMPUTE_ADMIN, BOB));
    let audited = env
        .operator
        .metric(
            "vultr_iam_grants_outside_boundary_total",
            &["action=\"audited\""],
        )
        .await;
    assert_eq!(audited, Some(1.0));

    // Its deletion revokes it like any other.
    env.delete("compute-bob").await;
    env.wait_gone("compute-bob").await;
    assert!(!env.sim.is_user_attached(COMPUTE_ADMIN, BOB));
}
