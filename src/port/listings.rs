//! Shared cache of attachment listings. One paged `GET /v2/policies/{id}/users` (or
//! `/groups`) serves every user (group) PolicyAttachment of that policy, and one
//! `GET /v2/roles/{id}/policies` every PolicyAttachment of that role (Vultr lists role
//! grants per role): concurrent callers for the same listing wait for one fetch instead
//! of each sending their own, so verification cost grows with listings, not attachments.
//!
//! Writes do not throw a listing away. Each write marks its pair with the instant it
//! completed, and a listing serves a pair only if its fetch started after that mark: a
//! verification never uses a listing older than the last write to its pair, yet one
//! listing fetched after a burst of 100 attaches to a policy verifies all 100. A mark
//! also says whether the write was a detach: Vultr's listings lag behind detaches as
//! they do behind attaches, so for `listing_lag` after a detach of a pair, a listing
//! that still shows the pair is no proof that it is attached (see [`proves_presence`]).
//!
//! Only successes are reused. A failed fetch answers the callers that waited for that
//! very request, and the next caller asks again; and an answer fetched with an API key
//! that has since been replaced is never served (`VultrClient::key_epoch`).
//!
//! While attaches are still to come (objects that have not had their first turn), a
//! verification that needs a new listing waits until the listing will verify a batch
//! ([`BATCH`] writes to its pairs since the last fetch; or [`MIN_BATCH`] once the oldest
//! of them is [`BATCH_WAIT`] old; or any number once it is [`MAX_WAIT`] old): every call
//! spent on a listing is a call not spent on an attach, and with many policies each one
//! gets few writes a second, so a listing must verify enough of them to stay a small
//! share of the calls (at most one per [`MIN_BATCH`] attaches).
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
    /// When the fetch started.
    started: Instant,
    /// A member this listing shows that is no proof of an attachment: the caller's pair,
    /// detached by this process too recently for the listing to have caught up.
    unproven: Option<String>,
}

impl Listing {
    pub fn contains(&self, id: &str) -> bool {
        self.unproven.as_deref() != Some(id) && self.members.contains(id)
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
    /// The last fetch. Readable while the next one is in flight, so a caller that the
    /// last listing serves never waits for the next one.
    last: Mutex<Option<Fetched>>,
}

/// One completed fetch of a listing.
struct Fetched {
    /// Counts the slot's fetches: a caller that queued before fetch `seq` completed
    /// waited for it.
    seq: u64,
    /// The API key the request carried (`VultrClient::key_epoch`).
    key_epoch: u64,
    answer: Result<Listing, VultrError>,
}

impl SlotState {
    /// The last listing, if it may serve this caller: a success, fetched with the key
    /// in use, young enough and started after the caller's write.
    fn usable(
        &self,
        max_age: Duration,
        written: Option<Instant>,
        key_epoch: u64,
    ) -> Option<Listing> {
        let last = locked(&self.last);
        let last = last.as_ref()?;
        let listing = last.answer.as_ref().ok()?;
        (last.key_epoch == key_epoch && usable(listing.started, Instant::now(), max_age, written))
            .then(|| listing.clone())
    }

    /// How many fetches have completed.
    fn seq(&self) -> u64 {
        locked(&self.last).as_ref().map_or(0, |f| f.seq)
    }

    /// The failure of the fetch that completed while a caller waited (it had seen
    /// `seen` fetches when it queued): that caller shares it.
    fn failure_since(&self, seen: u64) -> Option<VultrError> {
        let last = locked(&self.last);
        let last = last.as_ref().filter(|f| f.seq > seen)?;
        last.answer.as_ref().err().cloned()
    }

    fn store(&self, key_epoch: u64, answer: Result<Listing, VultrError>) {
        let mut last = locked(&self.last);
        let seq = last.as_ref().map_or(0, |f| f.seq) + 1;
        *last = Some(Fetched {
            seq,
            key_epoch,
            answer,
        });
    }
}

/// What a write to a pair was, for [`ListingCache::note_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A POST; `applied` when Vultr confirmed it (a failed or refused POST may not have
    /// changed anything).
    Attach { applied: bool },
    /// A DELETE, whatever its outcome (one that failed may still have been applied).
    Detach,
}

/// The last write of this process to a pair.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// When it completed: only listings started later may verify the pair.
    at: Instant,
    /// When the pair was last detached, unless an applied attach came after.
    detached_at: Option<Instant>,
}

/// Whether a listing started at `started` that shows a pair proves it attached, given
/// when this process last detached it (pure, for the tests): not while the listing may
/// still lag behind the detach.
fn proves_presence(started: Instant, detached_at: Option<Instant>, listing_lag: Duration) -> bool {
    detached_at.is_none_or(|detached| started >= detached + listing_lag)
}

