//! What every reconcile shares: clients, caches, backoff state and settings.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

use crate::crd::PolicyAttachment;
use crate::listings::ListingCache;
use crate::metrics::Metrics;
use crate::reconcile::backoff::Backoff;
use crate::vultr::VultrClient;

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
    /// Watched namespaces (empty: all). Shared grants are looked up in the same scope.
    pub namespaces: Vec<String>,
}

pub struct Context {
    pub client: kube::Client,
    pub vultr: VultrClient,
    pub listings: ListingCache,
    pub recorder: Recorder,
    pub backoff: Backoff,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Objects (by UID) whose attach was sent but not yet seen in a listing.
    attach_sent: Mutex<HashMap<String, Instant>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        vultr: VultrClient,
        recorder: Recorder,
        backoff: Backoff,
        settings: Settings,
        metrics: Metrics,
    ) -> Self {
        Self {
            listings: ListingCache::new(vultr.clone()),
            client,
            vultr,
            recorder,
            backoff,
            settings,
            metrics,
            attach_sent: Mutex::default(),
        }
    }

    /// Publishes an Event about `obj`. Failing to publish never fails a reconcile.
    pub async fn event(
        &self,
        obj: &PolicyAttachment,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(%err, reason, "failed to publish event");
        }
    }

    pub fn mark_attach_sent(&self, uid: &str) {
        self.attach_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_owned(), Instant::now());
    }

    /// When the attach of `uid` was sent, if it has not been seen in a listing yet.
    pub fn attach_sent_at(&self, uid: &str) -> Option<Instant> {
        self.attach_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .copied()
    }

    pub fn forget(&self, uid: &str) {
        self.attach_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        self.backoff.reset(uid);
    }
}
