//! A tiny in-test HTTP server standing in for Vultr: every request is recorded and
//! answered by a closure. (The full simulator lives in tests/vultr-sim.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use url::Url;

use super::api_key::ApiKey;
use super::client::VultrClient;
use super::config::ClientConfig;
use super::directory::Directory;
use super::limiter::RateLimiter;

pub const TEST_KEY: &str = "TESTKEY-5f1c9a7e2b-DO-NOT-LEAK";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub accept: Option<String>,
}

impl Recorded {
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// "GET /v2/policies" style summary.
    pub(crate) fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The canned answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn error(status: u16, text: &str) -> Self {
        Self::json(status, serde_json::json!({"error": text, "status": status}))
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub(crate) fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Responder = dyn Fn(&Recorded) -> Reply + Send + Sync;

#[derive(Clone)]
struct AppState {
    responder: Arc<Responder>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

pub struct FakeVultr {
    pub url: Url,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeVultr {
    pub(crate) async fn start(
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = AppState {
            responder: Arc::new(responder),
            log: log.clone(),
        };
        let app = Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: Url::parse(&format!("http://{addr}")).unwrap(),
            log,
            task,
        }
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Recorded::line).collect()
    }

    pub(crate) fn config(&self) -> ClientConfig {
        let mut config =
            ClientConfig::new(self.url.clone(), ApiKey::new(TEST_KEY, "a test").unwrap());
        config.timeout = Duration::from_secs(5);
        config.limiter = RateLimiter::new(1000.0, 1000).unwrap();
        config
    }

    pub(crate) fn client(&self) -> VultrClient {
        VultrClient::new(self.config()).unwrap()
    }

    /// A directory of a client of this server whose walks serve for ten minutes and
    /// whose misses walk again once the last walk is `refresh_floor` old.
    pub(crate) fn directory(&self, refresh_floor: Duration) -> Directory {
        Directory::new(self.client(), Duration::from_secs(600), refresh_floor)
    }
}

impl Drop for FakeVultr {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let query = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let recorded = Recorded {
        method,
        path: uri.path().to_owned(),
        query,
        authorization: header("authorization"),
        accept: header("accept"),
    };
    state.log.lock().unwrap().push(recorded.clone());
    let reply = (state.responder)(&recorded);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response_headers = HeaderMap::new();
    for (name, value) in &reply.headers {
        response_headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    (
        StatusCode::from_u16(reply.status).unwrap(),
        response_headers,
        reply.body,
    )
        .into_response()
}

/// Serves `items` under `key` in pages of `size`, with cursors "c1", "c2", ...
pub(crate) fn paged(key: &str, items: &[Value], size: usize, request: &Recorded) -> Reply {
    let start = match request.query("cursor") {
        None => 0,
        Some(cursor) => cursor.trim_start_matches('c').parse::<usize>().unwrap() * size,
    };
    let end = (start + size).min(items.len());
    let next = if end < items.len() {
        format!("c{}", end / size)
    } else {
        String::new()
    };
    Reply::json(
        200,
        serde_json::json!({
            key: items[start..end],
            "meta": {"total": items.len(), "links": {"next": next, "prev": ""}},
        }),
    )
}
