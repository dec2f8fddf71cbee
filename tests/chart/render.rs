//! `helm template` and `helm lint`: the CRD copy, what the values render, the schema,
//! the PodDisruptionBudget rules and the values real clusters need.

use super::*;

/// The chart's CRD is `crds/`, byte for byte (`make chart-crds` copies it), and the
/// rendered template is that object plus Helm's labels and the keep annotation.
#[test]
pub(super) fn chart_crd_is_identical_to_crds() {
    let ours: BTreeSet<_> = dir_files("crds");
    let chart: BTreeSet<_> = dir_files(&format!("{CHART}/files/crds"));
    assert_eq!(
        ours, chart,
        "{CHART}/files/crds must hold exactly the files of crds/: run `make chart-crds`"
    );
    for file in &ours {
        assert!(
            read(&format!("crds/{file}")) == read(&format!("{CHART}/files/crds/{file}")),
            "{CHART}/files/crds/{file} differs from crds/{file}: run `make chart-crds`"
        );
    }

    let committed = documents(&read(&format!("crds/{CRD_FILE}")));
    let docs = documents(&render(NAMESPACE, &[]));
    let mut rendered = find(&docs, "CustomResourceDefinition", CRD_NAME).clone();
    let meta = rendered["metadata"].as_object_mut().expect("metadata");
    let annotations = meta.remove("annotations").expect("annotations");
    assert_eq!(
        annotations,
        json!({
            "helm.sh/resource-policy": "keep",
            "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
            "kustomize.toolkit.fluxcd.io/prune": "disabled",
        })
    );
    let labels = meta.remove("labels").expect("labels");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
    assert_eq!(
        rendered, committed[0],
        "the chart renders a CRD that differs from crds/"
    );

    let docs = rendered_with(&["crds.install=false"]);
    assert!(
        !docs.iter().any(|d| d["kind"] == "CustomResourceDefinition"),
        "crds.install=false still renders the CRD"
    );
    let docs = rendered_with(&["crds.keep=false", "crds.annotations=null"]);
    let crd = find(&docs, "CustomResourceDefinition", CRD_NAME);
    assert!(crd["metadata"]["annotations"].is_null(), "{crd:#}");
}

