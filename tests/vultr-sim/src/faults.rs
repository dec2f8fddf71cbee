//! Fault injection: which `/v2` requests to break, and how.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A rule that breaks matching `/v2` requests.
///
/// JSON: `{"method":"POST","path_prefix":"/v2/policies","kind":{"type":"status","status":503},
/// "count":2,"probability":0.5,"until_ms":3000}`; every field but `kind` may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP method to match (any case); `None` matches every method.
    #[serde(default)]
    pub method: Option<String>,
    /// Prefix of the raw request path, e.g. `/v2/policies/abc/users`; `None` matches all.
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub kind: FaultKind,
    /// Break only the next N matching requests (that the probability selected);
    /// `None` means no limit.
    #[serde(default)]
    pub count: Option<u32>,
    /// Break each matching request with this probability; `None` means always.
    #[serde(default)]
    pub probability: Option<f64>,
    /// The fault is active for this long from when it is added (an outage window);
    /// `None` means until cleared.
    #[serde(default, rename = "until_ms", with = "crate::timefmt::opt_duration_ms")]
    pub until: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status and the JSON error body, optionally with `Retry-After`.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Delay, then handle the request normally.
    Latency { ms: u64 },
    /// Hold the request this long, then handle it normally, even if the client has
    /// given up meanwhile: a write Vultr received and applies late.
    Hold { ms: u64 },
    /// Never answer; the client has to time out.
    Hang,
    /// Close the connection without answering.
    Drop,
}

impl Fault {
    /// A fault of `kind` on every `/v2` request, forever; narrow it with the builders.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            method: None,
            path_prefix: None,
            kind,
            count: None,
            probability: None,
            until: None,
        }
    }

    pub fn status(status: u16) -> Self {
        Self::new(FaultKind::Status {
            status,
            retry_after: None,
        })
    }

    pub fn on(mut self, method: Option<&str>, path_prefix: Option<&str>) -> Self {
        self.method = method.map(str::to_owned);
        self.path_prefix = path_prefix.map(str::to_owned);
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }

    pub fn with_probability(mut self, p: f64) -> Self {
        self.probability = Some(p);
        self
    }

    pub fn for_duration(mut self, d: Duration) -> Self {
        self.until = Some(d);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// What the faults decided for one request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Decision {
    /// Summed delay of the latency faults that fired.
    pub(crate) delay: Duration,
    /// The first status/hold/hang/drop fault that fired, if any.
    pub(crate) terminal: Option<FaultKind>,
}

#[derive(Debug)]
struct Active {
    id: u64,
    fault: Fault,
    /// The organisation whose keys' requests it breaks; `None`: every request.
    org: Option<String>,
    deadline: Option<Instant>,
    remaining: Option<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct FaultSet {
    next_id: u64,
    active: Vec<Active>,
}

impl FaultSet {
    /// `org`: break only requests made with a key of the organisation of that name.
    pub(crate) fn add(&mut self, fault: Fault, org: Option<String>, now: Instant) -> u64 {
        self.next_id += 1;
        self.active.push(Active {
            id: self.next_id,
            org,
            deadline: fault.until.map(|d| now + d),
            remaining: fault.count,
            fault,
        });
        self.next_id
    }

    pub(crate) fn remove(&mut self, id: u64) -> bool {
        let before = self.active.len();
        self.active.retain(|a| a.id != id);
        before != self.active.len()
    }

    pub(crate) fn clear(&mut self) {
        self.active.clear();
    }

    /// Active faults with their ids and organisations, expired ones left out.
    pub(crate) fn list(&self, now: Instant) -> Vec<(u64, Option<String>, Fault)> {
        self.active
            .iter()
            .filter(|a| a.deadline.is_none_or(|d| now < d))
            .map(|a| (a.id, a.org.clone(), a.fault.clone()))
            .collect()
    }

