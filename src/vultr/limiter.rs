//! One process-wide token bucket in front of every Vultr request, with two classes:
//! urgent requests (revocations) are served before normal ones (attaches, verification),
//! so a deletion never waits behind a backlog of attaches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

/// Default sustained rate: a third of Vultr's documented 30 requests/second per IP,
/// leaving room for other tools sharing the same egress address.
pub const DEFAULT_PER_SECOND: f64 = 10.0;
/// Default burst size.
pub const DEFAULT_BURST: u32 = 10;

/// An async token bucket. Clones share the same bucket.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    per_second: f64,
    burst: f64,
    // tokio's Mutex queues waiters in FIFO order, so holding it while sleeping gives
    // fairness, and a cancelled acquire simply releases it without consuming a token.
    bucket: Mutex<Bucket>,
    /// Urgent callers waiting or taking a token; normal callers stand back meanwhile.
    urgent: AtomicUsize,
    urgent_done: Notify,
}

/// Which class a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Normal,
    /// Served before every normal request that has not got its token yet.
    Urgent,
}

/// Counts an urgent caller for as long as it lives (also when cancelled).
struct UrgentGuard<'a>(&'a Inner);

impl Drop for UrgentGuard<'_> {
    fn drop(&mut self) {
        if self.0.urgent.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.urgent_done.notify_waiters();
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// A rate limit that cannot work (zero, negative, not a number, or a zero burst).
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid Vultr rate limit: {per_second} requests/second with burst {burst} \
     (the rate must be a positive number and the burst at least 1)"
)]
pub struct InvalidRateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimiter {
    /// A bucket refilled at `per_second` tokens per second holding at most `burst`;
    /// it starts full.
    pub(crate) fn new(per_second: f64, burst: u32) -> Result<Self, InvalidRateLimit> {
        if !per_second.is_finite() || per_second <= 0.0 || burst == 0 {
            return Err(InvalidRateLimit { per_second, burst });
        }
        Ok(Self::build(per_second, burst))
    }

