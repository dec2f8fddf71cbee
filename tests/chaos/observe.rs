//! What the run watches: the Lease holder (twice a second, for the holder intervals),
//! when each deleted object disappeared, and the end state the checker reads.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use tokio_util::sync::CancellationToken;
use vultr_iam_operator::crd::{PolicyAttachment, READY};

use super::cluster::SYSTEM_NS;
use super::model::{Captured, EndState, Kind, LeaseSample, Observed, Pair, Write};
use super::replicas::LEASE;
use super::world::{Shared, lock};

const CALL: Duration = Duration::from_secs(5);

fn to_system(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime) -> SystemTime {
    SystemTime::from(t.0)
}

pub async fn lease_sample(w: &Shared) -> Option<LeaseSample> {
    let api: Api<Lease> = Api::namespaced(w.client.clone(), SYSTEM_NS);
    let lease = tokio::time::timeout(CALL, api.get_opt(LEASE))
        .await
        .ok()?
        .ok()??;
    let spec = lease.spec.unwrap_or_default();
    Some(LeaseSample {
        holder: spec.holder_identity,
        acquire: spec.acquire_time.as_ref().map(to_system),
        renew: spec.renew_time.as_ref().map(to_system),
        seen: SystemTime::now(),
    })
}

pub async fn list_objects(w: &Shared) -> Option<Vec<PolicyAttachment>> {
    let api: Api<PolicyAttachment> = Api::all(w.client.clone());
    let lp = ListParams::default().labels(&format!("vio-chaos/run={}", w.run));
    tokio::time::timeout(CALL, api.list(&lp))
        .await
        .ok()?
        .ok()
        .map(|l| l.items)
}

fn key(o: &PolicyAttachment) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Polls until cancelled: Lease samples, and the moment each deleted object is gone.
pub async fn watch(w: Shared, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Some(s) = lease_sample(&w).await {
            lock(&w.lease).push(s);
        }
        if let Some(items) = list_objects(&w).await {
            let present: HashSet<String> = items.iter().map(key).collect();
            let now = SystemTime::now();
            let mut l = lock(&w.ledger);
            for d in &mut l.declared {
                if d.delete_requested.is_some()
                    && d.gone_at.is_none()
                    && !present.contains(&d.key())
                {
                    d.gone_at = Some(now);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// Waits (at most `limit`) until no object is Terminating and every one is Ready=True
/// for its current generation; returns how long that took, or None.
pub async fn settle(w: &Shared, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(items) = list_objects(w).await {
            let done = items.iter().all(|o| {
                o.metadata.deletion_timestamp.is_none()
                    && o.status
                        .as_ref()
                        .and_then(|s| s.condition(READY))
                        .is_some_and(|c| {
                            c.status == "True" && c.observed_generation == o.metadata.generation
                        })
            });
            if done {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

fn observed(o: &PolicyAttachment) -> Observed {
    let status = o.status.as_ref();
    Observed {
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: o.metadata.name.clone().unwrap_or_default(),
        terminating: o.metadata.deletion_timestamp.is_some(),
        ready: status
            .and_then(|s| s.condition(READY))
            .map(|c| (c.status.clone(), c.reason.clone())),
        recorded: o.recorded_grant().map(|g| Pair {
            policy: g.policy_id,
            kind: match g.subject.kind() {
                vultr_iam_operator::crd::SubjectKind::User => Kind::User,
                vultr_iam_operator::crd::SubjectKind::Group => Kind::Group,
                vultr_iam_operator::crd::SubjectKind::Role => Kind::Role,
            },
            subject: g.subject.id().to_owned(),
        }),
        finalizers: o.metadata.finalizers.clone().unwrap_or_default(),
    }
}

/// The User-Agent of a journal entry, if this simulator journals one (looked up by
/// name, so the harness builds whether or not the field exists yet).
fn agent(e: &vultr_sim::JournalEntry) -> Option<String> {
    let v = serde_json::to_value(e).ok()?;
    ["user_agent", "userAgent", "agent"]
        .iter()
        .find_map(|k| v.get(*k).and_then(|a| a.as_str()).map(str::to_owned))
}

/// Everything the checker reads, after the run.
pub async fn end_state(w: &Shared, margin: Duration) -> EndState {
    let mut items = None;
    for _ in 0..20 {
        items = list_objects(w).await;
        if items.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let items = items.expect("list the PolicyAttachments at the end");
    let snap = w.sim.state();
    let attached = snap
        .user_attachments
        .iter()
        .map(|a| (a, Kind::User))
        .chain(snap.group_attachments.iter().map(|a| (a, Kind::Group)))
        // `target_id` is the role, `policy_id` the policy, as for the others.
        .chain(snap.role_attachments.iter().map(|a| (a, Kind::Role)))
        .map(|(a, kind)| Pair {
            policy: a.policy_id.clone(),
            kind,
            subject: a.target_id.clone(),
        })
        .collect();
    let journal = w.sim.journal();
    let write = |e: &vultr_sim::JournalEntry| Write {
        at: e.at,
        method: e.method.clone(),
        path: e.path.clone(),
        status: e.status,
        agent: agent(e),
    };
    let writes = journal
        .iter()
        .filter(|e| (e.method == "POST" || e.method == "DELETE") && e.path.starts_with("/v2/"))
        .map(write)
        .collect();
    let refused = journal
        .iter()
        .filter(|e| e.status == 401)
        .map(write)
        .collect();

    let mut texts: Vec<Captured> = items
        .iter()
        .map(|o| Captured {
            label: format!("object {}", key(o)),
            text: serde_json::to_string(o).unwrap_or_default(),
        })
        .collect();
    texts.extend(events(w).await);
    texts.push(Captured {
        label: "driver errors".into(),
        text: lock(&w.ledger).errors.join("\n"),
    });
    texts.push(Captured {
        label: "run notes".into(),
        text: lock(&w.notes).join("\n"),
    });

    let (logs, identities) = {
        let r = lock(&w.replicas);
        (r.logs(), r.identities())
    };
    EndState {
        declared: lock(&w.ledger).declared.clone(),
        present: items.iter().map(observed).collect(),
        attached,
        foreign: lock(&w.foreign).clone(),
        lease: lock(&w.lease).clone(),
        margin,
        identities,
        writes,
        logs,
        texts,
        secrets: lock(&w.keys).clone(),
        refused,
        replaced: lock(&w.replaced).clone(),
        // Filled in once the replicas are stopped.
        stops: Vec::new(),
    }
}

/// Every Event (both APIs) in every namespace, as JSON.
async fn events(w: &Shared) -> Vec<Captured> {
    let mut out = Vec::new();
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::all(w.client.clone());
    if let Ok(Ok(list)) = tokio::time::timeout(CALL, new.list(&ListParams::default())).await {
        out.push(Captured {
            label: format!("{} events.k8s.io Events", list.items.len()),
            text: serde_json::to_string(&list.items).unwrap_or_default(),
        });
    }
    let old: Api<k8s_openapi::api::core::v1::Event> = Api::all(w.client.clone());
    if let Ok(Ok(list)) = tokio::time::timeout(CALL, old.list(&ListParams::default())).await {
        out.push(Captured {
            label: format!("{} core Events", list.items.len()),
            text: serde_json::to_string(&list.items).unwrap_or_default(),
        });
    }
    out
}
