//! The `PolicyAttachment` custom resource: spec, status and the admission rules
//! (CEL and OpenAPI) that the API server enforces before the operator sees an object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::Subject;
pub use crate::domain::{Grant, SubjectKind};

/// API group of every resource of this operator.
pub const GROUP: &str = "iam.vultr-operator.io";
/// Finalizer that holds a deleted PolicyAttachment until Vultr confirms the revocation.
pub const FINALIZER: &str = "iam.vultr-operator.io/detach";
/// Annotation that pauses a PolicyAttachment: with the exact value "true", the operator
/// makes no Vultr call for it (no attach, no drift repair, no revocation).
pub const PAUSED_ANNOTATION: &str = "iam.vultr-operator.io/paused";
/// True while the last verification saw the grant in Vultr; False while attaching or
/// detaching, when it is known missing, or on a terminal error.
pub const READY: &str = "Ready";
/// Whether the last reconcile succeeded (False with the failure's reason and message).
/// A transient failure flips `Synced`, never `Ready`.
pub const SYNCED: &str = "Synced";
/// Only under a grant boundary in `Audit`: False while the grant is outside it (made
/// and kept, reported), True once it is inside again.
pub const PERMITTED: &str = "Permitted";

// CEL's `matches` uses RE2 syntax; keep these patterns simple and anchored.
const UUID_RULE: &str =
    "self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')";
const EMAIL_RULE: &str = "self.matches('^[^@\\\\s]+@[^@\\\\s]+\\\\.[^@\\\\s]+$')";
const IMMUTABLE: &str = "self == oldSelf";
// Names match exactly: "dns-admin " (a templating slip) would never resolve.
const NO_EDGE_SPACE: &str = "!self.matches('^\\\\s|\\\\s$')";

/// Attaches a Vultr IAM policy to a Vultr user, group or role; deleting it revokes the grant.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "iam.vultr-operator.io",
    version = "v1alpha1",
    kind = "PolicyAttachment",
    doc = "Attaches a Vultr IAM policy to a Vultr user, group or role; deleting it revokes the grant.",
    plural = "policyattachments",
    shortname = "pa",
    category = "vultr",
    namespaced,
    status = "PolicyAttachmentStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".status.policy"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".status.subjectKind"}"#,
    printcolumn = r#"{"name":"Subject","type":"string","jsonPath":".status.subject"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("(has(self.user) ? 1 : 0) + (has(self.group) ? 1 : 0) + (has(self.role) ? 1 : 0) == 1").message("set exactly one of spec.user, spec.group or spec.role"))]
#[x_kube(validation = Rule::new("has(self.user) == has(oldSelf.user) && has(self.group) == has(oldSelf.group) && has(self.role) == has(oldSelf.role)").message("the subject kind is immutable: delete and re-create the PolicyAttachment to move a grant"))]
#[serde(rename_all = "camelCase")]
pub struct PolicyAttachmentSpec {
    /// The Vultr IAM policy to attach.
    #[x_kube(validation = Rule::new(IMMUTABLE).message("spec.policy is immutable: delete and re-create the PolicyAttachment to move a grant"))]
    pub policy: PolicyRef,
    /// The Vultr user that receives the policy (exactly one of user, group or role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(IMMUTABLE).message("spec.user is immutable: delete and re-create the PolicyAttachment to move a grant"))]
    pub user: Option<UserRef>,
    /// The Vultr group that receives the policy (exactly one of user, group or role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(IMMUTABLE).message("spec.group is immutable: delete and re-create the PolicyAttachment to move a grant"))]
    pub group: Option<GroupRef>,
    /// The Vultr role that receives the policy (exactly one of user, group or role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(IMMUTABLE).message("spec.role is immutable: delete and re-create the PolicyAttachment to move a grant"))]
    pub role: Option<RoleRef>,
    /// What deleting this object does in Vultr: `Delete` revokes the grant, `Orphan` leaves it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A Vultr IAM policy, by ID or by exact name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.id) != has(self.name)").message("spec.policy: set exactly one of id or name"))]
pub struct PolicyRef {
    /// Policy UUID, e.g. 62948e0d-b09d-4d08-9554-3985b635cb17.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    #[x_kube(validation = Rule::new(UUID_RULE).message("spec.policy.id must be a UUID such as 62948e0d-b09d-4d08-9554-3985b635cb17"))]
    pub id: Option<String>,
    /// Exact policy name, e.g. dns-admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(NO_EDGE_SPACE).message("spec.policy.name must not start or end with whitespace"))]
    pub name: Option<String>,
}

/// A Vultr user, by ID or by email.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.id) != has(self.email)").message("spec.user: set exactly one of id or email"))]
pub struct UserRef {
    /// User UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    #[x_kube(validation = Rule::new(UUID_RULE).message("spec.user.id must be a UUID such as 8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b"))]
    pub id: Option<String>,
    /// The user's email address, matched exactly (case-insensitively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254))]
    #[x_kube(validation = Rule::new(EMAIL_RULE).message("spec.user.email must be an email address such as alice@example.com"))]
    pub email: Option<String>,
}

/// A Vultr group, by ID or by exact display name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.id) != has(self.name)").message("spec.group: set exactly one of id or name"))]
pub struct GroupRef {
    /// Group UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    #[x_kube(validation = Rule::new(UUID_RULE).message("spec.group.id must be a UUID such as 3f0c6c52-4a5e-4b8e-9d43-0c1b1a2f9e10"))]
    pub id: Option<String>,
    /// Exact group display name, e.g. ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(NO_EDGE_SPACE).message("spec.group.name must not start or end with whitespace"))]
    pub name: Option<String>,
}

/// A Vultr role, by ID or by exact name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.id) != has(self.name)").message("spec.role: set exactly one of id or name"))]
pub struct RoleRef {
    /// Role UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    #[x_kube(validation = Rule::new(UUID_RULE).message("spec.role.id must be a UUID such as 4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09"))]
    pub id: Option<String>,
    /// Exact role name, e.g. auditors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(NO_EDGE_SPACE).message("spec.role.name must not start or end with whitespace"))]
    pub name: Option<String>,
}

/// What happens in Vultr when the PolicyAttachment is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Revoke the grant in Vultr before the object goes.
    #[default]
    Delete,
    /// Leave the grant in Vultr (escape hatch for deletions that can never succeed).
    Orphan,
}

