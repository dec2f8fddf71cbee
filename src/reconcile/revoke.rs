//! Cleanup: revoke the pair recorded in status (never a fresh resolution of the spec),
//! unless the object says `Orphan` or another live PolicyAttachment still declares the
//! same pair. Only an answer from Vultr that the grant is gone (204, or a 404 that the
//! listing confirms) lets the finalizer go; every other outcome keeps it and says why on
//! the object. Nothing that only informs (a status write, an Event) gates the DELETE.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{Span, info};

use crate::crd::{PolicyAttachment, READY};
use crate::domain::Grant;
use crate::error::Error;
use crate::reconcile::context::Context;
use crate::reconcile::decide::{self, Candidate, CleanupStep, Holders};
use crate::reconcile::pairs::Declarer;
use crate::reconcile::record_grant;
use crate::reconcile::status::Update;
use crate::reconcile::wording::{NOTHING_REVOKED, Named, action, reason};
use crate::vultr::RevokeOutcome;

pub async fn cleanup(obj: Arc<PolicyAttachment>, ctx: &Context) -> Result<Action, Error> {
    let Some(grant) = pair_to_revoke(&obj, ctx).await? else {
        return Ok(Action::await_change());
    };
    let mut st = Update::of(&obj);
    let named = match Named::recorded(&st) {
        Some(named) if st.grant().as_ref() == Some(&grant) => named,
        // The pair came from memory or a live read: no names for it in this snapshot.
        _ => Named::new(&grant, None, None),
    };
    // Held until the DELETE is answered and its write marked, so no verification
    // of another object with this pair runs in between (see `pairs.rs`).
    let _pair = ctx.pairs.lock(&grant).await;
    let uid = obj.uid().unwrap_or_default();
    match other_holders(ctx, &uid, &grant).await {
        Holders::Kept(holder) => {
            let note = named.kept_shared(&holder);
            ctx.event(
                &obj,
                EventType::Normal,
                reason::GRANT_SHARED,
                action::REVOKE,
                note,
            )
            .await;
            return Ok(Action::await_change());
        }
        Holders::Revoke { unconfirmed } if !unconfirmed.is_empty() => {
            let note = named.holders_unconfirmed(&unconfirmed);
            ctx.event(
                &obj,
                EventType::Warning,
                reason::HOLDER_UNCONFIRMED,
                action::REVOKE,
                note,
            )
            .await;
        }
        Holders::Revoke { .. } => {}
    }
    revoke(&obj, ctx, &mut st, &grant, &named).await
}

/// The pair to revoke: the recorded one, unless the object says `Orphan` (then an
/// Event) or nothing is left to revoke. Never a fresh resolution of the spec.
async fn pair_to_revoke(obj: &PolicyAttachment, ctx: &Context) -> Result<Option<Grant>, Error> {
    let uid = obj.uid().unwrap_or_default();
    let known_pair = obj
        .recorded_grant()
        .or_else(|| ctx.objects.recorded_for(&uid));
    let step = decide::cleanup_step(
        obj.spec.deletion_policy,
        ctx.objects.deletion_handled(&uid),
        known_pair,
    );
    Ok(match step {
        CleanupStep::Orphan => {
            let note = match obj.status.as_ref().and_then(Named::recorded) {
                Some(named) => named.orphaned(),
                None => NOTHING_REVOKED.to_owned(),
            };
            ctx.event(
                obj,
                EventType::Normal,
                reason::ORPHANED,
                action::REVOKE,
                note,
            )
            .await;
            None
        }
        // A reconcile from a stale cache entry: the revocation already succeeded.
        CleanupStep::AlreadyRevoked => None,
        CleanupStep::Revoke(grant) => Some(grant),
        CleanupStep::ReadLive => match live_pair(ctx, obj).await? {
            Some(grant) => {
                info!(%grant, "the cached object lacked the recorded pair; the live one has it");
                record_grant(&Span::current(), &grant);
                Some(grant)
            }
            None => {
                // Confirmed live: resolution never completed, nothing was attached.
                info!("no pair recorded (confirmed with a live read): nothing to revoke");
                None
            }
        },
    })
}

/// Sends the DELETE; only Vultr's answer that the grant is gone lets the object go.
async fn revoke(
    obj: &PolicyAttachment,
    ctx: &Context,
    st: &mut Update,
    grant: &Grant,
    named: &Named,
) -> Result<Action, Error> {
    let live = st
        .condition(READY)
        .is_some_and(|c| c.reason == reason::ATTACHED || c.reason == reason::ATTACHING);
    if live {
        // The grant stops being usable now: say so while the revocation is in flight (a
        // failed revocation keeps its own reason, e.g. Forbidden, until it succeeds).
        st.ready(false, reason::DETACHING, named.revoking());
        ctx.write_status_best_effort(obj, st).await;
    }
    match ctx.vultr.revoke(grant).await {
        Ok(outcome) => {
            let note = match outcome {
                RevokeOutcome::Revoked => named.revoked(),
                RevokeOutcome::AlreadyAbsent => named.already_absent(),
            };
            ctx.objects
                .mark_deletion_handled(&obj.uid().unwrap_or_default());
            info!(?outcome, "revoked");
            ctx.event(
                obj,
                EventType::Normal,
                reason::REVOKED,
                action::REVOKE,
                note,
            )
            .await;
            Ok(Action::await_change())
        }
        Err(err) => {
            let err = Error::from(err);
            let message = named.revocation_pending(&err);
            ctx.report_failure(obj, st, &err, action::REVOKE, message)
                .await;
            Err(err)
        }
    }
}

/// The pair recorded on the live object (the watch cache may lag behind a status write
/// of a racing Apply or of the previous leader). `None` if it has none or is gone.
async fn live_pair(ctx: &Context, obj: &PolicyAttachment) -> Result<Option<Grant>, Error> {
    let live = ctx.api_for(obj).get_opt(&obj.name_any()).await?;
    Ok(live
        .filter(|live| live.uid() == obj.uid())
        .and_then(|live| live.recorded_grant()))
}

/// Reads, live, every other object that may declare `grant`: those this process knows
/// (it recorded or saw their pair, possibly before the watch cache did) and those the
/// synced watch caches show. A candidate that cannot be read never keeps the grant.
async fn other_holders(ctx: &Context, uid: &str, grant: &Grant) -> Holders {
    let mut candidates: Vec<Declarer> = ctx.objects.declarers(grant, uid);
    for cached in ctx.cached_objects() {
        if decide::declares(&cached, uid, grant) {
            let declarer = Declarer::of(&cached);
            if !candidates.iter().any(|c| c.uid == declarer.uid) {
                candidates.push(declarer);
            }
        }
    }
    let mut read = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let name = format!("{}/{}", candidate.namespace, candidate.name);
        let api =
            kube::Api::<PolicyAttachment>::namespaced(ctx.client.clone(), &candidate.namespace);
        read.push(match api.get_opt(&candidate.name).await {
            Ok(Some(live)) if decide::declares(&live, uid, grant) => Candidate::Holds(name),
            Ok(_) => Candidate::DoesNotHold,
            Err(err) => Candidate::Unreadable(name, Error::from(err).reason().to_owned()),
        });
        if matches!(read.last(), Some(Candidate::Holds(_))) {
            break;
        }
    }
    decide::holders(read)
}
