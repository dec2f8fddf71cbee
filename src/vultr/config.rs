//! Client configuration and its checks (notably: no API key over plain HTTP to a
//! remote host).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use url::{Host, Url};

use super::api_key::ApiKey;
use super::fence::WriteFence;
use super::limiter::RateLimiter;
use super::observe::RequestObserver;

/// Production endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.vultr.com";
/// Whole-request timeout (connect, send, read the full body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP + TLS connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything [`super::VultrClient::new`] needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// e.g. `https://api.vultr.com`; request paths (`/v2/...`) are appended to its path.
    pub base_url: Url,
    pub api_key: ApiKey,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Shared by every request of the client (and of its clones).
    pub limiter: RateLimiter,
    /// Allows `http://` to a non-loopback host (`--allow-insecure-http`).
    pub allow_insecure_http: bool,
    pub user_agent: String,
    /// Optional metrics hook.
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// With leader election: writes (POST, DELETE) are refused unless it allows them at
    /// the moment they would be sent. Reads are never fenced.
    pub fence: Option<WriteFence>,
    /// Extra trusted CA certificates (PEM), e.g. a corporate proxy's (`--vultr-ca-file`).
    pub extra_roots_pem: Option<Vec<u8>>,
}

impl ClientConfig {
    /// Defaults for everything but the URL and the key.
    pub(crate) fn new(base_url: Url, api_key: ApiKey) -> Self {
        Self {
            base_url,
            api_key,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            limiter: RateLimiter::default(),
            allow_insecure_http: false,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            observer: None,
            fence: None,
            extra_roots_pem: None,
        }
    }

    /// Names this process in the User-Agent, e.g. `vultr-iam-operator/0.1.0 (pod-a)`,
    /// so that Vultr-side logs (and the simulator's journal) tell replicas apart.
    pub(crate) fn with_instance(mut self, instance: &str) -> Self {
        self.user_agent = user_agent_for(instance);
        self
    }
}

pub const DEFAULT_USER_AGENT: &str =
    concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

/// The User-Agent of one instance; characters a header cannot carry become `_`.
fn user_agent_for(instance: &str) -> String {
    let instance: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '(' && c != ')' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{DEFAULT_USER_AGENT} ({instance})")
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("limiter", &self.limiter)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("user_agent", &self.user_agent)
            .field("observer", &self.observer.as_ref().map(|_| "<set>"))
            .field("fence", &self.fence)
            .field(
                "extra_roots_pem",
                &self.extra_roots_pem.as_ref().map(Vec::len),
            )
            .finish()
    }
}

/// A configuration the client refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing to send the Vultr API key over plain HTTP to {host}: use https://, \
         a loopback address, or pass --allow-insecure-http"
    )]
    InsecureHttp { host: String },
    #[error("the Vultr API URL must start with https:// (or http://), not {scheme}://")]
    UnsupportedScheme { scheme: String },
    #[error("the Vultr API URL has no host")]
    MissingHost,
    #[error("the Vultr API URL must not contain a user name or password")]
    Credentials,
    #[error("the Vultr API URL must not contain a query or fragment")]
    QueryOrFragment,
    #[error("the Vultr API key cannot be used in an HTTP header")]
    InvalidApiKey,
    #[error("the Vultr CA bundle holds no PEM certificate")]
    EmptyCaBundle,
    #[error("the Vultr CA bundle is not valid PEM: {0}")]
    CaBundle(#[source] reqwest::Error),
    #[error("could not set up the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Accepts `https://`, and `http://` only to loopback or when explicitly allowed.
pub(crate) fn check_base_url(url: &Url, allow_insecure_http: bool) -> Result<(), ConfigError> {
    // Checked before anything that prints the URL, which would then show the password.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::Credentials);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::QueryOrFragment);
    }
    let host = url.host().ok_or(ConfigError::MissingHost)?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&host) => Ok(()),
        "http" => Err(ConfigError::InsecureHttp {
            host: host.to_string(),
        }),
        other => Err(ConfigError::UnsupportedScheme {
            scheme: other.to_owned(),
        }),
    }
}

/// 127.0.0.0/8, ::1 (also as IPv4-mapped) and `localhost`: traffic that never leaves
/// the machine (or the pod), where plain HTTP exposes nothing.
fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Host::Domain(name) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            name.eq_ignore_ascii_case("localhost")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, allow: bool) -> Result<(), ConfigError> {
        check_base_url(&Url::parse(url).unwrap(), allow)
    }

    #[test]
    fn https_is_always_fine() {
        assert!(check("https://api.vultr.com", false).is_ok());
        assert!(check("https://10.0.0.1:8443/prefix/", false).is_ok());
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:9000",
            "http://[::ffff:127.0.0.1]",
            "http://localhost:8080/",
            "http://LOCALHOST.",
        ] {
            assert!(check(url, false).is_ok(), "{url}");
        }
        for url in [
            "http://api.vultr.com",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.example.com",
            "http://0.0.0.0",
        ] {
            let err = check(url, false).unwrap_err();
            assert!(matches!(err, ConfigError::InsecureHttp { .. }), "{url}");
            assert!(err.to_string().contains("--allow-insecure-http"), "{err}");
            assert!(check(url, true).is_ok(), "{url}");
        }
    }

    #[test]
    fn other_schemes_and_odd_urls_are_refused() {
        assert!(matches!(
            check("ftp://api.vultr.com", true),
            Err(ConfigError::UnsupportedScheme { .. })
        ));
        let err = check("https://user:hunter2@api.vultr.com", false).unwrap_err();
        assert!(matches!(err, ConfigError::Credentials));
        assert!(!err.to_string().contains("hunter2"));
        assert!(matches!(
            check("https://api.vultr.com/?x=1", false),
            Err(ConfigError::QueryOrFragment)
        ));
        assert!(matches!(
            check("unix:/run/sock", true),
            Err(ConfigError::MissingHost)
        ));
    }

    #[test]
    fn the_user_agent_names_the_instance() {
        let key = ApiKey::new("K", "a test").unwrap();
        let config =
            ClientConfig::new(Url::parse(DEFAULT_BASE_URL).unwrap(), key).with_instance("pod-a");
        assert_eq!(
            config.user_agent,
            format!("vultr-iam-operator/{} (pod-a)", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            user_agent_for("odd (name)\n\u{e9}"),
            format!("{DEFAULT_USER_AGENT} (odd__name___)")
        );
    }

    #[test]
    fn debug_redacts_the_key() {
        let key = ApiKey::new("TOPSECRETKEY", "a test").unwrap();
        let config = ClientConfig::new(Url::parse(DEFAULT_BASE_URL).unwrap(), key);
        let shown = format!("{config:?}");
        assert!(!shown.contains("TOPSECRETKEY"), "{shown}");
        assert!(shown.contains("ApiKey(<redacted>)"), "{shown}");
    }
}
