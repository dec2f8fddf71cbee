//! Building and writing `status`: the `Ready` and `Synced` conditions (with
//! `observedGeneration` and a stable `lastTransitionTime`) and the recorded pair,
//! applied server-side on the status subresource, and only when something changed.
//!
//! Every write is a JSON patch that starts with a test of the object's UID, so a write
//! built from a stale snapshot never lands on a re-created object with the same name,
//! and names only the fields it changes. The recorded pair (`policyId`, `subjectKind`,
//! `subjectId`) is named by one write alone, the one that records it: no other write
//! can change or remove it, whatever field manager wrote it before (README: "Status
//! layout and field managers").

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use std::time::Duration;

use crate::crd::{
    PERMITTED, PolicyAttachment, PolicyAttachmentSpec, PolicyAttachmentStatus, READY, SYNCED,
};
use crate::reconcile::wording::{INSIDE_BOUNDARY, RECONCILE_SUCCEEDED, reason};

/// Field manager of the operator's status writes.
pub const FIELD_MANAGER: &str = "vultr-iam-operator-status";

/// How often `lastVerifiedAt` is refreshed while nothing else changes: a verification
/// pass in which nothing changed writes nothing, so this is the coarse period at which
/// the field still moves. The exact time of the last successful verification is the
/// metric `vultr_iam_last_verification_timestamp_seconds`.
pub const VERIFIED_AT_REFRESH: Duration = Duration::from_secs(3600);

/// The status a reconcile writes: condition changes collected against one generation
/// and one instant, then written once, and only if a user would see something new.
/// Reads as the status it builds (`Deref`).
#[derive(Debug, Clone)]
pub struct Update {
    status: PolicyAttachmentStatus,
    generation: Option<i64>,
    now: Timestamp,
}

impl std::ops::Deref for Update {
    type Target = PolicyAttachmentStatus;
    fn deref(&self) -> &PolicyAttachmentStatus {
        &self.status
    }
}

impl std::ops::DerefMut for Update {
    fn deref_mut(&mut self) -> &mut PolicyAttachmentStatus {
        &mut self.status
    }
}

impl Update {
    /// Starts from the status `obj` shows, for its generation, now.
    pub fn of(obj: &PolicyAttachment) -> Self {
        Self::new(
            obj.status.clone().unwrap_or_default(),
            obj.metadata.generation,
            Timestamp::now(),
        )
    }

    pub fn new(status: PolicyAttachmentStatus, generation: Option<i64>, now: Timestamp) -> Self {
        Self {
            status,
            generation,
            now,
        }
    }

    /// `Ready`: whether the grant is live in Vultr (as the last verification saw it).
    pub fn ready(&mut self, ok: bool, reason: &str, message: impl Into<String>) {
        self.set(READY, ok, reason, message);
    }

    /// `Synced=True`: the last reconcile succeeded.
    pub fn synced(&mut self) {
        self.set(SYNCED, true, reason::RECONCILE_SUCCESS, RECONCILE_SUCCEEDED);
    }

    /// `Synced=False`: the last reconcile did not succeed, and why.
    pub fn not_synced(&mut self, reason: &str, message: impl Into<String>) {
        self.set(SYNCED, false, reason, message);
    }

    /// `Synced=True` after a pause, saying so.
    pub fn resumed(&mut self, message: impl Into<String>) {
        self.set(SYNCED, true, reason::RESUMED, message);
    }

    /// `Permitted` under an `Audit` boundary: False with why the grant is outside it;
    /// True once it is inside again (set only if it was ever False).
    pub fn permitted(&mut self, outside: Option<String>) {
        match outside {
            Some(message) => self.set(PERMITTED, false, reason::NOT_PERMITTED, message),
            None if self.condition(PERMITTED).is_some() => {
                self.set(PERMITTED, true, reason::PERMITTED, INSIDE_BOUNDARY)
            }
            None => {}
        }
    }

    /// Every condition speaks of the current generation (only `deletionPolicy` can
    /// have changed: the rest of the spec is immutable).
    pub fn follow_generation(&mut self) {
        self.status.observed_generation = self.generation;
        for c in &mut self.status.conditions {
            c.observed_generation = self.generation;
        }
    }

    pub fn is_ready(&self) -> bool {
        is_ready(Some(&self.status))
    }

    /// Whether `lastVerifiedAt` should move (never set, or older than the period).
    pub fn verified_at_is_stale(&self) -> bool {
        verified_at_is_stale(&self.status, self.now)
    }

