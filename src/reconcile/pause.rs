//! The pause switch at work: what a paused object shows, and the Events it emits. The
//! decision itself is `crd::pause_step`; nothing here calls Vultr.
//!
//! A paused live object still declares its recorded pair, so another holder's deletion
//! keeps the grant. A paused deleted object declares nothing (like any deleted one): the
//! pause holds its own revocation, not those of others, so the last live holder's
//! deletion revokes a shared grant even while a paused deletion of the same pair waits.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::crd::{PolicyAttachment, PolicyAttachmentStatus, READY, SYNCED};
use crate::error::Error;
use crate::reconcile::context::Context;
use crate::reconcile::pairs::Declarer;
use crate::reconcile::status::{self, Update};
use crate::reconcile::wording::{self, Named, RESOLVING, action, reason};

/// Live and paused: `Synced=False Paused`, `Ready` left as the last verification saw it
/// (`Ready=False Paused` only when there is none yet), one `Paused` Event on the way in.
/// Nothing is requeued: the annotation's removal is a watch event of its own.
pub async fn hold_live(obj: Arc<PolicyAttachment>, ctx: &Context) -> Result<Action, Error> {
    let mut st = Update::of(&obj);
    status::show_declared(&mut st, &obj.spec);
    if let Some(grant) = st.grant() {
        ctx.objects.declare(&grant, Declarer::of(&obj));
    }
    let named = Named::of(&st, &obj.spec);
    if st.condition(READY).is_none() {
        st.ready(false, reason::PAUSED, named.paused_before_attaching());
    }
    hold(&obj, ctx, st, named.paused(), EventType::Normal).await?;
    Ok(Action::await_change())
}

/// Deleted and paused: the finalizer stays and the status says why. Status writes here
/// are best-effort, as everywhere in cleanup (a namespace being deleted refuses them).
pub async fn hold_deletion(obj: Arc<PolicyAttachment>, ctx: &Context) -> Result<Action, Error> {
    let st = Update::of(&obj);
    let message = Named::of(&st, &obj.spec).deletion_held();
    if let Err(err) = hold(&obj, ctx, st, message, EventType::Warning).await {
        tracing::warn!(%err, "could not record the held deletion in status; going on");
    }
    Ok(Action::await_change())
}

/// Sets `Synced=False Paused` with `message` (every condition follows the current
/// generation: only `deletionPolicy` can have changed), writes only on change, and
/// emits the `Paused` Event when the message is new.
async fn hold(
    obj: &PolicyAttachment,
    ctx: &Context,
    mut st: Update,
    message: String,
    type_: EventType,
) -> Result<(), Error> {
    let already = st
        .condition(SYNCED)
        .is_some_and(|c| c.reason == reason::PAUSED && c.message == message);
    st.not_synced(reason::PAUSED, &message);
    st.follow_generation();
    st.write(&ctx.api_for(obj), obj).await?;
    if !already {
        ctx.event(obj, type_, reason::PAUSED, action::PAUSE, message)
            .await;
    }
    Ok(())
}

/// Whether the last status this object shows is a pause (so the next reconcile that
/// runs resumes it).
pub fn was_paused(st: &PolicyAttachmentStatus) -> bool {
    st.condition(SYNCED)
        .is_some_and(|c| c.reason == reason::PAUSED)
}

/// The pause is over: `Synced` says so at once (not only once a later step writes, which
/// a batched verification may postpone), and a `Resumed` Event. `Ready` is for the
/// verification that follows.
pub async fn resume(
    obj: &PolicyAttachment,
    ctx: &Context,
    api: &Api<PolicyAttachment>,
    st: &mut Update,
) -> Result<(), Error> {
    let message = Named::of(st, &obj.spec).resumed();
    if st
        .condition(READY)
        .is_some_and(|c| c.reason == reason::PAUSED)
    {
        // Paused before the first attach: now it is attaching.
        st.ready(false, reason::ATTACHING, RESOLVING);
    }
    st.resumed(&message);
    st.write(api, obj).await?;
    ctx.event(
        obj,
        EventType::Normal,
        reason::RESUMED,
        action::PAUSE,
        message,
    )
    .await;
    Ok(())
}

/// A Warning Event, once per value and process, for an annotation value that is
/// neither "true" nor "false" (e.g. "True"): it does not pause.
pub async fn warn_unrecognised(obj: &PolicyAttachment, ctx: &Context, value: &str) {
    if !ctx
        .objects
        .first_unrecognised_pause(&obj.uid().unwrap_or_default(), value)
    {
        return;
    }
    let note = wording::unrecognised_pause(value);
    ctx.event(
        obj,
        EventType::Warning,
        reason::INVALID_PAUSE_ANNOTATION,
        action::PAUSE,
        note,
    )
    .await;
}
