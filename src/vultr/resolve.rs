//! Matching what a manifest says (an ID, a name, an email) against the listings: exact
//! matches, "not found" and "ambiguous" kept distinct. The walks themselves are the
//! directory's (`directory.rs`).

use super::error::VultrError;
use super::model::{Group, Policy, Role, User};

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

/// A resolved object: its ID, and what people call it (a policy's name, a user's email,
/// a group's display name) for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub id: String,
    pub name: String,
}

/// The pair a manifest names, and what people call its two sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub grant: crate::domain::Grant,
    pub policy_name: String,
    pub subject_name: String,
}

/// How a manifest names the subject of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectRef {
    User(UserRef),
    Group(GroupRef),
    Role(RoleRef),
}

pub(crate) fn policy_by_id(policies: &[Policy], id: &str) -> Result<String, VultrError> {
    // UUIDs are case-insensitive; a manifest may spell one in upper case. The listing's
    // spelling is what is recorded (later listings are matched exactly against it).
    let ids = matching_ids(policies, |p| &p.id, |p| p.id.eq_ignore_ascii_case(id));
    exactly_one(ids, "IAM policies", format!("id {id:?}"), |reference| {
        VultrError::PolicyNotFound { reference }
    })
}

pub(crate) fn user_by_id(users: &[User], id: &str) -> Result<String, VultrError> {
    let ids = matching_ids(users, |u| &u.id, |u| u.id.eq_ignore_ascii_case(id));
    exactly_one(ids, "users", format!("id {id:?}"), |reference| {
        VultrError::UserNotFound { reference }
    })
}

pub(crate) fn policy_by_name(policies: &[Policy], name: &str) -> Result<String, VultrError> {
    let ids = matching_ids(policies, |p| &p.id, |p| !name.is_empty() && p.name == name);
    exactly_one(ids, "IAM policies", format!("name {name:?}"), |reference| {
        VultrError::PolicyNotFound { reference }
    })
}

pub(crate) fn user_by_email(users: &[User], email: &str) -> Result<String, VultrError> {
    // Email domains are case-insensitive and providers treat the local part the same
    // way, so `Alice@Example.com` in a manifest means alice@example.com's account.
    // Two accounts differing only by case come out as Ambiguous, never as a guess.
    let wanted = email.trim();
    let ids = matching_ids(
        users,
        |u| &u.id,
        |u| !wanted.is_empty() && u.email.trim().eq_ignore_ascii_case(wanted),
    );
    exactly_one(ids, "users", format!("email {email:?}"), |reference| {
        VultrError::UserNotFound { reference }
    })
}

pub(crate) fn group_by_id(groups: &[Group], id: &str) -> Result<String, VultrError> {
    // UUIDs are case-insensitive; a manifest may spell one in upper case.
    let ids = matching_ids(groups, |g| &g.id, |g| g.id.eq_ignore_ascii_case(id));
    exactly_one(ids, "groups", format!("id {id:?}"), |reference| {
        VultrError::GroupNotFound { reference }
    })
}

pub(crate) fn group_by_name(groups: &[Group], name: &str) -> Result<String, VultrError> {
    let ids = matching_ids(
        groups,
        |g| &g.id,
        |g| !name.is_empty() && g.display_name == name,
    );
    exactly_one(ids, "groups", format!("name {name:?}"), |reference| {
        VultrError::GroupNotFound { reference }
    })
}

pub(crate) fn role_by_id(roles: &[Role], id: &str) -> Result<String, VultrError> {
    // UUIDs are case-insensitive; a manifest may spell one in upper case.
    let ids = matching_ids(roles, |r| &r.id, |r| r.id.eq_ignore_ascii_case(id));
    exactly_one(ids, "roles", format!("id {id:?}"), |reference| {
        VultrError::RoleNotFound { reference }
    })
}

pub(crate) fn role_by_name(roles: &[Role], name: &str) -> Result<String, VultrError> {
    let ids = matching_ids(roles, |r| &r.id, |r| !name.is_empty() && r.name == name);
    exactly_one(ids, "roles", format!("name {name:?}"), |reference| {
        VultrError::RoleNotFound { reference }
    })
}

fn matching_ids<T>(
    items: &[T],
    id: impl Fn(&T) -> &String,
    matches: impl Fn(&T) -> bool,
) -> Vec<String> {
    let mut ids: Vec<String> = items
        .iter()
        .filter(|item| matches(item))
        .map(|item| id(item).clone())
        .collect();
    // A listing that repeats an object across pages is still one match.
    ids.sort();
    ids.dedup();
    ids
}

