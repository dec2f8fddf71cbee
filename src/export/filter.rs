//! `--policy`, `--user`, `--group` and `--role`: which grants an export keeps, and so
//! which listings it has to read. Flags of one kind are alternatives; kinds must all
//! match; `--user`, `--group` and `--role` together are one subject filter. A selector
//! names an object by ID (case-insensitively) or by name (policy, group and role names
//! exactly, emails
//! case-insensitively, as resolution matches them); one that names nothing is an error,
//! so a typo never exports an empty set that looks like "nothing granted".

use std::collections::HashSet;
use std::fmt;

use super::org::Org;
use crate::domain::{Grant, ListingSource, Subject, SubjectKind};
use crate::vultr::Named;

/// The filter flags as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    pub policies: Vec<String>,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
}

/// Selectors that name nothing in the organisation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnknownSelectors(pub Vec<String>);

impl fmt::Display for UnknownSelectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// The selectors resolved to IDs (lower-cased). `None`: that dimension is not filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    policies: Option<HashSet<String>>,
    subjects: Option<HashSet<(SubjectKind, String)>>,
}

/// Sources are read in this order (stable, whatever the listing order).
fn order(source: &ListingSource) -> (String, &'static str) {
    let kind = match source {
        ListingSource::PolicyUsers(_) => "users",
        ListingSource::PolicyGroups(_) => "groups",
        ListingSource::RolePolicies(_) => "role",
    };
    (source.owner_id().to_ascii_lowercase(), kind)
}

impl Filter {
    pub(crate) fn new(selectors: &Selectors, org: &Org) -> Result<Filter, UnknownSelectors> {
        let mut unknown = Vec::new();
        let policies = pick(&org.policies, &selectors.policies, "--policy", &mut unknown);
        let subjects = [
            (
                SubjectKind::User,
                pick(&org.users, &selectors.users, "--user", &mut unknown),
            ),
            (
                SubjectKind::Group,
                pick(&org.groups, &selectors.groups, "--group", &mut unknown),
            ),
            (
                SubjectKind::Role,
                pick(&org.roles, &selectors.roles, "--role", &mut unknown),
            ),
        ];
        if !unknown.is_empty() {
            return Err(UnknownSelectors(unknown));
        }
        let subjects = match subjects.iter().all(|(_, ids)| ids.is_none()) {
            true => None,
            false => Some(
                subjects
                    .into_iter()
                    .flat_map(|(kind, ids)| ids.into_iter().flatten().map(move |id| (kind, id)))
                    .collect(),
            ),
        };
        Ok(Filter { policies, subjects })
    }

    /// The listings that can hold a kept grant, sorted: the users or groups of each
    /// selected policy, as the subject filter allows, and the policies of each role it
    /// allows (Vultr lists a role's policies, not a policy's roles).
    pub(crate) fn sources(&self, org: &Org) -> Vec<ListingSource> {
        let allows = |kind: SubjectKind| {
            self.subjects
                .as_ref()
                .is_none_or(|s| s.iter().any(|(k, _)| *k == kind))
        };
        let mut sources: Vec<ListingSource> = org
            .policies
            .iter()
            .filter(|p| self.keeps_policy(&p.id))
            .flat_map(|p| {
                [SubjectKind::User, SubjectKind::Group]
                    .into_iter()
                    .filter(|kind| allows(*kind))
                    .filter_map(|kind| ListingSource::of_policy(&p.id, kind))
            })
            .collect();
        if allows(SubjectKind::Role) {
            sources.extend(
                org.roles
                    .iter()
                    .filter(|r| self.keeps_subject(&Subject::Role(r.id.clone())))
                    .map(|r| ListingSource::RolePolicies(r.id.clone())),
            );
        }
        sources.sort_by_key(order);
        sources.dedup();
        sources
    }

    /// Whether the grant passes every filter.
    pub(crate) fn keeps(&self, grant: &Grant) -> bool {
        self.keeps_policy(&grant.policy_id) && self.keeps_subject(&grant.subject)
    }

    fn keeps_policy(&self, id: &str) -> bool {
        self.policies
            .as_ref()
            .is_none_or(|ids| ids.contains(&id.to_ascii_lowercase()))
    }

    fn keeps_subject(&self, subject: &Subject) -> bool {
        self.subjects
            .as_ref()
            .is_none_or(|s| s.contains(&(subject.kind(), subject.id().to_ascii_lowercase())))
    }
}

