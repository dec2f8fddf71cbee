//! [`GrantPort`] on the Vultr client: resolution against the directory, observation
//! through the shared listing cache, and writes that mark their pair in it.

use std::collections::HashSet;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tracing::warn;

use super::listings::{ListingCache, Verification, Write};
use super::{GrantPort, Observation, Resolution};
use crate::domain::{Grant, ListingSource, Refs};
use crate::vultr::{AttachOutcome, Directory, RevokeOutcome, VultrClient, VultrError};

/// One Vultr account as the reconciler uses it: its client, the directory names are
/// resolved against, and the listings grants are observed in.
pub struct Account {
    vultr: VultrClient,
    directory: Directory,
    listings: ListingCache,
}

impl Account {
    /// `listing_lag`: how long Vultr's listings may lag behind a write;
    /// `directory_max_age`: the oldest walk of the directory a name is resolved against.
    pub fn new(vultr: VultrClient, listing_lag: Duration, directory_max_age: Duration) -> Self {
        Self {
            directory: Directory::for_resolution(vultr.clone(), directory_max_age),
            listings: ListingCache::new(vultr.clone(), listing_lag),
            vultr,
        }
    }
}

impl GrantPort for Account {
    fn resolve<'a>(&'a self, refs: &'a Refs) -> BoxFuture<'a, Result<Resolution, VultrError>> {
        self.directory.resolve(refs).boxed()
    }

    fn observe<'a>(
        &'a self,
        grant: &'a Grant,
        max_age: Duration,
        batch: bool,
    ) -> BoxFuture<'a, Result<Observation, VultrError>> {
        async move {
            Ok(match self.listings.for_pair(grant, max_age, batch).await? {
                Verification::Listing(listing) => Observation::Listed {
                    present: listing.shows(grant),
                    fetched_at: listing.fetched_at,
                },
                Verification::Later(wait) => Observation::Later(wait),
            })
        }
        .boxed()
    }

    fn require_newer(&self, grant: &Grant) {
        self.listings.require_newer(grant);
    }

    fn attach<'a>(&'a self, grant: &'a Grant) -> BoxFuture<'a, Result<AttachOutcome, VultrError>> {
        async move {
            let result = self.vultr.attach_confirmed(grant).await;
            // Also after a failure: a POST that timed out may still have been applied.
            let applied = matches!(result, Ok(AttachOutcome::Attached));
            self.listings.note_write(grant, Write::Attach { applied });
            result
        }
        .boxed()
    }

    fn revoke<'a>(&'a self, grant: &'a Grant) -> BoxFuture<'a, Result<RevokeOutcome, VultrError>> {
        async move {
            let result = self.vultr.urgent().revoke(grant).await;
            // Also after a failure: a DELETE that timed out may still have been applied.
            self.listings.note_write(grant, Write::Detach);
            result
        }
        .boxed()
    }

    fn refresh<'a>(&'a self, sources: &'a HashSet<ListingSource>) -> BoxFuture<'a, usize> {
        async move {
            let mut fetched = 0;
            for source in sources {
                // Zero max age: a pass always asks Vultr, whatever a reconcile cached.
                match self.listings.get(source, Duration::ZERO, None).await {
                    Ok(_) => fetched += 1,
                    Err(err) => {
                        warn!(listing = %source, reason = err.reason(), error = %err, "verification listing failed")
                    }
                }
            }
            self.listings.retain(sources);
            fetched
        }
        .boxed()
    }
}
