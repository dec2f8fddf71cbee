//! The reconciler's errors. Each variant has a stable reason that becomes the `Ready`
//! condition reason and the Event reason.

use std::time::Duration;

use kube::runtime::finalizer;

use crate::crd::InvalidSpec;
use crate::vultr::VultrError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Vultr(#[from] VultrError),

    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    /// Only reachable if the CRD's admission rules were bypassed (e.g. an old CRD).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// The grant is outside the key's grant boundary: never sent.
    #[error("not permitted: {0}")]
    NotPermitted(crate::boundary::Outside),

    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl From<InvalidSpec> for Error {
    fn from(err: InvalidSpec) -> Self {
        Self::InvalidSpec(err.0)
    }
}

impl From<finalizer::Error<Error>> for Error {
    fn from(err: finalizer::Error<Error>) -> Self {
        Self::Finalizer(Box::new(err))
    }
}

impl Error {
    /// Stable, machine-readable reason (condition reason, Event reason, metric label).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Vultr(e) => e.reason(),
            Self::Kube(_) => "KubernetesApiError",
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::NotPermitted(_) => "NotPermitted",
            Self::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => {
                    "KubernetesApiError"
                }
                finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => {
                    "InvalidObject"
                }
            },
        }
    }

    /// True when the failure says nothing about the grant itself (Vultr or Kubernetes
    /// unreachable, throttled, or answering garbage): `Ready` keeps what the last
    /// verification saw, and only `Synced` reports the failure.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Vultr(e) => {
                e.is_transient()
                    || matches!(
                        e,
                        VultrError::InvalidResponse { .. } | VultrError::NotLeader { .. }
                    )
            }
            Self::Kube(_) => true,
            Self::InvalidSpec(_) | Self::NotPermitted(_) => false,
            Self::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.is_transient()
                }
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => true,
                finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => false,
            },
        }
    }

    /// How long Vultr asked us to wait before the next attempt, if it said so.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Vultr(e) => e.retry_after(),
            Self::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.retry_after()
                }
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_errors_keep_the_inner_reason() {
        let inner = Error::Vultr(VultrError::RateLimited {
            route: "DELETE /v2/policies/{policy_id}/users/{user_id}",
            retry_after: Some(Duration::from_secs(7)),
        });
        let err = Error::from(finalizer::Error::CleanupFailed(inner));
        assert_eq!(err.reason(), "RateLimited");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert!(err.is_transient());
        let terminal = Error::from(finalizer::Error::ApplyFailed(Error::Vultr(
            VultrError::PolicyNotFound {
                reference: "name \"x\"".into(),
            },
        )));
        assert!(!terminal.is_transient());
        assert_eq!(
            Error::from(finalizer::Error::<Error>::UnnamedObject).reason(),
            "InvalidObject"
        );
    }
}
