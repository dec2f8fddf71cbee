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

use crate::crd::PolicyAttachment;
use crate::error::Error;
use crate::reconcile::context::Context;
use crate::reconcile::record_grant;
use crate::reconcile::resolve::resolve;
use crate::reconcile::status::{self, reason, set_ready};
use crate::vultr::AttachOutcome;

pub async fn apply(obj: Arc<PolicyAttachment>, ctx: &Context) -> Result<Action, Error> {
    let api = ctx.api_for(&obj);
    let generation = obj.metadata.generation;
    let uid = obj.uid().unwrap_or_default();
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
        status::write(&api, &obj, &st).await?;
    }

    let result = attach_and_verify(&obj, ctx, &api, &mut st, &uid).await;
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
    st: &mut crate::crd::PolicyAttachmentStatus,
    uid: &str,
) -> Result<Action, Error> {
    let generation = obj.metadata.generation;
    let grant = match st.grant() {
        Some(grant) => grant,
        None => {
            let resolution = resolve(&ctx.vultr, &obj.spec).await?;
            let grant = resolution.grant;
            st.record(&grant);
            st.policy = Some(resolution.policy_name);
            st.subject = Some(resolution.subject_name);
            status::write(api, obj, st).await?;
            info!(%grant, "resolved");
            record_grant(&Span::current(), &grant);
            grant
        }
    };

    // While a fresh attach is awaited, look again each time instead of reusing a listing.
    let max_age = match ctx.attach_sent_at(uid) {
        Some(_) => ctx.settings.verify_interval,
        None => ctx.settings.listing_max_age,
    };
    let listing = ctx
        .listings
        .get(&grant.policy_id, grant.subject.kind(), max_age)
        .await?;
    if listing.contains(grant.subject.id()) {
        let was_ready = status::is_ready(Some(st));
        let verified =
            Time(Timestamp::try_from(listing.fetched_at).unwrap_or_else(|_| Timestamp::now()));
        st.attached_at.get_or_insert_with(|| verified.clone());
        st.last_verified_at = Some(verified);
        set_ready(
            st,
            true,
            reason::ATTACHED,
            format!("{grant} is attached and verified in Vultr"),
            generation,
            Timestamp::now(),
        );
        status::write(api, obj, st).await?;
        ctx.forget(uid);
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
        return Ok(Action::await_change());
    }

    // Not listed. A recent attach of ours may just not be visible yet: wait, don't flap.
    if let Some(sent) = ctx.attach_sent_at(uid)
        && sent.elapsed() < ctx.settings.attach_visibility_timeout
    {
        return Ok(Action::requeue(ctx.settings.verify_interval));
    }

    let drifted = st.attached_at.is_some();
    let outcome = ctx
        .vultr
        .attach_confirmed(&grant.policy_id, &grant.subject)
        .await?;
    ctx.listings
        .invalidate(&grant.policy_id, grant.subject.kind())
        .await;
    ctx.mark_attach_sent(uid);
    if drifted {
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
    let message = match outcome {
        AttachOutcome::Attached => format!("attached {grant}; waiting for Vultr to list it"),
        AttachOutcome::AlreadyAttached => format!("{grant} is attached; verifying"),
    };
    set_ready(
        st,
        false,
        reason::ATTACHING,
        message,
        generation,
        Timestamp::now(),
    );
    status::write(api, obj, st).await?;
    Ok(Action::requeue(ctx.settings.verify_interval))
}
