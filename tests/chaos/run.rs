//! One chaos run from start to report: control plane, simulator, replicas, workload and
//! faults; then the faults stop, the objects settle, two resync periods pass, and the
//! checker reads the end state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;
use vultr_sim::RateLimit;

use super::check::{Findings, check};
use super::cluster::Cluster;
use super::faults;
use super::model::{EndState, Kind};
use super::org::Org;
use super::replicas::{Launch, Replicas, has_flag};
use super::world::{Ledger, NsState, Shared, Sizes, World, lock};
use super::{driver, observe};

pub struct Outcome {
    pub findings: Findings,
    pub state: EndState,
    /// Where the replica logs are (kept when the run failed).
    pub dir: std::path::PathBuf,
}

pub async fn run(sizes: Sizes) -> Outcome {
    let started = Instant::now();
    eprintln!("chaos: {sizes:?}");
    let mut rng = StdRng::seed_from_u64(sizes.seed);
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("start the control plane");
    eprintln!(
        "chaos: control plane up in {:.0?} ({})",
        started.elapsed(),
        cluster.cp.dir.display()
    );
    let client = cluster.cp.client().await;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let namespaces: Vec<String> = (0..sizes.namespaces)
        .map(|i| format!("chaos-{run}-{i}"))
        .collect();
    for ns in &namespaces {
        cluster.namespace(ns, &run);
    }
    if let Err(e) = cluster.try_rbac(&namespaces) {
        panic!("{e}");
    }

    let org = Org::generate(
        &mut rng,
        sizes.policies,
        sizes.users,
        sizes.groups,
        sizes.roles,
    );
    let pool = org.pool(&mut rng, sizes.objects * 4 / 5, 0.12);
    let limit = RateLimit::default();
    let config = crate::e2e::sim_config()
        .seed(org.seed())
        .rate_limit(limit.per_second, limit.burst);
    let sim = crate::e2e::start_sim(config).await;

    let dir = crate::support::kept_dir("vio-chaos-");
    let key_file = dir.join("vultr-api-key");
    std::fs::write(&key_file, crate::e2e::API_KEY).expect("write the key file");
    let binary = crate::support::operator_binary();
    // Past the renew deadline a leader must not write; without the flag (older
    // builds) the Lease duration is the margin.
    let renew_deadline = has_flag(&binary, "--renew-deadline").then(|| sizes.lease * 2 / 3);
    let margin = renew_deadline.unwrap_or(sizes.lease);
    let launch = Launch {
        binary,
        sim_url: sim.url(),
        api_key_file: key_file.clone(),
        namespaces: namespaces.clone(),
        resync: sizes.resync,
        lease: sizes.lease,
        renew_deadline,
    };
    let replicas = Replicas::start(&cluster, launch, &dir, 2).await;

    let w: Shared = Arc::new(World {
        sizes: sizes.clone(),
        run,
        client,
        sim,
        cluster,
        org,
        pool,
        replicas: Mutex::new(replicas),
        ledger: Mutex::new(Ledger::default()),
        namespaces: Mutex::new(
            namespaces
                .iter()
                .map(|n| NsState {
                    name: n.clone(),
                    usable: true,
                })
                .collect(),
        ),
        tally: Mutex::default(),
        notes: Mutex::default(),
        foreign: Mutex::default(),
        lease: Mutex::default(),
        key_file,
        keys: Mutex::new(vec![crate::e2e::API_KEY.to_owned()]),
        replaced: Mutex::default(),
    });

    let stop = CancellationToken::new();
    let watcher = tokio::spawn(observe::watch(w.clone(), stop.clone()));
    let supervisor = {
        let (w, stop) = (w.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                lock(&w.replicas).supervise();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let mut counter = 0;
    driver::populate(&w, &mut rng, &mut counter, sizes.objects).await;
    eprintln!(
        "chaos: {} objects created at {:.0?}; chaos for {:?}",
        lock(&w.ledger).ops.creates,
        started.elapsed(),
        sizes.chaos
    );

    // ---- chaos ----------------------------------------------------------------------
    let chaos_start = Instant::now();
    let until = chaos_start + sizes.chaos;
    faults::background(&w);
    let plan = faults::plan(&sizes, &mut rng);
    let steps: Vec<_> = plan
        .into_iter()
        .map(|(at, step)| {
            let w = w.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until((chaos_start + at).into()).await;
                w.note(format!("+{:.1}s {step:?}", at.as_secs_f64()));
                faults::run_step(w, step).await;
            })
        })
        .collect();
    let churn = tokio::spawn(driver::churn(
        w.clone(),
        StdRng::seed_from_u64(sizes.seed ^ 1),
        counter,
        sizes.objects,
        Duration::from_millis(400),
        until,
    ));
    let oob = tokio::spawn(driver::out_of_band(
        w.clone(),
        StdRng::seed_from_u64(sizes.seed ^ 2),
        Duration::from_secs(2),
        until,
    ));
    let _ = churn.await;
    let _ = oob.await;
    for s in steps {
        let _ = s.await;
    }

    // ---- settle and check -----------------------------------------------------------
    w.sim.clear_faults();
    lock(&w.replicas).heal();
    let quiet = Instant::now();
    eprintln!(
        "chaos: faults stopped at {:.0?}; settling (at most {:?})",
        started.elapsed(),
        sizes.settle
    );
    match observe::settle(&w, sizes.settle).await {
        Some(d) => w.note(format!(
            "settled {:.1}s after the faults stopped",
            d.as_secs_f64()
        )),
        None => w.note(format!(
            "did NOT settle within {}s after the faults stopped",
            sizes.settle.as_secs()
        )),
    }
    tokio::time::sleep(sizes.resync * 2).await;
    let mut state = observe::end_state(&w, margin).await;
    // The mix must keep covering role grants (role-first routes, per-role listings).
    let kinds = |k: Kind| state.declared.iter().filter(|d| d.pair.kind == k).count();
    eprintln!(
        "chaos: declared {} user, {} group, {} role objects; {} role grants in Vultr at the end",
        kinds(Kind::User),
        kinds(Kind::Group),
        kinds(Kind::Role),
        state
            .attached
            .iter()
            .filter(|p| p.kind == Kind::Role)
            .count()
    );
    stop.cancel();
    let _ = watcher.await;
    let _ = supervisor.await;
    state.stops = tokio::task::block_in_place(|| lock(&w.replicas).stop());
    let findings = check(&state);
    w.cluster.keep_logs(&dir);
    let text = report(&w, &state, &findings, started, quiet);
    eprint!("{text}");
    let _ = std::fs::write(dir.join("chaos-report.txt"), &text);
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{}.txt", sizes.name)),
        &text,
    );
    Outcome {
        findings,
        state,
        dir,
    }
}

