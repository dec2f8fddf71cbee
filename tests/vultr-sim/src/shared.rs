//! State shared by the server tasks and the [`crate::Sim`] handle.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use crate::config::{ApiKeys, Behaviour, RateLimit, SimConfig};
use crate::faults::{Fault, FaultSet};
use crate::journal::{Journal, JournalEntry};
use crate::ratelimit::TokenBucket;
use crate::seed::{Seed, SeedError};
use crate::state::{AttachOutcome, DetachOutcome, Snapshot, Store, Subject};

/// `assigned_by` of attachments made out of band.
const ADMIN: &str = "sim-admin";

/// Locks a mutex; a panic elsewhere while holding it leaves data that is still
/// consistent enough for a test double, so poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Full,
    ReadOnly,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) journal: Mutex<Journal>,
    pub(crate) faults: Mutex<FaultSet>,
    pub(crate) limiter: Mutex<Option<TokenBucket>>,
    pub(crate) behaviour: Mutex<Behaviour>,
    keys: Mutex<Keys>,
    /// Requests a hold fault is holding now.
    held: AtomicUsize,
}

/// Counts one held request while it lives.
pub(crate) struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Keys {
    full: HashSet<String>,
    read_only: HashSet<String>,
}

impl From<&ApiKeys> for Keys {
    fn from(k: &ApiKeys) -> Self {
        Self {
            full: k.api_keys.iter().cloned().collect(),
            read_only: k.read_only_keys.iter().cloned().collect(),
        }
    }
}

impl Shared {
    pub(crate) fn new(config: &SimConfig) -> Result<Self, SeedError> {
        let mut store = Store::default();
        config.seed.apply(&mut store, SystemTime::now())?;
        let behaviour = Behaviour {
            listing_shape: config.listing_shape,
            ..Behaviour::default()
        };
        Ok(Self {
            store: Mutex::new(store),
            journal: Mutex::default(),
            faults: Mutex::default(),
            limiter: Mutex::new(
                config
                    .rate_limit
                    .and_then(|r| TokenBucket::new(r, Instant::now())),
            ),
            behaviour: Mutex::new(behaviour),
            keys: Mutex::new(Keys::from(&ApiKeys {
                api_keys: config.api_keys.clone(),
                read_only_keys: config.read_only_keys.clone(),
            })),
            held: AtomicUsize::new(0),
        })
    }

    /// A key listed as read-only is read-only even if also listed as full.
    pub(crate) fn access(&self, key: &str) -> Option<Access> {
        let keys = lock(&self.keys);
        if keys.read_only.contains(key) {
            Some(Access::ReadOnly)
        } else if keys.full.contains(key) {
            Some(Access::Full)
        } else {
            None
        }
    }

    /// Replaces every accepted key; requests already past auth are not affected.
    pub(crate) fn set_api_keys(&self, keys: &ApiKeys) {
        *lock(&self.keys) = Keys::from(keys);
    }

    /// Counts a held request until the guard is dropped.
    pub(crate) fn hold(&self) -> Held<'_> {
        self.held.fetch_add(1, Ordering::SeqCst);
        Held(&self.held)
    }

    /// Requests held by a hold fault right now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub(crate) fn behaviour(&self) -> Behaviour {
        *lock(&self.behaviour)
    }

    pub(crate) fn set_rate_limit(&self, limit: Option<RateLimit>) {
        *lock(&self.limiter) = limit.and_then(|r| TokenBucket::new(r, Instant::now()));
    }

    pub(crate) fn rate_limit(&self) -> Option<RateLimit> {
        lock(&self.limiter).as_ref().map(TokenBucket::limit)
    }

    /// Loads a seed all or nothing.
    pub(crate) fn load_seed(&self, seed: &Seed) -> Result<(), SeedError> {
        let mut store = self.store();
        let mut copy = store.clone();
        seed.apply(&mut copy, SystemTime::now())?;
        *store = copy;
        Ok(())
    }

    /// The organization, locked. The control operations of the Sim handle and of
    /// `/_sim` go through it: out-of-band changes are visible in listings at once and
    /// are not journaled.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// An out-of-band attach, visible at once.
    pub(crate) fn attach(&self, kind: Subject, pair: (&str, &str)) -> AttachOutcome {
        self.store()
            .attach(kind, pair, SystemTime::now(), None, ADMIN)
    }

    /// An out-of-band detach, gone from listings at once.
    pub(crate) fn detach(&self, kind: Subject, pair: (&str, &str)) -> DetachOutcome {
        self.store().detach(kind, pair, None)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        lock(&self.store).snapshot(Instant::now())
    }

    pub(crate) fn journal(&self) -> Vec<JournalEntry> {
        lock(&self.journal).entries()
    }

    pub(crate) fn clear_journal(&self) {
        lock(&self.journal).clear();
    }

    pub(crate) fn add_fault(&self, fault: Fault) -> u64 {
        lock(&self.faults).add(fault, Instant::now())
    }

    pub(crate) fn remove_fault(&self, id: u64) -> bool {
        lock(&self.faults).remove(id)
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub(crate) fn faults(&self) -> Vec<(u64, Fault)> {
        lock(&self.faults).list(Instant::now())
    }

    pub(crate) fn set_behaviour(&self, b: Behaviour) {
        *lock(&self.behaviour) = b;
    }
}
