//! Idempotent attach and revoke on top of the raw endpoints, absorbing Vultr's
//! undocumented answers to "already attached" and "not attached".

use super::client::VultrClient;
use super::error::VultrError;
use super::model::{AttachOutcome, RevokeOutcome, Subject};

impl VultrClient {
    /// Attaches `policy_id` to `subject`, for a caller whose listing did not show the
    /// pair. What Vultr answers to an existing pair is undocumented (400, 409 and 422 are
    /// all plausible, e.g. after a concurrent or out-of-band attach): on such a
    /// rejection the listing decides.
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
                    Err(err)
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Detaches `policy_id` from `subject` for a deletion. A 404 means the grant, the
    /// policy or the subject is gone: nothing is left to revoke (product contract).
    pub async fn revoke(
        &self,
        policy_id: &str,
        subject: &Subject,
    ) -> Result<RevokeOutcome, VultrError> {
        match self.detach(policy_id, subject).await {
            Ok(()) => Ok(RevokeOutcome::Revoked),
            Err(VultrError::NotFound { .. }) => Ok(RevokeOutcome::AlreadyAbsent),
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
