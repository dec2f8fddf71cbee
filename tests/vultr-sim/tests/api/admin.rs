//! The `/_sim` control API, the `Sim` handle's control methods, and seeds.

use std::time::Duration;

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};
use vultr_sim::{
    ApiKeys, Behaviour, FaultKind, ListingShape, Seed, SeedError, SeedGroup, SeedPolicy, SeedUser,
    SeedUserAttachment, SimConfig,
};

#[test]
fn demo_file_equals_the_demo_seed() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/demo-org.yaml");
    assert_eq!(Seed::from_file(file).unwrap(), Seed::demo());
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vultr-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn seed_files_resolve_references_by_id_or_natural_key() {
    let path = temp_file(
        "seed.json",
        r#"{
          "policies": [{"name": "p1"}, {"id": "pid-2", "name": "p2"}],
          "users": [{"email": "a@x"}, {"id": "uid-b", "email": "b@x", "name": "Bee Bop"}],
          "groups": [{"display_name": "g1"}],
          "user_attachments": [{"policy": "p1", "user": "a@x"}, {"policy": "pid-2", "user": "uid-b"}],
          "group_attachments": [{"policy": "p2", "group": "g1"}],
          "group_members": [{"group": "g1", "user": "b@x"}]
        }"#,
    );
    let seed = Seed::from_file(&path).unwrap();
    let sim = SimConfig::empty().seed(seed).start().await.unwrap();
    let state = sim.state();
    let p1 = &state.policies[0].id;
    let a = &state.users[0].id;
    assert_eq!(
        state.users[0].name, "a",
        "name defaults to the email's local part"
    );
    assert!(sim.is_user_attached(p1, a));
    assert!(sim.is_user_attached("pid-2", "uid-b"));
    assert!(sim.is_group_attached("pid-2", &state.groups[0].id));
    assert_eq!(state.group_members.len(), 1);
    let r = get(&sim, "/v2/users/uid-b/policies").await;
    assert_eq!(r.body["policies"]["inherited"][0]["id"], "pid-2");
    assert_eq!(r.body["policies"]["direct"][0]["id"], "pid-2");
}

#[tokio::test]
async fn bad_seeds_are_refused() {
    let mut ambiguous = Seed::demo();
    ambiguous.user_attachments.push(SeedUserAttachment {
        policy: "dns-admin".into(),
        user: "shared@example.com".into(),
    });
    let err = SimConfig::default()
        .seed(ambiguous)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("ambiguous"), "{err}");

    let sim = demo_sim().await;
    let mut extra = Seed {
        user_attachments: vec![SeedUserAttachment {
            policy: "dns-admin".into(),
            user: "shared@example.com".into(),
        }],
        ..Seed::default()
    };
    assert!(matches!(
        sim.load_seed(&extra),
        Err(SeedError::Ambiguous { count: 2, .. })
    ));
    extra.user_attachments[0].user = "nobody@example.com".into();
    assert!(matches!(
        sim.load_seed(&extra),
        Err(SeedError::Unresolved { .. })
    ));
    let mut dup = Seed::default();
    dup.policies.push(SeedPolicy {
        id: Some(DNS_ADMIN.into()),
        name: "again".into(),
        ..SeedPolicy::default()
    });
    assert!(matches!(
        sim.load_seed(&dup),
        Err(SeedError::DuplicateId { .. })
    ));
    assert_eq!(sim.state().policies.len(), 3, "failed loads change nothing");

    let bad = temp_file("bad.yaml", "policies: [{nme: typo}]\n");
    assert!(matches!(
        Seed::from_file(&bad),
        Err(SeedError::Parse { .. })
    ));
    assert!(matches!(
        Seed::from_file("/nonexistent/seed.yaml"),
        Err(SeedError::Io { .. })
    ));
}

#[tokio::test]
async fn handle_control_methods() {
    let sim = demo_sim().await;
    let p = sim.add_policy("storage-admin");
    let u = sim.add_user("dave@example.com");
    let g = sim.add_group("storage");
    assert!(sim.attach_user(&p, &u));
    assert!(!sim.attach_user(&p, &u), "already attached");
    assert!(!sim.attach_user(&p, "nope"), "unknown user");
    assert!(sim.attach_group(&p, &g));
    assert!(sim.add_group_member(&g, &u));
    let r = get(&sim, &format!("/v2/users/{u}/policies")).await;
    assert_eq!(r.body["policies"]["all"].as_array().unwrap().len(), 1);
    assert!(sim.detach_user(&p, &u));
    assert!(!sim.detach_user(&p, &u));
    assert!(sim.remove_group_member(&g, &u));
    // Removing a policy removes its attachments.
    assert!(sim.attach_user(&p, &u));
    assert!(sim.remove_policy(&p));
    assert!(!sim.is_user_attached(&p, &u) && !sim.is_group_attached(&p, &g));
    assert!(!sim.remove_policy(&p));
    // Removing a user does too.
    assert!(sim.remove_user(CAROL));
    assert!(!sim.is_user_attached(COMPUTE_ADMIN, CAROL));
    get(&sim, &format!("/v2/users/{CAROL}"))
        .await
        .assert_error(404);
    assert!(sim.remove_group(OPS));
    assert!(!sim.is_group_attached(BILLING_READ, OPS));
    assert!(
        sim.journal().len() == 2,
        "out-of-band changes are not journaled"
    );
    sim.clear_journal();
    assert!(sim.journal().is_empty());
}

