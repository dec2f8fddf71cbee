//! Periodic drift verification. Each pass fetches every listing that any
//! PolicyAttachment's pair is verified from (per policy and subject kind for users and
//! groups, per role for roles), then asks the controllers to reconcile
//! every attachment; those reconciles are served from the fresh listings, re-attach
//! whatever vanished out of band, and refresh `lastVerifiedAt`. Paused objects are left
//! out: no listing is fetched for them, and their reconciles only say they are paused, so
//! a grant removed out of band while paused is repaired after the pause, not during it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use rand::RngExt;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::crd::{PauseStep, PolicyAttachment};
use crate::reconcile::Context;

/// `interval` scaled by a random factor in [0.9, 1.1], so replicas and restarts spread out.
pub(crate) fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..=1.1))
}

pub(crate) async fn run(
    ctx: Arc<Context>,
    triggers: Vec<UnboundedSender<()>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(jittered(ctx.settings.resync_interval)) => {}
            _ = shutdown.cancelled() => return,
        }
        let objects = ctx.cached_objects();
        // A pass waits on one Vultr listing after another: a shutdown must not wait
        // for it (the listings it fetched stay cached; the next leader passes anew).
        tokio::select! {
            () = verify_pass(&ctx, &objects, &triggers) => {}
            () = shutdown.cancelled() => {
                info!("verification pass cancelled by shutdown");
                return;
            }
        }
    }
}

/// One verification pass: refresh every listing in use, then reconcile everything.
pub(crate) async fn verify_pass(
    ctx: &Context,
    objects: &[Arc<PolicyAttachment>],
    triggers: &[UnboundedSender<()>],
) {
    let live: Vec<_> = objects
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter(|o| o.pause_step() == PauseStep::Proceed)
        .collect();
    let keys: HashSet<_> = live
        .iter()
        .filter_map(|o| o.recorded_grant())
        .map(|g| g.listing().0)
        .collect();
    let started = std::time::SystemTime::now();
    let fetched = ctx.vultr.refresh(&keys).await;
    if fetched == keys.len() {
        ctx.metrics.verified(started);
    }
    ctx.prune();
    for trigger in triggers {
        let _ = trigger.unbounded_send(());
    }
    info!(
        listings_in_use = keys.len(),
        listings = fetched,
        attachments = live.len(),
        "verification pass"
    );
}