/// Writes to one listing's pairs that a verification waits for while attaches are to come.
pub const BATCH: usize = 50;
/// After [`BATCH_WAIT`], a listing is fetched once it verifies this many writes.
pub const MIN_BATCH: usize = 16;
/// How long a write waits for a full batch while attaches are to come.
pub const BATCH_WAIT: Duration = Duration::from_secs(20);
/// The longest a write waits for its verification listing while attaches are to come.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

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
    let batch = if waited < BATCH_WAIT {
        BATCH
    } else {
        MIN_BATCH
    };
    if unverified.count >= batch || waited >= MAX_WAIT {
        return None;
    }
    // No polling meanwhile: a caller of the same listing fetches once the batch is
    // there, and when the backlog empties, the objects put off are reconciled again
    // (`Context::backlog`).
    Some(if waited < BATCH_WAIT {
        BATCH_WAIT - waited
    } else {
        MAX_WAIT - waited
    })
}

/// How long a write mark is kept: longer than any listing may be reused or lag behind a
/// detach, so a dropped mark can never let an older listing through.
const WRITE_MARK_MEMORY: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct ListingCache {
    vultr: VultrClient,
    /// How long a listing may lag behind a write (the attach visibility timeout).
    listing_lag: Duration,
    slots: Arc<Mutex<HashMap<Key, Slot>>>,
    /// Per pair: the last write of this process to it.
    written: Arc<Mutex<HashMap<Grant, Mark>>>,
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
    /// `listing_lag`: how long Vultr's listings may go on showing a detached pair.
    pub fn new(vultr: VultrClient, listing_lag: Duration) -> Self {
        Self {
            vultr,
            listing_lag,
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
        let mark = locked(&self.written).get(grant).copied();
        let verification = self
            .fetch(
                &grant.listing().0,
                max_age,
                mark.map(|m| m.at),
                attaches_to_come,
            )
            .await?;
        Ok(match verification {
            Verification::Listing(mut listing) => {
                let detached_at = mark.and_then(|m| m.detached_at);
                if !proves_presence(listing.started, detached_at, self.listing_lag) {
                    listing.unproven = Some(grant.listing().1.to_owned());
                }
                Verification::Listing(listing)
            }
            later => later,
        })
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
        if let Some(listing) = slot.usable(max_age, written, self.vultr.key_epoch()) {
            return Ok(Verification::Listing(listing));
        }
        let seen = slot.seq();
        let _fetching = slot.fetching.lock().await;
        if let Some(failure) = slot.failure_since(seen) {
            // The request this caller waited for failed: one failed request per outage
            // and listing, not one per waiting attachment.
            return Err(failure);
        }
        if let Some(listing) = slot.usable(max_age, written, self.vultr.key_epoch()) {
            return Ok(Verification::Listing(listing));
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
        let key_epoch = self.vultr.key_epoch();
        locked(&self.unverified).remove(key);
        let answer = self.list(key).await;
        slot.store(key_epoch, answer.clone());
        answer.map(Verification::Listing)
    }

    async fn list(&self, source: &ListingSource) -> Result<Listing, VultrError> {
        let started = Instant::now();
        self.vultr.listed_ids(source).await.map(|members| Listing {
            members: Arc::new(members),
            fetched_at: SystemTime::now(),
            started,
            unproven: None,
        })
    }

    /// This process just finished a write to `grant` (also a failed one: a POST or
    /// DELETE that timed out may still have been applied).
    pub fn note_write(&self, grant: &Grant, write: Write) {
        let now = Instant::now();
        {
            let mut written = locked(&self.written);
            let previous = written.get(grant).and_then(|m| m.detached_at);
            let detached_at = match write {
                Write::Detach => Some(now),
                Write::Attach { applied: true } => None,
                Write::Attach { applied: false } => previous,
            };
            written.insert(
                grant.clone(),
                Mark {
                    at: now,
                    detached_at,
                },
            );
        }
        let mut unverified = locked(&self.unverified);
        let entry = unverified.entry(grant.listing().0).or_default();
        entry.count += 1;
        entry.oldest.get_or_insert(now);
    }

    /// The listings at hand did not show `grant` although it was written: only a
    /// listing started from now on may verify it (Vultr's listings lag behind writes).
    pub fn require_newer(&self, grant: &Grant) {
        let now = Instant::now();
        locked(&self.written)
            .entry(grant.clone())
            .and_modify(|m| m.at = now)
            .or_insert(Mark {
                at: now,
                detached_at: None,
            });
    }

    /// Drops slots of listings no PolicyAttachment refers to any more, and old marks.
    pub fn retain(&self, live: &HashSet<Key>) {
        locked(&self.slots).retain(|k, _| live.contains(k));
        locked(&self.unverified).retain(|k, _| live.contains(k));
        locked(&self.written).retain(|_, m| m.at.elapsed() < WRITE_MARK_MEMORY);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::domain::Subject;
    use crate::vultr::ApiKey;
    use crate::vultr::fake::{FakeVultr, Reply, paged};

    const POLICY: &str = "62948e0d-b09d-4d08-9554-3985b635cb17";
    const USER: &str = "8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b";
    const MAX_AGE: Duration = Duration::from_secs(60);

    fn grant() -> Grant {
        Grant {
            policy_id: POLICY.into(),
            subject: Subject::User(USER.into()),
        }
    }

    /// A listing that shows the pair; the first `failures` requests answer 503 (slowly,
    /// so that concurrent callers queue behind them).
    async fn vultr(failures: usize) -> FakeVultr {
        let calls = AtomicUsize::new(0);
        FakeVultr::start(move |r| {
            if calls.fetch_add(1, Ordering::SeqCst) < failures {
                Reply::error(503, "down").delayed(Duration::from_millis(200))
            } else {
                paged("users", &[json!({"id": USER})], 100, r)
            }
        })
        .await
    }

    async fn listing(cache: &ListingCache) -> Result<Listing, VultrError> {
        match cache.for_pair(&grant(), MAX_AGE, false).await? {
            Verification::Listing(listing) => Ok(listing),
            Verification::Later(_) => panic!("never deferred without attaches to come"),
        }
    }

    #[tokio::test]
    async fn a_failure_answers_only_the_callers_that_waited_for_it() {
        let fake = vultr(1).await;
        let cache = ListingCache::new(fake.client(), Duration::from_secs(30));
        let waiting = (0..5).map(|_| listing(&cache));
        for answer in futures::future::join_all(waiting).await {
            assert_eq!(answer.unwrap_err().reason(), "ApiUnavailable");
        }
        assert_eq!(
            fake.requests().len(),
            1,
            "one failed request for all who waited"
        );
        // The next caller asks Vultr again instead of getting the failure from a cache.
        assert!(listing(&cache).await.unwrap().shows(&grant()));
        assert_eq!(fake.requests().len(), 2);
        // A success is reused.
        listing(&cache).await.unwrap();
        assert_eq!(fake.requests().len(), 2);
    }

    #[tokio::test]
    async fn a_new_api_key_drops_the_listings_fetched_with_the_old_one() {
        let fake = vultr(0).await;
        let client = fake.client();
        let cache = ListingCache::new(client.clone(), Duration::from_secs(30));
        listing(&cache).await.unwrap();
        listing(&cache).await.unwrap();
        assert_eq!(fake.requests().len(), 1);
        client
            .set_api_key(&ApiKey::new("ROTATED-KEY", "a test").unwrap())
            .unwrap();
        listing(&cache).await.unwrap();
        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[1].authorization.as_deref(),
            Some("Bearer ROTATED-KEY")
        );
    }

    #[tokio::test]
    async fn a_listing_that_may_lag_a_detach_does_not_prove_the_pair() {
        let fake = vultr(0).await;
        let cache = ListingCache::new(fake.client(), Duration::from_secs(30));
        assert!(listing(&cache).await.unwrap().shows(&grant()));
        cache.note_write(&grant(), Write::Detach);
        let after_detach = listing(&cache).await.unwrap();
        assert_eq!(fake.requests().len(), 2, "a listing newer than the detach");
        assert!(
            after_detach.members.contains(USER),
            "Vultr still lists the pair"
        );
        assert!(!after_detach.shows(&grant()), "but that is no proof");
        // A refused attach may have changed nothing: still no proof.
        cache.note_write(&grant(), Write::Attach { applied: false });
        assert!(!listing(&cache).await.unwrap().shows(&grant()));
        // An applied attach makes the listing proof again.
        cache.note_write(&grant(), Write::Attach { applied: true });
        assert!(listing(&cache).await.unwrap().shows(&grant()));
    }

    #[test]
    fn a_detach_is_proven_wrong_only_by_a_listing_past_the_lag() {
        let t0 = Instant::now();
        let lag = Duration::from_secs(5);
        assert!(proves_presence(t0, None, lag), "never detached");
        assert!(!proves_presence(t0, Some(t0), lag));
        assert!(!proves_presence(t0 + Duration::from_secs(4), Some(t0), lag));
        assert!(proves_presence(t0 + lag, Some(t0), lag));
        assert!(proves_presence(t0 + Duration::from_secs(6), Some(t0), lag));
    }

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
    fn a_verification_batches_until_the_batch_is_full_or_big_enough_and_old() {
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
        assert_eq!(
            batch_wait(few, t0 + BATCH_WAIT),
            Some(MAX_WAIT - BATCH_WAIT),
            "too few to be worth a listing yet"
        );
        assert_eq!(batch_wait(few, t0 + MAX_WAIT), None, "waited long enough");
        let some = Unverified {
            count: MIN_BATCH,
            oldest: Some(t0),
        };
        assert_eq!(
            batch_wait(some, t0 + Duration::from_secs(1)),
            Some(BATCH_WAIT - Duration::from_secs(1)),
            "a full batch may still come"
        );
        assert_eq!(
            batch_wait(some, t0 + BATCH_WAIT),
            None,
            "enough, after the wait"
        );
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
