//! Apply: dereference -> record -> attach -> verify. The resolved pair is written to
//! status *before* anything is attached, so a crash at any `.await` can never leave a
//! grant in Vultr that a later deletion would not know to revoke.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{Span, info};

use crate::boundary::{Enforcement, Outside};
use crate::crd::{PERMITTED, PolicyAttachment, READY};
use crate::domain::Grant;
use crate::error::Error;
use crate::port::Observation;
use crate::reconcile::context::Context;
use crate::reconcile::decide::{self, AttachStep};
use crate::reconcile::pairs::Declarer;
use crate::reconcile::pause;
use crate::reconcile::record_grant;
use crate::reconcile::resolve::resolve;
use crate::reconcile::status::{self, Update};
use crate::reconcile::wording::{Named, RESOLVING, action, reason};
use crate::vultr::AttachOutcome;

pub async fn apply(obj: Arc<PolicyAttachment>, ctx: &Context) -> Result<Action, Error> {
    let api = ctx.api_for(&obj);
    let mut st = Update::of(&obj);
    follow_generation(&obj, &api, &mut st).await?;
    let apply = Apply {
        obj: &obj,
        ctx,
        api: &api,
    };
    if pause::was_paused(&st) {
        // Whatever happened in Vultr during the pause, a listing from before it must
        // not verify the pair.
        if let Some(grant) = st.grant() {
            ctx.vultr.require_newer(&grant);
        }
        pause::resume(&obj, ctx, &api, &mut st).await?;
    }
    let result = apply.attach_and_verify(&mut st).await;
    if let Err(err) = &result {
        // Once the pair is known, the message names it (e.g. a 404 from a policy or a
        // user deleted in Vultr since resolution).
        let message = match Named::recorded(&st) {
            Some(named) => named.failed(err),
            None => err.to_string(),
        };
        ctx.report_failure(&obj, &mut st, err, action::ATTACH, message)
            .await;
    }
    result
}

/// `Ready=False` on the very first reconcile, so kstatus/Flux see progress at once, and
/// the conditions of a new generation. An object still to resolve carries it in the
/// write that records the resolution (or the failure): one status write fewer per new
/// object.
async fn follow_generation(
    obj: &PolicyAttachment,
    api: &Api<PolicyAttachment>,
    st: &mut Update,
) -> Result<(), Error> {
    if st.condition(READY).is_some() && st.observed_generation == obj.metadata.generation {
        return Ok(());
    }
    status::show_declared(st, &obj.spec);
    if !st.is_ready() {
        st.ready(false, reason::ATTACHING, RESOLVING);
    } else {
        // Only deletionPolicy can change (the rest is immutable): the grant stands.
        st.follow_generation();
    }
    if st.grant().is_some() {
        st.write(api, obj).await?;
    }
    Ok(())
}

/// One apply: the object, the context and the object's API.
struct Apply<'a> {
    obj: &'a PolicyAttachment,
    ctx: &'a Context,
    api: &'a Api<PolicyAttachment>,
}