    /// Writes the status if it differs from what `obj` shows (the pair aside).
    /// Returns whether it wrote.
    pub async fn write(
        &self,
        api: &Api<PolicyAttachment>,
        obj: &PolicyAttachment,
    ) -> Result<bool, kube::Error> {
        send(api, obj, &self.status, Pair::Leave).await
    }

    /// Writes the status with the resolved pair (what is attached, and what a deletion
    /// revokes), in one write.
    pub async fn write_with_pair(
        &self,
        api: &Api<PolicyAttachment>,
        obj: &PolicyAttachment,
    ) -> Result<(), kube::Error> {
        send(api, obj, &self.status, Pair::Record).await.map(drop)
    }

    fn set(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        set_condition(
            &mut self.status,
            type_,
            ok,
            reason,
            message,
            self.generation,
            self.now,
        );
    }
}

/// Sets condition `type_`, keeping `lastTransitionTime` unless its status flips.
fn set_condition(
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

/// Whether a write names the pair's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// Never: the write cannot change or remove the pair, whatever the snapshot shows.
    Leave,
    /// Sets them (the one write that records the pair).
    Record,
}

const PAIR_FIELDS: [&str; 3] = ["policyId", "subjectKind", "subjectId"];

/// The JSON patch that turns `current` (the snapshot's status) into `new`: first a test
/// of the UID, then one operation per field that changes. With no status in the
/// snapshot, it tests that there is none and adds the whole of it. `None` when nothing
/// changes.
pub fn patch(
    uid: &str,
    current: Option<&PolicyAttachmentStatus>,
    new: &PolicyAttachmentStatus,
    pair: Pair,
) -> Option<Value> {
    let fields = |status: &PolicyAttachmentStatus| -> serde_json::Map<String, Value> {
        let mut map = match serde_json::to_value(status) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        if pair == Pair::Leave {
            map.retain(|key, _| !PAIR_FIELDS.contains(&key.as_str()));
        }
        map
    };
    let new = fields(new);
    let mut ops = vec![json!({"op": "test", "path": "/metadata/uid", "value": uid})];
    match current {
        None if new.is_empty() => return None,
        None => {
            ops.push(json!({"op": "test", "path": "/status", "value": null}));
            ops.push(json!({"op": "add", "path": "/status", "value": new}));
        }
        Some(current) => {
            let current = fields(current);
            for (key, value) in &new {
                if current.get(key) != Some(value) {
                    ops.push(
                        json!({"op": "add", "path": format!("/status/{key}"), "value": value}),
                    );
                }
            }
            for key in current.keys().filter(|key| !new.contains_key(*key)) {
                ops.push(json!({"op": "remove", "path": format!("/status/{key}")}));
            }
        }
    }
    (ops.len() > 1).then_some(Value::Array(ops))
}

/// Sends the patch from the snapshot's status to `status`; true if it wrote. A snapshot
/// without status may be stale (another write created it since): then the fields are
/// added one by one to the status that exists.
async fn send(
    api: &Api<PolicyAttachment>,
    obj: &PolicyAttachment,
    status: &PolicyAttachmentStatus,
    pair: Pair,
) -> Result<bool, kube::Error> {
    let uid = obj.uid().unwrap_or_default();
    let Some(ops) = patch(&uid, obj.status.as_ref(), status, pair) else {
        return Ok(false);
    };
    match json_patch(api, obj, ops).await {
        Err(kube::Error::Api(e)) if e.code == 422 && obj.status.is_none() => {
            let empty = PolicyAttachmentStatus::default();
            match patch(&uid, Some(&empty), status, pair) {
                Some(ops) => json_patch(api, obj, ops).await?,
                None => return Ok(false),
            }
        }
        other => other?,
    }
    Ok(true)
}

