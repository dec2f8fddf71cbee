//! The flags of `vultr-iam-operator run`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::boundary::{Boundary, Enforcement};
use crate::connect::VultrArgs;
use crate::domain::SubjectKind;
use crate::telemetry::LogFormat;
use crate::vultr::DIRECTORY_MAX_AGE_LIMIT;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub vultr: VultrArgs,

    /// How often the API key file is checked for a new key (a rotated Secret).
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub vultr_api_key_reload_interval: Duration,

    /// Address of /metrics, /healthz and /readyz; `[::]` is dual-stack (IPv4 as well),
    /// and falls back to 0.0.0.0 on a kernel without IPv6.
    #[arg(long, default_value = "[::]:8080")]
    pub metrics_bind_address: SocketAddr,

    /// Period of drift verification against Vultr (jittered by ±10%).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,

    /// How long a listing of a policy's (or role's) grants is reused for verifications
    /// and event-driven reconciles. Default: half of --resync-interval, between 5s and 60s.
    #[arg(long, value_parser = positive_duration)]
    pub listing_max_age: Option<Duration>,

    /// The oldest walk of Vultr's policies, users, groups and roles that a name, email or
    /// ID is resolved against: a name Vultr gives to another object (a renamed group and
    /// a new one with its old name) resolves to the new object at most this long after
    /// the change. At most 60s.
    #[arg(long, default_value = "60s", value_parser = directory_max_age)]
    pub directory_max_age: Duration,

    /// How long a fresh attach may stay invisible in Vultr's listing before it is sent again;
    /// also how long after a detach a listing that still shows the pair proves nothing.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub attach_visibility_timeout: Duration,

    /// Maximum number of PolicyAttachments reconciled in parallel (per watched scope and
    /// lane). Most of a reconcile is waiting on the API server or the Vultr limiter, so
    /// enough of them must be in flight to keep the limiter busy.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u16,

    /// First retry delay after a failure; doubles per consecutive failure (with jitter).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub backoff_base: Duration,

    /// Upper bound of the retry delay after failures.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,

    /// Only watch these namespaces (repeatable; repeats are merged). Default: all namespaces.
    #[arg(long = "watch-namespace", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub watch_namespaces: Vec<String>,

    /// Elect a leader through a coordination.k8s.io Lease; only the leader reconciles.
    #[arg(long)]
    pub leader_election: bool,

    /// Name of the leader election Lease.
    #[arg(long, default_value = "vultr-iam-operator")]
    pub lease_name: String,

    /// Namespace of the leader election Lease (default: the pod's namespace from
    /// POD_NAMESPACE, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Lease duration: how long a dead (or cut off) leader blocks a hand-over.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// How long the leader may go on after its last successful renewal; past it, it
    /// sends no Vultr write, cancels in-flight reconciles and exits. Must be shorter
    /// than --lease-duration and defaults to two thirds of it
    #[arg(long, value_parser = humantime::parse_duration)]
    pub renew_deadline: Option<Duration>,

    /// Pause between lease renewals (and between a standby's looks at the lease). Must
    /// be shorter than --renew-deadline and defaults to a fifth of it
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retry_period: Option<Duration>,

    /// The grant boundary: the only policies that may be granted, by ID or exact name
    /// (repeatable; a name may hold a comma). Default: any policy.
    #[arg(long = "allowed-policy")]
    pub allowed_policies: Vec<String>,

    /// The grant boundary: the only subject kinds that may receive a grant (User,
    /// Group, Role; repeatable, or comma-separated). Default: any kind.
    #[arg(long = "allowed-subject-kind", value_delimiter = ',', value_parser = subject_kind)]
    pub allowed_subject_kinds: Vec<SubjectKind>,

    /// What happens to a grant outside the boundary: Enforce (never sent; revoked if
    /// made before the boundary narrowed) or Audit (made, kept and reported).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Enforcement::Enforce)]
    pub boundary_enforcement: Enforcement,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The grant boundary of the process's key.
    pub fn boundary(&self) -> Boundary {
        Boundary::new(
            &self.allowed_policies,
            &self.allowed_subject_kinds,
            self.boundary_enforcement,
        )
    }

    /// `--listing-max-age`, else half the resync interval between 5 s and 60 s: long
    /// enough for a pass's reconciles to share its listings, short enough that an
    /// event-driven reconcile sees recent state.
    pub(crate) fn listing_max_age(&self) -> Duration {
        self.listing_max_age.unwrap_or_else(|| {
            (self.resync_interval / 2).clamp(Duration::from_secs(5), Duration::from_secs(60))
        })
    }

    /// One watch scope per distinct `--watch-namespace` (in the order given), or the
    /// whole cluster without any: a repeated namespace must not get two controllers
    /// reconciling the same objects.
    pub(crate) fn watch_scopes(&self) -> Vec<Option<String>> {
        if self.watch_namespaces.is_empty() {
            return vec![None];
        }
        let mut seen = HashSet::new();
        self.watch_namespaces
            .iter()
            .filter(|ns| seen.insert(ns.as_str()))
            .cloned()
            .map(Some)
            .collect()
    }
}

/// A subject kind as written in status (`User`, `Group`, `Role`), in any case.
fn subject_kind(text: &str) -> Result<SubjectKind, String> {
    [SubjectKind::User, SubjectKind::Group, SubjectKind::Role]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(text.trim()))
        .ok_or_else(|| format!("{text:?} is not a subject kind: User, Group or Role"))
}

/// A duration above zero (a zero poll period would spin).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// A positive duration of at most the directory's freshness bound.
fn directory_max_age(text: &str) -> Result<Duration, String> {
    let age = positive_duration(text)?;
    if age > DIRECTORY_MAX_AGE_LIMIT {
        return Err(format!(
            "must be at most {}",
            humantime::format_duration(DIRECTORY_MAX_AGE_LIMIT)
        ));
    }
    Ok(age)
}
