//! The domain of a grant, shared by the CRD (what status records) and the Vultr client
//! (what it attaches and revokes): a subject kind, a subject, and the (policy, subject)
//! pair. No Kubernetes or HTTP types live here.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a policy is attached to; also `status.subjectKind` of a PolicyAttachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SubjectKind {
    User,
    Group,
}

impl SubjectKind {
    /// "User" or "Group", as written to `status.subjectKind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resolved subject: a Vultr user or group by ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(String),
    Group(String),
}

impl Subject {
    pub fn kind(&self) -> SubjectKind {
        match self {
            Self::User(_) => SubjectKind::User,
            Self::Group(_) => SubjectKind::Group,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::User(id) | Self::Group(id) => id,
        }
    }

    /// Builds a subject from its kind and ID (e.g. from a recorded status).
    pub fn new(kind: SubjectKind, id: impl Into<String>) -> Self {
        match kind {
            SubjectKind::User => Self::User(id.into()),
            SubjectKind::Group => Self::Group(id.into()),
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
    }
}
