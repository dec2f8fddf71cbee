//! `vultr-iam-operator run`: wires the Vultr client, the controllers, the drift
//! verifier and the HTTP endpoints together and shuts them down on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

mod args;
pub use args::RunArgs;

use crate::crd::PolicyAttachment;
use crate::http::{self, Health};
use crate::leader::{self, LeaseConfig, Timings};
use crate::metrics::Metrics;
use crate::reconcile::backoff::Backoff;
use crate::reconcile::recorder::Recorder;
use crate::reconcile::{self, Context, Settings};
use crate::vultr::{VultrClient, WriteFence};
use crate::watch_cache::{self, Lane, Stores};

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

/// After SIGTERM, how long in-flight reconciles get to finish before they are dropped
/// at their current await point (each step is idempotent and safe to cancel).
const RECONCILE_GRACE: Duration = Duration::from_secs(2);
/// After that, how long releasing the lease may take.
const RELEASE_BUDGET: Duration = Duration::from_millis(1500);
/// And how long the metrics server gets to close its connections. The three together
/// keep the exit within 5 s of SIGTERM, whatever the process was doing.
const SERVER_BUDGET: Duration = Duration::from_millis(500);

pub async fn run(args: RunArgs) -> Result<(), StartupError> {
    // First, so that a SIGTERM at any later point is a clean, prompt stop.
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(Signals::listen(), shutdown.clone()));
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
    let vultr = vultr_client(&args, &metrics, fence.clone(), &identity)?;
    health.credentials_loaded.store(true, Ordering::Relaxed);
    let client = kube::Client::try_default().await?;

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

    let leadership = match (lease_timings, fence) {
        (Some(timings), Some(fence)) => {
            let lease = lease_config(&args, identity.clone(), timings);
            match lead(&client, &lease, fence, &health, &shutdown).await? {
                Some(leadership) => Some(leadership),
                None => {
                    stop_server(server).await;
                    info!("stopped while standing by");
                    return Ok(());
                }
            }
        }
        _ => None,
    };

    let ctx = Arc::new(context(
        &args,
        client.clone(),
        vultr,
        metrics,
        identity,
        stores.clone(),
    ));
    let controllers = run_controllers(&args, client, ctx, stores, health, shutdown.child_token());
    let lease_lost = until_stopped(controllers, leadership, &shutdown).await;
    shutdown.cancel();
    stop_server(server).await;
    if lease_lost {
        return Err(StartupError::LeaseLost);
    }
    info!("stopped");
    Ok(())
}

/// The Vultr client the flags describe, observed by the metrics, fenced by the lease,
/// and following a rotated key file without a restart.
fn vultr_client(
    args: &RunArgs,
    metrics: &Metrics,
    fence: Option<WriteFence>,
    identity: &str,
) -> Result<VultrClient, StartupError> {
    let mut config = crate::connect::client_config(&args.vultr, identity)?;
    config.observer = Some(Arc::new(metrics.clone()));
    config.fence = fence;
    let key_in_use = config.api_key.clone();
    let vultr = VultrClient::new(config)?;
    if let Some(path) = &args.vultr.vultr_api_key_file {
        tokio::spawn(crate::vultr::follow_key_file(
            vultr.clone(),
            path.clone(),
            key_in_use,
            args.vultr_api_key_reload_interval,
        ));
    }
    Ok(vultr)
}

fn lease_config(args: &RunArgs, identity: String, timings: Timings) -> LeaseConfig {
    LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        identity,
        timings,
        longest_write: args.vultr.vultr_timeout,
    }
}

/// Stands by until this replica holds the lease (`None`: stopped meanwhile). A
/// standby is ready (it can take over at once) without holding the lease, once the API
/// server answers: retried, so that a slow API server at start does not leave a
/// standby unready for good. The probe stops on taking the lease (then the watch
/// caches decide).
async fn lead(
    client: &kube::Client,
    lease: &LeaseConfig,
    fence: WriteFence,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
) -> Result<Option<leader::Leadership>, StartupError> {
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
    let stopped = shutdown.clone().cancelled_owned();
    Ok(leader::acquire(client.clone(), lease, fence, health, stopped).await?)
}

