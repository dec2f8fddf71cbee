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
use prometheus_client::registry::Registry;

use crate::crd::{FINALIZER, PolicyAttachment, READY};
use crate::vultr::{RequestObserver, RequestRecord};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
    reason: &'static str,
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
    oldest_revocation_seconds: Gauge<f64, AtomicU64>,
    drift_repairs: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vultr_iam");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result and reason",
            reconciles.clone(),
        );
        let reconcile_duration = latency_histogram();
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let vultr_requests = Family::<RouteStatusLabels, Counter>::default();
        registry.register(
            "vultr_requests",
            "Vultr API requests by route template and HTTP status (\"none\": no answer)",
            vultr_requests.clone(),
        );
        let vultr_request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "vultr_request_duration_seconds",
            "Latency of Vultr API requests by route template, excluding limiter wait",
            vultr_request_duration.clone(),
        );
        let limiter_wait = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "vultr_limiter_wait_seconds",
            "Time requests waited on the client-side Vultr rate limiter",
            limiter_wait.clone(),
        );
        let attachments = Family::<ReadyLabels, Gauge>::default();
        registry.register(
            "policyattachments",
            "PolicyAttachments by Ready status and reason",
            attachments.clone(),
        );
        let revocations_pending = Gauge::default();
        registry.register(
            "revocations_pending",
            "Deleted PolicyAttachments whose finalizer still holds (revocation not yet confirmed)",
            revocations_pending.clone(),
        );
        let oldest_revocation_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_pending_revocation_age_seconds",
            "Age of the oldest pending revocation (0 when none)",
            oldest_revocation_seconds.clone(),
        );
        let drift_repairs = Counter::default();
        registry.register(
            "drift_repairs",
            "Grants found missing in Vultr and attached again",
            drift_repairs.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            reconcile_duration,
            vultr_requests,
            vultr_request_duration,
            limiter_wait,
            attachments,
            revocations_pending,
            oldest_revocation_seconds,
            drift_repairs,
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

    pub fn drift_repaired(&self) {
        self.drift_repairs.inc();
    }

    /// Recomputes the per-object gauges from the watch cache (called on each scrape).
    pub fn observe_objects(&self, objects: &[Arc<PolicyAttachment>], now: SystemTime) {
        self.attachments.clear();
        let mut pending = 0;
        let mut oldest = Duration::ZERO;
        for obj in objects {
            if let Some(deleted) = &obj.metadata.deletion_timestamp {
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
