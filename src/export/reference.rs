//! How an exported manifest refers to each side of a grant. With `--reference ids`,
//! by ID. With `--reference names`, by policy name, user email, group or role name, but only
//! when that name resolves back to exactly this object (no other object carries it, by
//! the operator's own matching rules: see [`super::org::Org`]) and admission would
//! accept it; otherwise by ID, with a note saying why, so the manifest never declares
//! a different or ambiguous object.

use super::org::Org;
use crate::cli::Reference;
use crate::crd::{GroupRef, PolicyRef, RoleRef, UserRef};
use crate::domain::{Grant, Subject};

/// `spec.policy` and the subject, as the manifest will say them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refs {
    pub policy: PolicyRef,
    pub subject: SubjectRef,
}

/// The subject side of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectRef {
    User(UserRef),
    Group(GroupRef),
    Role(RoleRef),
}

/// The references for one grant, and notes (for stderr) on every name that could not
/// be used. Notes are per object, so callers dedupe them across grants.
pub fn refs(grant: &Grant, org: &Org, mode: Reference) -> (Refs, Vec<String>) {
    let names = mode == Reference::Names;
    let mut notes = Vec::new();
    // A name is used when it is the only one of its kind in the walk (so resolution
    // finds exactly this object) and admission accepts it.
    let mut choose = |what: &str, id: &str, field: &str, name: &str, same: usize, fits: bool| {
        if !names {
            return false;
        }
        let ok = fits && same == 1;
        if !ok {
            notes.push(why(what, id, field, name, same));
        }
        ok
    };
    let policy_name = org.policy_label(&grant.policy_id);
    let policy = if choose(
        "policy",
        &grant.policy_id,
        "name",
        policy_name,
        org.policies_named(policy_name),
        usable_name(policy_name),
    ) {
        PolicyRef {
            id: None,
            name: Some(policy_name.to_owned()),
        }
    } else {
        by_id_policy(grant.policy_id.clone())
    };
    let label = org.subject_label(&grant.subject);
    let subject = match &grant.subject {
        Subject::User(id) => SubjectRef::User(
            if choose(
                "user",
                id,
                "email",
                label,
                org.users_with_email(label),
                usable_email(label),
            ) {
                UserRef {
                    id: None,
                    email: Some(label.to_owned()),
                }
            } else {
                UserRef {
                    id: Some(id.clone()),
                    email: None,
                }
            },
        ),
        Subject::Group(id) => SubjectRef::Group(
            if choose(
                "group",
                id,
                "name",
                label,
                org.groups_named(label),
                usable_name(label),
            ) {
                GroupRef {
                    id: None,
                    name: Some(label.to_owned()),
                }
            } else {
                GroupRef {
                    id: Some(id.clone()),
                    name: None,
                }
            },
        ),
        Subject::Role(id) => SubjectRef::Role(
            if choose(
                "role",
                id,
                "name",
                label,
                org.roles_named(label),
                usable_name(label),
            ) {
                RoleRef {
                    id: None,
                    name: Some(label.to_owned()),
                }
            } else {
                RoleRef {
                    id: Some(id.clone()),
                    name: None,
                }
            },
        ),
    };
    (Refs { policy, subject }, notes)
}

fn by_id_policy(id: String) -> PolicyRef {
    PolicyRef {
        id: Some(id),
        name: None,
    }
}

/// Why a side is referred to by ID; `same`: how many objects carry `value`.
fn why(what: &str, id: &str, field: &str, value: &str, same: usize) -> String {
    let reason = if value.is_empty() {
        format!("has no {field} in Vultr")
    } else if same > 1 {
        let others = same - 1;
        let noun = match (what, others) {
            (_, 1) => what.to_owned(),
            ("policy", _) => "policies".to_owned(),
            _ => format!("{what}s"),
        };
        format!("shares its {field} {value:?} with {others} other {noun} in Vultr")
    } else {
        format!("has the {field} {value:?}, which a manifest cannot hold")
    };
    format!("{what} {id} {reason}: referred to by id")
}

/// A policy or group name the CRD accepts: 1 to 256 characters, no whitespace at
/// either end (the admission rule `NO_EDGE_SPACE`).
fn usable_name(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= 256 && name.trim() == name
}

