//! The CRD rejects bad input at admission with messages a person understands.

use vio_harness::{e2e, support};

use e2e::*;
use support::{ControlPlane, TestNamespace};

/// `kubectl apply` of `manifest`; returns (success, combined output).
fn apply(cp: &ControlPlane, ns: &str, manifest: &str) -> (bool, String) {
    let out = with_stdin(cp.kubectl().args(["apply", "-n", ns, "-f", "-"]), manifest);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn pa(name: &str, spec: &str) -> String {
    raw(name, &format!("spec:\n{spec}"))
}

/// A manifest whose body after `metadata` is `rest` (for a missing or mistyped `spec`).
fn raw(name: &str, rest: &str) -> String {
    format!(
        "apiVersion: iam.vultr-operator.io/v1alpha1\nkind: PolicyAttachment\nmetadata:\n  name: {name}\n{rest}"
    )
}

/// Applies each manifest and checks it is refused with its message; all refusals are
/// checked before failing, so one run lists every case that regressed.
fn expect_rejected(cp: &ControlPlane, ns: &str, cases: &[(String, String, &str)]) {
    let mut failures = Vec::new();
    for (name, manifest, message) in cases {
        let (ok, out) = apply(cp, ns, manifest);
        if ok {
            failures.push(format!("{name}: accepted\n{out}"));
        } else if !out.contains(message) {
            failures.push(format!("{name}: expected {message:?} in:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_rejected_with_their_message() {
    let cp = ControlPlane::shared();
    install_crd(cp);
    let client = cp.client().await;
    let ns = TestNamespace::new(&client, "pa-admission").await;

    let long_name = "x".repeat(257);
    let long_email = format!("{}@example.com", "a".repeat(243));
    assert_eq!(long_email.len(), 255);
    let specs: Vec<(&str, String, &str)> = vec![
        // The policy.
        (
            "no-policy",
            "  user: {email: a@example.com}\n".into(),
            "spec.policy: Required value",
        ),
        (
            "both-policy-keys",
            format!("  policy: {{id: {DNS_ADMIN}, name: dns-admin}}\n  user: {{id: {ALICE}}}\n"),
            "spec.policy: set exactly one of id or name",
        ),
        (
            "no-policy-key",
            format!("  policy: {{}}\n  user: {{id: {ALICE}}}\n"),
            "spec.policy: set exactly one of id or name",
        ),
        (
            "policy-as-string",
            "  policy: dns-admin\n  user: {email: a@example.com}\n".into(),
            "spec.policy: Invalid value: \"string\": spec.policy in body must be of type object",
        ),
        (
            "bad-policy-uuid",
            "  policy: {id: not-a-uuid}\n  user: {email: a@example.com}\n".into(),
            "spec.policy.id must be a UUID",
        ),
        (
            "policy-uuid-without-dashes",
            "  policy: {id: 62948e0db09d4d0895543985b635cb17}\n  user: {email: a@example.com}\n"
                .into(),
            "spec.policy.id must be a UUID",
        ),
        (
            "policy-uuid-too-long",
            format!("  policy: {{id: {DNS_ADMIN}0}}\n  user: {{email: a@example.com}}\n"),
            "spec.policy.id: Too long: may not be more than 36 bytes",
        ),
        (
            "empty-policy-name",
            "  policy: {name: \"\"}\n  user: {email: a@example.com}\n".into(),
            "spec.policy.name in body should be at least 1 chars long",
        ),
        (
            "policy-name-too-long",
            format!("  policy: {{name: {long_name}}}\n  user: {{email: a@example.com}}\n"),
            "spec.policy.name: Too long: may not be more than 256 bytes",
        ),
        (
            "policy-name-with-trailing-space",
            "  policy: {name: \"dns-admin \"}\n  user: {email: a@example.com}\n".into(),
            "spec.policy.name must not start or end with whitespace",
        ),
        (
            // A template that renders an unset value as null.
            "null-policy-id",
            "  policy: {id: null}\n  user: {email: a@example.com}\n".into(),
            "spec.policy: set exactly one of id or name",
        ),
        (
            "unknown-policy-field",
            "  policy: {name: dns-admin, arn: x}\n  user: {email: a@example.com}\n".into(),
            "unknown field \"spec.policy.arn\"",
        ),
        // The subject.
        (
            "no-subject",
            "  policy: {name: dns-admin}\n".into(),
            "set exactly one of spec.user, spec.group or spec.role",
        ),
        (
            "both-subjects",
            "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n  group: {name: ops}\n"
                .into(),
            "set exactly one of spec.user, spec.group or spec.role",
        ),
        (
            "both-user-keys",
            format!("  policy: {{name: dns-admin}}\n  user: {{email: a@example.com, id: {ALICE}}}\n"),
            "spec.user: set exactly one of id or email",
        ),
        (
            "no-user-key",
            "  policy: {name: dns-admin}\n  user: {}\n".into(),
            "spec.user: set exactly one of id or email",
        ),
        (
            "bad-user-uuid",
            "  policy: {name: dns-admin}\n  user: {id: \"1234-abcd\"}\n".into(),
            "spec.user.id must be a UUID",
        ),
        (
            "empty-user-id",
            "  policy: {name: dns-admin}\n  user: {id: \"\"}\n".into(),
            "spec.user.id must be a UUID",
        ),
        (
            "user-id-as-number",
            "  policy: {name: dns-admin}\n  user: {id: 12345}\n".into(),
            "spec.user.id in body must be of type string",
        ),
        (
            "bad-email",
            "  policy: {name: dns-admin}\n  user: {email: alice}\n".into(),
            "spec.user.email must be an email address",
        ),
        (
            "email-with-space",
            "  policy: {name: dns-admin}\n  user: {email: \"alice smith@example.com\"}\n".into(),
            "spec.user.email must be an email address",
        ),
        (
            "email-with-two-at-signs",
            "  policy: {name: dns-admin}\n  user: {email: a@b@example.com}\n".into(),
            "spec.user.email must be an email address",
        ),
        (
            "email-without-domain-dot",
            "  policy: {name: dns-admin}\n  user: {email: alice@localhost}\n".into(),
            "spec.user.email must be an email address",
        ),
        (
            "email-too-long",
            format!("  policy: {{name: dns-admin}}\n  user: {{email: {long_email}}}\n"),
            "spec.user.email: Too long: may not be more than 254 bytes",
        ),
        (
            "null-user-email",
            "  policy: {name: dns-admin}\n  user: {email: null}\n".into(),
            "spec.user: set exactly one of id or email",
        ),
        (
            "unknown-user-field",
            "  policy: {name: dns-admin}\n  user: {mail: a@example.com}\n".into(),
            "unknown field \"spec.user.mail\"",
        ),
        (
            "both-group-keys",
            "  policy: {name: dns-admin}\n  group: {name: ops, id: 7f3e2d1c-0b9a-4876-a543-210fedcba907}\n"
                .into(),
            "spec.group: set exactly one of id or name",
        ),
        (
            "no-group-key",
            "  policy: {name: dns-admin}\n  group: {}\n".into(),
            "spec.group: set exactly one of id or name",
        ),
        (
            "bad-group-uuid",
            "  policy: {name: dns-admin}\n  group: {id: xyz}\n".into(),
            "spec.group.id must be a UUID",
        ),
        (
            "empty-group-name",
            "  policy: {name: dns-admin}\n  group: {name: \"\"}\n".into(),
            "spec.group.name in body should be at least 1 chars long",
        ),
        (
            "blank-group-name",
            "  policy: {name: dns-admin}\n  group: {name: \"   \"}\n".into(),
            "spec.group.name must not start or end with whitespace",
        ),
        (
            "group-name-too-long",
            format!("  policy: {{name: dns-admin}}\n  group: {{name: {long_name}}}\n"),
            "spec.group.name: Too long: may not be more than 256 bytes",
        ),
        (
            "user-and-role",
            "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n  role: {name: auditors}\n"
                .into(),
            "set exactly one of spec.user, spec.group or spec.role",
        ),
        (
            "group-and-role",
            "  policy: {name: dns-admin}\n  group: {name: ops}\n  role: {name: auditors}\n".into(),
            "set exactly one of spec.user, spec.group or spec.role",
        ),
        (
            "both-role-keys",
            format!("  policy: {{name: dns-admin}}\n  role: {{name: auditors, id: {AUDITORS}}}\n"),
            "spec.role: set exactly one of id or name",
        ),
        (
            "no-role-key",
            "  policy: {name: dns-admin}\n  role: {}\n".into(),
            "spec.role: set exactly one of id or name",
        ),
        (
            "bad-role-uuid",
            "  policy: {name: dns-admin}\n  role: {id: auditors}\n".into(),
            "spec.role.id must be a UUID",
        ),
        (
            "blank-role-name",
            "  policy: {name: dns-admin}\n  role: {name: \" auditors\"}\n".into(),
            "spec.role.name must not start or end with whitespace",
        ),
        (
            "unknown-role-field",
            "  policy: {name: dns-admin}\n  role: {title: auditors}\n".into(),
            "unknown field \"spec.role.title\"",
        ),
        // The rest of the spec.
        (
            "unknown-field",
            "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n  colour: blue\n".into(),
            "unknown field \"spec.colour\"",
        ),
        (
            "bad-deletion-policy",
            "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n  deletionPolicy: Keep\n"
                .into(),
            "Unsupported value: \"Keep\": supported values: \"Delete\", \"Orphan\"",
        ),
        (
            "lowercase-deletion-policy",
            "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n  deletionPolicy: orphan\n"
                .into(),
            "Unsupported value: \"orphan\"",
        ),
    ];
    let mut cases: Vec<(String, String, &str)> = specs
        .into_iter()
        .map(|(name, spec, message)| (name.to_owned(), pa(name, &spec), message))
        .collect();
    cases.push((
        "spec-typo".into(),
        raw(
            "spec-typo",
            "specs:\n  policy: {name: dns-admin}\n  user: {email: a@example.com}\n",
        ),
        "unknown field \"specs\"",
    ));
    cases.push((
        "missing-spec".into(),
        raw("missing-spec", ""),
        "spec: Required value",
    ));
    cases.push((
        "spec-as-list".into(),
        raw("spec-as-list", "spec: []\n"),
        "spec in body must be of type object",
    ));
    assert!(cases.len() >= 30, "{} create cases", cases.len());
    expect_rejected(cp, &ns.name, &cases);

    // Immutability: policy, user, group and the subject kind may not change (in value
    // or in form), deletionPolicy may.
    let by_user = "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n";
    let by_group = "  policy: {name: dns-admin}\n  group: {name: ops}\n";
    let by_role = "  policy: {name: dns-admin}\n  role: {name: auditors}\n";
    for (name, spec) in [
        ("user-grant", by_user),
        ("group-grant", by_group),
        ("role-grant", by_role),
    ] {
        let (ok, out) = apply(cp, &ns.name, &pa(name, spec));
        assert!(ok, "{name}: {out}");
    }
    let updates: Vec<(&str, String, &str)> = vec![
        (
            "user-grant",
            "  policy: {name: billing-read}\n  user: {email: a@example.com}\n".into(),
            "spec.policy is immutable: delete and re-create",
        ),
        (
            "user-grant",
            format!("  policy: {{id: {DNS_ADMIN}}}\n  user: {{email: a@example.com}}\n"),
            "spec.policy is immutable: delete and re-create",
        ),
        (
            "user-grant",
            "  policy: {name: dns-admin}\n  user: {email: b@example.com}\n".into(),
            "spec.user is immutable: delete and re-create",
        ),
        (
            "user-grant",
            format!("  policy: {{name: dns-admin}}\n  user: {{id: {ALICE}}}\n"),
            "spec.user is immutable: delete and re-create",
        ),
        (
            "user-grant",
            by_group.into(),
            "the subject kind is immutable",
        ),
        (
            "user-grant",
            "  policy: {name: dns-admin}\n".into(),
            "set exactly one of spec.user, spec.group or spec.role",
        ),
        (
            "group-grant",
            "  policy: {name: dns-admin}\n  group: {name: developers}\n".into(),
            "spec.group is immutable: delete and re-create",
        ),
        (
            "group-grant",
            by_user.into(),
            "the subject kind is immutable",
        ),
        (
            "role-grant",
            "  policy: {name: dns-admin}\n  role: {name: on-call}\n".into(),
            "spec.role is immutable: delete and re-create",
        ),
        (
            "role-grant",
            format!("  policy: {{name: dns-admin}}\n  role: {{id: {AUDITORS}}}\n"),
            "spec.role is immutable: delete and re-create",
        ),
        (
            "role-grant",
            by_group.into(),
            "the subject kind is immutable",
        ),
        (
            "user-grant",
            by_role.into(),
            "the subject kind is immutable",
        ),
    ];
    let updates: Vec<(String, String, &str)> = updates
        .into_iter()
        .enumerate()
        .map(|(i, (name, spec, message))| {
            (format!("update {i} of {name}"), pa(name, &spec), message)
        })
        .collect();
    expect_rejected(cp, &ns.name, &updates);
    let (ok, out) = apply(
        cp,
        &ns.name,
        &pa(
            "user-grant",
            &format!("{by_user}  deletionPolicy: Orphan\n"),
        ),
    );
    assert!(ok, "deletionPolicy change rejected:\n{out}");
    assert!(
        cases.len() + updates.len() >= 25,
        "{} cases in all",
        cases.len() + updates.len()
    );
}
