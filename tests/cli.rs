//! The binary's command line, and the README kept true to it.

use std::process::Command;

use vio_harness::support::operator_binary;

fn operator(args: &[&str]) -> String {
    let out = Command::new(operator_binary())
        .args(args)
        .output()
        .expect("run the operator binary");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_flag_of_run_is_documented_in_the_readme() {
    flags_are_documented("run", 15);
}

#[test]
fn every_flag_of_export_is_documented_in_the_readme() {
    flags_are_documented("export", 14);
}

/// Every `--flag` that `<command> --help` shows appears as `` `--flag `` in the README.
fn flags_are_documented(command: &str, at_least: usize) {
    let help = operator(&[command, "--help"]);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(','))
        .filter(|w| *w != "--help")
        .collect();
    assert!(
        flags.len() >= at_least,
        "parsed too few flags from {command} --help: {flags:?}"
    );
    for flag in flags {
        assert!(
            readme.contains(&format!("`{flag}")),
            "README does not document {flag} of {command}"
        );
    }
}

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let printed = operator(&["crd"]);
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/policyattachments.iam.vultr-operator.io.yaml"
    ))
    .expect("committed CRD");
    assert_eq!(printed, committed, "run `make crds`");
}

#[test]
fn the_api_key_cannot_be_passed_as_a_flag() {
    let out = Command::new(operator_binary())
        .args(["run", "--vultr-api-key", "secret"])
        .output()
        .expect("run the operator binary");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
}

#[test]
fn a_missing_key_is_a_clear_startup_error() {
    let out = Command::new(operator_binary())
        .args(["run", "--vultr-api-key-file", "/nonexistent/key"])
        .env_remove("VULTR_API_KEY")
        .output()
        .expect("run the operator binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/key"), "{stderr}");
}
