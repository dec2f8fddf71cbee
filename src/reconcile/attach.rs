//! Apply: dereference -> record -> attach -> verify. The resolved pair is written to
//! status *before* anything is attached, so a crash at any `.await` can never leave a
//! grant in Vultr that a later deletion would not know to revoke.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{Span, info};

use crate::crd::{PolicyAttachment, PolicyAttachmentStatus};
use crate::domain::Grant;
use crate::error::Error;
use crate::port::Observation;
use crate::reconcile::context::Context;
use crate::reconcile::decide::{self, AttachStep};
use crate::reconcile::pairs::Declarer;
use crate::reconcile::pause;
use crate::reconcile::record_grant;
use crate::reconcile::resolve::resolve;
use crate::reconcile::status::{self, reason, set_ready, set_synced};
use crate::reconcile::wording::Named;
use crate::vultr::AttachOutcome;

pub async fn apply(obj: Arc<PolicyAttachment>, ctx: &Context) -> Result<Action, Error> {
    let api = ctx.api_for(&obj);
    let generation = obj.metadata.generation;
    let mut st = obj.status.clone().unwrap_or_default();

    // Ready=False on the very first reconcile, so kstatus/Flux see progress at once. An
    // object still to resolve carries it in the write that records the resolution (or
    // the failure): one status write fewer per new object.
    if st.condition(crate::crd::READY).is_none() || st.observed_generation != generation {
        status::show_declared(&mut st, &obj.spec);
        if !status::is_ready(Some(&st)) {
            set_ready(
                &mut st,
                false,
                reason::ATTACHING,
                status::RESOLVING,
                generation,
                Timestamp::now(),
            );
        } else {
            // Only deletionPolicy can change (the rest is immutable): the grant stands.
            st.observed_generation = generation;
            for c in &mut st.conditions {
                c.observed_generation = generation;
            }
        }
        if st.grant().is_some() {
            status::write_if_changed(&api, &obj, &st).await?;
        }
    }

    if pause::was_paused(&st) {
        // Whatever happened in Vultr during the pause, a listing from before it must
        // not verify the pair.
        if let Some(grant) = st.grant() {
            ctx.vultr.require_newer(&grant);
        }
        pause::resume(&obj, ctx, &api, &mut st).await?;
    }

    let result = attach_and_verify(&obj, ctx, &api, &mut st).await;
    if let Err(err) = &result {
        // Once the pair is known, the message names it (e.g. a 404 from a policy or a
        // user deleted in Vultr since resolution).
        let message = match Named::recorded(&st) {
            Some(named) => named.failed(err),
            None => err.to_string(),
        };
        ctx.report_failure(&obj, &mut st, err, "Attach", message)
            .await;
    }
    result
}

async fn attach_and_verify(
    obj: &PolicyAttachment,
    ctx: &Context,
    api: &Api<PolicyAttachment>,
    st: &mut PolicyAttachmentStatus,
) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let (grant, newly_resolved) = match st.grant() {
        Some(grant) => (grant, false),
        None => (resolved(obj, ctx, st).await?, true),
    };
    record_grant(&Span::current(), &grant);

    // Every Vultr read and write of this pair below happens under its lock, after the
    // pair is recorded and declared (see `pairs.rs`).
    let _pair = ctx.pairs.lock(&grant).await;
    if newly_resolved {
        status::record_pair(api, obj, st).await?;
        info!(%grant, "resolved");
    }
    ctx.objects.declare(&grant, Declarer::of(obj));

    let sent_at = ctx.objects.attach_sent_at(&uid);
    let (present, fetched_at) = match ctx.observe(obj, &grant).await? {
        Observation::Listed {
            present,
            fetched_at,
        } => (present, fetched_at),
        // Batching verifications while the Vultr budget is the bottleneck.
        Observation::Later(wait) => return Ok(Action::requeue(wait)),
    };
    let step = decide::attach_step(
        present,
        sent_at.map(|at| at.elapsed()),
        ctx.settings.attach_visibility_timeout,
        st.attached_at.is_some(),
    );
    match step {
        AttachStep::Verified => {
            let verified =
                Time(Timestamp::try_from(fetched_at).unwrap_or_else(|_| Timestamp::now()));
            verified_ready(obj, ctx, api, st, verified).await?;
            ctx.objects.attach_seen(&uid);
            Ok(Action::await_change())
        }
        // Our attach is not visible yet: look again soon, in a newer listing, and do
        // not send it twice.
        AttachStep::AwaitVisibility => {
            ctx.vultr.require_newer(&grant);
            Ok(Action::requeue(ctx.settings.verify_interval))
        }
        // Not first in this reconcile: a write with the UID precondition (recording the
        // pair) proves the object exists, and the object lock orders this POST before
        // its revocation. Otherwise the snapshot may predate a deletion a lagging watch
        // has not shown yet: read the object live first.
        AttachStep::Attach { .. } if !newly_resolved && !still_live(api, obj).await? => {
            info!("the object is gone or being deleted: no attach");
            Ok(Action::await_change())
        }
        AttachStep::Attach { drift } => {
            attach(obj, ctx, api, st, &grant, drift).await?;
            // Verify soon (the listing lags behind writes), and not sooner: the watch
            // event of our own status write must not cost a listing of its own.
            let verify = ctx.settings.verify_interval;
            ctx.objects.hold(
                &uid,
                super::revision(obj),
                std::time::Instant::now() + verify,
            );
            Ok(Action::requeue(verify))
        }
    }
}

