//! `/metrics`, `/healthz` and `/readyz` on one listener.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::watch_cache::Stores;

/// What `/readyz` reports: the Vultr credentials are loaded and Kubernetes is usable:
/// the watch caches are synced or, on a standby replica (whose readiness must not
/// depend on who holds the lease), the API server answered and the Lease can be read.
#[derive(Default)]
pub struct Health {
    pub kubernetes_ready: AtomicBool,
    pub credentials_loaded: AtomicBool,
    /// Why the last look at the leader Lease failed, while it keeps failing.
    lease_problem: Mutex<Option<String>>,
}

impl Health {
    /// Records (or, with `None`, clears) a failure to read or take the leader Lease.
    pub fn set_lease_problem(&self, problem: Option<String>) {
        *self.lease_problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// What keeps this replica from being ready; empty when ready.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.credentials_loaded.load(Ordering::Relaxed) {
            problems.push("Vultr credentials not loaded".to_owned());
        }
        if !self.kubernetes_ready.load(Ordering::Relaxed) {
            problems.push(
                "Kubernetes not ready (API server not answering, or watch caches not synced)"
                    .to_owned(),
            );
        }
        if let Some(lease) = self
            .lease_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            problems.push(format!("leader election: {lease}"));
        }
        problems
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Arc<Health>,
    stores: Stores,
}

pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Arc<Health>,
    stores: Stores,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics,
            health,
            stores,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let problems = state.health.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", problems.join("; ")),
        )
    }
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    let objects: Vec<_> = state
        .stores
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flat_map(|s| s.state())
        .collect();
    state.metrics.observe_objects(&objects, SystemTime::now());
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_problem_makes_the_replica_unready_until_cleared() {
        let health = Health::default();
        health.credentials_loaded.store(true, Ordering::Relaxed);
        health.kubernetes_ready.store(true, Ordering::Relaxed);
        assert!(health.problems().is_empty());
        health.set_lease_problem(Some("cannot read or take the Lease ns/l: 403".into()));
        assert!(!health.problems().is_empty());
        assert_eq!(
            health.problems(),
            ["leader election: cannot read or take the Lease ns/l: 403"]
        );
        health.set_lease_problem(None);
        assert!(health.problems().is_empty());
    }
}
