//! Building and writing `status`: the `Ready` and `Synced` conditions (with
//! `observedGeneration` and a stable `lastTransitionTime`) and the recorded pair,
//! applied server-side on the status subresource, and only when something changed.
//!
//! The recorded pair (`policyId`, `subjectKind`, `subjectId`) has a field manager of its
//! own that only ever sets it. Every other status write leaves those fields out, so no
//! write, even one built from a stale snapshot that lacks the pair, can remove it: with
//! server-side apply, a field is only removed when its last owner stops applying it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use std::time::Duration;

use crate::crd::{PolicyAttachment, PolicyAttachmentSpec, PolicyAttachmentStatus, READY, SYNCED};
use crate::domain::Grant;

/// Field manager for the operator's writes, except the recorded pair.
pub const FIELD_MANAGER: &str = "vultr-iam-operator";
/// Field manager that owns the recorded pair and nothing else.
pub const PAIR_MANAGER: &str = "vultr-iam-operator-pair";

/// Well-known reasons the reconciler sets itself (errors bring their own).
pub mod reason {
    pub const ATTACHING: &str = "Attaching";
    pub const ATTACHED: &str = "Attached";
    pub const DETACHING: &str = "Detaching";
    pub const ORPHANED: &str = "Orphaned";
    /// `Synced` (and `Ready` before the first attach) of a paused object; its Events.
    pub const PAUSED: &str = "Paused";
    pub const RESUMED: &str = "Resumed";
    pub const RECONCILE_SUCCESS: &str = "ReconcileSuccess";
}

/// `Ready=False Attaching` before the pair is resolved.
pub const RESOLVING: &str = "resolving the policy and subject in Vultr";

/// How often `lastVerifiedAt` is refreshed while nothing else changes: a verification
/// pass in which nothing changed writes nothing, so this is the coarse period at which
/// the field still moves. The exact time of the last successful verification is the
/// metric `vultr_iam_last_verification_timestamp_seconds`.
pub const VERIFIED_AT_REFRESH: Duration = Duration::from_secs(3600);

/// Sets condition `type_`, keeping `lastTransitionTime` unless its status flips.
pub fn set_condition(
    status: &mut PolicyAttachmentStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status_str = if ok { "True" } else { "False" };
    let previous = status.conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = previous
        .map(|i| &status.conditions[i])
        .filter(|c| c.status == status_str)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = Condition {
        type_: type_.to_owned(),
        status: status_str.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => status.conditions[i] = condition,
        None => status.conditions.push(condition),
    }
    status.observed_generation = generation;
}

/// Sets `Ready`: whether the grant is live in Vultr (as the last verification saw it).
pub fn set_ready(
    status: &mut PolicyAttachmentStatus,
    ready: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    set_condition(status, READY, ready, reason, message, generation, now);
}

/// Sets `Synced` to True: the last reconcile succeeded.
pub fn set_synced(status: &mut PolicyAttachmentStatus, generation: Option<i64>, now: Timestamp) {
    set_condition(
        status,
        SYNCED,
        true,
        reason::RECONCILE_SUCCESS,
        "the last reconcile succeeded",
        generation,
        now,
    );
}

/// Shows the policy and subject as the spec declares them, until resolution replaces
/// them with the resolved names. Once a pair is recorded, its names stay: only
/// `deletionPolicy` can change after that (the rest is immutable), and the spec may
/// name the pair by IDs.
pub fn show_declared(status: &mut PolicyAttachmentStatus, spec: &PolicyAttachmentSpec) {
    if status.grant().is_some() && status.policy.is_some() && status.subject.is_some() {
        return;
    }
    let (kind, subject) = spec.subject_display();
    status.policy = Some(spec.policy_display());
    status.subject_kind = status.subject_kind.or(kind);
    status.subject = Some(subject);
}

/// True when `Ready` is currently True.
pub fn is_ready(status: Option<&PolicyAttachmentStatus>) -> bool {
    status
        .and_then(|s| s.condition(READY))
        .is_some_and(|c| c.status == "True")
}

/// Whether `lastVerifiedAt` should move to `now` (never set, or older than the period).
pub fn verified_at_is_stale(status: &PolicyAttachmentStatus, now: Timestamp) -> bool {
    status.last_verified_at.as_ref().is_none_or(|t| {
        now.duration_since(t.0)
            .unsigned_abs()
            .ge(&VERIFIED_AT_REFRESH)
    })
}

/// Writes `status` only if it differs from what `obj` shows (the pair aside): a user sees
/// nothing new, so the API server, the watch and every GitOps tool hear nothing.
/// Returns whether it wrote.
pub async fn write_if_changed(
    api: &Api<PolicyAttachment>,
    obj: &PolicyAttachment,
    status: &PolicyAttachmentStatus,
) -> Result<bool, kube::Error> {
    let current = obj.status.clone().unwrap_or_default();
    if without_pair(&current) == without_pair(status) {
        return Ok(false);
    }
    write(api, obj, status).await?;
    Ok(true)
}

