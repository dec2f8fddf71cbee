//! Publishes Events (events.k8s.io/v1) about PolicyAttachments, folding a repeat of the
//! same Event (same object, type, reason and action) within [`SERIES_WINDOW`] into the
//! first one's series, as kube's `Recorder` does. Unlike it, what is kept per Event is
//! its key and name, not the whole Event twice: with thousands of objects attached or
//! revoked at once, that cache was a large part of the operator's memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use serde_json::json;

/// A repeat within this window joins the first Event's series (kube's Recorder: 6 min).
pub const SERIES_WINDOW: Duration = Duration::from_secs(360);

/// What makes two Events the same one: the object (by UID) and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    warning: bool,
    reason: String,
    action: String,
}

/// An Event already created, and how often it has been seen.
#[derive(Debug, Clone)]
struct Sent {
    name: String,
    count: i32,
    last: Instant,
}

/// What publishing an Event does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Publish {
    /// A new Event.
    Create,
    /// A repeat: the existing Event's series, with this count.
    Repeat { name: String, count: i32 },
}

pub struct Recorder {
    client: kube::Client,
    controller: String,
    instance: String,
    sent: Mutex<HashMap<Key, Sent>>,
}

impl Recorder {
    pub fn new(client: kube::Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
            sent: Mutex::default(),
        }
    }

    /// Publishes an Event about `regarding` (which must carry a namespace and a UID).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            warning: type_ == EventType::Warning,
            reason: reason.to_owned(),
            action: action.to_owned(),
        };
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        // A repeat is patched where it was created (the regarding object's namespace).
        let now = Timestamp::now();
        match self.decide(&key, Instant::now()) {
            Publish::Repeat { name, count, .. } => {
                let patch = json!({"series": EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                }});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                self.remember(key, name, count);
            }
            Publish::Create => {
                let name = format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                );
                let event = K8sEvent {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    action: Some(action.to_owned()),
                    reason: Some(reason.to_owned()),
                    note: Some(note),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding.clone()),
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    type_: Some(if key.warning { "Warning" } else { "Normal" }.to_owned()),
                    ..K8sEvent::default()
                };
                api.create(&PostParams::default(), &event).await?;
                self.remember(key, name, 1);
            }
        }
        Ok(())
    }

    /// Create, or join the series of the same Event sent within the window. Forgets
    /// Events older than the window on the way.
    fn decide(&self, key: &Key, now: Instant) -> Publish {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.retain(|_, s| now.saturating_duration_since(s.last) < SERIES_WINDOW);
        match sent.get(key) {
            Some(s) => Publish::Repeat {
                name: s.name.clone(),
                count: s.count.saturating_add(1),
            },
            None => Publish::Create,
        }
    }

    fn remember(&self, key: Key, name: String, count: i32) {
        let sent = Sent {
            name,
            count,
            last: Instant::now(),
        };
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, sent);
    }

    /// Events remembered for folding.
    pub fn tracked(&self) -> usize {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str, reason: &str) -> Key {
        Key {
            uid: uid.into(),
            warning: true,
            reason: reason.into(),
            action: "Revoke".into(),
        }
    }

    fn recorder() -> Recorder {
        // Never contacted: only the folding decision is exercised.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        Recorder::new(client, "c".into(), "i".into())
    }

    #[tokio::test]
    async fn a_repeat_within_the_window_joins_the_series() {
        let r = recorder();
        let t0 = Instant::now();
        assert_eq!(r.decide(&key("a", "ApiUnavailable"), t0), Publish::Create);
        r.remember(key("a", "ApiUnavailable"), "a.1".into(), 1);
        assert_eq!(
            r.decide(&key("a", "ApiUnavailable"), Instant::now()),
            Publish::Repeat {
                name: "a.1".into(),
                count: 2
            }
        );
        assert_eq!(
            r.decide(&key("b", "ApiUnavailable"), Instant::now()),
            Publish::Create,
            "another object"
        );
        assert_eq!(
            r.decide(&key("a", "Forbidden"), Instant::now()),
            Publish::Create,
            "another reason"
        );
        // Past the window the Event is forgotten, and a new one is created.
        let later = Instant::now() + SERIES_WINDOW;
        assert_eq!(
            r.decide(&key("a", "ApiUnavailable"), later),
            Publish::Create
        );
        assert_eq!(r.tracked(), 0);
    }
}
