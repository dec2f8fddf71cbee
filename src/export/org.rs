//! The organisation as one directory walk saw it: policies, users, groups and roles, what
//! people call each of them, and how many share each name. Indexed once, so that an
//! export of thousands of grants over thousands of users stays linear.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::domain::Subject;
use crate::vultr::{Group, Named, Policy, Role, User};

/// One walk of each listing (from the shared [`crate::vultr::Directory`]).
#[derive(Debug, Clone, Default)]
pub struct Org {
    pub policies: Arc<Vec<Policy>>,
    pub users: Arc<Vec<User>>,
    pub groups: Arc<Vec<Group>>,
    pub roles: Arc<Vec<Role>>,
    policy_index: Index,
    user_index: Index,
    group_index: Index,
    role_index: Index,
}

/// One listing, indexed.
#[derive(Debug, Clone, Default)]
struct Index {
    /// Lower-cased ID → position (the first, if a listing repeats one).
    at: HashMap<String, usize>,
    /// How many objects carry each name: policy, group and role names exactly, emails
    /// trimmed and lower-cased (the matching rules of `crate::vultr::resolve`). Each
    /// object (by ID) counts once, as resolution dedupes IDs.
    names: HashMap<String, usize>,
}

impl Index {
    fn new<T: Named>(items: &[T], name_key: impl Fn(&str) -> String) -> Self {
        let mut index = Index::default();
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            index.at.entry(item.id().to_ascii_lowercase()).or_insert(i);
            if seen.insert(item.id()) {
                *index.names.entry(name_key(item.name())).or_insert(0) += 1;
            }
        }
        index
    }

    fn get<'a, T>(&self, items: &'a [T], id: &str) -> Option<&'a T> {
        self.at.get(&id.to_ascii_lowercase()).map(|&i| &items[i])
    }

    fn named(&self, key: &str) -> usize {
        self.names.get(key).copied().unwrap_or(0)
    }
}

impl Org {
    pub(crate) fn new(
        policies: Arc<Vec<Policy>>,
        users: Arc<Vec<User>>,
        groups: Arc<Vec<Group>>,
        roles: Arc<Vec<Role>>,
    ) -> Self {
        Org {
            policy_index: Index::new(&policies, str::to_owned),
            user_index: Index::new(&users, email_key),
            group_index: Index::new(&groups, str::to_owned),
            role_index: Index::new(&roles, str::to_owned),
            policies,
            users,
            groups,
            roles,
        }
    }

    pub(crate) fn user(&self, id: &str) -> Option<&User> {
        self.user_index.get(&self.users, id)
    }

    /// The policy's name; empty when the walk has none for it.
    pub(crate) fn policy_label(&self, id: &str) -> &str {
        self.policy_index
            .get(&self.policies, id)
            .map_or("", |p| p.name.as_str())
    }

    /// A user's email (trimmed), a group's display name or a role's name; empty when
    /// the walk has none for it.
    pub(crate) fn subject_label(&self, subject: &Subject) -> &str {
        match subject {
            Subject::User(id) => self.user(id).map_or("", |u| u.email.trim()),
            Subject::Group(id) => self
                .group_index
                .get(&self.groups, id)
                .map_or("", |g| g.name()),
            Subject::Role(id) => self
                .role_index
                .get(&self.roles, id)
                .map_or("", |r| r.name()),
        }
    }

    /// Policies named exactly `name`.
    pub(crate) fn policies_named(&self, name: &str) -> usize {
        self.policy_index.named(name)
    }

    /// Users whose email matches `email` as resolution matches it (case-insensitive,
    /// surrounding whitespace ignored); 0 for an empty one, which matches nothing.
    pub(crate) fn users_with_email(&self, email: &str) -> usize {
        if email.trim().is_empty() {
            return 0;
        }
        self.user_index.named(&email_key(email))
    }

    /// Groups named exactly `name`.
    pub(crate) fn groups_named(&self, name: &str) -> usize {
        self.group_index.named(name)
    }

    /// Roles named exactly `name`.
    pub(crate) fn roles_named(&self, name: &str) -> usize {
        self.role_index.named(name)
    }
}

fn email_key(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// Directory objects for the export's unit tests, as the listings would give them.
#[cfg(test)]
pub(crate) mod fixture {
    use std::sync::Arc;

    use super::Org;
    pub(crate) use crate::vultr::fixture::{group, policy, role, user};

    /// An organisation of (id, name) pairs: policy names, user emails, group and role
    /// names.
    pub(crate) fn org(
        policies: &[(&str, &str)],
        users: &[(&str, &str)],
        groups: &[(&str, &str)],
        roles: &[(&str, &str)],
    ) -> Org {
        fn all<T>(pairs: &[(&str, &str)], one: fn(&str, &str) -> T) -> Arc<Vec<T>> {
            Arc::new(pairs.iter().map(|(id, name)| one(id, name)).collect())
        }
        Org::new(
            all(policies, policy),
            all(users, user),
            all(groups, group),
            all(roles, role),
        )
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
