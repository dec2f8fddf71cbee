//! What this process remembers about objects between reconciles, by UID: an attach it
//! sent that the listing does not show yet, a deletion it handled (revoked, or released
//! in any other way: a reconcile from a stale cache entry neither revokes twice nor
//! attaches again), a pause annotation value already reported as unrecognised, and
//! which objects have had a turn.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A handled deletion is remembered at least this long, and after that until neither
/// watch cache holds the object any more (see [`Memory::prune`]).
const DELETION_MEMORY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Memory {
    attach_sent: Mutex<HashMap<String, Instant>>,
    deletions: Mutex<HashMap<String, Instant>>,
    /// The unrecognised pause annotation value last reported per UID.
    pause_reported: Mutex<HashMap<String, String>>,
    /// Objects whose live reconcile has run to an end at least once (any outcome).
    turned: Mutex<HashSet<String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Memory {
    pub fn mark_attach_sent(&self, uid: &str) {
        locked(&self.attach_sent).insert(uid.to_owned(), Instant::now());
    }

    /// When the attach of `uid` was sent, if it has not been seen in a listing yet.
    pub fn attach_sent_at(&self, uid: &str) -> Option<Instant> {
        locked(&self.attach_sent).get(uid).copied()
    }

    /// The grant of `uid` was seen in a listing: no attach is awaited any more.
    pub fn attach_seen(&self, uid: &str) {
        locked(&self.attach_sent).remove(uid);
    }

    /// The deletion of `uid` was handled: revoked, or its finalizer released.
    pub fn mark_deletion_handled(&self, uid: &str) {
        locked(&self.deletions).insert(uid.to_owned(), Instant::now());
    }

    /// Whether this process handled the deletion of `uid`: a snapshot that shows it
    /// live is stale, and nothing may be attached for it again.
    pub fn deletion_handled(&self, uid: &str) -> bool {
        locked(&self.deletions).contains_key(uid)
    }

    /// True the first time `value` is seen as an unrecognised pause value of `uid`.
    pub fn first_unrecognised_pause(&self, uid: &str, value: &str) -> bool {
        locked(&self.pause_reported)
            .insert(uid.to_owned(), value.to_owned())
            .as_deref()
            != Some(value)
    }

    /// A live reconcile of `uid` ran to an end (attach sent, verified, failed, paused).
    pub fn mark_turn(&self, uid: &str) {
        if !self.had_turn(uid) {
            locked(&self.turned).insert(uid.to_owned());
        }
    }

    pub fn had_turn(&self, uid: &str) -> bool {
        locked(&self.turned).contains(uid)
    }

    /// The object is gone: forget what was reported about it, and remember that its
    /// deletion was handled.
    pub fn forget(&self, uid: &str) {
        self.attach_seen(uid);
        locked(&self.pause_reported).remove(uid);
        locked(&self.turned).remove(uid);
        self.mark_deletion_handled(uid);
    }

    /// Drops what is kept of objects that neither watch cache holds (`cached` says
    /// which UIDs they hold); a handled deletion only once [`DELETION_MEMORY`] old.
    pub fn prune(&self, cached: impl Fn(&str) -> bool) {
        locked(&self.deletions).retain(|uid, at| cached(uid) || at.elapsed() < DELETION_MEMORY);
        locked(&self.attach_sent).retain(|uid, _| cached(uid));
        locked(&self.pause_reported).retain(|uid, _| cached(uid));
        locked(&self.turned).retain(|uid| cached(uid));
    }

    /// How many UIDs the memory holds, in all (the per-object memory metric).
    pub fn tracked(&self) -> usize {
        locked(&self.attach_sent).len()
            + locked(&self.deletions).len()
            + locked(&self.pause_reported).len()
            + locked(&self.turned).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_uid() {
        let m = Memory::default();
        assert!(m.attach_sent_at("a").is_none());
        m.mark_attach_sent("a");
        assert!(m.attach_sent_at("a").is_some());
        assert!(m.attach_sent_at("b").is_none());
        m.attach_seen("a");
        assert!(m.attach_sent_at("a").is_none());
        m.mark_deletion_handled("b");
        assert!(m.deletion_handled("b") && !m.deletion_handled("a"));
        assert!(m.first_unrecognised_pause("a", "True"));
        assert!(!m.first_unrecognised_pause("a", "True"));
        assert!(m.first_unrecognised_pause("a", "yes"));
        m.forget("a");
        assert!(m.first_unrecognised_pause("a", "yes"));
        m.mark_turn("c");
        assert!(m.had_turn("c") && !m.had_turn("d"));
        m.forget("c");
        assert!(
            !m.had_turn("c"),
            "a re-created object waits for its turn again"
        );
        assert!(
            m.deletion_handled("c"),
            "a forgotten object's deletion was handled"
        );
    }

    #[test]
    fn pruning_keeps_cached_objects_and_young_deletions() {
        let m = Memory::default();
        m.mark_attach_sent("live");
        m.mark_turn("live");
        m.mark_attach_sent("gone");
        m.forget("deleted");
        m.prune(|uid| uid == "live");
        assert!(m.attach_sent_at("live").is_some() && m.had_turn("live"));
        assert!(m.attach_sent_at("gone").is_none());
        assert!(m.deletion_handled("deleted"), "kept while young");
        locked(&m.deletions).insert("old".into(), Instant::now() - 2 * DELETION_MEMORY);
        m.prune(|_| false);
        assert!(m.deletion_handled("deleted") && !m.deletion_handled("old"));
        assert_eq!(m.tracked(), 1);
    }
}
