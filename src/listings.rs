//! Shared cache of "who is this policy attached to" listings. One paged
//! `GET /v2/policies/{id}/users` (or `/groups`) serves every PolicyAttachment of that
//! policy: concurrent callers for the same policy wait for one fetch instead of each
//! sending their own, so verification cost grows with policies, not attachments.
//!
//! Writes do not throw a listing away. Each write marks its pair with the instant it
//! completed, and a listing serves a pair only if its fetch started after that mark: a
//! verification never uses a listing older than the last write to its pair, yet one
//! listing fetched after a burst of 100 attaches to a policy verifies all 100.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::domain::{Grant, SubjectKind};
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
/// The last answer for a key and when its fetch started, failures included: during an
/// outage the attachments of a policy share one failed request instead of each sending
/// their own.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Result<Listing, VultrError>)>>>;

/// How long a write mark is kept: longer than any listing may be reused, so a dropped
/// mark can never let an older listing through.
const WRITE_MARK_MEMORY: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct ListingCache {
    vultr: VultrClient,
    slots: Arc<Mutex<HashMap<Key, Slot>>>,
    /// Per pair: when the last write of this process to it completed.
    written: Arc<Mutex<HashMap<Grant, Instant>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an answer whose fetch started at `started` may serve a caller that accepts
/// `max_age` and whose pair was last written at `written` (pure, for the tests).
fn usable(started: Instant, now: Instant, max_age: Duration, written: Option<Instant>) -> bool {
    now.saturating_duration_since(started) <= max_age && written.is_none_or(|w| started >= w)
}

impl ListingCache {
    pub fn new(vultr: VultrClient) -> Self {
        Self {
            vultr,
            slots: Arc::default(),
            written: Arc::default(),
        }
    }

    fn slot(&self, policy_id: &str, kind: SubjectKind) -> Slot {
        locked(&self.slots)
            .entry((policy_id.to_owned(), kind))
            .or_default()
            .clone()
    }

    /// The listing of `grant`'s policy for its subject kind, fetched now unless an
    /// answer younger than `max_age` that started after the last write to `grant` is
    /// cached. Callers for the same policy queue on one lock, so a burst of reconciles
    /// costs one fetch.
    pub async fn for_pair(&self, grant: &Grant, max_age: Duration) -> Result<Listing, VultrError> {
        let written = locked(&self.written).get(grant).copied();
        self.get(&grant.policy_id, grant.subject.kind(), max_age, written)
            .await
    }

    /// The listing of `policy_id`, fetched now unless an answer younger than `max_age`
    /// (and started after `written`, if given) is cached.
    pub async fn get(
        &self,
        policy_id: &str,
        kind: SubjectKind,
        max_age: Duration,
        written: Option<Instant>,
    ) -> Result<Listing, VultrError> {
        let slot = self.slot(policy_id, kind);
        let mut cached = slot.lock().await;
        if let Some((started, answer)) = cached.as_ref()
            && usable(*started, Instant::now(), max_age, written)
        {
            return answer.clone();
        }
        let started = Instant::now();
        let answer = self
            .vultr
            .attached_ids(policy_id, kind)
            .await
            .map(|members| Listing {
                members: Arc::new(members),
                fetched_at: SystemTime::now(),
            });
        *cached = Some((started, answer.clone()));
        answer
    }

    /// This process just finished a write to `grant` (also a failed one: a POST or
    /// DELETE that timed out may still have been applied).
    pub fn note_write(&self, grant: &Grant) {
        locked(&self.written).insert(grant.clone(), Instant::now());
    }

    /// Drops slots of policies no PolicyAttachment refers to any more, and old marks.
    pub fn retain(&self, live: &HashSet<Key>) {
        locked(&self.slots).retain(|k, _| live.contains(k));
        locked(&self.written).retain(|_, at| at.elapsed() < WRITE_MARK_MEMORY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_serves_only_writes_that_finished_before_it_started() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // Fresh enough, no write: usable.
        assert!(usable(t0, t0 + s, 5 * s, None));
        // Too old.
        assert!(!usable(t0, t0 + 6 * s, 5 * s, None));
        // Started after the write finished: usable, also for every earlier write.
        assert!(usable(t0 + s, t0 + 2 * s, 5 * s, Some(t0)));
        // Started before the write finished: never, however fresh.
        assert!(!usable(t0, t0 + s, 5 * s, Some(t0 + s / 2)));
    }
}
