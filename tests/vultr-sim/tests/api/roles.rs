//! Roles: `/v2/roles`, the role-first attach/detach routes, both listing shapes, the
//! listing lag, faults and the rate limit on role routes, and the `/_sim` role controls.

use std::time::Duration;

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};
use vultr_sim::{Behaviour, Fault, FaultKind, ListingShape, RateLimit, Seed, SimConfig};

#[tokio::test]
async fn lists_and_gets_roles() {
    let sim = demo_sim().await;
    let body = listing(&sim, "/v2/roles", 3).await;
    assert_eq!(ids(&body, "roles"), [AUDITORS, ON_CALL, ON_CALL_EU]);
    let auditors = &body["roles"][0];
    assert_eq!(auditors["name"], "auditors");
    assert!(auditors["description"].is_string() && auditors["role_type"].is_string());
    assert!(
        auditors["date_created"]
            .as_str()
            .unwrap()
            .ends_with("+00:00")
    );

    let r = get(&sim, &format!("/v2/roles/{ON_CALL}")).await;
    assert_eq!(r.body["role"]["name"], "on-call");
    get(&sim, "/v2/roles/nope").await.assert_error(404);
}

#[tokio::test]
async fn attach_list_detach_a_role_policy() {
    let sim = demo_sim().await;
    // The seeded attachment.
    let r = get(&sim, &format!("/v2/roles/{AUDITORS}/policies")).await;
    assert_eq!(ids(&r.body, "policies"), [BILLING_READ]);
    assert_eq!(r.body["policies"][0]["name"], "billing-read");

    let pair = format!("/v2/roles/{AUDITORS}/policies/{DNS_ADMIN}");
    assert_eq!(v2(&sim, Method::POST, &pair).await.status, 201);
    assert!(sim.is_role_attached(AUDITORS, DNS_ADMIN));
    let r = get(&sim, &format!("/v2/roles/{AUDITORS}/policies")).await;
    assert_eq!(ids(&r.body, "policies"), [BILLING_READ, DNS_ADMIN]);
    assert_eq!(r.body["meta"]["total"], 2);
    // Not in the policy's user or group listings.
    let r = get(&sim, &format!("/v2/policies/{DNS_ADMIN}/users")).await;
    assert_eq!(r.body["users"], json!([]));

    let r = v2(&sim, Method::DELETE, &pair).await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    assert!(!sim.is_role_attached(AUDITORS, DNS_ADMIN));
    // Absent pair: the detach_absent behaviour (404).
    v2(&sim, Method::DELETE, &pair).await.assert_error(404);

    for path in [
        format!("/v2/roles/nope/policies/{DNS_ADMIN}"),
        format!("/v2/roles/{AUDITORS}/policies/nope"),
    ] {
        v2(&sim, Method::POST, &path).await.assert_error(404);
    }
    get(&sim, "/v2/roles/nope/policies").await.assert_error(404);

    let routes: Vec<String> = sim.journal().into_iter().map(|e| e.route).collect();
    assert!(routes.contains(&"POST /v2/roles/{role_id}/policies/{policy_id}".to_owned()));
    assert!(routes.contains(&"DELETE /v2/roles/{role_id}/policies/{policy_id}".to_owned()));
    assert!(routes.contains(&"GET /v2/roles/{role_id}/policies".to_owned()));
}

#[tokio::test]
async fn role_listing_relationships_shape() {
    let sim = demo_sim().await;
    sim.set_behaviour(Behaviour {
        listing_shape: ListingShape::Relationships,
        ..sim.behaviour()
    });
    let r = get(&sim, &format!("/v2/roles/{AUDITORS}/policies")).await;
    assert!(r.body.get("policies").is_none(), "{}", r.body);
    let rel = &r.body["role_policy_relationships"][0];
    assert_eq!(rel["policy_id"], BILLING_READ);
    assert_eq!(rel["policy_name"], "billing-read");
    assert_eq!(rel["role_id"], AUDITORS);
    assert_eq!(rel["role_name"], "auditors");
    assert_eq!(rel["assigned_by"], "seed");
}

