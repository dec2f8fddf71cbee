//! The reconcile flow. The finalizer protocol (`finalizer.rs`) is the only top-level
//! step: it adds `iam.vultr-operator.io/detach` before anything is attached, runs
//! [`attach::apply`] while the object lives and [`revoke::cleanup`] once it is deleted,
//! and removes the finalizer only when cleanup succeeded. The pause switch
//! (`crd::pause_step`) comes first: a paused object makes no Vultr call in either
//! lane. Vultr is reached through the port (`crate::port::GrantPort`) alone.
//!
//! - decisions, pure: `decide.rs`, `backoff.rs`
//! - the steps: `attach.rs` (apply), `revoke.rs` (cleanup), `pause.rs`, `resolve.rs`
//! - what users read: `status.rs` (the status builder and its writes), `report.rs`
//!   (Events and failures), `wording.rs` (every reason and message), `recorder.rs`
//! - what the process remembers: `objects.rs` (per object), `pairs.rs` (per pair),
//!   `batching.rs` (verifications put off), `context.rs` (all of it, shared)

pub(crate) mod attach;
pub(crate) mod backoff;
mod batching;
pub(crate) mod context;
pub(crate) mod decide;
pub mod finalizer;
#[cfg(test)]
mod flow_tests;
pub(crate) mod objects;
pub(crate) mod pairs;
pub(crate) mod pause;
pub(crate) mod recorder;
pub(crate) mod report;
pub(crate) mod resolve;
pub(crate) mod revoke;
pub mod status;
#[cfg(test)]
mod testing;
pub(crate) mod wording;

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event;
use tracing::{Instrument, Span, debug, field, info_span, warn};

use crate::crd::{FINALIZER, PolicyAttachment};
use crate::crd::{PauseAnnotation, PauseStep};
use crate::domain::Grant;
use crate::error::Error;
use backoff::Revision;
pub use context::{Context, Settings};
use finalizer::finalizer;

/// The live lane: attach and verify. Deleted objects belong to the other lane.
pub async fn reconcile_live(
    obj: Arc<PolicyAttachment>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    in_lane(false, obj, ctx).await
}

/// The deleted lane: revocations, in a controller (and a queue) of their own, so a
/// deletion never waits behind a backlog of attaches.
pub async fn reconcile_deleted(
    obj: Arc<PolicyAttachment>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    in_lane(true, obj, ctx).await
}

/// Reconciles `obj` if it belongs to the lane of deleted objects or to the other.
async fn in_lane(
    deleted: bool,
    obj: Arc<PolicyAttachment>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if obj.metadata.deletion_timestamp.is_some() != deleted {
        return Ok(Action::await_change());
    }
    reconcile(obj, ctx).await
}

async fn reconcile(obj: Arc<PolicyAttachment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let span = info_span!(
        "reconcile",
        namespace = %namespace,
        // Not `name`: JSON logs use that key for the span's own name.
        object = %obj.name_any(),
        policy_id = field::Empty,
        subject = field::Empty,
    );
    if let Some(grant) = obj.recorded_grant() {
        record_grant(&span, &grant);
    }
    async move {
        let started = Instant::now();
        let uid = obj.uid().unwrap_or_default();
        if let Some(wait) = ctx.objects.remaining(&uid, revision(&obj)) {
            // Woken early by our own status write: keep the backoff (and Retry-After).
            return Ok(Action::requeue(wait));
        }
        let api = ctx.api_for(&obj);
        let deleting = obj.metadata.deletion_timestamp.is_some();
        // An Apply still running in the live lane finishes before a Cleanup starts.
        let _object = ctx.objects.lock(&uid).await;
        if !deleting && ctx.objects.deletion_handled(&uid) {
            // The live watch lags the deleted lane's: this snapshot predates a deletion
            // that is done. Nothing may be attached for the object again.
            debug!("stale live snapshot of a deleted object: skipped");
            return Ok(Action::await_change());
        }
        if let (PauseAnnotation::Unrecognised, Some(value)) = (
            PauseAnnotation::of(obj.pause_annotation()),
            obj.pause_annotation(),
        ) {
            pause::warn_unrecognised(&obj, &ctx, value).await;
        }
        let pause = obj.pause_step();
        let result = steps(obj, &ctx, &api, pause).await;
        ctx.metrics
            .reconciled(started.elapsed(), result.as_ref().err().map(Error::reason));
        settle(&ctx, &uid, deleting, pause, &result);
        result
    }
    .instrument(span)
    .await
}

/// The pause switch, then the finalizer protocol: Apply while the object lives,
/// Cleanup once it is deleted.
async fn steps(
    obj: Arc<PolicyAttachment>,
    ctx: &Context,
    api: &Api<PolicyAttachment>,
    pause: PauseStep,
) -> Result<Action, Error> {
    if pause == PauseStep::HoldDeletion {
        return pause::hold_deletion(obj, ctx).await;
    }
    let uid = obj.uid().unwrap_or_default();
    finalizer(api, FINALIZER, obj, |event| async {
        let result = match event {
            Event::Apply(obj) if pause == PauseStep::HoldLive => pause::hold_live(obj, ctx).await,
            Event::Apply(obj) => attach::apply(obj, ctx).await,
            Event::Cleanup(obj) => return revoke::cleanup(obj, ctx).await,
        };
        // Not after the reconcile that only adds the finalizer: that one is not the
        // object's turn yet.
        ctx.objects.mark_turn(&uid);
        result
    })
    .await
    .map_err(Error::from)
}

/// What the process keeps after a reconcile: nothing once a deleted object's cleanup
/// succeeded (a held deletion is not gone), a fresh failure count after a success, a
/// turn after a live failure.
fn settle(
    ctx: &Context,
    uid: &str,
    deleting: bool,
    pause: PauseStep,
    result: &Result<Action, Error>,
) {
    match result {
        Ok(_) if deleting && pause != PauseStep::HoldDeletion => ctx.forget(uid),
        Ok(_) => ctx.objects.clear_failures(uid),
        Err(err) => {
            // A failure is a turn too: an object that can never be reconciled (its
            // finalizer refused) must not hold every verification in a batch.
            if !deleting {
                ctx.objects.mark_turn(uid);
            }
            warn!(reason = err.reason(), error = %err, "reconcile failed")
        }
    }
}

/// Requeue after a per-object exponential backoff with jitter (Retry-After is a floor).
pub fn error_policy(obj: Arc<PolicyAttachment>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = obj.uid().unwrap_or_default();
    if ctx.objects.deletion_handled(&key) {
        // Nothing is left to do for it; keep no state about it either.
        return Action::await_change();
    }
    Action::requeue(
        ctx.objects
            .next_delay(&key, revision(&obj), err.retry_after()),
    )
}

/// Puts the resolved pair on a reconcile span (it is empty until resolution).
pub(crate) fn record_grant(span: &Span, grant: &Grant) {
    span.record("policy_id", grant.policy_id.as_str());
    span.record("subject", field::display(&grant.subject));
}

pub(crate) fn revision(obj: &PolicyAttachment) -> Revision {
    Revision {
        generation: obj.metadata.generation,
        deleting: obj.metadata.deletion_timestamp.is_some(),
        paused: obj.pause_step() != PauseStep::Proceed,
    }
}
