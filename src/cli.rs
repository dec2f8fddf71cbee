//! Command line: `run` (the operator), `crd` (print the CRD YAML), `export` (print
//! manifests for the grants that exist in Vultr) and `version`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::vultr::DIRECTORY_MAX_AGE_LIMIT;

#[derive(Parser, Debug)]
#[command(
    name = "vultr-iam-operator",
    version,
    about = "Vultr IAM policy attachments as Kubernetes objects"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator (uses KUBECONFIG or the in-cluster service account).
    // A repeated flag takes its last value, so that extra arguments (the chart's
    // `extraArgs`) override the ones set before them.
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Print the PolicyAttachment CRD as YAML (the same as crds/).
    Crd,
    /// Print PolicyAttachment manifests for the grants that exist in Vultr.
    #[command(long_about = EXPORT_ABOUT)]
    Export(Box<ExportArgs>),
    /// Print the version, the git commit, and the rustc and kube versions it was built with.
    Version,
}

const EXPORT_ABOUT: &str = "\
Print PolicyAttachment manifests (multi-document YAML on stdout) for the grants that exist \
in Vultr, ready to review and commit: applying them adopts the grants without a single \
attach. Object names come from the pair (readable names plus a hash of the IDs), so they \
are valid, unique and the same on every run; documents are sorted, so a re-export diffs \
cleanly.

Filters narrow the export: flags of one kind are alternatives (--user a --user b), \
different kinds must all match (--policy p --user a). --user, --group and --role together \
select the grants of any subject named. A filter that names nothing in Vultr is an error.

Notes (e.g. a name that is not unique, so the manifest refers to it by ID) and errors go \
to stderr; the exit status is non-zero on any error.";

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

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub vultr: VultrArgs,

    /// Only grants of this policy, by name or ID (repeatable).
    #[arg(long = "policy", value_name = "NAME|ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub policies: Vec<String>,

    /// Only grants to this user, by email or ID (repeatable).
    #[arg(long = "user", value_name = "EMAIL|ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub users: Vec<String>,

    /// Only grants to this group, by name or ID (repeatable).
    #[arg(long = "group", value_name = "NAME|ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub groups: Vec<String>,

    /// Only grants to this role, by name or ID (repeatable).
    #[arg(long = "role", value_name = "NAME|ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub roles: Vec<String>,

    /// Namespace written into every manifest. Without it the manifests have none, and
    /// whatever applies them decides (kubectl -n, Kustomize, Argo CD, Flux).
    #[arg(long, value_name = "NS", value_parser = dns_label)]
    pub namespace: Option<String>,

    /// How manifests refer to policies and subjects: `names` (policy and group names,
    /// user emails: readable; a name that is not unique in Vultr falls back to its ID, with
    /// a note on stderr) or `ids` (survive renames in Vultr).
    #[arg(long, value_enum, default_value_t = Reference::Names)]
    pub reference: Reference,

    /// `deletionPolicy` of every manifest: `Delete` (deleting the object revokes the
    /// grant) or `Orphan` (deleting it leaves the grant in Vultr).
    #[arg(long, value_enum, default_value_t = DeletionPolicyArg::Delete)]
    pub deletion_policy: DeletionPolicyArg,

    /// Only the grants that no PolicyAttachment in the cluster declares (recorded in its
    /// status, or its spec resolved against Vultr): what was granted out of band. Lists
    /// PolicyAttachments in all namespaces through the usual kube config (KUBECONFIG or
    /// the in-cluster service account).
    #[arg(long)]
    pub unmanaged: bool,
}

/// How exported manifests refer to Vultr objects.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    Names,
    Ids,
}

/// `spec.deletionPolicy`, spelt as in the manifest.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPolicyArg {
    #[value(name = "Delete")]
    Delete,
    #[value(name = "Orphan")]
    Orphan,
}

impl From<DeletionPolicyArg> for crate::crd::DeletionPolicy {
    fn from(arg: DeletionPolicyArg) -> Self {
        match arg {
            DeletionPolicyArg::Delete => Self::Delete,
            DeletionPolicyArg::Orphan => Self::Orphan,
        }
    }
}

