//! End-to-end behaviour of the operator against the real control plane and the Vultr
//! simulator: attach, guaranteed revocation, failures, shared grants, drift.

use vio_harness::{e2e, support};

use std::time::{Duration, SystemTime};

use e2e::*;
use kube::Api;
use serde_json::json;
use support::wait_for;
use vultr_sim::{Behaviour, Fault, FaultKind};

fn attach_posts(env: &Env, policy: &str) -> usize {
    env.requests("POST", &format!("/v2/policies/{policy}/"))
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaches_by_id_and_revokes_before_the_object_goes() {
    let env = Env::start("pa-by-id").await;
    env.create("alice-dns", by_ids(DNS_ADMIN, ALICE)).await;

    let obj = env.wait_ready("alice-dns", "True", "Attached").await;
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
    let st = obj.status.expect("status");
    assert_eq!(st.policy_id.as_deref(), Some(DNS_ADMIN));
    assert_eq!(st.subject_id.as_deref(), Some(ALICE));
    // Declared by IDs, shown by name in `kubectl get pa`.
    assert_eq!(st.policy.as_deref(), Some("dns-admin"));
    assert_eq!(st.subject.as_deref(), Some("alice@example.com"));
    assert!(st.attached_at.is_some() && st.last_verified_at.is_some());
    assert!(
        obj.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"iam.vultr-operator.io/detach".to_owned())
    );
    let note = env.wait_event("alice-dns", "Attached").await;
    assert!(note.contains(DNS_ADMIN), "{note}");

    // `kubectl wait` works on the condition as written.
    run_ok(env.kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=30s",
        "pa/alice-dns",
    ]));

    // Hold the DELETE for a while: the object must stay until Vultr confirms.
    env.sim.add_fault(
        Fault::new(FaultKind::Latency { ms: 1500 })
            .on(Some("DELETE"), Some("/v2/policies/"))
            .times(1),
    );
    env.delete("alice-dns").await;
    // While the DELETE is in flight the object is still there and says so.
    env.wait_ready("alice-dns", "False", "Detaching").await;
    env.wait_gone("alice-dns").await;
    let gone_at = SystemTime::now();

    let deletes = env.requests("DELETE", &format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}"));
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].status, 204);
    assert!(deletes[0].at <= gone_at);
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_names_and_emails_and_groups() {
    let env = Env::start("pa-names").await;
    env.create_all(&[
        (
            "by-name",
            spec_names("user", "billing-read", "Bob@Example.com"),
        ),
        (
            "group-by-name",
            spec_names("group", "dns-admin", "developers"),
        ),
        ("group-by-id", spec_ids("group", COMPUTE_ADMIN, OPS)),
    ])
    .await;

    let obj = env.wait_ready("by-name", "True", "Attached").await;
    assert_eq!(
        obj.status.as_ref().and_then(|s| s.subject_id.as_deref()),
        Some(BOB)
    );
    env.wait_attached(&["group-by-name", "group-by-id"]).await;
    assert!(env.sim.is_user_attached(BILLING_READ, BOB));
    assert!(env.sim.is_group_attached(DNS_ADMIN, DEVELOPERS));
    assert!(env.sim.is_group_attached(COMPUTE_ADMIN, OPS));

    // `kubectl get pa` shows Ready, Reason, policy, subject.
    let table = run_ok(env.kubectl().args(["get", "pa"]));
    assert!(
        table.contains("READY")
            && table.contains("REASON")
            && table.contains("POLICY")
            && table.contains("SUBJECT"),
        "{table}"
    );
    assert!(
        table.contains("billing-read")
            && table.contains("Bob@Example.com")
            && table.contains("developers"),
        "{table}"
    );

    env.delete_and_wait_gone("group-by-name").await;
    assert!(!env.sim.is_group_attached(DNS_ADMIN, DEVELOPERS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_failures_are_conditions_not_crashes() {
    let env = Env::start("pa-notfound").await;
    env.create_all(&[
        (
            "no-policy",
            json!({"policy": {"name": "no-such-policy"}, "user": {"id": ALICE}}),
        ),
        (
            "no-user",
            json!({"policy": {"id": DNS_ADMIN}, "user": {"email": "nobody@example.com"}}),
        ),
        (
            "no-group",
            json!({"policy": {"id": DNS_ADMIN}, "group": {"name": "nobody"}}),
        ),
        (
            "ambiguous",
            json!({"policy": {"id": DNS_ADMIN}, "user": {"email": "shared@example.com"}}),
        ),
    ])
    .await;

    let obj = env.wait_ready("no-policy", "False", "PolicyNotFound").await;
    let msg = &synced(&obj).message;
    assert!(msg.contains("no-such-policy"), "{msg}");
    env.wait_ready("no-user", "False", "UserNotFound").await;
    env.wait_ready("no-group", "False", "GroupNotFound").await;
    let obj = env.wait_ready("ambiguous", "False", "Ambiguous").await;
    let msg = &synced(&obj).message;
    assert!(
        msg.contains("c0ffee00-1111-4222-8333-444455556605"),
        "{msg}"
    );
    env.wait_event("ambiguous", "Ambiguous").await;

    // Nothing was recorded, so deleting them revokes nothing and does not hang.
    env.delete_and_wait_gone("no-policy").await;
    assert!(env.requests("DELETE", "/v2/").is_empty());

    // The user appears in Vultr later: the backoff retry picks it up.
    env.sim.add_user("nobody@example.com");
    env.wait_ready("no-user", "True", "Attached").await;

    let mut env = env;
    assert!(
        env.operator.is_running(),
        "operator crashed:\n{}",
        env.operator.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_and_forbidden_keys_are_reported() {
    let env = Env::start_with("pa-badkey", "vk-WRONG-key-1234567890", &[]).await;
    env.create("a", by_ids(DNS_ADMIN, ALICE)).await;
    let obj = env.wait_ready("a", "False", "Unauthorized").await;
    let msg = &synced(&obj).message;
    assert!(msg.contains("401"), "{msg}");
    assert!(!msg.contains("vk-WRONG"), "key leaked into status: {msg}");
    drop(env);

    let env = Env::start_with("pa-readonly", READ_ONLY_KEY, &[]).await;
    env.create("a", by_ids(DNS_ADMIN, ALICE)).await;
    env.wait_ready("a", "False", "Forbidden").await;
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    let logs = env.operator.logs();
    assert!(!logs.contains(READ_ONLY_KEY), "key leaked into logs");
}

/// 5xx, 429 and a full outage during deletion: the finalizer holds, the status says
/// why, and the grant is revoked once Vultr recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_during_deletion_keep_the_finalizer() {
    let env = Env::start("pa-faults").await;
    env.create_all(&[
        ("five-hundred", by_ids(DNS_ADMIN, ALICE)),
        ("rate-limited", by_ids(BILLING_READ, ALICE)),
        ("outage", by_ids(COMPUTE_ADMIN, BOB)),
    ])
    .await;
    env.wait_attached(&["five-hundred", "rate-limited", "outage"])
        .await;

    let p500 = format!("/v2/policies/{DNS_ADMIN}/users/");
    let p429 = format!("/v2/policies/{BILLING_READ}/users/");
    let f500 = env
        .sim
        .add_fault(Fault::status(503).on(Some("DELETE"), Some(&p500)));
    let f429 = env.sim.add_fault(
        Fault::new(FaultKind::Status {
            status: 429,
            retry_after: Some(1),
        })
        .on(Some("DELETE"), Some(&p429)),
    );
    let outage = env.sim.add_fault(
        Fault::new(FaultKind::Drop)
            .for_duration(Duration::from_secs(600))
            .on(None, Some(&format!("/v2/policies/{COMPUTE_ADMIN}"))),
    );

    for name in ["five-hundred", "rate-limited", "outage"] {
        env.delete(name).await;
    }
    env.wait_synced("five-hundred", "False", "ApiUnavailable")
        .await;
    env.wait_synced("rate-limited", "False", "RateLimited")
        .await;
    env.wait_synced("outage", "False", "ApiUnavailable").await;
    env.wait_event("five-hundred", "ApiUnavailable").await;
    // Several attempts, all failed, and the objects are still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(env.requests("DELETE", &p500).len() >= 2);
    // The repeated failure is one Event with a series, not one Event per attempt.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.ns.name);
    let failures: Vec<_> = events
        .list(&Default::default())
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("ApiUnavailable")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("five-hundred")
        })
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].series.as_ref().is_some_and(|s| s.count >= 2),
        "{failures:?}"
    );
    for name in ["five-hundred", "rate-limited", "outage"] {
        assert!(
            env.api.get_opt(name).await.expect("get").is_some(),
            "{name} went while Vultr failed"
        );
    }
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));

    // Retry-After is honoured: attempts on the 429 route are at least ~1 s apart.
    let times: Vec<_> = env.requests("DELETE", &p429).iter().map(|e| e.at).collect();
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
        assert!(
            gap >= Duration::from_millis(900),
            "429 retried after {gap:?}"
        );
    }

    env.sim.remove_fault(f500);
    env.sim.remove_fault(f429);
    env.sim.remove_fault(outage);
    for name in ["five-hundred", "rate-limited", "outage"] {
        env.wait_gone(name).await;
    }
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert!(!env.sim.is_user_attached(BILLING_READ, ALICE));
    assert!(!env.sim.is_user_attached(COMPUTE_ADMIN, BOB));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_on_detach_means_revoked() {
    let env = Env::start("pa-404").await;
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    // The grant vanishes, and the policy with it: DELETE answers 404.
    env.sim.remove_policy(DNS_ADMIN);
    env.delete_and_wait_gone("a").await;
    let deletes = env.requests("DELETE", &format!("/v2/policies/{DNS_ADMIN}/"));
    assert!(deletes.iter().any(|e| e.status == 404), "{deletes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_leaves_the_grant() {
    let env = Env::start("pa-orphan").await;
    env.create(
        "a",
        json!({"policy": {"id": DNS_ADMIN}, "user": {"id": ALICE}, "deletionPolicy": "Orphan"}),
    )
    .await;
    env.wait_ready("a", "True", "Attached").await;
    env.delete_and_wait_gone("a").await;
    assert!(env.requests("DELETE", "/v2/").is_empty());
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert!(
        env.events("a")
            .await
            .iter()
            .any(|(_, r, _)| r == "Orphaned")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_grant_survives_until_its_last_holder_goes() {
    let env = Env::start("pa-shared").await;
    env.attach_all(&[
        ("first", by_ids(DNS_ADMIN, ALICE)),
        (
            "second",
            spec_names("user", "dns-admin", "alice@example.com"),
        ),
    ])
    .await;

    env.delete_and_wait_gone("first").await;
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert!(env.requests("DELETE", "/v2/").is_empty());

    env.delete_and_wait_gone("second").await;
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_detach_is_repaired_at_the_next_verification() {
    let env = Env::start("pa-drift").await;
    env.attach_all(&[
        ("a", by_ids(DNS_ADMIN, ALICE)),
        ("b", by_ids(DNS_ADMIN, BOB)),
    ])
    .await;

    assert!(env.sim.detach_user(DNS_ADMIN, ALICE));
    let attached = || env.sim.is_user_attached(DNS_ADMIN, ALICE);
    env.wait_drift_repaired("a", attached).await;

    // One listing per policy per pass serves every attachment of that policy: with 8
    // attachments, per-attachment verification would list at least 8 times per pass.
    for i in 0..6 {
        let user = env.sim.add_user(&format!("drift-{i}@example.com"));
        env.attach(&format!("more-{i}"), by_ids(DNS_ADMIN, &user))
            .await;
    }
    let before = SystemTime::now();
    env.sim.clear_journal();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let listings = env
        .requests("GET", &format!("/v2/policies/{DNS_ADMIN}/users"))
        .len();
    assert!(
        (2..=8).contains(&listings),
        "{listings} listings in 10 s at a 3 s resync for 8 attachments"
    );
    // ...and those passes verified every attachment: the process says when its last
    // complete pass was (status is not rewritten when nothing changed).
    let (_, metrics) = env.operator.http_get("/metrics").await;
    let last = metrics
        .lines()
        .find(|l| l.starts_with("vultr_iam_last_verification_timestamp_seconds "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the last verification metric");
    let before = before
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        last > before,
        "no complete verification pass since {before}: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_listing_does_not_cause_flapping_or_double_attach() {
    let env = Env::start("pa-lag").await;
    env.sim.set_behaviour(Behaviour {
        listing_lag: Duration::from_secs(3),
        attach_existing: 409,
        ..Behaviour::default()
    });
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    assert_eq!(attach_posts(&env, DNS_ADMIN), 1);
}

/// Attaches that arrive together are verified in batches: a listing fetched after a
/// burst of POSTs to a policy verifies all of them (call counts, not times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_attaches_is_verified_by_a_few_listings() {
    // A slow limiter, so the burst queues; no drift pass meanwhile.
    let flags = [
        "--vultr-rate-limit",
        "5",
        "--vultr-burst",
        "1",
        "--resync-interval",
        "10m",
    ];
    let mut env = Env::start_with("pa-batch", API_KEY, &flags).await;
    // The burst is there when the operator starts (as after an install or an outage).
    env.operator.kill();
    let n = 40;
    for i in 0..n {
        let user = env.sim.add_user(&format!("batch{i}@example.com"));
        let policy = if i % 2 == 0 { DNS_ADMIN } else { BILLING_READ };
        env.create(&format!("b{i}"), by_ids(policy, &user)).await;
    }
    env.operator = env.start_operator(&flags, &[]);
    for i in 0..n {
        env.wait_ready(&format!("b{i}"), "True", "Attached").await;
    }
    let posts = env.requests("POST", "/v2/policies/").len();
    let listings = env
        .requests("GET", "/v2/policies/")
        .iter()
        .filter(|e| e.path.ends_with("/users"))
        .count();
    assert_eq!(posts, n);
    // Per policy, one look before attaching and one batch after (4), and one spare;
    // verifying as soon as each attach is due took 7 here, one per attach would be 40.
    assert!(
        listings <= 5,
        "{listings} listings for {n} attaches to 2 policies"
    );
}

/// SIGKILL the operator while a revocation is failing; a new process finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_operator_loses_no_revocation() {
    let mut env = Env::start("pa-kill").await;
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    let fault = env
        .sim
        .add_fault(Fault::status(500).on(Some("DELETE"), None));
    env.delete("a").await;
    env.wait_synced("a", "False", "ApiUnavailable").await;
    env.operator.kill();
    env.sim.remove_fault(fault);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env.api.get_opt("a").await.expect("get").is_some());
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));

    env.operator = env.start_operator(&[], &[]);
    env.wait_gone("a").await;
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    // The new process only cleaned up; its revocation log still names the pair.
    let logs = env.operator.logs();
    let revoked = logs
        .lines()
        .find(|l| l.contains("revoked"))
        .unwrap_or_default();
    assert!(
        revoked.contains(&format!("policy_id=\"{DNS_ADMIN}\"")),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_the_key_never_leaks() {
    let mut env = Env::start("pa-term").await;
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    let obj = env.api.get("a").await.expect("get");
    let status = serde_json::to_string(&obj.status).expect("status json");
    assert!(!status.contains(API_KEY));
    for (_, _, note) in env.events("a").await {
        assert!(!note.contains(API_KEY));
    }
    assert!(
        env.operator.terminate(),
        "operator did not exit cleanly on SIGTERM"
    );
    let logs = env.operator.logs();
    // Reconcile logs carry the object's namespace/name and the resolved pair.
    assert!(
        logs.contains(&format!("namespace={}", env.ns.name)) && logs.contains("object=a"),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("policy_id=\"{DNS_ADMIN}\"")),
        "{logs}"
    );
    assert!(
        !logs.contains(API_KEY),
        "the API key appears in the operator's output"
    );
}

/// A Vultr that never answers (client timeout) during attach and during deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_transient_on_attach_and_on_revoke() {
    let env = Env::start("pa-hang").await;
    let hang = env
        .sim
        .add_fault(Fault::new(FaultKind::Hang).on(None, Some("/v2/")));
    env.create("a", by_ids(DNS_ADMIN, ALICE)).await;
    let obj = env.wait_synced("a", "False", "ApiUnavailable").await;
    let msg = &synced(&obj).message;
    assert!(
        msg.to_lowercase().contains("timed out") || msg.contains("timeout"),
        "{msg}"
    );
    env.sim.remove_fault(hang);
    env.wait_ready("a", "True", "Attached").await;

    let hang = env
        .sim
        .add_fault(Fault::new(FaultKind::Hang).on(Some("DELETE"), None));
    env.delete("a").await;
    env.wait_synced("a", "False", "ApiUnavailable").await;
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
    env.sim.remove_fault(hang);
    env.wait_gone("a").await;
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
}

/// The OpenAPI "relationships" listing shape works end to end, for users and groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relationships_listing_shape_is_understood() {
    let env = Env::start("pa-shape").await;
    env.sim.set_behaviour(Behaviour {
        listing_shape: vultr_sim::ListingShape::Relationships,
        ..Behaviour::default()
    });
    env.attach_all(&[
        ("u", by_ids(DNS_ADMIN, ALICE)),
        ("g", spec_ids("group", DNS_ADMIN, OPS)),
    ])
    .await;
    // Verified from the listing, so a second reconcile sends no second POST.
    assert_eq!(attach_posts(&env, DNS_ADMIN), 2);
    env.sim.detach_group(DNS_ADMIN, OPS);
    env.wait_event("g", "DriftRepaired").await;
}

