//! Thin entry point: parse the command line and hand over.

use clap::Parser;
use vultr_iam_operator::cli::{Cli, Command};
use vultr_iam_operator::{build_info, crdgen, export, run, telemetry};

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(command(Cli::parse()));
    // Not a plain drop, which waits for every blocking task (a DNS lookup that hangs):
    // the exit after SIGTERM has a deadline.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

async fn command(cli: Cli) -> std::process::ExitCode {
    match cli.command {
        Command::Version => {
            print!("{}", build_info::version_text());
            std::process::ExitCode::SUCCESS
        }
        Command::Crd => match crdgen::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cannot render the CRD: {err}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Export(args) => {
            telemetry::init_cli();
            match export::run(*args).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("vultr-iam-operator export: {err}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            match run::run(*args).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %err, "cannot start");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