/// Defaults and non-default values render what the chart promises (the server-side
/// dry run is in `renders_pass_a_server_side_dry_run`).
#[test]
pub(super) fn renders_follow_the_values() {
    let docs = documents(&render(NAMESPACE, &[]));
    let deploy = find(&docs, "Deployment", RELEASE);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(deploy);
    assert_eq!(deploy["spec"]["replicas"], 1);
    // Leader election is on by default, so a rolling update is safe.
    assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(pod["serviceAccountName"], RELEASE);
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert!(c["resources"]["requests"]["memory"].is_string());
    let env: Vec<_> = c["env"].as_array().expect("env").iter().collect();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env.iter().find(|e| e["name"] == name).expect(name);
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    assert!(
        !env.iter().any(|e| e["name"] == "VULTR_API_KEY"),
        "the key must come from a mounted file, not the environment"
    );
    let args = args_of(deploy);
    assert!(args.contains(&"--vultr-api-key-file=/var/run/secrets/vultr/api-key".into()));
    // Dual-stack by default: IPv6-only clusters' probes reach it too.
    assert!(args.contains(&"--metrics-bind-address=[::]:8080".into()));
    // Leader election on, the Lease named after the release.
    assert!(args.contains(&"--leader-election".into()), "{args:?}");
    assert!(
        args.contains(&format!("--lease-name={RELEASE}")),
        "{args:?}"
    );
    let role = find(&docs, "Role", "vultr-iam-operator-leader-election");
    assert_eq!(role["rules"][1]["resourceNames"], json!([RELEASE]));
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"], "vultr-api-key",
        "{pod:#}"
    );
    assert_eq!(c["volumeMounts"][0]["readOnly"], true);
    let sa = find(&docs, "ServiceAccount", RELEASE);
    assert_eq!(sa["automountServiceAccountToken"], false);
    // No Secret, nothing optional by default.
    let kinds: BTreeSet<_> = kinds_and_names(&docs).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
    );
    // People's roles exist and are not aggregated into view/edit/admin.
    for role in ["vultr-iam-operator-viewer", "vultr-iam-operator-editor"] {
        let labels = &find(&docs, "ClusterRole", role)["metadata"]["labels"];
        assert!(
            !labels
                .as_object()
                .expect("labels")
                .keys()
                .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to")),
            "{role} is aggregated by default: {labels:#}"
        );
    }

    // The non-default values of the lint/dry-run file.
    let docs = documents(&render("vio-nd", &["-f", NON_DEFAULT_VALUES]));
    let deploy = find(&docs, "Deployment", RELEASE);
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
    let args = args_of(deploy);
    for arg in [
        "--leader-election",
        "--lease-name=vio-leader",
        "--vultr-api-key-file=/var/run/secrets/vultr/token",
        "--metrics-bind-address=[::]:9090",
        "--attach-visibility-timeout=1m",
    ] {
        assert!(args.contains(&arg.to_owned()), "{arg} missing in {args:?}");
    }
    assert!(
        container(deploy)["image"]
            .as_str()
            .expect("image")
            .ends_with("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    assert_eq!(
        deploy["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "vultr-credentials"
    );
    let role = find(&docs, "Role", "vultr-iam-operator-leader-election");
    assert_eq!(role["metadata"]["namespace"], "vio-nd");
    assert_eq!(role["rules"][1]["resourceNames"], json!(["vio-leader"]));
    find(&docs, "RoleBinding", "vultr-iam-operator-leader-election");
    find(&docs, "PodDisruptionBudget", RELEASE);
    find(&docs, "NetworkPolicy", RELEASE);
    assert!(!docs.iter().any(|d| d["kind"] == "ServiceMonitor"));
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"));
    let viewer = find(&docs, "ClusterRole", "vultr-iam-operator-viewer");
    assert_eq!(
        viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );

    // Without leader election: Recreate, no Lease Role; another release derives
    // another Lease name; an IPv4 bind address has no brackets.
    let docs = rendered_with(&[
        "leaderElection.enabled=false",
        "metrics.bindAddress=0.0.0.0",
    ]);
    let deploy = find(&docs, "Deployment", RELEASE);
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    let args = args_of(deploy);
    assert!(!args.iter().any(|a| a.starts_with("--lease")), "{args:?}");
    assert!(!args.contains(&"--leader-election".to_owned()), "{args:?}");
    assert!(args.contains(&"--metrics-bind-address=0.0.0.0:8080".to_owned()));
    assert!(!docs.iter().any(|d| d["kind"] == "Role"));
    let other = documents(&run_ok(offline_helm().args([
        "template",
        "other",
        CHART,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ])));
    let args = args_of(find(&other, "Deployment", "other-vultr-iam-operator"));
    assert!(
        args.contains(&"--lease-name=other-vultr-iam-operator".to_owned()),
        "{args:?}"
    );

    // replicaCount > 1 alone turns on leader election; the chart-made Secret; the
    // ServiceMonitor; watched namespaces bind the ClusterRole there only.
    let docs = rendered_with(&[
        "replicaCount=2",
        "leaderElection.enabled=false",
        "apiKey.create=true",
        "apiKey.value=dummy",
        "serviceMonitor.enabled=true",
        "watchNamespaces={team-a,team-b}",
    ]);
    let deploy = find(&docs, "Deployment", RELEASE);
    let args = args_of(deploy);
    assert!(args.contains(&"--leader-election".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--watch-namespace=team-a".to_owned()),
        "{args:?}"
    );
    let secret = find(&docs, "Secret", "vultr-iam-operator-api-key");
    assert_eq!(secret["data"]["api-key"], "ZHVtbXk=");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "vultr-iam-operator-api-key"
    );
    let monitor = find(&docs, "ServiceMonitor", RELEASE);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    // PolicyAttachment rights stay cluster-wide (they must outlive a watched
    // namespace's RoleBindings during its deletion); Events are bound per namespace.
    let binding = find(&docs, "ClusterRoleBinding", RELEASE);
    assert_eq!(binding["roleRef"]["name"], RELEASE);
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRoleBinding" && d["roleRef"]["name"] != RELEASE)
    );
    let bindings: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" && d["roleRef"]["kind"] == "ClusterRole")
        .map(|d| {
            assert_eq!(d["roleRef"]["name"], "vultr-iam-operator-events");
            d["metadata"]["namespace"].as_str().unwrap_or_default()
        })
        .collect();
    assert_eq!(bindings, ["team-a", "team-b"]);
}

