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
use crate::listings::Verification;
use crate::reconcile::context::Context;
use crate::reconcile::decide::{self, AttachStep};
use crate::reconcile::pairs::Declarer;
use crate::reconcile::record_grant;
use crate::reconcile::resolve::resolve;
use crate::reconcile::status::{self, reason, set_ready, set_synced};
use crate::vultr::AttachOutcome;

pub async fn apply(obj: Arc<PolicyAttachment>, ctx: &Context) -> Result<Action, Error> {
    let api = ctx.api_for(&obj);
    let generation = obj.metadata.generation;
    let mut st = obj.status.clone().unwrap_or_default();

    // Ready=False on the very first reconcile, so kstatus/Flux see progress at once.
    if st.condition(crate::crd::READY).is_none() || st.observed_generation != generation {
        let (kind, subject) = obj.spec.subject_display();
        st.policy = Some(obj.spec.policy_display());
        st.subject_kind = st.subject_kind.or(kind);
        st.subject = Some(subject);
        if !status::is_ready(Some(&st)) {
            set_ready(
                &mut st,
                false,
                reason::ATTACHING,
                "resolving the policy and subject in Vultr",
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
        status::write_if_changed(&api, &obj, &st).await?;
    }

    let result = attach_and_verify(&obj, ctx, &api, &mut st).await;
    if let Err(err) = &result {
        ctx.report_failure(&obj, &mut st, err, "Attach", err.to_string())
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
        None => {
            let resolution = resolve(&ctx.directory, &obj.spec).await?;
            st.record(&resolution.grant);
            st.policy = Some(resolution.policy_name);
            st.subject = Some(resolution.subject_name);
            (resolution.grant, true)
        }
    };
    record_grant(&Span::current(), &grant);

    // Every Vultr read and write of this pair below happens under its lock, after the
    // pair is recorded and declared (see `pairs.rs`).
    let _pair = ctx.pairs.lock(&grant).await;
    if newly_resolved || !status::pair_owned(obj) {
        status::record_pair(api, obj, &grant).await?;
    }
    if newly_resolved {
        status::write(api, obj, st).await?;
        info!(%grant, "resolved");
    }
    ctx.pairs.declare(
        &grant,
        Declarer {
            uid: uid.clone(),
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
        },
    );

    let sent_at = ctx.memory.attach_sent_at(&uid);
    let listing = match ctx
        .listings
        .for_pair(&grant, ctx.settings.listing_max_age)
        .await?
    {
        Verification::Listing(listing) => listing,
        // Batching verifications while the Vultr budget is the bottleneck.
        Verification::Later(wait) => return Ok(Action::requeue(wait)),
    };
    let step = decide::attach_step(
        listing.shows(&grant),
        sent_at.map(|at| at.elapsed()),
        ctx.settings.attach_visibility_timeout,
        st.attached_at.is_some(),
    );
    match step {
        AttachStep::Verified => {
            let verified =
                Time(Timestamp::try_from(listing.fetched_at).unwrap_or_else(|_| Timestamp::now()));
            verified_ready(obj, ctx, api, st, &grant, verified).await?;
            ctx.memory.attach_seen(&uid);
            Ok(Action::await_change())
        }
        // Our attach is not visible yet: look again soon, in a newer listing, and do
        // not send it twice.
        AttachStep::AwaitVisibility => {
            ctx.listings.require_newer(&grant);
            Ok(Action::requeue(ctx.settings.verify_interval))
        }
        AttachStep::Attach { drift } => {
            attach(obj, ctx, api, st, &grant, drift).await?;
            // Verify soon (the listing lags behind writes), and not sooner: the watch
            // event of our own status write must not cost a listing of its own.
            let verify = ctx.settings.verify_interval;
            ctx.backoff.hold(
                &uid,
                super::revision(obj),
                std::time::Instant::now() + verify,
            );
            Ok(Action::requeue(verify))
        }
    }
}

/// `Ready=True` from a listing that shows the grant, with an Event on the transition.
/// Nothing is written when nothing a user sees changed (see `status::write_if_changed`).
async fn verified_ready(
    obj: &PolicyAttachment,
    ctx: &Context,
    api: &Api<PolicyAttachment>,
    st: &mut PolicyAttachmentStatus,
    grant: &Grant,
    verified: Time,
) -> Result<(), Error> {
    let was_ready = status::is_ready(Some(st));
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
        format!("{grant} is attached and verified in Vultr"),
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
            format!("{grant} attached and verified in Vultr"),
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
    let result = ctx
        .vultr
        .attach_confirmed(&grant.policy_id, &grant.subject)
        .await;
    // Also after a failure: a POST that timed out may still have been applied.
    ctx.listings.note_write(grant);
    let outcome = result?;
    if drift {
        ctx.metrics.drift_repaired();
        ctx.event(
            obj,
            EventType::Warning,
            "DriftRepaired",
            "Attach",
            format!("{grant} was missing in Vultr (removed out of band); attached it again"),
        )
        .await;
    }
    let message = match &outcome {
        AttachOutcome::Attached => format!("attached {grant}; waiting for Vultr to list it"),
        AttachOutcome::AlreadyAttached => format!("{grant} is attached; verifying"),
        AttachOutcome::Unconfirmed(err) => format!(
            "{err}; an earlier attach may not be listed yet: waiting for Vultr to list {grant}"
        ),
    };
    // An unconfirmed rejection waits like a fresh attach; if the listing still does not
    // show the pair after the visibility timeout, the next attempt reports it.
    match outcome {
        AttachOutcome::Unconfirmed(err) if ctx.memory.attach_sent_at(&uid).is_some() => {
            return Err(err.into());
        }
        _ => ctx.memory.mark_attach_sent(&uid),
    }
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
