//! The domain of a grant, shared by the CRD (what status records) and the Vultr client
//! (what it attaches and revokes): a subject kind, a subject, the (policy, subject)
//! pair, and how a manifest names each side of it. No Kubernetes or HTTP types live
//! here.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a policy is attached to; also `status.subjectKind` of a PolicyAttachment.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum SubjectKind {
    User,
    Group,
    Role,
}

impl SubjectKind {
    /// "User", "Group" or "Role", as written to `status.subjectKind`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
            Self::Role => "Role",
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resolved subject: a Vultr user, group or role by ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(String),
    Group(String),
    Role(String),
}

impl Subject {
    pub fn kind(&self) -> SubjectKind {
        match self {
            Self::User(_) => SubjectKind::User,
            Self::Group(_) => SubjectKind::Group,
            Self::Role(_) => SubjectKind::Role,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::User(id) | Self::Group(id) | Self::Role(id) => id,
        }
    }

    /// Builds a subject from its kind and ID (e.g. from a recorded status).
    pub(crate) fn new(kind: SubjectKind, id: impl Into<String>) -> Self {
        match kind {
            SubjectKind::User => Self::User(id.into()),
            SubjectKind::Group => Self::Group(id.into()),
            SubjectKind::Role => Self::Role(id.into()),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

/// The (policy, subject) pair recorded in status: exactly what a deletion revokes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    pub policy_id: String,
    pub subject: Subject,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {} on {}", self.policy_id, self.subject)
    }
}

/// How a manifest names a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyRef {
    ById(String),
    ByName(String),
}

/// How a manifest names a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserRef {
    ById(String),
    ByEmail(String),
}

/// How a manifest names a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupRef {
    ById(String),
    ByName(String),
}

/// How a manifest names a role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoleRef {
    ById(String),
    ByName(String),
}

/// How a manifest names the subject of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectRef {
    User(UserRef),
    Group(GroupRef),
    Role(RoleRef),
}

/// How a manifest names both sides of a grant (a PolicyAttachment's spec, an exported
/// manifest).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refs {
    pub policy: PolicyRef,
    pub subject: SubjectRef,
}

/// A Vultr listing that shows whether pairs are attached. Vultr lists user and group
/// grants per policy, but role grants per role (its routes are role-first).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListingSource {
    /// `GET /v2/policies/{id}/users`: user IDs.
    PolicyUsers(String),
    /// `GET /v2/policies/{id}/groups`: group IDs.
    PolicyGroups(String),
    /// `GET /v2/roles/{id}/policies`: policy IDs.
    RolePolicies(String),
}

impl ListingSource {
    /// The policy-side listing of `kind`; roles have none in Vultr.
    pub(crate) fn of_policy(policy_id: &str, kind: SubjectKind) -> Option<Self> {
        match kind {
            SubjectKind::User => Some(Self::PolicyUsers(policy_id.to_owned())),
            SubjectKind::Group => Some(Self::PolicyGroups(policy_id.to_owned())),
            SubjectKind::Role => None,
        }
    }

    /// The ID of the object whose listing this is (a policy or a role).
    pub(crate) fn owner_id(&self) -> &str {
        match self {
            Self::PolicyUsers(id) | Self::PolicyGroups(id) | Self::RolePolicies(id) => id,
        }
    }
}

impl fmt::Display for ListingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PolicyUsers(id) => write!(f, "users of policy {id}"),
            Self::PolicyGroups(id) => write!(f, "groups of policy {id}"),
            Self::RolePolicies(id) => write!(f, "policies of role {id}"),
        }
    }
}

impl Grant {
    /// The listing that shows whether this pair is attached, and the ID it must list.
    pub(crate) fn listing(&self) -> (ListingSource, &str) {
        let policy = self.policy_id.clone();
        match &self.subject {
            Subject::User(id) => (ListingSource::PolicyUsers(policy), id),
            Subject::Group(id) => (ListingSource::PolicyGroups(policy), id),
            Subject::Role(role) => (ListingSource::RolePolicies(role.clone()), &self.policy_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_helpers() {
        let s = Subject::new(SubjectKind::Group, "g1");
        assert_eq!(s, Subject::Group("g1".into()));
        assert_eq!(s.kind().as_str(), "Group");
        assert_eq!(s.id(), "g1");
        assert_eq!(s.to_string(), "Group g1");
        let grant = Grant {
            policy_id: "p1".into(),
            subject: s,
        };
        assert_eq!(grant.to_string(), "policy p1 on Group g1");
        let role = Subject::new(SubjectKind::Role, "r1");
        assert_eq!(role, Subject::Role("r1".into()));
        assert_eq!(role.to_string(), "Role r1");
    }

    #[test]
    fn role_grants_are_listed_per_role_others_per_policy() {
        let grant = |subject| Grant {
            policy_id: "p1".into(),
            subject,
        };
        let user = grant(Subject::User("u1".into()));
        assert_eq!(
            user.listing(),
            (ListingSource::PolicyUsers("p1".into()), "u1")
        );
        let group = grant(Subject::Group("g1".into()));
        assert_eq!(
            group.listing(),
            (ListingSource::PolicyGroups("p1".into()), "g1")
        );
        let role = grant(Subject::Role("r1".into()));
        assert_eq!(
            role.listing(),
            (ListingSource::RolePolicies("r1".into()), "p1")
        );
        assert_eq!(role.listing().0.owner_id(), "r1");
        assert_eq!(role.listing().0.to_string(), "policies of role r1");
        assert_eq!(ListingSource::of_policy("p1", SubjectKind::Role), None);
        assert_eq!(
            ListingSource::of_policy("p1", SubjectKind::Group),
            Some(ListingSource::PolicyGroups("p1".into()))
        );
    }
}
