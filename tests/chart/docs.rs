//! The values table in the chart's README and `values.schema.json` are generated from
//! the comments of `values.yaml` (`make chart-docs`, `deploy/chart-docs.py`): they must
//! be in step, and a value cannot be added without its doc.

use super::*;

fn chart_docs(chart: &Path, check: bool) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_path("deploy/chart-docs.py"))
        .arg("--chart")
        .arg(chart);
    if check {
        cmd.arg("--check");
    }
    output(&mut cmd)
}

#[test]
pub(super) fn values_table_and_schema_are_generated_from_values_yaml() {
    let out = chart_docs(&repo_path(CHART), true);
    assert!(out.status.success(), "{}", combined(&out));
}

/// A copy of the chart with a new value: without a doc the generator refuses it; with
/// one, the committed files are stale until regenerated, and then the schema types it
/// and the table lists it.
#[test]
pub(super) fn a_new_value_needs_its_doc_and_a_regeneration() {
    let copy = tempfile::tempdir().expect("temp dir");
    let chart = copy.path().join("vultr-iam-operator");
    install::copy_dir(&repo_path(CHART), &chart);
    let values = chart.join("values.yaml");
    let original = std::fs::read_to_string(&values).expect("read values.yaml");

    std::fs::write(&values, format!("{original}\nnewKnob: 3\n")).expect("write values.yaml");
    let out = chart_docs(&chart, true);
    assert!(!out.status.success(), "a value without a doc passed");
    says(&out, "newKnob has no doc");

    std::fs::write(
        &values,
        format!("{original}\n# -- A new knob.\n# @schema {{\"minimum\": 1}}\nnewKnob: 3\n"),
    )
    .expect("write values.yaml");
    let out = chart_docs(&chart, true);
    assert!(!out.status.success(), "stale generated files passed");
    says(&out, "make chart-docs");

    let out = chart_docs(&chart, false);
    assert!(out.status.success(), "{}", combined(&out));
    assert!(chart_docs(&chart, true).status.success());
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart.join("values.schema.json")).expect("read the schema"),
    )
    .expect("schema JSON");
    assert_eq!(
        schema["properties"]["newKnob"],
        json!({"type": "integer", "minimum": 1, "description": "A new knob."})
    );
    let readme = std::fs::read_to_string(chart.join("README.md")).expect("read the README");
    assert!(
        readme.contains("| `newKnob` | integer | `3` | A new knob. |"),
        "the table lacks the new value"
    );
}

/// Asserts that `out` says `text`.
fn says(out: &std::process::Output, text: &str) {
    assert!(combined(out).contains(text), "{}", combined(out));
}
