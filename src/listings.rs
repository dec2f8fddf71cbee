//! Shared cache of attachment listings. One paged `GET /v2/policies/{id}/users` (or
//! `/groups`) serves every user (group) PolicyAttachment of that policy, and one
//! `GET /v2/roles/{id}/policies` every PolicyAttachment of that role (Vultr lists role
//! grants per role): concurrent callers for the same listing wait for one fetch instead
//! of each sending their own, so verification cost grows with listings, not attachments.
//!
//! Writes do not throw a listing away. Each write marks its pair with the instant it
//! completed, and a listing serves a pair only if its fetch started after that mark: a
//! verification never uses a listing older than the last write to its pair, yet one
//! listing fetched after a burst of 100 attaches to a policy verifies all 100.
//!
//! While attaches are still to come (objects that have not had their first turn), a
//! verification that needs a new listing waits until the listing will verify a batch
//! ([`BATCH`] writes to its pairs since the last fetch, or the oldest of them
//! [`BATCH_WAIT`] old): every call spent on a listing is a call not spent on an attach.
//! Once every object has had its turn, it fetches at once: a lone attach is verified
//! without delay, and the tail of a burst as soon as its last attach is sent.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::domain::{Grant, ListingSource};
use crate::vultr::{VultrClient, VultrError};

/// The IDs a listing showed when Vultr was asked (subjects of a policy, policies of a
/// role); ask it with [`Listing::shows`].
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

    /// Whether this listing (the one `grant.listing()` names) shows the pair.
    pub fn shows(&self, grant: &Grant) -> bool {
        self.contains(grant.listing().1)
    }
}

type Key = ListingSource;
type Slot = Arc<SlotState>;

/// One listing's fetches.
#[derive(Default)]
struct SlotState {
    /// Held while fetching: callers for the same listing wait for one fetch.
    fetching: tokio::sync::Mutex<()>,
    /// The last answer and when its fetch started, failures included: during an outage
    /// the attachments of a policy share one failed request instead of each sending
    /// their own. Readable while a fetch is in flight, so a caller that the last
    /// answer serves never waits for the next one.
    answer: Mutex<Option<(Instant, Result<Listing, VultrError>)>>,
}

impl SlotState {
    fn usable(
        &self,
        max_age: Duration,
        written: Option<Instant>,
    ) -> Option<Result<Listing, VultrError>> {
        let answer = locked(&self.answer);
        let (started, answer) = answer.as_ref()?;
        usable(*started, Instant::now(), max_age, written).then(|| answer.clone())
    }
}

/// Writes to one listing's pairs that a verification waits for while attaches are to come.
pub const BATCH: usize = 50;
/// The longest a write waits for its verification listing while attaches are to come.
pub const BATCH_WAIT: Duration = Duration::from_secs(20);

/// What a verification gets: the listing, or when to ask again.
#[derive(Debug, Clone)]
pub enum Verification {
    Listing(Listing),
    /// The listing would verify too few writes yet; ask again after this long.
    Later(Duration),
}

/// Writes to one listing's pairs since it was last fetched.
#[derive(Debug, Default, Clone, Copy)]
struct Unverified {
    count: usize,
    oldest: Option<Instant>,
}

/// Whether a verification should wait for more writes to batch, and how long before it
/// looks again (pure, for the tests).
fn batch_wait(unverified: Unverified, now: Instant) -> Option<Duration> {
    let oldest = unverified.oldest?;
    let waited = now.saturating_duration_since(oldest);
    // No polling meanwhile: when the backlog empties, every object is reconciled again
    // (`Context::backlog`).
    (unverified.count < BATCH && waited < BATCH_WAIT).then(|| BATCH_WAIT - waited)
}

