//! Start-up configuration and the switchable "undocumented" behaviours.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::seed::{Seed, SeedError};

/// Everything [`crate::Sim::start`] needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Address to bind; port 0 picks a free one. Loopback unless told otherwise.
    pub listen: SocketAddr,
    /// Keys with full access to the default organisation.
    pub api_keys: Vec<String>,
    /// Keys of the default organisation that may read but get 403 on POST and DELETE.
    pub read_only_keys: Vec<String>,
    /// Token bucket over all `/v2` requests of every organisation (Vultr limits per
    /// source IP, not per key); `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// Initial shape of the attachment listings (also switchable at run time).
    pub listing_shape: ListingShape,
    /// Objects of the default organisation, loaded at start.
    pub seed: Seed,
    /// Name of the default organisation (the one `api_keys`, `read_only_keys` and `seed`
    /// describe): what `GET /v2/account` answers for its keys, and its `?org=` in `/_sim`.
    pub org_name: String,
    /// Email of the default organisation, for `GET /v2/account`.
    pub org_email: String,
    /// More organisations, each with its own keys and objects. Names and keys must be
    /// unique across all organisations, the default one included.
    pub organisations: Vec<OrgConfig>,
}

/// Name of the default organisation unless [`SimConfig::org_name`] says otherwise.
pub const DEFAULT_ORG: &str = "default";

/// One more organisation: a Vultr account with its own keys and objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// Unique among the organisations: the account name `GET /v2/account` answers, and
    /// what `?org=` and [`crate::Sim::org`] select it by.
    pub name: String,
    /// The account email `GET /v2/account` answers.
    #[serde(default)]
    pub email: String,
    /// Keys with full access to this organisation.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Keys that may read this organisation but get 403 on POST and DELETE.
    #[serde(default)]
    pub read_only_keys: Vec<String>,
    /// Objects loaded at start.
    #[serde(default)]
    pub seed: Seed,
}

impl OrgConfig {
    /// An organisation with one full-access key and nothing in it.
    pub fn new(name: &str, email: &str, api_key: &str) -> Self {
        Self {
            name: name.to_owned(),
            email: email.to_owned(),
            api_keys: vec![api_key.to_owned()],
            ..Self::default()
        }
    }

    pub fn with_seed(mut self, seed: Seed) -> Self {
        self.seed = seed;
        self
    }

    /// Reads YAML, or JSON when the file name ends in `.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<OrgConfig, SeedError> {
        crate::seed::read_file(path.as_ref())
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: vec!["test-key".to_owned()],
            read_only_keys: Vec::new(),
            rate_limit: Some(RateLimit::default()),
            listing_shape: ListingShape::Govultr,
            seed: Seed::default(),
            org_name: DEFAULT_ORG.to_owned(),
            org_email: "admin@example.com".to_owned(),
            organisations: Vec::new(),
        }
    }
}

/// Presets and a builder, so a test names only what differs from them:
/// `SimConfig::demo().keys(&[KEY], &[]).start().await`.
impl SimConfig {
    /// The demo organization (see `demo-org.yaml`), no rate limit, the default key.
    pub fn demo() -> Self {
        Self::default().seed(Seed::demo()).unlimited()
    }

    /// An empty organization without a rate limit, the default key.
    pub fn empty() -> Self {
        Self::default().unlimited()
    }

    /// Replaces the accepted keys: full access, and read-only (403 on writes).
    pub fn keys(mut self, full: &[&str], read_only: &[&str]) -> Self {
        self.api_keys = full.iter().map(|k| (*k).to_owned()).collect();
        self.read_only_keys = read_only.iter().map(|k| (*k).to_owned()).collect();
        self
    }

    pub fn seed(mut self, seed: Seed) -> Self {
        self.seed = seed;
        self
    }

    /// No token bucket.
    pub fn unlimited(mut self) -> Self {
        self.rate_limit = None;
        self
    }

