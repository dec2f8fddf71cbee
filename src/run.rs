//! `vultr-iam-operator run`: wires the Vultr client, the controllers, the drift
//! verifier and the HTTP endpoints together and shuts them down on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::RunArgs;
use crate::crd::PolicyAttachment;
use crate::http::{self, Health, Stores};
use crate::leader::{self, LeaseConfig, Timings};
use crate::metrics::Metrics;
use crate::reconcile::backoff::Backoff;
use crate::reconcile::{self, Context, Settings};
use crate::vultr::{VultrClient, WriteFence};
use crate::watch_cache::{self, Lane};

/// Errors that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Connect(#[from] crate::connect::ConnectError),
    #[error("Vultr client: {0}")]
    VultrConfig(#[from] crate::vultr::ConfigError),
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot listen on the metrics address: {0}")]
    Listen(#[from] std::io::Error),
    #[error("leader election: {0}")]
    Lease(#[from] leader::LeaseError),
    #[error("leader election: {0}")]
    LeaseTimings(#[from] leader::TimingsError),
    #[error("lost the leader lease; exiting so that a restart stands by again")]
    LeaseLost,
}

pub const CONTROLLER_NAME: &str = "vultr-iam-operator";

pub async fn run(args: RunArgs) -> Result<(), StartupError> {
    let metrics = Metrics::new();
    let health = Arc::new(Health::default());
    let identity = instance_identity();
    // With leader election, Vultr writes are fenced by the lease from the start: none
    // can leave before the lease is held, nor after the renew deadline.
    let lease_timings = args
        .leader_election
        .then(|| Timings::new(args.lease_duration, args.renew_deadline, args.retry_period))
        .transpose()?;
    let fence = lease_timings.map(|_| WriteFence::new());
    let mut vultr_config = crate::connect::client_config(&args.vultr, &identity)?;
    vultr_config.observer = Some(Arc::new(metrics.clone()));
    vultr_config.fence = fence.clone();
    let key_in_use = vultr_config.api_key.clone();
    let vultr = VultrClient::new(vultr_config)?;
    if let Some(path) = &args.vultr.vultr_api_key_file {
        // A rotated Secret takes effect without a restart.
        tokio::spawn(crate::vultr::follow_key_file(
            vultr.clone(),
            path.clone(),
            key_in_use,
            args.vultr_api_key_reload_interval,
        ));
    }
    health.credentials_loaded.store(true, Ordering::Relaxed);

    let client = kube::Client::try_default().await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));

    let stores: Stores = Arc::default();
    let listener = crate::listen::bind(args.metrics_bind_address)?;
    info!(address = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        stores.clone(),
        shutdown.clone(),
    ));

    let leadership = if let (Some(timings), Some(fence)) = (lease_timings, fence) {
        // A standby is ready (it can take over at once) without holding the lease,
        // once the API server answers: retried, so that a slow API server at start does
        // not leave a standby unready for good. Stopped on taking the lease (then the
        // watch caches decide).
        let standby = shutdown.child_token();
        let probe_client = client.clone();
        tokio::spawn(standby_readiness(
            move || {
                let client = probe_client.clone();
                async move { client.apiserver_version().await.is_ok() }
            },
            health.clone(),
            standby.clone(),
        ));
        let _stop_standby_probe = standby.drop_guard();
        let lease = LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            identity: identity.clone(),
            timings,
        };
        match leader::acquire(
            client.clone(),
            &lease,
            fence,
            shutdown.clone().cancelled_owned(),
        )
        .await?
        {
            Some(leadership) => Some(leadership),
            None => {
                let _ = server.await;
                info!("stopped while standing by");
                return Ok(());
            }
        }
    } else {
        None
    };

    let reporter = Reporter {
        controller: CONTROLLER_NAME.into(),
        instance: Some(identity),
    };
    let settings = Settings {
        resync_interval: args.resync_interval,
        listing_max_age: args.listing_max_age(),
        attach_visibility_timeout: args.attach_visibility_timeout,
        verify_interval: std::time::Duration::from_secs(1),
        directory_max_age: args.directory_max_age,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        vultr,
        Recorder::new(client.clone(), reporter),
        Backoff::new(args.backoff_base, args.backoff_max),
        settings,
        metrics,
        stores.clone(),
    ));

    // On SIGTERM reconciles finish, then the lease is released. When leadership ends
    // (renew deadline passed, or another holder) they are cancelled instead: another
    // replica may already be reconciling the same objects, and the fence already
    // refuses their Vultr writes.
    let controllers = run_controllers(&args, client, ctx, stores, health, shutdown.child_token());
    let lease_lost = match leadership {
        None => {
            controllers.await;
            false
        }
        Some(mut leadership) => {
            let mut controllers = Box::pin(controllers);
            let lost = tokio::select! {
                _ = &mut controllers => false,
                _ = leadership.lost() => true,
            };
            if lost {
                // Dropping the controllers drops every in-flight reconcile (and the
                // drift pass) at its current await point, without waiting for it.
                drop(controllers);
                error!("lost the leader lease: in-flight reconciles cancelled; exiting");
                drop(leadership);
            } else {
                leadership.release().await;
            }
            lost
        }
    };
    shutdown.cancel();
    if let Ok(Err(err)) = server.await {
        warn!(%err, "metrics server failed");
    }
    if lease_lost {
        return Err(StartupError::LeaseLost);
    }
    info!("stopped");
    Ok(())
}