fn exactly_one(
    mut ids: Vec<String>,
    what: &'static str,
    reference: String,
    not_found: impl FnOnce(String) -> VultrError,
) -> Result<String, VultrError> {
    match ids.len() {
        0 => Err(not_found(reference)),
        1 => Ok(ids.remove(0)),
        _ => Err(VultrError::Ambiguous {
            what,
            reference,
            ids,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(id: &str, name: &str) -> Policy {
        serde_json::from_value(serde_json::json!({"id": id, "name": name})).unwrap()
    }

    fn user(id: &str, email: &str) -> User {
        serde_json::from_value(serde_json::json!({"id": id, "email": email})).unwrap()
    }

    fn group(id: &str, name: &str) -> Group {
        serde_json::from_value(serde_json::json!({"id": id, "display_name": name})).unwrap()
    }

    #[test]
    fn policy_names_match_exactly_and_case_sensitively() {
        let policies = [policy("p1", "dns-admin"), policy("p2", "DNS-Admin")];
        assert_eq!(policy_by_name(&policies, "dns-admin").unwrap(), "p1");
        let err = policy_by_name(&policies, "dns").unwrap_err();
        assert_eq!(err.reason(), "PolicyNotFound");
        assert_eq!(
            err.to_string(),
            "no Vultr IAM policy with name \"dns\" exists"
        );
    }

    #[test]
    fn duplicate_policy_names_are_ambiguous() {
        let policies = [policy("p2", "x"), policy("p1", "x"), policy("p3", "y")];
        let err = policy_by_name(&policies, "x").unwrap_err();
        assert_eq!(
            err,
            VultrError::Ambiguous {
                what: "IAM policies",
                reference: "name \"x\"".into(),
                ids: vec!["p1".into(), "p2".into()],
            }
        );
    }

    #[test]
    fn emails_ignore_case() {
        let users = [
            user("u1", "Alice@Example.com"),
            user("u2", "bob@example.com"),
        ];
        assert_eq!(user_by_email(&users, "alice@example.com").unwrap(), "u1");
        assert_eq!(
            user_by_email(&users, "carol@example.com")
                .unwrap_err()
                .reason(),
            "UserNotFound"
        );
        let users = [user("u1", "bob@example.com"), user("u2", "BOB@example.com")];
        assert_eq!(
            user_by_email(&users, "bob@example.com")
                .unwrap_err()
                .reason(),
            "Ambiguous"
        );
    }

    #[test]
    fn empty_references_match_nothing() {
        assert!(policy_by_name(&[policy("p1", "")], "").is_err());
        assert!(user_by_email(&[user("u1", "")], "").is_err());
        assert!(group_by_name(&[group("g1", "")], "").is_err());
    }

    #[test]
    fn groups_by_id_and_name() {
        let groups = [
            group("6a0b2c1e-0000-4000-8000-000000000001", "ops"),
            group("g2", "Ops"),
        ];
        assert_eq!(
            group_by_id(&groups, "6A0B2C1E-0000-4000-8000-000000000001").unwrap(),
            "6a0b2c1e-0000-4000-8000-000000000001"
        );
        assert_eq!(group_by_name(&groups, "Ops").unwrap(), "g2");
        assert_eq!(
            group_by_id(&groups, "g3").unwrap_err().reason(),
            "GroupNotFound"
        );
    }

    fn role(id: &str, name: &str) -> Role {
        serde_json::from_value(serde_json::json!({"id": id, "name": name})).unwrap()
    }

    #[test]
    fn roles_by_id_and_exact_name() {
        let roles = [
            role("4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09", "auditors"),
            role("r2", "Auditors"),
            role("r3", "on-call"),
            role("r4", "on-call"),
        ];
        assert_eq!(
            role_by_id(&roles, "4B5C6D7E-8F90-4A1B-9C2D-3E4F5A6B7C09").unwrap(),
            "4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09"
        );
        assert_eq!(role_by_name(&roles, "Auditors").unwrap(), "r2");
        let err = role_by_name(&roles, "auditor").unwrap_err();
        assert_eq!(err.reason(), "RoleNotFound");
        assert_eq!(
            err.to_string(),
            "no Vultr role with name \"auditor\" exists"
        );
        assert_eq!(
            role_by_id(&roles, "r9").unwrap_err().to_string(),
            "no Vultr role with id \"r9\" exists"
        );
        assert_eq!(
            role_by_name(&roles, "on-call").unwrap_err(),
            VultrError::Ambiguous {
                what: "roles",
                reference: "name \"on-call\"".into(),
                ids: vec!["r3".into(), "r4".into()],
            }
        );
        assert!(role_by_name(&[role("r5", "")], "").is_err());
    }

    #[test]
    fn repeated_objects_count_once() {
        let users = [user("u1", "a@x.io"), user("u1", "a@x.io")];
        assert_eq!(user_by_email(&users, "a@x.io").unwrap(), "u1");
    }
}
