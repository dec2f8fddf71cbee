//! Leader election on a coordination.k8s.io Lease (kube-lease-manager). Only the
//! leader reconciles; a standby waits, stays ready, and takes over once the leader's
//! lease expires or is released.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Lease settings from the command line.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// The held lease. Dropping it without [`Leadership::release`] lets the lease expire.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

/// Campaigns until this process holds the lease, or returns `None` if `stop` resolves
/// first.
pub async fn acquire(
    client: kube::Client,
    config: &LeaseConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let duration = config.duration.as_secs().max(2);
    // Renew a third of the duration before expiry: tolerates one slow renewal.
    let grace = (duration / 3).max(1);
    tokio::pin!(stop);
    info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "waiting for the leader lease");
    loop {
        let manager = LeaseManagerBuilder::new(client.clone(), &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(duration)
            .with_grace(grace)
            .build()
            .await?;
        let (mut state, task) = manager.watch().await;
        // The manager sleeps until the holder's lease would expire; a holder that
        // releases the lease on shutdown is noticed through a watch instead, and a
        // fresh manager takes the free lease at once.
        let released = wait_for_release(client.clone(), config);
        tokio::pin!(released);
        loop {
            if *state.borrow_and_update() {
                info!(identity = %config.identity, "acquired the leader lease");
                return Ok(Some(Leadership { state, task }));
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        // The manager task ended; surface its error.
                        return match task.await {
                            Ok(Err(err)) => Err(err),
                            _ => Ok(None),
                        };
                    }
                }
                () = &mut released => {
                    drop(state);
                    let _ = task.await;
                    break;
                }
                () = &mut stop => {
                    drop(state);
                    let _ = task.await;
                    return Ok(None);
                }
            }
        }
    }
}

/// Resolves when the lease goes from held to free (its holder released it).
async fn wait_for_release(client: kube::Client, config: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let watch = watcher::watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={}", config.name)),
    )
    .default_backoff()
    .applied_objects();
    tokio::pin!(watch);
    let mut held = false;
    while let Some(event) = watch.next().await {
        let Ok(lease) = event else { continue };
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty());
        match holder {
            Some(_) => held = true,
            None if held => return,
            None => {}
        }
    }
    // The watch ended (client shutting down): never resolve, the manager goes on.
    std::future::pending::<()>().await;
}

impl Leadership {
    /// Resolves when the lease is lost (renewal failed, or another holder took it).
    pub async fn lost(&mut self) {
        loop {
            if !*self.state.borrow_and_update() {
                return;
            }
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the lease up at once so a standby does not wait for it to expire.
    pub async fn release(self) {
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => info!("released the leader lease"),
            Ok(Err(err)) => warn!(%err, "could not release the leader lease"),
            Err(err) => warn!(%err, "lease manager task failed"),
        }
    }
}
