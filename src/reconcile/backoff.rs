//! Per-object exponential backoff with jitter. kube-rs has none (its `error_policy`
//! never hears about successes), so failures are counted here per object UID and the
//! count is reset when a reconcile succeeds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records one more failure of `key` and returns how long to wait before retrying:
    /// `base * 2^(failures-1)` capped at `max`, with "equal jitter" (uniform in the upper
    /// half) so objects that failed together do not retry together. A server's
    /// `Retry-After` is a floor.
    pub fn next_delay(&self, key: &str, retry_after: Option<Duration>) -> Duration {
        let failures = {
            let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)))
            .min(self.max);
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        let delay = half + Duration::from_millis(jitter);
        retry_after.map_or(delay, |ra| delay.max(ra))
    }

    /// Forgets the failures of `key` (after a success, or when the object is gone).
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Number of consecutive failures recorded for `key`.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    #[test]
    fn delay_doubles_within_jitter_bounds_and_caps() {
        let b = backoff();
        for attempt in 1..=10u32 {
            let d = b.next_delay("a", None);
            let exp = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(60));
            assert!(d >= exp / 2 && d <= exp + Duration::from_millis(1), "attempt {attempt}: {d:?} vs {exp:?}");
        }
        assert_eq!(b.failures("a"), 10);
    }

    #[test]
    fn objects_back_off_independently_and_reset_on_success() {
        let b = backoff();
        for _ in 0..5 {
            b.next_delay("a", None);
        }
        assert!(b.next_delay("b", None) <= Duration::from_millis(1001));
        b.reset("a");
        assert_eq!(b.failures("a"), 0);
        assert!(b.next_delay("a", None) <= Duration::from_millis(1001));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let b = backoff();
        assert!(b.next_delay("a", Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }
}
