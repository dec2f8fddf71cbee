//! Thin entry point: parse the command line and hand over.

use clap::Parser;
use vultr_iam_operator::cli::{Cli, Command};
use vultr_iam_operator::{crdgen, export, run, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