/// Deleting the namespace revokes every grant in it before the namespace goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_revokes_every_grant() {
    let env = Env::start("pa-nsdel").await;
    env.attach_all(&[
        ("a", by_ids(DNS_ADMIN, ALICE)),
        ("b", spec_ids("group", BILLING_READ, DEVELOPERS)),
    ])
    .await;
    run_ok(env.cp.kubectl().args([
        "delete",
        "namespace",
        &env.ns.name,
        "--wait=true",
        "--timeout=90s",
    ]));
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert!(!env.sim.is_group_attached(BILLING_READ, DEVELOPERS));
    assert_eq!(env.requests("DELETE", "/v2/").len(), 2);
}

/// The client-side limiter keeps the operator under Vultr's limit: with the simulator
/// enforcing 5 requests/s and the operator limited to 4/s, no request gets a 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_side_limiter_avoids_vultr_429s() {
    let env = Env::start_with(
        "pa-limit",
        API_KEY,
        &["--vultr-rate-limit", "4", "--vultr-burst", "4"],
    )
    .await;
    env.sim.set_rate_limit(Some(vultr_sim::RateLimit {
        per_second: 5.0,
        burst: 5,
    }));
    let names: Vec<String> = (0..16).map(|i| format!("pa-{i}")).collect();
    for name in &names {
        let user = env.sim.add_user(&format!("{name}@example.com"));
        env.create(name, by_ids(DNS_ADMIN, &user)).await;
    }
    for name in &names {
        env.wait_ready(name, "True", "Attached").await;
    }
    let journal = env.sim.journal();
    // Enough requests that, unlimited, they would overrun the simulator's bucket.
    assert!(journal.len() >= 18, "{} requests", journal.len());
    let throttled: Vec<_> = journal.iter().filter(|e| e.status == 429).collect();
    assert!(throttled.is_empty(), "{throttled:?}");
}

