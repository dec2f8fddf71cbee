//! Leader election on a coordination.k8s.io/v1 Lease, shaped like client-go's: the
//! holder renews every retry period and its leadership is valid only until the last
//! successful renewal plus the renew deadline, which is shorter than the lease
//! duration; a standby takes the lease once it has not seen it change for a lease
//! duration, judged on its own clock. Every write is guarded by the resourceVersion it
//! read, so two replicas can never both think they took it.
//!
//! Why not kube-lease-manager 0.13: its holder only steps down when a read shows
//! another holder; when reads fail (cut off from the API server) it keeps saying
//! "leader" forever, and nothing bounds its leadership in time.
//!
//! The validity instant feeds a [`WriteFence`](crate::vultr::WriteFence) that the Vultr client checks before each
//! write, so a replica past its renew deadline sends nothing even if a task is stuck,
//! and that bounds each write's timeout. A write Vultr received may still be applied
//! up to the Vultr timeout after it was sent, so a new leader's fence opens only once
//! the previous leader's writes can no longer land ([`fence::first_write_at`]).
//!
//! Errors on the Lease are retried with backoff (and reported in `/readyz`), except
//! those no retry can fix ([`lease::is_fatal`]): right after an API server restart, RBAC can
//! answer 403 for a moment.
//!
//! - [`timings`]: the settings and client-go's three durations
//! - [`lease`]: the Lease record, read and written
//! - [`fence`]: when the write fence lets a leader write
//! - [`elector`]: the campaign and the renewal task

mod elector;
mod fence;
mod lease;
mod timings;

pub use elector::LeaseError;
pub(crate) use elector::{Leadership, acquire};
pub use timings::{LeaseConfig, Timings, TimingsError};

#[cfg(test)]
mod test_support {
    use std::time::Duration;

    pub(super) fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }
}
