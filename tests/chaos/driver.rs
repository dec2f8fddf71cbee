//! The workload: creates, deletes and "renames" (delete a, create b with the same
//! pair, often in another namespace) PolicyAttachments for the whole run, and changes
//! Vultr behind the operator's back (out-of-band detaches of declared grants, which
//! drift repair must undo, and attaches of grants no object declares, which it must
//! leave alone). And one name reuse: a group renamed in Vultr, a new one under its old
//! name, and objects that name it before and after.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DeleteParams, PostParams};
use rand::RngExt;
use rand::rngs::StdRng;
use vultr_iam_operator::crd::{PolicyAttachment, READY};

use super::model::{Declared, Kind, Pair, Replaced};
use super::org::Entity;
use super::replicas::DIRECTORY_MAX_AGE;
use super::world::{Shared, World, lock};

/// Every API call of the driver gives up after this (the API server may be down).
const CALL: Duration = Duration::from_secs(15);

/// What one create needs, chosen up front so a seeded run is reproducible.
struct Plan {
    namespace: String,
    name: String,
    pair: Pair,
    orphan: bool,
    spec: serde_json::Value,
    /// Never deleted by the churn.
    kept: bool,
}

fn plan(w: &World, rng: &mut StdRng, counter: &mut usize, pool: Option<usize>) -> Option<Plan> {
    let namespaces = w.usable_namespaces();
    if namespaces.is_empty() {
        return None;
    }
    let namespace = namespaces[rng.random_range(0..namespaces.len())].clone();
    let pool = pool.unwrap_or_else(|| rng.random_range(0..w.pool.len()));
    *counter += 1;
    let pool = &w.pool[pool];
    Some(Plan {
        namespace,
        name: format!("pa-{:05}", *counter),
        pair: w.org.pair(pool),
        orphan: pool.orphan,
        spec: w.org.spec(rng, pool),
        kept: false,
    })
}

/// The object's index in the ledger, if the API server stored it.
async fn create(w: &World, p: Plan) -> Option<usize> {
    let mut obj = crate::e2e::policy_attachment(&p.name, p.spec.clone());
    obj.metadata.labels = Some([("vio-chaos/run".to_owned(), w.run.clone())].into());
    // Declared before the call: a create cut short may still have been stored.
    let idx = lock(&w.ledger).declare(Declared {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        pair: p.pair,
        orphan: p.orphan,
        delete_requested: None,
        gone_at: None,
    });
    let api: Api<PolicyAttachment> = Api::namespaced(w.client.clone(), &p.namespace);
    match tokio::time::timeout(CALL, api.create(&PostParams::default(), &obj)).await {
        Ok(Ok(_)) => {
            let mut l = lock(&w.ledger);
            l.ops.creates += 1;
            if !p.kept {
                l.live.push(idx);
            }
            return Some(idx);
        }
        Ok(Err(e)) => w.error(format!("create {}/{}: {e}", p.namespace, p.name)),
        Err(_) => w.error(format!("create {}/{}: timed out", p.namespace, p.name)),
    }
    None
}

/// Deletes the object at `idx` of the ledger (already taken out of `live`).
async fn delete(w: &World, idx: usize) {
    let (ns, name) = {
        let mut l = lock(&w.ledger);
        let d = &mut l.declared[idx];
        d.delete_requested = Some(World::now());
        (d.namespace.clone(), d.name.clone())
    };
    let api: Api<PolicyAttachment> = Api::namespaced(w.client.clone(), &ns);
    match tokio::time::timeout(CALL, api.delete(&name, &DeleteParams::default())).await {
        Ok(Ok(_)) => lock(&w.ledger).ops.deletes += 1,
        Ok(Err(kube::Error::Api(e))) if e.code == 404 => lock(&w.ledger).ops.deletes += 1,
        Ok(Err(e)) => w.error(format!("delete {ns}/{name}: {e}")),
        Err(_) => w.error(format!("delete {ns}/{name}: timed out")),
    }
}

fn take_live(w: &World, rng: &mut StdRng) -> Option<usize> {
    let mut l = lock(&w.ledger);
    if l.live.is_empty() {
        return None;
    }
    let i = rng.random_range(0..l.live.len());
    Some(l.live.swap_remove(i))
}