/// SIGKILL the operator while its attach request is in flight: a new process converges
/// (one grant, Ready) and the deletion still revokes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_operator_mid_attach_converges_and_still_revokes() {
    let mut env = Env::start("pa-kill-attach").await;
    let slow = env.sim.add_fault(
        Fault::new(FaultKind::Latency { ms: 3000 }).on(Some("POST"), Some("/v2/policies/")),
    );
    env.create("a", by_ids(DNS_ADMIN, ALICE)).await;
    // The pair is recorded before the POST leaves, which then takes 3 s to answer.
    support::wait_for("the pair to be recorded", WAIT, || async {
        let obj = env.api.get("a").await.ok()?;
        obj.recorded_grant().map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.operator.kill();
    // Killed before Vultr answered: the object must not claim a verified grant.
    let obj = env.api.get("a").await.expect("get");
    let ready = ready(&obj);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Attaching")
    );
    env.sim.remove_fault(slow);

    env.operator = env.start_operator(&[], &[]);
    env.wait_ready("a", "True", "Attached").await;
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
    env.delete_and_wait_gone("a").await;
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
}

/// Ready means the grant: 503s on the listing during verification passes flip `Synced`,
/// never `Ready`, and verification passes in which nothing changed write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_verification_failures_never_flip_ready_and_quiet_passes_write_nothing() {
    let env = Env::start("pa-quiet").await;
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    env.wait_synced("a", "True", "ReconcileSuccess").await;

    // Three resync periods (3 s each in tests) with nothing to change: no write at all.
    let before = env.api.get("a").await.expect("get a");
    let passes = |logs: String| logs.matches("verification pass").count();
    let passes_before = passes(env.operator.logs());
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        passes(env.operator.logs()) >= passes_before + 2,
        "no verification ran"
    );
    let after = env.api.get("a").await.expect("get a");
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "a verification pass that changed nothing wrote status"
    );

    let listing = format!("/v2/policies/{DNS_ADMIN}/users");
    let fault = env
        .sim
        .add_fault(Fault::status(503).on(Some("GET"), Some(&listing)));
    let obj = env.wait_synced("a", "False", "ApiUnavailable").await;
    assert_eq!(ready(&obj).status, "True", "a 503 flipped Ready");
    // Stays Ready for the whole outage.
    for _ in 0..20 {
        let obj = env.api.get("a").await.expect("get a");
        assert_eq!(ready(&obj).status, "True", "a 503 flipped Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.sim.remove_fault(fault);
    env.wait_synced("a", "True", "ReconcileSuccess").await;
    assert_eq!(attach_posts(&env, DNS_ADMIN), 1);
}

/// A deletion costs no reconcile error (the deleted lane's re-run on its stale snapshot
/// finds the object gone), and leaves nothing behind in the process but the record
/// that its deletion was handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_cost_no_error_and_leave_no_per_object_state() {
    let env = Env::start("pa-deletion-errors").await;
    let pairs = FOUR_PAIRS;
    env.attach_then_delete(&pairs).await;
    // A verification pass that started after the stale re-runs (every 3 s): they are
    // done, and the per-object state is pruned.
    let after = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
        + 2.0;
    let pass_after = |after: f64| {
        let env = &env;
        support::wait_for("a verification pass", WAIT, move || async move {
            let at = env
                .operator
                .metric("vultr_iam_last_verification_timestamp_seconds", &[])
                .await?;
            (at > after).then_some(at)
        })
    };
    // The next pass after that one: the first one's pruning is over.
    let first = pass_after(after).await;
    pass_after(first).await;
    let errors = env
        .operator
        .metric("vultr_iam_reconciles_total", &["result=\"error\""])
        .await;
    assert_eq!(errors, Some(0.0), "{}", env.operator.logs());
    let tracked = env
        .operator
        .metric("vultr_iam_tracked_object_entries", &[])
        .await;
    assert_eq!(
        tracked,
        Some(pairs.len() as f64),
        "one handled-deletion record per deleted object, nothing else"
    );
}

