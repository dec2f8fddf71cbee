//! Idempotent attach and revoke on top of the raw endpoints, absorbing Vultr's
//! undocumented answers to "already attached" and "not attached".

use super::client::VultrClient;
use super::error::VultrError;
use super::model::{AttachOutcome, RevokeOutcome};
use crate::domain::Subject;

impl VultrClient {
    /// Attaches `policy_id` to `subject`, for a caller whose listing did not show the
    /// pair. What Vultr answers to an existing pair is undocumented (400, 409 and 422 are
    /// all plausible, e.g. after a concurrent or out-of-band attach, or a POST of ours
    /// from before a restart that the listing does not show yet): on such a rejection
    /// the listing decides, and a pair it does not show yet is `Unconfirmed`, for the
    /// caller to wait on like a fresh attach, never a terminal error at once.
    pub async fn attach_confirmed(
        &self,
        policy_id: &str,
        subject: &Subject,
    ) -> Result<AttachOutcome, VultrError> {
        match self.attach(policy_id, subject).await {
            Ok(()) => Ok(AttachOutcome::Attached),
            Err(err @ VultrError::Rejected { .. }) => {
                if self.is_attached(policy_id, subject).await? {
                    tracing::debug!(
                        %subject,
                        status = err.status(),
                        "attach was rejected but the listing shows the grant"
                    );
                    Ok(AttachOutcome::AlreadyAttached)
                } else {
                    Ok(AttachOutcome::Unconfirmed(err))
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Detaches `policy_id` from `subject` for a deletion. A 404 means "nothing left to
    /// revoke" (product contract) only once Vultr agrees in a second way: a successful
    /// listing of the policy without the subject, or, when the policy itself is
    /// unknown, a successful policy listing without it. A misrouted base URL or a proxy
    /// answering 404 to everything must never count as a revocation.
    pub async fn revoke(
        &self,
        policy_id: &str,
        subject: &Subject,
    ) -> Result<RevokeOutcome, VultrError> {
        match self.detach(policy_id, subject).await {
            Ok(()) => Ok(RevokeOutcome::Revoked),
            Err(not_found @ VultrError::NotFound { .. }) => {
                let still_listed = match self.attached_ids(policy_id, subject.kind()).await {
                    Ok(ids) => ids.contains(subject.id()),
                    Err(VultrError::NotFound { .. }) => self
                        .list_policies()
                        .await?
                        .iter()
                        .any(|p| p.id == policy_id),
                    Err(err) => return Err(err),
                };
                if still_listed {
                    // Transient on purpose: keep the finalizer and retry with backoff.
                    return Err(VultrError::ApiUnavailable {
                        route: not_found.route(),
                        status: Some(404),
                        detail: format!(
                            "Vultr answered 404 to the detach of {subject} but still lists \
                             it on policy {policy_id}; not counted as revoked"
                        ),
                        retry_after: None,
                    });
                }
                Ok(RevokeOutcome::AlreadyAbsent)
            }
            Err(err) => Err(err),
        }
    }

    /// Whether the policy's listing shows `subject` as directly attached.
    async fn is_attached(&self, policy_id: &str, subject: &Subject) -> Result<bool, VultrError> {
        Ok(self
            .attached_ids(policy_id, subject.kind())
            .await?
            .contains(subject.id()))
    }
}
