//! Shared cache of "who is this policy attached to" listings. One paged
//! `GET /v2/policies/{id}/users` (or `/groups`) serves every PolicyAttachment of that
//! policy: concurrent callers for the same policy wait for one fetch instead of each
//! sending their own, so verification cost grows with policies, not attachments.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::domain::SubjectKind;
use crate::vultr::{VultrClient, VultrError};

/// The IDs a policy was attached to when Vultr was asked.
#[derive(Debug, Clone)]
pub struct Listing {
    pub members: Arc<HashSet<String>>,
    /// Wall-clock time of the fetch, reported as `lastVerifiedAt`.
    pub fetched_at: SystemTime,
}

impl Listing {
    pub fn contains(&self, id: &str) -> bool {
        self.members.contains(id)
    }
}

type Key = (String, SubjectKind);
/// The last answer for a key, failures included: during an outage the attachments of a
/// policy share one failed request instead of each sending their own.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Result<Listing, VultrError>)>>>;

#[derive(Clone)]
pub struct ListingCache {
    vultr: VultrClient,
    slots: Arc<Mutex<HashMap<Key, Slot>>>,
}

impl ListingCache {
    pub fn new(vultr: VultrClient) -> Self {
        Self {
            vultr,
            slots: Arc::default(),
        }
    }

    fn slot(&self, policy_id: &str, kind: SubjectKind) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry((policy_id.to_owned(), kind))
            .or_default()
            .clone()
    }

    /// The listing for `policy_id`, fetched now unless an answer younger than `max_age`
    /// is cached. Callers for the same policy queue on one lock, so a burst of
    /// reconciles costs one fetch.
    pub async fn get(
        &self,
        policy_id: &str,
        kind: SubjectKind,
        max_age: Duration,
    ) -> Result<Listing, VultrError> {
        let slot = self.slot(policy_id, kind);
        let mut cached = slot.lock().await;
        if let Some((at, answer)) = cached.as_ref()
            && at.elapsed() <= max_age
        {
            return answer.clone();
        }
        let answer = self
            .vultr
            .attached_ids(policy_id, kind)
            .await
            .map(|members| Listing {
                members: Arc::new(members),
                fetched_at: SystemTime::now(),
            });
        *cached = Some((Instant::now(), answer.clone()));
        answer
    }

    /// Forgets the listing after this process changed the policy's attachments.
    pub async fn invalidate(&self, policy_id: &str, kind: SubjectKind) {
        *self.slot(policy_id, kind).lock().await = None;
    }

    /// Drops slots of policies no PolicyAttachment refers to any more.
    pub fn retain(&self, live: &HashSet<Key>) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| live.contains(k));
    }
}
