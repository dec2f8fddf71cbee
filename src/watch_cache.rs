//! The watch caches behind the controllers, slimmed: each object is kept in memory once
//! per lane, so what the operator never reads is dropped before it is stored. The field
//! sets of `managedFields` (most of an object's size) and kubectl's
//! `last-applied-configuration` go; the field managers' names stay (the pair's manager
//! is looked up by name).

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::crd::PolicyAttachment;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A watch of `api` into a slimmed cache: the cache, and the stream of changed objects
/// that drives a controller (`Controller::for_stream`).
pub fn watch(
    api: Api<PolicyAttachment>,
    config: watcher::Config,
) -> (
    Store<PolicyAttachment>,
    impl Stream<Item = Result<PolicyAttachment, watcher::Error>> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .applied_objects()
        .boxed();
    (reader, stream)
}

/// Drops what the operator never reads from a cached object.
pub fn slim(obj: &mut PolicyAttachment) {
    for entry in obj.metadata.managed_fields.iter_mut().flatten() {
        entry.fields_v1 = None;
    }
    if let Some(annotations) = obj.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::status::{PAIR_MANAGER, pair_owned};
    use serde_json::json;

    #[test]
    fn slimming_keeps_what_the_operator_reads() {
        let mut obj: PolicyAttachment = serde_json::from_value(json!({
            "apiVersion": "iam.vultr-operator.io/v1alpha1",
            "kind": "PolicyAttachment",
            "metadata": {
                "name": "a",
                "annotations": {LAST_APPLIED: "{\"spec\":{}}", "team": "dns"},
                "managedFields": [{
                    "manager": PAIR_MANAGER,
                    "operation": "Apply",
                    "subresource": "status",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:status": {"f:policyId": {}}}
                }]
            },
            "spec": {"policy": {"name": "dns-admin"}, "user": {"email": "a@example.com"}}
        }))
        .expect("object");
        slim(&mut obj);
        let fields = obj.metadata.managed_fields.as_ref().expect("managers kept");
        assert_eq!(fields[0].fields_v1, None);
        assert!(
            pair_owned(&obj),
            "the pair's manager is still found by name"
        );
        let annotations = obj.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["team"], "dns");
    }
}
