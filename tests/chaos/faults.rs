//! The faults: a seeded timeline of steps (pure, so a seed always gives the same run)
//! and what each step does to the simulator, the replicas or the control plane.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use rand::RngExt;
use rand::rngs::StdRng;
use vultr_sim::{ApiKeys, Fault, FaultKind, key_fingerprint};

use super::cluster::SYSTEM_NS;
use super::replicas::LEASE;
use super::world::{Shared, Sizes, lock};

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// 429 with Retry-After on most requests for a few seconds.
    Storm,
    /// Every request 503 for this long.
    Outage(Duration),
    /// A share of requests never answered (past the client timeout) for a while.
    Hangs,
    /// SIGKILL the current leader (the supervisor restarts it).
    KillLeader,
    /// Stop and start kube-apiserver (etcd kept).
    RestartApiserver,
    /// Cut the leader from the API server; it must exit; restore, restart it.
    Partition,
    /// Delete a watched namespace (re-created once gone).
    DeleteNamespace,
    /// Vultr holds 30% of writes 1.5 s (under the replicas' 2 s client timeout) before
    /// applying them, for 10 s around the partition: a cut leader's write lands late.
    LateWrites,
    /// The live lane's watch lags the deleted lane's by 3 s, for 15% of the chaos
    /// phase (20 s at most).
    LiveWatchLag,
    /// A `/v2` detach stays in Vultr's listings 1.5 s after the pair is gone, for 60%
    /// of the phase: renames (delete a, create b for one pair) run under it.
    DetachLag,
    /// A group renamed in Vultr and a new one created under its name, with objects
    /// naming it before and after (see `driver::reuse_name`).
    NameReuse,
    /// A new API key in Vultr and in the replicas' key file; the old one is removed
    /// once every replica uses the new one.
    RotateKey,
}

/// How long the detach lag keeps a detached pair in listings.
const DETACH_LAG: Duration = Duration::from_millis(1500);
/// How long no request may have used the old key before it is removed: longer than a
/// request can stay in flight (the replicas' 2 s client timeout).
const KEY_DRAIN: Duration = Duration::from_secs(4);
/// The longest wait for the replicas to take the new key (they re-read the file every
/// 5 s); past it the old key is removed anyway, and any use of it shows as a 401.
const KEY_SWITCH: Duration = Duration::from_secs(30);

/// The timeline of a run: each step at an offset into the chaos phase.
pub fn plan(sizes: &Sizes, rng: &mut StdRng) -> Vec<(Duration, Step)> {
    let t = sizes.chaos.as_secs_f64();
    let mut at = |lo: f64, hi: f64| Duration::from_secs_f64(t * rng.random_range(lo..hi));
    let mut steps = vec![
        (at(0.25, 0.30), Step::Outage(sizes.outage)),
        (at(0.40, 0.45), Step::DeleteNamespace),
        (at(0.55, 0.60), Step::RestartApiserver),
        (at(0.70, 0.75), Step::Partition),
        (at(0.68, 0.70), Step::LateWrites),
        (at(0.10, 0.20), Step::LiveWatchLag),
        (at(0.80, 0.85), Step::LiveWatchLag),
        (at(0.05, 0.10), Step::DetachLag),
        (at(0.12, 0.20), Step::RotateKey),
        (at(0.15, 0.20), Step::NameReuse),
    ];
    // One kill per equal slice of the phase, so each one hits a different leader
    // (a hand-over takes a Lease duration).
    let slice = 0.9 / sizes.kills.max(1) as f64;
    for i in 0..sizes.kills {
        let lo = 0.05 + slice * i as f64;
        steps.push((at(lo, lo + slice), Step::KillLeader));
    }
    for _ in 0..sizes.storms {
        steps.push((at(0.05, 0.9), Step::Storm));
    }
    for _ in 0..sizes.hangs {
        steps.push((at(0.05, 0.9), Step::Hangs));
    }
    steps.sort_by_key(|(d, _)| *d);
    steps
}

/// 5xx on about 30% of every Vultr request, for the whole chaos phase.
pub fn background(w: &Shared) {
    for status in [500, 502, 503] {
        w.sim
            .add_fault(Fault::status(status).with_probability(0.12));
    }
    w.count("background 5xx (30% of requests)");
}

