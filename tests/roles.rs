//! Role grants end to end, on the real control plane and the simulator: role-first
//! routes, verification from the role's own listing (one per role, whatever the number
//! of attachments), revocation of exactly the pair, 404s confirmed by the role listing,
//! resolution failures, shared pairs, drift and both listing shapes.

use vio_harness::{e2e, support};

use std::time::Duration;

use e2e::*;
use serde_json::json;
use vultr_sim::{Behaviour, Fault, FaultKind, ListingShape};

fn role_listing(role: &str) -> String {
    format!("/v2/roles/{role}/policies")
}

fn role_pair(role: &str, policy: &str) -> String {
    format!("/v2/roles/{role}/policies/{policy}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_grants_by_name_and_id_attach_verify_and_revoke_exactly_their_pair() {
    let env = Env::start("pa-role").await;
    env.create_all(&[("auditors-dns", spec_names("role", "dns-admin", "auditors")), ("auditors-compute", spec_ids("role", COMPUTE_ADMIN, AUDITORS)), ("orphan", json!({"policy": {"id": DNS_ADMIN}, "role": {"id": ON_CALL}, "deletionPolicy": "Orphan"}))]).await;

    let obj = env.wait_ready("auditors-dns", "True", "Attached").await;
    let st = obj.status.expect("status");
    assert_eq!(st.policy_id.as_deref(), Some(DNS_ADMIN));
    assert_eq!(
        st.subject_kind,
        Some(vultr_iam_operator::crd::SubjectKind::Role)
    );
    assert_eq!(st.subject_id.as_deref(), Some(AUDITORS));
    assert_eq!(st.subject.as_deref(), Some("auditors"));
    let obj = env.wait_ready("auditors-compute", "True", "Attached").await;
    // Declared by ID, shown by name.
    assert_eq!(
        obj.status.and_then(|s| s.subject),
        Some("auditors".to_owned())
    );
    env.wait_ready("orphan", "True", "Attached").await;
    assert!(env.sim.is_role_attached(AUDITORS, DNS_ADMIN));
    assert!(env.sim.is_role_attached(AUDITORS, COMPUTE_ADMIN));
    assert!(env.sim.is_role_attached(ON_CALL, DNS_ADMIN));
    let note = env.wait_event("auditors-dns", "Attached").await;
    assert!(note.contains(AUDITORS), "{note}");

    // Role-first routes; verified from the role listings, never a policy listing.
    assert_eq!(
        env.requests("POST", &role_pair(AUDITORS, DNS_ADMIN)).len(),
        1
    );
    assert!(!env.requests("GET", &role_listing(AUDITORS)).is_empty());
    assert!(!env.requests("GET", &role_listing(ON_CALL)).is_empty());
    assert!(
        env.requests("GET", "/v2/policies/")
            .iter()
            .all(|e| !e.path.ends_with("/users") && !e.path.ends_with("/groups")),
        "a role grant was verified from a policy listing"
    );

    // `kubectl get pa` shows the kind and the role's name.
    let table = run_ok(env.kubectl().args(["get", "pa"]));
    let line = table
        .lines()
        .find(|l| l.starts_with("auditors-compute"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("Role") && line.contains("auditors") && line.contains("compute-admin"),
        "{table}"
    );

    // Deleting one revokes exactly its pair: the role's other grants stay.
    env.delete_and_wait_gone("auditors-dns").await;
    let deletes = env.requests("DELETE", "/v2/");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].path, role_pair(AUDITORS, DNS_ADMIN));
    assert_eq!(deletes[0].status, 204);
    assert!(!env.sim.is_role_attached(AUDITORS, DNS_ADMIN));
    assert!(env.sim.is_role_attached(AUDITORS, COMPUTE_ADMIN));
    assert!(env.sim.is_role_attached(AUDITORS, BILLING_READ), "seeded");
    env.wait_event("auditors-dns", "Revoked").await;

    // Orphan leaves the role grant.
    env.delete_and_wait_gone("orphan").await;
    assert_eq!(env.requests("DELETE", "/v2/").len(), 1);
    assert!(env.sim.is_role_attached(ON_CALL, DNS_ADMIN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_resolution_failures_are_precise_conditions() {
    let env = Env::start("pa-role-nf").await;
    env.create_all(&[("no-role", json!({"policy": {"id": DNS_ADMIN}, "role": {"name": "nobody"}})), ("no-role-id", json!({"policy": {"id": DNS_ADMIN}, "role": {"id": "00000000-0000-4000-8000-000000000000"}})), ("ambiguous-role", json!({"policy": {"id": DNS_ADMIN}, "role": {"name": "on-call"}}))]).await;

    let obj = env.wait_ready("no-role", "False", "RoleNotFound").await;
    let msg = &synced(&obj).message;
    assert!(msg.contains("no Vultr role with name \"nobody\""), "{msg}");
    env.wait_ready("no-role-id", "False", "RoleNotFound").await;
    let obj = env.wait_ready("ambiguous-role", "False", "Ambiguous").await;
    let msg = &synced(&obj).message;
    assert!(
        msg.contains(ON_CALL) && msg.contains("d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e511"),
        "{msg}"
    );
    env.wait_event("ambiguous-role", "Ambiguous").await;
    assert!(env.requests("POST", "/v2/").is_empty());

    // The role appears later: the retry picks it up.
    let role = env.sim.add_role("nobody");
    env.wait_ready("no-role", "True", "Attached").await;
    assert!(env.sim.is_role_attached(&role, DNS_ADMIN));
}

/// A shared pair stays while another object declares it; drift on a role grant is
/// repaired; and one role listing per pass verifies every attachment of that role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_grants_are_shared_repaired_and_verified_per_role() {
    let env = Env::start("pa-role-drift").await;
    env.attach_all(&[
        ("first", spec_ids("role", DNS_ADMIN, AUDITORS)),
        ("second", spec_names("role", "dns-admin", "auditors")),
    ])
    .await;
    env.delete_and_wait_gone("first").await;
    assert!(env.sim.is_role_attached(AUDITORS, DNS_ADMIN));
    assert!(env.requests("DELETE", "/v2/").is_empty());
    env.wait_event("first", "GrantShared").await;

    // Out-of-band detach of a role grant: repaired at the next verification.
    assert!(env.sim.detach_role(AUDITORS, DNS_ADMIN));
    let attached = || env.sim.is_role_attached(AUDITORS, DNS_ADMIN);
    env.wait_drift_repaired("second", attached).await;

    // Eight attachments of one role: one role listing per pass serves them all (per
    // attachment, it would be at least 8 listings per pass).
    for i in 0..7 {
        let policy = env.sim.add_policy(&format!("role-policy-{i}"));
        env.create(&format!("more-{i}"), spec_ids("role", &policy, AUDITORS))
            .await;
    }
    for i in 0..7 {
        env.wait_ready(&format!("more-{i}"), "True", "Attached")
            .await;
    }
    env.sim.clear_journal();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let listings = env.requests("GET", &role_listing(AUDITORS)).len();
    assert!(
        (2..=8).contains(&listings),
        "{listings} role listings in 10 s at a 3 s resync for 8 attachments"
    );
    assert!(env.requests("GET", "/v2/policies/").is_empty());

    env.delete_and_wait_gone("second").await;
    assert!(!env.sim.is_role_attached(AUDITORS, DNS_ADMIN));
    assert!(env.sim.is_role_attached(AUDITORS, BILLING_READ), "seeded");
}

/// A 404 to a role DELETE is a revocation only when Vultr confirms it: the role's
/// listing no longer shows the policy, or the role itself is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_delete_404_counts_only_when_the_role_listing_confirms() {
    let env = Env::start("pa-role-404").await;
    env.create("a", spec_ids("role", DNS_ADMIN, AUDITORS)).await;
    let extra = env.sim.add_role("temporary");
    env.create(
        "b",
        json!({"policy": {"id": DNS_ADMIN}, "role": {"name": "temporary"}}),
    )
    .await;
    env.wait_attached(&["a", "b"]).await;

    // A proxy answering 404 to the DELETE while the grant is still listed.
    let fault = env.sim.add_fault(
        Fault::new(FaultKind::Status {
            status: 404,
            retry_after: None,
        })
        .on(Some("DELETE"), Some(&role_pair(AUDITORS, DNS_ADMIN))),
    );
    env.delete("a").await;
    support::wait_for("404s to the role DELETE", WAIT, || async {
        (env.requests("DELETE", &role_pair(AUDITORS, DNS_ADMIN))
            .len()
            >= 2)
            .then_some(())
    })
    .await;
    assert!(
        env.api.get_opt("a").await.unwrap().is_some(),
        "a 404 the role listing contradicts let the object go"
    );
    assert!(env.sim.is_role_attached(AUDITORS, DNS_ADMIN));
    // Now it really is gone: the same 404 is confirmed by the listing.
    assert!(env.sim.detach_role(AUDITORS, DNS_ADMIN));
    env.wait_gone("a").await;
    assert!(env.sim.remove_fault(fault));
    let note = env.wait_event("a", "Revoked").await;
    assert!(note.contains("absent"), "{note}");

    // The role itself vanished: its listing is 404, `GET /v2/roles` confirms.
    assert!(env.sim.remove_role(&extra));
    env.delete_and_wait_gone("b").await;
    let deletes = env.requests("DELETE", &role_pair(&extra, DNS_ADMIN));
    assert!(deletes.iter().all(|e| e.status == 404), "{deletes:?}");
    assert!(!env.requests("GET", "/v2/roles").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relationships_shape_of_role_listings_is_understood() {
    let env = Env::start("pa-role-shape").await;
    env.sim.set_behaviour(Behaviour {
        listing_shape: ListingShape::Relationships,
        ..Behaviour::default()
    });
    env.attach("r", spec_ids("role", DNS_ADMIN, AUDITORS)).await;
    // Verified from the listing, so later reconciles send no second POST.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(env.requests("POST", "/v2/").len(), 1);
    env.sim.detach_role(AUDITORS, DNS_ADMIN);
    let attached = || env.sim.is_role_attached(AUDITORS, DNS_ADMIN);
    env.wait_drift_repaired("r", attached).await;
}
