//! Matching what a manifest says (an ID, a name, an email) against the listings: exact
//! matches, "not found" and "ambiguous" kept distinct, one set of rules per kind
//! ([`Named`]). The walks themselves are the directory's (`directory.rs`).

use super::error::VultrError;
use super::model::{Group, Policy, Role, User};
use crate::domain::{GroupRef, PolicyRef, RoleRef, UserRef};

/// A resolved object: its ID, and what people call it (a policy's name, a user's email,
/// a group's display name) for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub id: String,
    pub name: String,
}

/// An object a manifest can name, with the matching rules of its kind.
pub(crate) trait Named {
    /// The kind, as a message names one ("IAM policy").
    const SINGULAR: &'static str;
    /// The kind's plural, for an `Ambiguous` error ("IAM policies").
    const PLURAL: &'static str;
    /// What a name of this kind is called in a reference ("name", "email").
    const NAME_FIELD: &'static str;
    fn id(&self) -> &str;
    /// What people call it.
    fn name(&self) -> &str;
    /// Whether `name` names it (never when empty).
    fn is_named(&self, name: &str) -> bool;
    /// The error of a reference that matches nothing.
    fn not_found(reference: String) -> VultrError;
}

/// Policy, group and role names match exactly.
fn same_name(own: &str, wanted: &str) -> bool {
    !wanted.is_empty() && own == wanted
}

/// Email domains are case-insensitive and providers treat the local part the same way,
/// so `Alice@Example.com` in a manifest means alice@example.com's account. Two accounts
/// differing only by case come out as Ambiguous, never as a guess.
fn same_email(own: &str, wanted: &str) -> bool {
    let wanted = wanted.trim();
    !wanted.is_empty() && own.trim().eq_ignore_ascii_case(wanted)
}

/// `Named` for a model: the field people call it by, its words, its error and rule.
macro_rules! named {
    ($type:ty, $field:ident, $one:literal, $plural:literal, $name_field:literal, $not_found:ident, $rule:ident) => {
        impl Named for $type {
            const SINGULAR: &'static str = $one;
            const PLURAL: &'static str = $plural;
            const NAME_FIELD: &'static str = $name_field;
            fn id(&self) -> &str {
                &self.id
            }
            fn name(&self) -> &str {
                &self.$field
            }
            fn is_named(&self, name: &str) -> bool {
                $rule(&self.$field, name)
            }
            fn not_found(reference: String) -> VultrError {
                VultrError::$not_found { reference }
            }
        }
    };
}

named!(
    Policy,
    name,
    "IAM policy",
    "IAM policies",
    "name",
    PolicyNotFound,
    same_name
);
named!(
    User,
    email,
    "user",
    "users",
    "email",
    UserNotFound,
    same_email
);
named!(
    Group,
    display_name,
    "group",
    "groups",
    "name",
    GroupNotFound,
    same_name
);
named!(Role, name, "role", "roles", "name", RoleNotFound, same_name);

/// How a reference names an object: by ID or by name (an email for a user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Id(&'a str),
    Name(&'a str),
}

/// The key of a reference: `$by_name` is its by-name variant (by email for a user).
macro_rules! keyed {
    ($($type:ident :: $by_name:ident),*) => {$(
        impl $type {
            pub(crate) fn key(&self) -> Key<'_> {
                match self {
                    Self::ById(id) => Key::Id(id),
                    Self::$by_name(name) => Key::Name(name),
                }
            }
        }
    )*};
}

keyed!(
    PolicyRef::ByName,
    UserRef::ByEmail,
    GroupRef::ByName,
    RoleRef::ByName
);

/// The one object `key` names. UUIDs are case-insensitive (a manifest may spell one in
/// upper case); the listing's spelling is what is returned, and later listings are
/// matched exactly against it.
pub(crate) fn find<T: Named>(items: &[T], key: Key<'_>) -> Result<String, VultrError> {
    let (mut ids, reference): (Vec<String>, _) = match key {
        Key::Id(id) => (
            matching(items, |item| item.id().eq_ignore_ascii_case(id)),
            format!("id {id:?}"),
        ),
        Key::Name(name) => (
            matching(items, |item| item.is_named(name)),
            format!("{} {name:?}", T::NAME_FIELD),
        ),
    };
    // A listing that repeats an object across pages is still one match.
    ids.sort();
    ids.dedup();
    match ids.len() {
        0 => Err(T::not_found(reference)),
        1 => Ok(ids.remove(0)),
        _ => Err(VultrError::Ambiguous {
            what: T::PLURAL,
            reference,
            ids,
        }),
    }
}

