//! `/metrics`, `/healthz` and `/readyz` on one listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::crd::PolicyAttachment;
use crate::metrics::Metrics;

/// What `/readyz` reports: the Vultr credentials are loaded and Kubernetes is usable:
/// the watch caches are synced or, on a standby replica (whose readiness must not
/// depend on the lease), the API server answered.
#[derive(Default)]
pub struct Health {
    pub kubernetes_ready: AtomicBool,
    pub credentials_loaded: AtomicBool,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.kubernetes_ready.load(Ordering::Relaxed)
            && self.credentials_loaded.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Arc<Health>,
    stores: Stores,
}

/// Shared list of watch caches, filled once the controllers start.
pub type Stores = Arc<std::sync::Mutex<Vec<Store<PolicyAttachment>>>>;

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
    if state.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
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