impl Apply<'_> {
    async fn attach_and_verify(&self, st: &mut Update) -> Result<Action, Error> {
        let Self { obj, ctx, api } = *self;
        let uid = obj.uid().unwrap_or_default();
        let (grant, newly_resolved) = match st.grant() {
            Some(grant) => (grant, false),
            None => (self.resolved(st).await?, true),
        };
        record_grant(&Span::current(), &grant);

        // Every Vultr read and write of this pair below happens under its lock, after the
        // pair is recorded and declared (see `pairs.rs`).
        let _pair = ctx.pairs.lock(&grant).await;
        if newly_resolved {
            st.write_with_pair(api, obj).await?;
            info!(%grant, "resolved");
        }
        ctx.objects.declare(&grant, Declarer::of(obj));
        let outside = ctx
            .settings
            .boundary
            .check(&grant, st.policy.as_deref())
            .err();
        match (outside, ctx.settings.boundary.enforcement) {
            (Some(outside), Enforcement::Enforce) => {
                return self.revoke_outside(st, &grant, outside).await;
            }
            (outside, Enforcement::Audit) => self.audit(st, outside).await?,
            (None, Enforcement::Enforce) => {}
        }

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
        self.take_step(st, &grant, step, fetched_at, newly_resolved)
            .await
    }

    /// A recorded grant outside the boundary (it narrowed since): revoked if Vultr lists
    /// it, and the object says why. Asked again with the backoff of a terminal failure.
    async fn revoke_outside(
        &self,
        st: &Update,
        grant: &Grant,
        outside: Outside,
    ) -> Result<Action, Error> {
        let Self { obj, ctx, .. } = *self;
        let max_age = ctx.settings.listing_max_age;
        if let Observation::Listed { present: true, .. } =
            ctx.vultr.observe(grant, max_age, false).await?
        {
            ctx.vultr.revoke(grant).await?;
            ctx.metrics.outside_boundary("revoked");
            info!(%grant, %outside, "revoked: outside the grant boundary");
            let note = Named::of(st, &obj.spec).revoked_outside(&outside);
            ctx.event(
                obj,
                EventType::Warning,
                reason::NOT_PERMITTED,
                action::REVOKE,
                note,
            )
            .await;
        }
        ctx.objects.attach_seen(&obj.uid().unwrap_or_default());
        Err(Error::NotPermitted(outside))
    }

    /// Under an `Audit` boundary, says whether the grant is outside it (`Permitted`), with
    /// a Warning and the metric while it is.
    async fn audit(&self, st: &mut Update, outside: Option<Outside>) -> Result<(), Error> {
        let Self { obj, ctx, api } = *self;
        let message = outside.map(|outside| Named::of(st, &obj.spec).audited_outside(&outside));
        let before = st.condition(PERMITTED).cloned();
        st.permitted(message.clone());
        if st.condition(PERMITTED) == before.as_ref() {
            return Ok(());
        }
        st.write(api, obj).await?;
        if let Some(note) = message {
            ctx.metrics.outside_boundary("audited");
            ctx.event(
                obj,
                EventType::Warning,
                reason::NOT_PERMITTED,
                action::ATTACH,
                note,
            )
            .await;
        }
        Ok(())
    }

    /// Acts on what the observation decided.
    async fn take_step(
        &self,
        st: &mut Update,
        grant: &Grant,
        step: AttachStep,
        fetched_at: SystemTime,
        newly_resolved: bool,
    ) -> Result<Action, Error> {
        let Self { obj, ctx, api } = *self;
        match step {
            AttachStep::Verified => {
                let verified =
                    Time(Timestamp::try_from(fetched_at).unwrap_or_else(|_| Timestamp::now()));
                self.verified_ready(st, verified).await?;
                ctx.objects.attach_seen(&obj.uid().unwrap_or_default());
                Ok(Action::await_change())
            }
            // Our attach is not visible yet: look again soon, in a newer listing, and do
            // not send it twice.
            AttachStep::AwaitVisibility => {
                ctx.vultr.require_newer(grant);
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
                self.attach(st, grant, drift).await?;
                // Verify soon (the listing lags behind writes), and not sooner: the watch
                // event of our own status write must not cost a listing of its own.
                let verify = ctx.settings.verify_interval;
                let uid = obj.uid().unwrap_or_default();
                ctx.objects
                    .hold(&uid, super::revision(obj), Instant::now() + verify);
                Ok(Action::requeue(verify))
            }
        }
    }

    /// Resolves the spec and puts the result in `st` (written with the pair, by the
    /// caller, under the pair's lock).
    async fn resolved(&self, st: &mut Update) -> Result<Grant, Error> {
        let Self { obj, ctx, .. } = *self;
        let resolution = resolve(ctx.vultr.as_ref(), &obj.spec).await?;
        let boundary = &ctx.settings.boundary;
        if let Err(outside) = boundary.check(&resolution.grant, Some(&resolution.policy_name))
            && boundary.enforcement == Enforcement::Enforce
        {
            // Not recorded either: a deletion must not revoke a grant this object never
            // made.
            ctx.metrics.outside_boundary("refused");
            return Err(Error::NotPermitted(outside));
        }
        st.record(&resolution.grant);
        st.policy = Some(resolution.policy_name);
        st.subject = Some(resolution.subject_name);
        if !st.is_ready() {
            let message = Named::of(st, &obj.spec).attaching();
            st.ready(false, reason::ATTACHING, message);
        }
        Ok(resolution.grant)
    }

    /// `Ready=True` from a listing that shows the grant, with an Event on the transition.
    /// Nothing is written when nothing a user sees changed.
    async fn verified_ready(&self, st: &mut Update, verified: Time) -> Result<(), Error> {
        let Self { obj, ctx, api } = *self;
        let was_ready = st.is_ready();
        let named = Named::of(st, &obj.spec);
        st.attached_at.get_or_insert_with(|| verified.clone());
        if st.verified_at_is_stale() {
            st.last_verified_at = Some(verified);
        }
        st.ready(true, reason::ATTACHED, named.verified());
        st.synced();
        st.write(api, obj).await?;
        if !was_ready {
            let note = named.attached_event();
            ctx.event(
                obj,
                EventType::Normal,
                reason::ATTACHED,
                action::ATTACH,
                note,
            )
            .await;
        }
        Ok(())
    }

    /// Sends the attach, then says on the object that it waits for the listing.
    async fn attach(&self, st: &mut Update, grant: &Grant, drift: bool) -> Result<(), Error> {
        let Self { obj, ctx, api } = *self;
        let uid = obj.uid().unwrap_or_default();
        let outcome = ctx.vultr.attach(grant).await?;
        let named = Named::of(st, &obj.spec);
        if drift {
            ctx.metrics.drift_repaired();
            let note = named.drift_repaired();
            ctx.event(
                obj,
                EventType::Warning,
                reason::DRIFT_REPAIRED,
                action::ATTACH,
                note,
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
        st.ready(false, reason::ATTACHING, message);
        st.synced();
        st.write(api, obj).await?;
        Ok(())
    }
}

/// Whether `obj` still exists as this object (same UID) and is not being deleted.
async fn still_live(api: &Api<PolicyAttachment>, obj: &PolicyAttachment) -> Result<bool, Error> {
    let live = api.get_opt(&obj.name_any()).await?;
    Ok(live
        .is_some_and(|live| live.uid() == obj.uid() && live.metadata.deletion_timestamp.is_none()))
}