fn matching<T: Named>(items: &[T], matches: impl Fn(&T) -> bool) -> Vec<String> {
    items
        .iter()
        .filter(|item| matches(item))
        .map(|item| item.id().to_owned())
        .collect()
}

/// The object `key` names, and what people call it: a name as the manifest spells it
/// (an email may differ in case from the listing's), else the listing's name for the
/// ID (empty if it has none).
pub(crate) fn resolved<T: Named>(items: &[T], key: Key<'_>) -> Result<Resolved, VultrError> {
    let id = find(items, key)?;
    let name = match key {
        Key::Name(name) => name.to_owned(),
        Key::Id(_) => items
            .iter()
            .find(|item| item.id() == id)
            .map(|item| item.name().to_owned())
            .unwrap_or_default(),
    };
    Ok(Resolved { id, name })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vultr::fixture::{group, policy, role, user};

    fn by_id<T: Named>(items: &[T], id: &str) -> Result<String, VultrError> {
        find(items, Key::Id(id))
    }

    fn by_name<T: Named>(items: &[T], name: &str) -> Result<String, VultrError> {
        find(items, Key::Name(name))
    }

    /// `id` is found however it is cased, and `name` names the object `named`.
    fn assert_found<T: Named>(items: &[T], id: &str, name: &str, named: &str) {
        assert_eq!(by_id(items, &id.to_uppercase()).unwrap(), id);
        assert_eq!(by_name(items, name).unwrap(), named);
    }

    #[test]
    fn policy_names_match_exactly_and_case_sensitively() {
        let policies = [policy("p1", "dns-admin"), policy("p2", "DNS-Admin")];
        assert_eq!(by_name(&policies, "dns-admin").unwrap(), "p1");
        let err = by_name(&policies, "dns").unwrap_err();
        assert_eq!(err.reason(), "PolicyNotFound");
        assert_eq!(
            err.to_string(),
            "no Vultr IAM policy with name \"dns\" exists"
        );
    }

    #[test]
    fn duplicate_policy_names_are_ambiguous() {
        let policies = [policy("p2", "x"), policy("p1", "x"), policy("p3", "y")];
        let err = by_name(&policies, "x").unwrap_err();
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
        assert_eq!(by_name(&users, "alice@example.com").unwrap(), "u1");
        assert_eq!(
            by_name(&users, "carol@example.com").unwrap_err().reason(),
            "UserNotFound"
        );
        let users = [user("u1", "bob@example.com"), user("u2", "BOB@example.com")];
        assert_eq!(
            by_name(&users, "bob@example.com").unwrap_err().reason(),
            "Ambiguous"
        );
    }

    #[test]
    fn empty_references_match_nothing() {
        assert!(by_name(&[policy("p1", "")], "").is_err());
        assert!(by_name(&[user("u1", "")], "").is_err());
        assert!(by_name(&[group("g1", "")], "").is_err());
    }

    #[test]
    fn groups_by_id_and_name() {
        let groups = [
            group("6a0b2c1e-0000-4000-8000-000000000001", "ops"),
            group("g2", "Ops"),
        ];
        assert_found(&groups, "6a0b2c1e-0000-4000-8000-000000000001", "Ops", "g2");
        assert_eq!(by_id(&groups, "g3").unwrap_err().reason(), "GroupNotFound");
    }

    #[test]
    fn roles_by_id_and_exact_name() {
        let roles = [
            role("4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09", "auditors"),
            role("r2", "Auditors"),
            role("r3", "on-call"),
            role("r4", "on-call"),
        ];
        assert_found(
            &roles,
            "4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09",
            "Auditors",
            "r2",
        );
        let err = by_name(&roles, "auditor").unwrap_err();
        assert_eq!(err.reason(), "RoleNotFound");
        assert_eq!(
            err.to_string(),
            "no Vultr role with name \"auditor\" exists"
        );
        assert_eq!(
            by_id(&roles, "r9").unwrap_err().to_string(),
            "no Vultr role with id \"r9\" exists"
        );
        assert_eq!(
            by_name(&roles, "on-call").unwrap_err(),
            VultrError::Ambiguous {
                what: "roles",
                reference: "name \"on-call\"".into(),
                ids: vec!["r3".into(), "r4".into()],
            }
        );
        assert!(by_name(&[role("r5", "")], "").is_err());
    }

    #[test]
    fn repeated_objects_count_once() {
        let users = [user("u1", "a@x.io"), user("u1", "a@x.io")];
        assert_eq!(by_name(&users, "a@x.io").unwrap(), "u1");
    }
}
