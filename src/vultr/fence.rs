//! The write fence: with leader election, a Vultr write may only leave the process
//! while this replica's leadership is still valid, and may stay in flight only until
//! then. Validity is an instant (the last successful lease renewal plus the renew
//! deadline), so the fence closes by itself when time passes it: no task has to run,
//! and a stalled renewal cannot keep it open. A new leader's fence also opens only once
//! the previous leader's writes can no longer land (see `leader::first_write_at`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

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
    /// ... and not before `base + from_nanos`.
    from_nanos: AtomicU64,
    /// Set once leadership is given up or lost; a closed fence never opens again.
    closed: AtomicBool,
}

impl WriteFence {
    /// A fence that allows nothing until [`WriteFence::open_until`].
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                base: Instant::now(),
                until_nanos: AtomicU64::new(0),
                from_nanos: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Allows writes until `until` (a later renewal moves it again). Ignored once
    /// closed.
    pub(crate) fn open_until(&self, until: Instant) {
        self.inner
            .until_nanos
            .store(self.nanos(until), Ordering::Release);
    }

    /// Refuses writes before `from` (they wait for it: see [`WriteFence::window`]).
    pub(crate) fn hold_until(&self, from: Instant) {
        self.inner
            .from_nanos
            .store(self.nanos(from), Ordering::Release);
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.inner.base)
            .as_nanos()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// Refuses every write from now on.
    pub(crate) fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Until when writes are allowed; `None` if closed or never opened.
    pub(crate) fn valid_until(&self) -> Option<Instant> {
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        match self.inner.until_nanos.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.inner.base + std::time::Duration::from_nanos(nanos)),
        }
    }

    /// What a write may do at `now`.
    pub(crate) fn window(&self, now: Instant) -> Window {
        let Some(until) = self.valid_until() else {
            return Window::Closed;
        };
        let from =
            self.inner.base + Duration::from_nanos(self.inner.from_nanos.load(Ordering::Acquire));
        if now >= until {
            Window::Closed
        } else if now < from {
            Window::OpensAt(from)
        } else {
            Window::Open { left: until - now }
        }
    }

    /// True if the leadership is valid at `now`, whether or not writes are held.
    pub(crate) fn leads_at(&self, now: Instant) -> bool {
        self.valid_until().is_some_and(|until| now < until)
    }
}

/// What the fence says to a write at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Not leading (never did, lost it, gave it up, or past the renew deadline).
    Closed,
    /// Leading, but the previous leader's writes may still land until then.
    OpensAt(Instant),
    /// A write may leave now and must be over within `left`.
    Open { left: Duration },
}

/// The timeout of one write: the configured one, cut to what the fence has left, so
/// that no write of this replica is still waited for once its leadership has ended.
pub(crate) fn write_timeout(configured: Duration, left: Duration) -> Duration {
    configured.min(left)
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
    use super::*;

    /// True if a write may be sent at `now`.
    fn allows(fence: &WriteFence, now: Instant) -> bool {
        matches!(fence.window(now), Window::Open { .. })
    }

    #[tokio::test(start_paused = true)]
    async fn closed_until_opened_then_closes_by_itself() {
        let fence = WriteFence::new();
        assert!(!allows(&fence, Instant::now()));
        fence.open_until(Instant::now() + Duration::from_secs(10));
        let clone = fence.clone();
        assert!(allows(&clone, Instant::now()));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(allows(&clone, Instant::now()));
        // No renewal: the deadline passes and nothing had to run to close it.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!allows(&clone, Instant::now()));
        // A renewal moves it forward again.
        fence.open_until(Instant::now() + Duration::from_secs(10));
        assert!(allows(&clone, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_is_for_good() {
        let fence = WriteFence::new();
        fence.open_until(Instant::now() + Duration::from_secs(10));
        fence.close();
        assert!(!allows(&fence, Instant::now()));
        assert_eq!(fence.valid_until(), None);
        // A renewal that was in flight when leadership was given up changes nothing.
        fence.open_until(Instant::now() + Duration::from_secs(20));
        assert!(!allows(&fence, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_instant_before_the_fence_existed_allows_nothing() {
        let earlier = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let fence = WriteFence::new();
        fence.open_until(earlier);
        assert!(!allows(&fence, earlier));
        assert!(!allows(&fence, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_fence_opens_at_its_instant_and_tells_what_is_left() {
        let fence = WriteFence::new();
        let start = Instant::now();
        fence.open_until(start + Duration::from_secs(10));
        fence.hold_until(start + Duration::from_secs(3));
        assert_eq!(
            fence.window(Instant::now()),
            Window::OpensAt(start + Duration::from_secs(3))
        );
        assert!(!allows(&fence, Instant::now()));
        assert!(fence.leads_at(Instant::now()), "held, but leading");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            fence.window(Instant::now()),
            Window::Open {
                left: Duration::from_secs(7)
            }
        );
        // Past the deadline the hold no longer matters: closed.
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(fence.window(Instant::now()), Window::Closed);
        assert!(!fence.leads_at(Instant::now()));
        fence.open_until(Instant::now() + Duration::from_secs(1));
        fence.close();
        assert_eq!(fence.window(Instant::now()), Window::Closed);
    }

    #[test]
    fn a_write_never_outlasts_the_fence() {
        let configured = Duration::from_secs(10);
        assert_eq!(
            write_timeout(configured, Duration::from_millis(1500)),
            Duration::from_millis(1500)
        );
        assert_eq!(
            write_timeout(configured, Duration::from_secs(30)),
            configured
        );
    }
}
