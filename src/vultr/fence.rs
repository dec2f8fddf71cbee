//! The write fence: with leader election, a Vultr write may only leave the process
//! while this replica's leadership is still valid. Validity is an instant (the last
//! successful lease renewal plus the renew deadline), so the fence closes by itself
//! when time passes it: no task has to run, and a stalled renewal cannot keep it open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::time::Instant;

/// Shared by the lease loop (which extends it) and the Vultr client (which checks it
/// right before each write). Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct WriteFence {
    inner: Arc<Inner>,
}

struct Inner {
    /// Origin of `until_nanos`.
    base: Instant,
    /// Writes are allowed while `now < base + until_nanos`; 0 until first opened.
    until_nanos: AtomicU64,
    /// Set once leadership is given up or lost; a closed fence never opens again.
    closed: AtomicBool,
}

impl WriteFence {
    /// A fence that allows nothing until [`WriteFence::open_until`].
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                base: Instant::now(),
                until_nanos: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Allows writes until `until` (a later renewal moves it again). Ignored once
    /// closed.
    pub fn open_until(&self, until: Instant) {
        let nanos = until
            .saturating_duration_since(self.inner.base)
            .as_nanos()
            .try_into()
            .unwrap_or(u64::MAX);
        self.inner.until_nanos.store(nanos, Ordering::Release);
    }

    /// Refuses every write from now on.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Until when writes are allowed; `None` if closed or never opened.
    pub fn valid_until(&self) -> Option<Instant> {
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        match self.inner.until_nanos.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.inner.base + std::time::Duration::from_nanos(nanos)),
        }
    }

    /// True if a write may be sent at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.valid_until().is_some_and(|until| now < until)
    }
}

impl Default for WriteFence {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for WriteFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFence")
            .field("valid_until", &self.valid_until())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn closed_until_opened_then_closes_by_itself() {
        let fence = WriteFence::new();
        assert!(!fence.allows(Instant::now()));
        fence.open_until(Instant::now() + Duration::from_secs(10));
        let clone = fence.clone();
        assert!(clone.allows(Instant::now()));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(clone.allows(Instant::now()));
        // No renewal: the deadline passes and nothing had to run to close it.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!clone.allows(Instant::now()));
        // A renewal moves it forward again.
        fence.open_until(Instant::now() + Duration::from_secs(10));
        assert!(clone.allows(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_is_for_good() {
        let fence = WriteFence::new();
        fence.open_until(Instant::now() + Duration::from_secs(10));
        fence.close();
        assert!(!fence.allows(Instant::now()));
        assert_eq!(fence.valid_until(), None);
        // A renewal that was in flight when leadership was given up changes nothing.
        fence.open_until(Instant::now() + Duration::from_secs(20));
        assert!(!fence.allows(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_instant_before_the_fence_existed_allows_nothing() {
        let earlier = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let fence = WriteFence::new();
        fence.open_until(earlier);
        assert!(!fence.allows(earlier));
        assert!(!fence.allows(Instant::now()));
    }
}
