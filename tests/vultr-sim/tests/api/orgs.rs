//! Several organisations in one simulator: isolation, `GET /v2/account`, one rate limit
//! for every key, faults for one organisation, and `?org=` on `/_sim`.

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};
use vultr_sim::{
    ApiKeys, DEFAULT_ORG, Fault, OrgConfig, RateLimit, Seed, SeedPolicy, SeedUser,
    SeedUserAttachment, Sim, SimConfig,
};

const KEY_B: &str = "key-b";
const READ_ONLY_B: &str = "read-only-b";
const POLICY_B: &str = "b0000000-0000-4000-8000-000000000001";
const USER_B: &str = "b0000000-0000-4000-8000-000000000002";

/// Organisation "b": one policy attached to one user, ids of its own.
fn org_b() -> OrgConfig {
    OrgConfig {
        read_only_keys: vec![READ_ONLY_B.to_owned()],
        ..OrgConfig::new("b", "owner@b.example", KEY_B).with_seed(Seed {
            policies: vec![SeedPolicy {
                id: Some(POLICY_B.to_owned()),
                name: "dns-admin".to_owned(),
                description: String::new(),
            }],
            users: vec![SeedUser {
                id: Some(USER_B.to_owned()),
                email: "dana@b.example".to_owned(),
                name: String::new(),
            }],
            user_attachments: vec![SeedUserAttachment {
                policy: POLICY_B.to_owned(),
                user: USER_B.to_owned(),
            }],
            ..Seed::default()
        })
    }
}

/// The demo as the default organisation (`KEY`), and "b" (`KEY_B`).
async fn two_orgs() -> Sim {
    Sim::start(SimConfig {
        organisations: vec![org_b()],
        ..demo_config()
    })
    .await
    .expect("sim starts")
}

/// `method` on B's grant of its policy to its user, with B's key.
async fn b_grant(sim: &Sim, method: Method) -> Resp {
    let path = format!("/v2/policies/{POLICY_B}/users/{USER_B}");
    as_key(sim, KEY_B, method, &path).await
}

#[tokio::test]
async fn a_key_sees_and_changes_only_its_organisation() {
    let sim = two_orgs().await;
    let b = sim.org("b");
    let r = as_key(&sim, KEY_B, Method::GET, "/v2/policies").await;
    assert_eq!(ids(&r.body, "policies"), [POLICY_B]);
    let r = as_key(&sim, KEY_B, Method::GET, "/v2/users").await;
    assert_eq!(ids(&r.body, "users"), [USER_B]);
    let r = get(&sim, "/v2/policies").await;
    assert_eq!(
        r.body["meta"]["total"], 3,
        "the default organisation's: {r:?}"
    );

    // Org A's objects do not exist for org B's key: reads, attach and detach all 404.
    for path in [
        format!("/v2/policies/{COMPUTE_ADMIN}"),
        format!("/v2/policies/{COMPUTE_ADMIN}/users"),
        format!("/v2/users/{CAROL}"),
        format!("/v2/groups/{OPS}"),
        format!("/v2/roles/{AUDITORS}/policies"),
    ] {
        as_key(&sim, KEY_B, Method::GET, &path)
            .await
            .assert_error(404);
    }
    let grant = format!("/v2/policies/{COMPUTE_ADMIN}/users/{CAROL}");
    as_key(&sim, KEY_B, Method::DELETE, &grant)
        .await
        .assert_error(404);
    as_key(&sim, KEY_B, Method::POST, &user_grant(DNS_ADMIN, ALICE))
        .await
        .assert_error(404);
    assert!(
        sim.is_user_attached(COMPUTE_ADMIN, CAROL),
        "A's grant stays"
    );
    assert!(!sim.is_user_attached(DNS_ADMIN, ALICE));
    // Nor does org A's key reach org B's.
    as_key(&sim, KEY, Method::DELETE, &user_grant(POLICY_B, USER_B))
        .await
        .assert_error(404);
    assert!(b.is_user_attached(POLICY_B, USER_B));

    // Mixing ids across organisations is a 404 too.
    as_key(&sim, KEY_B, Method::POST, &user_grant(POLICY_B, ALICE))
        .await
        .assert_error(404);

    // A write in B lands in B only.
    b.detach_user(POLICY_B, USER_B);
    let r = b_grant(&sim, Method::POST).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(b.is_user_attached(POLICY_B, USER_B));
    assert_eq!(b.state().user_attachments.len(), 1);
    assert_eq!(sim.state().user_attachments.len(), 1, "A has carol's only");
    assert_eq!(sim.state().user_attachments[0].target_id, CAROL);
}

