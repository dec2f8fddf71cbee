//! The grant boundary: which grants may be made through a Vultr key. An administrator
//! lists the policies (by ID or exact name) and the subject kinds that may be granted;
//! a grant outside is never sent (`Enforce`), and one made before the boundary narrowed
//! is revoked. `Audit` only reports grants outside, for rolling a boundary out safely.
//! Pure: the reconciler asks [`Boundary::check`] and acts on the answer.

use std::collections::BTreeSet;
use std::fmt;

use crate::domain::{Grant, SubjectKind};

/// What happens to a grant outside the boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Enforcement {
    /// Never sent; revoked if it was made before the boundary narrowed.
    #[default]
    Enforce,
    /// Made and kept, and reported (condition, Event, metric).
    Audit,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "Enforce",
            Self::Audit => "Audit",
        }
    }
}

/// The grants a key may make. No lists: every grant (the boundary of a key without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boundary {
    /// Policy IDs (matched case-insensitively) or exact names; `None`: any policy.
    policies: Option<BTreeSet<String>>,
    /// `None`: any kind.
    subject_kinds: Option<BTreeSet<SubjectKind>>,
    pub enforcement: Enforcement,
}

/// Why a grant is outside the boundary: the rule it breaks, for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outside(pub String);

impl fmt::Display for Outside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Boundary {
    /// A boundary from the listed policies and subject kinds (an empty list: any).
    pub fn new(
        policies: &[String],
        subject_kinds: &[SubjectKind],
        enforcement: Enforcement,
    ) -> Self {
        Self {
            policies: non_empty(
                policies
                    .iter()
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect(),
            ),
            subject_kinds: non_empty(subject_kinds.iter().copied().collect()),
            enforcement,
        }
    }

    /// Whether the boundary restricts anything at all.
    pub fn is_open(&self) -> bool {
        self.policies.is_none() && self.subject_kinds.is_none()
    }

    /// Whether `grant` (whose policy people call `policy_name`, when known) may be made.
    pub fn check(&self, grant: &Grant, policy_name: Option<&str>) -> Result<(), Outside> {
        let kind = grant.subject.kind();
        if let Some(kinds) = &self.subject_kinds
            && !kinds.contains(&kind)
        {
            return Err(Outside(format!(
                "the grant boundary allows subjects of kind {} only, not {kind}",
                join(kinds.iter().map(|k| k.as_str().to_owned())),
            )));
        }
        if let Some(policies) = &self.policies {
            let listed = policies.iter().any(|p| {
                p.eq_ignore_ascii_case(&grant.policy_id) || policy_name.is_some_and(|n| n == p)
            });
            if !listed {
                let shown = match policy_name {
                    Some(name) => format!("{name} ({})", grant.policy_id),
                    None => grant.policy_id.clone(),
                };
                return Err(Outside(format!(
                    "the grant boundary allows the policies {} only, not {shown}",
                    join(policies.iter().cloned()),
                )));
            }
        }
        Ok(())
    }
}

fn non_empty<T>(items: BTreeSet<T>) -> Option<BTreeSet<T>> {
    (!items.is_empty()).then_some(items)
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Subject;

    const DNS: &str = "62948e0d-b09d-4d08-9554-3985b635cb17";

    fn grant(subject: Subject) -> Grant {
        Grant {
            policy_id: DNS.into(),
            subject,
        }
    }

    fn user() -> Grant {
        grant(Subject::User("u".into()))
    }

    #[test]
    fn an_open_boundary_allows_every_grant() {
        let open = Boundary::default();
        assert!(open.is_open());
        assert_eq!(open.check(&grant(Subject::Role("r".into())), None), Ok(()));
    }

    #[test]
    fn policies_match_by_id_in_any_case_or_by_exact_name() {
        let by_id = Boundary::new(&[DNS.to_uppercase()], &[], Enforcement::Enforce);
        assert_eq!(by_id.check(&user(), None), Ok(()));
        let by_name = Boundary::new(&["dns-admin".into()], &[], Enforcement::Enforce);
        assert_eq!(by_name.check(&user(), Some("dns-admin")), Ok(()));
        let outside = by_name
            .check(&user(), Some("DNS-admin"))
            .expect_err("outside");
        assert_eq!(
            outside.0,
            format!("the grant boundary allows the policies dns-admin only, not DNS-admin ({DNS})")
        );
        assert!(
            by_name.check(&user(), None).is_err(),
            "no name: by ID alone"
        );
    }

    #[test]
    fn subject_kinds_are_checked_first_and_named() {
        let users = Boundary::new(
            &["dns-admin".into()],
            &[SubjectKind::User],
            Enforcement::Audit,
        );
        assert_eq!(users.check(&user(), Some("dns-admin")), Ok(()));
        let outside = users
            .check(&grant(Subject::Group("g".into())), Some("dns-admin"))
            .expect_err("a group");
        assert_eq!(
            outside.0,
            "the grant boundary allows subjects of kind User only, not Group"
        );
        assert_eq!(users.enforcement, Enforcement::Audit);
    }

    #[test]
    fn blank_entries_do_not_narrow_anything() {
        assert!(Boundary::new(&[" ".into()], &[], Enforcement::Enforce).is_open());
    }
}
