//! The `PolicyAttachment` custom resource: spec, status and the admission rules
//! (CEL and OpenAPI) that the API server enforces before the operator sees an object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kube::ResourceExt;

use crate::domain::{self, Refs, Subject};
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
    pub policy: PolicyRefSpec,
    /// The Vultr user that receives the policy (exactly one of user, group or role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(IMMUTABLE).message("spec.user is immutable: delete and re-create the PolicyAttachment to move a grant"))]
    pub user: Option<UserRefSpec>,
    /// The Vultr group that receives the policy (exactly one of user, group or role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(IMMUTABLE).message("spec.group is immutable: delete and re-create the PolicyAttachment to move a grant"))]
    pub group: Option<GroupRefSpec>,
    /// The Vultr role that receives the policy (exactly one of user, group or role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(IMMUTABLE).message("spec.role is immutable: delete and re-create the PolicyAttachment to move a grant"))]
    pub role: Option<RoleRefSpec>,
    /// What deleting this object does in Vultr: `Delete` revokes the grant, `Orphan` leaves it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// `spec.policy`: a Vultr IAM policy, by ID or by exact name (a `domain::PolicyRef`
/// once admission has checked it).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.id) != has(self.name)").message("spec.policy: set exactly one of id or name"))]
pub struct PolicyRefSpec {
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

/// `spec.user`: a Vultr user, by ID or by email.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.id) != has(self.email)").message("spec.user: set exactly one of id or email"))]
pub struct UserRefSpec {
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

/// `spec.group`: a Vultr group, by ID or by exact display name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.id) != has(self.name)").message("spec.group: set exactly one of id or name"))]
pub struct GroupRefSpec {
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

/// `spec.role`: a Vultr role, by ID or by exact name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.id) != has(self.name)").message("spec.role: set exactly one of id or name"))]
pub struct RoleRefSpec {
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
    pub(crate) fn grant(&self) -> Option<Grant> {
        Some(Grant {
            policy_id: self.policy_id.clone()?,
            subject: Subject::new(self.subject_kind?, self.subject_id.clone()?),
        })
    }

    /// Records the resolved pair.
    pub(crate) fn record(&mut self, grant: &Grant) {
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
    pub(crate) fn pause_annotation(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PAUSED_ANNOTATION))
            .map(String::as_str)
    }

    /// What the pause switch lets a reconcile of this object, as it stands, do.
    pub(crate) fn pause_step(&self) -> PauseStep {
        pause_step(
            PauseAnnotation::of(self.pause_annotation()),
            self.metadata.deletion_timestamp.is_some(),
            self.spec.deletion_policy,
            self.finalizers().iter().any(|f| f == FINALIZER),
        )
    }
}

/// What the pause annotation says. Only the exact value `"true"` pauses: anything else
/// (`"True"`, `"yes"`, `""`) does not, and a value that is neither `"true"` nor `"false"`
/// is reported once as a likely mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseAnnotation {
    Absent,
    Paused,
    NotPaused,
    /// Set, but neither "true" nor "false": not paused.
    Unrecognised,
}

impl PauseAnnotation {
    pub(crate) fn of(value: Option<&str>) -> Self {
        match value {
            None => Self::Absent,
            Some("true") => Self::Paused,
            Some("false") => Self::NotPaused,
            Some(_) => Self::Unrecognised,
        }
    }
}

/// What the pause switch lets a reconcile do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseStep {
    /// Not paused, or nothing a pause could hold: reconcile as usual.
    Proceed,
    /// Live and paused: no Vultr call; say so (the finalizer is still added, a
    /// Kubernetes write, so that a later deletion is held too).
    HoldLive,
    /// Deleted and paused, its finalizer present and `deletionPolicy: Delete`: keep the
    /// finalizer, no Vultr call, until the annotation goes or the policy turns Orphan.
    HoldDeletion,
}

/// A deleted object under `Orphan` proceeds: its cleanup makes no Vultr call. One
/// without our finalizer has nothing to hold.
pub(crate) fn pause_step(
    annotation: PauseAnnotation,
    deleting: bool,
    deletion_policy: DeletionPolicy,
    has_finalizer: bool,
) -> PauseStep {
    if annotation != PauseAnnotation::Paused {
        return PauseStep::Proceed;
    }
    if !deleting {
        return PauseStep::HoldLive;
    }
    if deletion_policy == DeletionPolicy::Orphan || !has_finalizer {
        return PauseStep::Proceed;
    }
    PauseStep::HoldDeletion
}

