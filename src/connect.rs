//! The Vultr client as the command line describes it (`--vultr-*` flags, the API key
//! from `--vultr-api-key-file` or `VULTR_API_KEY`): one construction for `run` and
//! `export`, so both accept the same flags and fail with the same messages.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use url::Url;

use crate::vultr::{ApiKey, ApiKeyError, ClientConfig, ConfigError, InvalidRateLimit};
use crate::vultr::{RateLimiter, VultrClient};

/// How to reach Vultr: shared by `run` and `export`, so both take the same key, URL, CA
/// file, limiter and timeout (and fail with the same messages).
#[derive(Args, Debug, Clone)]
pub struct VultrArgs {
    /// Base URL of the Vultr API.
    #[arg(long, env = "VULTR_API_URL", default_value = crate::vultr::DEFAULT_BASE_URL)]
    pub vultr_api_url: Url,

    /// File holding the Vultr API key (e.g. a mounted Secret). Without it the key is read
    /// from the environment variable VULTR_API_KEY. Never pass the key itself as a flag.
    /// `run` re-reads the file while running: a rotated Secret needs no restart.
    #[arg(long)]
    pub vultr_api_key_file: Option<PathBuf>,

    /// PEM file of extra CA certificates trusted for the Vultr API (e.g. a corporate
    /// TLS-inspecting proxy), on top of the built-in roots.
    #[arg(long)]
    pub vultr_ca_file: Option<PathBuf>,

    /// Allow plain http:// to a non-loopback Vultr API URL (testing only).
    #[arg(long)]
    pub allow_insecure_http: bool,

    /// Client-side limit of Vultr requests per second for the whole process (Vultr allows ~30).
    #[arg(long, default_value_t = 10.0)]
    pub vultr_rate_limit: f64,

    /// Burst size of the client-side Vultr rate limiter.
    #[arg(long, default_value_t = 10)]
    pub vultr_burst: u32,

    /// Timeout of one Vultr request. With leader election, a write's timeout also ends
    /// with the leadership, and a new leader waits out the previous leader's writes
    /// (assumed applied within this long of their sending, or never) before its first.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub vultr_timeout: Duration,
}

/// Why no Vultr client could be set up from the flags. Never carries the key.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("Vultr API key: {0}")]
    ApiKey(#[from] ApiKeyError),
    #[error("Vultr rate limit: {0}")]
    RateLimit(#[from] InvalidRateLimit),
    #[error("Vultr client: {0}")]
    VultrConfig(#[from] ConfigError),
    #[error("cannot read the Vultr CA file {}: {source}", path.display())]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The client configuration the flags describe, named `instance` in the User-Agent:
/// the key (file, else environment), URL, timeout, limiter, CA file, insecure-http
/// switch. Callers add what only they need (metrics observer, write fence).
pub(crate) fn client_config(
    args: &VultrArgs,
    instance: &str,
) -> Result<ClientConfig, ConnectError> {
    let api_key = match &args.vultr_api_key_file {
        Some(path) => ApiKey::from_file(path)?,
        None => ApiKey::from_env()?,
    };
    let mut config = ClientConfig::new(args.vultr_api_url.clone(), api_key).with_instance(instance);
    config.timeout = args.vultr_timeout;
    config.limiter = RateLimiter::new(args.vultr_rate_limit, args.vultr_burst)?;
    config.allow_insecure_http = args.allow_insecure_http;
    if let Some(path) = &args.vultr_ca_file {
        config.extra_roots_pem =
            Some(std::fs::read(path).map_err(|source| ConnectError::CaFile {
                path: path.clone(),
                source,
            })?);
    }
    Ok(config)
}

/// A client exactly as the flags describe it.
pub(crate) fn client(args: &VultrArgs, instance: &str) -> Result<VultrClient, ConnectError> {
    Ok(VultrClient::new(client_config(args, instance)?)?)
}
