//! Everything people read about a PolicyAttachment, in one place: the reasons of its
//! conditions and Events (errors bring theirs: `Error::reason`), the actions of its
//! Events, and the words of its messages. A grant is named by the policy
//! and the subject as people know them (a policy's name, a user's email, a group's name)
//! first, the IDs after, e.g. `policy dns-admin on user alice@example.com (policy 6294...,
//! user 8aff...)`. Logs keep the IDs alone (`Grant`'s `Display`).

/// Condition and Event reasons the reconciler sets itself.
pub mod reason {
    pub const ATTACHING: &str = "Attaching";
    pub const ATTACHED: &str = "Attached";
    pub const DETACHING: &str = "Detaching";
    pub const REVOKED: &str = "Revoked";
    pub const ORPHANED: &str = "Orphaned";
    pub const DRIFT_REPAIRED: &str = "DriftRepaired";
    /// Another object still declares the pair: the grant stays.
    pub const GRANT_SHARED: &str = "GrantShared";
    /// A possible holder of the pair could not be read: it does not keep the grant.
    pub const HOLDER_UNCONFIRMED: &str = "HolderUnconfirmed";
    /// `Synced` (and `Ready` before the first attach) of a paused object; its Events.
    pub const PAUSED: &str = "Paused";
    pub const RESUMED: &str = "Resumed";
    pub const INVALID_PAUSE_ANNOTATION: &str = "InvalidPauseAnnotation";
    pub const RECONCILE_SUCCESS: &str = "ReconcileSuccess";
    /// The grant is outside the key's grant boundary (also `Error::NotPermitted`).
    pub const NOT_PERMITTED: &str = "NotPermitted";
    pub const PERMITTED: &str = "Permitted";
}

/// The actions of Events.
pub mod action {
    pub const ATTACH: &str = "Attach";
    pub const REVOKE: &str = "Revoke";
    pub const PAUSE: &str = "Pause";
}

/// `Ready=False Attaching` before the pair is resolved.
pub const RESOLVING: &str = "resolving the policy and subject in Vultr";

/// The Event of an `Orphan` deletion whose pair was never recorded.
pub const NOTHING_REVOKED: &str = "deletionPolicy is Orphan: nothing was revoked";

/// The Warning about a pause annotation that is neither "true" nor "false".
pub fn unrecognised_pause(value: &str) -> String {
    format!(
        "the annotation {PAUSED_ANNOTATION} is {value:?}: only \"true\" pauses, so this \
         object is not paused"
    )
}

/// `Permitted=True`.
pub const INSIDE_BOUNDARY: &str = "the grant is inside the grant boundary";

/// `Synced=True`.
pub const RECONCILE_SUCCEEDED: &str = "the last reconcile succeeded";

use crate::crd::{PAUSED_ANNOTATION, PolicyAttachmentSpec, PolicyAttachmentStatus};
use crate::domain::{Grant, SubjectKind};

/// A pair as people know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// `policy dns-admin`, or `policy <id>` when no name is known.
    policy: String,
    /// `user alice@example.com`, or `user <id>`.
    subject: String,
    /// ` (policy <id>, user <id>)` when a name was shown, else empty (no ID twice).
    ids: String,
}

/// The subject kind as a noun in a sentence ("user", "group"): generic over kinds.
fn noun(kind: SubjectKind) -> String {
    kind.as_str().to_ascii_lowercase()
}

/// A name worth showing: known, and not just the ID again.
fn known<'a>(name: Option<&'a str>, id: &str) -> Option<&'a str> {
    name.map(str::trim)
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(id))
}

impl Named {
    /// A resolved pair with the names known for its two sides (if any).
    pub fn new(grant: &Grant, policy_name: Option<&str>, subject_name: Option<&str>) -> Self {
        let kind = noun(grant.subject.kind());
        let subject_id = grant.subject.id();
        let policy_name = known(policy_name, &grant.policy_id);
        let subject_name = known(subject_name, subject_id);
        let ids = if policy_name.is_some() || subject_name.is_some() {
            format!(" (policy {}, {kind} {subject_id})", grant.policy_id)
        } else {
            String::new()
        };
        Self {
            policy: format!("policy {}", policy_name.unwrap_or(&grant.policy_id)),
            subject: format!("{kind} {}", subject_name.unwrap_or(subject_id)),
            ids,
        }
    }

    /// The pair recorded in `status`, named as `status` shows it.
    pub fn recorded(status: &PolicyAttachmentStatus) -> Option<Self> {
        let grant = status.grant()?;
        Some(Self::new(
            &grant,
            status.policy.as_deref(),
            status.subject.as_deref(),
        ))
    }