impl PolicyAttachmentSpec {
    /// The spec that declares `refs`.
    pub(crate) fn declaring(refs: Refs, deletion_policy: DeletionPolicy) -> Self {
        use domain::{GroupRef, RoleRef, SubjectRef, UserRef};
        let policy = match refs.policy {
            domain::PolicyRef::ById(id) => PolicyRefSpec::by_id(id),
            domain::PolicyRef::ByName(name) => PolicyRefSpec::by_name(name),
        };
        let (user, group, role) = match refs.subject {
            SubjectRef::User(UserRef::ById(id)) => (Some(UserRefSpec::by_id(id)), None, None),
            SubjectRef::User(UserRef::ByEmail(e)) => (Some(UserRefSpec::by_email(e)), None, None),
            SubjectRef::Group(GroupRef::ById(id)) => (None, Some(GroupRefSpec::by_id(id)), None),
            SubjectRef::Group(GroupRef::ByName(n)) => (None, Some(GroupRefSpec::by_name(n)), None),
            SubjectRef::Role(RoleRef::ById(id)) => (None, None, Some(RoleRefSpec::by_id(id))),
            SubjectRef::Role(RoleRef::ByName(n)) => (None, None, Some(RoleRefSpec::by_name(n))),
        };
        Self {
            policy,
            user,
            group,
            role,
            deletion_policy,
        }
    }

    /// The policy and the subject this spec declares. Admission guarantees exactly one
    /// of each pair of fields; an object that bypassed it (e.g. under an old CRD) fails
    /// here with what to fix.
    pub(crate) fn refs(&self) -> Result<Refs, InvalidSpec> {
        let policy = match one_of(&self.policy.id, &self.policy.name, "spec.policy", "name")? {
            Side::Id(id) => domain::PolicyRef::ById(id),
            Side::Name(name) => domain::PolicyRef::ByName(name),
        };
        let subject = match (&self.user, &self.group, &self.role) {
            (Some(user), None, None) => domain::SubjectRef::User(
                match one_of(&user.id, &user.email, "spec.user", "email")? {
                    Side::Id(id) => domain::UserRef::ById(id),
                    Side::Name(email) => domain::UserRef::ByEmail(email),
                },
            ),
            (None, Some(group), None) => domain::SubjectRef::Group(
                match one_of(&group.id, &group.name, "spec.group", "name")? {
                    Side::Id(id) => domain::GroupRef::ById(id),
                    Side::Name(name) => domain::GroupRef::ByName(name),
                },
            ),
            (None, None, Some(role)) => {
                domain::SubjectRef::Role(match one_of(&role.id, &role.name, "spec.role", "name")? {
                    Side::Id(id) => domain::RoleRef::ById(id),
                    Side::Name(name) => domain::RoleRef::ByName(name),
                })
            }
            _ => {
                return Err(InvalidSpec(
                    "spec needs exactly one of user, group or role".to_owned(),
                ));
            }
        };
        Ok(Refs { policy, subject })
    }

    /// The policy as declared, for display.
    pub(crate) fn policy_display(&self) -> String {
        self.policy.shown()
    }

    /// The subject kind and subject as declared, for display.
    pub(crate) fn subject_display(&self) -> (Option<SubjectKind>, String) {
        match (&self.user, &self.group, &self.role) {
            (Some(u), _, _) => (Some(SubjectKind::User), u.shown()),
            (None, Some(g), _) => (Some(SubjectKind::Group), g.shown()),
            (None, None, Some(r)) => (Some(SubjectKind::Role), r.shown()),
            (None, None, None) => (None, String::new()),
        }
    }
}

/// A spec that admission would have refused: what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// One side of a reference field pair, checked to be the only one set.
enum Side {
    Id(String),
    Name(String),
}

fn one_of(
    id: &Option<String>,
    name: &Option<String>,
    field: &str,
    name_field: &str,
) -> Result<Side, InvalidSpec> {
    match (id, name) {
        (Some(id), None) => Ok(Side::Id(id.clone())),
        (None, Some(name)) => Ok(Side::Name(name.clone())),
        _ => Err(InvalidSpec(format!(
            "{field} needs exactly one of id or {name_field}"
        ))),
    }
}

/// Constructors and display of the `{id, name}` (`{id, email}` for users) reference
/// fields.
macro_rules! ref_spec {
    ($type:ident, $name:ident, $by_name:ident) => {
        impl $type {
            pub(crate) fn by_id(id: String) -> Self {
                Self {
                    id: Some(id),
                    $name: None,
                }
            }

            pub(crate) fn $by_name($name: String) -> Self {
                Self {
                    id: None,
                    $name: Some($name),
                }
            }

            /// The name if declared, else the ID.
            fn shown(&self) -> String {
                self.$name
                    .clone()
                    .or_else(|| self.id.clone())
                    .unwrap_or_default()
            }
        }
    };
}

