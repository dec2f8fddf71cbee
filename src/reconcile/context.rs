//! What every reconcile shares: clients, caches, per-object memories and settings.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::channel::mpsc::UnboundedSender;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use tracing::debug;

use crate::crd::PolicyAttachment;
use crate::domain::Grant;
use crate::metrics::Metrics;
use crate::port::{GrantPort, Observation};
use crate::reconcile::backoff::Backoff;
use crate::reconcile::memory::Memory;
use crate::reconcile::pairs::{KeyedLocks, Pairs};
use crate::reconcile::recorder::Recorder;
use crate::vultr::VultrError;
use crate::watch_cache::Stores;

/// Tunables of the reconciler (all come from `run` flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Period of the drift verification pass (jittered).
    pub resync_interval: Duration,
    /// A listing younger than this is reused instead of asking Vultr again.
    pub listing_max_age: Duration,
    /// How long a fresh attach may stay invisible in Vultr's listing before it is
    /// attempted again, and how long a detached pair may still be listed (the listing
    /// lags behind writes).
    pub attach_visibility_timeout: Duration,
    /// Delay between checks while waiting for a fresh attach to show up.
    pub verify_interval: Duration,
    /// The oldest walk of the directory a name, email or ID is resolved against.
    pub directory_max_age: Duration,
}

/// How long a count of the objects still waiting for their first turn is reused.
const BACKLOG_RECOUNT: Duration = Duration::from_millis(250);