fn report(w: &Shared, state: &EndState, f: &Findings, started: Instant, quiet: Instant) -> String {
    let l = lock(&w.ledger);
    let journal = w.sim.journal();
    let calls = journal.len();
    let status = |s: u16| journal.iter().filter(|e| e.status == s).count();
    let fives = journal.iter().filter(|e| e.status >= 500).count();
    let hung = status(0);
    let revocations = journal
        .iter()
        .filter(|e| e.method == "DELETE" && (200..300).contains(&e.status))
        .count();
    let attaches = journal
        .iter()
        .filter(|e| e.method == "POST" && (200..300).contains(&e.status))
        .count();
    let deleted: Vec<_> = l
        .declared
        .iter()
        .filter(|d| !d.orphan && d.delete_requested.is_some())
        .collect();
    let mut waits: Vec<(Duration, String)> = deleted
        .iter()
        .filter_map(|d| {
            let wait = d.gone_at?.duration_since(d.delete_requested?).ok()?;
            Some((wait, d.key()))
        })
        .collect();
    waits.sort();
    let (longest, longest_key) = waits.last().cloned().unwrap_or_default();
    let quantile = |q: f64| {
        waits
            .get(((waits.len() as f64 * q) as usize).min(waits.len().saturating_sub(1)))
            .map(|(d, _)| d.as_secs_f64())
            .unwrap_or_default()
    };
    // Deleted objects still present: Terminating (stuck), or never deleted at all (the
    // DELETE call itself failed, e.g. while kube-apiserver was down).
    let present: std::collections::HashMap<String, bool> = state
        .present
        .iter()
        .map(|o| (o.key(), o.terminating))
        .collect();
    let pending = deleted
        .iter()
        .filter(|d| present.get(&d.key()) == Some(&true))
        .count();
    let not_deleted = deleted
        .iter()
        .filter(|d| present.get(&d.key()) == Some(&false))
        .count();
    let r = lock(&w.replicas);
    let tally = lock(&w.tally);
    let faults: usize = tally.values().sum();
    let sizes = &w.sizes;

    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "==== chaos run ({}, seed {}) in {:.0?}, settled/checked {:.0?} after the faults stopped",
        sizes.name,
        sizes.seed,
        started.elapsed(),
        quiet.elapsed()
    ));
    line(format!(
        "objects: {} created ({} declared incl. failed creates) in {} namespaces, {} live at the end; {} distinct pairs",
        l.ops.creates,
        l.declared.len(),
        sizes.namespaces,
        f.live,
        w.pool.len()
    ));
    line(format!(
        "operations: {} creates, {} deletes, {} renames, {} namespace deletions, {} failed calls",
        l.ops.creates, l.ops.deletes, l.ops.renames, l.ops.namespace_deletions, l.ops.failed
    ));
    line(format!("faults injected: {faults}"));
    for (k, n) in tally.iter() {
        line(format!("  {n:>4} x {k}"));
    }
    line(format!(
        "replicas: {} starts, {} SIGKILLs, {} exits on their own",
        r.stats.starts,
        r.stats.kills,
        r.stats.exits.len()
    ));
    for e in &r.stats.exits {
        line(format!("  {e}"));
    }
    line(format!(
        "vultr calls: {calls} ({attaches} attaches, {revocations} revocations, {} 429s, {fives} 5xx, {hung} hung/dropped)",
        status(429)
    ));
    line(format!(
        "revocations: {} objects deleted (Delete policy, {not_deleted} of those DELETE calls never took effect); pending until gone: median {:.1}s, p95 {:.1}s, longest {:.1}s ({longest_key}); still pending at the end {pending}",
        deleted.len() - not_deleted,
        quantile(0.5),
        quantile(0.95),
        longest.as_secs_f64()
    ));
    line(format!(
        "lease: {} samples, {} tenures; writes checked {}, unattributed (no User-Agent) {}",
        state.lease.len(),
        super::check::tenures(&state.lease).len(),
        state.writes.len() - f.unattributed_writes,
        f.unattributed_writes
    ));
    for n in lock(&w.notes).iter() {
        line(format!("note: {n}"));
    }
    line(format!(
        "live objects without their grant: {}",
        f.missing_grants.len()
    ));
    line(format!(
        "live objects not Ready=True: {}",
        f.not_ready.len()
    ));
    line(format!("lost revocations: {}", f.lost_revocations.len()));
    line(format!("objects stuck Terminating: {}", f.stuck.len()));
    line(format!(
        "foreign grants removed: {}",
        f.foreign_removed.len()
    ));
    line(format!(
        "name reuse: {} live objects resolved the reused name to the new object; grants written to the old one: {}",
        f.reuse_resolved,
        f.replaced_grants.len()
    ));
    line(format!(
        "Vultr requests refused 401 (a key used after its removal): {}",
        f.refused.len()
    ));
    line(format!("panics: {}", f.panics.len()));
    line(format!(
        "Vultr writes without the Lease: {}",
        f.unleased_writes.len()
    ));
    let slowest = state.stops.iter().filter_map(|s| s.after).max();
    line(format!(
        "replicas not stopped cleanly within 5 s of SIGTERM: {} (of {}, slowest {})",
        f.slow_stops.len(),
        state.stops.len(),
        slowest.map_or("-".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()))
    ));
    line(format!(
        "API key occurrences: {} (in {} logs, {} other texts)",
        f.key_leaks.iter().map(|(_, n)| n).sum::<usize>(),
        state.logs.len(),
        state.texts.len()
    ));
    for v in f.violations() {
        line(format!("VIOLATION {v}"));
    }
    for p in f.lost_revocations.iter().take(10) {
        line(format!("  lost: {p}"));
    }
    for s in f.stuck.iter().take(10) {
        line(format!("  stuck: {s}"));
    }
    for s in &f.slow_stops {
        line(format!("  not stopped: {s}"));
    }
    for s in f.replaced_grants.iter().chain(&f.refused).take(10) {
        line(format!("  request: {s}"));
    }
    for s in f.unleased_writes.iter().take(10) {
        line(format!("  unleased: {s}"));
    }
    for s in f.missing_grants.iter().chain(&f.not_ready).take(10) {
        line(format!("  live: {s}"));
    }
    out
}