/// Bad values fail `helm template` (and `helm install`, see the install test) with the
/// schema's message naming the value.
#[test]
pub(super) fn bad_values_fail_with_the_schema_message() {
    for (set, expected) in bad_values() {
        let out = output(
            offline_helm()
                .args(["template", RELEASE, CHART, "--kube-version", KUBE_VERSION])
                .args(set.iter().flat_map(|s| ["--set", s])),
        );
        let text = combined(&out);
        assert!(!out.status.success(), "{set:?} rendered: {text}");
        assert!(
            text.contains("values don't meet the specifications of the schema"),
            "{set:?}: {text}"
        );
        assert!(
            text.contains(expected),
            "{set:?}: expected {expected:?} in {text}"
        );
    }
}

pub(super) fn bad_values() -> Vec<(Vec<&'static str>, &'static str)> {
    vec![
        (vec!["replicaCount=-1"], "/replicaCount"),
        (vec!["replicaCount=two"], "/replicaCount"),
        (vec!["apiKey.create=true"], "/apiKey/value"),
        (vec!["apiKey.existingSecret="], "/apiKey/existingSecret"),
        (vec!["logFormat=xml"], "/logFormat"),
        (vec!["resyncInterval=ten minutes"], "/resyncInterval"),
        (vec!["vultr.rateLimit=100"], "/vultr/rateLimit"),
        (vec!["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (vec!["watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (
            vec!["replicas=2"],
            "additional properties 'replicas' not allowed",
        ),
        (
            vec![
                "vultr.caBundle.configMapName=a",
                "vultr.caBundle.secretName=b",
            ],
            "/vultr/caBundle",
        ),
        (
            vec!["podDisruptionBudget.unhealthyPodEvictionPolicy=Sometimes"],
            "/podDisruptionBudget/unhealthyPodEvictionPolicy",
        ),
        (vec!["vultr.httpsProxy=proxy:3128"], "/vultr/httpsProxy"),
        (
            vec!["grafanaDashboard.label=grafana dashboard"],
            "/grafanaDashboard/label",
        ),
    ]
}

/// `helm template` failing with `fail` (not the schema), its message containing `expected`.
pub(super) fn render_fails(set: &[&str], expected: &str) {
    let out = output(
        offline_helm()
            .args(["template", RELEASE, CHART, "--kube-version", KUBE_VERSION])
            .args(set.iter().flat_map(|s| ["--set", *s])),
    );
    let text = combined(&out);
    assert!(!out.status.success(), "{set:?} rendered: {text}");
    assert!(
        text.contains(expected),
        "{set:?}: expected {expected:?} in {text}"
    );
}

pub(super) fn pdb_spec(set: &[&str]) -> Value {
    let mut args = vec!["--set", "podDisruptionBudget.enabled=true"];
    for s in set {
        args.extend(["--set", s]);
    }
    let docs = documents(&render(NAMESPACE, &args));
    find(&docs, "PodDisruptionBudget", RELEASE)["spec"].clone()
}

/// A PDB keeps `maxUnavailable: 0` (no truthiness test turning it into minAvailable),
/// lets unhealthy pods be evicted, and refuses a budget that would block every drain.
#[test]
pub(super) fn pod_disruption_budget_never_blocks_drains_silently() {
    let spec = pdb_spec(&["replicaCount=2"]);
    assert_eq!(spec["minAvailable"], 1, "{spec}");
    assert_eq!(spec["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    let spec = pdb_spec(&["replicaCount=3", "podDisruptionBudget.maxUnavailable=1"]);
    assert_eq!(spec["maxUnavailable"], 1, "{spec}");
    assert!(spec.get("minAvailable").is_none(), "{spec}");
    let spec = pdb_spec(&["replicaCount=2", "podDisruptionBudget.minAvailable=50%"]);
    assert_eq!(spec["minAvailable"], "50%", "{spec}");
    // maxUnavailable 0 is kept as such when blocking drains is asked for.
    let spec = pdb_spec(&[
        "replicaCount=2",
        "podDisruptionBudget.maxUnavailable=0",
        "podDisruptionBudget.allowBlockingDrains=true",
    ]);
    assert_eq!(spec["maxUnavailable"], 0, "{spec}");
    assert!(spec.get("minAvailable").is_none(), "{spec}");
    let spec = pdb_spec(&[
        "replicaCount=2",
        "podDisruptionBudget.unhealthyPodEvictionPolicy=",
    ]);
    assert!(spec.get("unhealthyPodEvictionPolicy").is_none(), "{spec}");
    // Budgets that allow no eviction at all fail the render.
    for set in [
        vec!["podDisruptionBudget.enabled=true"],
        vec![
            "podDisruptionBudget.enabled=true",
            "replicaCount=2",
            "podDisruptionBudget.maxUnavailable=0",
        ],
        vec![
            "podDisruptionBudget.enabled=true",
            "replicaCount=3",
            "podDisruptionBudget.minAvailable=100%",
        ],
        vec![
            "podDisruptionBudget.enabled=true",
            "replicaCount=1",
            "podDisruptionBudget.minAvailable=50%",
        ],
    ] {
        render_fails(&set, "would block");
    }
}

/// What real clusters need: the CA bundle mounted and passed, HTTPS_PROXY and its
/// egress, extraArgs after the chart's flags (the last one wins, see src/cli.rs), the
/// GitOps guards on the CRD, watched namespaces created on request (and kept), common
/// labels everywhere, extra volumes and objects, ServiceMonitor relabelings, the
/// PrometheusRule only on request, kubeVersion enforced.
#[test]
pub(super) fn real_cluster_values_render() {
    let docs = documents(&render(NAMESPACE, &["-f", REAL_CLUSTER_VALUES]));
    let deploy = find(&docs, "Deployment", RELEASE);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(deploy);
    let args = args_of(deploy);
    assert!(
        args.contains(&"--vultr-ca-file=/etc/vultr-iam-operator/vultr-ca/bundle.pem".into()),
        "{args:?}"
    );
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    assert!(mounts.iter().any(|m| m["name"] == "vultr-ca"
        && m["mountPath"] == "/etc/vultr-iam-operator/vultr-ca"
        && m["readOnly"] == true));
    assert!(mounts.iter().any(|m| m["name"] == "scratch"));
    let volumes = pod["volumes"].as_array().expect("volumes");
    let ca = volumes
        .iter()
        .find(|v| v["name"] == "vultr-ca")
        .expect("CA volume");
    assert_eq!(ca["configMap"]["name"], "corporate-ca");
    assert_eq!(ca["configMap"]["items"][0]["key"], "bundle.pem");
    assert!(volumes.iter().any(|v| v["name"] == "scratch"));
    let env = c["env"].as_array().expect("env");
    assert!(
        env.iter()
            .any(|e| e["name"] == "HTTPS_PROXY" && e["value"] == "http://proxy.corp.example:3128")
    );
    // extraArgs come after the chart's own flags, so they override them.
    let chart_flag = args
        .iter()
        .position(|a| a.starts_with("--concurrency="))
        .expect("the chart's --concurrency");
    let extra = args
        .iter()
        .rposition(|a| a == "--concurrency=8")
        .expect("extraArgs' --concurrency");
    assert!(chart_flag < extra, "{args:?}");
    assert!(args.contains(&"--metrics-bind-address=0.0.0.0:8080".into()));
    // The proxy is reachable through the NetworkPolicy.
    let policy = find(&docs, "NetworkPolicy", RELEASE);
    let egress = policy["spec"]["egress"].as_array().expect("egress");
    assert!(
        egress
            .iter()
            .any(|r| r["ports"][0]["port"] == 3128
                && r["to"][0]["ipBlock"]["cidr"] == "10.20.0.10/32"),
        "{egress:#?}"
    );
    // Every object of the chart, and the pods, carry the common labels.
    for doc in docs
        .iter()
        .filter(|d| d["metadata"]["name"] != "vultr-iam-operator-corporate-ca")
    {
        assert_eq!(
            doc["metadata"]["labels"]["example.com/team"], "platform",
            "{}",
            doc["metadata"]["name"]
        );
    }
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["example.com/team"],
        "platform"
    );
    let extra = find(&docs, "ConfigMap", "vultr-iam-operator-corporate-ca");
    assert_eq!(extra["metadata"]["namespace"], NAMESPACE);

    // The CRD carries the GitOps guards by default; they can be replaced.
    let docs = documents(&render(NAMESPACE, &[]));
    let crd = find(&docs, "CustomResourceDefinition", CRD_NAME);
    let annotations = &crd["metadata"]["annotations"];
    assert_eq!(
        annotations["argocd.argoproj.io/sync-options"],
        "Prune=false,Delete=false"
    );
    assert_eq!(annotations["kustomize.toolkit.fluxcd.io/prune"], "disabled");
    assert_eq!(annotations["helm.sh/resource-policy"], "keep");
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "PrometheusRule" || d["kind"] == "Namespace")
    );

    // The kustomize base carries the same guards.
    let built = run_ok(
        Command::new(bin_dir().join("kubectl"))
            .arg("kustomize")
            .arg(repo_path(KUSTOMIZE_BASE)),
    );
    let built = documents(&built);
    let crd = find(&built, "CustomResourceDefinition", CRD_NAME);
    assert_eq!(
        crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"],
        "Prune=false,Delete=false"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/prune"],
        "disabled"
    );

    // Watched namespaces: created on request, kept on uninstall.
    let docs = rendered_with(&["watchNamespaces={team-a}", "createWatchNamespaces=true"]);
    let ns = find(&docs, "Namespace", "team-a");
    assert_eq!(
        ns["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );

    // ServiceMonitor relabelings; the PrometheusRule.
    let docs = rendered_with(&[
        "serviceMonitor.enabled=true",
        "serviceMonitor.relabelings[0].targetLabel=cluster",
        "serviceMonitor.relabelings[0].replacement=prod",
        "prometheusRule.enabled=true",
    ]);
    let monitor = find(&docs, "ServiceMonitor", RELEASE);
    assert_eq!(
        monitor["spec"]["endpoints"][0]["relabelings"][0]["targetLabel"],
        "cluster"
    );
    let rule = find(&docs, "PrometheusRule", RELEASE);
    let alerts: BTreeSet<_> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["alert"].as_str().expect("alert").to_owned())
        .collect();
    for alert in [
        "VultrIamRevocationStuck",
        "VultrIamReconcileErrors",
        "VultrIamVultrRateLimited",
        "VultrIamVultrServerErrors",
        "VultrIamDriftRepaired",
    ] {
        assert!(alerts.contains(alert), "{alert} missing: {alerts:?}");
    }

    // kubeVersion: an older cluster is refused.
    let out =
        output(offline_helm().args(["template", RELEASE, CHART, "--kube-version", "v1.32.0"]));
    assert!(!out.status.success());
    assert!(combined(&out).contains("kubeVersion"), "{}", combined(&out));
}

#[test]
pub(super) fn helm_lint_passes() {
    for args in [
        vec![],
        vec!["-f", NON_DEFAULT_VALUES],
        vec!["-f", REAL_CLUSTER_VALUES],
    ] {
        let out = output(
            offline_helm()
                .args(["lint", "--strict", CHART, "--kube-version", KUBE_VERSION])
                .args(&args),
        );
        assert!(
            out.status.success(),
            "helm lint {args:?}: {}",
            combined(&out)
        );
    }
}

/// The project's helm is built like Helm's release build: it knows the Kubernetes
/// version of its client-go, so `helm template` without `--kube-version` accepts the
/// chart's kubeVersion (a helm without those ldflags assumes v1.20 and refuses it).
#[test]
pub(super) fn helm_template_needs_no_kube_version_flag() {
    let out = output(offline_helm().args(["template", RELEASE, CHART]));
    assert!(out.status.success(), "{}", combined(&out));
    let version = output(offline_helm().args(["version", "--template", "{{.Version}}"]));
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("v3."),
        "{}",
        combined(&version)
    );
}
