//! The watch caches behind the controllers, slimmed: each object is kept in memory once
//! per lane, so what the operator never reads is dropped before it is stored:
//! `managedFields` (most of an object's size) and kubectl's
//! `last-applied-configuration` go. The deleted lane keeps only the identity of a live object:
//! it acts on deleted ones alone, and a deletion arrives as a new event with the whole
//! object.

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::crd::PolicyAttachment;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Shared list of watch caches, filled once the controllers start.
pub type Stores = std::sync::Arc<std::sync::Mutex<Vec<Store<PolicyAttachment>>>>;

/// Which lane a cache serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Live,
    Deleted,
}

impl Lane {
    /// The server-side timeout of the lane's watch requests. The two differ only so that
    /// each lane's watch can be told apart on the wire (`timeoutSeconds=`): the tests
    /// delay one lane's watch with a proxy, the interleaving a loaded API server makes.
    pub const fn watch_timeout_secs(self) -> u32 {
        match self {
            Lane::Live => 290,
            Lane::Deleted => 295,
        }
    }
}

/// A watch of `api` into a slimmed cache: the cache, and the stream of changed objects
/// that drives a controller (`Controller::for_stream`).
pub(crate) fn watch(
    api: Api<PolicyAttachment>,
    config: watcher::Config,
    lane: Lane,
) -> (
    Store<PolicyAttachment>,
    impl Stream<Item = Result<PolicyAttachment, watcher::Error>> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config.timeout(lane.watch_timeout_secs()))
        .default_backoff()
        .modify(move |obj| slim(obj, lane))
        .reflect(writer)
        .applied_objects()
        .boxed();
    (reader, stream)
}

/// Drops what the operator never reads from a cached object.
pub(crate) fn slim(obj: &mut PolicyAttachment, lane: Lane) {
    if lane == Lane::Deleted && obj.metadata.deletion_timestamp.is_none() {
        obj.metadata.managed_fields = None;
        obj.metadata.annotations = None;
        obj.metadata.labels = None;
        obj.status = None;
        return;
    }
    obj.metadata.managed_fields = None;
    if let Some(annotations) = obj.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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
                    "manager": "vultr-iam-operator-status",
                    "operation": "Apply",
                    "subresource": "status",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:status": {"f:policyId": {}}}
                }]
            },
            "spec": {"policy": {"name": "dns-admin"}, "user": {"email": "a@example.com"}}
        }))
        .expect("object");
        let whole = obj.clone();
        slim(&mut obj, Lane::Live);
        assert!(obj.metadata.managed_fields.is_none());
        let annotations = obj.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["team"], "dns");

        // The deleted lane keeps a live object's identity only, a deleted one in full.
        let mut live = whole.clone();
        slim(&mut live, Lane::Deleted);
        assert_eq!(live.metadata.name, whole.metadata.name);
        assert!(live.metadata.managed_fields.is_none() && live.metadata.annotations.is_none());
        let mut deleted = whole.clone();
        deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut slimmed = deleted.clone();
        slim(&mut slimmed, Lane::Deleted);
        assert!(slimmed.metadata.managed_fields.is_none());
        assert_eq!(slimmed.spec, deleted.spec);
        assert_eq!(
            slimmed.metadata.annotations.as_ref().map(|a| a.len()),
            Some(1)
        );
    }
}
