//! The organisation as one directory walk saw it: policies, users and groups, and
//! what people call each of them.

use std::sync::Arc;

use crate::domain::Subject;
use crate::vultr::{Group, Policy, User};

/// One walk of each listing (from the shared [`crate::vultr::Directory`]).
#[derive(Debug, Clone, Default)]
pub struct Org {
    pub policies: Arc<Vec<Policy>>,
    pub users: Arc<Vec<User>>,
    pub groups: Arc<Vec<Group>>,
}

impl Org {
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.id.eq_ignore_ascii_case(id))
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id.eq_ignore_ascii_case(id))
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id.eq_ignore_ascii_case(id))
    }

    /// The policy's name; empty when the walk has none for it.
    pub fn policy_label(&self, id: &str) -> &str {
        self.policy(id).map_or("", |p| p.name.as_str())
    }

    /// A user's email or a group's display name; empty when the walk has none for it.
    pub fn subject_label(&self, subject: &Subject) -> &str {
        match subject {
            Subject::User(id) => self.user(id).map_or("", |u| u.email.trim()),
            Subject::Group(id) => self.group(id).map_or("", |g| g.display_name.as_str()),
        }
    }
}