/// The Lease holder, if it is a running replica; waits up to three Lease durations
/// for one (a hand-over may be in progress, the API server may be down).
pub async fn leader(w: &Shared) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(w.client.clone(), SYSTEM_NS);
    let deadline = Instant::now() + w.sizes.lease * 3;
    while Instant::now() < deadline {
        if let Ok(Ok(Some(lease))) =
            tokio::time::timeout(Duration::from_secs(3), api.get_opt(LEASE)).await
            && let Some(h) = lease.spec.and_then(|s| s.holder_identity)
            && !h.is_empty()
            && lock(&w.replicas).current().contains(&h)
        {
            return Some(h);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

pub async fn run_step(w: Shared, step: Step) {
    match step {
        Step::Storm => {
            w.sim.add_fault(
                Fault::new(FaultKind::Status {
                    status: 429,
                    retry_after: Some(1),
                })
                .with_probability(0.8)
                .for_duration(Duration::from_secs(5)),
            );
            w.count("429 storm (5s, 80%)");
        }
        Step::Outage(d) => {
            w.sim.add_fault(Fault::status(503).for_duration(d));
            w.count(&format!("outage ({}s)", d.as_secs()));
        }
        Step::Hangs => {
            w.sim.add_fault(
                Fault::new(FaultKind::Hang)
                    .with_probability(0.3)
                    .for_duration(Duration::from_secs(8)),
            );
            w.count("hangs past the client timeout (8s, 30%)");
        }
        Step::KillLeader => match leader(&w).await {
            Some(h) if lock(&w.replicas).kill(&h) => w.count("SIGKILL of the leader"),
            _ => w.note("no leader to kill".into()),
        },
        Step::RestartApiserver => {
            let world = w.clone();
            let result = tokio::task::spawn_blocking(move || {
                world.cluster.restart_apiserver(Duration::from_secs(2))
            })
            .await;
            match result {
                Ok(Ok(d)) => {
                    w.count("kube-apiserver restart");
                    w.note(format!(
                        "kube-apiserver down and back in {:.1}s",
                        d.as_secs_f64()
                    ));
                }
                other => w.note(format!("kube-apiserver restart failed: {other:?}")),
            }
        }
        Step::Partition => partition(&w).await,
        Step::LateWrites => {
            for method in ["POST", "DELETE"] {
                w.sim.add_fault(
                    Fault::new(FaultKind::Hold { ms: 1500 })
                        .on(Some(method), None)
                        .with_probability(0.3)
                        .for_duration(Duration::from_secs(10)),
                );
            }
            w.count("late-applied writes (1.5s hold, 30% of writes, 10s)");
        }
        Step::LiveWatchLag => {
            let span = w.sizes.chaos.mul_f64(0.15).min(Duration::from_secs(20));
            lock(&w.replicas).lag_live_watches(Duration::from_secs(3));
            w.count("live-lane watch lag (3s)");
            tokio::time::sleep(span).await;
            lock(&w.replicas).lag_live_watches(Duration::ZERO);
        }
        Step::DetachLag => {
            let span = w.sizes.chaos.mul_f64(0.6);
            let lag = |detach_lag| vultr_sim::Behaviour {
                detach_lag,
                ..w.sim.behaviour()
            };
            w.sim.set_behaviour(lag(DETACH_LAG));
            w.count("detach lag (1.5s, 60% of the phase)");
            tokio::time::sleep(span).await;
            w.sim.set_behaviour(lag(Duration::ZERO));
        }
        Step::NameReuse => super::driver::reuse_name(&w).await,
        Step::RotateKey => rotate_key(&w).await,
        Step::DeleteNamespace => {
            let ns = {
                let all = lock(&w.namespaces);
                all.last().map(|n| n.name.clone())
            };
            if let Some(ns) = ns {
                // Scheduled at ~40% of the chaos phase: done waiting before it ends.
                let wait = w.sizes.chaos / 2;
                super::driver::delete_namespace(&w, &ns, wait).await;
            }
        }
    }
}

/// Rotates the API key as an operator of the product would: the new key is accepted by
/// Vultr, then written to the key file (a temporary file renamed over it, as a Secret
/// volume swaps atomically); once every replica reports the new key and no request has
/// used the old one for [`KEY_DRAIN`], the old key is removed. The keys are never shown.
async fn rotate_key(w: &Shared) {
    let old = lock(&w.keys).last().cloned().unwrap_or_default();
    let new = format!("vk-ROTATED-{}", uuid::Uuid::new_v4().simple());
    let keys = |api_keys: Vec<String>| ApiKeys {
        api_keys,
        read_only_keys: Vec::new(),
    };
    if let Err(e) = w.sim.set_api_keys(keys(vec![old.clone(), new.clone()])) {
        w.note(format!(
            "key rotation: the simulator refused the new key: {e}"
        ));
        return;
    }
    lock(&w.keys).push(new.clone());
    let tmp = w.key_file.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, &new).and_then(|()| std::fs::rename(&tmp, &w.key_file)) {
        w.note(format!(
            "key rotation: the key file could not be replaced: {e}"
        ));
        return;
    }
    let (written, written_at) = (Instant::now(), SystemTime::now());
    let (old_fp, new_fp) = (key_fingerprint(&old), key_fingerprint(&new));
    let mut waiting = Vec::new();
    while written.elapsed() < KEY_SWITCH {
        let journal = w.sim.journal();
        let used = journal
            .iter()
            .any(|e| e.at >= written_at && e.key_fingerprint == new_fp);
        let drained = journal
            .iter()
            .filter(|e| e.key_fingerprint == old_fp)
            .all(|e| e.at + KEY_DRAIN <= SystemTime::now());
        waiting = lock(&w.replicas).on_old_key(written);
        if used && drained && waiting.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !waiting.is_empty() {
        w.note(format!(
            "key rotation: {waiting:?} did not report the new key within {}s",
            KEY_SWITCH.as_secs()
        ));
    }
    if let Err(e) = w.sim.set_api_keys(keys(vec![new])) {
        w.note(format!(
            "key rotation: the old key could not be removed: {e}"
        ));
        return;
    }
    w.count("key rotation (key file swapped, old key removed)");
    w.note(format!(
        "key rotation: old key removed {:.1}s after the key file changed",
        written.elapsed().as_secs_f64()
    ));
}

/// Cuts the leader's connection to the API server (it still reaches Vultr), waits for
/// it to exit (its lease can no longer be renewed), then restores the link.
async fn partition(w: &Shared) {
    let Some(h) = leader(w).await else {
        w.note("no leader to partition".into());
        return;
    };
    if !lock(&w.replicas).partition(&h) {
        return;
    }
    w.count("partition of the leader from the API server");
    let started = Instant::now();
    let limit = w.sizes.lease * 4 + Duration::from_secs(10);
    while started.elapsed() < limit && lock(&w.replicas).running(&h) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if lock(&w.replicas).running(&h) {
        w.note(format!(
            "partitioned leader {h} still running {}s after the cut: killed",
            limit.as_secs()
        ));
        lock(&w.replicas).kill(&h);
    } else {
        w.note(format!(
            "partitioned leader {h} exited {:.1}s after the cut",
            started.elapsed().as_secs_f64()
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    lock(&w.replicas).heal();
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn the_plan_has_every_fault_inside_the_chaos_phase() {
        let sizes = Sizes::long();
        let steps = plan(&sizes, &mut StdRng::seed_from_u64(1));
        let count = |f: fn(&Step) -> bool| steps.iter().filter(|(_, s)| f(s)).count();
        assert_eq!(count(|s| *s == Step::KillLeader), 10);
        assert_eq!(count(|s| *s == Step::Partition), 1);
        assert_eq!(count(|s| *s == Step::RestartApiserver), 1);
        assert_eq!(count(|s| *s == Step::DeleteNamespace), 1);
        assert_eq!(count(|s| matches!(s, Step::Outage(_))), 1);
        assert_eq!(count(|s| *s == Step::LiveWatchLag), 2);
        assert_eq!(count(|s| *s == Step::LateWrites), 1);
        assert_eq!(count(|s| *s == Step::DetachLag), 1);
        assert_eq!(count(|s| *s == Step::NameReuse), 1);
        assert_eq!(count(|s| *s == Step::RotateKey), 1);
        assert!(steps.iter().all(|(d, _)| *d < sizes.chaos));
        assert!(steps.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(steps, plan(&sizes, &mut StdRng::seed_from_u64(1)));
    }
}