/// The same seed in two organisations: the same ids, still two sets of objects.
#[tokio::test]
async fn the_same_ids_in_two_organisations_stay_apart() {
    let sim = Sim::start(SimConfig {
        organisations: vec![
            OrgConfig::new("twin", "twin@example.com", KEY_B).with_seed(Seed::demo()),
        ],
        ..demo_config()
    })
    .await
    .unwrap();
    let twin = sim.org("twin");
    let grant = format!("/v2/policies/{COMPUTE_ADMIN}/users/{CAROL}");
    assert_eq!(
        as_key(&sim, KEY_B, Method::DELETE, &grant).await.status,
        204
    );
    assert!(!twin.is_user_attached(COMPUTE_ADMIN, CAROL));
    assert!(sim.is_user_attached(COMPUTE_ADMIN, CAROL));
    let listing = format!("/v2/policies/{COMPUTE_ADMIN}/users");
    assert_eq!(ids(&get(&sim, &listing).await.body, "users"), [CAROL]);
    assert!(
        ids(
            &as_key(&sim, KEY_B, Method::GET, &listing).await.body,
            "users"
        )
        .is_empty()
    );

    // Out of band, too: each handle changes its own organisation.
    assert!(twin.attach_user(DNS_ADMIN, BOB));
    assert!(!sim.is_user_attached(DNS_ADMIN, BOB));
    assert!(sim.remove_policy(DNS_ADMIN));
    assert!(twin.state().policies.iter().any(|p| p.id == DNS_ADMIN));
}

#[tokio::test]
async fn account_answers_the_organisation_of_the_key() {
    let sim = Sim::start(SimConfig {
        org_name: "Acme".to_owned(),
        org_email: "ops@acme.example".to_owned(),
        organisations: vec![org_b()],
        ..demo_config()
    })
    .await
    .unwrap();
    let full_acls = |r: &Resp| {
        r.body["account"]["acls"]
            .as_array()
            .unwrap()
            .contains(&json!("manage_users"))
    };

    let r = as_key(&sim, KEY, Method::GET, "/v2/account").await;
    assert_eq!(r.status, 200, "{r:?}");
    let account = &r.body["account"];
    assert_eq!(
        (account["name"].as_str(), account["email"].as_str()),
        (Some("Acme"), Some("ops@acme.example"))
    );
    for number in ["balance", "pending_charges", "last_payment_amount"] {
        assert!(account[number].is_number(), "{number}: {r:?}");
    }
    assert!(account["last_payment_date"].is_string(), "{r:?}");
    assert!(full_acls(&r));

    let r = as_key(&sim, KEY_B, Method::GET, "/v2/account").await;
    assert_eq!(r.body["account"]["name"], "b");
    assert_eq!(r.body["account"]["email"], "owner@b.example");
    assert!(full_acls(&r));

    // Read-only keys may ask; their ACLs do not include managing users.
    let r = as_key(&sim, READ_ONLY_B, Method::GET, "/v2/account").await;
    assert_eq!(
        (r.status, r.body["account"]["name"].as_str()),
        (200, Some("b"))
    );
    assert!(!full_acls(&r), "{r:?}");
    let r = as_key(&sim, READ_ONLY_KEY, Method::GET, "/v2/account").await;
    assert_eq!(r.body["account"]["name"], "Acme");

    as_key(&sim, "unknown-key", Method::GET, "/v2/account")
        .await
        .assert_error(401);
    let anonymous = anonymous(&sim, Method::GET, "/v2/account").await;
    anonymous.assert_error(401);
    as_key(&sim, KEY, Method::POST, "/v2/account")
        .await
        .assert_error(405);

    // A rotation moves nothing between organisations: the new key answers for its own.
    sim.org("b")
        .set_api_keys(ApiKeys {
            api_keys: vec!["key-b2".to_owned()],
            read_only_keys: vec![],
        })
        .unwrap();
    as_key(&sim, KEY_B, Method::GET, "/v2/account")
        .await
        .assert_error(401);
    let r = as_key(&sim, "key-b2", Method::GET, "/v2/account").await;
    assert_eq!(r.body["account"]["name"], "b");
}

