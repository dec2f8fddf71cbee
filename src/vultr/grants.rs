//! Idempotent attach and revoke on top of the raw endpoints, absorbing Vultr's
//! undocumented answers to "already attached" and "not attached".

use super::client::VultrClient;
use super::error::VultrError;
use super::model::{AttachOutcome, RevokeOutcome, Subject};

impl VultrClient {
    /// Makes sure `policy_id` is attached to `subject`: lists first and POSTs only when
    /// the listing does not show it.
    pub async fn ensure_attached(
        &self,
        policy_id: &str,
        subject: &Subject,
    ) -> Result<AttachOutcome, VultrError> {
        if self.is_attached(policy_id, subject).await? {
            return Ok(AttachOutcome::AlreadyAttached);
        }
        match self.attach(policy_id, subject).await {
            Ok(()) => Ok(AttachOutcome::Attached),
            // What Vultr answers to a duplicate attach is undocumented (400, 409 and
            // 422 are all plausible), e.g. after a concurrent attach: ask the listing.
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
    pub async fn is_attached(
        &self,
        policy_id: &str,
        subject: &Subject,
    ) -> Result<bool, VultrError> {
        Ok(self
            .attached_ids(policy_id, subject.kind())
            .await?
            .contains(subject.id()))
    }
}
