//! What every reconcile shares: the Vultr port, the Kubernetes client, the state of
//! each object, and settings.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use kube::ResourceExt;
use kube::api::Api;
use tracing::debug;

use crate::boundary::Boundary;
use crate::crd::PolicyAttachment;
use crate::domain::Grant;
use crate::metrics::Metrics;
use crate::port::{GrantPort, Observation};
use crate::reconcile::backoff::Backoff;
use crate::reconcile::batching::{Batching, Waker};
use crate::reconcile::objects::Objects;
use crate::reconcile::pairs::Pairs;
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
    /// Which grants may be made through the key.
    pub boundary: Boundary,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Context {
    pub client: kube::Client,
    /// The Vultr account grants are resolved, observed, attached and revoked in.
    pub vultr: Arc<dyn GrantPort>,
    pub recorder: Recorder,
    pub settings: Settings,
    pub metrics: Metrics,
    /// What this process remembers about each object (its lock among it).
    pub objects: Objects,
    /// Per-pair locks.
    pub pairs: Pairs,
    batching: Batching,
    /// The controllers' watch caches (one per watched scope).
    stores: Stores,
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
            client,
            vultr,
            recorder,
            settings,
            metrics,
            objects: Objects::new(backoff),
            pairs: Pairs::default(),
            batching: Batching::default(),
            stores,
        }
    }

    /// Observes `obj`'s `grant` (see `GrantPort::observe`). While attaches are still to
    /// come (live objects in the caches without their first turn) it may be `Later`:
    /// the object is then put off, and woken when the backlog empties.
    pub async fn observe(
        &self,
        obj: &PolicyAttachment,
        grant: &Grant,
    ) -> Result<Observation, VultrError> {
        let backlog = self.batching.backlog(|| self.attaches_to_come());
        if backlog.drained {
            self.batching.wake();
        }
        let observation = self
            .vultr
            .observe(grant, self.settings.listing_max_age, backlog.count > 0)
            .await?;
        if let Observation::Later(_) = observation {
            self.metrics.verification_batched();
            self.batching.put_off(obj);
            // The backlog may have emptied since it was counted above, and its wake-up
            // gone before this object was put off: then wake it now (a reconcile
            // triggered while it runs follows right after it).
            if self.batching.backlog(|| self.attaches_to_come()).count == 0 {
                self.batching.wake();
            }
        }
        Ok(observation)
    }

    /// Live objects in the caches that have not had their first turn yet.
    fn attaches_to_come(&self) -> usize {
        self.cached_objects()
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .filter(|o| !self.objects.had_turn(&o.uid().unwrap_or_default()))
            .count()
    }

    /// Registers the "reconcile this object" trigger of the controller of `scope` (a
    /// namespace, or `None` for the whole cluster).
    pub fn add_waker(&self, scope: Option<String>, waker: Waker) {
        self.batching.add_waker(scope, waker);
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
        self.objects.prune(|uid| cached.contains(uid));
        self.pairs.prune();
        self.metrics.tracked_entries(
            self.objects.tracked()
                + self.recorder.tracked()
                + self.batching.tracked()
                + self.pairs.tracked(),
        );
    }

    /// The object is gone (its cleanup finished): forget everything about it.
    pub fn forget(&self, uid: &str) {
        self.objects.forget(uid);
        self.recorder.forget(uid);
        self.batching.forget(uid);
    }
}