    /// The recorded pair if there is one, else the pair as the spec declares it (before
    /// resolution no ID is known).
    pub fn of(status: &PolicyAttachmentStatus, spec: &PolicyAttachmentSpec) -> Self {
        Self::recorded(status).unwrap_or_else(|| {
            let (kind, subject) = spec.subject_display();
            Self {
                policy: format!("policy {}", spec.policy_display()),
                subject: match kind {
                    Some(kind) => format!("{} {subject}", noun(kind)),
                    None => subject,
                },
                ids: String::new(),
            }
        })
    }

    /// `policy dns-admin <preposition> user alice@example.com (policy ..., user ...)`.
    fn joined(&self, preposition: &str) -> String {
        format!("{} {preposition} {}{}", self.policy, self.subject, self.ids)
    }

    /// `policy dns-admin on user alice@example.com (policy ..., user ...)`.
    pub fn on(&self) -> String {
        self.joined("on")
    }

    /// `Ready=True` message.
    pub fn verified(&self) -> String {
        format!("{} is attached and verified in Vultr", self.on())
    }

    /// `Attached` Event.
    pub fn attached_event(&self) -> String {
        format!("attached {} and verified it in Vultr", self.joined("to"))
    }

    /// Resolved, not attached yet (or not listed yet): `Ready=False Attaching`.
    pub fn attaching(&self) -> String {
        format!("attaching {}", self.joined("to"))
    }

    /// A repeated attach was rejected while the pair is not listed yet.
    pub fn attach_unconfirmed(&self, err: &impl std::fmt::Display) -> String {
        format!(
            "{err}; an earlier attach may not be listed yet: waiting for Vultr to list {}",
            self.on()
        )
    }

    /// `DriftRepaired` Event.
    pub fn drift_repaired(&self) -> String {
        format!(
            "{} was missing in Vultr (removed out of band); attached it again",
            self.on()
        )
    }

    /// A failure once the pair is known (e.g. a 404 because the policy or the user was
    /// deleted in Vultr after resolution): the error, about this pair.
    pub fn failed(&self, err: &impl std::fmt::Display) -> String {
        format!("{}: {err}", self.on())
    }

    /// `Orphaned` Event.
    pub fn orphaned(&self) -> String {
        format!("deletionPolicy is Orphan: left {} in Vultr", self.on())
    }

    /// `GrantShared` Event: another object still declares the pair.
    pub fn kept_shared(&self, holder: &str) -> String {
        format!(
            "kept {}: still declared by PolicyAttachment {holder}",
            self.on()
        )
    }

    /// `HolderUnconfirmed` Event.
    pub fn holders_unconfirmed(&self, unconfirmed: &[String]) -> String {
        format!(
            "revoking {}: could not confirm whether {} still declare it; a live one \
             attaches it again at its next verification",
            self.on(),
            unconfirmed.join(", ")
        )
    }

    /// `Ready=False Detaching` message.
    pub fn revoking(&self) -> String {
        format!("revoking {} in Vultr", self.on())
    }

    /// `Revoked` Event after a 204.
    pub fn revoked(&self) -> String {
        format!("revoked {} in Vultr", self.joined("from"))
    }

    /// `Revoked` Event after a confirmed 404.
    pub fn already_absent(&self) -> String {
        format!("{} was already absent in Vultr", self.on())
    }

    /// A revocation that failed and is retried.
    pub fn revocation_pending(&self, err: &impl std::fmt::Display) -> String {
        format!("revocation of {} pending, will retry: {err}", self.on())
    }

    /// `Synced=False Paused` message of a live object.
    /// The Warning of a grant revoked because it is outside the grant boundary.
    pub fn revoked_outside(&self, outside: &impl std::fmt::Display) -> String {
        format!("revoked {}: {outside}", self.joined("on"))
    }

    /// `Permitted=False` (and its Warning) under an `Audit` boundary.
    pub fn audited_outside(&self, outside: &impl std::fmt::Display) -> String {
        format!(
            "{outside}; the boundary is in Audit: {} is kept",
            self.joined("on")
        )
    }

    /// `Ready` of an object paused before its first attach.
    pub fn paused_before_attaching(&self) -> String {
        format!("paused before anything was attached: {}", self.paused())
    }

    pub fn paused(&self) -> String {
        format!(
            "paused by the annotation {PAUSED_ANNOTATION}: \"true\": no Vultr call for {} \
             (no attach, no drift repair, no revocation); Ready shows the last known state; \
             remove the annotation to resume",
            self.on()
        )
    }