/// Observed state, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAttachmentStatus {
    /// The generation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the grant is live in Vultr, as last verified) and `Synced` (the last
    /// reconcile succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The resolved policy: what is attached and what a deletion revokes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// The kind of the resolved subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_kind: Option<SubjectKind>,
    /// The resolved user, group or role ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// The policy's name (as declared until resolved), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The user's email, the group's or the role's name (as declared until resolved), for
    /// `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the operator first saw the grant live in Vultr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_at: Option<Time>,
    /// When the grant was last seen in a Vultr listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_at: Option<Time>,
}

impl PolicyAttachmentStatus {
    /// The recorded pair, if resolution ever completed.
    pub fn grant(&self) -> Option<Grant> {
        Some(Grant {
            policy_id: self.policy_id.clone()?,
            subject: Subject::new(self.subject_kind?, self.subject_id.clone()?),
        })
    }

    /// Records the resolved pair.
    pub fn record(&mut self, grant: &Grant) {
        self.policy_id = Some(grant.policy_id.clone());
        self.subject_kind = Some(grant.subject.kind());
        self.subject_id = Some(grant.subject.id().to_owned());
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

impl PolicyAttachment {
    pub fn recorded_grant(&self) -> Option<Grant> {
        self.status.as_ref().and_then(PolicyAttachmentStatus::grant)
    }

    /// The value of the pause annotation, if set.
    pub fn pause_annotation(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PAUSED_ANNOTATION))
            .map(String::as_str)
    }
}

impl PolicyAttachmentSpec {
    /// The policy as declared, for display.
    pub fn policy_display(&self) -> String {
        self.policy
            .name
            .clone()
            .or_else(|| self.policy.id.clone())
            .unwrap_or_default()
    }

    /// The subject kind and subject as declared, for display.
    pub fn subject_display(&self) -> (Option<SubjectKind>, String) {
        match (&self.user, &self.group, &self.role) {
            (Some(u), _, _) => (
                Some(SubjectKind::User),
                u.email.clone().or_else(|| u.id.clone()).unwrap_or_default(),
            ),
            (None, Some(g), _) => (
                Some(SubjectKind::Group),
                g.name.clone().or_else(|| g.id.clone()).unwrap_or_default(),
            ),
            (None, None, Some(r)) => (
                Some(SubjectKind::Role),
                r.name.clone().or_else(|| r.id.clone()).unwrap_or_default(),
            ),
            (None, None, None) => (None, String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_carries_the_admission_rules() {
        let crd = serde_json::to_string(&PolicyAttachment::crd()).expect("crd serializes");
        for needle in [
            "set exactly one of spec.user, spec.group or spec.role",
            "spec.policy: set exactly one of id or name",
            "spec.role: set exactly one of id or name",
            "spec.role is immutable",
            "spec.role.id must be a UUID",
            "spec.role.name must not start or end with whitespace",
            "spec.user: set exactly one of id or email",
            "spec.group: set exactly one of id or name",
            "spec.policy is immutable",
            "spec.user.email must be an email address",
            "spec.policy.id must be a UUID",
            "spec.policy.name must not start or end with whitespace",
            "spec.group.name must not start or end with whitespace",
        ] {
            assert!(crd.contains(needle), "CRD lacks rule message {needle:?}");
        }
    }

    #[test]
    fn a_role_subject_is_displayed_by_name_or_id() {
        let spec: PolicyAttachmentSpec = serde_json::from_value(serde_json::json!({
            "policy": {"name": "dns-admin"},
            "role": {"name": "auditors"}
        }))
        .unwrap();
        assert_eq!(
            spec.subject_display(),
            (Some(SubjectKind::Role), "auditors".to_owned())
        );
        let spec: PolicyAttachmentSpec = serde_json::from_value(serde_json::json!({
            "policy": {"name": "dns-admin"},
            "role": {"id": "4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09"}
        }))
        .unwrap();
        assert_eq!(
            spec.subject_display().1,
            "4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09"
        );
        assert_eq!(spec.user, None);
    }

    #[test]
    fn status_pair_needs_all_three_parts() {
        let mut status = PolicyAttachmentStatus {
            policy_id: Some("p".into()),
            subject_kind: Some(SubjectKind::User),
            ..Default::default()
        };
        assert_eq!(status.grant(), None);
        status.subject_id = Some("u".into());
        assert_eq!(
            status.grant(),
            Some(Grant {
                policy_id: "p".into(),
                subject: Subject::User("u".into()),
            })
        );
    }
}