fn subject_id(obj: &vultr_iam_operator::crd::PolicyAttachment) -> Option<String> {
    obj.status.as_ref()?.subject_id.clone()
}

/// Vultr gives a name to another object: group `ops` is renamed, a new group takes the
/// name. A PolicyAttachment for group `ops` created once the operator's directory bound
/// (--directory-max-age) has passed since is granted to the new group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_group_name_resolves_to_the_new_group() {
    let env = Env::start_with("pa-name-reuse", API_KEY, &["--directory-max-age", "2s"]).await;
    env.create("old", spec_names("group", "dns-admin", "ops"))
        .await;
    let old = env.wait_ready("old", "True", "Attached").await;
    assert_eq!(subject_id(&old).as_deref(), Some(OPS));

    assert!(env.sim.rename_group(OPS, "ops-old"));
    let new_ops = env.sim.add_group("ops");
    // Past the bound, whatever walk a resolution uses was made after the rename.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.create("new", spec_names("group", "compute-admin", "ops"))
        .await;
    let new = env.wait_ready("new", "True", "Attached").await;
    assert_eq!(
        subject_id(&new),
        Some(new_ops.clone()),
        "granted to the renamed group"
    );
    assert!(env.sim.is_group_attached(COMPUTE_ADMIN, &new_ops));
    assert!(!env.sim.is_group_attached(COMPUTE_ADMIN, OPS));
}

