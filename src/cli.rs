//! Command line: `run` (the operator), `crd` (print the CRD YAML), `export` (print
//! manifests for the grants that exist in Vultr) and `version`, and [`main`], which
//! parses it and hands over. Each command owns its flags (`run::RunArgs`,
//! `export::ExportArgs`, `connect::VultrArgs`, `telemetry::LogFormat`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::export::ExportArgs;
use crate::run::RunArgs;
use crate::{build_info, crdgen, export, run, telemetry};

/// The binary: parses the command line and runs the command on a multi-threaded runtime.
pub fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(command(Cli::parse()));
    // Not a plain drop, which waits for every blocking task (a DNS lookup that hangs):
    // the exit after SIGTERM has a deadline.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn command(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            print!("{}", build_info::version_text());
            ExitCode::SUCCESS
        }
        Command::Crd => match crdgen::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cannot render the CRD: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Export(args) => {
            telemetry::init_cli();
            match export::run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("vultr-iam-operator export: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            match run::run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %err, "cannot start");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::telemetry::LogFormat;
    use std::time::Duration;

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
