//! Proves the local control plane is a real Kubernetes: API machinery, RBAC, and the
//! controllers (namespace deletion, garbage collection) the operator relies on.

use vio_harness::e2e::run_ok;
use vio_harness::support;

use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{ControlPlane, OPERATOR_USER, TestNamespace, WAIT, wait_for, wait_gone};

const GROUP: &str = "cp-test.vio.example";
const FINALIZER: &str = "cp-test.vio.example/hold";

async fn admin() -> Client {
    ControlPlane::shared().client().await
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// Installs (server-side apply, idempotent) a tiny namespaced CRD with a status
/// subresource, waits until it is Established, and returns its resource.
async fn widget_crd(client: &Client) -> ApiResource {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("widgets.{GROUP}") },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": { "type": "object", "properties": { "size": { "type": "integer" } } },
                        "status": { "type": "object", "properties": { "phase": { "type": "string" } } }
                    }
                } }
            }]
        }
    }))
    .unwrap();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply("vio-control-plane-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    wait_for("the Widget CRD to become Established", WAIT, || async {
        let crd = crds.get(&name).await.unwrap();
        let conditions = crd.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Widget"), "widgets")
}

fn widget(ar: &ApiResource, name: &str, size: i64, finalizers: &[&str]) -> DynamicObject {
    let mut obj = DynamicObject::new(name, ar).data(json!({ "spec": { "size": size } }));
    obj.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    obj
}

/// A namespace of its own holding the Widget `held`, which carries [`FINALIZER`].
async fn held_widget(client: &Client, prefix: &str) -> (TestNamespace, Api<DynamicObject>) {
    let ar = widget_crd(client).await;
    let ns = TestNamespace::new(client, prefix).await;
    let widgets = Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &ar);
    widgets
        .create(
            &PostParams::default(),
            &widget(&ar, "held", 1, &[FINALIZER]),
        )
        .await
        .unwrap();
    (ns, widgets)
}

/// Removes every finalizer of the Widget `held`.
async fn release_held(widgets: &Api<DynamicObject>) {
    widgets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .unwrap();
}

/// Deletes the namespace `name`; returns the namespaces API.
async fn delete_namespace(client: &Client, name: &str) -> Api<Namespace> {
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    namespaces
}

#[tokio::test]
async fn server_reports_kubernetes_1_37() {
    let info = admin().await.apiserver_version().await.unwrap();
    assert!(
        info.git_version.starts_with("v1.37."),
        "gitVersion {}",
        info.git_version
    );
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "37"));
}

#[tokio::test]
async fn custom_resource_with_status_subresource() {
    let client = admin().await;
    let ar = widget_crd(&client).await;
    let ns = TestNamespace::new(&client, "cp-crd").await;
    let widgets = Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &ar);

    let created = widgets
        .create(&PostParams::default(), &widget(&ar, "w1", 1, &[]))
        .await
        .unwrap();
    let generation = created.metadata.generation;
    let listed = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|w| w.name_any())
            .collect::<Vec<_>>(),
        ["w1"]
    );

    // The status subresource writes status and ignores spec.
    let merge = |size: i64, phase: &str| {
        Patch::Merge(json!({ "spec": { "size": size }, "status": { "phase": phase } }))
    };
    let pp = PatchParams::default();
    let patched = widgets
        .patch_status("w1", &pp, &merge(99, "Ready"))
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(
        patched.data["spec"]["size"], 1,
        "spec changed through /status"
    );
    assert_eq!(
        patched.metadata.generation, generation,
        "status write bumped generation"
    );

    // The main resource writes spec and ignores status.
    let patched = widgets.patch("w1", &pp, &merge(2, "Hacked")).await.unwrap();
    assert_eq!(patched.data["spec"]["size"], 2);
    assert_eq!(
        patched.data["status"]["phase"], "Ready",
        "status changed through main resource"
    );
    assert!(
        patched.metadata.generation > generation,
        "spec write did not bump generation"
    );

    let fetched = widgets.get_status("w1").await.unwrap();
    assert_eq!(fetched.data["status"]["phase"], "Ready");
}

#[tokio::test]
async fn secrets_events_and_leases() {
    let client = admin().await;
    let ns = TestNamespace::new(&client, "cp-core").await;
    let pp = PostParams::default();

    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "api-key" },
        "stringData": { "apiKey": "not-a-real-key" }
    }))
    .unwrap();
    secrets.create(&pp, &secret).await.unwrap();
    let data = secrets.get("api-key").await.unwrap().data.unwrap();
    assert_eq!(data["apiKey"].0, b"not-a-real-key");

    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    let event: Event = serde_json::from_value(json!({
        "metadata": { "name": "w1.attached" },
        "eventTime": now,
        "reportingController": "iam.vultr-operator.io/test",
        "reportingInstance": "test-0",
        "action": "Attach",
        "reason": "Attached",
        "type": "Normal",
        "note": "policy attached",
        "regarding": { "apiVersion": "v1", "kind": "Secret", "namespace": ns.name, "name": "api-key" }
    }))
    .unwrap();
    events.create(&pp, &event).await.unwrap();
    let fetched = events.get("w1.attached").await.unwrap();
    assert_eq!(fetched.reason.as_deref(), Some("Attached"));
    assert_eq!(fetched.regarding.unwrap().name.as_deref(), Some("api-key"));
    // The same Event is visible through the core/v1 API.
    let core = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns.name);
    assert_eq!(
        core.get("w1.attached").await.unwrap().reason.as_deref(),
        Some("Attached")
    );

    let leases = Api::<Lease>::namespaced(client.clone(), &ns.name);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "vultr-iam-operator" },
        "spec": { "holderIdentity": "pod-a", "leaseDurationSeconds": 15, "acquireTime": now, "renewTime": now }
    }))
    .unwrap();
    leases.create(&pp, &lease).await.unwrap();
    let renewed = leases
        .patch(
            "vultr-iam-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "holderIdentity": "pod-b", "leaseTransitions": 1 } })),
        )
        .await
        .unwrap();
    let spec = leases
        .get("vultr-iam-operator")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(renewed.spec.unwrap().lease_duration_seconds, Some(15));
}

