//! Token bucket over all `/v2` requests of every key and organisation (one bucket: Vultr
//! limits per source IP, and the simulator has one client IP).

use std::time::{Duration, Instant};

use crate::config::RateLimit;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `None` when the limit means "off" (rate of zero or less).
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Option<Self> {
        (limit.per_second > 0.0).then(|| Self {
            limit,
            tokens: f64::from(limit.burst.max(1)),
            last: now,
        })
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token, or says how long until one is available.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.limit.burst.max(1));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.per_second).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.limit.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let limit = RateLimit {
            per_second: 2.0,
            burst: 3,
        };
        let mut b = TokenBucket::new(limit, t0).unwrap();
        for _ in 0..3 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert!(b.try_take(t0 + Duration::from_millis(500)).is_ok());
        assert!(b.try_take(t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn zero_rate_is_off() {
        let limit = RateLimit {
            per_second: 0.0,
            burst: 5,
        };
        assert!(TokenBucket::new(limit, Instant::now()).is_none());
    }
}