    fn build(per_second: f64, burst: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_second,
                burst: f64::from(burst),
                bucket: Mutex::new(Bucket {
                    tokens: f64::from(burst),
                    refilled_at: Instant::now(),
                }),
                urgent: AtomicUsize::new(0),
                urgent_done: Notify::new(),
            }),
        }
    }

    /// Waits for a token of the given class and takes it. Returns how long the caller
    /// waited.
    pub(crate) async fn acquire_with(&self, priority: Priority) -> Duration {
        let started = Instant::now();
        let inner = &*self.inner;
        if priority == Priority::Urgent {
            inner.urgent.fetch_add(1, Ordering::SeqCst);
            let _guard = UrgentGuard(inner);
            self.take(inner.bucket.lock().await).await;
            return started.elapsed();
        }
        loop {
            let done = inner.urgent_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if inner.urgent.load(Ordering::SeqCst) > 0 {
                done.await;
                continue;
            }
            let bucket = inner.bucket.lock().await;
            // An urgent caller may have queued while we waited for the lock: let it by.
            if inner.urgent.load(Ordering::SeqCst) > 0 {
                continue;
            }
            self.take(bucket).await;
            return started.elapsed();
        }
    }

    /// Takes one token, sleeping (with the bucket locked, which keeps the queue fair)
    /// until there is one.
    async fn take(&self, mut bucket: tokio::sync::MutexGuard<'_, Bucket>) {
        self.refill(&mut bucket);
        if bucket.tokens < 1.0 {
            let missing = 1.0 - bucket.tokens;
            tokio::time::sleep(Duration::from_secs_f64(missing / self.inner.per_second)).await;
            self.refill(&mut bucket);
        }
        // Float rounding may leave a hair under 1.0 after the sleep; never go negative.
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    fn refill(&self, bucket: &mut Bucket) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(bucket.refilled_at);
        bucket.tokens =
            (bucket.tokens + elapsed.as_secs_f64() * self.inner.per_second).min(self.inner.burst);
        bucket.refilled_at = now;
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::build(DEFAULT_PER_SECOND, DEFAULT_BURST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `millis` (within 10 ms) passed since `start`.
    fn assert_took(start: Instant, millis: u64) {
        let total = start.elapsed();
        let at_least = Duration::from_millis(millis);
        assert!(
            total >= at_least && total < at_least + Duration::from_millis(10),
            "{total:?}"
        );
    }

    /// Checks that `burst` tokens are free and the next one waits `millis`.
    async fn assert_burst_then_wait(limiter: &RateLimiter, burst: usize, millis: u64) {
        for _ in 0..burst {
            assert_eq!(take(limiter).await, Duration::ZERO);
        }
        assert_eq!(take(limiter).await, Duration::from_millis(millis));
    }

    /// Takes a token of the normal class; how long it waited.
    async fn take(limiter: &RateLimiter) -> Duration {
        limiter.acquire_with(Priority::Normal).await
    }

    #[test]
    fn rejects_unusable_limits() {
        assert!(RateLimiter::new(0.0, 1).is_err());
        assert!(RateLimiter::new(-1.0, 1).is_err());
        assert!(RateLimiter::new(f64::NAN, 1).is_err());
        assert!(RateLimiter::new(f64::INFINITY, 1).is_err());
        assert!(RateLimiter::new(1.0, 0).is_err());
        let err = RateLimiter::new(0.0, 0).unwrap_err().to_string();
        assert!(err.contains("positive"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn default_is_ten_per_second_burst_ten() {
        assert_burst_then_wait(&RateLimiter::default(), 10, 100).await;
    }

    #[tokio::test(start_paused = true)]
    async fn burst_is_free_then_requests_are_spaced() {
        let limiter = RateLimiter::new(10.0, 3).unwrap();
        let start = Instant::now();
        // The fourth waits for one token: 100 ms at 10/s.
        assert_burst_then_wait(&limiter, 3, 100).await;
        // Ten more take one second in total.
        for _ in 0..10 {
            take(&limiter).await;
        }
        assert_took(start, 1100);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_up_to_burst_only() {
        let limiter = RateLimiter::new(2.0, 2).unwrap();
        take(&limiter).await;
        take(&limiter).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(take(&limiter).await, Duration::ZERO);
        assert_eq!(take(&limiter).await, Duration::ZERO);
        assert_eq!(take(&limiter).await, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_bucket() {
        let a = RateLimiter::new(1.0, 1).unwrap();
        let b = a.clone();
        assert_eq!(take(&a).await, Duration::ZERO);
        assert_eq!(take(&b).await, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_are_served_in_turn() {
        let limiter = RateLimiter::new(5.0, 1).unwrap();
        let start = Instant::now();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { take(&limiter).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // 1 immediate + 4 spaced by 200 ms.
        assert_took(start, 800);
    }

    /// A revocation arriving behind a queue of attaches gets the next token.
    #[tokio::test(start_paused = true)]
    async fn urgent_requests_pass_the_queue() {
        let limiter = RateLimiter::new(1.0, 1).unwrap();
        take(&limiter).await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, priority) in [
            Priority::Normal,
            Priority::Normal,
            Priority::Normal,
            Priority::Urgent,
        ]
        .into_iter()
        .enumerate()
        {
            let limiter = limiter.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let waited = limiter.acquire_with(priority).await;
                order.lock().unwrap().push((i, waited));
            }));
            // Queue them in this order.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let served: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
        // The first normal caller was already sleeping for the next token; the urgent
        // one comes right after it, before the two other normal callers.
        assert_eq!(served, [0, 3, 1, 2], "{order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_acquire_does_not_consume_a_token() {
        let limiter = RateLimiter::new(1.0, 1).unwrap();
        take(&limiter).await;
        // Give up after half the wait; the token must still be there for the next caller.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(500),
            limiter.acquire_with(Priority::Normal),
        )
        .await;
        assert!(cancelled.is_err());
        assert_eq!(take(&limiter).await, Duration::from_millis(500));
    }
}
