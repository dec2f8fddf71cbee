//! Per-object exponential backoff with jitter. kube-rs has none (its `error_policy`
//! never hears about successes), so failures are counted here per object UID and the
//! count is reset when a reconcile succeeds.
//!
//! The retry time is also enforced: a reconcile triggered early by the operator's own
//! status write would otherwise call Vultr again at once, ignoring the backoff and
//! `Retry-After`. Only a change by a person (new generation, a deletion, pausing or
//! resuming) skips it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngExt;

/// What, on the object, must change for a retry to skip the remaining wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub generation: Option<i64>,
    pub deleting: bool,
    /// Pausing or resuming is a person's change too (an annotation: no new generation).
    pub paused: bool,
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    retry_at: Instant,
    revision: Revision,
}

#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one more failure of `key` and returns how long to wait before retrying:
    /// `base * 2^(failures-1)` capped at `max`, with "equal jitter" (uniform in the upper
    /// half) so objects that failed together do not retry together. A server's
    /// `Retry-After` is a floor.
    pub fn next_delay(
        &self,
        key: &str,
        revision: Revision,
        retry_after: Option<Duration>,
    ) -> Duration {
        let mut entries = self.entries();
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            retry_at: Instant::now(),
            revision,
        });
        if entry.revision != revision {
            // A new generation or a deletion starts afresh: a deletion is never delayed
            // by the attach failures before it.
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(entry.failures.saturating_sub(1).min(30)))
            .min(self.max);
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        let delay = retry_after.map_or(half + Duration::from_millis(jitter), |ra| {
            (half + Duration::from_millis(jitter)).max(ra)
        });
        entry.retry_at = Instant::now() + delay;
        entry.revision = revision;
        delay
    }

    /// Time left before `key` may be retried, unless the object changed since it failed.
    pub fn remaining(&self, key: &str, revision: Revision) -> Option<Duration> {
        let entries = self.entries();
        let entry = entries.get(key)?;
        if entry.revision != revision {
            return None;
        }
        let left = entry.retry_at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Holds `key` until `until` without counting a failure: the next reconcile is
    /// already scheduled, and an early wake (our own status write) must not act before.
    pub fn hold(&self, key: &str, revision: Revision, until: Instant) {
        let mut entries = self.entries();
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            retry_at: until,
            revision,
        });
        entry.retry_at = until;
        entry.revision = revision;
    }

    /// A reconcile of `key` succeeded: the failure count starts again (a hold set by
    /// that reconcile stays).
    pub fn clear_failures(&self, key: &str) {
        if let Some(entry) = self.entries().get_mut(key) {
            entry.failures = 0;
        }
    }

    /// Forgets everything about `key` (the object is gone).
    pub fn reset(&self, key: &str) {
        self.entries().remove(key);
    }

    /// Keeps only the keys `keep` says are still in use.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.entries().retain(|key, _| keep(key));
    }

    /// How many entries it holds (the per-object memory metric).
    pub fn tracked(&self) -> usize {
        self.entries().len()
    }

    /// Number of consecutive failures recorded for `key`.
    #[cfg(test)]
    fn failures(&self, key: &str) -> u32 {
        self.entries().get(key).map_or(0, |e| e.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: Revision = Revision {
        generation: Some(1),
        deleting: false,
        paused: false,
    };

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    #[test]
    fn delay_doubles_within_jitter_bounds_and_caps() {
        let b = backoff();
        for attempt in 1..=10u32 {
            let d = b.next_delay("a", REV, None);
            let exp = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(60));
            assert!(
                d >= exp / 2 && d <= exp + Duration::from_millis(1),
                "attempt {attempt}: {d:?} vs {exp:?}"
            );
        }
        assert_eq!(b.failures("a"), 10);
    }

    #[test]
    fn objects_back_off_independently_and_reset_on_success() {
        let b = backoff();
        for _ in 0..5 {
            b.next_delay("a", REV, None);
        }
        assert!(b.next_delay("b", REV, None) <= Duration::from_millis(1001));
        b.reset("a");
        assert_eq!(b.failures("a"), 0);
        assert!(b.next_delay("a", REV, None) <= Duration::from_millis(1001));
    }

    #[test]
    fn the_count_starts_afresh_when_the_object_changes() {
        let b = backoff();
        for _ in 0..8 {
            b.next_delay("a", REV, None);
        }
        let deleted = Revision {
            deleting: true,
            ..REV
        };
        assert!(b.next_delay("a", deleted, None) <= Duration::from_millis(1001));
        assert_eq!(b.failures("a"), 1);
    }

    #[test]
    fn a_hold_delays_without_counting_a_failure() {
        let b = backoff();
        b.next_delay("a", REV, None);
        b.clear_failures("a");
        b.hold("a", REV, Instant::now() + Duration::from_secs(5));
        assert!(b.remaining("a", REV).is_some());
        assert_eq!(b.failures("a"), 0);
        let deleted = Revision {
            deleting: true,
            ..REV
        };
        assert_eq!(b.remaining("a", deleted), None, "a deletion is never held");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let b = backoff();
        assert!(b.next_delay("a", REV, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }

    #[test]
    fn the_wait_holds_until_the_object_changes() {
        let b = backoff();
        b.next_delay("a", REV, Some(Duration::from_secs(30)));
        assert!(
            b.remaining("a", REV)
                .is_some_and(|d| d > Duration::from_secs(29))
        );
        let deleted = Revision {
            deleting: true,
            ..REV
        };
        assert_eq!(b.remaining("a", deleted), None);
        let paused = Revision {
            paused: true,
            ..REV
        };
        assert_eq!(b.remaining("a", paused), None, "pausing is a change");
        assert_eq!(b.remaining("other", REV), None);
    }
}
