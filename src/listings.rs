//! Shared cache of "who is this policy attached to" listings. One paged
//! `GET /v2/policies/{id}/users` (or `/groups`) serves every PolicyAttachment of that
//! policy: concurrent callers for the same policy wait for one fetch instead of each
//! sending their own, so verification cost grows with policies, not attachments.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::vultr::{SubjectKind, VultrClient, VultrError};

/// The IDs a policy was attached to when Vultr was asked.
#[derive(Debug, Clone)]
pub struct Listing {
    pub members: Arc<HashSet<String>>,
    /// Wall-clock time of the fetch, reported as `lastVerifiedAt`.
    pub fetched_at: SystemTime,
    fetched: Instant,
}

impl Listing {
    pub fn contains(&self, id: &str) -> bool {
        self.members.contains(id)
    }
}

type Key = (String, SubjectKind);
type Slot = Arc<tokio::sync::Mutex<Option<Listing>>>;

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

    /// The listing for `policy_id`, fetched now unless one younger than `max_age` is
    /// cached. Callers for the same policy queue on one lock, so a burst of reconciles
    /// costs one fetch.
    pub async fn get(
        &self,
        policy_id: &str,
        kind: SubjectKind,
        max_age: Duration,
    ) -> Result<Listing, VultrError> {
        let slot = self.slot(policy_id, kind);
        let mut cached = slot.lock().await;
        if let Some(listing) = cached.as_ref()
            && listing.fetched.elapsed() <= max_age
        {
            return Ok(listing.clone());
        }
        let members = match kind {
            SubjectKind::User => self.vultr.policy_user_ids(policy_id).await?,
            SubjectKind::Group => self.vultr.policy_group_ids(policy_id).await?,
        };
        let listing = Listing {
            members: Arc::new(members),
            fetched_at: SystemTime::now(),
            fetched: Instant::now(),
        };
        *cached = Some(listing.clone());
        Ok(listing)
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