    /// A token bucket over all `/v2` requests of every key and organisation.
    pub fn rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.rate_limit = Some(RateLimit { per_second, burst });
        self
    }

    pub fn listing_shape(mut self, shape: ListingShape) -> Self {
        self.listing_shape = shape;
        self
    }

    /// Names the default organisation (`GET /v2/account`, `?org=` in `/_sim`).
    pub fn org_identity(mut self, name: &str, email: &str) -> Self {
        self.org_name = name.to_owned();
        self.org_email = email.to_owned();
        self
    }

    /// Adds an organisation beside the default one.
    pub fn organisation(mut self, org: OrgConfig) -> Self {
        self.organisations.push(org);
        self
    }

    /// Every organisation, the default one first.
    pub(crate) fn all_orgs(&self) -> Vec<OrgConfig> {
        let default = OrgConfig {
            name: self.org_name.clone(),
            email: self.org_email.clone(),
            api_keys: self.api_keys.clone(),
            read_only_keys: self.read_only_keys.clone(),
            seed: self.seed.clone(),
        };
        std::iter::once(default)
            .chain(self.organisations.iter().cloned())
            .collect()
    }

    /// [`crate::Sim::start`] with this configuration.
    pub async fn start(self) -> std::io::Result<crate::Sim> {
        crate::Sim::start(self).await
    }
}

/// Token bucket parameters. A `per_second` of zero or less means "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    /// Vultr's documented limit: about 30 requests per second.
    fn default() -> Self {
        Self {
            per_second: 30.0,
            burst: 30,
        }
    }
}

/// The two shapes the contract allows for `GET /v2/policies/{id}/users|groups` and
/// `GET /v2/roles/{id}/policies`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListingShape {
    /// `{"users":[{id,name,email,...}]}`, what govultr decodes.
    #[default]
    Govultr,
    /// `{"policy_user_relationships":[{user_id,policy_id,...}]}`, the OpenAPI document's.
    Relationships,
}

impl fmt::Display for ListingShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Govultr => "govultr",
            Self::Relationships => "relationships",
        })
    }
}

impl FromStr for ListingShape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "govultr" => Ok(Self::Govultr),
            "relationships" => Ok(Self::Relationships),
            other => Err(format!(
                "unknown listing shape {other:?} (govultr or relationships)"
            )),
        }
    }
}

/// One organisation's keys, replaceable at run time (`PUT /_sim/api-keys?org=NAME`,
/// [`crate::Org::set_api_keys`]), e.g. to test a key rotation: a key left out is refused
/// from then on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeys {
    /// Keys with full access.
    pub api_keys: Vec<String>,
    /// Keys that may read but get 403 on POST and DELETE.
    pub read_only_keys: Vec<String>,
}

impl ApiKeys {
    /// Rejects keys that no `Authorization: Bearer` header could carry.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let all = self.api_keys.iter().chain(&self.read_only_keys);
        match all
            .into_iter()
            .find(|k| k.is_empty() || !k.chars().all(|c| c.is_ascii_graphic()))
        {
            Some(_) => Err("keys must be non-empty and printable ASCII without spaces".to_owned()),
            None => Ok(()),
        }
    }
}

/// The behaviours the contract leaves open, selectable at run time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Status for POST attach of a pair that is already attached (201, 400, 409, 422...).
    pub attach_existing: u16,
    /// Status for DELETE of an absent pair or unknown policy/user/group/role (404 or 204).
    pub detach_absent: u16,
    /// A fresh attach made through `/v2` stays out of listings for this long.
    #[serde(rename = "listing_lag_ms", with = "crate::timefmt::duration_ms")]
    pub listing_lag: Duration,
    /// A detach made through `/v2` stays in listings for this long (the pair is gone at
    /// once: attach, detach and the truth `Sim::is_*_attached` see it gone).
    #[serde(rename = "detach_lag_ms", with = "crate::timefmt::duration_ms")]
    pub detach_lag: Duration,
    /// Shape of the attachment listings.
    pub listing_shape: ListingShape,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            attach_existing: 201,
            detach_absent: 404,
            listing_lag: Duration::ZERO,
            detach_lag: Duration::ZERO,
            listing_shape: ListingShape::Govultr,
        }
    }
}

impl Behaviour {
    /// Rejects statuses that cannot be sent as an HTTP status line.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, code) in [
            ("attach_existing", self.attach_existing),
            ("detach_absent", self.detach_absent),
        ] {
            if !(200..=599).contains(&code) {
                return Err(format!(
                    "{name} must be an HTTP status 200..=599, got {code}"
                ));
            }
        }
        Ok(())
    }
}