async fn json_patch(
    api: &Api<PolicyAttachment>,
    obj: &PolicyAttachment,
    ops: Value,
) -> Result<(), kube::Error> {
    let ops: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    api.patch_status(
        &obj.name_any(),
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Json::<()>(ops),
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

    /// `status` after `change`, made at generation `generation`, second `secs`.
    fn changed(
        status: PolicyAttachmentStatus,
        generation: i64,
        secs: i64,
        change: impl FnOnce(&mut Update),
    ) -> PolicyAttachmentStatus {
        let mut update = Update::new(status, Some(generation), at(secs));
        change(&mut update);
        update.status
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let s = PolicyAttachmentStatus::default();
        let s = changed(s, 1, 10, |u| u.ready(false, reason::ATTACHING, "resolving"));
        let s = changed(s, 1, 20, |u| u.ready(false, "ApiUnavailable", "down"));
        let c = s.condition(READY).expect("ready condition");
        assert_eq!(c.last_transition_time, Time(at(10)));
        assert_eq!(c.reason, "ApiUnavailable");

        let s = changed(s, 2, 30, |u| u.ready(true, reason::ATTACHED, "verified"));
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
        let s = changed(PolicyAttachmentStatus::default(), 1, 10, |u| {
            u.ready(true, reason::ATTACHED, "verified");
            u.synced();
        });
        let s = changed(s, 1, 20, |u| u.not_synced("ApiUnavailable", "503"));
        assert!(is_ready(Some(&s)), "a failed reconcile leaves Ready alone");
        let synced = s.condition(SYNCED).expect("synced");
        assert_eq!(synced.reason, "ApiUnavailable");
        assert_eq!(synced.last_transition_time, Time(at(20)));
        assert_eq!(s.conditions.len(), 2);
    }

    #[test]
    fn following_the_generation_moves_every_condition() {
        let s = changed(PolicyAttachmentStatus::default(), 1, 10, |u| {
            u.ready(true, reason::ATTACHED, "verified");
            u.synced();
        });
        let s = changed(s, 3, 20, Update::follow_generation);
        assert_eq!(s.observed_generation, Some(3));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(
            s.condition(READY).expect("ready").last_transition_time,
            Time(at(10))
        );
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
        s.record(&crate::domain::Grant {
            policy_id: "p".into(),
            subject: crate::domain::Subject::User("u".into()),
        });
        s.policy = Some("dns-admin".into());
        s.subject = Some("alice@example.com".into());
        show_declared(&mut s, &spec);
        assert_eq!(s.policy.as_deref(), Some("dns-admin"));
        assert_eq!(s.subject.as_deref(), Some("alice@example.com"));
    }

    fn recorded() -> PolicyAttachmentStatus {
        let mut s = PolicyAttachmentStatus::default();
        s.record(&crate::domain::Grant {
            policy_id: "p".into(),
            subject: crate::domain::Subject::User("u".into()),
        });
        s.policy = Some("dns-admin".into());
        s
    }

    #[test]
    fn ordinary_writes_never_name_the_pair() {
        let mut new = recorded();
        new.subject = Some("alice".into());
        // From a snapshot that lacks the pair, and from one that has it.
        for current in [PolicyAttachmentStatus::default(), recorded()] {
            let ops = patch("uid-a", Some(&current), &new, Pair::Leave).expect("a change");
            let text = ops.to_string();
            for field in PAIR_FIELDS {
                assert!(!text.contains(field), "{field} in {text}");
            }
            assert_eq!(
                ops[0],
                json!({"op": "test", "path": "/metadata/uid", "value": "uid-a"})
            );
        }
        let ops = patch("uid-a", None, &new, Pair::Leave).expect("a change");
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/metadata/uid", "value": "uid-a"},
                {"op": "test", "path": "/status", "value": null},
                {"op": "add", "path": "/status", "value": {"policy": "dns-admin", "subject": "alice"}},
            ])
        );
    }

    #[test]
    fn recording_names_the_pair_and_only_changes_are_sent() {
        let ops = patch(
            "u",
            Some(&PolicyAttachmentStatus::default()),
            &recorded(),
            Pair::Record,
        )
        .expect("a change");
        let paths: Vec<&str> = ops
            .as_array()
            .expect("ops")
            .iter()
            .filter_map(|op| op["path"].as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "/metadata/uid",
                "/status/policy",
                "/status/policyId",
                "/status/subjectId",
                "/status/subjectKind",
            ]
        );
        assert_eq!(
            patch("u", Some(&recorded()), &recorded(), Pair::Record),
            None
        );
        assert_eq!(
            patch("u", None, &PolicyAttachmentStatus::default(), Pair::Leave),
            None
        );
        // A field the new status no longer has is removed (never the pair).
        let mut without_name = recorded();
        without_name.policy = None;
        let ops = patch("u", Some(&recorded()), &without_name, Pair::Leave).expect("a change");
        assert_eq!(ops[1], json!({"op": "remove", "path": "/status/policy"}));
        serde_json::from_value::<json_patch::Patch>(ops).expect("a JSON patch");
    }
}