/// Makes a controller reconcile the object it is sent.
pub type Waker = UnboundedSender<ObjectRef<PolicyAttachment>>;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Context {
    pub client: kube::Client,
    /// The Vultr account grants are resolved, observed, attached and revoked in.
    pub vultr: Arc<dyn GrantPort>,
    pub recorder: Recorder,
    pub backoff: Backoff,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Per-UID memories of this process (attach awaited, revocation done).
    pub memory: Memory,
    /// Per-pair locks and the pairs known to be declared.
    pub pairs: Pairs,
    /// Per-object locks: the live and the deleted lane never run one object at once.
    pub objects: KeyedLocks<String>,
    /// The controllers' watch caches (one per watched scope).
    stores: Stores,
    /// The last count of [`Context::backlog`], and when it was taken.
    backlog: Mutex<Option<(Instant, usize)>>,
    /// Per watched scope (a namespace, or `None` for the whole cluster), the trigger
    /// that makes its controller reconcile one object.
    wakers: Mutex<Vec<(Option<String>, Waker)>>,
    /// The objects whose verification waits for a batch: woken, and only they, when the
    /// backlog empties.
    batched: Mutex<HashSet<ObjectRef<PolicyAttachment>>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        vultr: Arc<dyn GrantPort>,
        recorder: Recorder,
        backoff: Backoff,
        settings: Settings,
        metrics: Metrics,
        stores: Stores,
    ) -> Self {
        Self {
            stores,
            client,
            vultr,
            recorder,
            backoff,
            settings,
            metrics,
            memory: Memory::default(),
            pairs: Pairs::default(),
            objects: KeyedLocks::default(),
            backlog: Mutex::default(),
            wakers: Mutex::default(),
            batched: Mutex::default(),
        }
    }

    /// Live objects in the caches that have not had their first turn yet: attaches
    /// still to come. While there are some, verifications batch (see `listings.rs`);
    /// when a count finds none after one that found some, the objects whose
    /// verification waits for a batch are reconciled, so they go at once.
    /// Counted at most every [`BACKLOG_RECOUNT`]: a count is a scan of the caches.
    pub fn backlog(&self) -> usize {
        let mut last = locked(&self.backlog);
        let previous = match *last {
            Some((at, count)) if at.elapsed() < BACKLOG_RECOUNT => return count,
            Some((_, count)) => count,
            None => 0,
        };
        let count = self
            .cached_objects()
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .filter(|o| !self.memory.had_turn(&o.uid().unwrap_or_default()))
            .count();
        *last = Some((Instant::now(), count));
        if previous > 0 && count == 0 {
            self.wake_batched();
        }
        count
    }

    /// Observes `obj`'s `grant` (see `GrantPort::observe`). While attaches are still to
    /// come it may be `Later`: the object is then remembered, and woken when the
    /// backlog empties.
    pub async fn observe(
        &self,
        obj: &PolicyAttachment,
        grant: &Grant,
    ) -> Result<Observation, VultrError> {
        let observation = self
            .vultr
            .observe(grant, self.settings.listing_max_age, self.backlog() > 0)
            .await?;
        if let Observation::Later(_) = observation {
            self.metrics.verification_batched();
            locked(&self.batched).insert(ObjectRef::from_obj(obj));
            // The backlog may have emptied since it was counted above, and its wake-up
            // gone before this object was remembered: then wake it now (a reconcile
            // triggered while it runs follows right after it).
            if self.backlog() == 0 {
                self.wake_batched();
            }
        }
        Ok(observation)
    }

    /// Reconciles the objects whose verification waits for a batch, each through the
    /// controller of its scope; the others are not woken (a reconcile may cost a
    /// listing once it is older than `listing_max_age`).
    fn wake_batched(&self) {
        let batched: Vec<_> = locked(&self.batched).drain().collect();
        if batched.is_empty() {
            return;
        }
        debug!(
            objects = batched.len(),
            "every object has had its turn: verifying the batches"
        );
        let wakers = locked(&self.wakers);
        for object in batched {
            let scopes = wakers.iter().map(|(scope, _)| scope.as_deref());
            if let Some(i) = scope_of(scopes, object.namespace.as_deref()) {
                let _ = wakers[i].1.unbounded_send(object);
            }
        }
    }

    /// Registers the "reconcile this object" trigger of the controller of `scope` (a
    /// namespace, or `None` for the whole cluster; see `backlog`).
    pub fn add_waker(&self, scope: Option<String>, waker: Waker) {
        locked(&self.wakers).push((scope, waker));
    }

    /// Every PolicyAttachment in the watch caches that have synced. A scope that is
    /// not synced (its LIST refused, its namespace being re-created) is skipped, never
    /// waited for: one unreadable scope must not stall the others.
    pub fn cached_objects(&self) -> Vec<Arc<PolicyAttachment>> {
        let stores = locked(&self.stores).clone();
        let mut objects = Vec::new();
        for store in stores {
            match store.wait_until_ready().now_or_never() {
                Some(Ok(())) => objects.extend(store.state()),
                _ => debug!("a watched scope is not synced; skipping it"),
            }
        }
        objects
    }

    /// The namespaced API of `obj`.
    pub fn api_for(&self, obj: &PolicyAttachment) -> Api<PolicyAttachment> {
        Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default())
    }

    /// Drops what the process keeps about objects the watch caches no longer hold, and
    /// publishes how much it keeps (called once per verification pass).
    pub fn prune(&self) {
        let cached: std::collections::HashSet<String> = self
            .cached_objects()
            .iter()
            .filter_map(|o| o.uid())
            .collect();
        let in_use = |uid: &str| cached.contains(uid);
        self.memory.prune(in_use);
        self.backoff.retain(in_use);
        self.pairs.prune();
        self.objects.prune();
        self.metrics.tracked_entries(
            self.memory.tracked()
                + self.recorder.tracked()
                + locked(&self.batched).len()
                + self.backoff.tracked()
                + self.pairs.tracked()
                + self.objects.tracked(),
        );
    }

    /// The object is gone (its cleanup finished): forget everything about it.
    pub fn forget(&self, uid: &str) {
        locked(&self.batched).retain(|o| o.extra.uid.as_deref() != Some(uid));
        self.memory.forget(uid);
        self.recorder.forget(uid);
        self.pairs.withdraw(uid);
        self.backoff.reset(uid);
    }
}

/// Which of the watched `scopes` (a namespace, or `None` for the whole cluster) holds an
/// object of `namespace` (pure, for the tests).
fn scope_of<'a>(
    mut scopes: impl Iterator<Item = Option<&'a str>>,
    namespace: Option<&str>,
) -> Option<usize> {
    scopes.position(|scope| scope.is_none() || scope == namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_woken_through_the_controller_of_its_scope() {
        let scopes = [Some("a"), Some("b")];
        assert_eq!(scope_of(scopes.into_iter(), Some("b")), Some(1));
        assert_eq!(scope_of(scopes.into_iter(), Some("c")), None);
        assert_eq!(scope_of([None].into_iter(), Some("c")), Some(0));
    }
}
