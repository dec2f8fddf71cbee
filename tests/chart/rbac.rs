//! The chart's RBAC is minimal: what the ServiceAccount and people's roles may do.

use super::*;

/// `kubectl auth can-i ARGS` for the chart's ServiceAccount, asked twice: with its real
/// static token (`operator.kubeconfig`) and by impersonation from the admin.
pub(super) fn service_account_can(cp: &ControlPlane, args: &[&str]) -> bool {
    let answer = |cmd: &mut Command| {
        let out = output(cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().last().map(str::trim) {
            Some("yes") => true,
            Some("no") => false,
            _ => panic!("kubectl auth can-i {args:?}: {}", combined(&out)),
        }
    };
    let with_token = answer(
        Command::new(cp.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &cp.operator_kubeconfig)
            .args(["auth", "can-i"])
            .args(args),
    );
    let impersonated = answer(
        cp.kubectl()
            .args(["auth", "can-i", &format!("--as={SA_USER}")])
            .args(args),
    );
    assert_eq!(
        with_token, impersonated,
        "token and impersonation disagree on {args:?}"
    );
    with_token
}

/// What the operator needs it has (the attach/revoke above proved it works), and
/// nothing else: no Secrets anywhere, no Pods, no other resources or groups, no Leases
/// outside its namespace or other than its own.
pub(super) fn check_rbac_is_minimal(cp: &ControlPlane, ns: &str) {
    const PA: &str = "policyattachments.iam.vultr-operator.io";
    const LEASES: &str = "leases.coordination.k8s.io";
    let own_lease = format!("{LEASES}/{RELEASE}");
    let our_crd = format!("customresourcedefinitions.apiextensions.k8s.io/{CRD_NAME}");
    let allowed: Vec<Vec<&str>> = vec![
        vec!["list", PA, "-A"],
        vec!["watch", PA, "-A"],
        vec!["get", PA, "-n", ns],
        vec!["patch", PA, "-n", ns],
        vec!["update", PA, "-n", ns],
        vec!["update", PA, "--subresource=finalizers", "-n", ns],
        vec!["patch", PA, "--subresource=status", "-n", ns],
        vec!["create", "events.events.k8s.io", "-n", ns],
        vec!["patch", "events.events.k8s.io", "-n", "default"],
        vec!["create", LEASES, "-n", NAMESPACE],
        vec!["update", &own_lease, "-n", NAMESPACE],
        vec!["watch", &own_lease, "-n", NAMESPACE],
    ];
    for args in &allowed {
        assert!(
            service_account_can(cp, args),
            "the operator may not {args:?}"
        );
    }
    let denied: Vec<Vec<&str>> = vec![
        // Secrets: not in other namespaces, not cluster-wide, not even its own.
        vec!["get", "secrets", "-n", "default"],
        vec!["get", "secrets", "-n", ns],
        vec!["list", "secrets", "-A"],
        vec!["watch", "secrets", "-A"],
        vec!["get", "secrets", "-n", NAMESPACE],
        // Other resources and groups.
        vec!["create", "pods", "-n", NAMESPACE],
        vec!["list", "pods", "-A"],
        vec![
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            NAMESPACE,
        ],
        vec!["list", "configmaps", "-A"],
        vec!["list", "deployments.apps", "-A"],
        vec!["get", "customresourcedefinitions.apiextensions.k8s.io"],
        vec!["update", &our_crd],
        vec!["list", "widgets.chart-test.example.com", "-A"],
        vec!["create", "clusterrolebindings.rbac.authorization.k8s.io"],
        vec!["bind", "clusterroles.rbac.authorization.k8s.io"],
        vec!["impersonate", "users"],
        // Its own resource: never created or deleted by the operator.
        vec!["create", PA, "-n", ns],
        vec!["delete", PA, "-n", ns],
        vec!["deletecollection", PA, "-n", ns],
        vec!["list", "events.events.k8s.io", "-A"],
        // Leases: only its own namespace and its own Lease.
        vec!["create", LEASES, "-n", "default"],
        vec![
            "get",
            "leases.coordination.k8s.io/kube-controller-manager",
            "-n",
            "kube-system",
        ],
        vec![
            "update",
            "leases.coordination.k8s.io/someone-else",
            "-n",
            NAMESPACE,
        ],
        vec!["list", LEASES, "-n", NAMESPACE],
        vec!["delete", &own_lease, "-n", NAMESPACE],
    ];
    for args in &denied {
        assert!(!service_account_can(cp, args), "the operator may {args:?}");
    }
    // And the real thing, with the ServiceAccount's token.
    let out = output(
        Command::new(cp.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &cp.operator_kubeconfig)
            .args(["get", "secrets", "-n", "default"]),
    );
    assert!(!out.status.success());
    assert!(combined(&out).contains("Forbidden"), "{}", combined(&out));
}

/// The chart's ClusterRoles for people work, and the built-in namespace roles do not
/// carry the right to create PolicyAttachments (no aggregation by default).
pub(super) fn check_user_roles(cp: &ControlPlane, ns: &str) {
    for (user, role) in [
        ("pa-editor", "vultr-iam-operator-editor"),
        ("pa-viewer", "vultr-iam-operator-viewer"),
        ("ns-edit", "edit"),
        ("ns-admin", "admin"),
    ] {
        run_ok(cp.kubectl().args([
            "create",
            "rolebinding",
            user,
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
            "-n",
            ns,
        ]));
    }
    let can = |user: &str, verb: &str| {
        let out = output(cp.kubectl().args([
            "auth",
            "can-i",
            verb,
            "policyattachments.iam.vultr-operator.io",
            "-n",
            ns,
            &format!("--as={user}"),
        ]));
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("pa-editor", "create") && can("pa-editor", "delete"));
    assert!(can("pa-viewer", "list") && !can("pa-viewer", "create"));
    for user in ["ns-edit", "ns-admin"] {
        assert!(
            !can(user, "create") && !can(user, "get"),
            "{user} reaches PolicyAttachments through a built-in role"
        );
    }
}
