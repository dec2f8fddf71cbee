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
//! The validity instant feeds a [`WriteFence`] that the Vultr client checks before each
//! write, so a replica past its renew deadline sends nothing even if a task is stuck,
//! and that bounds each write's timeout. A write Vultr received may still be applied
//! up to the Vultr timeout after it was sent, so a new leader's fence opens only once
//! the previous leader's writes can no longer land ([`first_write_at`]).
//!
//! Errors on the Lease are retried with backoff (and reported in `/readyz`), except
//! those no retry can fix ([`is_fatal`]): right after an API server restart, RBAC can
//! answer 403 for a moment.

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use crate::http::Health;
use crate::vultr::WriteFence;

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
    pub fn new(
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
    fn lease_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// Errors that end the campaign (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot use the Lease {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

// ---- Decisions (pure) ----

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
pub fn campaign(
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
pub fn holder_of(spec: Option<&LeaseSpec>) -> Option<&str> {
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
    pub fn observe(&mut self, version: Option<&str>, now: Instant) -> Duration {
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

/// Until when a leader that sent a successful renewal (or acquisition) at `sent` may
/// act. Counted from the sending, not the answer: the write may have been committed
/// (and seen by a standby) at any point after it left.
pub fn valid_until(sent: Instant, timings: &Timings) -> Instant {
    sent + timings.renew_deadline
}

/// The spec with which `identity` holds the lease at `now`: acquisition time and the
/// transition count are kept when it already held it.
pub fn held_spec(
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
pub fn released_spec(previous: Option<&LeaseSpec>) -> LeaseSpec {
    let mut spec = previous.cloned().unwrap_or_default();
    spec.holder_identity = None;
    spec.acquire_time = None;
    spec.renew_time = None;
    spec.lease_duration_seconds = None;
    spec
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
pub fn first_write_at(
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

/// Errors that no retry will fix, because the request itself is wrong (e.g. an
/// invalid Lease name): the campaign stops and the process exits. Everything else,
/// 401 and 403 included (RBAC and authentication come back after an API server
/// restart, a binding can be restored), is retried.
pub fn is_fatal(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if matches!(s.code, 400 | 422))
}

/// The pause after `failures` consecutive failed looks at the lease: the retry period,
/// doubled per failure, at most a lease duration (a standby that heals takes over
/// within a lease duration; a change of the Lease wakes it earlier).
pub fn error_pause(failures: u32, timings: &Timings) -> Duration {
    let doubled = timings
        .retry_period
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
    doubled.min(timings.lease_duration)
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

// ---- The loop ----

/// The held lease. Dropping it without [`Leadership::release`] stops renewing (the
/// lease then expires) and closes the fence.
pub struct Leadership {
    fence: WriteFence,
    lost: watch::Receiver<bool>,
    stop: CancellationToken,
    task: Option<JoinHandle<Option<Lease>>>,
    api: Api<Lease>,
    config: LeaseConfig,
}

/// Campaigns until this process holds the lease, or returns `None` if `stop` resolves
/// first. On success `fence` is open until the renew deadline and kept open by every
/// renewal.
pub async fn acquire(
    client: kube::Client,
    config: &LeaseConfig,
    fence: WriteFence,
    health: &Health,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<Leadership>, LeaseError> {
    let span = tracing::info_span!("lease", name = %config.name, namespace = %config.namespace, identity = %config.identity);
    async {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        tokio::pin!(stop);
        info!(
            lease_duration = ?config.timings.lease_duration,
            renew_deadline = ?config.timings.renew_deadline,
            retry_period = ?config.timings.retry_period,
            "waiting for the leader lease"
        );
        // A release (or any change) wakes the standby at once instead of at its next look.
        let changes = lease_changes(api.clone(), &config.name);
        tokio::pin!(changes);
        let mut observed = Observed::default();
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                biased;
                () = &mut stop => return Ok(None),
                attempt = try_acquire(&api, config, &mut observed) => attempt,
            };
            if attempt.is_ok() {
                failures = 0;
                health.set_lease_problem(None);
            }
            let pause = match attempt {
                Ok(Attempt::Acquired { lease, sent, took }) => {
                    fence.open_until(valid_until(sent, &config.timings));
                    let first_write =
                        first_write_at(sent, took, &config.timings, config.longest_write);
                    fence.hold_until(first_write);
                    info!(
                        ?took,
                        first_write_in = ?first_write.saturating_duration_since(Instant::now()),
                        "acquired the leader lease"
                    );
                    return Ok(Some(Leadership::start(api, config.clone(), *lease, fence)));
                }
                Ok(Attempt::Wait(pause)) => pause,
                Err(err) if is_fatal(&err) => {
                    return Err(LeaseError::Kube {
                        namespace: config.namespace.clone(),
                        name: config.name.clone(),
                        source: err,
                    });
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let pause = error_pause(failures, &config.timings);
                    warn!(error = %err, failures, ?pause, "cannot read or take the leader lease; retrying");
                    health.set_lease_problem(Some(format!(
                        "cannot read or take the Lease {}/{}: {err}",
                        config.namespace, config.name
                    )));
                    pause
                }
            };
            tokio::select! {
                biased;
                () = &mut stop => return Ok(None),
                () = tokio::time::sleep(pause) => {}
                _ = changes.next() => {}
            }
        }
    }
    .instrument(span)
    .await
}

enum Attempt {
    Acquired {
        lease: Box<Lease>,
        sent: Instant,
        took: Took,
    },
    Wait(Duration),
}

/// After a lost race (conflict, already exists) look again soon, not in a tight loop.
const RACE_PAUSE: Duration = Duration::from_millis(50);

async fn try_acquire(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Observed,
) -> Result<Attempt, kube::Error> {
    let lease_seconds = config.timings.lease_seconds();
    let Some(current) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(held_spec(
                None,
                &config.identity,
                Timestamp::now(),
                lease_seconds,
            )),
        };
        let sent = Instant::now();
        return match api.create(&PostParams::default(), &lease).await {
            Ok(lease) => Ok(Attempt::Acquired {
                lease: Box::new(lease),
                sent,
                took: Took::Created,
            }),
            Err(err) if is_conflict(&err) => Ok(Attempt::Wait(RACE_PAUSE)),
            Err(err) => Err(err),
        };
    };
    let unchanged_for =
        observed.observe(current.metadata.resource_version.as_deref(), Instant::now());
    match campaign(
        current.spec.as_ref(),
        &config.identity,
        unchanged_for,
        config.timings.lease_duration,
    ) {
        Campaign::Wait { holder, at_most } => {
            debug!(%holder, ?at_most, "the lease is held");
            Ok(Attempt::Wait(at_most.min(config.timings.retry_period)))
        }
        Campaign::Take => {
            let took = match holder_of(current.spec.as_ref()) {
                None => Took::Released,
                Some(holder) if holder == config.identity => Took::Own,
                Some(holder) => {
                    info!(%holder, "taking over the leader lease");
                    Took::Expired
                }
            };
            let spec = held_spec(
                current.spec.as_ref(),
                &config.identity,
                Timestamp::now(),
                lease_seconds,
            );
            let sent = Instant::now();
            match api
                .replace(
                    &config.name,
                    &PostParams::default(),
                    &with_spec(current, spec),
                )
                .await
            {
                Ok(lease) => Ok(Attempt::Acquired {
                    lease: Box::new(lease),
                    sent,
                    took,
                }),
                // Someone wrote it since our read: read again.
                Err(err) if is_conflict(&err) => Ok(Attempt::Wait(RACE_PAUSE)),
                Err(err) => Err(err),
            }
        }
    }
}

/// `lease` with `spec`, keeping its resourceVersion so the write fails if anyone else
/// wrote in between.
fn with_spec(mut lease: Lease, spec: LeaseSpec) -> Lease {
    lease.metadata.managed_fields = None;
    lease.spec = Some(spec);
    lease
}

/// One item per change of the lease (held or not); retries on its own after errors
/// and never ends (an ended stream would wake the campaign in a tight loop).
fn lease_changes(api: Api<Lease>, name: &str) -> impl Stream<Item = ()> + use<> {
    watcher::watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .applied_objects()
    .filter_map(|event| futures::future::ready(event.ok().map(|_| ())))
    .chain(futures::stream::pending())
}

impl Leadership {
    fn start(api: Api<Lease>, config: LeaseConfig, lease: Lease, fence: WriteFence) -> Self {
        let (lost_tx, lost) = watch::channel(false);
        let stop = CancellationToken::new();
        let span = tracing::info_span!("lease", name = %config.name, namespace = %config.namespace, identity = %config.identity);
        let task = tokio::spawn(
            renew_loop(
                api.clone(),
                config.clone(),
                lease,
                fence.clone(),
                lost_tx,
                stop.clone(),
            )
            .instrument(span),
        );
        Self {
            fence,
            lost,
            stop,
            task: Some(task),
            api,
            config,
        }
    }

    /// Resolves when leadership ends: at the renew deadline if no renewal succeeded by
    /// then (on the clock alone, even if a renewal request hangs), or as soon as a
    /// renewal finds another holder.
    pub async fn lost(&mut self) {
        loop {
            if *self.lost.borrow_and_update() {
                return;
            }
            let Some(until) = self.fence.valid_until() else {
                return;
            };
            if Instant::now() >= until {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                changed = self.lost.changed() => {
                    if changed.is_err() {
                        // The renewal task ended without a word: nothing renews any more.
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up at once so a standby does not wait for it to expire, within
    /// `within` (a shutdown has a deadline of its own). The fence closes before the
    /// lease is written: the standby may write as soon as it is free.
    pub async fn release(mut self, within: Duration) {
        self.stop.cancel();
        let Some(task) = self.task.take() else {
            self.fence.close();
            return;
        };
        let stopped = task.await;
        self.fence.close();
        let lease = match stopped {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(err) => {
                warn!(%err, "lease renewal task failed");
                return;
            }
        };
        let released = tokio::time::timeout(
            within.min(self.config.timings.renew_deadline),
            release_once(&self.api, &self.config, lease),
        )
        .await;
        match released {
            Ok(Ok(true)) => info!("released the leader lease"),
            Ok(Ok(false)) => info!("the leader lease was no longer ours to release"),
            Ok(Err(err)) => warn!(error = %err, "could not release the leader lease"),
            Err(_) => warn!("could not release the leader lease in time"),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.fence.close();
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Renews every retry period until stopped (returns the lease as last written, for the
/// release) or until leadership ends (returns `None`).
async fn renew_loop(
    api: Api<Lease>,
    config: LeaseConfig,
    mut lease: Lease,
    fence: WriteFence,
    lost: watch::Sender<bool>,
    stop: CancellationToken,
) -> Option<Lease> {
    let end = |why: &str| {
        error!(reason = why, "lost the leader lease");
        fence.close();
        lost.send_replace(true);
        None
    };
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return Some(lease),
            () = tokio::time::sleep(config.timings.retry_period) => {}
        }
        let Some(deadline) = fence.valid_until() else {
            return end("fence closed");
        };
        let sent = Instant::now();
        // A renewal that outlives the deadline is useless: by then a standby may lead.
        let renewal = tokio::select! {
            biased;
            () = stop.cancelled() => return Some(lease),
            renewal = tokio::time::timeout_at(deadline, renew_once(&api, &config, &lease)) => renewal,
        };
        match renewal {
            Ok(Ok(Renewal::Renewed(renewed))) => {
                lease = *renewed;
                fence.open_until(valid_until(sent, &config.timings));
                debug!("renewed the leader lease");
            }
            Ok(Ok(Renewal::TakenBy(holder))) => {
                warn!(
                    holder = holder.as_deref().unwrap_or(""),
                    "another replica holds the lease"
                );
                return end("taken over");
            }
            Ok(Err(err)) => {
                warn!(error = %err, "cannot renew the leader lease; retrying until the renew deadline");
            }
            Err(_) => return end("renew deadline passed"),
        }
        // Not `allows`: a new leader holding its writes still leads.
        if !fence.leads_at(Instant::now()) {
            return end("renew deadline passed");
        }
    }
}

enum Renewal {
    Renewed(Box<Lease>),
    /// Someone else holds it (or it was deleted: `None`).
    TakenBy(Option<String>),
}

async fn renew_once(
    api: &Api<Lease>,
    config: &LeaseConfig,
    lease: &Lease,
) -> Result<Renewal, kube::Error> {
    let renew = |current: &Lease| {
        let spec = held_spec(
            current.spec.as_ref(),
            &config.identity,
            Timestamp::now(),
            config.timings.lease_seconds(),
        );
        with_spec(current.clone(), spec)
    };
    match api
        .replace(&config.name, &PostParams::default(), &renew(lease))
        .await
    {
        Ok(lease) => return Ok(Renewal::Renewed(Box::new(lease))),
        Err(err) if is_not_found(&err) => return Ok(Renewal::TakenBy(None)),
        // Written since our last write (an earlier renewal whose answer was lost, or
        // someone else): still ours only if it still names us.
        Err(err) if is_conflict(&err) => {}
        Err(err) => return Err(err),
    }
    let Some(current) = api.get_opt(&config.name).await? else {
        return Ok(Renewal::TakenBy(None));
    };
    match holder_of(current.spec.as_ref()) {
        Some(holder) if holder == config.identity => {
            let lease = api
                .replace(&config.name, &PostParams::default(), &renew(&current))
                .await?;
            Ok(Renewal::Renewed(Box::new(lease)))
        }
        other => Ok(Renewal::TakenBy(other.map(str::to_owned))),
    }
}

/// Clears the holder if the lease still names us; true if it did.
async fn release_once(
    api: &Api<Lease>,
    config: &LeaseConfig,
    lease: Lease,
) -> Result<bool, kube::Error> {
    let mut current = lease;
    for _ in 0..2 {
        if holder_of(current.spec.as_ref()) != Some(config.identity.as_str()) {
            return Ok(false);
        }
        let spec = released_spec(current.spec.as_ref());
        match api
            .replace(
                &config.name,
                &PostParams::default(),
                &with_spec(current, spec),
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(err) if is_conflict(&err) => {
                let Some(fresh) = api.get_opt(&config.name).await? else {
                    return Ok(false);
                };
                current = fresh;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn spec(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

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
        assert!(fence.allows(Instant::now()));
        tokio::time::advance(secs(1)).await;
        assert!(!fence.allows(Instant::now()));
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

    #[test]
    fn errors_are_retried_with_a_growing_pause_up_to_a_lease_duration() {
        let t = Timings::new(secs(15), None, None).unwrap();
        let pauses: Vec<_> = (1..=5).map(|n| error_pause(n, &t)).collect();
        assert_eq!(pauses, [secs(2), secs(4), secs(8), secs(15), secs(15)]);
        assert_eq!(error_pause(u32::MAX, &t), secs(15));
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
