//! The Lease record: what a replica decides from what it read (pure), and how it
//! writes the record back, guarded by the resourceVersion it read.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// What a replica that does not lead may do after reading the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    /// Free (never held, or released), expired, or already ours (a restart with the
    /// same identity): take it, guarded by the resourceVersion read.
    Take,
    /// Another replica renewed it recently: look again after this long at the latest.
    Wait { holder: String, at_most: Duration },
}

/// Decides from the lease's spec and how long this replica has seen it unchanged.
/// Expiry is never judged from the holder's timestamps: another node's clock may be
/// off. `fallback` is used when the lease states no usable duration.
pub(crate) fn campaign(
    spec: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    fallback: Duration,
) -> Campaign {
    let Some(holder) = holder_of(spec) else {
        return Campaign::Take;
    };
    if holder == identity {
        return Campaign::Take;
    }
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(fallback, Duration::from_secs);
    match duration.checked_sub(unchanged_for) {
        Some(left) if !left.is_zero() => Campaign::Wait {
            holder: holder.to_owned(),
            at_most: left,
        },
        _ => Campaign::Take,
    }
}

/// The holder named in the spec; an empty name means released.
pub(crate) fn holder_of(spec: Option<&LeaseSpec>) -> Option<&str> {
    spec.and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// When this replica last saw the lease record change (client-go's observedTime).
#[derive(Debug, Default)]
pub struct Observed {
    version: Option<String>,
    since: Option<Instant>,
}

impl Observed {
    /// Records a read made at `now`; returns how long the record has been unchanged as
    /// far as this replica knows (zero on first sight or after any change).
    pub(crate) fn observe(&mut self, version: Option<&str>, now: Instant) -> Duration {
        match self.since {
            Some(since) if self.version.as_deref() == version && version.is_some() => {
                now.saturating_duration_since(since)
            }
            _ => {
                self.version = version.map(str::to_owned);
                self.since = Some(now);
                Duration::ZERO
            }
        }
    }
}

/// The spec with which `identity` holds the lease at `now`: acquisition time and the
/// transition count are kept when it already held it.
pub(crate) fn held_spec(
    previous: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    lease_seconds: i32,
) -> LeaseSpec {
    let mut spec = previous.cloned().unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0);
    if holder_of(previous) != Some(identity) {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(if previous.is_some() {
            transitions.saturating_add(1)
        } else {
            0
        });
    }
    spec.holder_identity = Some(identity.to_owned());
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(lease_seconds);
    spec
}

/// The spec of a released lease: no holder, no times (which other lease libraries also
/// read as free), the transition count kept.
pub(crate) fn released_spec(previous: Option<&LeaseSpec>) -> LeaseSpec {
    let mut spec = previous.cloned().unwrap_or_default();
    spec.holder_identity = None;
    spec.acquire_time = None;
    spec.renew_time = None;
    spec.lease_duration_seconds = None;
    spec
}

/// Writes `spec` into `lease` (named `name`), guarded by the resourceVersion it was
/// read with: a conflict if anyone else wrote in between.
pub(super) async fn write(
    api: &Api<Lease>,
    name: &str,
    lease: Lease,
    spec: LeaseSpec,
) -> Result<Lease, kube::Error> {
    api.replace(name, &PostParams::default(), &with_spec(lease, spec))
        .await
}

/// `lease` with `spec`, keeping its resourceVersion so the write fails if anyone else
/// wrote in between.
fn with_spec(mut lease: Lease, spec: LeaseSpec) -> Lease {
    lease.metadata.managed_fields = None;
    lease.spec = Some(spec);
    lease
}

/// Errors that no retry will fix, because the request itself is wrong (e.g. an
/// invalid Lease name): the campaign stops and the process exits. Everything else,
/// 401 and 403 included (RBAC and authentication come back after an API server
/// restart, a binding can be restored), is retried.
pub(crate) fn is_fatal(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if matches!(s.code, 400 | 422))
}

pub(super) fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409)
}