/// Vultr limits per source IP: two keys of two organisations draw from one bucket.
#[tokio::test]
async fn every_key_shares_one_rate_limit() {
    let sim = Sim::start(SimConfig {
        // A slow refill: no token comes back during the test.
        rate_limit: Some(RateLimit {
            per_second: 0.2,
            burst: 6,
        }),
        organisations: vec![org_b()],
        ..demo_config()
    })
    .await
    .unwrap();
    // Five requests per key, each key under the burst of six on its own.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        for key in [KEY, KEY_B] {
            let r = as_key(&sim, key, Method::GET, "/v2/users").await;
            if r.status == 429 {
                r.assert_error(429);
                assert!(r.headers.contains_key("retry-after"), "{r:?}");
            }
            statuses.push((key, r.status));
        }
    }
    let ok = statuses.iter().filter(|(_, s)| *s == 200).count();
    let limited: Vec<&str> = statuses
        .iter()
        .filter(|(_, s)| *s == 429)
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(ok, 6, "one bucket of six for both keys: {statuses:?}");
    assert_eq!(limited.len(), 4, "{statuses:?}");
    assert!(
        limited.contains(&KEY) && limited.contains(&KEY_B),
        "{statuses:?}"
    );
    // The journal tells the organisations apart.
    assert_eq!(sim.org("b").journal().len(), 5);
    assert_eq!(sim.org(DEFAULT_ORG).journal().len(), 5);
    assert_eq!(sim.journal().len(), 10);
}

