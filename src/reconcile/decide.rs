//! The reconciler's decisions, as pure functions of what it observed: the object, the
//! listing, and what this process did. The I/O around them lives in `attach.rs` and
//! `revoke.rs`; these are unit-tested without a cluster or Vultr.

use std::time::Duration;

use crate::crd::{DeletionPolicy, PolicyAttachment};
use crate::domain::Grant;

/// What a live object does next once its pair is known and the listing was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachStep {
    /// The listing shows the grant: Ready.
    Verified,
    /// Our attach is not listed yet; Vultr's listings lag behind writes: look again
    /// soon, without sending it a second time.
    AwaitVisibility,
    /// Not listed and no attach of ours is pending: attach. `drift` when the grant had
    /// been verified before (removed out of band).
    Attach { drift: bool },
}

/// `sent_ago`: how long ago this process sent the attach that the listing does not
/// show yet (None: none pending). `verified_before`: the grant was seen live earlier.
pub fn attach_step(
    listed: bool,
    sent_ago: Option<Duration>,
    visibility_timeout: Duration,
    verified_before: bool,
) -> AttachStep {
    if listed {
        return AttachStep::Verified;
    }
    match sent_ago {
        Some(ago) if ago < visibility_timeout => AttachStep::AwaitVisibility,
        _ => AttachStep::Attach {
            drift: verified_before,
        },
    }
}

/// What the cleanup of a deleted object does first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupStep {
    /// `deletionPolicy: Orphan`: leave the grant, let the object go.
    Orphan,
    /// This process already handled its deletion; the reconcile came from a stale cache
    /// entry.
    AlreadyRevoked,
    /// No pair in the snapshot nor in memory. The snapshot may be stale (a pair
    /// recorded by a racing Apply, or by the previous leader): read the object live
    /// before deciding that nothing was ever attached.
    ReadLive,
    /// Revoke this pair unless another object still declares it.
    Revoke(Grant),
}

/// `known_pair`: the pair from the snapshot, else from this process's memory.
pub fn cleanup_step(
    deletion_policy: DeletionPolicy,
    revoked_here: bool,
    known_pair: Option<Grant>,
) -> CleanupStep {
    if deletion_policy == DeletionPolicy::Orphan {
        return CleanupStep::Orphan;
    }
    if revoked_here {
        return CleanupStep::AlreadyRevoked;
    }
    match known_pair {
        Some(grant) => CleanupStep::Revoke(grant),
        None => CleanupStep::ReadLive,
    }
}

/// Whether `other`, as read live, still declares `grant` for itself (another object,
/// not being deleted, with that pair recorded).
pub fn declares(other: &PolicyAttachment, own_uid: &str, grant: &Grant) -> bool {
    other.metadata.uid.as_deref() != Some(own_uid)
        && other.metadata.deletion_timestamp.is_none()
        && other.recorded_grant().as_ref() == Some(grant)
}

/// What reading one holder candidate showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// Read live: it declares the pair.
    Holds(String),
    /// Read live: gone, being deleted, or another pair.
    DoesNotHold,
    /// Could not be read (e.g. 403 in a namespace whose RoleBinding is gone): its name
    /// and why.
    Unreadable(String, String),
}

/// Whether a shared grant stays, given every candidate read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holders {
    /// Kept: this object still declares it.
    Kept(String),
    /// Nobody confirmed: revoke. Candidates that could not be read are named, because a
    /// live one re-attaches at its next verification and the user should know why.
    Revoke { unconfirmed: Vec<String> },
}

/// A confirmed holder keeps the grant; an unconfirmed one never does (a deletion must
/// not wait on a scope it cannot read).
pub fn holders(candidates: Vec<Candidate>) -> Holders {
    let mut unconfirmed = Vec::new();
    for candidate in candidates {
        match candidate {
            Candidate::Holds(name) => return Holders::Kept(name),
            Candidate::DoesNotHold => {}
            Candidate::Unreadable(name, why) => unconfirmed.push(format!("{name} ({why})")),
        }
    }
    Holders::Revoke { unconfirmed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PolicyAttachmentStatus;
    use crate::domain::{Subject, SubjectKind};

    const S: Duration = Duration::from_secs(1);

    fn grant() -> Grant {
        Grant {
            policy_id: "p".into(),
            subject: Subject::User("u".into()),
        }
    }

    #[test]
    fn attach_waits_for_a_lagging_listing_then_retries() {
        assert_eq!(
            attach_step(true, Some(S), 30 * S, false),
            AttachStep::Verified
        );
        assert_eq!(
            attach_step(false, Some(S), 30 * S, false),
            AttachStep::AwaitVisibility
        );
        assert_eq!(
            attach_step(false, Some(31 * S), 30 * S, false),
            AttachStep::Attach { drift: false }
        );
        assert_eq!(
            attach_step(false, None, 30 * S, true),
            AttachStep::Attach { drift: true }
        );
    }

    #[test]
    fn cleanup_never_trusts_a_snapshot_without_a_pair() {
        assert_eq!(
            cleanup_step(DeletionPolicy::Orphan, false, Some(grant())),
            CleanupStep::Orphan
        );
        assert_eq!(
            cleanup_step(DeletionPolicy::Delete, true, Some(grant())),
            CleanupStep::AlreadyRevoked
        );
        assert_eq!(
            cleanup_step(DeletionPolicy::Delete, false, None),
            CleanupStep::ReadLive
        );
        assert_eq!(
            cleanup_step(DeletionPolicy::Delete, false, Some(grant())),
            CleanupStep::Revoke(grant())
        );
    }

    #[test]
    fn an_unreadable_holder_never_keeps_a_grant() {
        assert_eq!(
            holders(vec![
                Candidate::Unreadable("ns/a".into(), "Forbidden".into()),
                Candidate::DoesNotHold,
            ]),
            Holders::Revoke {
                unconfirmed: vec!["ns/a (Forbidden)".into()]
            }
        );
        assert_eq!(
            holders(vec![
                Candidate::Unreadable("ns/a".into(), "Forbidden".into()),
                Candidate::Holds("ns/b".into()),
            ]),
            Holders::Kept("ns/b".into())
        );
        assert_eq!(
            holders(vec![]),
            Holders::Revoke {
                unconfirmed: vec![]
            }
        );
    }

    #[test]
    fn only_another_live_object_with_the_pair_declares_it() {
        let mut other: PolicyAttachment = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.vultr-operator.io/v1alpha1",
            "kind": "PolicyAttachment",
            "metadata": {"name": "b", "namespace": "ns", "uid": "uid-b"},
            "spec": {"policy": {"id": "p"}, "user": {"id": "u"}},
        }))
        .unwrap();
        assert!(!declares(&other, "uid-a", &grant()), "no pair recorded yet");
        let mut status = PolicyAttachmentStatus::default();
        status.record(&grant());
        other.status = Some(status);
        assert!(declares(&other, "uid-a", &grant()));
        assert!(!declares(&other, "uid-b", &grant()), "not itself");
        let moved = Grant {
            subject: Subject::new(SubjectKind::Group, "u"),
            ..grant()
        };
        assert!(!declares(&other, "uid-a", &moved));
        // A role with the same ID is another pair too.
        let role = Grant {
            subject: Subject::new(SubjectKind::Role, "u"),
            ..grant()
        };
        assert!(!declares(&other, "uid-a", &role));
        other.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(!declares(&other, "uid-a", &grant()), "being deleted");
    }
}
