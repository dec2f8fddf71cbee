//! Prometheus metrics (OpenMetrics text on `/metrics`). Label values are bounded:
//! reasons are the stable error reasons and routes are templates, never IDs or names.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::crd::{FINALIZER, PauseStep, PolicyAttachment, READY};
use crate::vultr::{RequestObserver, RequestRecord};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BoundaryLabels {
    /// "refused" (never sent), "revoked" (made before the boundary narrowed) or
    /// "audited" (made and kept: `Audit`).
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatusLabels {
    route: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: String,
    reason: String,
}

/// Every metric of the operator. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    vultr_requests: Family<RouteStatusLabels, Counter>,
    vultr_request_duration: Family<RouteLabels, Histogram>,
    limiter_wait: Histogram,
    attachments: Family<ReadyLabels, Gauge>,
    revocations_pending: Gauge,
    paused: Gauge,
    oldest_revocation_seconds: Gauge<f64, AtomicU64>,
    drift_repairs: Counter,
    outside_boundary: Family<BoundaryLabels, Counter>,
    verification_batches: Counter,
    last_verification: Gauge<f64, AtomicU64>,
    tracked_entries: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Registers `metric` under `name` and returns it (the registry keeps a clone).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vultr_iam");
        let reconciles = register(
            &mut registry,
            "reconciles",
            "Reconciles by result and reason",
            Family::<ResultLabels, Counter>::default(),
        );
        let reconcile_duration = register(
            &mut registry,
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            latency_histogram(),
        );
        let vultr_requests = register(
            &mut registry,
            "vultr_requests",
            "Vultr API requests by route template and HTTP status (\"none\": no answer)",
            Family::<RouteStatusLabels, Counter>::default(),
        );
        let vultr_request_duration = register(
            &mut registry,
            "vultr_request_duration_seconds",
            "Latency of Vultr API requests by route template, excluding limiter wait",
            Family::<RouteLabels, Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
        );
        let limiter_wait = register(
            &mut registry,
            "vultr_limiter_wait_seconds",
            "Time requests waited on the client-side Vultr rate limiter",
            Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        );
        let attachments = register(
            &mut registry,
            "policyattachments",
            "PolicyAttachments by Ready status and reason",
            Family::<ReadyLabels, Gauge>::default(),
        );
        let revocations_pending = register(
            &mut registry,
            "revocations_pending",
            "Deleted PolicyAttachments whose finalizer still holds (revocation not yet confirmed)",
            Gauge::default(),
        );
        let paused = register(
            &mut registry,
            "paused_policyattachments",
            "PolicyAttachments whose pause annotation currently holds every Vultr call \
             (live, or deleted with the revocation held)",
            Gauge::default(),
        );
        let oldest_revocation_seconds = register(
            &mut registry,
            "oldest_pending_revocation_age_seconds",
            "Age of the oldest pending revocation (0 when none)",
            Gauge::<f64, AtomicU64>::default(),
        );
        let drift_repairs = register(
            &mut registry,
            "drift_repairs",
            "Grants found missing in Vultr and attached again",
            Counter::default(),
        );
        let outside_boundary = register(
            &mut registry,
            "grants_outside_boundary",
            "Grants outside the grant boundary, by what was done: refused, revoked, audited",
            Family::<BoundaryLabels, Counter>::default(),
        );
        let verification_batches = register(
            &mut registry,
            "verification_batch_waits",
            "Verifications put off to batch them with more writes, while attaches were \
             still to come",
            Counter::default(),
        );
        let last_verification = register(
            &mut registry,
            "last_verification_timestamp_seconds",
            "Unix time at which this process last completed a verification pass whose \
             listings all succeeded (0 before the first)",
            Gauge::<f64, AtomicU64>::default(),
        );
        let tracked_entries = register(
            &mut registry,
            "tracked_object_entries",
            "Entries the process keeps about individual objects (per-UID memories, \
             backoffs, locks, declared pairs), as of the last verification pass",
            Gauge::default(),
        );
        Self {
            registry: Arc::new(registry),
            tracked_entries,
            last_verification,
            reconciles,
            reconcile_duration,
            vultr_requests,
            vultr_request_duration,
            limiter_wait,
            attachments,
            revocations_pending,
            paused,
            oldest_revocation_seconds,
            drift_repairs,
            outside_boundary,
            verification_batches,
        }
    }

    pub fn reconciled(&self, took: Duration, error_reason: Option<&'static str>) {
        let labels = match error_reason {
            None => ResultLabels {
                result: "success",
                reason: "",
            },
            Some(reason) => ResultLabels {
                result: "error",
                reason,
            },
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn tracked_entries(&self, n: usize) {
        self.tracked_entries
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn drift_repaired(&self) {
        self.drift_repairs.inc();
    }

    /// A grant outside the boundary was `action` ("refused", "revoked", "audited").
    pub fn outside_boundary(&self, action: &'static str) {
        self.outside_boundary
            .get_or_create(&BoundaryLabels { action })
            .inc();
    }

    /// A verification was put off to batch it (`Verification::Later`).
    pub fn verification_batched(&self) {
        self.verification_batches.inc();
    }

    /// A verification pass fetched every listing it needed at `at`.
    pub fn verified(&self, at: SystemTime) {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.last_verification.set(secs);
    }

    /// Recomputes the per-object gauges from the watch cache (called on each scrape).
    pub fn observe_objects(&self, objects: &[Arc<PolicyAttachment>], now: SystemTime) {
        self.attachments.clear();
        let mut pending = 0;
        let mut paused = 0;
        let mut oldest = Duration::ZERO;
        for obj in objects {
            let pause = obj.pause_step();
            if pause != PauseStep::Proceed {
                paused += 1;
            }
            if let Some(deleted) = &obj.metadata.deletion_timestamp {
                // A held deletion is no revocation in progress: it would page someone
                // for a hold a person asked for. The paused gauge counts it.
                if pause == PauseStep::HoldDeletion {
                    continue;
                }
                if obj.finalizers().iter().any(|f| f == FINALIZER) {
                    pending += 1;
                    let since = SystemTime::from(deleted.0);
                    oldest = oldest.max(now.duration_since(since).unwrap_or_default());
                }
                continue;
            }
            let (ready, reason) = obj
                .status
                .as_ref()
                .and_then(|s| s.condition(READY))
                .map_or(("Unknown".to_owned(), String::new()), |c| {
                    (c.status.clone(), c.reason.clone())
                });
            self.attachments
                .get_or_create(&ReadyLabels { ready, reason })
                .inc();
        }
        self.revocations_pending.set(pending);
        self.paused.set(paused);
        self.oldest_revocation_seconds.set(oldest.as_secs_f64());
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl RequestObserver for Metrics {
    fn on_request(&self, record: &RequestRecord) {
        let status = record
            .status
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        self.vultr_requests
            .get_or_create(&RouteStatusLabels {
                route: record.route,
                status,
            })
            .inc();
        self.vultr_request_duration
            .get_or_create(&RouteLabels {
                route: record.route,
            })
            .observe(record.latency.as_secs_f64());
        self.limiter_wait.observe(record.limiter_wait.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn object(value: serde_json::Value) -> Arc<PolicyAttachment> {
        Arc::new(serde_json::from_value(value).expect("a PolicyAttachment"))
    }

    fn pa(name: &str, ready: &str, reason: &str) -> Arc<PolicyAttachment> {
        object(serde_json::json!({
            "apiVersion": "iam.vultr-operator.io/v1alpha1", "kind": "PolicyAttachment",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"policy": {"name": "p"}, "user": {"email": "a@example.com"}},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": reason,
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
    }

    /// Checks that the encoded registry has each of `lines`.
    fn assert_shows(metrics: &Metrics, lines: &[&str]) {
        let text = metrics.encode().expect("encode");
        for line in lines {
            assert!(text.contains(line), "{line} not in {text}");
        }
    }

    #[test]
    fn object_gauges_count_ready_states_and_pending_revocations() {
        let metrics = Metrics::new();
        let deleted_at = Timestamp::from_second(1_000).expect("timestamp");
        let mut deleting = (*pa("gone", "False", "ApiUnavailable")).clone();
        deleting.metadata.deletion_timestamp = Some(Time(deleted_at));
        deleting.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        let objects = vec![
            pa("a", "True", "Attached"),
            pa("b", "True", "Attached"),
            pa("c", "False", "PolicyNotFound"),
            Arc::new(deleting),
        ];
        let now = SystemTime::from(Timestamp::from_second(1_090).expect("timestamp"));
        metrics.observe_objects(&objects, now);
        assert_shows(
            &metrics,
            &[
                r#"vultr_iam_policyattachments{ready="True",reason="Attached"} 2"#,
                r#"vultr_iam_policyattachments{ready="False",reason="PolicyNotFound"} 1"#,
                "vultr_iam_revocations_pending 1",
                "vultr_iam_oldest_pending_revocation_age_seconds 90.0",
                "vultr_iam_paused_policyattachments 0",
            ],
        );

        // A paused object counts, live or with its deletion held (not as a pending
        // revocation then); a value other than "true" does not pause.
        let pause = |obj: &PolicyAttachment, value: &str| {
            let mut obj = obj.clone();
            obj.metadata.annotations =
                Some([(crate::crd::PAUSED_ANNOTATION.to_owned(), value.to_owned())].into());
            Arc::new(obj)
        };
        let paused = vec![
            pause(&objects[0], "true"),
            pause(&objects[1], "True"),
            pause(&objects[3], "true"),
        ];
        metrics.observe_objects(&paused, now);
        assert_shows(
            &metrics,
            &[
                "vultr_iam_paused_policyattachments 2",
                "vultr_iam_revocations_pending 0",
            ],
        );

        // A later scrape forgets states no object has any more.
        metrics.observe_objects(&objects[..1], now);
        assert_shows(&metrics, &["vultr_iam_revocations_pending 0"]);
        let text = metrics.encode().expect("encode");
        assert!(!text.contains("PolicyNotFound"), "{text}");
    }

    #[test]
    fn the_last_verification_is_a_unix_timestamp() {
        let metrics = Metrics::new();
        assert_shows(
            &metrics,
            &["vultr_iam_last_verification_timestamp_seconds 0.0"],
        );
        metrics.verified(SystemTime::from(Timestamp::from_second(1_234).expect("ts")));
        assert_shows(
            &metrics,
            &["vultr_iam_last_verification_timestamp_seconds 1234.0"],
        );
    }

    #[test]
    fn vultr_requests_are_labelled_by_route_template_and_status() {
        let metrics = Metrics::new();
        metrics.on_request(&RequestRecord {
            route: "GET /v2/policies/{policy_id}/users",
            status: None,
            latency: Duration::from_millis(20),
            limiter_wait: Duration::from_millis(5),
            outcome: "ApiUnavailable",
        });
        assert_shows(
            &metrics,
            &[
                r#"vultr_iam_vultr_requests_total{route="GET /v2/policies/{policy_id}/users",status="none"} 1"#,
                "vultr_iam_vultr_limiter_wait_seconds_count 1",
            ],
        );
    }
}