/// How long a write mark is kept: longer than any listing may be reused, so a dropped
/// mark can never let an older listing through.
const WRITE_MARK_MEMORY: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct ListingCache {
    vultr: VultrClient,
    slots: Arc<Mutex<HashMap<Key, Slot>>>,
    /// Per pair: when the last write of this process to it completed.
    written: Arc<Mutex<HashMap<Grant, Instant>>>,
    /// Per listing: the writes no fetch has covered yet.
    unverified: Arc<Mutex<HashMap<Key, Unverified>>>,
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
            unverified: Arc::default(),
        }
    }

    fn slot(&self, source: &ListingSource) -> Slot {
        locked(&self.slots)
            .entry(source.clone())
            .or_default()
            .clone()
    }

    /// The listing that verifies `grant`: a cached one younger than `max_age` that
    /// started after the last write to `grant`, else a new fetch, unless attaches are
    /// still to come and the fetch would verify too small a batch (then `Later`).
    pub async fn for_pair(
        &self,
        grant: &Grant,
        max_age: Duration,
        attaches_to_come: bool,
    ) -> Result<Verification, VultrError> {
        let written = locked(&self.written).get(grant).copied();
        self.fetch(&grant.listing().0, max_age, written, attaches_to_come)
            .await
    }

    /// The listing `source`, fetched now unless an answer younger than `max_age`
    /// (and started after `written`, if given) is cached.
    pub async fn get(
        &self,
        source: &ListingSource,
        max_age: Duration,
        written: Option<Instant>,
    ) -> Result<Listing, VultrError> {
        match self.fetch(source, max_age, written, false).await? {
            Verification::Listing(listing) => Ok(listing),
            // Never deferred when `may_defer` is false.
            Verification::Later(_) => self.list(source).await,
        }
    }

    /// The one path to a listing. A caller the last answer serves takes it; the others
    /// queue on the listing's fetch, and each decides only once it holds it: by then a
    /// fetch that was in flight may serve it, or, for a verification that may wait, too
    /// few writes may be pending.
    async fn fetch(
        &self,
        key: &Key,
        max_age: Duration,
        written: Option<Instant>,
        may_defer: bool,
    ) -> Result<Verification, VultrError> {
        let slot = self.slot(key);
        if let Some(answer) = slot.usable(max_age, written) {
            return answer.map(Verification::Listing);
        }
        let _fetching = slot.fetching.lock().await;
        if let Some(answer) = slot.usable(max_age, written) {
            return answer.map(Verification::Listing);
        }
        if may_defer && written.is_some() {
            let unverified = locked(&self.unverified)
                .get(key)
                .copied()
                .unwrap_or_default();
            if let Some(wait) = batch_wait(unverified, Instant::now()) {
                return Ok(Verification::Later(wait));
            }
        }
        let started = Instant::now();
        locked(&self.unverified).remove(key);
        let answer = self.list(key).await;
        *locked(&slot.answer) = Some((started, answer.clone()));
        answer.map(Verification::Listing)
    }

    async fn list(&self, source: &ListingSource) -> Result<Listing, VultrError> {
        self.vultr.listed_ids(source).await.map(|members| Listing {
            members: Arc::new(members),
            fetched_at: SystemTime::now(),
        })
    }

    /// This process just finished a write to `grant` (also a failed one: a POST or
    /// DELETE that timed out may still have been applied).
    pub fn note_write(&self, grant: &Grant) {
        let now = Instant::now();
        locked(&self.written).insert(grant.clone(), now);
        let mut unverified = locked(&self.unverified);
        let entry = unverified.entry(grant.listing().0).or_default();
        entry.count += 1;
        entry.oldest.get_or_insert(now);
    }

    /// Whether some write waits for a listing to verify it (a batch not fetched yet).
    pub fn has_unverified(&self) -> bool {
        !locked(&self.unverified).is_empty()
    }

    /// The listings at hand did not show `grant` although it was written: only a
    /// listing started from now on may verify it (Vultr's listings lag behind writes).
    pub fn require_newer(&self, grant: &Grant) {
        locked(&self.written).insert(grant.clone(), Instant::now());
    }

    /// Drops slots of listings no PolicyAttachment refers to any more, and old marks.
    pub fn retain(&self, live: &HashSet<Key>) {
        locked(&self.slots).retain(|k, _| live.contains(k));
        locked(&self.unverified).retain(|k, _| live.contains(k));
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

    #[test]
    fn a_verification_batches_until_the_batch_is_full_or_old() {
        let t0 = Instant::now();
        let few = Unverified {
            count: 3,
            oldest: Some(t0),
        };
        assert_eq!(
            batch_wait(few, t0 + Duration::from_secs(4)),
            Some(BATCH_WAIT - Duration::from_secs(4))
        );
        assert_eq!(
            batch_wait(few, t0 + BATCH_WAIT - Duration::from_millis(300)),
            Some(Duration::from_millis(300))
        );
        assert_eq!(batch_wait(few, t0 + BATCH_WAIT), None, "waited long enough");
        let many = Unverified {
            count: BATCH,
            oldest: Some(t0),
        };
        assert_eq!(batch_wait(many, t0), None, "a full batch: fetch");
        assert_eq!(
            batch_wait(Unverified::default(), t0),
            None,
            "nothing written"
        );
    }
}
