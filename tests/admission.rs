//! The CRD rejects bad input at admission with messages a person understands.

mod e2e;
mod support;

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
    format!(
        "apiVersion: iam.vultr-operator.io/v1alpha1\nkind: PolicyAttachment\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_rejected_with_their_message() {
    let cp = ControlPlane::shared();
    install_crd(cp);
    let client = cp.client().await;
    let ns = TestNamespace::new(&client, "pa-admission").await;

    let cases = [
        (
            "both-policy-keys",
            "  policy: {id: 62948e0d-b09d-4d08-9554-3985b635cb17, name: dns-admin}\n  user: {id: 8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b}\n",
            "spec.policy: set exactly one of id or name",
        ),
        (
            "no-policy-key",
            "  policy: {}\n  user: {id: 8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b}\n",
            "spec.policy: set exactly one of id or name",
        ),
        (
            "no-subject",
            "  policy: {name: dns-admin}\n",
            "set exactly one of spec.user or spec.group",
        ),
        (
            "both-subjects",
            "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n  group: {name: ops}\n",
            "set exactly one of spec.user or spec.group",
        ),
        (
            "both-user-keys",
            "  policy: {name: dns-admin}\n  user: {email: a@example.com, id: 8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b}\n",
            "spec.user: set exactly one of id or email",
        ),
        (
            "both-group-keys",
            "  policy: {name: dns-admin}\n  group: {name: ops, id: 7f3e2d1c-0b9a-4876-a543-210fedcba907}\n",
            "spec.group: set exactly one of id or name",
        ),
        (
            "bad-policy-uuid",
            "  policy: {id: not-a-uuid}\n  user: {email: a@example.com}\n",
            "spec.policy.id must be a UUID",
        ),
        (
            "bad-user-uuid",
            "  policy: {name: dns-admin}\n  user: {id: \"1234-abcd\"}\n",
            "spec.user.id must be a UUID",
        ),
        (
            "bad-group-uuid",
            "  policy: {name: dns-admin}\n  group: {id: xyz}\n",
            "spec.group.id must be a UUID",
        ),
        (
            "bad-email",
            "  policy: {name: dns-admin}\n  user: {email: alice}\n",
            "spec.user.email must be an email address",
        ),
        (
            "unknown-field",
            "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n  colour: blue\n",
            "unknown field \"spec.colour\"",
        ),
        (
            "bad-deletion-policy",
            "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n  deletionPolicy: Keep\n",
            "Unsupported value: \"Keep\"",
        ),
    ];
    for (name, spec, message) in cases {
        let (ok, out) = apply(cp, &ns.name, &pa(name, spec));
        assert!(!ok, "{name} was accepted:\n{out}");
        assert!(
            out.contains(message),
            "{name}: expected {message:?} in:\n{out}"
        );
    }

    // Immutability: policy/user/group may not change, deletionPolicy may.
    let good = "  policy: {name: dns-admin}\n  user: {email: a@example.com}\n";
    let (ok, out) = apply(cp, &ns.name, &pa("immutable", good));
    assert!(ok, "{out}");
    for (spec, message) in [
        (
            "  policy: {name: billing-read}\n  user: {email: a@example.com}\n",
            "spec.policy is immutable: delete and re-create",
        ),
        (
            "  policy: {name: dns-admin}\n  user: {email: b@example.com}\n",
            "spec.user is immutable: delete and re-create",
        ),
        (
            "  policy: {name: dns-admin}\n  group: {name: ops}\n",
            "the subject kind is immutable",
        ),
    ] {
        let (ok, out) = apply(cp, &ns.name, &pa("immutable", spec));
        assert!(!ok, "change accepted: {spec}\n{out}");
        assert!(out.contains(message), "expected {message:?} in:\n{out}");
    }
    let (ok, out) = apply(
        cp,
        &ns.name,
        &pa("immutable", &format!("{good}  deletionPolicy: Orphan\n")),
    );
    assert!(ok, "deletionPolicy change rejected:\n{out}");
}
