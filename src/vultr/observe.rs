//! A hook through which the operator's metrics see every Vultr request.

use std::time::Duration;

/// What one request did. Handed to [`RequestObserver::on_request`] after it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Route template, e.g. "GET /v2/policies/{policy_id}/users": a bounded label set.
    pub route: &'static str,
    /// HTTP status, `None` when no answer arrived.
    pub status: Option<u16>,
    /// From sending to the end of the body, excluding the limiter wait.
    pub latency: Duration,
    /// Time spent waiting for the rate limiter.
    pub limiter_wait: Duration,
    /// "ok" or the error's `VultrError::reason`.
    pub outcome: &'static str,
}

/// Receives a [`RequestRecord`] for every request the client sends. Must be cheap and
/// must not block: it runs inline.
pub trait RequestObserver: Send + Sync {
    fn on_request(&self, record: &RequestRecord);
}
