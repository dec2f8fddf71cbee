//! Command line: `run` (the operator), `crd` (print the CRD YAML) and `export` (print
//! manifests for the grants that exist in Vultr), and [`main`], which parses it and
//! hands over. Each command owns its flags (`export::ExportArgs`, `connect::VultrArgs`,
//! `telemetry::LogFormat`) but `run`'s, which are here.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::export::ExportArgs;
use crate::run::RunArgs;
use crate::{crdgen, export, run, telemetry};

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
