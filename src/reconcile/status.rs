//! Building and writing `status`: the `Ready` condition (with `observedGeneration` and a
//! stable `lastTransitionTime`) and the recorded pair, applied server-side on the status
//! subresource.
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

use crate::crd::{PolicyAttachment, PolicyAttachmentStatus, READY};
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
}

/// Sets the `Ready` condition, keeping `lastTransitionTime` unless the status flips.
pub fn set_ready(
    status: &mut PolicyAttachmentStatus,
    ready: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status_str = if ready { "True" } else { "False" };
    let previous = status.conditions.iter().position(|c| c.type_ == READY);
    let last_transition_time = previous
        .map(|i| &status.conditions[i])
        .filter(|c| c.status == status_str)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = Condition {
        type_: READY.to_owned(),
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

/// True when `Ready` is currently True.
pub fn is_ready(status: Option<&PolicyAttachmentStatus>) -> bool {
    status
        .and_then(|s| s.condition(READY))
        .is_some_and(|c| c.status == "True")
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
