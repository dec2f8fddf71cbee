//! How an exported manifest refers to each side of a grant. With `--reference ids`,
//! by ID. With `--reference names`, by policy name, user email, group or role name, but only
//! when that name resolves back to exactly this object (no other object carries it, by
//! the operator's own matching rules: see [`super::org::Org`]) and admission would
//! accept it; otherwise by ID, with a note saying why, so the manifest never declares
//! a different or ambiguous object.

use super::Reference;
use super::org::Org;
use crate::domain::{Grant, GroupRef, PolicyRef, Refs, RoleRef, SubjectKind, SubjectRef, UserRef};

/// The references for one grant, and notes (for stderr) on every name that could not
/// be used. Notes are per object, so callers dedupe them across grants.
pub(crate) fn refs(grant: &Grant, org: &Org, mode: Reference) -> (Refs, Vec<String>) {
    let mut notes = Vec::new();
    // A name is used when it is the only one of its kind in the walk (so resolution
    // finds exactly this object) and admission accepts it.
    let mut by_name = |what: &str, id: &str, field: &str, name: &str, same: usize, fits: bool| {
        if mode != Reference::Names {
            return None;
        }
        if fits && same == 1 {
            return Some(name.to_owned());
        }
        notes.push(why(what, id, field, name, same));
        None
    };
    let id = grant.policy_id.clone();
    let name = org.policy_label(&id);
    let same = org.policies_named(name);
    let policy = match by_name("policy", &id, "name", name, same, usable_name(name)) {
        Some(name) => PolicyRef::ByName(name),
        None => PolicyRef::ById(id),
    };
    let id = grant.subject.id().to_owned();
    let label = org.subject_label(&grant.subject);
    let kind = grant.subject.kind();
    let (what, field, same, fits) = match kind {
        SubjectKind::User => (
            "user",
            "email",
            org.users_with_email(label),
            usable_email(label),
        ),
        SubjectKind::Group => ("group", "name", org.groups_named(label), usable_name(label)),
        SubjectKind::Role => ("role", "name", org.roles_named(label), usable_name(label)),
    };
    let subject = match (kind, by_name(what, &id, field, label, same, fits)) {
        (SubjectKind::User, Some(email)) => SubjectRef::User(UserRef::ByEmail(email)),
        (SubjectKind::User, None) => SubjectRef::User(UserRef::ById(id)),
        (SubjectKind::Group, Some(name)) => SubjectRef::Group(GroupRef::ByName(name)),
        (SubjectKind::Group, None) => SubjectRef::Group(GroupRef::ById(id)),
        (SubjectKind::Role, Some(name)) => SubjectRef::Role(RoleRef::ByName(name)),
        (SubjectKind::Role, None) => SubjectRef::Role(RoleRef::ById(id)),
    };
    (Refs { policy, subject }, notes)
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
    use crate::domain::Subject;
    use crate::export::org::fixture;

    fn org() -> Org {
        fixture::org(
            &[
                ("p1", "dns-admin"),
                ("p2", "twin"),
                ("p3", "twin"),
                ("p4", " padded"),
            ],
            &[
                ("u1", "alice@example.com"),
                ("u2", "shared@example.com"),
                ("u3", "SHARED@example.com"),
                ("u4", "not-an-email"),
            ],
            &[("g1", "ops"), ("g2", "ops"), ("g3", "devs")],
            &[],
        )
    }

    fn user(policy: &str, id: &str) -> Grant {
        Grant {
            policy_id: policy.into(),
            subject: Subject::User(id.into()),
        }
    }

    fn by_ids(policy: &str, subject: SubjectRef) -> Refs {
        Refs {
            policy: PolicyRef::ById(policy.into()),
            subject,
        }
    }

    /// The references of a user grant by IDs.
    fn user_by_ids(policy: &str, user: &str) -> Refs {
        by_ids(policy, SubjectRef::User(UserRef::ById(user.into())))
    }

    #[test]
    fn unique_names_are_used() {
        let (refs, notes) = super::refs(&user("p1", "u1"), &org(), Reference::Names);
        assert_eq!(
            refs,
            Refs {
                policy: PolicyRef::ByName("dns-admin".into()),
                subject: SubjectRef::User(UserRef::ByEmail("alice@example.com".into())),
            }
        );
        assert!(notes.is_empty(), "{notes:?}");
        let grant = Grant {
            policy_id: "p1".into(),
            subject: Subject::Group("g3".into()),
        };
        let (refs, _) = super::refs(&grant, &org(), Reference::Names);
        assert_eq!(
            refs.subject,
            SubjectRef::Group(GroupRef::ByName("devs".into()))
        );
    }

    #[test]
    fn ids_mode_never_uses_names() {
        let (refs, notes) = super::refs(&user("p1", "u1"), &org(), Reference::Ids);
        assert_eq!(refs, user_by_ids("p1", "u1"));
        assert!(notes.is_empty());
    }

    #[test]
    fn names_that_are_not_unique_or_not_admissible_fall_back_to_ids_with_a_note() {
        // Twin policy names, an email shared case-insensitively.
        let (refs, notes) = super::refs(&user("p2", "u2"), &org(), Reference::Names);
        assert_eq!(refs, user_by_ids("p2", "u2"));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("policy p2 shares its name \"twin\" with 1 other policy in"),
            "{notes:?}"
        );
        assert!(notes[1].contains("user u2 shares its email"), "{notes:?}");
        // Admission would refuse these, so the ID is used.
        let (refs, notes) = super::refs(&user("p4", "u4"), &org(), Reference::Names);
        assert_eq!(refs, user_by_ids("p4", "u4"));
        assert!(notes.iter().all(|n| n.contains("cannot hold")), "{notes:?}");
        // Twin group names; an object missing from the directory.
        let grant = Grant {
            policy_id: "p9".into(),
            subject: Subject::Group("g1".into()),
        };
        let (refs, notes) = super::refs(&grant, &org(), Reference::Names);
        assert_eq!(
            refs,
            by_ids("p9", SubjectRef::Group(GroupRef::ById("g1".into())))
        );
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
