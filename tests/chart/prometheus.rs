//! The PrometheusRule's alerts under `promtool test rules`.

use super::*;

/// The PrometheusRule's alerts, with `promtool test rules` (tests/prometheus/): each
/// fires when it should and stays quiet when it should not.
#[test]
pub(super) fn prometheus_rules_pass_promtool_tests() {
    let promtool = e2e::tool("promtool");
    let docs = rendered_with(&["prometheusRule.enabled=true"]);
    let rule = find(&docs, "PrometheusRule", RELEASE);
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = serde_json::to_string(&rule["spec"]).expect("rules JSON");
    // JSON is YAML: promtool reads it as a rule file.
    std::fs::write(dir.path().join("rules.yaml"), rules).expect("write rules");
    std::fs::copy(
        repo_path("tests/prometheus/alerts-test.yaml"),
        dir.path().join("alerts-test.yaml"),
    )
    .expect("copy the test");
    let out = output(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(dir.path().join("rules.yaml")),
    );
    assert_success(&out, "promtool check rules");
    let out = output(
        Command::new(&promtool)
            .args(["test", "rules", "alerts-test.yaml"])
            .current_dir(dir.path()),
    );
    assert_success(&out, "promtool test rules");
}
