//! The Argo CD health check (`deploy/argocd/health.lua`) run with lua5.4.

use super::*;

pub(super) fn lua() -> PathBuf {
    for name in ["lua5.4", "lua5.3", "lua5.1", "lua"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let path = dir.join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "no Lua interpreter on PATH: the Argo CD health check test needs one \
         (apt-get install -y lua5.4)"
    );
}

/// A JSON value as a Lua table constructor.
pub(super) fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub(super) fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// Runs `deploy/argocd/health.lua` as Argo CD does (the object in the global `obj`) and
/// returns (status, message).
pub(super) fn argocd_health(object: &Value) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let driver = dir.path().join("driver.lua");
    std::fs::write(
        &driver,
        format!(
            "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\n\", hs.message or \"\", \"\\n\")\n",
            lua_literal(object),
            lua_string(&repo_path("deploy/argocd/health.lua").to_string_lossy())
        ),
    )
    .expect("write the Lua driver");
    let out = run_ok(Command::new(lua()).arg(&driver));
    let (status, message) = out.split_once('\n').expect("status and message");
    (status.to_owned(), message.trim_end().to_owned())
}

pub(super) fn pa_with(generation: i64, status: Value) -> Value {
    let spec = e2e::spec_names("user", "dns-admin", "alice@example.com");
    let mut pa = e2e::manifest("alice-dns-admin", spec);
    pa["metadata"]["namespace"] = json!("platform");
    pa["metadata"]["generation"] = json!(generation);
    pa["status"] = status;
    pa
}

pub(super) fn ready(status: &str, reason: &str, message: &str, observed: i64) -> Value {
    json!({"observedGeneration": observed, "conditions": [
        {"type": "Ready", "status": status, "reason": reason, "message": message,
         "observedGeneration": observed, "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ]})
}

#[test]
pub(super) fn argocd_health_check() {
    let cases = [
        (
            "no status",
            {
                let mut pa = pa_with(1, Value::Null);
                pa.as_object_mut().expect("object").remove("status");
                pa
            },
            "Progressing",
        ),
        (
            "status without conditions",
            pa_with(1, json!({})),
            "Progressing",
        ),
        (
            "no Ready condition",
            pa_with(
                1,
                json!({"conditions": [{"type": "Other", "status": "True", "observedGeneration": 1}]}),
            ),
            "Progressing",
        ),
        (
            "Ready=True, current",
            pa_with(2, ready("True", "Attached", "attached and verified", 2)),
            "Healthy",
        ),
        (
            "Ready=True for an older generation",
            pa_with(3, ready("True", "Attached", "attached", 2)),
            "Progressing",
        ),
        (
            "Ready=True, observedGeneration only in status",
            pa_with(
                1,
                json!({"observedGeneration": 1, "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Attached"}]}),
            ),
            "Healthy",
        ),
        (
            "Attaching",
            pa_with(1, ready("False", "Attaching", "attaching", 1)),
            "Progressing",
        ),
        (
            "Detaching",
            {
                let mut pa = pa_with(1, ready("False", "Detaching", "revoking", 1));
                pa["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                pa
            },
            "Progressing",
        ),
        (
            "PolicyNotFound",
            pa_with(
                1,
                ready(
                    "False",
                    "PolicyNotFound",
                    "no policy named \"dns-admin\"",
                    1,
                ),
            ),
            "Degraded",
        ),
        (
            "Forbidden",
            pa_with(
                1,
                ready("False", "Forbidden", "the API key may not attach", 1),
            ),
            "Degraded",
        ),
        (
            "ApiUnavailable",
            pa_with(1, ready("False", "ApiUnavailable", "503 from Vultr", 1)),
            "Degraded",
        ),
        (
            "Ready=Unknown",
            pa_with(1, ready("Unknown", "Reconciling", "", 1)),
            "Progressing",
        ),
        (
            "Synced=False",
            pa_with(
                1,
                json!({"conditions": [
                    {"type": "Ready", "status": "True", "reason": "Attached",
                     "message": "verified", "observedGeneration": 1},
                    {"type": "Synced", "status": "False", "reason": "ApiUnavailable",
                     "message": "503 from Vultr", "observedGeneration": 1},
                ]}),
            ),
            "Healthy",
        ),
        (
            "paused, Ready as last verified",
            pa_with(
                2,
                json!({"observedGeneration": 2, "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Attached",
                     "message": "verified", "observedGeneration": 2},
                    {"type": "Synced", "status": "False", "reason": "Paused",
                     "message": "paused by the annotation iam.vultr-operator.io/paused: \"true\"; remove the annotation to resume",
                     "observedGeneration": 2},
                ]}),
            ),
            "Suspended",
        ),
        (
            "paused before the first attach",
            pa_with(
                1,
                json!({"observedGeneration": 1, "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Paused",
                     "message": "paused before anything was attached", "observedGeneration": 1},
                ]}),
            ),
            "Suspended",
        ),
    ];
    for (what, object, expected) in cases {
        let (status, message) = argocd_health(&object);
        assert_eq!(status, expected, "{what}: {message}");
        if what == "PolicyNotFound" {
            assert_eq!(message, "PolicyNotFound: no policy named \"dns-admin\"");
        }
        if what == "paused, Ready as last verified" {
            assert!(
                message.starts_with("Paused: paused by the annotation")
                    && message.ends_with("remove the annotation to resume"),
                "{message}"
            );
        }
        if what == "Synced=False" {
            assert!(
                message.contains("last reconcile failed: ApiUnavailable"),
                "{message}"
            );
        }
    }

    // argocd-cm.yaml embeds the same script.
    let cm = documents(&read("deploy/argocd/argocd-cm.yaml"));
    let embedded =
        cm[0]["data"]["resource.customizations.health.iam.vultr-operator.io_PolicyAttachment"]
            .as_str()
            .expect("the health check key in argocd-cm.yaml");
    assert!(
        embedded == read("deploy/argocd/health.lua"),
        "deploy/argocd/argocd-cm.yaml does not embed deploy/argocd/health.lua verbatim"
    );
}