/// The lower-cased IDs of the objects the selectors of one flag name, by ID
/// (case-insensitively) or by name as resolution matches it (`None` without any
/// selector); a selector that names nothing adds its message to `unknown`.
fn pick<T: Named>(
    items: &[T],
    selectors: &[String],
    flag: &str,
    unknown: &mut Vec<String>,
) -> Option<HashSet<String>> {
    if selectors.is_empty() {
        return None;
    }
    let mut all = HashSet::new();
    for sel in selectors {
        let hits: Vec<String> = items
            .iter()
            .filter(|item| item.id().eq_ignore_ascii_case(sel) || item.is_named(sel))
            .map(|item| item.id().to_ascii_lowercase())
            .collect();
        if hits.is_empty() {
            unknown.push(format!(
                "{flag} {sel:?} names no Vultr {} (by {} or id)",
                T::SINGULAR,
                T::NAME_FIELD
            ));
        }
        all.extend(hits);
    }
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::org::fixture;

    fn org() -> Org {
        fixture::org(
            &[("P1", "dns-admin"), ("p2", "billing-read")],
            &[
                ("u1", "alice@example.com"),
                ("u2", "shared@example.com"),
                ("u3", "Shared@Example.com"),
            ],
            &[("g1", "ops"), ("g2", "developers")],
            &[("r1", "auditors")],
        )
    }

    fn sel(policies: &[&str], users: &[&str], groups: &[&str]) -> Selectors {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Selectors {
            policies: owned(policies),
            users: owned(users),
            groups: owned(groups),
            roles: Vec::new(),
        }
    }

    fn user_grant(policy: &str, user: &str) -> Grant {
        Grant {
            policy_id: policy.into(),
            subject: Subject::User(user.into()),
        }
    }

    fn group_grant(policy: &str, group: &str) -> Grant {
        Grant {
            policy_id: policy.into(),
            subject: Subject::Group(group.into()),
        }
    }

    #[test]
    fn no_selector_keeps_everything_and_reads_every_listing() {
        let f = Filter::new(&Selectors::default(), &org()).unwrap();
        assert!(f.keeps(&user_grant("p1", "u9")));
        assert!(f.keeps(&group_grant("p2", "g9")));
        // Users and groups of each policy, and the policies of each role.
        assert_eq!(f.sources(&org()).len(), 5);
    }

    #[test]
    fn a_role_filter_reads_that_role_listing_only() {
        let selectors = Selectors {
            roles: vec!["auditors".into()],
            ..Selectors::default()
        };
        let f = Filter::new(&selectors, &org()).unwrap();
        let role_grant = |policy: &str, role: &str| Grant {
            policy_id: policy.into(),
            subject: Subject::Role(role.into()),
        };
        assert!(f.keeps(&role_grant("p1", "R1")));
        assert!(!f.keeps(&role_grant("p1", "r2")));
        assert!(!f.keeps(&user_grant("p1", "u1")));
        assert_eq!(
            f.sources(&org()),
            vec![ListingSource::RolePolicies("r1".into())]
        );
        let unknown = Selectors {
            roles: vec!["Auditors".into()],
            ..Selectors::default()
        };
        let err = Filter::new(&unknown, &org()).unwrap_err().to_string();
        assert!(err.contains("--role \"Auditors\""), "{err}");
    }

    #[test]
    fn a_policy_by_name_or_id_keeps_its_grants_only() {
        for by in ["dns-admin", "p1", "P1"] {
            let f = Filter::new(&sel(&[by], &[], &[]), &org()).unwrap();
            assert!(f.keeps(&user_grant("P1", "u1")), "{by}");
            assert!(f.keeps(&group_grant("p1", "g1")), "{by}");
            assert!(!f.keeps(&user_grant("p2", "u1")), "{by}");
            // The role listings are read too: a role may hold the policy.
            assert_eq!(
                f.sources(&org()),
                vec![
                    ListingSource::PolicyGroups("P1".into()),
                    ListingSource::PolicyUsers("P1".into()),
                    ListingSource::RolePolicies("r1".into()),
                ]
            );
        }
    }

    #[test]
    fn a_user_filter_reads_no_group_listing_and_keeps_that_user_only() {
        let f = Filter::new(&sel(&[], &["ALICE@example.com"], &[]), &org()).unwrap();
        assert!(f.keeps(&user_grant("p1", "u1")));
        assert!(!f.keeps(&user_grant("p1", "u2")));
        assert!(!f.keeps(&group_grant("p1", "g1")));
        assert!(
            f.sources(&org())
                .iter()
                .all(|s| matches!(s, ListingSource::PolicyUsers(_)))
        );
        // An email shared by two accounts (case aside) selects both.
        let f = Filter::new(&sel(&[], &["shared@example.com"], &[]), &org()).unwrap();
        assert!(f.keeps(&user_grant("p1", "u2")) && f.keeps(&user_grant("p1", "u3")));
    }

    #[test]
    fn users_and_groups_are_alternatives_policies_must_match_too() {
        let f = Filter::new(&sel(&["billing-read"], &["u1"], &["ops"]), &org()).unwrap();
        assert!(f.keeps(&user_grant("p2", "u1")));
        assert!(f.keeps(&group_grant("p2", "g1")));
        assert!(!f.keeps(&group_grant("p2", "g2")));
        assert!(!f.keeps(&user_grant("P1", "u1")));
        assert_eq!(f.sources(&org()).len(), 2);
    }

    #[test]
    fn selectors_that_name_nothing_are_all_reported() {
        let err = Filter::new(
            &sel(&["dns-admn"], &["u1", "nobody@x.io"], &["Ops"]),
            &org(),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains("--policy \"dns-admn\""), "{text}");
        assert!(text.contains("--user \"nobody@x.io\""), "{text}");
        // Group names match exactly, as resolution does.
        assert!(text.contains("--group \"Ops\""), "{text}");
    }
}