#[tokio::test]
async fn role_attach_lags_and_existing_pairs_follow_the_behaviour() {
    let sim = demo_sim_with(Behaviour {
        listing_lag: Duration::from_millis(300),
        attach_existing: 409,
        ..Behaviour::default()
    })
    .await;
    let pair = format!("/v2/roles/{ON_CALL}/policies/{DNS_ADMIN}");
    assert_eq!(v2(&sim, Method::POST, &pair).await.status, 201);
    let r = get(&sim, &format!("/v2/roles/{ON_CALL}/policies")).await;
    assert_eq!(r.body["policies"], json!([]), "hidden by the lag");
    v2(&sim, Method::POST, &pair).await.assert_error(409);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = get(&sim, &format!("/v2/roles/{ON_CALL}/policies")).await;
    assert_eq!(ids(&r.body, "policies"), [DNS_ADMIN]);
}

#[tokio::test]
async fn faults_and_the_rate_limit_apply_to_role_routes() {
    let sim = demo_sim().await;
    sim.add_fault(Fault {
        method: Some("DELETE".into()),
        path_prefix: Some("/v2/roles/".into()),
        kind: FaultKind::Status {
            status: 503,
            retry_after: None,
        },
        count: Some(1),
        probability: None,
        until: None,
    });
    let pair = format!("/v2/roles/{AUDITORS}/policies/{BILLING_READ}");
    v2(&sim, Method::DELETE, &pair).await.assert_error(503);
    assert!(sim.is_role_attached(AUDITORS, BILLING_READ));
    assert_eq!(v2(&sim, Method::DELETE, &pair).await.status, 204);

    sim.set_rate_limit(Some(RateLimit {
        per_second: 1.0,
        burst: 1,
    }));
    let path = format!("/v2/roles/{AUDITORS}/policies");
    assert_eq!(get(&sim, &path).await.status, 200);
    get(&sim, &path).await.assert_error(429);
}

#[tokio::test]
async fn admin_roles_and_out_of_band_role_attachments() {
    let sim = demo_sim().await;
    let viewers = admin_created(&sim, "/_sim/roles", json!({"name": "viewers"})).await;
    let oob = format!("/_sim/roles/{viewers}/policies/{DNS_ADMIN}");
    put_twice(&sim, &oob).await;
    assert!(sim.is_role_attached(&viewers, DNS_ADMIN));
    let state = admin(&sim, Method::GET, "/_sim/state", None).await.body;
    let views: Vec<&Value> = state["role_attachments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["target_id"] == viewers.as_str())
        .collect();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0]["policy_id"], DNS_ADMIN);
    assert_eq!(views[0]["assigned_by"], "sim-admin");
    assert_eq!(state["roles"].as_array().unwrap().len(), 4);

    assert_eq!(admin_status(&sim, Method::DELETE, &oob).await, 204);
    assert_eq!(admin_status(&sim, Method::DELETE, &oob).await, 404);
    let unknown = format!("/_sim/roles/nope/policies/{DNS_ADMIN}");
    assert_eq!(admin_status(&sim, Method::PUT, &unknown).await, 404);
    // Out-of-band calls are not journaled.
    assert!(sim.journal().is_empty());

    // Removing a policy removes it from roles; removing a role removes its links.
    assert!(sim.attach_role(&viewers, COMPUTE_ADMIN));
    assert!(sim.remove_policy(COMPUTE_ADMIN));
    assert!(!sim.is_role_attached(&viewers, COMPUTE_ADMIN));
    assert_eq!(
        admin(
            &sim,
            Method::DELETE,
            &format!("/_sim/roles/{AUDITORS}"),
            None
        )
        .await
        .status,
        204
    );
    assert!(sim.state().role_attachments.is_empty());
    get(&sim, &format!("/v2/roles/{AUDITORS}/policies"))
        .await
        .assert_error(404);
}

#[tokio::test]
async fn seeds_resolve_roles_by_id_or_name_and_refuse_ambiguous_names() {
    let sim = SimConfig::empty().start().await.unwrap();
    let seed: Seed = serde_json::from_value(json!({
        "policies": [{"id": "p1", "name": "dns-admin"}],
        "roles": [{"id": "r1", "name": "auditors"}, {"id": "r2", "name": "twin"},
                  {"id": "r3", "name": "twin"}],
        "role_attachments": [{"policy": "dns-admin", "role": "auditors"},
                             {"policy": "p1", "role": "r2"}]
    }))
    .unwrap();
    sim.load_seed(&seed).unwrap();
    assert!(sim.is_role_attached("r1", "p1"));
    assert!(sim.is_role_attached("r2", "p1"));
    let bad: Seed = serde_json::from_value(json!({
        "role_attachments": [{"policy": "p1", "role": "twin"}]
    }))
    .unwrap();
    let err = sim.load_seed(&bad).unwrap_err().to_string();
    assert!(err.contains("ambiguous"), "{err}");
}
