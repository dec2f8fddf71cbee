//! Operator benchmark (`make bench`): prints figures, asserts nothing about speed.
//!
//! Two populations of N PolicyAttachments run side by side against one simulator, each
//! with its own operator: "shared" attaches N users to 1 policy, "spread" attaches N
//! users to N policies. For each it reports the time until all are Ready, Vultr requests
//! per attachment, the listings one verification pass costs, and the time until all
//! deletions are revoked. The ratio of listings per pass shows that verification cost
//! follows policies, not attachments.

mod e2e;
mod support;

use std::time::{Duration, Instant};

use e2e::*;
use serde_json::json;
use support::wait_for;

const RESYNC: Duration = Duration::from_secs(5);

struct Figures {
    ready: Duration,
    requests_to_ready: usize,
    listings_per_pass: f64,
    revoked: Duration,
}

async fn population(env: &Env, n: usize, policies: usize) -> Figures {
    let policy_ids: Vec<String> = (0..policies)
        .map(|i| env.sim.add_policy(&format!("bench-policy-{i}")))
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("pa-{i}")).collect();
    env.sim.clear_journal();
    let start = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let user = env.sim.add_user(&format!("bench-{i}@example.com"));
        let policy = &policy_ids[i % policies];
        env.create(
            name,
            json!({"policy": {"id": policy}, "user": {"id": user}}),
        )
        .await;
    }
    wait_for("all Ready", Duration::from_secs(600), || async {
        let list = env.api.list(&Default::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|o| {
                o.status
                    .as_ref()
                    .and_then(|s| s.condition("Ready"))
                    .is_some_and(|c| c.status == "True")
            })
            .count();
        (ready == n).then_some(())
    })
    .await;
    let ready = start.elapsed();
    let requests_to_ready = env.sim.journal().len();

    // Count listings over three resync periods, and divide by the passes seen.
    env.sim.clear_journal();
    tokio::time::sleep(RESYNC * 3).await;
    let listings = env
        .sim
        .journal()
        .iter()
        .filter(|e| e.route == "GET /v2/policies/{policy_id}/users")
        .count();
    let listings_per_pass = listings as f64 / 3.0;

    let start = Instant::now();
    for name in &names {
        env.delete(name).await;
    }
    wait_for("all revoked", Duration::from_secs(600), || async {
        let list = env.api.list(&Default::default()).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    Figures {
        ready,
        requests_to_ready,
        listings_per_pass,
        revoked: start.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn verification_cost_follows_policies_not_attachments() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let flags = [
        "--resync-interval",
        "5s",
        "--vultr-rate-limit",
        "25",
        "--vultr-burst",
        "25",
    ];
    let shared_env = Env::start_with("bench-shared", API_KEY, &flags).await;
    let spread_env = Env::start_with("bench-spread", API_KEY, &flags).await;
    // Side by side: both populations load the machine at the same time.
    let (shared, spread) =
        tokio::join!(population(&shared_env, n, 1), population(&spread_env, n, n));
    println!(
        "\nvultr-iam-operator benchmark: N={n} attachments per population, resync 5s, limiter 25 req/s"
    );
    println!(
        "{:<38} {:>14} {:>14}",
        "",
        "1 policy",
        format!("{n} policies")
    );
    let row = |label: &str, a: String, b: String| println!("{label:<38} {a:>14} {b:>14}");
    row(
        "time until all Ready",
        format!("{:.1} s", shared.ready.as_secs_f64()),
        format!("{:.1} s", spread.ready.as_secs_f64()),
    );
    row(
        "Vultr requests until all Ready",
        shared.requests_to_ready.to_string(),
        spread.requests_to_ready.to_string(),
    );
    row(
        "  per attachment",
        format!("{:.2}", shared.requests_to_ready as f64 / n as f64),
        format!("{:.2}", spread.requests_to_ready as f64 / n as f64),
    );
    row(
        "listings per verification pass",
        format!("{:.1}", shared.listings_per_pass),
        format!("{:.1}", spread.listings_per_pass),
    );
    row(
        "time until all revoked",
        format!("{:.1} s", shared.revoked.as_secs_f64()),
        format!("{:.1} s", spread.revoked.as_secs_f64()),
    );
    if shared.listings_per_pass > 0.0 {
        println!(
            "ratio of listings per pass (N policies / 1 policy): {:.1}x",
            spread.listings_per_pass / shared.listings_per_pass
        );
    }
}
