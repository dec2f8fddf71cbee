//! The lease settings and client-go's three durations, checked once.

use std::time::Duration;

/// Lease settings from the command line, checked by [`LeaseConfig::new`].
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub timings: Timings,
    /// How long a Vultr write may be in flight (`--vultr-timeout`): a write of the
    /// previous leader may land this long after it was sent.
    pub longest_write: Duration,
}

/// client-go's three durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a standby waits, after it last saw the lease change, before taking it.
    pub lease_duration: Duration,
    /// How long after its last successful renewal the holder may still act as leader.
    pub renew_deadline: Duration,
    /// Pause between renewals, and between a standby's looks at the lease.
    pub retry_period: Duration,
}

/// Leader election settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingsError {
    #[error("--lease-duration must be at least 1s")]
    LeaseTooShort,
    #[error(
        "--renew-deadline ({renew_deadline:?}) must be greater than zero and shorter than \
         --lease-duration ({lease_duration:?}): the margin keeps the old leader's last \
         writes ahead of the new leader's first"
    )]
    RenewDeadline {
        renew_deadline: Duration,
        lease_duration: Duration,
    },
    #[error(
        "--retry-period ({retry_period:?}) must be greater than zero and shorter than \
         --renew-deadline ({renew_deadline:?})"
    )]
    RetryPeriod {
        retry_period: Duration,
        renew_deadline: Duration,
    },
}

impl Timings {
    /// Defaults as client-go's (15 s, 10 s, 2 s) scaled to the lease duration: the renew
    /// deadline is two thirds of it, the retry period a fifth of the renew deadline.
    pub(crate) fn new(
        lease_duration: Duration,
        renew_deadline: Option<Duration>,
        retry_period: Option<Duration>,
    ) -> Result<Self, TimingsError> {
        if lease_duration < Duration::from_secs(1) {
            return Err(TimingsError::LeaseTooShort);
        }
        let renew_deadline = renew_deadline.unwrap_or(lease_duration * 2 / 3);
        if renew_deadline.is_zero() || renew_deadline >= lease_duration {
            return Err(TimingsError::RenewDeadline {
                renew_deadline,
                lease_duration,
            });
        }
        let retry_period = retry_period.unwrap_or(renew_deadline / 5);
        if retry_period.is_zero() || retry_period >= renew_deadline {
            return Err(TimingsError::RetryPeriod {
                retry_period,
                renew_deadline,
            });
        }
        Ok(Self {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// `leaseDurationSeconds` as written in the Lease (whole seconds, rounded up so a
    /// standby never waits less than we assume).
    pub(super) fn lease_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// The pause after `failures` consecutive failed looks at the lease: the retry period,
/// doubled per failure, at most a lease duration (a standby that heals takes over
/// within a lease duration; a change of the Lease wakes it earlier).
pub(crate) fn error_pause(failures: u32, timings: &Timings) -> Duration {
    let doubled = timings
        .retry_period
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
    doubled.min(timings.lease_duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::test_support::secs;

    #[test]
    fn timings_default_like_client_go() {
        let t = Timings::new(secs(15), None, None).unwrap();
        assert_eq!(
            (t.lease_duration, t.renew_deadline, t.retry_period),
            (secs(15), secs(10), secs(2))
        );
        assert_eq!(t.lease_seconds(), 15);
        let t = Timings::new(secs(6), None, None).unwrap();
        assert_eq!(t.renew_deadline, secs(4));
        assert_eq!(t.retry_period, Duration::from_millis(800));
        let t = Timings::new(Duration::from_millis(1500), None, None).unwrap();
        assert_eq!(t.lease_seconds(), 2, "rounded up");
    }

    #[test]
    fn timings_that_cannot_work_are_refused() {
        assert_eq!(
            Timings::new(Duration::from_millis(500), None, None),
            Err(TimingsError::LeaseTooShort)
        );
        for deadline in [secs(15), secs(20), Duration::ZERO] {
            let err = Timings::new(secs(15), Some(deadline), None).unwrap_err();
            assert!(matches!(err, TimingsError::RenewDeadline { .. }), "{err}");
        }
        for retry in [secs(10), Duration::ZERO] {
            let err = Timings::new(secs(15), Some(secs(10)), Some(retry)).unwrap_err();
            assert!(matches!(err, TimingsError::RetryPeriod { .. }), "{err}");
            assert!(err.to_string().contains("--retry-period"), "{err}");
        }
        assert!(Timings::new(secs(15), Some(secs(14)), Some(secs(1))).is_ok());
    }

    #[test]
    fn errors_are_retried_with_a_growing_pause_up_to_a_lease_duration() {
        let t = Timings::new(secs(15), None, None).unwrap();
        let pauses: Vec<_> = (1..=5).map(|n| error_pause(n, &t)).collect();
        assert_eq!(pauses, [secs(2), secs(4), secs(8), secs(15), secs(15)]);
        assert_eq!(error_pause(u32::MAX, &t), secs(15));
    }
}
