//! State shared by the server tasks and the [`crate::Sim`] handle: the organisations,
//! which key belongs to which, and what spans them all (journal, faults, rate limit,
//! behaviour).

use std::collections::HashMap;
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

/// Who a `/v2` request acts as: the organisation its key belongs to (an index into
/// [`Shared::orgs`]) and what the key may do. Put into the request's extensions once the
/// request is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) org: usize,
    pub(crate) access: Access,
}

#[derive(Debug)]
pub(crate) struct Shared {
    /// Fixed at start; the default organisation first.
    pub(crate) orgs: Vec<OrgState>,
    pub(crate) journal: Mutex<Journal>,
    pub(crate) faults: Mutex<FaultSet>,
    /// One bucket for every key of every organisation: Vultr limits per source IP.
    pub(crate) limiter: Mutex<Option<TokenBucket>>,
    pub(crate) behaviour: Mutex<Behaviour>,
    /// Every accepted key, with the organisation it belongs to.
    keys: Mutex<HashMap<String, Caller>>,
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

fn invalid_input(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

impl Shared {
    /// Errors: a seed that does not resolve (`InvalidData`); an organisation name that is
    /// empty or used twice, or a key of two organisations (`InvalidInput`).
    pub(crate) fn new(config: &SimConfig) -> std::io::Result<Self> {
        let now = SystemTime::now();
        let configs = config.all_orgs();
        let mut orgs = Vec::with_capacity(configs.len());
        let mut keys = HashMap::new();
        for (index, org) in configs.iter().enumerate() {
            if org.name.is_empty() {
                return Err(invalid_input("an organisation needs a name".to_owned()));
            }
            if orgs.iter().any(|o: &OrgState| o.name == org.name) {
                return Err(invalid_input(format!(
                    "two organisations are named {:?}",
                    org.name
                )));
            }
            let mut store = Store::default();
            org.seed.apply(&mut store, now).map_err(|e| match index {
                // The default organisation's errors read as before organisations existed.
                0 => std::io::Error::from(e),
                _ => std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("organisation {:?}: {e}", org.name),
                ),
            })?;
            let api_keys = ApiKeys {
                api_keys: org.api_keys.clone(),
                read_only_keys: org.read_only_keys.clone(),
            };
            insert_keys(&mut keys, index, &api_keys).map_err(invalid_input)?;
            orgs.push(OrgState {
                name: org.name.clone(),
                email: org.email.clone(),
                created: now,
                store: Mutex::new(store),
            });
        }
        let behaviour = Behaviour {
            listing_shape: config.listing_shape,
            ..Behaviour::default()
        };
        Ok(Self {
            orgs,
            journal: Mutex::default(),
            faults: Mutex::default(),
            limiter: Mutex::new(
                config
                    .rate_limit
                    .and_then(|r| TokenBucket::new(r, Instant::now())),
            ),
            behaviour: Mutex::new(behaviour),
            keys: Mutex::new(keys),
            held: AtomicUsize::new(0),
        })
    }

    /// The organisation named `name`, as an index into `orgs`.
    pub(crate) fn org_index(&self, name: &str) -> Option<usize> {
        self.orgs.iter().position(|o| o.name == name)
    }

    /// The organisation and access of a key; `None` for an unknown key.
    pub(crate) fn caller(&self, key: &str) -> Option<Caller> {
        lock(&self.keys).get(key).copied()
    }

    /// Replaces the keys of organisation `org`; requests already past auth are not
    /// affected. Err (and no change) for a key of another organisation.
    pub(crate) fn set_api_keys(&self, org: usize, keys: &ApiKeys) -> Result<(), String> {
        let mut table = lock(&self.keys);
        let mut next: HashMap<String, Caller> = table
            .iter()
            .filter(|(_, c)| c.org != org)
            .map(|(k, c)| (k.clone(), *c))
            .collect();
        insert_keys(&mut next, org, keys)?;
        *table = next;
        Ok(())
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

    pub(crate) fn set_behaviour(&self, b: Behaviour) {
        *lock(&self.behaviour) = b;
    }

    pub(crate) fn set_rate_limit(&self, limit: Option<RateLimit>) {
        *lock(&self.limiter) = limit.and_then(|r| TokenBucket::new(r, Instant::now()));
    }

    pub(crate) fn rate_limit(&self) -> Option<RateLimit> {
        lock(&self.limiter).as_ref().map(TokenBucket::limit)
    }

    /// Every entry, or those of the organisation named `org`.
    pub(crate) fn journal(&self, org: Option<&str>) -> Vec<JournalEntry> {
        lock(&self.journal).entries(org)
    }

    pub(crate) fn clear_journal(&self, org: Option<&str>) {
        lock(&self.journal).clear(org);
    }

    /// A fault for the requests of the organisation named `org`, or of every request.
    /// Err names an organisation that does not exist.
    pub(crate) fn add_fault(&self, fault: Fault, org: Option<String>) -> Result<u64, String> {
        if let Some(name) = org.as_deref()
            && self.org_index(name).is_none()
        {
            return Err(format!("no organisation named {name:?}"));
        }
        Ok(lock(&self.faults).add(fault, org, Instant::now()))
    }

    pub(crate) fn remove_fault(&self, id: u64) -> bool {
        lock(&self.faults).remove(id)
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub(crate) fn faults(&self) -> Vec<(u64, Option<String>, Fault)> {
        lock(&self.faults).list(Instant::now())
    }
}

/// Adds `keys` for organisation `org` to `table`; a key listed as read-only is read-only
/// even if also listed as full. Err for a key that belongs to another organisation.
fn insert_keys(
    table: &mut HashMap<String, Caller>,
    org: usize,
    keys: &ApiKeys,
) -> Result<(), String> {
    let full = keys.api_keys.iter().map(|k| (k, Access::Full));
    let read_only = keys.read_only_keys.iter().map(|k| (k, Access::ReadOnly));
    for (key, access) in full.chain(read_only) {
        match table.insert(key.clone(), Caller { org, access }) {
            Some(other) if other.org != org => {
                return Err(format!(
                    "the key with fingerprint {} belongs to another organisation",
                    crate::journal::key_fingerprint(key)
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One organisation: its name and email (what `GET /v2/account` answers) and its objects.
#[derive(Debug)]
pub(crate) struct OrgState {
    pub(crate) name: String,
    pub(crate) email: String,
    /// When the simulator started: the account's `last_payment_date`.
    pub(crate) created: SystemTime,
    pub(crate) store: Mutex<Store>,
}

impl OrgState {
    /// Loads a seed all or nothing.
    pub(crate) fn load_seed(&self, seed: &Seed) -> Result<(), SeedError> {
        let mut store = self.store();
        let mut copy = store.clone();
        seed.apply(&mut copy, SystemTime::now())?;
        *store = copy;
        Ok(())
    }

    /// The organisation's objects, locked. The control operations of the Org handle and
    /// of `/_sim` go through it: out-of-band changes are visible in listings at once and
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
        self.store().snapshot(Instant::now())
    }
}
