//! Operator benchmark (`make bench`): prints figures beside their goals and the bound
//! computed in the same run; asserts nothing about speed.
//!
//! On the local control plane and the simulator (rate limit 30 req/s, like Vultr): an
//! organisation of BENCH_USERS users (5,000), and BENCH_N PolicyAttachments (2,000)
//! over BENCH_P policies (20), half declared by name/email and half by IDs, created
//! before the operator starts. The minimum number of Vultr calls to converge is N POSTs
//! plus the listing pages of the P policies plus one walk of the user, group and policy
//! listings; the bound is that number divided by the rate. The peak RSS is taken after
//! growing to BENCH_RSS_N objects (5,000), all Ready.

use vio_harness::{e2e, support};

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use e2e::*;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::{ControlPlane, TestNamespace};
use vultr_iam_operator::crd::PolicyAttachment;
use vultr_sim::{Seed, SeedPolicy, SeedUser, Sim};

const RATE: f64 = 30.0;
const RESYNC: &str = "20s";
/// The operator's flags while converging: the limit of the simulator, and the default
/// resync (10 m), so no verification pass runs during convergence or a restart.
const CONVERGE_FLAGS: [&str; 8] = [
    "--vultr-rate-limit",
    "30",
    "--vultr-burst",
    "10",
    "--attach-visibility-timeout",
    "30s",
    "--resync-interval",
    "10m",
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pages(items: usize) -> usize {
    // The client's page size, so the bound counts the pages the operator reads.
    items
        .div_ceil(vultr_iam_operator::vultr::PER_PAGE as usize)
        .max(1)
}

/// The fewest calls a convergence of N attachments can make, and the time they take at
/// the simulator's rate: N POSTs, the listing pages of P policies sharing them and one
/// directory walk (users, groups and policies).
struct Bound {
    listing_pages: usize,
    walk_pages: usize,
    min_calls: usize,
    time: Duration,
}

impl Bound {
    fn of(n: usize, p: usize, users: usize, groups: usize) -> Bound {
        let listing_pages = p * pages(n.div_ceil(p));
        let walk_pages = pages(users) + pages(groups) + pages(p);
        let min_calls = n + listing_pages + walk_pages;
        Bound {
            listing_pages,
            walk_pages,
            min_calls,
            time: Duration::from_secs_f64(min_calls as f64 / RATE),
        }
    }
}

fn email(i: usize) -> String {
    format!("bench-{i}@example.com")
}

/// Field order matters for drop: the namespace goes last.
struct Bench {
    sim: Sim,
    api: Api<PolicyAttachment>,
    policies: Vec<(String, String)>,
    users: Vec<String>,
    p: usize,
    cp: &'static ControlPlane,
    ns: TestNamespace,
}

impl Bench {
    /// A namespace `prefix-...` and the simulator (30 req/s) with P policies and
    /// `users_n` users.
    async fn start(prefix: &str, p: usize, users_n: usize) -> Bench {
        let cp = ControlPlane::shared();
        install_crd(cp);
        let client = cp.client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let seed = Seed {
            policies: (0..p)
                .map(|i| SeedPolicy {
                    name: format!("bench-policy-{i}"),
                    ..Default::default()
                })
                .collect(),
            users: (0..users_n)
                .map(|i| SeedUser {
                    email: email(i),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let sim = e2e::start_sim(e2e::sim_config().seed(seed).rate_limit(RATE, 30)).await;
        let state = sim.state();
        let policies: Vec<(String, String)> = (0..p)
            .map(|i| {
                let name = format!("bench-policy-{i}");
                let id = state
                    .policies
                    .iter()
                    .find(|x| x.name == name)
                    .expect("seeded policy")
                    .id
                    .clone();
                (id, name)
            })
            .collect();
        let users: Vec<String> = (0..users_n)
            .map(|i| {
                state
                    .users
                    .iter()
                    .find(|u| u.email == email(i))
                    .expect("seeded user")
                    .id
                    .clone()
            })
            .collect();
        Bench {
            sim,
            api: Api::namespaced(client, &ns.name),
            policies,
            users,
            p,
            cp,
            ns,
        }
    }

    /// The bound of a convergence of `n` attachments.
    fn bound(&self, n: usize) -> Bound {
        let groups = self.sim.state().groups.len();
        Bound::of(n, self.p, self.users.len(), groups)
    }

    /// An operator on the benchmark's namespace with these flags.
    fn operator(&self, flags: &[&str]) -> Operator {
        Operator::start(self.cp, &self.sim.url(), API_KEY, &self.ns.name, flags)
    }

    /// The manifest of attachment `i`: user `i` gets policy `i % P`; even ones by
    /// name/email, odd ones by IDs.
    fn manifest(&self, i: usize) -> PolicyAttachment {
        let (policy_id, policy_name) = &self.policies[i % self.p];
        let spec = if i.is_multiple_of(2) {
            json!({"policy": {"name": policy_name}, "user": {"email": email(i)}})
        } else {
            by_ids(policy_id, &self.users[i])
        };
        policy_attachment(&format!("pa-{i}"), spec)
    }

    async fn create(&self, range: std::ops::Range<usize>) {
        futures::stream::iter(range)
            .map(|i| {
                let obj = self.manifest(i);
                async move {
                    self.api
                        .create(&PostParams::default(), &obj)
                        .await
                        .expect("create a PolicyAttachment")
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
    }

    async fn list(&self) -> Vec<PolicyAttachment> {
        self.api
            .list(&ListParams::default())
            .await
            .expect("list PolicyAttachments")
            .items
    }

    async fn ready_count(&self) -> usize {
        self.list().await.iter().filter(|o| is_ready(o)).count()
    }

    /// Waits until `n` objects are Ready. From a watch, not repeated LISTs of thousands
    /// of objects, which would load the API server the operator is writing to.
    async fn wait_ready_count(&self, n: usize) {
        use kube::runtime::watcher::{self, Event};
        let mut ready = std::collections::HashSet::new();
        let mut events = std::pin::pin!(watcher::watcher(
            self.api.clone(),
            watcher::Config::default()
        ));
        let deadline = Instant::now() + Duration::from_secs(1800);
        while ready.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, events.next())
                .await
                .expect("not converged after 30 minutes")
                .expect("the watch ended")
                .expect("watch PolicyAttachments");
            match event {
                Event::Init => ready.clear(),
                Event::Apply(obj) | Event::InitApply(obj) => {
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    if is_ready(&obj) {
                        ready.insert(name);
                    } else {
                        ready.remove(&name);
                    }
                }
                Event::Delete(obj) => {
                    ready.remove(&obj.metadata.name.unwrap_or_default());
                }
                Event::InitDone => {}
            }
        }
    }

    async fn resource_versions(&self) -> HashMap<String, String> {
        self.list()
            .await
            .into_iter()
            .map(|o| {
                (
                    o.metadata.name.unwrap_or_default(),
                    o.metadata.resource_version.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Deletes the given Ready objects one by one and returns, for each, the time from
    /// the delete call to the DELETE reaching Vultr.
    async fn deletion_latencies(&self, indices: &[usize]) -> Vec<Duration> {
        let mut sent = Vec::new();
        for &i in indices {
            let at = SystemTime::now();
            self.api
                .delete(&format!("pa-{i}"), &DeleteParams::default())
                .await
                .expect("delete");
            let (policy_id, _) = &self.policies[i % self.p];
            sent.push((
                at,
                format!("/v2/policies/{policy_id}/users/{}", self.users[i]),
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let journal = self.sim.journal();
            let latencies: Vec<Option<Duration>> = sent
                .iter()
                .map(|(at, path)| {
                    journal
                        .iter()
                        .find(|e| e.method == "DELETE" && &e.path == path && e.status == 204)
                        .map(|e| e.at.duration_since(*at).unwrap_or_default())
                })
                .collect();
            if latencies.iter().all(Option::is_some) || Instant::now() > deadline {
                return latencies.into_iter().flatten().collect();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Vultr calls per route template, most frequent first.
fn calls_by_route(journal: &[vultr_sim::JournalEntry]) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for entry in journal {
        *counts.entry(entry.route.clone()).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    counts
}

/// How many objects were written between two snapshots of resource versions.
fn changed(before: &HashMap<String, String>, after: &HashMap<String, String>) -> usize {
    after
        .iter()
        .filter(|(name, rv)| before.get(*name) != Some(rv))
        .count()
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Where the convergence time went, from the simulator's journal (seconds after the
/// operator started).
struct Phases {
    first_call: String,
    posts: String,
    last_call: String,
}

impl Phases {
    fn of(journal: &[vultr_sim::JournalEntry], start: SystemTime) -> Phases {
        let after = |at: SystemTime| at.duration_since(start).unwrap_or_default().as_secs_f64();
        let posts: Vec<f64> = journal
            .iter()
            .filter(|e| e.method == "POST")
            .map(|e| after(e.at))
            .collect();
        let (first_post, last_post) = (
            posts.iter().copied().fold(f64::MAX, f64::min),
            posts.iter().copied().fold(0.0, f64::max),
        );
        let calls: Vec<f64> = journal.iter().map(|e| after(e.at)).collect();
        Phases {
            first_call: format!("+{:.1} s", calls.iter().copied().fold(f64::MAX, f64::min)),
            posts: format!(
                "+{first_post:.1}..{last_post:.1} s ({:.1})",
                posts.len() as f64 / (last_post - first_post).max(0.001)
            ),
            last_call: format!("+{:.1} s", calls.iter().copied().fold(0.0, f64::max)),
        }
    }
}

/// A report: a blank line, these lines, and the head of its table.
fn heading(lines: &[String]) {
    println!();
    for line in lines {
        println!("{line}");
    }
    println!("{:<58} {:>14} {:>12}", "figure", "measured", "goal");
}

/// A row of the report's table: the figure, what was measured, the goal.
fn row(label: &str, value: String, goal: &str) {
    println!("{label:<58} {value:>14} {goal:>12}");
}

/// A row per route: the calls to it.
fn rows_by_route(by_route: &[(String, usize)]) {
    for (route, count) in by_route {
        row(&format!("  {route}"), count.to_string(), "");
    }
}

/// The first row of each report.
fn row_converged(converged: Duration) {
    let value = format!("{:.1} s", converged.as_secs_f64());
    row("time from operator start to all Ready", value, "");
}

fn rss_peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn converges_at_the_rate_limit_bound() {
    let n = env_usize("BENCH_N", 2000);
    let p = env_usize("BENCH_P", 20);
    let users_n = env_usize("BENCH_USERS", 5000).max(n + n / 2);
    let bench = Bench::start("bench", p, users_n).await;
    let Bound {
        listing_pages,
        walk_pages,
        min_calls,
        time: bound,
    } = bench.bound(n);

    let created = Instant::now();
    bench.create(0..n).await;
    let creating = created.elapsed();
    let flags = CONVERGE_FLAGS;
    bench.sim.clear_journal();
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let mut operator = bench.operator(&flags);
    bench.wait_ready_count(n).await;
    let converged = started.elapsed();
    let journal = bench.sim.journal();
    let calls = journal.len();
    let throttled = journal.iter().filter(|e| e.status == 429).count();
    let by_route = calls_by_route(&journal);
    let phases = Phases::of(&journal, started_wall);

    // A restart with N Ready: Vultr calls and Kubernetes writes in its first 60 s.
    assert!(operator.terminate(), "the operator did not stop cleanly");
    let versions = bench.resource_versions().await;
    bench.sim.clear_journal();
    let mut operator = bench.operator(&flags);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let restart_journal = bench.sim.journal();
    let restart_calls = restart_journal.len();
    let restart_routes = calls_by_route(&restart_journal);
    let restart_writes = changed(&versions, &bench.resource_versions().await);

    // Verification passes in which nothing changes (resync 20 s): Kubernetes writes.
    assert!(operator.terminate(), "the operator did not stop cleanly");
    let pass_flags: Vec<&str> = flags
        .chunks(2)
        .flat_map(|f| match f[0] {
            "--resync-interval" => ["--resync-interval", RESYNC],
            _ => [f[0], f[1]],
        })
        .collect();
    let mut operator = bench.operator(&pass_flags);
    while !operator.logs().contains("verification pass") {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let versions = bench.resource_versions().await;
    while operator.logs().matches("verification pass").count() < 3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pass_writes = changed(&versions, &bench.resource_versions().await);

    // Deletions, idle, then behind a backlog of 1,000 (N/2) fresh attaches.
    let idle: Vec<usize> = (0..20).collect();
    let idle_latency = bench.deletion_latencies(&idle).await;
    let backlog = (n / 2).min(bench.users.len() - n);
    bench.create(n..n + backlog).await;
    let busy: Vec<usize> = (20..40).collect();
    let live = n + backlog - idle.len();
    let pending_before = live - bench.ready_count().await.min(live);
    let busy_latency = bench.deletion_latencies(&busy).await;
    // Memory at the size of a large organisation: grow to BENCH_RSS_N objects (5,000)
    // and wait until they are all Ready; the kernel keeps the peak.
    let rss_n = env_usize("BENCH_RSS_N", 5000).min(bench.users.len());
    let grown = rss_n.max(n + backlog);
    bench.create(n + backlog..grown).await;
    let live = grown - idle.len() - busy.len();
    bench.wait_ready_count(live).await;
    let rss = operator.pid().and_then(rss_peak_kib);
    operator.kill();

    let ratio = converged.as_secs_f64() / bound.as_secs_f64();
    heading(&[
        format!(
            "vultr-iam-operator benchmark: N={n} attachments, P={p} policies, {users_n} \
             users, rate limit {RATE} req/s (simulator and operator)"
        ),
        format!(
            "created the {n} objects in {:.1} s before the operator started",
            creating.as_secs_f64()
        ),
        format!(
            "bound: {min_calls} calls ({n} POSTs + {listing_pages} listing pages + \
             {walk_pages} directory pages) / {RATE} req/s = {:.1} s",
            bound.as_secs_f64()
        ),
    ]);
    row_converged(converged);
    row("  ÷ the bound", format!("{ratio:.2}"), "<= 1.10");
    row("  first Vultr call", phases.first_call, "");
    row("  POSTs from .. to (POSTs/s)", phases.posts, "");
    row("  last Vultr call", phases.last_call, "");
    row(
        "Vultr calls until all Ready, per attachment",
        format!("{:.3}", calls as f64 / n as f64),
        "<= 1.10",
    );
    rows_by_route(&by_route);
    row("429s provoked", throttled.to_string(), "0");
    row(
        "Vultr calls in the first 60 s after a restart",
        restart_calls.to_string(),
        &format!("<= {}", listing_pages + walk_pages),
    );
    rows_by_route(&restart_routes);
    row(
        "Kubernetes writes in those 60 s",
        restart_writes.to_string(),
        "0",
    );
    row(
        "Kubernetes writes during 2 verification passes, no change",
        pass_writes.to_string(),
        "0",
    );
    row(
        "delete -> DELETE at Vultr, idle, p50",
        format!("{} ms", percentile(&idle_latency, 50.0).as_millis()),
        "",
    );
    row(
        "delete -> DELETE at Vultr, idle, p99",
        format!("{} ms", percentile(&idle_latency, 99.0).as_millis()),
        "<= 250 ms",
    );
    row(
        &format!("delete -> DELETE, {pending_before} attaches pending, p99"),
        format!("{} ms", percentile(&busy_latency, 99.0).as_millis()),
        "<= 2000 ms",
    );
    row(
        &format!("peak RSS of the operator (N = {grown})"),
        rss.map_or("n/a".to_owned(), |kib| {
            format!("{:.1} MiB", kib as f64 / 1024.0)
        }),
        "<= 64 MiB",
    );
    println!(
        "deletions measured: {} idle, {} busy (of 20 each)",
        idle_latency.len(),
        busy_latency.len()
    );
}

/// Resets the peak RSS the kernel keeps for `pid` (`VmHWM`), so the next reading is the
/// peak of the phase that follows.
fn reset_rss_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".to_owned(), |kib| {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    })
}

impl Bench {
    /// Deletes every object and waits until the namespace holds none.
    async fn delete_all(&self) {
        self.api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .expect("delete every PolicyAttachment");
        let deadline = Instant::now() + Duration::from_secs(1800);
        while !self.list().await.is_empty() {
            assert!(Instant::now() < deadline, "not all gone after 30 minutes");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Everything at once: BENCH_ALL_N (5,000) objects over BENCH_ALL_P (50) policies and
/// as many users, half by name/email and half by IDs, created before the operator
/// starts (default resync: no verification pass meanwhile), then deleted at once; then
/// BENCH_CYCLES (10,000) create/delete cycles in waves.
/// Prints the peak RSS of each phase, the calls per attachment, and the per-object
/// entries the process keeps before and after the cycles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn everything_at_once() {
    let n = env_usize("BENCH_ALL_N", 5000);
    let p = env_usize("BENCH_ALL_P", 50);
    let cycles = env_usize("BENCH_CYCLES", 10_000);
    let wave = env_usize("BENCH_WAVE", 500).min(n).max(1);
    let bench = Bench::start("bench-all", p, n).await;
    let Bound {
        min_calls,
        time: bound,
        ..
    } = bench.bound(n);

    bench.create(0..n).await;
    let flags = CONVERGE_FLAGS;
    bench.sim.clear_journal();
    let started = Instant::now();
    let operator = bench.operator(&flags);
    bench.wait_ready_count(n).await;
    let converged = started.elapsed();
    let journal = bench.sim.journal();
    let calls = journal.len();
    let by_route = calls_by_route(&journal);
    let pid = operator.pid().expect("the operator runs");
    let rss_converging = rss_peak_kib(pid);

    reset_rss_peak(pid);
    bench.sim.clear_journal();
    let deleting = Instant::now();
    bench.delete_all().await;
    let deleted = deleting.elapsed();
    let deletes = bench.sim.journal().len();
    let rss_deleting = rss_peak_kib(pid);

    // Create/delete cycles, in waves, with Vultr's limit lifted on both sides (a new
    // process: the limit is a flag); only the process's memory is measured here.
    drop(operator);
    bench.sim.set_rate_limit(None);
    let cycle_flags = [
        "--vultr-rate-limit",
        "1000",
        "--vultr-burst",
        "100",
        "--resync-interval",
        "5s",
    ];
    let operator = bench.operator(&cycle_flags);
    let pid = operator.pid().expect("the operator runs");
    // Two passes with no object: the baseline.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let baseline = operator
        .metric("vultr_iam_tracked_object_entries", &[])
        .await;
    reset_rss_peak(pid);
    let cycling = Instant::now();
    let mut done = 0;
    while done < cycles {
        let size = wave.min(cycles - done);
        bench.create(0..size).await;
        bench.wait_ready_count(size).await;
        bench.delete_all().await;
        done += size;
    }
    let cycled = cycling.elapsed();
    let rss_cycling = rss_peak_kib(pid);
    let peak_entries = operator
        .metric("vultr_iam_tracked_object_entries", &[])
        .await;
    // A handled deletion is kept 60 s, and the count moves at verification passes.
    tokio::time::sleep(Duration::from_secs(75)).await;
    let after = operator
        .metric("vultr_iam_tracked_object_entries", &[])
        .await;

    heading(&[format!(
        "vultr-iam-operator benchmark, everything at once: {n} attachments created before \
         the operator starts, over {p} policies and {n} users (half by name/email), rate \
         limit {RATE} req/s; then all deleted at once; then {cycles} create/delete cycles"
    )]);
    row_converged(converged);
    row(
        &format!("  ÷ the bound ({min_calls} calls / {RATE} req/s)"),
        format!("{:.2}", converged.as_secs_f64() / bound.as_secs_f64()),
        "",
    );
    row(
        "Vultr calls until all Ready, per attachment",
        format!("{:.3}", calls as f64 / n as f64),
        "<= 1.10",
    );
    rows_by_route(&by_route);
    row(
        "peak RSS while converging",
        mib(rss_converging),
        "<= 64 MiB",
    );
    row(
        &format!("all deleted at once: gone after ({deletes} Vultr calls)"),
        format!("{:.1} s", deleted.as_secs_f64()),
        "",
    );
    row("peak RSS while revoking", mib(rss_deleting), "<= 64 MiB");
    row(
        &format!("{cycles} create/delete cycles (waves of {wave})"),
        format!("{:.1} s", cycled.as_secs_f64()),
        "",
    );
    row("peak RSS during the cycles", mib(rss_cycling), "<= 64 MiB");
    let entries = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0}"));
    row(
        "per-object entries: baseline, no object",
        entries(baseline),
        "",
    );
    row("  right after the cycles", entries(peak_entries), "");
    row("  75 s after the cycles", entries(after), "= baseline");
}
