//! What the reconciler's unit tests run on: a fixture builder for PolicyAttachments, an
//! in-memory Kubernetes API for them (GET, and the JSON and merge patches the reconciler
//! sends, the UID tests included; Events are recorded), and a [`Context`] wired to it and
//! to the in-memory Vultr port. A real API server runs in the integration tests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

use crate::boundary::Boundary;
use crate::crd::{FINALIZER, PAUSED_ANNOTATION, PolicyAttachment};
use crate::domain::{Grant, Subject, SubjectKind};
use crate::metrics::Metrics;
use crate::port::memory::InMemory;
use crate::reconcile::backoff::Backoff;
use crate::reconcile::recorder::Recorder;
use crate::reconcile::{Context, Settings};

pub const POLICY: &str = "policy-1";
pub const USER: &str = "user-1";

/// The grant of [`object`]'s default spec in [`org`].
pub fn grant() -> Grant {
    Grant {
        policy_id: POLICY.into(),
        subject: Subject::User(USER.into()),
    }
}

/// An organisation with one policy and one user.
pub fn org() -> InMemory {
    InMemory::default().policy(POLICY, "dns-admin").subject(
        SubjectKind::User,
        USER,
        "alice@example.com",
    )
}

/// A PolicyAttachment fixture: live, with the operator's finalizer, granting
/// `dns-admin` to alice by name; each method changes one thing.
pub struct Object(Value);

pub fn object(name: &str) -> Object {
    Object(json!({
        "apiVersion": "iam.vultr-operator.io/v1alpha1",
        "kind": "PolicyAttachment",
        "metadata": {
            "name": name, "namespace": "team", "uid": format!("uid-{name}"),
            "generation": 1, "finalizers": [FINALIZER],
        },
        "spec": {"policy": {"name": "dns-admin"}, "user": {"email": "alice@example.com"}},
    }))
}

impl Object {
    pub fn spec(mut self, spec: Value) -> Self {
        self.0["spec"] = spec;
        self
    }

    pub fn without_finalizer(mut self) -> Self {
        if let Some(meta) = self.0["metadata"].as_object_mut() {
            meta.remove("finalizers");
        }
        self
    }

    pub fn deleting(mut self) -> Self {
        self.0["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        self
    }

    pub fn paused(mut self) -> Self {
        self.0["metadata"]["annotations"] = json!({PAUSED_ANNOTATION: "true"});
        self
    }

    pub fn orphan(mut self) -> Self {
        self.0["spec"]["deletionPolicy"] = json!("Orphan");
        self
    }

    /// The status of an object whose pair was recorded (and verified, with `ready`).
    pub fn recorded(mut self, grant: &Grant, ready: bool) -> Self {
        let (status, reason) = match ready {
            true => ("True", "Attached"),
            false => ("False", "Attaching"),
        };
        self.0["status"] = json!({
            "policyId": grant.policy_id,
            "subjectKind": grant.subject.kind().as_str(),
            "subjectId": grant.subject.id(),
            "policy": "dns-admin", "subject": "alice@example.com",
            "observedGeneration": 1,
            "conditions": [{
                "type": "Ready", "status": status, "reason": reason, "message": "",
                "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        });
        if ready {
            self.0["status"]["attachedAt"] = json!("2026-01-01T00:00:00Z");
        }
        self
    }

    /// Merges `status` into the status.
    pub fn status(mut self, status: Value) -> Self {
        json_patch::merge(&mut self.0["status"], &status);
        self
    }

    pub fn build(self) -> PolicyAttachment {
        serde_json::from_value(self.0).expect("a PolicyAttachment")
    }
}

/// An Event as the recorder published it.
#[derive(Debug, Clone)]
pub struct Published {
    pub type_: String,
    pub reason: String,
    pub note: String,
}

#[derive(Default)]
struct Store {
    objects: HashMap<(String, String), Value>,
    events: Vec<Published>,
    /// "PATCH policyattachments/a/status"-style lines, in order.
    requests: Vec<String>,
}

/// The in-memory API server.
#[derive(Clone, Default)]
pub struct Cluster {
    store: Arc<Mutex<Store>>,
}

impl Cluster {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put(&self, obj: &PolicyAttachment) {
        let key = (
            obj.metadata.namespace.clone().unwrap_or_default(),
            obj.metadata.name.clone().unwrap_or_default(),
        );
        let value = serde_json::to_value(obj).expect("serialisable");
        self.store().objects.insert(key, value);
    }

    /// The object as the API server holds it now (`None`: gone).
    pub fn get(&self, name: &str) -> Option<PolicyAttachment> {
        let value = self
            .store()
            .objects
            .get(&("team".to_owned(), name.to_owned()))
            .cloned()?;
        Some(serde_json::from_value(value).expect("a PolicyAttachment"))
    }

    pub fn events(&self) -> Vec<Published> {
        self.store().events.clone()
    }

    pub fn reasons(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.reason).collect()
    }

    pub fn requests(&self) -> Vec<String> {
        self.store().requests.clone()
    }

    pub fn client(&self) -> kube::Client {
        let cluster = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let cluster = cluster.clone();
            async move { Ok::<_, Infallible>(cluster.answer(req).await) }
        });
        kube::Client::new(service, "team")
    }

    async fn answer(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().clone();
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let path = req.uri().path().to_owned();
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return status(StatusCode::BAD_REQUEST, "unreadable body"),
        };
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["apis", "events.k8s.io", "v1", "namespaces", _, "events", ..] => {
                if method != Method::POST {
                    // A repeat: the recorder patches the series of the first one.
                    return json_response(StatusCode::OK, &body);
                }
                self.store().events.push(Published {
                    type_: body["type"].as_str().unwrap_or_default().to_owned(),
                    reason: body["reason"].as_str().unwrap_or_default().to_owned(),
                    note: body["note"].as_str().unwrap_or_default().to_owned(),
                });
                json_response(StatusCode::CREATED, &body)
            }
            [
                "apis",
                "iam.vultr-operator.io",
                "v1alpha1",
                "namespaces",
                ns,
                "policyattachments",
                name,
                rest @ ..,
            ] => {
                let line = format!(
                    "{method} policyattachments/{name}{}",
                    rest.iter().map(|r| format!("/{r}")).collect::<String>()
                );
                self.store().requests.push(line);
                let key = ((*ns).to_owned(), (*name).to_owned());
                self.object(&method, &key, &content_type, &body)
            }
            _ => status(StatusCode::NOT_FOUND, "no such route in the fake"),
        }
    }

