//! The `/v2` contract: endpoints, object shapes, errors, pagination, behaviours.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use reqwest::Method;
use serde_json::Value;
use vultr_sim::{Behaviour, ListingShape, Sim, SimConfig};

#[tokio::test]
async fn lists_policies_with_every_field() {
    let sim = demo_sim().await;
    let r = get(&sim, "/v2/policies").await;
    assert_eq!(r.status, 200);
    let policies = r.body["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 3);
    let names: Vec<&str> = policies
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dns-admin", "billing-read", "compute-admin"]);
    for p in policies {
        assert!(p["id"].is_string() && p["description"].is_string(), "{p}");
        assert!(p["policy_document"]["Version"].is_string(), "{p}");
        let statement = &p["policy_document"]["Statement"][0];
        assert_eq!(statement["Effect"], "Allow");
        assert!(statement["Action"].is_array() && statement["Resource"].is_array());
        assert!(p["version"].is_string(), "{p}");
        assert_eq!(p["is_system_policy"], false);
        assert!(
            p["date_created"].as_str().unwrap().ends_with("+00:00"),
            "{p}"
        );
    }
    assert_eq!(r.body["meta"]["total"], 3);
    assert_eq!(r.body["meta"]["links"]["next"], "");
    assert_eq!(r.body["meta"]["links"]["prev"], "");
}

#[tokio::test]
async fn gets_one_policy_or_404() {
    let sim = demo_sim().await;
    let r = get(&sim, &format!("/v2/policies/{DNS_ADMIN}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["policy"]["id"], DNS_ADMIN);
    assert_eq!(r.body["policy"]["name"], "dns-admin");
    get(&sim, "/v2/policies/00000000-0000-0000-0000-000000000000")
        .await
        .assert_error(404);
}

#[tokio::test]
async fn lists_and_gets_users() {
    let sim = demo_sim().await;
    let body = listing(&sim, "/v2/users", 5).await;
    let alice = &body["users"][0];
    assert_eq!(alice["id"], ALICE);
    assert_eq!(alice["email"], "alice@example.com");
    assert_eq!(alice["name"], "Alice Adams");
    assert_eq!(alice["api_enabled"], true);
    assert_eq!(alice["service_user"], false);
    let shared = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["email"] == "shared@example.com")
        .count();
    assert_eq!(shared, 2, "the demo has an ambiguous email");

    let r = get(&sim, &format!("/v2/users/{BOB}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["user"]["email"], "bob@example.com");
    get(&sim, "/v2/users/nope").await.assert_error(404);
}

#[tokio::test]
async fn lists_groups_with_members() {
    let sim = demo_sim().await;
    let r = get(&sim, "/v2/groups").await;
    assert_eq!(r.status, 200);
    assert_eq!(ids(&r.body, "groups"), [OPS, DEVELOPERS]);
    let ops = &r.body["groups"][0];
    assert_eq!(ops["display_name"], "ops");
    assert!(ops["description"].is_string() && ops["date_created"].is_string());
    assert_eq!(ops["members"][0]["id"], BOB);
    assert_eq!(r.body["meta"]["total"], 2);
    let r = get(&sim, &format!("/v2/groups/{DEVELOPERS}")).await;
    assert_eq!(r.body["group"]["members"][0]["id"], ALICE);
    get(&sim, "/v2/groups/nope").await.assert_error(404);
}

#[tokio::test]
async fn missing_or_wrong_key_is_401() {
    let sim = demo_sim().await;
    let c = client();
    let url = format!("{}/v2/policies", sim.url());
    for key in [None, Some("wrong"), Some("")] {
        send(&c, Method::GET, &url, key, None)
            .await
            .unwrap()
            .assert_error(401);
    }
    // Not a bearer token at all.
    let r = c
        .get(&url)
        .header("Authorization", format!("Basic {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn read_only_key_reads_but_cannot_write() {
    let sim = demo_sim().await;
    let c = client();
    let base = sim.url();
    let r = send(
        &c,
        Method::GET,
        &format!("{base}/v2/policies"),
        Some(READ_ONLY_KEY),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let pair = format!("{base}/v2/policies/{DNS_ADMIN}/users/{ALICE}");
    send(&c, Method::POST, &pair, Some(READ_ONLY_KEY), None)
        .await
        .unwrap()
        .assert_error(403);
    assert!(!sim.is_user_attached(DNS_ADMIN, ALICE));
    let carol = format!("{base}/v2/policies/{COMPUTE_ADMIN}/users/{CAROL}");
    send(&c, Method::DELETE, &carol, Some(READ_ONLY_KEY), None)
        .await
        .unwrap()
        .assert_error(403);
    assert!(sim.is_user_attached(COMPUTE_ADMIN, CAROL));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let sim = demo_sim().await;
    get(&sim, "/v2/nothing-here").await.assert_error(404);
    get(&sim, "/v2/policies/x/y/z").await.assert_error(404);
    admin(&sim, Method::GET, "/", None).await.assert_error(404);
    admin(&sim, Method::GET, "/_sim/nothing", None)
        .await
        .assert_error(404);
    v2(&sim, Method::PUT, "/v2/policies")
        .await
        .assert_error(405);
    v2(
        &sim,
        Method::PATCH,
        &format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}"),
    )
    .await
    .assert_error(405);
    v2(&sim, Method::POST, "/v2/users").await.assert_error(405);
    let routes: Vec<(String, u16)> = sim
        .journal()
        .into_iter()
        .map(|e| (e.route, e.status))
        .collect();
    assert!(
        routes.contains(&("GET (unmatched)".to_owned(), 404)),
        "{routes:?}"
    );
    assert!(
        routes.contains(&("PUT /v2/policies".to_owned(), 405)),
        "{routes:?}"
    );
}

#[tokio::test]
async fn attach_list_detach_a_user() {
    let sim = demo_sim().await;
    let pair = format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}");
    let r = v2(&sim, Method::POST, &pair).await;
    assert_eq!(r.status, 201);
    assert!(sim.is_user_attached(DNS_ADMIN, ALICE));

    let r = get(&sim, &format!("/v2/policies/{DNS_ADMIN}/users")).await;
    assert_eq!(r.status, 200);
    assert_eq!(ids(&r.body, "users"), [ALICE]);
    let u = &r.body["users"][0];
    assert_eq!(u["email"], "alice@example.com");
    assert_eq!(u["first_name"], "Alice");
    assert_eq!(u["last_name"], "Adams");
    assert!(u["name"].is_string() && u["date_created"].is_string());
    assert_eq!(r.body["meta"]["total"], 1);

    let r = v2(&sim, Method::DELETE, &pair).await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    assert!(!sim.is_user_attached(DNS_ADMIN, ALICE));
    let r = get(&sim, &format!("/v2/policies/{DNS_ADMIN}/users")).await;
    assert_eq!(r.body["users"], Value::Array(vec![]));

    let journal = sim.journal();
    let routes: Vec<(&str, &str, u16)> = journal
        .iter()
        .map(|e| (e.method.as_str(), e.route.as_str(), e.status))
        .collect();
    assert_eq!(
        routes,
        [
            ("POST", "POST /v2/policies/{policy_id}/users/{user_id}", 201),
            ("GET", "GET /v2/policies/{policy_id}/users", 200),
            (
                "DELETE",
                "DELETE /v2/policies/{policy_id}/users/{user_id}",
                204
            ),
            ("GET", "GET /v2/policies/{policy_id}/users", 200),
        ]
    );
    assert_eq!(journal[0].path, pair);
    assert!(
        journal
            .iter()
            .all(|e| e.latency_ms >= 0.0 && e.query.is_empty())
    );
}

#[tokio::test]
async fn attach_list_detach_a_group() {
    let sim = demo_sim().await;
    let pair = format!("/v2/policies/{DNS_ADMIN}/groups/{DEVELOPERS}");
    assert_eq!(v2(&sim, Method::POST, &pair).await.status, 201);
    assert!(sim.is_group_attached(DNS_ADMIN, DEVELOPERS));
    let r = get(&sim, &format!("/v2/policies/{DNS_ADMIN}/groups")).await;
    assert_eq!(ids(&r.body, "groups"), [DEVELOPERS]);
    assert_eq!(r.body["groups"][0]["display_name"], "developers");
    assert_eq!(v2(&sim, Method::DELETE, &pair).await.status, 204);
    assert!(!sim.is_group_attached(DNS_ADMIN, DEVELOPERS));
    // The seeded group attachment is listed too.
    let r = get(&sim, &format!("/v2/policies/{BILLING_READ}/groups")).await;
    assert_eq!(ids(&r.body, "groups"), [OPS]);
}

#[tokio::test]
async fn attach_with_unknown_ids_is_404() {
    let sim = demo_sim().await;
    for path in [
        format!("/v2/policies/nope/users/{ALICE}"),
        format!("/v2/policies/{DNS_ADMIN}/users/nope"),
        format!("/v2/policies/nope/groups/{OPS}"),
        format!("/v2/policies/{DNS_ADMIN}/groups/nope"),
    ] {
        v2(&sim, Method::POST, &path).await.assert_error(404);
    }
    get(&sim, "/v2/policies/nope/users").await.assert_error(404);
    get(&sim, "/v2/policies/nope/groups")
        .await
        .assert_error(404);
    assert_eq!(sim.state().user_attachments.len(), 1, "only the seeded one");
}

#[tokio::test]
async fn attach_existing_follows_the_behaviour() {
    let sim = demo_sim().await;
    let carol = format!("/v2/policies/{COMPUTE_ADMIN}/users/{CAROL}");
    let ops = format!("/v2/policies/{BILLING_READ}/groups/{OPS}");
    // Default: 201 again, as if it were new.
    assert_eq!(v2(&sim, Method::POST, &carol).await.status, 201);
    assert_eq!(v2(&sim, Method::POST, &ops).await.status, 201);
    for status in [400, 409, 422] {
        sim.set_behaviour(Behaviour {
            attach_existing: status,
            ..Behaviour::default()
        });
        v2(&sim, Method::POST, &carol).await.assert_error(status);
        v2(&sim, Method::POST, &ops).await.assert_error(status);
    }
    // A new pair is still 201 whatever the behaviour.
    assert_eq!(
        v2(
            &sim,
            Method::POST,
            &format!("/v2/policies/{DNS_ADMIN}/users/{BOB}")
        )
        .await
        .status,
        201
    );
    assert!(sim.is_user_attached(COMPUTE_ADMIN, CAROL));
}

#[tokio::test]
async fn detach_absent_follows_the_behaviour() {
    let sim = demo_sim().await;
    let absent = [
        format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}"),
        format!("/v2/policies/nope/users/{ALICE}"),
        format!("/v2/policies/{DNS_ADMIN}/users/nope"),
        format!("/v2/policies/{DNS_ADMIN}/groups/{OPS}"),
        "/v2/policies/nope/groups/nope".to_owned(),
    ];
    for path in &absent {
        v2(&sim, Method::DELETE, path).await.assert_error(404);
    }
    sim.set_behaviour(Behaviour {
        detach_absent: 204,
        ..Behaviour::default()
    });
    for path in &absent {
        let r = v2(&sim, Method::DELETE, path).await;
        assert_eq!(r.status, 204, "{path}");
        assert!(r.text.is_empty());
    }
}

#[tokio::test]
async fn relationships_shape_by_config_and_at_run_time() {
    let sim = demo_config()
        .listing_shape(ListingShape::Relationships)
        .start()
        .await
        .unwrap();
    assert_eq!(sim.behaviour().listing_shape, ListingShape::Relationships);
    let r = get(&sim, &format!("/v2/policies/{COMPUTE_ADMIN}/users")).await;
    assert!(r.body.get("users").is_none(), "{}", r.body);
    let rel = &r.body["policy_user_relationships"][0];
    assert_eq!(rel["user_id"], CAROL);
    assert_eq!(rel["policy_id"], COMPUTE_ADMIN);
    assert_eq!(rel["policy_name"], "compute-admin");
    assert!(rel["date_assigned"].is_string());
    assert_eq!(rel["assigned_by"], "seed");
    assert_eq!(r.body["meta"]["total"], 1);

    let r = get(&sim, &format!("/v2/policies/{BILLING_READ}/groups")).await;
    let rel = &r.body["policy_group_relationships"][0];
    assert_eq!(rel["group_id"], OPS);
    assert_eq!(rel["policy_id"], BILLING_READ);
    assert_eq!(rel["policy_name"], "billing-read");

    sim.set_behaviour(Behaviour {
        listing_shape: ListingShape::Govultr,
        ..sim.behaviour()
    });
    let r = get(&sim, &format!("/v2/policies/{COMPUTE_ADMIN}/users")).await;
    assert_eq!(ids(&r.body, "users"), [CAROL]);
    assert!(r.body.get("policy_user_relationships").is_none());
}

#[tokio::test]
async fn listing_lags_behind_a_fresh_attach() {
    let sim = demo_sim_with(Behaviour {
        listing_lag: Duration::from_millis(800),
        ..Behaviour::default()
    })
    .await;
    let listing = format!("/v2/policies/{DNS_ADMIN}/users");
    assert_eq!(
        v2(&sim, Method::POST, &format!("{listing}/{ALICE}"))
            .await
            .status,
        201
    );
    assert!(
        sim.is_user_attached(DNS_ADMIN, ALICE),
        "the truth is immediate"
    );
    let r = get(&sim, &listing).await;
    assert_eq!(r.body["users"], Value::Array(vec![]), "hidden by the lag");
    assert_eq!(r.body["meta"]["total"], 0);
    // The admin view knows the attachment and that listings hide it.
    assert_eq!(
        sim.state()
            .user_attachments
            .iter()
            .filter(|a| !a.visible)
            .count(),
        1
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = get(&sim, &listing).await;
    assert_eq!(ids(&r.body, "users"), [ALICE]);
}

#[tokio::test]
async fn listing_lags_behind_a_detach() {
    let sim = demo_sim_with(Behaviour {
        detach_lag: Duration::from_millis(800),
        ..Behaviour::default()
    })
    .await;
    let listing = format!("/v2/policies/{DNS_ADMIN}/users");
    let pair = format!("{listing}/{ALICE}");
    assert_eq!(v2(&sim, Method::POST, &pair).await.status, 201);
    assert_eq!(ids(&get(&sim, &listing).await.body, "users"), [ALICE]);
    assert_eq!(v2(&sim, Method::DELETE, &pair).await.status, 204);
    assert!(
        !sim.is_user_attached(DNS_ADMIN, ALICE),
        "the truth is immediate"
    );
    let r = get(&sim, &listing).await;
    assert_eq!(ids(&r.body, "users"), [ALICE], "still listed: the lag");
    assert!(
        !sim.state()
            .user_attachments
            .iter()
            .any(|a| a.policy_id == DNS_ADMIN && a.target_id == ALICE),
        "the admin view has no such attachment"
    );
    // Detached is detached: a second DELETE finds nothing, a POST attaches anew.
    assert_eq!(v2(&sim, Method::DELETE, &pair).await.status, 404);
    assert_eq!(v2(&sim, Method::POST, &pair).await.status, 201);
    assert_eq!(
        ids(&get(&sim, &listing).await.body, "users"),
        [ALICE],
        "once"
    );
    assert_eq!(v2(&sim, Method::DELETE, &pair).await.status, 204);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = get(&sim, &listing).await;
    assert_eq!(r.body["users"], Value::Array(vec![]));
    // Out-of-band detaches are not lagged.
    assert!(sim.attach_user(DNS_ADMIN, ALICE));
    assert!(sim.detach_user(DNS_ADMIN, ALICE));
    assert_eq!(
        get(&sim, &listing).await.body["users"],
        Value::Array(vec![])
    );
}

#[tokio::test]
async fn user_policies_include_inherited_ones() {
    let sim = demo_sim().await;
    let r = get(&sim, &format!("/v2/users/{BOB}/policies")).await;
    assert_eq!(r.status, 200);
    let p = &r.body["policies"];
    assert_eq!(p["direct"], Value::Array(vec![]));
    assert_eq!(p["inherited"][0]["id"], BILLING_READ);
    assert_eq!(p["all"][0]["id"], BILLING_READ);
    let r = get(&sim, &format!("/v2/users/{CAROL}/policies")).await;
    assert_eq!(r.body["policies"]["direct"][0]["id"], COMPUTE_ADMIN);
    assert_eq!(r.body["policies"]["inherited"], Value::Array(vec![]));
    get(&sim, "/v2/users/nope/policies").await.assert_error(404);
}

/// Follows `links.next` from the first page; returns (ids in order, pages).
async fn walk(sim: &Sim, path: &str, key: &str, per_page: usize) -> (Vec<String>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    let mut cursor = String::new();
    loop {
        let r = get(sim, &format!("{path}?per_page={per_page}&cursor={cursor}")).await;
        assert_eq!(r.status, 200, "{r:?}");
        pages += 1;
        all.extend(ids(&r.body, key));
        let next = r.body["meta"]["links"]["next"]
            .as_str()
            .expect("next")
            .to_owned();
        if next.is_empty() {
            break;
        }
        assert!(pages < 1000, "runaway pagination");
        cursor = next;
    }
    (all, pages)
}

#[tokio::test]
async fn pagination_walks_1234_users_in_13_pages() {
    let sim = SimConfig::empty().start().await.unwrap();
    let created: Vec<String> = (0..1234)
        .map(|i| sim.add_user(&format!("user{i}@example.com")))
        .collect();
    let (seen, pages) = walk(&sim, "/v2/users", "users", 100).await;
    assert_eq!(pages, 13);
    assert_eq!(seen, created, "every user once, in a stable order");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1234);

    let first = get(&sim, "/v2/users?per_page=100").await;
    assert_eq!(first.body["meta"]["total"], 1234);
    assert_eq!(first.body["users"].as_array().unwrap().len(), 100);
    assert_eq!(first.body["meta"]["links"]["prev"], "");
    // The last page: 34 users, empty next, a prev that leads back.
    let mut cursor = first.body["meta"]["links"]["next"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut last = first;
    for _ in 1..13 {
        last = get(&sim, &format!("/v2/users?per_page=100&cursor={cursor}")).await;
        cursor = last.body["meta"]["links"]["next"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    assert_eq!(last.body["users"].as_array().unwrap().len(), 34);
    assert_eq!(last.body["meta"]["links"]["next"], "");
    assert_eq!(last.body["meta"]["total"], 1234);
    let prev = last.body["meta"]["links"]["prev"].as_str().unwrap();
    let back = get(&sim, &format!("/v2/users?per_page=100&cursor={prev}")).await;
    assert_eq!(ids(&back.body, "users"), created[1100..1200]);
}

#[tokio::test]
async fn per_page_defaults_clamps_and_rejects() {
    let sim = SimConfig::empty().start().await.unwrap();
    for i in 0..600 {
        sim.add_policy(&format!("policy-{i}"));
    }
    let r = get(&sim, "/v2/policies").await;
    assert_eq!(
        r.body["policies"].as_array().unwrap().len(),
        100,
        "default 100"
    );
    let r = get(&sim, "/v2/policies?per_page=500").await;
    assert_eq!(r.body["policies"].as_array().unwrap().len(), 500);
    let r = get(&sim, "/v2/policies?per_page=100000").await;
    assert_eq!(
        r.body["policies"].as_array().unwrap().len(),
        500,
        "clamped to 500"
    );
    assert_ne!(r.body["meta"]["links"]["next"], "");
    get(&sim, "/v2/policies?per_page=0").await.assert_error(400);
    get(&sim, "/v2/policies?per_page=ten")
        .await
        .assert_error(400);
    get(&sim, "/v2/policies?cursor=garbage!")
        .await
        .assert_error(400);
    get(&sim, "/v2/users?cursor=bm9wZQ").await.assert_error(400);
    // An empty cursor is the first page.
    let r = get(&sim, "/v2/policies?cursor=&per_page=2").await;
    assert_eq!(r.body["policies"][0]["name"], "policy-0");
}

#[tokio::test]
async fn policy_user_listing_paginates() {
    let sim = demo_sim().await;
    let mut attached = Vec::new();
    for i in 0..250 {
        let u = sim.add_user(&format!("u{i}@example.com"));
        assert!(sim.attach_user(DNS_ADMIN, &u));
        attached.push(u);
    }
    let (seen, pages) = walk(
        &sim,
        &format!("/v2/policies/{DNS_ADMIN}/users"),
        "users",
        100,
    )
    .await;
    assert_eq!(pages, 3);
    assert_eq!(seen, attached);
    let (seen, pages) = walk(&sim, "/v2/groups", "groups", 1).await;
    assert_eq!((seen.len(), pages), (2, 2));
}
