//! What can go wrong talking to Vultr, in terms a person and the reconciler can act on.

use std::time::Duration;

/// An error from the Vultr client. `Display` is meant for a person (condition messages,
/// Events); [`VultrError::reason`] is the stable machine-readable reason. No variant
/// ever carries the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VultrError {
    /// `reference` describes what was looked up, e.g. `name "dns-admin"`.
    #[error("no Vultr IAM policy with {reference} exists")]
    PolicyNotFound { reference: String },

    #[error("no Vultr user with {reference} exists")]
    UserNotFound { reference: String },

    #[error("no Vultr group with {reference} exists")]
    GroupNotFound { reference: String },

    #[error("no Vultr role with {reference} exists")]
    RoleNotFound { reference: String },

    /// Several objects match a name or email; `what` is e.g. "users".
    #[error(
        "{reference} matches {} Vultr {what} ({}); refer to exactly one by id instead",
        ids.len(),
        ids.join(", ")
    )]
    Ambiguous {
        what: &'static str,
        reference: String,
        ids: Vec<String>,
    },

    #[error(
        "Vultr rejected the API key (401 Unauthorized) on {route}; \
         check VULTR_API_KEY or the API key file"
    )]
    Unauthorized { route: &'static str },

    #[error(
        "the Vultr API key is not allowed to do this (403 Forbidden) on {route}; \
         it needs IAM permissions{}",
        detail_suffix(message.as_deref())
    )]
    Forbidden {
        route: &'static str,
        message: Option<String>,
    },

    #[error(
        "Vultr rate limit exceeded (429 Too Many Requests) on {route}; {}",
        retry_hint(*retry_after)
    )]
    RateLimited {
        route: &'static str,
        retry_after: Option<Duration>,
    },

    /// 5xx, timeouts, connection and body-read failures: worth retrying.
    #[error("Vultr API unavailable on {route}: {detail}")]
    ApiUnavailable {
        route: &'static str,
        /// HTTP status when the server answered at all.
        status: Option<u16>,
        detail: String,
        retry_after: Option<Duration>,
    },

    #[error("unexpected response from Vultr on {route}: {detail}")]
    InvalidResponse { route: &'static str, detail: String },

    /// A 404 on a raw call. Typed so that callers can treat it as success where it means
    /// "already gone" (detach).
    #[error("Vultr answered 404 Not Found on {route}{}", detail_suffix(message.as_deref()))]
    NotFound {
        route: &'static str,
        message: Option<String>,
    },

    /// Any other 4xx.
    #[error("Vultr rejected {route} ({status}){}", detail_suffix(message.as_deref()))]
    Rejected {
        route: &'static str,
        status: u16,
        message: Option<String>,
    },

    /// Not sent: this replica's leadership expired (its renew deadline passed) or was
    /// given up, and another replica may already be writing.
    #[error(
        "not sending {route}: this replica no longer holds the leader lease \
         (its renew deadline passed)"
    )]
    NotLeader { route: &'static str },
}

impl VultrError {
    /// Stable reason, used verbatim as Kubernetes condition and Event reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::PolicyNotFound { .. } => "PolicyNotFound",
            Self::UserNotFound { .. } => "UserNotFound",
            Self::GroupNotFound { .. } => "GroupNotFound",
            Self::RoleNotFound { .. } => "RoleNotFound",
            Self::Ambiguous { .. } => "Ambiguous",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::Forbidden { .. } => "Forbidden",
            Self::RateLimited { .. } => "RateLimited",
            Self::ApiUnavailable { .. } => "ApiUnavailable",
            Self::InvalidResponse { .. } => "InvalidResponse",
            Self::NotFound { .. } => "NotFound",
            Self::Rejected { .. } => "Rejected",
            Self::NotLeader { .. } => "NotLeader",
        }
    }

    /// True when the same call may succeed later without anyone changing anything.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::ApiUnavailable { .. })
    }

    /// How long Vultr asked us to wait, when it said so.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::ApiUnavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The HTTP status Vultr answered with, if this error comes from an answer.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::RateLimited { .. } => Some(429),
            Self::ApiUnavailable { status, .. } => *status,
            Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The route template of a failed request, if the error comes from one.
    pub(crate) fn route(&self) -> &'static str {
        match self {
            Self::Unauthorized { route }
            | Self::Forbidden { route, .. }
            | Self::RateLimited { route, .. }
            | Self::ApiUnavailable { route, .. }
            | Self::InvalidResponse { route, .. }
            | Self::NotFound { route, .. }
            | Self::Rejected { route, .. }
            | Self::NotLeader { route } => route,
            Self::PolicyNotFound { .. }
            | Self::UserNotFound { .. }
            | Self::GroupNotFound { .. }
            | Self::RoleNotFound { .. }
            | Self::Ambiguous { .. } => "",
        }
    }
}

