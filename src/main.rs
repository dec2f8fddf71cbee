//! Thin entry point: everything, the command line included, is in the library.

fn main() -> std::process::ExitCode {
    vultr_iam_operator::cli::main()
}