    fn object(
        &self,
        method: &Method,
        key: &(String, String),
        content_type: &str,
        body: &Value,
    ) -> Response<Body> {
        let mut store = self.store();
        let Some(current) = store.objects.get(key).cloned() else {
            return status(StatusCode::NOT_FOUND, "not found");
        };
        if method == Method::GET {
            return json_response(StatusCode::OK, &current);
        }
        let mut new = current;
        let applied = if content_type.contains("json-patch") {
            serde_json::from_value::<json_patch::Patch>(absent_is_null(&new, body))
                .map_err(|e| e.to_string())
                .and_then(|p| json_patch::patch(&mut new, &p).map_err(|e| e.to_string()))
        } else {
            json_patch::merge(&mut new, body);
            Ok(())
        };
        if let Err(err) = applied {
            return status(StatusCode::UNPROCESSABLE_ENTITY, &err);
        }
        let finalizers_left = new["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if !new["metadata"]["deletionTimestamp"].is_null() && !finalizers_left {
            store.objects.remove(key);
        } else {
            store.objects.insert(key.clone(), new.clone());
        }
        json_response(StatusCode::OK, &new)
    }
}

/// The API server's JSON patch takes a `test` of `null` on a missing path as passed;
/// json-patch fails it: such tests are dropped when the path is indeed missing.
fn absent_is_null(doc: &Value, ops: &Value) -> Value {
    let missing = |op: &Value| {
        op["op"] == "test"
            && op["value"].is_null()
            && op["path"]
                .as_str()
                .is_some_and(|path| doc.pointer(path).is_none_or(Value::is_null))
    };
    match ops.as_array() {
        Some(ops) => Value::Array(ops.iter().filter(|op| !missing(op)).cloned().collect()),
        None => ops.clone(),
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string().into_bytes()));
    *response.status_mut() = code;
    response
}

fn status(code: StatusCode, message: &str) -> Response<Body> {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
        _ => "BadRequest",
    };
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    json_response(code, &body)
}

/// A context on `cluster` and `org`, with the run command's defaults.
pub fn context(cluster: &Cluster, org: Arc<InMemory>) -> Arc<Context> {
    bounded_context(cluster, org, Boundary::default())
}

/// A context whose key has `boundary`.
pub fn bounded_context(cluster: &Cluster, org: Arc<InMemory>, boundary: Boundary) -> Arc<Context> {
    let client = cluster.client();
    let settings = Settings {
        boundary,
        resync_interval: Duration::from_secs(300),
        listing_max_age: Duration::from_secs(10),
        attach_visibility_timeout: Duration::from_secs(30),
        verify_interval: Duration::from_secs(1),
        directory_max_age: Duration::from_secs(60),
    };
    Arc::new(Context::new(
        client.clone(),
        org,
        Recorder::new(client, "vultr-iam-operator".into(), "test".into()),
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        settings,
        Metrics::new(),
        Default::default(),
    ))
}