#[tokio::test]
async fn a_fault_can_break_one_organisation_only() {
    let sim = two_orgs().await;
    let b = sim.org("b");
    let id = b.add_fault(Fault::status(503));
    as_key(&sim, KEY_B, Method::GET, "/v2/users")
        .await
        .assert_error(503);
    as_key(&sim, READ_ONLY_B, Method::GET, "/v2/account")
        .await
        .assert_error(503);
    assert_eq!(get(&sim, "/v2/users").await.status, 200);
    // Requests without a known key belong to no organisation: only global faults hit them.
    as_key(&sim, "unknown-key", Method::GET, "/v2/users")
        .await
        .assert_error(401);
    assert!(sim.remove_fault(id));
    assert_eq!(
        as_key(&sim, KEY_B, Method::GET, "/v2/users").await.status,
        200
    );

    // The same through /_sim: `org` beside the fault's fields.
    let r = admin(
        &sim,
        Method::POST,
        "/_sim/faults",
        Some(json!({"org": DEFAULT_ORG, "method": "DELETE", "kind": {"type": "status", "status": 500}})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let listed = admin(&sim, Method::GET, "/_sim/faults", None).await.body;
    assert_eq!(listed[0]["org"], DEFAULT_ORG);
    assert_eq!(listed[0]["method"], "DELETE");
    as_key(&sim, KEY, Method::DELETE, &user_grant(COMPUTE_ADMIN, CAROL))
        .await
        .assert_error(500);
    assert!(sim.is_user_attached(COMPUTE_ADMIN, CAROL));
    let r = b_grant(&sim, Method::DELETE).await;
    assert_eq!(r.status, 204, "{r:?}");
    admin(
        &sim,
        Method::POST,
        "/_sim/faults",
        Some(json!({"org": "nope", "kind": {"type": "hang"}})),
    )
    .await
    .assert_error(400);
    sim.clear_faults();

    // A fault without an organisation breaks every request, as it always has.
    sim.add_fault(Fault::status(502).times(2));
    as_key(&sim, KEY_B, Method::GET, "/v2/users")
        .await
        .assert_error(502);
    as_key(&sim, "unknown-key", Method::GET, "/v2/users")
        .await
        .assert_error(502);
    assert_eq!(get(&sim, "/v2/users").await.status, 200);
}

#[tokio::test]
async fn sim_routes_act_on_the_organisation_they_name() {
    let sim = two_orgs().await;
    let r = admin(&sim, Method::GET, "/_sim/orgs", None).await;
    assert_eq!(
        r.body,
        json!([{"name": DEFAULT_ORG, "email": "admin@example.com"}, {"name": "b", "email": "owner@b.example"}])
    );

    let r = admin(
        &sim,
        Method::POST,
        "/_sim/policies?org=b",
        Some(json!({"name": "new", "id": "pol-new"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = admin(
        &sim,
        Method::PUT,
        &format!("/_sim/policies/pol-new/users/{USER_B}?org=b"),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(sim.org("b").is_user_attached("pol-new", USER_B));
    // Without ?org= the default organisation, which has no such policy.
    admin(
        &sim,
        Method::PUT,
        &format!("/_sim/policies/pol-new/users/{ALICE}"),
        None,
    )
    .await
    .assert_error(404);
    let state = admin(&sim, Method::GET, "/_sim/state?org=b", None)
        .await
        .body;
    assert_eq!(state["policies"].as_array().unwrap().len(), 2);
    assert_eq!(state["user_attachments"].as_array().unwrap().len(), 2);
    let state = admin(&sim, Method::GET, "/_sim/state", None).await.body;
    assert_eq!(state["policies"].as_array().unwrap().len(), 3);
    let r = admin(
        &sim,
        Method::POST,
        "/_sim/seed?org=b",
        Some(json!({"users": [{"email": "erin@b.example"}]})),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(sim.org("b").state().users.len(), 2);
    assert_eq!(
        admin(
            &sim,
            Method::DELETE,
            &format!("/_sim/users/{USER_B}?org=b"),
            None
        )
        .await
        .status,
        204
    );
    admin(&sim, Method::GET, "/_sim/state?org=nope", None)
        .await
        .assert_error(404);
    admin(
        &sim,
        Method::POST,
        "/_sim/policies?org=nope",
        Some(json!({"name": "x"})),
    )
    .await
    .assert_error(404);

    // Keys: per organisation, and a key belongs to one organisation only.
    admin(
        &sim,
        Method::PUT,
        "/_sim/api-keys?org=b",
        Some(json!({"api_keys": [KEY]})),
    )
    .await
    .assert_error(400);
    assert_eq!(
        as_key(&sim, KEY_B, Method::GET, "/v2/users").await.status,
        200,
        "unchanged"
    );
    let r = admin(
        &sim,
        Method::PUT,
        "/_sim/api-keys?org=b",
        Some(json!({"api_keys": ["key-b2"]})),
    )
    .await;
    assert_eq!(r.status, 204);
    as_key(&sim, KEY_B, Method::GET, "/v2/users")
        .await
        .assert_error(401);
    assert_eq!(
        as_key(&sim, "key-b2", Method::GET, "/v2/users")
            .await
            .status,
        200
    );
    assert_eq!(
        get(&sim, "/v2/users").await.status,
        200,
        "the default's keys stay"
    );
    assert!(
        sim.set_api_keys(ApiKeys {
            api_keys: vec!["key-b2".to_owned()],
            read_only_keys: vec![],
        })
        .is_err()
    );

    // The journal: every organisation, or one; entries say whose key it was.
    sim.clear_journal();
    as_key(&sim, "key-b2", Method::GET, "/v2/roles").await;
    get(&sim, "/v2/groups").await;
    as_key(&sim, "unknown-key", Method::GET, "/v2/users").await;
    let all = admin(&sim, Method::GET, "/_sim/journal", None).await.body;
    let orgs: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["org"].as_str().unwrap())
        .collect();
    assert_eq!(orgs, ["b", DEFAULT_ORG, ""]);
    let only_b = admin(&sim, Method::GET, "/_sim/journal?org=b", None)
        .await
        .body;
    assert_eq!(only_b.as_array().unwrap().len(), 1);
    assert_eq!(only_b[0]["path"], "/v2/roles");
    assert_eq!(
        admin(&sim, Method::DELETE, "/_sim/journal?org=b", None)
            .await
            .status,
        204
    );
    assert_eq!(sim.journal().len(), 2);
    assert!(sim.org("b").journal().is_empty());
    admin(&sim, Method::GET, "/_sim/journal?org=nope", None)
        .await
        .assert_error(404);
}

#[tokio::test]
async fn organisations_are_checked_at_start() {
    let start = |organisations: Vec<OrgConfig>| {
        Sim::start(SimConfig {
            organisations,
            ..SimConfig::default()
        })
    };
    let err = start(vec![OrgConfig::new(DEFAULT_ORG, "", "k")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    let err = start(vec![
        OrgConfig::new("b", "", "k"),
        OrgConfig::new("b", "", "k2"),
    ])
    .await
    .unwrap_err();
    assert!(err.to_string().contains("\"b\""), "{err}");
    let err = start(vec![OrgConfig::new("", "", "k")]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    let err = start(vec![OrgConfig::new("b", "", KEY)]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("another organisation"), "{err}");
    assert!(
        !err.to_string().contains(KEY),
        "keys are never shown: {err}"
    );
    let mut bad = org_b();
    bad.seed.user_attachments.push(SeedUserAttachment {
        policy: "nope".to_owned(),
        user: USER_B.to_owned(),
    });
    let err = start(vec![bad]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("organisation \"b\""), "{err}");

    let sim = start(vec![org_b()]).await.unwrap();
    let names: Vec<String> = sim.orgs().iter().map(|o| o.name().to_owned()).collect();
    assert_eq!(names, [DEFAULT_ORG, "b"]);
    assert_eq!(
        sim.name(),
        DEFAULT_ORG,
        "Sim is the default organisation's handle"
    );
    assert!(sim.try_org("nope").is_none());
    let config: Value = serde_json::to_value(SimConfig {
        organisations: vec![org_b()],
        ..SimConfig::default()
    })
    .unwrap();
    assert_eq!(config["organisations"][0]["name"], "b");
    let back: SimConfig = serde_json::from_value(config).unwrap();
    assert_eq!(back.organisations, [org_b()]);
}