/// The reconcilers' shared context: the Vultr account behind the port, the Event
/// recorder, the backoff and the settings from the flags.
fn context(
    args: &RunArgs,
    client: kube::Client,
    vultr: VultrClient,
    metrics: Metrics,
    identity: String,
    stores: Stores,
) -> Context {
    let settings = Settings {
        resync_interval: args.resync_interval,
        listing_max_age: args.listing_max_age(),
        attach_visibility_timeout: args.attach_visibility_timeout,
        verify_interval: Duration::from_secs(1),
        directory_max_age: args.directory_max_age,
        boundary: args.boundary(),
    };
    let account = crate::port::Account::new(
        vultr,
        settings.attach_visibility_timeout,
        settings.directory_max_age,
    );
    Context::new(
        client.clone(),
        Arc::new(account),
        Recorder::new(client, CONTROLLER_NAME.into(), identity),
        Backoff::new(args.backoff_base, args.backoff_max),
        settings,
        metrics,
        stores,
    )
}

/// Runs the controllers until a shutdown or the loss of the lease; true when the lease
/// was lost. On SIGTERM in-flight reconciles get RECONCILE_GRACE to finish, then the
/// lease is released. When leadership ends (renew deadline passed, or another holder)
/// they are cancelled at once instead: another replica may already be reconciling the
/// same objects, and the fence already refuses their Vultr writes. Dropping the
/// controllers drops every in-flight reconcile (and the drift pass) at its current
/// await point, without waiting for it.
async fn until_stopped(
    controllers: impl std::future::Future<Output = ()>,
    leadership: Option<leader::Leadership>,
    shutdown: &CancellationToken,
) -> bool {
    let mut controllers = Box::pin(controllers);
    let stopped = within_grace(shutdown, &mut controllers);
    let Some(mut leadership) = leadership else {
        stopped.await;
        return false;
    };
    let lost = tokio::select! {
        () = stopped => false,
        () = leadership.lost() => true,
    };
    if lost {
        error!("lost the leader lease: in-flight reconciles cancelled; exiting");
        drop(leadership);
    } else {
        leadership.release(RELEASE_BUDGET).await;
    }
    lost
}

/// Runs `controllers` until they end by themselves or, once `shutdown` is cancelled,
/// for RECONCILE_GRACE at most.
async fn within_grace(
    shutdown: &CancellationToken,
    controllers: &mut (impl std::future::Future<Output = ()> + Unpin),
) {
    tokio::select! {
        () = &mut *controllers => {}
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(RECONCILE_GRACE).await;
        } => warn!(grace = ?RECONCILE_GRACE, "in-flight reconciles did not finish in time; cancelled"),
    }
}

/// Waits for the metrics server to close, SERVER_BUDGET at most.
async fn stop_server(server: tokio::task::JoinHandle<std::io::Result<()>>) {
    match tokio::time::timeout(SERVER_BUDGET, server).await {
        Ok(Ok(Err(err))) => warn!(%err, "metrics server failed"),
        Ok(_) => {}
        Err(_) => warn!("metrics server did not close in time"),
    }
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

/// SIGTERM and SIGINT, registered at once (not when a task first runs), so that none
/// sent during startup falls back to the default action.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let register = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(err) => {
                warn!(%err, "cannot listen for {name}");
                None
            }
        };
        Self {
            term: register(SignalKind::terminate(), "SIGTERM"),
            int: register(SignalKind::interrupt(), "SIGINT"),
        }
    }
}

async fn shutdown_on_signal(mut signals: Signals, token: CancellationToken) {
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        () = recv(&mut signals.term) => info!("SIGTERM: finishing in-flight reconciles, then stopping"),
        () = recv(&mut signals.int) => info!("SIGINT: finishing in-flight reconciles, then stopping"),
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
    async fn after_shutdown_reconciles_get_the_grace_and_no_more() {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        });
        let started = tokio::time::Instant::now();
        // A reconcile that never ends (a hung request, a long wait).
        let mut never = Box::pin(std::future::pending::<()>());
        within_grace(&shutdown, &mut never).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(1) + RECONCILE_GRACE, "{took:?}");
        assert!(took < Duration::from_secs(1) + RECONCILE_GRACE + Duration::from_millis(10));
        // Controllers that end by themselves are not held.
        let started = tokio::time::Instant::now();
        let mut done = Box::pin(async {});
        within_grace(&CancellationToken::new(), &mut done).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(RECONCILE_GRACE + RELEASE_BUDGET + SERVER_BUDGET < Duration::from_secs(5));
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
