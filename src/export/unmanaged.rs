//! `--unmanaged`: the pairs PolicyAttachments in the cluster declare, so that an export
//! can leave them out. An object declares the pair recorded in its status (what its
//! deletion would revoke) and the pair its spec resolves to now; either keeps a grant
//! out of the export.

use std::collections::HashSet;

use crate::domain::{Grant, SubjectKind};

/// Declared pairs, compared case-insensitively (Vultr's IDs are UUIDs).
#[derive(Debug, Clone, Default)]
pub struct Declared(HashSet<(String, SubjectKind, String)>);

impl Declared {
    pub(crate) fn add(&mut self, grant: &Grant) {
        self.0.insert(key(grant));
    }

    pub(crate) fn declares(&self, grant: &Grant) -> bool {
        self.0.contains(&key(grant))
    }
}

/// Objects left out of the declared set, summed up in one note: a cluster shared with
/// other organisations can hold thousands, and a line each would bury the output.
#[derive(Debug, Clone, Default)]
pub struct Skipped {
    total: usize,
    examples: Vec<String>,
}

/// Examples a note names.
const EXAMPLES: usize = 3;

impl Skipped {
    pub(crate) fn add(&mut self, what: String) {
        self.total += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(what);
        }
    }

    /// `3 <headline> (a; b; c)`, with `and N more` past the examples; `None` if empty.
    pub(crate) fn note(&self, headline: &str) -> Option<String> {
        if self.total == 0 {
            return None;
        }
        let more = self.total - self.examples.len();
        let more = if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        };
        Some(format!(
            "{} {headline} ({}{more})",
            self.total,
            self.examples.join("; ")
        ))
    }
}

fn key(grant: &Grant) -> (String, SubjectKind, String) {
    (
        grant.policy_id.to_ascii_lowercase(),
        grant.subject.kind(),
        grant.subject.id().to_ascii_lowercase(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Subject;

    #[test]
    fn a_declared_pair_matches_whatever_the_case_and_only_its_kind() {
        let mut declared = Declared::default();
        declared.add(&Grant {
            policy_id: "ABC".into(),
            subject: Subject::User("U1".into()),
        });
        assert!(declared.declares(&Grant {
            policy_id: "abc".into(),
            subject: Subject::User("u1".into()),
        }));
        assert!(!declared.declares(&Grant {
            policy_id: "abc".into(),
            subject: Subject::Group("u1".into()),
        }));
        assert!(!declared.declares(&Grant {
            policy_id: "abd".into(),
            subject: Subject::User("u1".into()),
        }));
    }

    #[test]
    fn skipped_objects_make_one_short_note() {
        let mut skipped = Skipped::default();
        assert_eq!(skipped.note("x"), None);
        skipped.add("a/1: bad".into());
        assert_eq!(
            skipped.note("skipped").as_deref(),
            Some("1 skipped (a/1: bad)")
        );
        for i in 2..=10 {
            skipped.add(format!("a/{i}: bad"));
        }
        assert_eq!(
            skipped.note("skipped").as_deref(),
            Some("10 skipped (a/1: bad; a/2: bad; a/3: bad; and 7 more)")
        );
    }
}
