//! What happens to every `/v2` request before its handler: journaling, faults,
//! rate limiting and authentication, in that order (an outage answers before
//! anything else looks at the request). The key's organisation is looked up on
//! arrival, for the journal and for faults aimed at one organisation; authentication
//! looks it up again (a key may have been rotated out while a request was held) and
//! hands it to the handler as a [`Caller`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::faults::FaultKind;
use crate::journal::{JournalEntry, key_fingerprint};
use crate::server::ConnControl;
use crate::shared::{Access, Caller, Shared, lock};
use crate::timefmt::retry_after_secs;

fn is_v2(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

pub(crate) async fn v2_pipeline(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    if !is_v2(req.uri().path()) {
        return next.run(req).await;
    }
    let started = Instant::now();
    let org = bearer(&req)
        .and_then(|key| shared.caller(key))
        .map(|c| shared.orgs[c.org].name.clone());
    let entry = JournalEntry {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().unwrap_or_default().to_owned(),
        route: format!(
            "{} {}",
            req.method(),
            req.extensions()
                .get::<MatchedPath>()
                .map_or("(unmatched)", MatchedPath::as_str)
        ),
        status: 0,
        at: SystemTime::now(),
        latency_ms: 0.0,
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        key_fingerprint: bearer(&req).map(key_fingerprint).unwrap_or_default(),
        org: org.clone().unwrap_or_default(),
    };
    let record = |entry: JournalEntry, status: u16| record_entry(&shared, entry, status, started);

    let decision = lock(&shared.faults).decide(
        (&entry.method, &entry.path, org.as_deref()),
        started,
        rand::random::<f64>,
    );
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let response = match decision.terminal {
        Some(FaultKind::Status {
            status,
            retry_after,
        }) => ApiError::from_code(status)
            .with_retry_after(retry_after)
            .into_response(),
        Some(FaultKind::Hold { ms }) => {
            // A task of its own, not the connection's: a client that gives up (its
            // connection closes) does not stop the request from being applied.
            let held = shared.clone();
            let task = tokio::spawn(async move {
                let _counted = held.hold();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let response = admitted(&held, req, next).await;
                record_entry(&held, entry, response.status().as_u16(), started);
                response
            });
            return match task.await {
                Ok(response) => response,
                Err(_) => ApiError::from_code(500).into_response(),
            };
        }
        Some(FaultKind::Hang) => {
            record(entry, 0);
            return std::future::pending().await;
        }
        Some(FaultKind::Drop) => {
            record(entry, 0);
            if let Some(conn) = req.extensions().get::<ConnControl>() {
                conn.kill();
            }
            // The connection task drops this future together with the connection.
            return std::future::pending().await;
        }
        Some(FaultKind::Latency { .. }) | None => admitted(&shared, req, next).await,
    };
    record(entry, response.status().as_u16());
    response
}

/// Journals a request with the status sent and the time since its arrival.
fn record_entry(shared: &Shared, mut entry: JournalEntry, status: u16, started: Instant) {
    entry.status = status;
    entry.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    lock(&shared.journal).record(entry);
}

/// The handler's response if the request is admitted, the error otherwise.
async fn admitted(shared: &Shared, mut req: Request, next: Next) -> Response {
    match admit(shared, &req) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Rate limit (one bucket for every key of every organisation), then bearer-key
/// authentication.
fn admit(shared: &Shared, req: &Request) -> Result<Caller, ApiError> {
    if let Some(bucket) = lock(&shared.limiter).as_mut() {
        bucket
            .try_take(Instant::now())
            .map_err(|wait| ApiError::too_many_requests(retry_after_secs(wait)))?;
    }
    let key = bearer(req).ok_or_else(ApiError::unauthorized)?;
    match shared.caller(key) {
        None => Err(ApiError::unauthorized()),
        Some(Caller {
            access: Access::ReadOnly,
            ..
        }) if is_write(req.method()) => Err(ApiError::forbidden()),
        Some(caller) => Ok(caller),
    }
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}