/// A namespace name (an RFC 1123 label).
fn dns_label(text: &str) -> Result<String, String> {
    if crate::export::naming::is_dns1123_label(text) {
        Ok(text.to_owned())
    } else {
        Err(
            "must be a namespace name: at most 63 lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
                .to_owned(),
        )
    }
}

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

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// `--listing-max-age`, else half the resync interval between 5 s and 60 s: long
    /// enough for a pass's reconciles to share its listings, short enough that an
    /// event-driven reconcile sees recent state.
    pub fn listing_max_age(&self) -> Duration {
        self.listing_max_age.unwrap_or_else(|| {
            (self.resync_interval / 2).clamp(Duration::from_secs(5), Duration::from_secs(60))
        })
    }

    /// One watch scope per distinct `--watch-namespace` (in the order given), or the
    /// whole cluster without any: a repeated namespace must not get two controllers
    /// reconciling the same objects.
    pub fn watch_scopes(&self) -> Vec<Option<String>> {
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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["vultr-iam-operator", "run"].iter().chain(extra))
            .expect("valid flags");
        match cli.command {
            Command::Run(args) => *args,
            _ => unreachable!("parsed `run`"),
        }
    }

    #[test]
    fn repeated_watch_namespaces_are_merged_in_order() {
        let args = run_args(&[
            "--watch-namespace",
            "a",
            "--watch-namespace",
            "b",
            "--watch-namespace",
            "a",
        ]);
        assert_eq!(
            args.watch_scopes(),
            vec![Some("a".to_owned()), Some("b".to_owned())]
        );
        let args = run_args(&["--watch-namespace", "a", "--watch-namespace", "a"]);
        assert_eq!(args.watch_scopes(), vec![Some("a".to_owned())]);
    }

    #[test]
    fn no_watch_namespace_is_the_whole_cluster() {
        assert_eq!(run_args(&[]).watch_scopes(), vec![None]);
    }

    #[test]
    fn an_empty_watch_namespace_is_refused() {
        let err = Cli::try_parse_from(["vultr-iam-operator", "run", "--watch-namespace", ""])
            .unwrap_err();
        assert!(err.to_string().contains("--watch-namespace"), "{err}");
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value() {
        let args = run_args(&[
            "--metrics-bind-address=[::]:8080",
            "--concurrency=4",
            "--log-format=json",
            "--metrics-bind-address=0.0.0.0:9090",
            "--concurrency",
            "8",
            "--log-format=text",
        ]);
        assert_eq!(args.metrics_bind_address, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.log_format, LogFormat::Text);
        // A boolean flag given twice is not an error either.
        assert!(run_args(&["--leader-election", "--leader-election"]).leader_election);
    }

    #[test]
    fn the_default_bind_address_is_dual_stack() {
        assert_eq!(
            run_args(&[]).metrics_bind_address,
            "[::]:8080".parse().unwrap()
        );
    }

    #[test]
    fn directory_max_age_is_positive_and_at_most_a_minute() {
        assert_eq!(run_args(&[]).directory_max_age, Duration::from_secs(60));
        assert_eq!(
            run_args(&["--directory-max-age", "2s"]).directory_max_age,
            Duration::from_secs(2)
        );
        for bad in ["0s", "61s", "10m"] {
            let parsed =
                Cli::try_parse_from(["vultr-iam-operator", "run", "--directory-max-age", bad]);
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn listing_max_age_defaults_to_half_the_resync_interval_within_bounds() {
        assert_eq!(run_args(&[]).listing_max_age(), Duration::from_secs(60));
        assert_eq!(
            run_args(&["--resync-interval", "30s"]).listing_max_age(),
            Duration::from_secs(15)
        );
        assert_eq!(
            run_args(&["--resync-interval", "3s"]).listing_max_age(),
            Duration::from_secs(5)
        );
        assert_eq!(
            run_args(&["--listing-max-age", "1s"]).listing_max_age(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn key_reload_interval_must_be_positive() {
        assert_eq!(
            run_args(&[]).vultr_api_key_reload_interval,
            Duration::from_secs(5)
        );
        assert_eq!(
            run_args(&["--vultr-api-key-reload-interval", "500ms"]).vultr_api_key_reload_interval,
            Duration::from_millis(500)
        );
        for bad in ["0s", "soon"] {
            assert!(
                Cli::try_parse_from([
                    "vultr-iam-operator",
                    "run",
                    "--vultr-api-key-reload-interval",
                    bad
                ])
                .is_err(),
                "{bad}"
            );
        }
    }
}