fn detail_suffix(message: Option<&str>) -> String {
    message.map(|m| format!(": {m}")).unwrap_or_default()
}

fn retry_hint(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(
            "Vultr asked to retry after {}",
            humantime::format_duration(d)
        ),
        None => "no Retry-After given".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stable() {
        let cases = [
            (
                VultrError::PolicyNotFound {
                    reference: "x".into(),
                },
                "PolicyNotFound",
            ),
            (
                VultrError::UserNotFound {
                    reference: "x".into(),
                },
                "UserNotFound",
            ),
            (
                VultrError::GroupNotFound {
                    reference: "x".into(),
                },
                "GroupNotFound",
            ),
            (
                VultrError::RoleNotFound {
                    reference: "x".into(),
                },
                "RoleNotFound",
            ),
            (
                VultrError::Ambiguous {
                    what: "users",
                    reference: "x".into(),
                    ids: vec![],
                },
                "Ambiguous",
            ),
            (VultrError::Unauthorized { route: "r" }, "Unauthorized"),
            (
                VultrError::Forbidden {
                    route: "r",
                    message: None,
                },
                "Forbidden",
            ),
            (
                VultrError::RateLimited {
                    route: "r",
                    retry_after: None,
                },
                "RateLimited",
            ),
            (
                VultrError::ApiUnavailable {
                    route: "r",
                    status: None,
                    detail: "d".into(),
                    retry_after: None,
                },
                "ApiUnavailable",
            ),
            (
                VultrError::InvalidResponse {
                    route: "r",
                    detail: "d".into(),
                },
                "InvalidResponse",
            ),
            (
                VultrError::NotFound {
                    route: "r",
                    message: None,
                },
                "NotFound",
            ),
            (
                VultrError::Rejected {
                    route: "r",
                    status: 409,
                    message: None,
                },
                "Rejected",
            ),
            (VultrError::NotLeader { route: "r" }, "NotLeader"),
        ];
        for (err, reason) in cases {
            assert_eq!(err.reason(), reason);
            let transient = matches!(reason, "RateLimited" | "ApiUnavailable");
            assert_eq!(err.is_transient(), transient, "{reason}");
        }
    }

    #[test]
    fn messages_read_well() {
        let e = VultrError::Unauthorized {
            route: "GET /v2/policies",
        };
        assert_eq!(
            e.to_string(),
            "Vultr rejected the API key (401 Unauthorized) on GET /v2/policies; \
             check VULTR_API_KEY or the API key file"
        );
        let e = VultrError::RateLimited {
            route: "GET /v2/users",
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(e.to_string().ends_with("retry after 3s"), "{e}");
        let e = VultrError::Ambiguous {
            what: "users",
            reference: "email \"bob@example.com\"".into(),
            ids: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            "email \"bob@example.com\" matches 2 Vultr users (a, b); \
             refer to exactly one by id instead"
        );
        let e = VultrError::Rejected {
            route: "POST /v2/policies/{policy_id}/users/{user_id}",
            status: 422,
            message: Some("bad".into()),
        };
        assert_eq!(
            e.to_string(),
            "Vultr rejected POST /v2/policies/{policy_id}/users/{user_id} (422): bad"
        );
    }
}