/// Creates the first `n` objects, a few at a time.
pub async fn populate(w: &Shared, rng: &mut StdRng, counter: &mut usize, n: usize) {
    let plans: Vec<Plan> = (0..n).filter_map(|_| plan(w, rng, counter, None)).collect();
    futures::stream::iter(plans)
        .map(|p| create(w, p))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

/// Keeps about `target` objects alive while creating, deleting and renaming until
/// `until`, one operation every `every`.
pub async fn churn(
    w: Shared,
    mut rng: StdRng,
    mut counter: usize,
    target: usize,
    every: Duration,
    until: Instant,
) {
    while Instant::now() < until {
        tokio::time::sleep(every).await;
        let live = lock(&w.ledger).live.len();
        let roll: f64 = rng.random();
        if live < target * 9 / 10 || (roll < 0.3 && live < target * 11 / 10) {
            if let Some(p) = plan(&w, &mut rng, &mut counter, None) {
                create(&w, p).await;
            }
        } else if roll < 0.65 {
            if let Some(idx) = take_live(&w, &mut rng) {
                delete(&w, idx).await;
            }
        } else if let Some(idx) = take_live(&w, &mut rng) {
            // A rename: the same pair under a new name, deleted and created at once.
            let pool = {
                let l = lock(&w.ledger);
                let pair = &l.declared[idx].pair;
                w.pool.iter().position(|p| w.org.pair(p) == *pair)
            };
            let next = plan(&w, &mut rng, &mut counter, pool);
            let del = delete(&w, idx);
            match next {
                Some(p) => {
                    tokio::join!(del, create(&w, p));
                }
                None => del.await,
            }
            lock(&w.ledger).ops.renames += 1;
        }
    }
}

/// The name reuse: an object names the reused group and is Ready (so
/// the leader's directory holds the name); the group is renamed in Vultr, a new group
/// created under its name, and the object deleted (its revocation must take the
/// recorded pair, the old group). A directory age later, two more objects name it (in
/// the first namespace, which the run never deletes) and stay to the end: they must
/// resolve to the new group.
pub async fn reuse_name(w: &Shared) {
    let old = &w.org.reused;
    let Some(namespace) = lock(&w.namespaces).first().map(|n| n.name.clone()) else {
        return;
    };
    let (by_name, by_id) = (
        &w.org.policies[0],
        &w.org.policies[1 % w.org.policies.len()],
    );
    let plan = |name: &str, policy: &Entity, by_id: bool, group: &str| {
        let reference = if by_id {
            serde_json::json!({"id": policy.id})
        } else {
            serde_json::json!({"name": policy.key})
        };
        Plan {
            namespace: namespace.clone(),
            name: name.to_owned(),
            pair: Pair {
                policy: policy.id.clone(),
                kind: Kind::Group,
                subject: group.to_owned(),
            },
            orphan: false,
            spec: serde_json::json!({"policy": reference, "group": {"name": old.key}}),
            kept: true,
        }
    };
    let before = create_kept(w, || plan("reuse-before", by_name, false, &old.id)).await;
    // Ready before the rename, or its own late resolution could still name the old group
    // (allowed within a directory age); 40 s outlasts the long run's outage.
    if !ready(w, &namespace, "reuse-before", Duration::from_secs(40)).await {
        w.note("name reuse: reuse-before not Ready within 40s".into());
    }
    if !w.sim.rename_group(&old.id, &format!("{}-renamed", old.key)) {
        w.note("name reuse: the group to rename is missing".into());
        return;
    }
    let new = w.sim.add_group(&old.key);
    lock(&w.replaced).push(Replaced {
        old: old.id.clone(),
        new: new.clone(),
        at: World::now(),
    });
    w.count("name reuse (a group renamed, a new one under its name)");
    if let Some(idx) = before {
        delete(w, idx).await;
    }
    tokio::time::sleep(DIRECTORY_MAX_AGE + Duration::from_secs(1)).await;
    create_kept(w, || plan("reuse-0", by_name, false, &new)).await;
    create_kept(w, || plan("reuse-1", by_id, true, &new)).await;
}

/// Creates an object the run needs, again while the API server fails (it may be
/// restarting), for up to a minute; the object's index in the ledger.
async fn create_kept(w: &World, plan: impl Fn() -> Plan) -> Option<usize> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let p = plan();
        let (namespace, name) = (p.namespace.clone(), p.name.clone());
        if let Some(idx) = create(w, p).await {
            return Some(idx);
        }
        // An earlier attempt may have been stored with its answer lost (then this one
        // failed with AlreadyExists).
        let api: Api<PolicyAttachment> = Api::namespaced(w.client.clone(), &namespace);
        if let Ok(Ok(Some(_))) = tokio::time::timeout(CALL, api.get_opt(&name)).await {
            let mut l = lock(&w.ledger);
            l.ops.creates += 1;
            return l
                .declared
                .iter()
                .rposition(|d| d.key() == format!("{namespace}/{name}"));
        }
        if Instant::now() >= until {
            w.note(format!(
                "{namespace}/{name} could not be created within 60s"
            ));
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether the object is Ready=True within `within`.
async fn ready(w: &World, namespace: &str, name: &str, within: Duration) -> bool {
    let api: Api<PolicyAttachment> = Api::namespaced(w.client.clone(), namespace);
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Ok(Ok(Some(o))) = tokio::time::timeout(CALL, api.get_opt(name)).await
            && o.status
                .as_ref()
                .and_then(|s| s.condition(READY))
                .is_some_and(|c| c.status == "True")
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Out-of-band changes every `every` until `until`: alternately detach a declared
/// grant and attach a grant to an outsider (a user or role no object declares).
pub async fn out_of_band(w: Shared, mut rng: StdRng, every: Duration, until: Instant) {
    let mut detach = true;
    while Instant::now() < until {
        tokio::time::sleep(every).await;
        if detach {
            let pair = {
                let l = lock(&w.ledger);
                (!l.live.is_empty()).then(|| {
                    l.declared[l.live[rng.random_range(0..l.live.len())]]
                        .pair
                        .clone()
                })
            };
            if let Some(p) = pair {
                let removed = match p.kind {
                    Kind::User => w.sim.detach_user(&p.policy, &p.subject),
                    Kind::Group => w.sim.detach_group(&p.policy, &p.subject),
                    Kind::Role => w.sim.detach_role(&p.subject, &p.policy),
                };
                if removed {
                    w.count("out-of-band detach");
                }
            }
        } else {
            let policy = &w.org.policies[rng.random_range(0..w.org.policies.len())];
            let foreign = if rng.random_bool(0.3) {
                let role = &w.org.outsider_roles[rng.random_range(0..w.org.outsider_roles.len())];
                w.sim
                    .attach_role(&role.id, &policy.id)
                    .then(|| (Kind::Role, role.id.clone()))
            } else {
                let user = &w.org.outsiders[rng.random_range(0..w.org.outsiders.len())];
                w.sim
                    .attach_user(&policy.id, &user.id)
                    .then(|| (Kind::User, user.id.clone()))
            };
            if let Some((kind, subject)) = foreign {
                w.count("out-of-band attach");
                lock(&w.foreign).push(Pair {
                    policy: policy.id.clone(),
                    kind,
                    subject,
                });
            }
        }
        detach = !detach;
    }
}

/// Deletes a watched namespace (and so every object in it), then re-creates it once
/// it is gone, with its RoleBinding, within `wait`.
pub async fn delete_namespace(w: &Shared, ns: &str, wait: Duration) {
    use k8s_openapi::api::core::v1::Namespace;
    for n in lock(&w.namespaces).iter_mut().filter(|n| n.name == ns) {
        n.usable = false;
    }
    {
        let now = World::now();
        let mut l = lock(&w.ledger);
        let in_ns: Vec<usize> = (0..l.declared.len())
            .filter(|&i| l.declared[i].namespace == ns)
            .collect();
        for i in in_ns {
            l.declared[i].delete_requested.get_or_insert(now);
        }
        let declared = std::mem::take(&mut l.live);
        l.live = declared
            .into_iter()
            .filter(|&i| l.declared[i].namespace != ns)
            .collect();
        l.ops.namespace_deletions += 1;
    }
    let api: Api<Namespace> = Api::all(w.client.clone());
    match tokio::time::timeout(CALL, api.delete(ns, &DeleteParams::default())).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => w.note(format!("delete namespace {ns}: {e}")),
        Err(_) => w.note(format!("delete namespace {ns}: timed out")),
    }
    w.count("namespace deletion");
    let started = Instant::now();
    // Gone means three 404s in a row, a second apart: an API server that is starting
    // again may answer one spurious 404.
    let mut absent = 0;
    while started.elapsed() < wait {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match tokio::time::timeout(CALL, api.get_opt(ns)).await {
            Ok(Ok(None)) => absent += 1,
            _ => absent = 0,
        }
        if absent < 3 {
            continue;
        }
        let world = w.clone();
        let (name, run) = (ns.to_owned(), w.run.clone());
        let all: Vec<String> = lock(&w.namespaces).iter().map(|n| n.name.clone()).collect();
        // The namespace, then the chart's RBAC again (its RoleBindings there went with it).
        let made = tokio::task::spawn_blocking(move || {
            world
                .cluster
                .try_namespace(&name, &run)
                .and_then(|()| world.cluster.try_rbac(&all))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match made {
            Ok(()) => {
                w.note(format!(
                    "namespace {ns} gone {:.1}s after its deletion; re-created",
                    started.elapsed().as_secs_f64()
                ));
                for n in lock(&w.namespaces).iter_mut().filter(|n| n.name == ns) {
                    n.usable = true;
                }
            }
            Err(e) => w.note(format!("namespace {ns} could not be re-created: {e}")),
        }
        return;
    }
    w.note(format!(
        "namespace {ns} still there {}s after its deletion (not re-created)",
        wait.as_secs()
    ));
}
