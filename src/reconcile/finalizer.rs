//! The finalizer protocol of `kube::runtime::finalizer` (add before Apply, Cleanup
//! before removal), with the object's UID as a precondition on both of its patches: a
//! reconcile of a stale snapshot can never add or remove the finalizer of a re-created
//! object that has the same name. Removing the finalizer of an object that is already
//! gone (a stale snapshot of one whose cleanup finished) is success, not an error.

use std::future::Future;
use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::crd::PolicyAttachment;
use crate::error::Error;

/// What the finalizer protocol does with `obj` (pure; see [`step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Live, finalizer present: reconcile.
    Apply,
    /// Live, no finalizer: add it first; the patch's own watch event brings the Apply.
    AddFinalizer,
    /// Deleted with our finalizer at this index: clean up, then remove it.
    Cleanup(usize),
    /// Deleted without our finalizer: nothing of ours holds it.
    Nothing,
}

pub fn step(obj: &PolicyAttachment, finalizer: &str) -> Step {
    let index = obj.finalizers().iter().position(|f| f == finalizer);
    match (index, obj.meta().deletion_timestamp.is_some()) {
        (Some(_), false) => Step::Apply,
        (None, false) => Step::AddFinalizer,
        (Some(i), true) => Step::Cleanup(i),
        (None, true) => Step::Nothing,
    }
}

/// Runs `reconcile` for `obj` under the finalizer `name`; see the module docs.
pub async fn finalizer<F, Fut>(
    api: &Api<PolicyAttachment>,
    name: &str,
    obj: Arc<PolicyAttachment>,
    reconcile: F,
) -> Result<Action, FinalizerError<Error>>
where
    F: FnOnce(Event<PolicyAttachment>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let object = obj
        .meta()
        .name
        .clone()
        .ok_or(FinalizerError::UnnamedObject)?;
    let uid = obj.uid().ok_or(FinalizerError::UnnamedObject)?;
    match step(&obj, name) {
        Step::Apply => reconcile(Event::Apply(obj))
            .await
            .map_err(FinalizerError::ApplyFailed),
        Step::Cleanup(index) => {
            // The finalizer stays unless the cleanup succeeded.
            let action = reconcile(Event::Cleanup(obj))
                .await
                .map_err(FinalizerError::CleanupFailed)?;
            remove(api, &object, &uid, index, name)
                .await
                .map_err(FinalizerError::RemoveFinalizer)?;
            Ok(action)
        }
        Step::AddFinalizer => {
            let patch = add_patch(&uid, obj.finalizers(), name);
            json_patch(api, &object, patch)
                .await
                .map_err(FinalizerError::AddFinalizer)?;
            Ok(Action::await_change())
        }
        Step::Nothing => Ok(Action::await_change()),
    }
}

/// Removes the finalizer at `index` of the object with `uid`. A failed precondition is
/// success when the object is gone or is another object now (read live to tell).
async fn remove(
    api: &Api<PolicyAttachment>,
    object: &str,
    uid: &str,
    index: usize,
    name: &str,
) -> Result<(), kube::Error> {
    match json_patch(api, object, remove_patch(uid, index, name)).await {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        // 422: a `test` failed: another UID, or the finalizers moved.
        Err(err @ kube::Error::Api(_)) => match api.get_opt(object).await? {
            Some(live) if live.uid().as_deref() == Some(uid) => Err(err),
            _ => Ok(()),
        },
        Err(err) => Err(err),
    }
}

/// Test the UID and the current list (Kubernetes does not deduplicate finalizers: a
/// concurrent add must fail this one), then append.
fn add_patch(uid: &str, current: &[String], name: &str) -> Value {
    let mut ops = vec![json!({"op": "test", "path": "/metadata/uid", "value": uid})];
    if current.is_empty() {
        ops.push(json!({"op": "test", "path": "/metadata/finalizers", "value": null}));
        ops.push(json!({"op": "add", "path": "/metadata/finalizers", "value": [name]}));
    } else {
        ops.push(json!({"op": "test", "path": "/metadata/finalizers", "value": current}));
        ops.push(json!({"op": "add", "path": "/metadata/finalizers/-", "value": name}));
    }
    Value::Array(ops)
}

/// Test the UID and that `index` still holds our finalizer, then remove it.
fn remove_patch(uid: &str, index: usize, name: &str) -> Value {
    let path = format!("/metadata/finalizers/{index}");
    json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "test", "path": path, "value": name},
        {"op": "remove", "path": path},
    ])
}

async fn json_patch(
    api: &Api<PolicyAttachment>,
    object: &str,
    patch: Value,
) -> Result<(), kube::Error> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(object, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FINALIZER;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn object(finalizers: &[&str], deleting: bool) -> PolicyAttachment {
        let mut obj: PolicyAttachment = serde_json::from_value(json!({
            "apiVersion": "iam.vultr-operator.io/v1alpha1",
            "kind": "PolicyAttachment",
            "metadata": {"name": "a", "namespace": "ns", "uid": "uid-a",
                         "finalizers": finalizers},
            "spec": {"policy": {"id": "p"}, "user": {"id": "u"}},
        }))
        .expect("a PolicyAttachment");
        if deleting {
            obj.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        obj
    }

    #[test]
    fn the_step_follows_the_finalizer_and_the_deletion() {
        assert_eq!(step(&object(&[FINALIZER], false), FINALIZER), Step::Apply);
        assert_eq!(step(&object(&[], false), FINALIZER), Step::AddFinalizer);
        assert_eq!(
            step(&object(&["other", FINALIZER], true), FINALIZER),
            Step::Cleanup(1)
        );
        assert_eq!(step(&object(&["other"], true), FINALIZER), Step::Nothing);
    }

    #[test]
    fn every_patch_tests_the_uid_first() {
        for patch in [
            add_patch("uid-a", &[], FINALIZER),
            add_patch("uid-a", &["other".to_owned()], FINALIZER),
            remove_patch("uid-a", 1, FINALIZER),
        ] {
            assert_eq!(
                patch[0],
                json!({"op": "test", "path": "/metadata/uid", "value": "uid-a"})
            );
            serde_json::from_value::<json_patch::Patch>(patch).expect("a JSON patch");
        }
        assert_eq!(
            remove_patch("u", 2, "f")[1],
            json!({"op": "test", "path": "/metadata/finalizers/2", "value": "f"})
        );
        assert_eq!(
            add_patch("u", &["x".to_owned()], "f")[2],
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": "f"})
        );
    }
}
