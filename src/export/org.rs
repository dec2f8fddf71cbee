//! The organisation as one directory walk saw it: policies, users, groups and roles, what
//! people call each of them, and how many share each name. Indexed once, so that an
//! export of thousands of grants over thousands of users stays linear.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::Subject;
use crate::vultr::{Group, Policy, Role, User};

/// One walk of each listing (from the shared [`crate::vultr::Directory`]).
#[derive(Debug, Clone, Default)]
pub struct Org {
    pub policies: Arc<Vec<Policy>>,
    pub users: Arc<Vec<User>>,
    pub groups: Arc<Vec<Group>>,
    pub roles: Arc<Vec<Role>>,
    /// Lower-cased ID → position, per listing (the first, if a listing repeats one).
    policy_at: HashMap<String, usize>,
    user_at: HashMap<String, usize>,
    group_at: HashMap<String, usize>,
    role_at: HashMap<String, usize>,
    /// How many objects carry each name: policy names and group names exactly, emails
    /// trimmed and lower-cased, role names exactly (the matching rules of
    /// `crate::vultr::resolve`).
    policy_names: HashMap<String, usize>,
    emails: HashMap<String, usize>,
    group_names: HashMap<String, usize>,
    role_names: HashMap<String, usize>,
}

impl Org {
    pub(crate) fn new(
        policies: Arc<Vec<Policy>>,
        users: Arc<Vec<User>>,
        groups: Arc<Vec<Group>>,
        roles: Arc<Vec<Role>>,
    ) -> Self {
        Org {
            policy_at: positions(&policies, |p| &p.id),
            user_at: positions(&users, |u| &u.id),
            group_at: positions(&groups, |g| &g.id),
            role_at: positions(&roles, |r| &r.id),
            policy_names: counts(&policies, |p| &p.id, |p| p.name.clone()),
            emails: counts(&users, |u| &u.id, |u| email_key(&u.email)),
            group_names: counts(&groups, |g| &g.id, |g| g.display_name.clone()),
            role_names: counts(&roles, |r| &r.id, |r| r.name.clone()),
            policies,
            users,
            groups,
            roles,
        }
    }

    pub(crate) fn policy(&self, id: &str) -> Option<&Policy> {
        self.policy_at
            .get(&id.to_ascii_lowercase())
            .map(|&i| &self.policies[i])
    }

    pub(crate) fn user(&self, id: &str) -> Option<&User> {
        self.user_at
            .get(&id.to_ascii_lowercase())
            .map(|&i| &self.users[i])
    }

    pub(crate) fn group(&self, id: &str) -> Option<&Group> {
        self.group_at
            .get(&id.to_ascii_lowercase())
            .map(|&i| &self.groups[i])
    }

    pub(crate) fn role(&self, id: &str) -> Option<&Role> {
        self.role_at
            .get(&id.to_ascii_lowercase())
            .map(|&i| &self.roles[i])
    }

    /// The policy's name; empty when the walk has none for it.
    pub(crate) fn policy_label(&self, id: &str) -> &str {
        self.policy(id).map_or("", |p| p.name.as_str())
    }

    /// A user's email (trimmed), a group's display name or a role's name; empty when
    /// the walk has none for it.
    pub(crate) fn subject_label(&self, subject: &Subject) -> &str {
        match subject {
            Subject::User(id) => self.user(id).map_or("", |u| u.email.trim()),
            Subject::Group(id) => self.group(id).map_or("", |g| g.display_name.as_str()),
            Subject::Role(id) => self.role(id).map_or("", |r| r.name.as_str()),
        }
    }

    /// Policies named exactly `name`.
    pub(crate) fn policies_named(&self, name: &str) -> usize {
        self.policy_names.get(name).copied().unwrap_or(0)
    }

    /// Users whose email matches `email` as resolution matches it (case-insensitive,
    /// surrounding whitespace ignored); 0 for an empty one, which matches nothing.
    pub(crate) fn users_with_email(&self, email: &str) -> usize {
        if email.trim().is_empty() {
            return 0;
        }
        self.emails.get(&email_key(email)).copied().unwrap_or(0)
    }

    /// Groups named exactly `name`.
    pub(crate) fn groups_named(&self, name: &str) -> usize {
        self.group_names.get(name).copied().unwrap_or(0)
    }

    /// Roles named exactly `name`.
    pub(crate) fn roles_named(&self, name: &str) -> usize {
        self.role_names.get(name).copied().unwrap_or(0)
    }
}

fn email_key(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

fn positions<T>(items: &[T], id: impl Fn(&T) -> &String) -> HashMap<String, usize> {
    let mut at = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        at.entry(id(item).to_ascii_lowercase()).or_insert(i);
    }
    at
}

/// Objects per name, each object (by ID) counted once, as `resolve` dedupes IDs.
fn counts<T>(
    items: &[T],
    id: impl Fn(&T) -> &String,
    key: impl Fn(&T) -> String,
) -> HashMap<String, usize> {
    let mut seen = std::collections::HashSet::new();
    let mut counts = HashMap::new();
    for item in items {
        if seen.insert(id(item).clone()) {
            *counts.entry(key(item)).or_insert(0) += 1;
        }
    }
    counts
}

/// Directory objects for the export's unit tests, as the listings would give them.
#[cfg(test)]
pub(crate) mod fixture {
    use crate::vultr::{Group, Policy, Role, User};
    use serde_json::json;

    pub(crate) fn policy(id: &str, name: &str) -> Policy {
        serde_json::from_value(json!({"id": id, "name": name})).expect("a policy")
    }

    pub(crate) fn user(id: &str, email: &str) -> User {
        serde_json::from_value(json!({"id": id, "email": email})).expect("a user")
    }

    pub(crate) fn group(id: &str, name: &str) -> Group {
        serde_json::from_value(json!({"id": id, "display_name": name})).expect("a group")
    }

    pub(crate) fn role(id: &str, name: &str) -> Role {
        serde_json::from_value(json!({"id": id, "name": name})).expect("a role")
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::user;
    use super::*;
    use crate::vultr::resolve::{Key, find};

    /// The counts agree with resolution: an email is usable exactly when
    /// resolution finds one user by it, whatever the case, spaces or repeats.
    #[test]
    fn email_counts_follow_the_resolution_rules() {
        let users = vec![
            user("u1", "alice@example.com"),
            user("u2", " Bob@Example.com "),
            user("u3", "bob@example.COM"),
            user("u4", "carol@example.com"),
            user("u4", "carol@example.com"),
            user("u5", ""),
        ];
        let org = Org::new(
            Arc::default(),
            Arc::new(users.clone()),
            Arc::default(),
            Arc::default(),
        );
        for probe in [
            "alice@example.com",
            "ALICE@example.com",
            "bob@example.com",
            " carol@example.com",
            "",
            "nobody@example.com",
        ] {
            let unique = find(&users, Key::Name(probe)).is_ok();
            assert_eq!(org.users_with_email(probe) == 1, unique, "{probe:?}");
        }
        assert_eq!(org.users_with_email("bob@example.com"), 2);
        assert_eq!(org.user("U1").map(|u| u.id.as_str()), Some("u1"));
        assert_eq!(
            org.subject_label(&Subject::User("u2".into())),
            "Bob@Example.com"
        );
    }
}
