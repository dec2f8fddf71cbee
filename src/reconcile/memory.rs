//! What this process remembers about objects between reconciles, by UID: an attach it
//! sent that the listing does not show yet, and a revocation it completed (so that a
//! reconcile from a stale cache entry does not revoke twice), a pause annotation
//! value already reported as unrecognised, and which objects have had a turn.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a revoked UID is remembered; the watch cache catches up long before.
const REVOKED_MEMORY: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct Memory {
    attach_sent: Mutex<HashMap<String, Instant>>,
    revoked: Mutex<HashMap<String, Instant>>,
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

    pub fn mark_revoked(&self, uid: &str) {
        let mut revoked = locked(&self.revoked);
        revoked.retain(|_, at| at.elapsed() < REVOKED_MEMORY);
        revoked.insert(uid.to_owned(), Instant::now());
    }

    pub fn was_revoked(&self, uid: &str) -> bool {
        locked(&self.revoked).contains_key(uid)
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

    /// The object is gone: forget what was reported about it.
    pub fn forget(&self, uid: &str) {
        self.attach_seen(uid);
        locked(&self.pause_reported).remove(uid);
        locked(&self.turned).remove(uid);
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
        m.mark_revoked("b");
        assert!(m.was_revoked("b") && !m.was_revoked("a"));
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
    }
}
