//! Per-object exponential backoff with jitter. kube-rs has none (its `error_policy`
//! never hears about successes), so each object's failures are counted in its state
//! (`objects.rs`) and the count is reset when a reconcile succeeds.
//!
//! The retry time is also enforced: a reconcile triggered early by the operator's own
//! status write would otherwise call Vultr again at once, ignoring the backoff and
//! `Retry-After`. Only a change by a person (new generation, a deletion, pausing or
//! resuming) skips it.

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

/// An object's retry state: its consecutive failures and when it may run again.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    failures: u32,
    retry_at: Instant,
    revision: Revision,
}

/// The backoff's bounds (from the `run` flags).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
        }
    }

    /// Records one more failure in `retry` and returns how long to wait before
    /// retrying: `base * 2^(failures-1)` capped at `max`, with "equal jitter" (uniform in
    /// the upper half) so objects that failed together do not retry together. A
    /// server's `Retry-After` is a floor.
    pub fn next_delay(
        &self,
        retry: &mut Option<Retry>,
        revision: Revision,
        retry_after: Option<Duration>,
    ) -> Duration {
        let entry = retry.get_or_insert(Retry {
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
}

impl Retry {
    /// Time left before a retry, unless the object changed since it failed.
    pub fn remaining(&self, revision: Revision) -> Option<Duration> {
        if self.revision != revision {
            return None;
        }
        let left = self.retry_at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Holds until `until` without counting a failure: the next reconcile is already
    /// scheduled, and an early wake (our own status write) must not act before.
    pub fn hold(retry: &mut Option<Self>, revision: Revision, until: Instant) {
        let entry = retry.get_or_insert(Self {
            failures: 0,
            retry_at: until,
            revision,
        });
        entry.retry_at = until;
        entry.revision = revision;
    }

    /// A reconcile succeeded: the failure count starts again (a hold set by that
    /// reconcile stays).
    pub fn clear_failures(&mut self) {
        self.failures = 0;
    }
}

/// A live, unpaused object's first generation (the tests' revision).
#[cfg(test)]
pub const FIRST: Revision = Revision {
    generation: Some(1),
    deleting: false,
    paused: false,
};

#[cfg(test)]
mod tests {
    use super::*;

    const REV: Revision = FIRST;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    fn failures(retry: &Option<Retry>) -> u32 {
        retry.map_or(0, |r| r.failures)
    }

    #[test]
    fn delay_doubles_within_jitter_bounds_and_caps() {
        let (b, mut a) = (backoff(), None);
        for attempt in 1..=10u32 {
            let d = b.next_delay(&mut a, REV, None);
            let exp = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(60));
            assert!(
                d >= exp / 2 && d <= exp + Duration::from_millis(1),
                "attempt {attempt}: {d:?} vs {exp:?}"
            );
        }
        assert_eq!(failures(&a), 10);
    }

    #[test]
    fn the_count_starts_afresh_when_the_object_changes() {
        let (b, mut a) = (backoff(), None);
        for _ in 0..8 {
            b.next_delay(&mut a, REV, None);
        }
        let deleted = Revision {
            deleting: true,
            ..REV
        };
        assert!(b.next_delay(&mut a, deleted, None) <= Duration::from_millis(1001));
        assert_eq!(failures(&a), 1);
    }

    #[test]
    fn a_hold_delays_without_counting_a_failure() {
        let (b, mut a) = (backoff(), None);
        b.next_delay(&mut a, REV, None);
        if let Some(r) = a.as_mut() {
            r.clear_failures();
        }
        Retry::hold(&mut a, REV, Instant::now() + Duration::from_secs(5));
        let retry = a.expect("held");
        assert!(retry.remaining(REV).is_some());
        assert_eq!(retry.failures, 0);
        let deleted = Revision {
            deleting: true,
            ..REV
        };
        assert_eq!(retry.remaining(deleted), None, "a deletion is never held");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let d = backoff().next_delay(&mut None, REV, Some(Duration::from_secs(30)));
        assert!(d >= Duration::from_secs(30));
    }

    #[test]
    fn the_wait_holds_until_the_object_changes() {
        let mut a = None;
        backoff().next_delay(&mut a, REV, Some(Duration::from_secs(30)));
        let retry = a.expect("a retry");
        assert!(
            retry
                .remaining(REV)
                .is_some_and(|d| d > Duration::from_secs(29))
        );
        let deleted = Revision {
            deleting: true,
            ..REV
        };
        assert_eq!(retry.remaining(deleted), None);
        let paused = Revision {
            paused: true,
            ..REV
        };
        assert_eq!(retry.remaining(paused), None, "pausing is a change");
    }
}
