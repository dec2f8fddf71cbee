//! The HTTP core of the Vultr client: one place that rate-limits, authenticates, times,
//! logs and classifies every request. Endpoint methods live in `endpoints.rs`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use tracing::{Instrument, field};
use url::Url;

use super::api_key::ApiKey;
use super::config::{ClientConfig, ConfigError, check_base_url};
use super::error::VultrError;
use super::fence::{Window, WriteFence, write_timeout};
use super::limiter::{Priority, RateLimiter};
use super::observe::{RequestObserver, RequestRecord};
use super::response::{check_status, transport_error};

/// Client of the Vultr IAM API. Cheap to clone; clones share the connection pool and
/// the rate limiter. It never retries: the reconciler owns retries and backoff.
#[derive(Clone)]
pub struct VultrClient {
    inner: Arc<Inner>,
    /// The limiter class of this handle's requests (see [`VultrClient::urgent`]).
    priority: Priority,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    /// `Bearer <key>`, marked sensitive so that hyper and reqwest never print it.
    /// Behind a lock because a rotated key file replaces it at run time.
    authorization: RwLock<HeaderValue>,
    /// Bumped by every key swap: caches drop what was fetched with an older key.
    key_epoch: AtomicU64,
    limiter: RateLimiter,
    timeout: Duration,
    observer: Option<Arc<dyn RequestObserver>>,
    fence: Option<WriteFence>,
}

/// Makes ring the process's TLS crypto provider (reqwest is built without one, so that
/// the image needs no C toolchain for aws-lc). Idempotent: a provider already installed
/// (by us, or by the Kubernetes client) is kept.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A 2xx answer.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl VultrClient {
    pub(crate) fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        check_base_url(&config.base_url, config.allow_insecure_http)?;
        let authorization = authorization_header(&config.api_key)?;
        install_crypto_provider();
        // rustls with the platform verifier: the system's trust store (the image ships CA
        // certificates) plus any extra roots, e.g. a corporate TLS-inspecting proxy.
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &config.extra_roots_pem {
            let roots =
                reqwest::Certificate::from_pem_bundle(pem).map_err(ConfigError::CaBundle)?;
            if roots.is_empty() {
                return Err(ConfigError::EmptyCaBundle);
            }
            builder = builder.tls_certs_merge(roots);
        }
        let http = builder
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent)
            // A redirect could carry the request (and, same-host, the key) somewhere
            // unexpected; the API does not redirect, so treat one as an odd answer.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ConfigError::HttpClient)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url: config.base_url,
                authorization: RwLock::new(authorization),
                key_epoch: AtomicU64::new(0),
                limiter: config.limiter,
                timeout: config.timeout,
                observer: config.observer,
                fence: config.fence,
            }),
            priority: Priority::Normal,
        })
    }

    /// A handle whose requests pass every normal request waiting on the limiter: for
    /// revocations, which must never wait behind a backlog of attaches.
    pub(crate) fn urgent(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            priority: Priority::Urgent,
        }
    }

    /// Replaces the key of every request sent from now on (requests in flight keep the
    /// old one). On error the old key stays in use.
    pub(crate) fn set_api_key(&self, key: &ApiKey) -> Result<(), ConfigError> {
        let value = authorization_header(key)?;
        let mut authorization = self
            .inner
            .authorization
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *authorization = value;
        // Under the write lock: no request reads the new key with the old epoch.
        self.inner.key_epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Which key requests sent from now on carry: changes with every key swap, so an
    /// answer fetched with an older key (a 401 above all) is never served after it.
    pub(crate) fn key_epoch(&self) -> u64 {
        self.inner.key_epoch.load(Ordering::SeqCst)
    }

    /// The current `Authorization` value (still marked sensitive).
    fn authorization(&self) -> HeaderValue {
        self.inner
            .authorization
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends one request and returns the 2xx answer, or the classified error.
    /// `segments` are the path after the base URL, each percent-encoded on its own;
    /// callers validate IDs first (see `endpoints::path_id`).
    pub(crate) async fn request(
        &self,
        method: Method,
        route: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Answer, VultrError> {
        let span = tracing::info_span!(
            "vultr_request",
            method = %method,
            route,
            status = field::Empty,
            latency_ms = field::Empty,
            limiter_wait_ms = field::Empty,
        );
        let url = self.url(segments, query);
        self.request_inner(method, route, url)
            .instrument(span)
            .await
    }

    async fn request_inner(
        &self,
        method: Method,
        route: &'static str,
        url: Url,
    ) -> Result<Answer, VultrError> {
        let fence = self.inner.fence.as_ref().filter(|_| is_write(&method));
        // A new leader's writes wait, before taking a limiter token, until the
        // previous leader's can no longer land.
        if let Some(fence) = fence
            && wait_for_opening(fence).await.is_none()
        {
            return Err(refused(route));
        }
        let limiter_wait = self.inner.limiter.acquire_with(self.priority).await;
        // Checked after the limiter wait, which can outlast the leadership, and as
        // the last step before the request leaves the process; the write's timeout
        // ends with the leadership.
        let timeout = match fence {
            None => self.inner.timeout,
            Some(fence) => match wait_for_opening(fence).await {
                Some(left) => write_timeout(self.inner.timeout, left),
                None => return Err(refused(route)),
            },
        };
        let started = Instant::now();
        let result = self.send(method, route, url, timeout).await;
        let latency = started.elapsed();

        let span = tracing::Span::current();
        let status = match &result {
            Ok(answer) => Some(answer.status.as_u16()),
            Err(err) => err.status(),
        };
        if let Some(status) = status {
            span.record("status", status);
        }
        span.record("latency_ms", latency.as_millis() as u64);
        span.record("limiter_wait_ms", limiter_wait.as_millis() as u64);
        match &result {
            Ok(_) => tracing::debug!("Vultr request succeeded"),
            Err(err) if err.is_transient() => {
                tracing::warn!(reason = err.reason(), error = %err, "Vultr request failed")
            }
            Err(err) => {
                tracing::info!(reason = err.reason(), error = %err, "Vultr request failed")
            }
        }
        if let Some(observer) = &self.inner.observer {
            observer.on_request(&RequestRecord {
                route,
                status,
                latency,
                limiter_wait,
                outcome: match &result {
                    Ok(_) => "ok",
                    Err(err) => err.reason(),
                },
            });
        }
        result
    }

    async fn send(
        &self,
        method: Method,
        route: &'static str,
        url: Url,
        timeout: Duration,
    ) -> Result<Answer, VultrError> {
        let response = self
            .inner
            .http
            .request(method, url)
            .timeout(timeout)
            .header(AUTHORIZATION, self.authorization())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error(route, e, timeout))?;
        let status = response.status();
        let headers = response.headers().clone();
        // Read the whole body even on errors: the `error` text makes messages useful.
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(route, e, timeout))?;
        check_status(route, status, &headers, &body)?;
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base_url.clone();
        // Cannot fail: `check_base_url` only accepts http(s) URLs with a host.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }
}

/// `Bearer <key>`, marked sensitive so that hyper and reqwest never print it.
fn authorization_header(key: &ApiKey) -> Result<HeaderValue, ConfigError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        .map_err(|_| ConfigError::InvalidApiKey)?;
    value.set_sensitive(true);
    Ok(value)
}

