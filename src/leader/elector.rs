//! The elector: campaigns until this replica holds the lease, then renews it in a task
//! of its own and keeps the Vultr write fence open while it leads.

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use super::fence::{Took, first_write_at, valid_until};
use super::lease::{
    Campaign, Observed, campaign, held_spec, holder_of, is_conflict, is_fatal, is_not_found,
    released_spec, write,
};
use super::{LeaseConfig, timings::error_pause};
use crate::http::Health;
use crate::vultr::WriteFence;

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
pub(crate) async fn acquire(
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
            match write(api, &config.name, current, spec).await {
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
    pub(crate) async fn lost(&mut self) {
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
    pub(crate) async fn release(mut self, within: Duration) {
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
        // Leading, not an open window: a new leader holding its writes still leads.
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
    let held = |current: &Lease| {
        held_spec(
            current.spec.as_ref(),
            &config.identity,
            Timestamp::now(),
            config.timings.lease_seconds(),
        )
    };
    match write(api, &config.name, lease.clone(), held(lease)).await {
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
            let spec = held(&current);
            let lease = write(api, &config.name, current, spec).await?;
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
        match write(api, &config.name, current, spec).await {
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
