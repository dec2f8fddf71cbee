//! Fault injection and the rate limiter.

use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::Method;
use vultr_sim::{Fault, FaultKind, RateLimit, Sim};

fn statuses(sim: &Sim) -> Vec<u16> {
    sim.journal().iter().map(|e| e.status).collect()
}

#[tokio::test]
async fn status_fault_for_n_requests_then_normal() {
    let sim = demo_sim().await;
    sim.add_fault(
        Fault::status(503)
            .on(Some("GET"), Some("/v2/policies"))
            .times(2),
    );
    get(&sim, "/v2/policies").await.assert_error(503);
    get(&sim, &format!("/v2/policies/{DNS_ADMIN}"))
        .await
        .assert_error(503);
    assert_eq!(get(&sim, "/v2/policies").await.status, 200);
    assert_eq!(
        statuses(&sim),
        [503, 503, 200],
        "faulted requests are journaled"
    );
}

#[tokio::test]
async fn status_fault_matches_method_and_prefix_and_sends_retry_after() {
    let sim = demo_sim().await;
    let users = format!("/v2/policies/{DNS_ADMIN}/users");
    sim.add_fault(
        Fault::new(FaultKind::Status {
            status: 429,
            retry_after: Some(7),
        })
        .on(Some("post"), Some(&users)),
    );
    // Other methods and paths are untouched.
    assert_eq!(get(&sim, &users).await.status, 200);
    assert_eq!(get(&sim, "/v2/users").await.status, 200);
    let pair = format!("{users}/{ALICE}");
    let r = v2(&sim, Method::POST, &pair).await;
    r.assert_error(429);
    assert_eq!(r.headers["retry-after"], "7");
    assert!(
        !sim.is_user_attached(DNS_ADMIN, ALICE),
        "a faulted request changes nothing"
    );
    let r = v2(
        &sim,
        Method::POST,
        &format!("/v2/policies/{BILLING_READ}/users/{ALICE}"),
    )
    .await;
    assert_eq!(r.status, 201, "different path");
    sim.clear_faults();
    assert_eq!(v2(&sim, Method::POST, &pair).await.status, 201);
}

#[tokio::test]
async fn probability_one_always_and_zero_never() {
    let sim = demo_sim().await;
    let id = sim.add_fault(Fault::status(500).with_probability(1.0));
    for _ in 0..5 {
        get(&sim, "/v2/users").await.assert_error(500);
    }
    assert!(sim.remove_fault(id));
    sim.add_fault(Fault::status(500).with_probability(0.0));
    for _ in 0..5 {
        assert_eq!(get(&sim, "/v2/users").await.status, 200);
    }
}

#[tokio::test]
async fn fractional_probability_breaks_some_requests() {
    let sim = demo_sim().await;
    sim.add_fault(Fault::status(502).with_probability(0.5));
    let mut failed = 0;
    for _ in 0..60 {
        if get(&sim, "/v2/groups").await.status == 502 {
            failed += 1;
        }
    }
    // Binomial(60, 0.5): outside 10..=50 has probability below 1e-7.
    assert!((10..=50).contains(&failed), "{failed} of 60 failed");
}

#[tokio::test]
async fn latency_fault_delays_then_answers() {
    let sim = demo_sim().await;
    sim.add_fault(Fault::new(FaultKind::Latency { ms: 300 }).times(1));
    let started = Instant::now();
    let r = get(&sim, "/v2/policies").await;
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["policies"].as_array().unwrap().len(), 3);
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    let journal = sim.journal();
    assert!(journal[0].latency_ms >= 300.0, "{journal:?}");
    let started = Instant::now();
    assert_eq!(get(&sim, "/v2/policies").await.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "fault used up"
    );
}

#[tokio::test]
async fn hang_fault_makes_the_client_time_out() {
    let sim = demo_sim().await;
    sim.add_fault(Fault::new(FaultKind::Hang).times(1));
    let c = client_with_timeout(Duration::from_millis(500));
    let url = format!("{}/v2/policies", sim.url());
    let started = Instant::now();
    let err = send(&c, Method::GET, &url, Some(KEY), None)
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(statuses(&sim), [0], "journaled without a status");
    // The next request is answered.
    let r = send(&c, Method::GET, &url, Some(KEY), None).await.unwrap();
    assert_eq!(r.status, 200);
}