fn refused(route: &'static str) -> VultrError {
    let err = VultrError::NotLeader { route };
    tracing::warn!(reason = err.reason(), error = %err, "Vultr write refused");
    err
}

/// Waits while the fence is held; then the time it has left, or `None` if closed.
async fn wait_for_opening(fence: &WriteFence) -> Option<Duration> {
    loop {
        match fence.window(Instant::now()) {
            Window::Closed => return None,
            Window::OpensAt(at) => tokio::time::sleep_until(at).await,
            Window::Open { left } => return Some(left),
        }
    }
}

/// Requests that change something in Vultr; only these are fenced.
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl fmt::Debug for VultrClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VultrClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("limiter", &self.inner.limiter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vultr::api_key::ApiKey;

    fn client(base: &str) -> VultrClient {
        let key = ApiKey::new("K3Y", "a test").unwrap();
        VultrClient::new(ClientConfig::new(Url::parse(base).unwrap(), key)).unwrap()
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_segments() {
        let c = client("https://api.example.com/prefix/");
        let url = c.url(
            &["v2", "policies", "a/b?c", "users"],
            &[("per_page", "500")],
        );
        assert_eq!(
            url.as_str(),
            "https://api.example.com/prefix/v2/policies/a%2Fb%3Fc/users?per_page=500"
        );
        let c = client("https://api.example.com");
        assert_eq!(
            c.url(&["v2", "users"], &[]).as_str(),
            "https://api.example.com/v2/users"
        );
    }

    #[test]
    fn insecure_http_is_refused_with_the_flag_name() {
        let key = ApiKey::new("K3Y", "a test").unwrap();
        let config = ClientConfig::new(Url::parse("http://vultr.internal").unwrap(), key);
        let err = VultrClient::new(config).unwrap_err();
        assert!(err.to_string().contains("--allow-insecure-http"), "{err}");
    }

    #[test]
    fn set_api_key_swaps_the_header_and_keeps_it_sensitive() {
        let c = client("https://api.example.com");
        assert_eq!(c.authorization().to_str().unwrap(), "Bearer K3Y");
        let clone = c.clone();
        assert_eq!(c.key_epoch(), 0);
        c.set_api_key(&ApiKey::new("N3WK3Y", "a test").unwrap())
            .unwrap();
        assert_eq!(clone.key_epoch(), 1, "every clone sees the swap");
        // Clones share the header: every task of the operator sees the new key.
        for client in [&c, &clone] {
            let value = client.authorization();
            assert_eq!(value.to_str().unwrap(), "Bearer N3WK3Y");
            assert!(value.is_sensitive());
            assert!(!format!("{value:?}").contains("N3WK3Y"));
        }
    }

    #[test]
    fn only_changes_are_writes() {
        assert!(is_write(&Method::POST));
        assert!(is_write(&Method::DELETE));
        assert!(is_write(&Method::PUT));
        assert!(!is_write(&Method::GET));
        assert!(!is_write(&Method::HEAD));
    }

    #[test]
    fn debug_shows_no_key() {
        let shown = format!("{:?}", client("https://api.example.com"));
        assert!(!shown.contains("K3Y"), "{shown}");
    }
}
