//! The reconciler's port to Vultr, in the spirit of crossplane-runtime's
//! `ExternalClient`: resolve what a spec names, observe whether a grant is listed,
//! attach it, revoke it. The reconciler sees nothing else of Vultr.
//!
//! - [`Account`]: the implementation on the Vultr client, its directory (resolution)
//!   and its listing cache (observation).
//! - `InMemory` (unit tests only): a Vultr organisation in memory, with a journal of
//!   the calls it answered and faults to inject.

mod account;
pub mod listings;
#[cfg(test)]
pub(crate) mod memory;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::domain::Refs;
use crate::domain::{Grant, ListingSource};
use crate::vultr::{AttachOutcome, RevokeOutcome, VultrError};

pub(crate) use crate::vultr::Resolution;
pub use account::Account;

/// What observing a grant found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// A listing was read: whether it shows the grant, and when it was fetched.
    Listed {
        present: bool,
        fetched_at: SystemTime,
    },
    /// The listing would verify too few writes yet (attaches are still to come):
    /// observe again after this long.
    Later(Duration),
}

/// The reconciler's view of one Vultr account.
pub trait GrantPort: Send + Sync {
    /// The grant `refs` name: exact matches; "not found" and "ambiguous" are distinct
    /// errors.
    fn resolve<'a>(&'a self, refs: &'a Refs) -> BoxFuture<'a, Result<Resolution, VultrError>>;

    /// Whether `grant` is listed, from a listing younger than `max_age` that started
    /// after this process's last write to the grant. With `batch` (attaches are still
    /// to come) it may answer `Later` instead of fetching a listing for few writes.
    fn observe<'a>(
        &'a self,
        grant: &'a Grant,
        max_age: Duration,
        batch: bool,
    ) -> BoxFuture<'a, Result<Observation, VultrError>>;

    /// The last observation did not show `grant` although it was written (or the
    /// grant was paused): only a listing started from now on may observe it.
    fn require_newer(&self, grant: &Grant);

    /// Attaches `grant` (a POST), confirming an ambiguous rejection with a listing.
    fn attach<'a>(&'a self, grant: &'a Grant) -> BoxFuture<'a, Result<AttachOutcome, VultrError>>;

    /// Revokes `grant` (a DELETE), ahead of every attach waiting for the rate limit.
    fn revoke<'a>(&'a self, grant: &'a Grant) -> BoxFuture<'a, Result<RevokeOutcome, VultrError>>;

    /// Fetches every listing in `sources` anew (the drift pass) and forgets the ones
    /// not in it. Returns how many were fetched.
    fn refresh<'a>(&'a self, sources: &'a HashSet<ListingSource>) -> BoxFuture<'a, usize>;
}