/// Writes the status of `obj` (server-side apply, forced: the operator owns it),
/// except the recorded pair, which only [`record_pair`] writes.
pub async fn write(
    api: &Api<PolicyAttachment>,
    obj: &PolicyAttachment,
    status: &PolicyAttachmentStatus,
) -> Result<(), kube::Error> {
    apply(api, obj, FIELD_MANAGER, &without_pair(status)).await
}

/// Records the resolved pair: what is attached, and what a deletion revokes.
pub async fn record_pair(
    api: &Api<PolicyAttachment>,
    obj: &PolicyAttachment,
    grant: &Grant,
) -> Result<(), kube::Error> {
    let mut pair = PolicyAttachmentStatus::default();
    pair.record(grant);
    apply(api, obj, PAIR_MANAGER, &pair).await
}

/// Whether the pair manager owns the recorded pair. Objects whose pair was recorded
/// by an older operator (under the main manager) get it re-recorded once.
pub fn pair_owned(obj: &PolicyAttachment) -> bool {
    obj.metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(PAIR_MANAGER))
}

fn without_pair(status: &PolicyAttachmentStatus) -> PolicyAttachmentStatus {
    PolicyAttachmentStatus {
        policy_id: None,
        subject_kind: None,
        subject_id: None,
        ..status.clone()
    }
}

async fn apply(
    api: &Api<PolicyAttachment>,
    obj: &PolicyAttachment,
    manager: &str,
    status: &PolicyAttachmentStatus,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": PolicyAttachment::api_version(&()),
        "kind": PolicyAttachment::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut s = PolicyAttachmentStatus::default();
        set_ready(
            &mut s,
            false,
            reason::ATTACHING,
            "resolving",
            Some(1),
            at(10),
        );
        set_ready(&mut s, false, "ApiUnavailable", "down", Some(1), at(20));
        let c = s.condition(READY).expect("ready condition");
        assert_eq!(c.last_transition_time, Time(at(10)));
        assert_eq!(c.reason, "ApiUnavailable");

        set_ready(&mut s, true, reason::ATTACHED, "verified", Some(2), at(30));
        let c = s.condition(READY).expect("ready condition");
        assert_eq!(c.last_transition_time, Time(at(30)));
        assert_eq!(c.observed_generation, Some(2));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.conditions.len(), 1);
        assert!(is_ready(Some(&s)));
    }

    #[test]
    fn verified_at_moves_only_after_the_refresh_period() {
        let mut s = PolicyAttachmentStatus::default();
        assert!(verified_at_is_stale(&s, at(100)));
        s.last_verified_at = Some(Time(at(100)));
        assert!(!verified_at_is_stale(&s, at(100 + 60)));
        assert!(verified_at_is_stale(&s, at(100 + 3600)));
    }

    #[test]
    fn synced_and_ready_are_separate_conditions() {
        let mut s = PolicyAttachmentStatus::default();
        set_ready(&mut s, true, reason::ATTACHED, "verified", Some(1), at(10));
        set_synced(&mut s, Some(1), at(10));
        set_condition(
            &mut s,
            SYNCED,
            false,
            "ApiUnavailable",
            "503",
            Some(1),
            at(20),
        );
        assert!(is_ready(Some(&s)), "a failed reconcile leaves Ready alone");
        let synced = s.condition(SYNCED).expect("synced");
        assert_eq!(synced.reason, "ApiUnavailable");
        assert_eq!(synced.last_transition_time, Time(at(20)));
        assert_eq!(s.conditions.len(), 2);
    }

    #[test]
    fn resolved_names_survive_a_new_generation() {
        let spec: PolicyAttachmentSpec = serde_json::from_value(json!({
            "policy": {"id": "p"}, "user": {"id": "u"}, "deletionPolicy": "Orphan"
        }))
        .unwrap();
        let mut s = PolicyAttachmentStatus::default();
        show_declared(&mut s, &spec);
        assert_eq!(
            s.policy.as_deref(),
            Some("p"),
            "declared, before resolution"
        );
        s.record(&Grant {
            policy_id: "p".into(),
            subject: crate::domain::Subject::User("u".into()),
        });
        s.policy = Some("dns-admin".into());
        s.subject = Some("alice@example.com".into());
        show_declared(&mut s, &spec);
        assert_eq!(s.policy.as_deref(), Some("dns-admin"));
        assert_eq!(s.subject.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn ordinary_writes_never_carry_the_pair() {
        let mut s = PolicyAttachmentStatus::default();
        s.record(&Grant {
            policy_id: "p".into(),
            subject: crate::domain::Subject::User("u".into()),
        });
        s.policy = Some("dns-admin".into());
        let shown = serde_json::to_value(without_pair(&s)).unwrap();
        assert_eq!(shown, json!({"policy": "dns-admin"}));
    }
}