/// A listing that fails (503, twice) is asked again on the next try: every reconcile
/// failure comes with a failed request, and the object ends Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_listing_is_asked_again_not_served_from_a_cache() {
    // Listings kept for a minute; no verification pass in between.
    let env = Env::start_with("pa-listing-503", API_KEY, &["--resync-interval", "10m"]).await;
    let listing = format!("/v2/policies/{DNS_ADMIN}/users");
    env.sim
        .add_fault(Fault::status(503).on(Some("GET"), Some(&listing)).times(2));
    env.create("a", by_ids(DNS_ADMIN, ALICE)).await;
    let unanswered = env
        .failure_without_a_request("a", "ApiUnavailable", || {
            env.requests("GET", &listing)
                .iter()
                .filter(|e| e.path == listing && e.status == 503)
                .count()
        })
        .await;
    assert_eq!(
        unanswered, None,
        "(failures, 503s): a failure was served from a cache"
    );
    assert_eq!(env.operator.failures("ApiUnavailable").await, 2);
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
}

/// An idle operator with several policies in use: one new object costs listings of its
/// own policy only (the look before its attach, the verification after it), not one per
/// policy in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_new_object_on_an_idle_operator_costs_only_its_own_listing() {
    let flags = ["--resync-interval", "10m", "--listing-max-age", "1s"];
    let env = Env::start_with("pa-idle", API_KEY, &flags).await;
    let n = 6;
    let mut policies = Vec::new();
    for i in 0..n {
        let policy = env.sim.add_policy(&format!("idle-{i}"));
        env.create(&format!("p{i}"), by_ids(&policy, ALICE)).await;
        policies.push(policy);
    }
    for i in 0..n {
        env.wait_ready(&format!("p{i}"), "True", "Attached").await;
    }
    // Idle for longer than --listing-max-age: every listing at hand is stale.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = env.sim.journal().len();
    env.attach("new", by_ids(&policies[0], BOB)).await;
    // Whatever the new object set off has run by then.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let listings: Vec<String> = env.sim.journal()[before..]
        .iter()
        .filter(|e| e.method == "GET" && e.path.starts_with("/v2/policies/"))
        .filter(|e| e.path.ends_with("/users"))
        .map(|e| e.path.clone())
        .collect();
    let own = format!("/v2/policies/{}/users", policies[0]);
    assert!(
        listings.iter().all(|path| *path == own),
        "listings of other policies: {listings:?}"
    );
    assert!(listings.len() <= 2, "{listings:?}");
}

