//! Publishes Events (events.k8s.io/v1) about PolicyAttachments, folding a repeat of the
//! same Event (same object, type, reason and action) within [`SERIES_WINDOW`] into the
//! first one's series, as kube's `Recorder` does. Unlike it, what is kept per Event is
//! its key and name, not the whole Event twice, and an object's Events are forgotten
//! with the object: with thousands of objects attached or revoked at once, that cache
//! was a large part of the operator's memory.

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

/// What makes two Events of one object the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    warning: bool,
    reason: String,
    action: String,
}

/// An Event already created, and how often it has been seen.
#[derive(Debug, Clone)]
struct Sent {
    key: Key,
    name: String,
    count: i32,
    last: Instant,
}

/// The Events sent per object UID, and when the old ones were last dropped.
#[derive(Debug, Default)]
struct SentEvents {
    by_uid: HashMap<String, Vec<Sent>>,
    swept: Option<Instant>,
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
    sent: Mutex<SentEvents>,
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
        let uid = regarding.uid.clone().unwrap_or_default();
        let key = Key {
            warning: type_ == EventType::Warning,
            reason: reason.to_owned(),
            action: action.to_owned(),
        };
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        // A repeat is patched where it was created (the regarding object's namespace).
        let now = Timestamp::now();
        match self.decide(&uid, &key, Instant::now()) {
            Publish::Repeat { name, count, .. } => {
                let patch = json!({"series": EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                }});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                self.remember(uid, key, name, count);
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
                self.remember(uid, key, name, 1);
            }
        }
        Ok(())
    }

    /// Create, or join the series of the same Event sent within the window. Drops the
    /// Events older than the window, at most once per window.
    fn decide(&self, uid: &str, key: &Key, now: Instant) -> Publish {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = |s: &Sent| now.saturating_duration_since(s.last) < SERIES_WINDOW;
        if sent
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= SERIES_WINDOW)
        {
            sent.by_uid.retain(|_, events| {
                events.retain(fresh);
                !events.is_empty()
            });
            sent.swept = Some(now);
        }
        let same = sent
            .by_uid
            .get(uid)
            .and_then(|events| events.iter().find(|s| &s.key == key && fresh(s)));
        match same {
            Some(s) => Publish::Repeat {
                name: s.name.clone(),
                count: s.count.saturating_add(1),
            },
            None => Publish::Create,
        }
    }

    fn remember(&self, uid: String, key: Key, name: String, count: i32) {
        let sent = Sent {
            key,
            name,
            count,
            last: Instant::now(),
        };
        let mut all = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let events = all.by_uid.entry(uid).or_default();
        events.retain(|s| s.key != sent.key);
        events.push(sent);
    }

    /// The object is gone: no repeat of its Events can come.
    pub fn forget(&self, uid: &str) {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_uid
            .remove(uid);
    }

    /// Events remembered for folding.
    pub fn tracked(&self) -> usize {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_uid
            .values()
            .map(Vec::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> Key {
        Key {
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
        let unavailable = key("ApiUnavailable");
        assert_eq!(r.decide("a", &unavailable, t0), Publish::Create);
        r.remember("a".into(), unavailable.clone(), "a.1".into(), 1);
        assert_eq!(
            r.decide("a", &unavailable, Instant::now()),
            Publish::Repeat {
                name: "a.1".into(),
                count: 2
            }
        );
        r.remember("a".into(), unavailable.clone(), "a.1".into(), 2);
        assert_eq!(r.tracked(), 1, "a repeat replaces its entry");
        assert_eq!(
            r.decide("b", &unavailable, Instant::now()),
            Publish::Create,
            "another object"
        );
        assert_eq!(
            r.decide("a", &key("Forbidden"), Instant::now()),
            Publish::Create,
            "another reason"
        );
        // Past the window the Event is forgotten, and a new one is created.
        let later = Instant::now() + SERIES_WINDOW;
        assert_eq!(r.decide("a", &unavailable, later), Publish::Create);
        assert_eq!(r.tracked(), 0);
    }

    #[tokio::test]
    async fn a_forgotten_object_keeps_no_event() {
        let r = recorder();
        r.remember("a".into(), key("Revoked"), "a.1".into(), 1);
        r.remember("b".into(), key("Revoked"), "b.1".into(), 1);
        r.forget("a");
        assert_eq!(r.tracked(), 1);
        assert_eq!(
            r.decide("a", &key("Revoked"), Instant::now()),
            Publish::Create
        );
    }
}