/// Marks a standby ready once `reachable` says the API server answers, retrying with
/// a backoff from 1 s to 30 s until it does or `stop` is cancelled.
async fn standby_readiness<F, Fut>(mut reachable: F, health: Arc<Health>, stop: CancellationToken)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        if reachable().await {
            health.kubernetes_ready.store(true, Ordering::Relaxed);
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Events' reporting instance and lease holder: the pod name, else host and PID.
fn instance_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
        format!("{host}-{}", std::process::id())
    })
}

/// One controller per watched namespace (or one for the whole cluster), sharing the
/// context; each drift verification pass triggers a reconcile of every object.
async fn run_controllers(
    args: &RunArgs,
    client: kube::Client,
    ctx: Arc<Context>,
    stores: Stores,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let scopes = args.watch_scopes();
    let config = controller::Config::default().concurrency(args.concurrency);
    let mut triggers = Vec::new();
    let mut runs = Vec::new();
    for scope in &scopes {
        let api: Api<PolicyAttachment> = match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (tx, rx) = mpsc::unbounded::<()>();
        triggers.push(tx);
        let watch = || watcher::Config::default().any_semantic();
        let (store, changes) = watch_cache::watch(api.clone(), watch(), Lane::Live);
        let (waker, woken) = mpsc::unbounded();
        ctx.add_waker(scope.clone(), waker);
        let live = Controller::for_stream(changes, store.clone())
            .with_config(config.clone())
            .reconcile_all_on(rx)
            .reconcile_on(woken)
            .graceful_shutdown_on(shutdown.clone().cancelled_owned());
        stores.lock().unwrap_or_else(|e| e.into_inner()).push(store);
        runs.push(
            live.run(
                reconcile::reconcile_live,
                reconcile::error_policy,
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()))
            .boxed(),
        );
        // Revocations get a controller, and so a queue, of their own.
        let (store, changes) = watch_cache::watch(api, watch(), Lane::Deleted);
        let deleted = Controller::for_stream(changes, store)
            .with_config(config.clone())
            .graceful_shutdown_on(shutdown.clone().cancelled_owned());
        runs.push(
            deleted
                .run(
                    reconcile::reconcile_deleted,
                    reconcile::error_policy,
                    ctx.clone(),
                )
                .for_each(|_| futures::future::ready(()))
                .boxed(),
        );
    }

    let all_stores: Vec<_> = stores.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let readiness = async move {
        for store in &all_stores {
            if store.wait_until_ready().await.is_err() {
                return;
            }
        }
        health.kubernetes_ready.store(true, Ordering::Relaxed);
        info!("watch caches synced");
    };
    let verifier = crate::drift::run(ctx, triggers, shutdown);
    tokio::join!(futures::future::join_all(runs), readiness, verifier);
}

async fn shutdown_on_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            warn!(%err, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: finishing in-flight reconciles"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: finishing in-flight reconciles"),
    }
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn a_standby_becomes_ready_once_the_api_server_answers() {
        let health = Arc::new(Health::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let probe = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { n >= 2 }
        };
        let task = tokio::spawn(standby_readiness(
            probe,
            health.clone(),
            CancellationToken::new(),
        ));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!health.kubernetes_ready.load(Ordering::Relaxed));
        // Third probe after 1 s + 2 s.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        task.await.unwrap();
        assert!(health.kubernetes_ready.load(Ordering::Relaxed));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_standby_probe_stops_when_told() {
        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(standby_readiness(
            || async { false },
            health.clone(),
            stop.clone(),
        ));
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        stop.cancel();
        task.await.unwrap();
        assert!(!health.kubernetes_ready.load(Ordering::Relaxed));
    }
}