/// One object whose finalizer can never be added (a ValidatingAdmissionPolicy refuses
/// it) holds no other object's verification in a batch: another object is verified
/// without a batching wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_refused_its_finalizer_holds_no_verification() {
    let mut env = Env::start_with("pa-refused", API_KEY, &["--resync-interval", "10m"]).await;
    env.operator.kill();
    let name = format!("vio-refuse-finalizer-{}", env.ns.name);
    let ns = &env.ns.name;
    let policy = format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {name}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: ["iam.vultr-operator.io"]
      apiVersions: ["*"]
      operations: ["UPDATE"]
      resources: ["policyattachments"]
  validations:
  - expression: >-
      !has(object.metadata.finalizers) || object.metadata.finalizers.all(f, f != 'iam.vultr-operator.io/detach')
      || (has(oldObject.metadata.finalizers) && oldObject.metadata.finalizers.exists(f, f == 'iam.vultr-operator.io/detach'))
    message: this object may not get the operator's finalizer
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {name}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: {ns}
    objectSelector:
      matchLabels:
        vio-test/refuse-finalizer: "true"
"#
    );
    let out = with_stdin(env.cp.kubectl().args(["apply", "-f", "-"]), &policy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut refused = policy_attachment("refused", by_ids(DNS_ADMIN, ALICE));
    refused.metadata.labels = Some(
        [("vio-test/refuse-finalizer".to_owned(), "true".to_owned())]
            .into_iter()
            .collect(),
    );
    env.api
        .create(&kube::api::PostParams::default(), &refused)
        .await
        .expect("create refused");
    // The policy takes effect a moment after it is created: until a finalizer is refused.
    let finalizer = json!({"metadata": {"finalizers": ["iam.vultr-operator.io/detach"]}});
    let none = json!({"metadata": {"finalizers": null}});
    let params = kube::api::PatchParams::default();
    wait_for(
        "the admission policy to refuse the finalizer",
        WAIT,
        || async {
            let added = env
                .api
                .patch("refused", &params, &kube::api::Patch::Merge(&finalizer))
                .await;
            if added.is_err() {
                return Some(());
            }
            env.api
                .patch("refused", &params, &kube::api::Patch::Merge(&none))
                .await
                .expect("remove the probe finalizer");
            tokio::time::sleep(Duration::from_millis(200)).await;
            None
        },
    )
    .await;

    env.operator = env.start_operator(&["--resync-interval", "10m"], &[]);
    wait_for("the refused finalizer", WAIT, || async {
        (env.operator.failures("KubernetesApiError").await > 0).then_some(())
    })
    .await;
    env.attach("ok", by_ids(BILLING_READ, BOB)).await;
    assert_eq!(
        env.operator
            .metric("vultr_iam_verification_batch_waits_total", &[])
            .await,
        Some(0.0),
        "a verification waited for a batch"
    );
    assert!(
        !env.sim.is_user_attached(DNS_ADMIN, ALICE),
        "refused attaches nothing"
    );
    let _ = run_ok(env.cp.kubectl().args([
        "delete",
        "validatingadmissionpolicybinding,validatingadmissionpolicy",
        &name,
        "--ignore-not-found",
    ]));
}