/// A held write is applied after the hold even though the client gave up long before:
/// what Vultr received, it carries out.
#[tokio::test]
async fn hold_fault_applies_the_write_after_the_client_gave_up() {
    let sim = demo_sim().await;
    let pair = format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}");
    sim.add_fault(
        Fault::new(FaultKind::Hold { ms: 800 })
            .on(Some("POST"), Some(&pair))
            .times(1),
    );
    let c = client_with_timeout(Duration::from_millis(100));
    let url = format!("{}{pair}", sim.url());
    let err = send(&c, Method::POST, &url, Some(KEY), None)
        .await
        .expect_err("held past the client's timeout");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(sim.held_requests(), 1, "received and held");
    assert!(!sim.is_user_attached(DNS_ADMIN, ALICE), "not yet applied");
    let applied = async {
        while sim.held_requests() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), applied)
        .await
        .expect("the hold ends");
    assert!(sim.is_user_attached(DNS_ADMIN, ALICE), "applied late");
    let journal = sim.journal();
    assert_eq!(statuses(&sim), [201], "journaled once, when applied");
    assert!(journal[0].latency_ms >= 800.0, "{journal:?}");
}

#[tokio::test]
async fn drop_fault_closes_the_connection() {
    let sim = demo_sim().await;
    sim.add_fault(
        Fault::new(FaultKind::Drop)
            .on(Some("DELETE"), None)
            .times(1),
    );
    let c = client();
    let url = format!("{}/v2/policies/{COMPUTE_ADMIN}/users/{CAROL}", sim.url());
    let started = Instant::now();
    let err = send(&c, Method::DELETE, &url, Some(KEY), None)
        .await
        .expect_err("connection dropped");
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none() && err.is_request(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "dropped, not hung"
    );
    assert!(
        sim.is_user_attached(COMPUTE_ADMIN, CAROL),
        "not carried out"
    );
    assert_eq!(statuses(&sim), [0]);
    // A retry gets through on a fresh connection.
    let r = send(&c, Method::DELETE, &url, Some(KEY), None)
        .await
        .unwrap();
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn outage_window_ends_by_itself() {
    let sim = demo_sim().await;
    sim.add_fault(Fault::status(503).for_duration(Duration::from_millis(600)));
    get(&sim, "/v2/users").await.assert_error(503);
    get(&sim, "/v2/policies").await.assert_error(503);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(&sim, "/v2/users").await.status, 200);
}

#[tokio::test]
async fn burst_gets_429_then_recovers_after_retry_after() {
    let sim = demo_config().rate_limit(5.0, 5).start().await.unwrap();
    let c = client();
    let url = format!("{}/v2/policies", sim.url());
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { send(&c, Method::GET, &url, Some(KEY), None).await })
        })
        .collect();
    let mut responses = Vec::new();
    for h in handles {
        responses.push(h.await.unwrap().unwrap());
    }
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&Resp> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok + limited.len(), 20);
    // 5 from the burst, plus whatever refilled while the 20 were in flight.
    assert!((5..=10).contains(&ok), "{ok} succeeded");
    let mut wait = 0;
    for r in &limited {
        r.assert_error(429);
        let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(secs >= 1, "Retry-After {secs}");
        wait = wait.max(secs);
    }
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = send(&c, Method::GET, &url, Some(KEY), None).await.unwrap();
    assert_eq!(r.status, 200, "recovered after Retry-After");
    assert_eq!(
        sim.journal().iter().filter(|e| e.status == 429).count(),
        limited.len()
    );
}

#[tokio::test]
async fn rate_limit_is_switchable_and_spares_the_admin_api() {
    let sim = demo_sim().await;
    assert_eq!(sim.rate_limit(), None);
    // One token, then one every 5 s: the next requests are surely limited.
    sim.set_rate_limit(Some(RateLimit {
        per_second: 0.2,
        burst: 1,
    }));
    assert_eq!(get(&sim, "/v2/users").await.status, 200);
    get(&sim, "/v2/users").await.assert_error(429);
    // Unauthenticated requests are limited too: the bucket is checked first.
    let r = anonymous(&sim, Method::GET, "/v2/users").await;
    r.assert_error(429);
    for _ in 0..10 {
        assert_eq!(admin_status(&sim, Method::GET, "/_sim/state").await, 200);
    }
    sim.set_rate_limit(None);
    for _ in 0..10 {
        assert_eq!(get(&sim, "/v2/users").await.status, 200);
    }
    assert_eq!(sim.journal().len(), 13, "admin calls are not journaled");
}