/// Resolves the spec and puts the result in `st` (written with the pair, by the
/// caller, under the pair's lock).
async fn resolved(
    obj: &PolicyAttachment,
    ctx: &Context,
    st: &mut PolicyAttachmentStatus,
) -> Result<Grant, Error> {
    let resolution = resolve(ctx.vultr.as_ref(), &obj.spec).await?;
    st.record(&resolution.grant);
    st.policy = Some(resolution.policy_name);
    st.subject = Some(resolution.subject_name);
    if !status::is_ready(Some(st)) {
        let message = Named::of(st, &obj.spec).attaching();
        set_ready(
            st,
            false,
            reason::ATTACHING,
            message,
            obj.metadata.generation,
            Timestamp::now(),
        );
    }
    Ok(resolution.grant)
}

/// Whether `obj` still exists as this object (same UID) and is not being deleted.
async fn still_live(api: &Api<PolicyAttachment>, obj: &PolicyAttachment) -> Result<bool, Error> {
    let live = api.get_opt(&obj.name_any()).await?;
    Ok(live
        .is_some_and(|live| live.uid() == obj.uid() && live.metadata.deletion_timestamp.is_none()))
}

/// `Ready=True` from a listing that shows the grant, with an Event on the transition.
/// Nothing is written when nothing a user sees changed (see `status::write_if_changed`).
async fn verified_ready(
    obj: &PolicyAttachment,
    ctx: &Context,
    api: &Api<PolicyAttachment>,
    st: &mut PolicyAttachmentStatus,
    verified: Time,
) -> Result<(), Error> {
    let was_ready = status::is_ready(Some(st));
    let named = Named::of(st, &obj.spec);
    let generation = obj.metadata.generation;
    let now = Timestamp::now();
    st.attached_at.get_or_insert_with(|| verified.clone());
    if status::verified_at_is_stale(st, now) {
        st.last_verified_at = Some(verified);
    }
    set_ready(
        st,
        true,
        reason::ATTACHED,
        named.verified(),
        generation,
        now,
    );
    set_synced(st, generation, now);
    status::write_if_changed(api, obj, st).await?;
    if !was_ready {
        ctx.event(
            obj,
            EventType::Normal,
            reason::ATTACHED,
            "Attach",
            named.attached_event(),
        )
        .await;
    }
    Ok(())
}

/// Sends the attach, then says on the object that it waits for the listing.
async fn attach(
    obj: &PolicyAttachment,
    ctx: &Context,
    api: &Api<PolicyAttachment>,
    st: &mut PolicyAttachmentStatus,
    grant: &Grant,
    drift: bool,
) -> Result<(), Error> {
    let uid = obj.uid().unwrap_or_default();
    let outcome = ctx.vultr.attach(grant).await?;
    let named = Named::of(st, &obj.spec);
    if drift {
        ctx.metrics.drift_repaired();
        ctx.event(
            obj,
            EventType::Warning,
            "DriftRepaired",
            "Attach",
            named.drift_repaired(),
        )
        .await;
    }
    // An unconfirmed rejection waits like a fresh attach; if the listing still does not
    // show the pair after the visibility timeout, the next attempt reports it.
    let unconfirmed = match outcome {
        AttachOutcome::Unconfirmed(err) if ctx.objects.attach_sent_at(&uid).is_some() => {
            return Err(err.into());
        }
        AttachOutcome::Unconfirmed(err) => Some(err),
        AttachOutcome::Attached | AttachOutcome::AlreadyAttached => None,
    };
    ctx.objects.mark_attach_sent(&uid);
    // A first attach leaves `Ready=False Attaching` as it is until the listing shows the
    // grant (a second write per object would only change its message). A repair says the
    // grant was missing; a rejected attach says why it waits.
    let message = match (unconfirmed, drift) {
        (Some(err), _) => named.attach_unconfirmed(&err),
        (None, true) => named.drift_repaired(),
        (None, false) => return Ok(()),
    };
    let now = Timestamp::now();
    set_ready(
        st,
        false,
        reason::ATTACHING,
        message,
        obj.metadata.generation,
        now,
    );
    set_synced(st, obj.metadata.generation, now);
    status::write_if_changed(api, obj, st).await?;
    Ok(())
}
