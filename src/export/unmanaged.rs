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
    pub fn add(&mut self, grant: &Grant) {
        self.0.insert(key(grant));
    }

    pub fn declares(&self, grant: &Grant) -> bool {
        self.0.contains(&key(grant))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
        assert_eq!(declared.len(), 1);
    }
}