#[tokio::test]
async fn admin_entities_and_attachments() {
    let sim = demo_sim().await;
    let r = admin_with(
        &sim,
        Method::POST,
        "/_sim/policies",
        json!({"name": "net-admin", "description": "networks"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let pid = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["description"], "networks");
    let r = admin_with(
        &sim,
        Method::POST,
        "/_sim/users",
        json!({"email": "erin@example.com", "id": "erin-id", "name": "Erin E"}),
    )
    .await;
    assert_eq!((r.status, r.body["id"].as_str()), (201, Some("erin-id")));
    admin_with(
        &sim,
        Method::POST,
        "/_sim/users",
        json!({"email": "x@example.com", "id": "erin-id"}),
    )
    .await
    .assert_error(409);
    let gid = admin_created(&sim, "/_sim/groups", json!({"display_name": "net"})).await;

    let user_pair = format!("/_sim/policies/{pid}/users/erin-id");
    let group_pair = format!("/_sim/policies/{pid}/groups/{gid}");
    put_twice(&sim, &user_pair).await;
    assert_eq!(admin_status(&sim, Method::PUT, &group_pair).await, 204);
    let member = format!("/_sim/groups/{gid}/users/erin-id");
    assert_eq!(admin_status(&sim, Method::PUT, &member).await, 204);
    admin(&sim, Method::PUT, "/_sim/policies/nope/users/erin-id", None)
        .await
        .assert_error(404);
    let r = get(&sim, &format!("/v2/policies/{pid}/users")).await;
    assert_eq!(ids(&r.body, "users"), ["erin-id"]);

    let state = admin(&sim, Method::GET, "/_sim/state", None).await;
    assert_eq!(state.body["policies"].as_array().unwrap().len(), 4);
    assert_eq!(state.body["users"].as_array().unwrap().len(), 6);
    assert_eq!(state.body["groups"].as_array().unwrap().len(), 3);
    let attachments = state.body["user_attachments"].as_array().unwrap();
    assert!(attachments.iter().any(|a| a["policy_id"] == pid.as_str()
        && a["target_id"] == "erin-id"
        && a["visible"] == true
        && a["assigned_by"] == "sim-admin"));
    assert_eq!(state.body["group_attachments"].as_array().unwrap().len(), 2);
    assert_eq!(state.body["group_members"].as_array().unwrap().len(), 3);

    assert_eq!(admin_status(&sim, Method::DELETE, &user_pair).await, 204);
    admin(&sim, Method::DELETE, &user_pair, None)
        .await
        .assert_error(404);
    assert_eq!(admin_status(&sim, Method::DELETE, &group_pair).await, 204);
    assert_eq!(admin_status(&sim, Method::DELETE, &member).await, 204);
    // A rename: the same group under another name (a name Vultr may give away).
    let group = format!("/_sim/groups/{gid}");
    let rename = json!({"display_name": "net-old"});
    let r = admin_with(&sim, Method::PATCH, &group, rename.clone()).await;
    assert_eq!(r.status, 204);
    assert!(
        sim.state()
            .groups
            .iter()
            .any(|g| g.id == gid && g.display_name == "net-old")
    );
    admin_with(&sim, Method::PATCH, "/_sim/groups/nope", rename)
        .await
        .assert_error(404);
    for path in [
        format!("/_sim/policies/{pid}"),
        "/_sim/users/erin-id".to_owned(),
        format!("/_sim/groups/{gid}"),
    ] {
        assert_eq!(admin_status(&sim, Method::DELETE, &path).await, 204);
        admin(&sim, Method::DELETE, &path, None)
            .await
            .assert_error(404);
    }
    admin_with(&sim, Method::POST, "/_sim/policies", json!({"nmae": 1}))
        .await
        .assert_error(400);
    admin(&sim, Method::GET, "/_sim/policies", None)
        .await
        .assert_error(405);
    let seed = json!({"users": [{"email": "fred@example.com", "id": "fred"}],
                      "user_attachments": [{"policy": "dns-admin", "user": "fred"}]});
    assert_eq!(
        admin_with(&sim, Method::POST, "/_sim/seed", seed)
            .await
            .status,
        204
    );
    assert!(sim.is_user_attached(DNS_ADMIN, "fred"));
    let bad = json!({"user_attachments": [{"policy": "dns-admin", "user": "shared@example.com"}]});
    admin_with(&sim, Method::POST, "/_sim/seed", bad)
        .await
        .assert_error(400);
}

#[tokio::test]
async fn admin_journal_faults_behaviour_rate_limit() {
    let sim = demo_sim().await;
    get(&sim, "/v2/users?per_page=2").await;
    let journal = admin(&sim, Method::GET, "/_sim/journal", None).await;
    let entry = &journal.body[0];
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/v2/users");
    assert_eq!(entry["query"], "per_page=2");
    assert_eq!(entry["route"], "GET /v2/users");
    assert_eq!(entry["status"], 200);
    assert!(entry["at"].as_u64().unwrap() > 1_600_000_000_000, "unix ms");
    assert!(entry["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(entry["user_agent"], "", "this client sends none");
    // Which key a request used shows as a fingerprint, never as the key.
    assert_eq!(entry["key_fingerprint"], vultr_sim::key_fingerprint(KEY));
    assert_ne!(
        vultr_sim::key_fingerprint(KEY),
        vultr_sim::key_fingerprint(READ_ONLY_KEY)
    );
    assert!(!journal.body.to_string().contains(KEY));
    // The User-Agent tells writers apart (e.g. two operator replicas).
    let named = crate::common::http()
        .user_agent("vultr-iam-operator/0.1.0 (replica-a)")
        .build()
        .unwrap();
    let url = format!("{}/v2/users", sim.url());
    send(&named, Method::GET, &url, Some(KEY), None)
        .await
        .expect("request succeeds");
    let journal = sim.journal();
    assert_eq!(journal.len(), 2);
    assert_eq!(
        journal[1].user_agent,
        "vultr-iam-operator/0.1.0 (replica-a)"
    );
    assert_eq!(
        admin(&sim, Method::GET, "/_sim/journal", None).await.body[1]["user_agent"],
        "vultr-iam-operator/0.1.0 (replica-a)"
    );
    assert_eq!(
        admin_status(&sim, Method::DELETE, "/_sim/journal").await,
        204
    );
    assert!(sim.journal().is_empty());

    let fault = json!({"method": "GET", "path_prefix": "/v2/groups",
                       "kind": {"type": "status", "status": 500}, "count": 5});
    let r = admin_with(&sim, Method::POST, "/_sim/faults", fault).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_u64().unwrap();
    let hang = json!({"kind": {"type": "hang"}, "path_prefix": "/v2/nothing", "until_ms": 60000});
    assert_eq!(
        admin_with(&sim, Method::POST, "/_sim/faults", hang)
            .await
            .status,
        201
    );
    let list = admin(&sim, Method::GET, "/_sim/faults", None).await;
    assert_eq!(list.body[0]["id"], id);
    assert_eq!(list.body[0]["count"], 5);
    assert_eq!(list.body[1]["kind"]["type"], "hang");
    get(&sim, "/v2/groups").await.assert_error(500);
    assert_eq!(
        admin_status(&sim, Method::DELETE, &format!("/_sim/faults/{id}")).await,
        204
    );
    assert_eq!(get(&sim, "/v2/groups").await.status, 200);
    assert_eq!(
        admin_status(&sim, Method::DELETE, "/_sim/faults").await,
        204
    );
    assert_eq!(
        admin(&sim, Method::GET, "/_sim/faults", None).await.body,
        json!([])
    );
    admin_with(
        &sim,
        Method::POST,
        "/_sim/faults",
        json!({"kind": {"type": "melt"}}),
    )
    .await
    .assert_error(400);

    let r = admin(&sim, Method::GET, "/_sim/behaviour", None).await;
    assert_eq!(
        r.body,
        json!({"attach_existing": 201, "detach_absent": 404, "listing_lag_ms": 0,
               "detach_lag_ms": 0, "listing_shape": "govultr"})
    );
    let b = json!({"attach_existing": 409, "detach_absent": 204, "listing_lag_ms": 1500,
                   "detach_lag_ms": 700, "listing_shape": "relationships"});
    assert_eq!(
        admin_with(&sim, Method::PUT, "/_sim/behaviour", b)
            .await
            .status,
        200
    );
    assert_eq!(
        sim.behaviour(),
        Behaviour {
            attach_existing: 409,
            detach_absent: 204,
            listing_lag: Duration::from_millis(1500),
            detach_lag: Duration::from_millis(700),
            listing_shape: ListingShape::Relationships,
        }
    );
    admin_with(
        &sim,
        Method::PUT,
        "/_sim/behaviour",
        json!({"attach_existing": 99}),
    )
    .await
    .assert_error(400);

    let r = admin_with(
        &sim,
        Method::PUT,
        "/_sim/rate-limit",
        json!({"per_second": 2.5, "burst": 4}),
    )
    .await;
    assert_eq!(r.body, json!({"per_second": 2.5, "burst": 4}));
    assert_eq!(sim.rate_limit().map(|r| r.burst), Some(4));
    let r = admin_with(&sim, Method::PUT, "/_sim/rate-limit", Value::Null).await;
    assert_eq!((r.status, r.body), (200, Value::Null));
    assert_eq!(sim.rate_limit(), None);
}

/// A key rotation: after `PUT /_sim/api-keys` only the new keys are accepted, at once.
#[tokio::test]
async fn api_keys_can_be_replaced_at_run_time() {
    let sim = demo_sim().await;
    let as_key = |key: &'static str, method: Method| {
        let url = format!("{}/v2/policies/{DNS_ADMIN}/users/{ALICE}", sim.url());
        async move {
            send(&client(), method, &url, Some(key), None)
                .await
                .unwrap()
                .status
        }
    };
    let list = |key: &'static str| {
        let url = format!("{}/v2/users", sim.url());
        async move {
            send(&client(), Method::GET, &url, Some(key), None)
                .await
                .unwrap()
        }
    };
    assert_eq!(list(KEY).await.status, 200);
    assert_eq!(list("new-key").await.status, 401);

    let r = admin_with(
        &sim,
        Method::PUT,
        "/_sim/api-keys",
        json!({"api_keys": ["new-key"], "read_only_keys": ["new-ro"]}),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.text.is_empty(), "keys are never echoed: {r:?}");
    list(KEY).await.assert_error(401);
    list(READ_ONLY_KEY).await.assert_error(401);
    assert_eq!(list("new-key").await.status, 200);
    assert_eq!(list("new-ro").await.status, 200);
    assert_eq!(as_key("new-ro", Method::POST).await, 403);
    assert_eq!(as_key("new-key", Method::POST).await, 201);

    // Lists left out are emptied; bad keys and unknown fields change nothing.
    for bad in [
        json!({"api_keys": [""]}),
        json!({"api_keys": ["has space"]}),
        json!({"keys": ["x"]}),
    ] {
        admin_with(&sim, Method::PUT, "/_sim/api-keys", bad.clone())
            .await
            .assert_error(400);
        assert_eq!(list("new-key").await.status, 200, "{bad} changed the keys");
    }
    assert_eq!(
        sim.set_api_keys(ApiKeys {
            api_keys: vec![KEY.to_owned()],
            read_only_keys: vec![],
        }),
        Ok(())
    );
    assert_eq!(list(KEY).await.status, 200);
    list("new-ro").await.assert_error(401);
    assert!(
        sim.set_api_keys(ApiKeys {
            api_keys: vec!["a b".to_owned()],
            read_only_keys: vec![],
        })
        .is_err()
    );
    assert_eq!(list(KEY).await.status, 200);
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let sim = demo_sim().await;
    let addr = sim.addr();
    assert_eq!(sim.url(), format!("http://{addr}"));
    assert!(addr.ip().is_loopback());
    assert_eq!(get(&sim, "/v2/policies").await.status, 200);
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let sim = demo_sim().await;
    let addr = sim.addr();
    drop(sim);
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "dropping the handle stops the listener");
}

#[test]
fn config_and_types_round_trip_through_json() {
    let config = SimConfig {
        seed: Seed {
            users: vec![SeedUser {
                id: None,
                email: "a@x".into(),
                name: String::new(),
            }],
            groups: vec![SeedGroup {
                id: Some("g".into()),
                display_name: "G".into(),
            }],
            ..Seed::default()
        },
        ..SimConfig::default()
    };
    let text = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<SimConfig>(&text).unwrap(), config);
    let kind: FaultKind = serde_json::from_value(json!({"type": "latency", "ms": 5})).unwrap();
    assert_eq!(kind, FaultKind::Latency { ms: 5 });
    assert_eq!(
        "Relationships".parse::<ListingShape>(),
        Ok(ListingShape::Relationships)
    );
    assert!("other".parse::<ListingShape>().is_err());
}