    /// `Synced=False Paused` message of a deleted object whose revocation is held.
    pub fn deletion_held(&self) -> String {
        format!(
            "deletion held: the annotation {PAUSED_ANNOTATION}: \"true\" stops the revocation \
             of {}; remove the annotation to revoke, or set deletionPolicy: Orphan to leave \
             the grant",
            self.on()
        )
    }

    /// `Resumed` Event.
    pub fn resumed(&self) -> String {
        format!(
            "the annotation {PAUSED_ANNOTATION} no longer says \"true\": reconciling {} again",
            self.on()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Subject;

    const P: &str = "62948e0d-b09d-4d08-9554-3985b635cb17";
    const U: &str = "8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b";

    fn grant(subject: Subject) -> Grant {
        Grant {
            policy_id: P.into(),
            subject,
        }
    }

    #[test]
    fn names_first_ids_after() {
        let named = Named::new(
            &grant(Subject::User(U.into())),
            Some("dns-admin"),
            Some("alice@example.com"),
        );
        assert_eq!(
            named.attached_event(),
            format!(
                "attached policy dns-admin to user alice@example.com (policy {P}, user {U}) \
                 and verified it in Vultr"
            )
        );
        assert_eq!(
            named.revoked(),
            format!(
                "revoked policy dns-admin from user alice@example.com (policy {P}, user {U}) \
                 in Vultr"
            )
        );
        assert_eq!(
            named.kept_shared("ns/b"),
            format!(
                "kept policy dns-admin on user alice@example.com (policy {P}, user {U}): \
                 still declared by PolicyAttachment ns/b"
            )
        );
    }

    #[test]
    fn the_subject_kind_is_a_lower_case_noun() {
        let named = Named::new(
            &grant(Subject::Group("g1".into())),
            Some("dns-admin"),
            Some("ops"),
        );
        assert_eq!(
            named.on(),
            format!("policy dns-admin on group ops (policy {P}, group g1)")
        );
    }

    #[test]
    fn ids_are_not_repeated_when_no_name_is_known() {
        // Unknown, empty, or just the ID again (in another case): IDs only, once.
        for (policy, subject) in [
            (None, None),
            (Some(""), Some(" ")),
            (Some(P), Some(U.to_uppercase().as_str())),
        ] {
            let named = Named::new(&grant(Subject::User(U.into())), policy, subject);
            assert_eq!(named.on(), format!("policy {P} on user {U}"));
        }
        let one = Named::new(
            &grant(Subject::User(U.into())),
            None,
            Some("alice@example.com"),
        );
        assert_eq!(
            one.on(),
            format!("policy {P} on user alice@example.com (policy {P}, user {U})")
        );
    }

    #[test]
    fn status_names_the_recorded_pair_and_the_spec_the_declared_one() {
        let spec: PolicyAttachmentSpec = serde_json::from_value(serde_json::json!({
            "policy": {"name": "dns-admin"}, "user": {"email": "alice@example.com"}
        }))
        .unwrap();
        let mut status = PolicyAttachmentStatus::default();
        assert_eq!(
            Named::of(&status, &spec).on(),
            "policy dns-admin on user alice@example.com"
        );
        status.record(&grant(Subject::User(U.into())));
        status.policy = Some("dns-admin".into());
        status.subject = Some("alice@example.com".into());
        assert_eq!(
            Named::of(&status, &spec).on(),
            format!("policy dns-admin on user alice@example.com (policy {P}, user {U})")
        );
    }

    #[test]
    fn a_failure_is_about_the_named_pair() {
        let named = Named::new(
            &grant(Subject::User(U.into())),
            Some("dns-admin"),
            Some("alice@example.com"),
        );
        assert_eq!(
            named.failed(&"Vultr answered 404 Not Found"),
            format!(
                "policy dns-admin on user alice@example.com (policy {P}, user {U}): \
                 Vultr answered 404 Not Found"
            )
        );
    }

    #[test]
    fn pause_messages_say_how_to_go_on() {
        let named = Named::new(&grant(Subject::User(U.into())), Some("dns-admin"), None);
        let paused = named.paused();
        assert!(
            paused.contains("remove the annotation to resume"),
            "{paused}"
        );
        assert!(paused.contains(PAUSED_ANNOTATION), "{paused}");
        let held = named.deletion_held();
        assert!(held.starts_with("deletion held"), "{held}");
        assert!(
            held.contains("remove the annotation to revoke, or set deletionPolicy: Orphan"),
            "{held}"
        );
        assert!(held.contains("policy dns-admin on user"), "{held}");
    }
}
