//! Client of the Vultr IAM API: typed errors with stable reasons, a process-wide rate
//! limiter, cursor pagination, both shapes of every attachment listing (per policy for
//! users and groups, per role for roles), name/email resolution.

mod api_key;
mod attachments;
mod client;
mod config;
mod directory;
mod endpoints;
mod error;
mod fence;
mod grants;
mod key_rotation;
mod limiter;
mod model;
mod observe;
mod pagination;
pub(crate) mod resolve;
mod response;

#[cfg(test)]
mod arbitrary;
#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod http_tests;
#[cfg(test)]
pub(crate) use model::fixture;

pub(crate) use api_key::{ApiKey, ApiKeyError};
pub(crate) use client::VultrClient;
pub(crate) use config::{ClientConfig, ConfigError, DEFAULT_BASE_URL};
pub(crate) use directory::Resolution;
pub(crate) use directory::{DIRECTORY_MAX_AGE_LIMIT, Directory};
pub use endpoints::routes;
pub(crate) use error::VultrError;
pub(crate) use fence::WriteFence;
pub(crate) use key_rotation::follow_key_file;
pub(crate) use limiter::{InvalidRateLimit, RateLimiter};
pub(crate) use model::{AttachOutcome, Group, Policy, RevokeOutcome, Role, User};
pub use observe::{RequestObserver, RequestRecord};
pub use pagination::PER_PAGE;
pub(crate) use resolve::Named;
