//! Cleanup: revoke the pair recorded in status (never a fresh resolution of the spec),
//! unless the object says `Orphan` or another live PolicyAttachment still declares the
//! same pair. Only an answer from Vultr that the grant is gone (204 or 404) lets the
//! finalizer go; every other outcome keeps it and says why on the object.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use crate::crd::{DeletionPolicy, Grant, PolicyAttachment};
use crate::error::Error;
use crate::reconcile::context::Context;
use crate::reconcile::status::{self, reason, set_ready};
use crate::vultr::RevokeOutcome;

pub async fn cleanup(obj: Arc<PolicyAttachment>, ctx: &Context) -> Result<Action, Error> {
    if obj.spec.deletion_policy == DeletionPolicy::Orphan {
        let note = match obj.recorded_grant() {
            Some(grant) => format!("deletionPolicy is Orphan: left {grant} in Vultr"),
            None => "deletionPolicy is Orphan: nothing was revoked".to_owned(),
        };
        ctx.event(&obj, EventType::Normal, reason::ORPHANED, "Revoke", note)
            .await;
        return Ok(Action::await_change());
    }
    let uid = obj.uid().unwrap_or_default();
    if ctx.was_revoked(&uid) {
        // A reconcile from a stale cache entry: the revocation already succeeded.
        return Ok(Action::await_change());
    }
    let Some(grant) = obj.recorded_grant() else {
        // Resolution never completed, so nothing was ever attached for this object.
        info!("no pair recorded: nothing to revoke");
        return Ok(Action::await_change());
    };
    if let Some(holder) = other_holder(ctx, &obj, &grant).await? {
        ctx.event(
            &obj,
            EventType::Normal,
            "GrantShared",
            "Revoke",
            format!("kept {grant}: still declared by PolicyAttachment {holder}"),
        )
        .await;
        return Ok(Action::await_change());
    }

    let mut st = obj.status.clone().unwrap_or_default();
    if status::is_ready(Some(&st)) {
        // The grant stops being usable now: say so while the revocation is in flight.
        let message = format!("revoking {grant} in Vultr");
        set_ready(
            &mut st,
            false,
            reason::DETACHING,
            message,
            obj.metadata.generation,
            Timestamp::now(),
        );
        status::write(&ctx.api_for(&obj), &obj, &st).await?;
    }
    match ctx.vultr.revoke(&grant.policy_id, &grant.subject).await {
        Ok(outcome) => {
            ctx.listings
                .invalidate(&grant.policy_id, grant.subject.kind())
                .await;
            let note = match outcome {
                RevokeOutcome::Revoked => format!("revoked {grant} in Vultr"),
                RevokeOutcome::AlreadyAbsent => format!("{grant} was already absent in Vultr"),
            };
            ctx.mark_revoked(&uid);
            info!(?outcome, "revoked");
            ctx.event(&obj, EventType::Normal, "Revoked", "Revoke", note)
                .await;
            Ok(Action::await_change())
        }
        Err(err) => {
            let err = Error::from(err);
            let message = format!("revocation of {grant} pending, will retry: {err}");
            ctx.report_failure(&obj, &mut st, &err, "Revoke", message)
                .await;
            Err(err)
        }
    }
}

/// Another live PolicyAttachment (any watched namespace) with the same recorded pair.
/// The watch cache names the candidates; each is confirmed with a GET, since the cache
/// can lag behind a deletion and an object deleted a moment ago must never keep a grant
/// alive. (It cannot lag the other way: a pair is only recorded by a reconcile of an
/// object this cache has seen.)
async fn other_holder(
    ctx: &Context,
    obj: &PolicyAttachment,
    grant: &Grant,
) -> Result<Option<String>, Error> {
    let declares = |other: &PolicyAttachment| {
        other.uid() != obj.uid()
            && other.metadata.deletion_timestamp.is_none()
            && other.recorded_grant().as_ref() == Some(grant)
    };
    for candidate in ctx.cached_objects().await {
        if !declares(&candidate) {
            continue;
        }
        let live = ctx
            .api_for(&candidate)
            .get_opt(&candidate.name_any())
            .await?;
        if let Some(live) = live.filter(|live| declares(live)) {
            return Ok(Some(format!(
                "{}/{}",
                live.namespace().unwrap_or_default(),
                live.name_any()
            )));
        }
    }
    Ok(None)
}