    /// Applies the faults, in the order added, to one request of the organisation named
    /// `org` (`None` without a known key). `roll` gives a uniform number in [0, 1) and
    /// is injected for tests.
    pub(crate) fn decide(
        &mut self,
        (method, path, org): (&str, &str, Option<&str>),
        now: Instant,
        mut roll: impl FnMut() -> f64,
    ) -> Decision {
        self.active
            .retain(|a| a.deadline.is_none_or(|d| now < d) && a.remaining != Some(0));
        let mut decision = Decision::default();
        for a in &mut self.active {
            let in_scope = a.org.as_deref().is_none_or(|o| Some(o) == org);
            if !in_scope || !a.fault.matches(method, path) {
                continue;
            }
            let fires = match a.fault.probability {
                None => true,
                Some(p) if p >= 1.0 => true,
                Some(p) if p <= 0.0 => false,
                Some(p) => roll() < p,
            };
            if !fires {
                continue;
            }
            if let Some(n) = a.remaining.as_mut() {
                *n -= 1;
            }
            match &a.fault.kind {
                FaultKind::Latency { ms } => decision.delay += Duration::from_millis(*ms),
                terminal => {
                    decision.terminal = Some(terminal.clone());
                    // Later faults are not consumed by a request that already failed.
                    break;
                }
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_limits_and_expires() {
        let now = Instant::now();
        let mut set = FaultSet::default();
        set.add(
            Fault::status(503)
                .on(Some("post"), Some("/v2/policies"))
                .times(2),
            None,
            now,
        );
        let hit = || {
            Some(FaultKind::Status {
                status: 503,
                retry_after: None,
            })
        };
        assert_eq!(
            set.decide(("GET", "/v2/policies", None), now, || 0.0)
                .terminal,
            None
        );
        assert_eq!(
            set.decide(("POST", "/v2/users", None), now, || 0.0)
                .terminal,
            None
        );
        assert_eq!(
            set.decide(("POST", "/v2/policies/x", None), now, || 0.0)
                .terminal,
            hit()
        );
        assert_eq!(
            set.decide(("POST", "/v2/policies/x", None), now, || 0.0)
                .terminal,
            hit()
        );
        assert_eq!(
            set.decide(("POST", "/v2/policies/x", None), now, || 0.0)
                .terminal,
            None
        );
        assert!(set.list(now).is_empty());
    }

    #[test]
    fn window_and_probability() {
        let now = Instant::now();
        let mut set = FaultSet::default();
        set.add(
            Fault::new(FaultKind::Hang).for_duration(Duration::from_secs(1)),
            None,
            now,
        );
        assert_eq!(
            set.decide(("GET", "/v2", None), now, || 0.0).terminal,
            Some(FaultKind::Hang)
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(
            set.decide(("GET", "/v2", None), later, || 0.0).terminal,
            None
        );

        set.add(Fault::new(FaultKind::Drop).with_probability(0.5), None, now);
        assert_eq!(set.decide(("GET", "/v2", None), now, || 0.7).terminal, None);
        assert_eq!(
            set.decide(("GET", "/v2", None), now, || 0.2).terminal,
            Some(FaultKind::Drop)
        );
    }

    #[test]
    fn latency_adds_up_before_a_terminal_fault() {
        let now = Instant::now();
        let mut set = FaultSet::default();
        set.add(Fault::new(FaultKind::Latency { ms: 10 }), None, now);
        set.add(Fault::new(FaultKind::Latency { ms: 5 }), None, now);
        set.add(Fault::status(500).times(1), None, now);
        let d = set.decide(("GET", "/v2/users", None), now, || 0.0);
        assert_eq!(d.delay, Duration::from_millis(15));
        assert!(matches!(
            d.terminal,
            Some(FaultKind::Status { status: 500, .. })
        ));
        let d = set.decide(("GET", "/v2/users", None), now, || 0.0);
        assert_eq!(d.terminal, None);
    }

    #[test]
    fn hold_is_terminal_and_reads_from_json() {
        let now = Instant::now();
        let mut set = FaultSet::default();
        let f: Fault =
            serde_json::from_str(r#"{"method":"POST","kind":{"type":"hold","ms":8000},"count":1}"#)
                .unwrap();
        assert_eq!(f.kind, FaultKind::Hold { ms: 8000 });
        set.add(f, None, now);
        set.add(Fault::status(500), None, now);
        let d = set.decide(("POST", "/v2/policies/p/users/u", None), now, || 0.0);
        assert_eq!(d.terminal, Some(FaultKind::Hold { ms: 8000 }));
        let d = set.decide(("POST", "/v2/policies/p/users/u", None), now, || 0.0);
        assert!(matches!(
            d.terminal,
            Some(FaultKind::Status { status: 500, .. })
        ));
    }

    #[test]
    fn a_fault_of_one_organisation_spares_the_others() {
        let now = Instant::now();
        let mut set = FaultSet::default();
        set.add(Fault::status(503), Some("b".to_owned()), now);
        let request = |org| ("GET", "/v2/users", org);
        assert_eq!(set.decide(request(Some("a")), now, || 0.0).terminal, None);
        assert_eq!(set.decide(request(None), now, || 0.0).terminal, None);
        assert!(
            set.decide(request(Some("b")), now, || 0.0)
                .terminal
                .is_some()
        );
        assert_eq!(set.list(now)[0].1.as_deref(), Some("b"));
    }

    #[test]
    fn json_shape() {
        let f: Fault = serde_json::from_str(
            r#"{"path_prefix":"/v2/users","kind":{"type":"status","status":429,"retry_after":2},"count":1,"until_ms":500}"#,
        )
        .unwrap();
        assert_eq!(f.until, Some(Duration::from_millis(500)));
        assert_eq!(
            f.kind,
            FaultKind::Status {
                status: 429,
                retry_after: Some(2)
            }
        );
    }
}
