//! What every reconcile shares: clients, caches, backoff state and settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::warn;

use crate::crd::{PolicyAttachment, PolicyAttachmentStatus};
use crate::error::Error;
use crate::http::Stores;
use crate::listings::ListingCache;
use crate::metrics::Metrics;
use crate::reconcile::backoff::Backoff;
use crate::reconcile::status::{self, set_ready};
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
}

pub struct Context {
    pub client: kube::Client,
    pub vultr: VultrClient,
    pub listings: ListingCache,
    pub recorder: Recorder,
    pub backoff: Backoff,
    pub settings: Settings,
    pub metrics: Metrics,
    /// The controllers' watch caches (one per watched scope).
    stores: Stores,
    /// Objects (by UID) whose attach was sent but not yet seen in a listing.
    attach_sent: Mutex<HashMap<String, Instant>>,
    /// Objects (by UID) whose grant this process revoked: a reconcile queued from a
    /// stale cache entry (finalizer not yet seen removed) must not revoke again.
    revoked: Mutex<HashMap<String, Instant>>,
}

/// How long a revoked UID is remembered; the watch cache catches up long before.
const REVOKED_MEMORY: Duration = Duration::from_secs(600);

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
            client,
            vultr,
            recorder,
            backoff,
            settings,
            metrics,
            attach_sent: Mutex::default(),
            revoked: Mutex::default(),
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

    /// Every PolicyAttachment in the watch caches, once they are synced.
    pub async fn cached_objects(&self) -> Vec<Arc<PolicyAttachment>> {
        let stores = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut objects = Vec::new();
        for store in stores {
            if store.wait_until_ready().await.is_ok() {
                objects.extend(store.state());
            }
        }
        objects
    }

    /// The namespaced API of `obj`.
    pub fn api_for(&self, obj: &PolicyAttachment) -> Api<PolicyAttachment> {
        Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default())
    }

    /// Makes a failure visible on the object: `Ready=False` with the error's reason and
    /// `message`, and a Warning Event (the recorder folds repeats into one series).
    /// Failing to write either is logged, never returned: the caller returns the
    /// original error.
    pub async fn report_failure(
        &self,
        obj: &PolicyAttachment,
        status: &mut PolicyAttachmentStatus,
        err: &Error,
        action: &str,
        message: String,
    ) {
        set_ready(
            status,
            false,
            err.reason(),
            &message,
            obj.metadata.generation,
            Timestamp::now(),
        );
        if let Err(write_err) = status::write(&self.api_for(obj), obj, status).await {
            warn!(%write_err, "could not record the failure in status");
        }
        self.event(obj, EventType::Warning, err.reason(), action, message)
            .await;
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

    pub fn mark_revoked(&self, uid: &str) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, at| at.elapsed() < REVOKED_MEMORY);
        revoked.insert(uid.to_owned(), Instant::now());
    }

    pub fn was_revoked(&self, uid: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(uid)
    }

    pub fn forget(&self, uid: &str) {
        self.attach_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        self.backoff.reset(uid);
    }
}
