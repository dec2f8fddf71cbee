//! The Vultr client as the command line describes it (`--vultr-*` flags, the API key
//! from `--vultr-api-key-file` or `VULTR_API_KEY`): one construction for `run` and
//! `export`, so both accept the same flags and fail with the same messages.

use crate::cli::VultrArgs;
use crate::vultr::{ApiKey, ApiKeyError, ClientConfig, ConfigError, InvalidRateLimit};
use crate::vultr::{RateLimiter, VultrClient};

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

impl ConnectError {
    /// Stable, machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ApiKey(_) => "InvalidApiKey",
            Self::RateLimit(_) => "InvalidRateLimit",
            Self::VultrConfig(_) => "InvalidVultrConfig",
            Self::CaFile { .. } => "CaFileUnreadable",
        }
    }
}

/// The client configuration the flags describe, named `instance` in the User-Agent:
/// the key (file, else environment), URL, timeout, limiter, CA file, insecure-http
/// switch. Callers add what only they need (metrics observer, write fence).
pub fn client_config(args: &VultrArgs, instance: &str) -> Result<ClientConfig, ConnectError> {
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
pub fn client(args: &VultrArgs, instance: &str) -> Result<VultrClient, ConnectError> {
    Ok(VultrClient::new(client_config(args, instance)?)?)
}