ref_spec!(PolicyRefSpec, name, by_name);
ref_spec!(UserRefSpec, email, by_email);
ref_spec!(GroupRefSpec, name, by_name);
ref_spec!(RoleRefSpec, name, by_name);

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

    #[test]
    fn only_the_exact_value_true_pauses() {
        assert_eq!(PauseAnnotation::of(None), PauseAnnotation::Absent);
        assert_eq!(PauseAnnotation::of(Some("true")), PauseAnnotation::Paused);
        assert_eq!(
            PauseAnnotation::of(Some("false")),
            PauseAnnotation::NotPaused
        );
        for other in ["True", "TRUE", "yes", "1", "", " true"] {
            assert_eq!(
                PauseAnnotation::of(Some(other)),
                PauseAnnotation::Unrecognised,
                "{other:?}"
            );
        }
    }

    #[test]
    fn a_pause_holds_attach_and_revocation_but_never_an_orphan() {
        use DeletionPolicy::{Delete, Orphan};
        use PauseAnnotation::*;
        for not_paused in [Absent, NotPaused, Unrecognised] {
            for deleting in [false, true] {
                assert_eq!(
                    pause_step(not_paused, deleting, Delete, true),
                    PauseStep::Proceed
                );
            }
        }
        assert_eq!(pause_step(Paused, false, Delete, true), PauseStep::HoldLive);
        assert_eq!(
            pause_step(Paused, false, Orphan, false),
            PauseStep::HoldLive
        );
        assert_eq!(
            pause_step(Paused, true, Delete, true),
            PauseStep::HoldDeletion
        );
        assert_eq!(pause_step(Paused, true, Orphan, true), PauseStep::Proceed);
        assert_eq!(pause_step(Paused, true, Delete, false), PauseStep::Proceed);
    }

    #[test]
    fn the_pause_step_reads_the_object() {
        let mut obj: PolicyAttachment = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.vultr-operator.io/v1alpha1",
            "kind": "PolicyAttachment",
            "metadata": {"name": "a", "namespace": "ns", "finalizers": [FINALIZER],
                         "annotations": {"iam.vultr-operator.io/paused": "true"}},
            "spec": {"policy": {"id": "p"}, "user": {"id": "u"}},
        }))
        .unwrap();
        assert_eq!(obj.pause_step(), PauseStep::HoldLive);
        obj.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(obj.pause_step(), PauseStep::HoldDeletion);
        obj.spec.deletion_policy = DeletionPolicy::Orphan;
        assert_eq!(obj.pause_step(), PauseStep::Proceed);
    }

    fn spec(value: serde_json::Value) -> PolicyAttachmentSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_spec_declares_its_refs_and_back() {
        use serde_json::json;
        for declared in [
            json!({"policy": {"name": "dns-admin"}, "user": {"email": "a@example.com"}}),
            json!({"policy": {"id": "p1"}, "user": {"id": "u1"}}),
            json!({"policy": {"name": "dns-admin"}, "group": {"name": "ops"}}),
            json!({"policy": {"id": "p1"}, "group": {"id": "g1"}}),
            json!({"policy": {"name": "dns-admin"}, "role": {"name": "auditors"}}),
            json!({"policy": {"id": "p1"}, "role": {"id": "r1"}}),
        ] {
            let spec = spec(declared);
            let refs = spec.refs().unwrap();
            assert_eq!(
                PolicyAttachmentSpec::declaring(refs, DeletionPolicy::Delete),
                spec
            );
        }
        assert_eq!(
            spec(json!({"policy": {"name": "x"}, "user": {"email": "a@example.com"}}))
                .refs()
                .unwrap(),
            Refs {
                policy: domain::PolicyRef::ByName("x".into()),
                subject: domain::SubjectRef::User(domain::UserRef::ByEmail("a@example.com".into())),
            }
        );
    }

    #[test]
    fn a_spec_admission_would_refuse_says_what_to_fix() {
        use serde_json::json;
        for (declared, message) in [
            (
                json!({"policy": {"id": "p", "name": "n"}, "user": {"id": "u"}}),
                "spec.policy needs exactly one of id or name",
            ),
            (
                json!({"policy": {"id": "p"}, "user": {}}),
                "spec.user needs exactly one of id or email",
            ),
            (
                json!({"policy": {"id": "p"}, "group": {"id": "g", "name": "n"}}),
                "spec.group needs exactly one of id or name",
            ),
            (
                json!({"policy": {"id": "p"}, "role": {}}),
                "spec.role needs exactly one of id or name",
            ),
            (
                json!({"policy": {"id": "p"}}),
                "spec needs exactly one of user, group or role",
            ),
            (
                json!({"policy": {"id": "p"}, "user": {"id": "u"}, "role": {"id": "r"}}),
                "spec needs exactly one of user, group or role",
            ),
        ] {
            assert_eq!(spec(declared).refs().unwrap_err().to_string(), message);
        }
    }
}
