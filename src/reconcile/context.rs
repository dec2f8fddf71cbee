//! What every reconcile shares: clients, caches, per-object memories and settings.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::channel::mpsc::UnboundedSender;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::Recorder;
use tracing::debug;

use crate::crd::PolicyAttachment;
use crate::http::Stores;
use crate::listings::ListingCache;
use crate::metrics::Metrics;
use crate::reconcile::backoff::Backoff;
use crate::reconcile::memory::Memory;
use crate::reconcile::pairs::{KeyedLocks, Pairs};
use crate::vultr::{Directory, VultrClient};

/// Tunables of the reconciler (all come from `run` flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Period of the drift verification pass (jittered).
    pub resync_interval: Duration,
    /// A listing younger than this is reused instead of asking Vultr again.
    pub listing_max_age: Duration,
    /// How long a fresh attach may stay invisible in Vultr's listing before it is
    /// attempted again (the listing lags behind writes).
    pub attach_visibility_timeout: Duration,
    /// Delay between checks while waiting for a fresh attach to show up.
    pub verify_interval: Duration,
}

/// How long one walk of the directory serves references that match (IDs of existing
/// objects do not change; a miss refreshes it sooner).
const DIRECTORY_MAX_AGE: Duration = Duration::from_secs(600);
/// A name that matches nothing refreshes the directory, but never more often than this.
const DIRECTORY_REFRESH_FLOOR: Duration = Duration::from_secs(10);
/// How long a count of the objects still waiting for their first turn is reused.
const BACKLOG_RECOUNT: Duration = Duration::from_millis(250);

pub struct Context {
    pub client: kube::Client,
    pub vultr: VultrClient,
    pub listings: ListingCache,
    /// The shared walk of policies, users, groups and roles that resolution reads.
    pub directory: Directory,
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
    /// Make a controller reconcile every object: sent when the backlog empties, so
    /// verifications waiting for a batch go at once instead of polling.
    wakers: Mutex<Vec<UnboundedSender<()>>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        vultr: VultrClient,
        recorder: Recorder,
        backoff: Backoff,
        settings: Settings,
        metrics: Metrics,
        stores: Stores,
    ) -> Self {
        Self {
            stores,
            listings: ListingCache::new(vultr.clone()),
            directory: Directory::new(vultr.clone(), DIRECTORY_MAX_AGE, DIRECTORY_REFRESH_FLOOR),
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
        }
    }

    /// Live objects in the caches that have not had their first turn yet: attaches
    /// still to come. While there are some, verifications batch (see `listings.rs`);
    /// when a count finds none after one that found some, every controller reconciles
    /// all its objects, so the batched verifications go at once.
    /// Counted at most every [`BACKLOG_RECOUNT`]: a count is a scan of the caches.
    pub fn backlog(&self) -> usize {
        let mut last = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
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
        // Only when a batch waits: a reconcile of everything costs no Vultr call, but
        // it is not free either.
        if previous > 0 && count == 0 && self.listings.has_unverified() {
            debug!("every object has had its turn: verifying the batches");
            self.wakers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|waker| waker.unbounded_send(()).is_ok());
        }
        count
    }

    /// Registers a controller's "reconcile every object" trigger (see `backlog`).
    pub fn add_waker(&self, waker: UnboundedSender<()>) {
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waker);
    }

    /// Every PolicyAttachment in the watch caches that have synced. A scope that is
    /// not synced (its LIST refused, its namespace being re-created) is skipped, never
    /// waited for: one unreadable scope must not stall the others.
    pub fn cached_objects(&self) -> Vec<Arc<PolicyAttachment>> {
        let stores = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
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
                + self.backoff.tracked()
                + self.pairs.tracked()
                + self.objects.tracked(),
        );
    }

    /// The object is gone (its cleanup finished): forget everything about it.
    pub fn forget(&self, uid: &str) {
        self.memory.forget(uid);
        self.pairs.withdraw(uid);
        self.backoff.reset(uid);
    }
}