#[tokio::test]
async fn service_account_token_needs_a_role_binding() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let operator = cp.operator_client().await;
    let ns = TestNamespace::new(&client, "cp-rbac").await;

    let review = Api::<SelfSubjectReview>::all(operator.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some(OPERATOR_USER));
    let groups = user.groups.unwrap_or_default();
    for group in [
        "system:serviceaccounts",
        "system:serviceaccounts:vultr-iam-operator",
        "system:authenticated",
    ] {
        assert!(
            groups.iter().any(|g| g == group),
            "{group} missing from {groups:?}"
        );
    }

    let secrets = Api::<Secret>::namespaced(operator.clone(), &ns.name);
    let err = secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(
        is_status(&err, 403),
        "expected 403 without a RoleBinding, got {err}"
    );

    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "read-secrets" },
        "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"] }]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "vultr-iam-operator-read-secrets" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets" },
        "subjects": [{ "kind": "ServiceAccount", "name": "vultr-iam-operator", "namespace": "vultr-iam-operator" }]
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<Role>::namespaced(client.clone(), &ns.name)
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns.name)
        .create(&pp, &binding)
        .await
        .unwrap();

    // The RBAC authorizer reads roles from an informer cache: allow it to catch up.
    wait_for("the RoleBinding to allow listing Secrets", WAIT, || async {
        match secrets.list(&ListParams::default()).await {
            Ok(_) => Some(()),
            Err(e) if is_status(&e, 403) => None,
            Err(e) => panic!("list secrets: {e}"),
        }
    })
    .await;
    // The binding is namespaced: other namespaces and verbs stay denied.
    let err = Api::<Secret>::namespaced(operator.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        is_status(&err, 403),
        "expected 403 in namespace default, got {err}"
    );
    let err = secrets
        .delete("anything", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(is_status(&err, 403), "expected 403 for delete, got {err}");
}

#[tokio::test]
async fn deleted_namespace_disappears() {
    let client = admin().await;
    let ar = widget_crd(&client).await;
    let ns = TestNamespace::new(&client, "cp-nsdel").await;
    let pp = PostParams::default();
    let cm: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "cm" }, "data": { "k": "v" } }))
            .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .create(&pp, &cm)
        .await
        .unwrap();
    Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &ar)
        .create(&pp, &widget(&ar, "w1", 1, &[]))
        .await
        .unwrap();

    // The namespace controller deletes the namespace and what it holds.
    let namespaces = delete_namespace(&client, &ns.name).await;
    wait_gone(&namespaces, &ns.name).await;
}

#[tokio::test]
async fn finalizer_holds_deletion_until_removed() {
    let client = admin().await;
    let (_ns, widgets) = held_widget(&client, "cp-final").await;

    widgets
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();
    // Observe for a while: it must stay, marked for deletion.
    for _ in 0..10 {
        let obj = widgets
            .get("held")
            .await
            .expect("object with a finalizer vanished");
        assert!(
            obj.metadata.deletion_timestamp.is_some(),
            "deletionTimestamp not set"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The object goes once its finalizer is removed.
    release_held(&widgets).await;
    wait_gone(&widgets, "held").await;
}

#[tokio::test]
async fn namespace_deletion_waits_for_finalizers_of_its_objects() {
    let client = admin().await;
    let (ns, widgets) = held_widget(&client, "cp-nsfinal").await;

    let namespaces = delete_namespace(&client, &ns.name).await;
    // The namespace controller deletes the object; its finalizer keeps it, and the
    // namespace, until removed.
    wait_for(
        "the namespace controller to delete the Widget",
        WAIT,
        || async {
            widgets
                .get("held")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .map(|_| ())
        },
    )
    .await;
    let phase = namespaces
        .get(&ns.name)
        .await
        .unwrap()
        .status
        .unwrap()
        .phase;
    assert_eq!(phase.as_deref(), Some("Terminating"));

    // The namespace goes once the finalizer is removed.
    release_held(&widgets).await;
    wait_gone(&namespaces, &ns.name).await;
}

#[tokio::test]
async fn garbage_collector_deletes_dependents() {
    let client = admin().await;
    let ns = TestNamespace::new(&client, "cp-gc").await;
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), &ns.name);
    let pp = PostParams::default();
    let owner: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "owner" } })).unwrap();
    let owner = configmaps.create(&pp, &owner).await.unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{ "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap() }]
        }
    }))
    .unwrap();
    configmaps.create(&pp, &dependent).await.unwrap();

    configmaps
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    // The garbage collector deletes the dependent.
    wait_gone(&configmaps, "dependent").await;
}

#[tokio::test]
async fn kubectl_and_helm_reach_the_cluster() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new(&cp.client().await, "cp-cli").await;

    let out = run_ok(cp.kubectl().args(["version", "-o", "json"]));
    let version: serde_json::Value = serde_json::from_str(&out).unwrap();
    for side in ["clientVersion", "serverVersion"] {
        let v = version[side]["gitVersion"].as_str().unwrap_or_default();
        assert!(v.starts_with("v1.37."), "{side} {v}");
    }

    let out = run_ok(
        cp.helm()
            .args(["list", "--namespace", &ns.name, "--output", "json"]),
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!([])
    );
}
