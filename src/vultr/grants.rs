//! Idempotent attach and revoke on top of the raw endpoints, absorbing Vultr's
//! undocumented answers to "already attached" and "not attached".

use super::client::VultrClient;
use super::error::VultrError;
use super::model::{AttachOutcome, Policy, RevokeOutcome, Role};
use crate::domain::{Grant, ListingSource};

impl VultrClient {
    /// Attaches `grant`, for a caller whose listing did not show the
    /// pair. What Vultr answers to an existing pair is undocumented (400, 409 and 422 are
    /// all plausible, e.g. after a concurrent or out-of-band attach, or a POST of ours
    /// from before a restart that the listing does not show yet): on such a rejection
    /// the listing decides, and a pair it does not show yet is `Unconfirmed`, for the
    /// caller to wait on like a fresh attach, never a terminal error at once.
    pub(crate) async fn attach_confirmed(
        &self,
        grant: &Grant,
    ) -> Result<AttachOutcome, VultrError> {
        match self.attach(grant).await {
            Ok(()) => Ok(AttachOutcome::Attached),
            Err(err @ VultrError::Rejected { .. }) => {
                if self.is_attached(grant).await? {
                    tracing::debug!(
                        subject = %grant.subject,
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

    /// Revokes `grant` for a deletion. A 404 means "nothing left to
    /// revoke" (product contract) only once Vultr agrees in a second way: a successful
    /// listing of the pair (the policy's users or groups, the role's policies) without
    /// it, or, when the listing's owner (the policy; the role) is unknown, a successful
    /// listing of those owners without it. A misrouted base URL or a proxy answering
    /// 404 to everything must never count as a revocation.
    pub(crate) async fn revoke(&self, grant: &Grant) -> Result<RevokeOutcome, VultrError> {
        match self.detach(grant).await {
            Ok(()) => Ok(RevokeOutcome::Revoked),
            Err(not_found @ VultrError::NotFound { .. }) => {
                let (source, member) = grant.listing();
                let still_listed = match self.listed_ids(&source).await {
                    Ok(ids) => ids.contains(member),
                    Err(VultrError::NotFound { .. }) => self.owner_exists(&source).await?,
                    Err(err) => return Err(err),
                };
                if still_listed {
                    // Transient on purpose: keep the finalizer and retry with backoff.
                    return Err(VultrError::ApiUnavailable {
                        route: not_found.route(),
                        status: Some(404),
                        detail: format!(
                            "Vultr answered 404 to the detach of {grant} but still lists \
                             it ({source}); not counted as revoked"
                        ),
                        retry_after: None,
                    });
                }
                Ok(RevokeOutcome::AlreadyAbsent)
            }
            Err(err) => Err(err),
        }
    }

    /// Whether the pair's listing shows it as directly attached.
    async fn is_attached(&self, grant: &Grant) -> Result<bool, VultrError> {
        let (source, member) = grant.listing();
        Ok(self.listed_ids(&source).await?.contains(member))
    }

    /// Whether the object whose listing answered 404 (a policy, a role) still exists,
    /// from a successful listing of all of them.
    async fn owner_exists(&self, source: &ListingSource) -> Result<bool, VultrError> {
        let owner = source.owner_id();
        Ok(match source {
            ListingSource::PolicyUsers(_) | ListingSource::PolicyGroups(_) => {
                self.list::<Policy>().await?.iter().any(|p| p.id == owner)
            }
            ListingSource::RolePolicies(_) => {
                self.list::<Role>().await?.iter().any(|r| r.id == owner)
            }
        })
    }
}