pub(super) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::test_support::secs;

    fn spec(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_free_released_or_own_lease_is_taken() {
        assert_eq!(campaign(None, "me", secs(0), secs(15)), Campaign::Take);
        for free in [spec(None, Some(15)), spec(Some(""), Some(15))] {
            assert_eq!(
                campaign(Some(&free), "me", secs(0), secs(15)),
                Campaign::Take
            );
        }
        // A restart with the same identity (same pod name): the old process is gone.
        assert_eq!(
            campaign(Some(&spec(Some("me"), Some(15))), "me", secs(0), secs(15)),
            Campaign::Take
        );
    }

    #[test]
    fn another_holder_is_waited_for_until_unchanged_for_its_duration() {
        let held = spec(Some("other"), Some(6));
        assert_eq!(
            campaign(Some(&held), "me", secs(2), secs(15)),
            Campaign::Wait {
                holder: "other".into(),
                at_most: secs(4)
            }
        );
        assert_eq!(
            campaign(Some(&held), "me", secs(6), secs(15)),
            Campaign::Take
        );
        assert_eq!(
            campaign(Some(&held), "me", secs(60), secs(15)),
            Campaign::Take
        );
        // No usable duration in the lease: ours.
        for odd in [None, Some(0), Some(-3)] {
            assert_eq!(
                campaign(Some(&spec(Some("other"), odd)), "me", secs(10), secs(15)),
                Campaign::Wait {
                    holder: "other".into(),
                    at_most: secs(5)
                }
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_counts_from_the_last_change_this_replica_saw() {
        let mut seen = Observed::default();
        assert_eq!(seen.observe(Some("1"), Instant::now()), Duration::ZERO);
        tokio::time::advance(secs(3)).await;
        assert_eq!(seen.observe(Some("1"), Instant::now()), secs(3));
        // Any write (a renewal) restarts the count.
        tokio::time::advance(secs(1)).await;
        assert_eq!(seen.observe(Some("2"), Instant::now()), Duration::ZERO);
        tokio::time::advance(secs(2)).await;
        assert_eq!(seen.observe(Some("2"), Instant::now()), secs(2));
        // Without a version nothing can be compared: never counts as unchanged.
        assert_eq!(seen.observe(None, Instant::now()), Duration::ZERO);
        tokio::time::advance(secs(9)).await;
        assert_eq!(seen.observe(None, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn taking_and_renewing_write_the_right_fields() {
        let t1 = Timestamp::from_second(1_000).unwrap();
        let t2 = Timestamp::from_second(1_010).unwrap();
        let created = held_spec(None, "me", t1, 15);
        assert_eq!(created.holder_identity.as_deref(), Some("me"));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.acquire_time, Some(MicroTime(t1)));
        assert_eq!(created.lease_duration_seconds, Some(15));

        let renewed = held_spec(Some(&created), "me", t2, 15);
        assert_eq!(renewed.acquire_time, Some(MicroTime(t1)), "kept");
        assert_eq!(renewed.renew_time, Some(MicroTime(t2)));
        assert_eq!(renewed.lease_transitions, Some(0));

        let taken = held_spec(Some(&renewed), "other", t2, 6);
        assert_eq!(taken.holder_identity.as_deref(), Some("other"));
        assert_eq!(taken.acquire_time, Some(MicroTime(t2)));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.lease_duration_seconds, Some(6));

        let released = released_spec(Some(&taken));
        assert_eq!(holder_of(Some(&released)), None);
        assert_eq!(released.renew_time, None);
        assert_eq!(released.lease_transitions, Some(1), "kept");
        assert_eq!(
            campaign(Some(&released), "me", secs(0), secs(15)),
            Campaign::Take
        );
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "m".into(),
            reason: "r".into(),
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn only_errors_of_the_request_itself_are_fatal() {
        // RBAC and authentication come back (an API server restart, a restored
        // binding): retried.
        for code in [401, 403, 404, 409, 429, 500, 503] {
            assert!(!is_fatal(&api_error(code)), "{code}");
        }
        for code in [400, 422] {
            assert!(is_fatal(&api_error(code)), "{code}");
        }
        assert!(!is_fatal(&kube::Error::LinesCodecMaxLineLengthExceeded));
    }
}