/// An email the CRD accepts: `^[^@\s]+@[^@\s]+\.[^@\s]+$`, at most 254 characters.
fn usable_email(email: &str) -> bool {
    if email.is_empty() || email.chars().count() > 254 || email.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain
            .char_indices()
            .any(|(i, c)| c == '.' && i > 0 && i + 1 < domain.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::org::fixture::{self, group, policy};
    use std::sync::Arc;

    fn org() -> Org {
        Org::new(
            Arc::new(vec![
                policy("p1", "dns-admin"),
                policy("p2", "twin"),
                policy("p3", "twin"),
                policy("p4", " padded"),
            ]),
            Arc::new(vec![
                fixture::user("u1", "alice@example.com"),
                fixture::user("u2", "shared@example.com"),
                fixture::user("u3", "SHARED@example.com"),
                fixture::user("u4", "not-an-email"),
            ]),
            Arc::new(vec![
                group("g1", "ops"),
                group("g2", "ops"),
                group("g3", "devs"),
            ]),
            Arc::default(),
        )
    }

    fn user(policy: &str, id: &str) -> Grant {
        Grant {
            policy_id: policy.into(),
            subject: Subject::User(id.into()),
        }
    }

    #[test]
    fn unique_names_are_used() {
        let (refs, notes) = super::refs(&user("p1", "u1"), &org(), Reference::Names);
        assert_eq!(refs.policy.name.as_deref(), Some("dns-admin"));
        assert_eq!(refs.policy.id, None);
        assert_eq!(
            refs.subject,
            SubjectRef::User(UserRef {
                id: None,
                email: Some("alice@example.com".into())
            })
        );
        assert!(notes.is_empty(), "{notes:?}");
        let grant = Grant {
            policy_id: "p1".into(),
            subject: Subject::Group("g3".into()),
        };
        let (refs, _) = super::refs(&grant, &org(), Reference::Names);
        assert_eq!(
            refs.subject,
            SubjectRef::Group(GroupRef {
                id: None,
                name: Some("devs".into())
            })
        );
    }

    #[test]
    fn ids_mode_never_uses_names() {
        let (refs, notes) = super::refs(&user("p1", "u1"), &org(), Reference::Ids);
        assert_eq!(refs.policy.id.as_deref(), Some("p1"));
        assert_eq!(refs.policy.name, None);
        assert_eq!(
            refs.subject,
            SubjectRef::User(UserRef {
                id: Some("u1".into()),
                email: None
            })
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn names_that_are_not_unique_or_not_admissible_fall_back_to_ids_with_a_note() {
        // Twin policy names, an email shared case-insensitively.
        let (refs, notes) = super::refs(&user("p2", "u2"), &org(), Reference::Names);
        assert_eq!(refs.policy.id.as_deref(), Some("p2"));
        assert!(
            matches!(refs.subject, SubjectRef::User(UserRef { id: Some(ref id), .. }) if id == "u2")
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("policy p2 shares its name \"twin\" with 1 other policy in"),
            "{notes:?}"
        );
        assert!(notes[1].contains("user u2 shares its email"), "{notes:?}");
        // Admission would refuse these, so the ID is used.
        let (refs, notes) = super::refs(&user("p4", "u4"), &org(), Reference::Names);
        assert_eq!(refs.policy.id.as_deref(), Some("p4"));
        assert!(matches!(
            refs.subject,
            SubjectRef::User(UserRef { id: Some(_), .. })
        ));
        assert!(notes.iter().all(|n| n.contains("cannot hold")), "{notes:?}");
        // Twin group names; an object missing from the directory.
        let grant = Grant {
            policy_id: "p9".into(),
            subject: Subject::Group("g1".into()),
        };
        let (refs, notes) = super::refs(&grant, &org(), Reference::Names);
        assert_eq!(refs.policy.id.as_deref(), Some("p9"));
        assert!(matches!(
            refs.subject,
            SubjectRef::Group(GroupRef { id: Some(_), .. })
        ));
        assert!(notes[0].contains("policy p9 has no name"), "{notes:?}");
        assert!(
            notes[1].contains("group g1 shares its name \"ops\""),
            "{notes:?}"
        );
    }

    #[test]
    fn email_shape() {
        for good in ["a@b.co", "first.last+tag@sub.example.com"] {
            assert!(usable_email(good), "{good}");
        }
        for bad in ["", "a@b", "a@.b", "a@b.", "@b.co", "a b@c.de", "a@b@c.de"] {
            assert!(!usable_email(bad), "{bad}");
        }
    }
}
