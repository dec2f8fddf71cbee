//! When the Vultr write fence lets a leader write: until the renew deadline after its
//! last renewal and, after an acquisition, only once the previous leader's writes can
//! no longer land.

use std::time::Duration;

use tokio::time::Instant;

use super::Timings;

/// Until when a leader that sent a successful renewal (or acquisition) at `sent` may
/// act. Counted from the sending, not the answer: the write may have been committed
/// (and seen by a standby) at any point after it left.
pub(crate) fn valid_until(sent: Instant, timings: &Timings) -> Instant {
    sent + timings.renew_deadline
}

/// How this replica came to hold the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Took {
    /// No Lease existed: it was created.
    Created,
    /// Another holder stopped renewing it for a lease duration.
    Expired,
    /// Its holder released it (or never held it).
    Released,
    /// It named this identity already (a restart of the same pod).
    Own,
}

/// The first instant a new leader may send a Vultr write, given when its acquisition
/// was sent: once every write of the previous leader has landed or never will, on the
/// rule that Vultr applies a write within `longest_write` of its sending or not at all.
/// After an expiry, the previous leader sent its last write before its renew deadline,
/// at least `lease_duration - renew_deadline` before `sent`. After a release, its own
/// restart, or a Lease created anew (deleted under a running leader), the previous
/// leader may have sent a write up to `sent`.
pub(crate) fn first_write_at(
    sent: Instant,
    took: Took,
    timings: &Timings,
    longest_write: Duration,
) -> Instant {
    let margin = timings
        .lease_duration
        .saturating_sub(timings.renew_deadline);
    match took {
        Took::Expired => sent + longest_write.saturating_sub(margin),
        Took::Created | Took::Released | Took::Own => sent + longest_write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::test_support::secs;
    use crate::vultr::WriteFence;

    #[tokio::test(start_paused = true)]
    async fn leadership_is_valid_until_the_renew_deadline_after_the_last_renewal_sent() {
        let t = Timings::new(secs(15), None, None).unwrap();
        let sent = Instant::now();
        let until = valid_until(sent, &t);
        assert_eq!(until - sent, secs(10));
        // Safety margin: a standby that saw this renewal at or after `sent` waits a
        // whole lease duration, which ends after our deadline.
        assert!(until < sent + t.lease_duration);
        let fence = WriteFence::new();
        fence.open_until(until);
        tokio::time::advance(secs(9)).await;
        assert!(fence.leads_at(Instant::now()));
        tokio::time::advance(secs(1)).await;
        assert!(!fence.leads_at(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_writes_once_the_previous_leaders_writes_can_no_longer_land() {
        // Lease 15 s, renew deadline 10 s: a margin of 5 s.
        let t = Timings::new(secs(15), None, None).unwrap();
        let sent = Instant::now();
        let longest = secs(10);
        // Expired: the previous leader sent its last write at least 5 s before.
        assert_eq!(
            first_write_at(sent, Took::Expired, &t, longest) - sent,
            secs(5)
        );
        assert_eq!(
            first_write_at(sent, Took::Expired, &t, secs(3)),
            sent,
            "writes shorter than the margin have all landed"
        );
        // Released, restarted or re-created: it may have sent one just now.
        for took in [Took::Released, Took::Own, Took::Created] {
            assert_eq!(
                first_write_at(sent, took, &t, longest) - sent,
                longest,
                "{took:?}"
            );
        }
        // The promise, with the worst timing: the last write of the previous leader,
        // sent at its deadline, lands before the new leader's first.
        let renewed = sent;
        let taken = renewed + t.lease_duration;
        let last_write_lands = valid_until(renewed, &t) + longest;
        assert!(last_write_lands <= first_write_at(taken, Took::Expired, &t, longest));
    }
}
