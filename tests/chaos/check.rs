//! The invariants of the chaos run, as a pure function of the end state, so that each
//! one is shown to fail on a hand-made state (the tests below) before it is trusted to
//! pass on a real one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::model::{EndState, LeaseSample, Pair, Write};

/// A holder's time with the Lease: from its acquireTime to its last observed renewal.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenure {
    pub holder: String,
    pub start: SystemTime,
    pub last_renew: SystemTime,
}

/// Groups lease samples into tenures: one per (holder, acquireTime).
pub fn tenures(samples: &[LeaseSample]) -> Vec<Tenure> {
    let mut out: Vec<Tenure> = Vec::new();
    let mut index: BTreeMap<(String, Option<SystemTime>), usize> = BTreeMap::new();
    for s in samples {
        let Some(holder) = s.holder.clone().filter(|h| !h.is_empty()) else {
            continue;
        };
        let renew = s.renew.unwrap_or(s.seen);
        match index.get(&(holder.clone(), s.acquire)) {
            Some(&i) => {
                let t = &mut out[i];
                t.last_renew = t.last_renew.max(renew);
            }
            None => {
                index.insert((holder.clone(), s.acquire), out.len());
                out.push(Tenure {
                    holder,
                    start: s.acquire.unwrap_or(s.seen),
                    last_renew: renew,
                });
            }
        }
    }
    out
}

/// What the run found; every list empty (and no leaked key) means the promise held.
#[derive(Debug, Default)]
pub struct Findings {
    /// Live objects (not Orphan) whose grant is absent from Vultr.
    pub missing_grants: Vec<String>,
    /// Live objects that are not Ready=True.
    pub not_ready: Vec<String>,
    /// Live objects whose recorded pair is not the one declared.
    pub wrong_pair: Vec<String>,
    /// Pairs still in Vultr whose declaring objects are all gone (deletionPolicy Delete).
    pub lost_revocations: Vec<Pair>,
    /// Objects still Terminating.
    pub stuck: Vec<String>,
    /// Grants attached out of band (never declared) that the operator removed.
    pub foreign_removed: Vec<Pair>,
    /// Log files with a panic.
    pub panics: Vec<String>,
    /// Writes sent by a replica while it did not hold the Lease.
    pub unleased_writes: Vec<String>,
    /// Writes whose sender could not be told (no User-Agent journaled).
    pub unattributed_writes: usize,
    /// POSTs naming an object after its name was reused: the name resolved to it (the
    /// only object that named it before was Ready, so needs none).
    pub replaced_grants: Vec<String>,
    /// Live objects recording the object created under a reused name.
    pub reuse_resolved: usize,
    /// Requests refused with 401: a key still used after its removal.
    pub refused: Vec<String>,
    /// (label, occurrences) of the API keys.
    pub key_leaks: Vec<(String, usize)>,
    /// Replicas that did not exit cleanly within [`STOP_WITHIN`] of SIGTERM.
    pub slow_stops: Vec<String>,
    /// Live objects present at the end.
    pub live: usize,
}

/// The promise of SIGTERM: the process exits (and releases the Lease) within this.
pub const STOP_WITHIN: Duration = Duration::from_secs(5);

impl Findings {
    /// One line per violated invariant; empty if all held.
    pub fn violations(&self) -> Vec<String> {
        let leaks: usize = self.key_leaks.iter().map(|(_, n)| n).sum();
        let leak = self.key_leaks.first().map(|(l, n)| format!("{n} in {l}"));
        let found = [
            (
                "live objects without their grant",
                tally(&self.missing_grants),
            ),
            ("live objects not Ready=True", tally(&self.not_ready)),
            (
                "live objects recording another pair",
                tally(&self.wrong_pair),
            ),
            ("lost revocations", tally(&self.lost_revocations)),
            ("objects stuck Terminating", tally(&self.stuck)),
            ("foreign grants removed", tally(&self.foreign_removed)),
            ("logs with a panic", tally(&self.panics)),
            (
                "Vultr writes without the Lease",
                tally(&self.unleased_writes),
            ),
            (
                "Vultr writes not attributable to a replica (no User-Agent identity journaled: \
                 the Lease check cannot run)",
                (self.unattributed_writes, None),
            ),
            (
                "grants written to an object whose name was reused",
                tally(&self.replaced_grants),
            ),
            (
                "Vultr requests refused 401 (a key used after its removal)",
                tally(&self.refused),
            ),
            (
                "replicas not stopped cleanly within 5 s of SIGTERM",
                tally(&self.slow_stops),
            ),
            ("API key occurrences", (leaks, leak)),
        ];
        found
            .into_iter()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(what, (n, sample))| match sample {
                Some(sample) => format!("{what}: {n} (e.g. {sample})"),
                None => format!("{what}: {n}"),
            })
            .collect()
    }
}

/// How many, and the first as an example.
fn tally<T: ToString>(list: &[T]) -> (usize, Option<String>) {
    (list.len(), list.first().map(ToString::to_string))
}

pub fn check(state: &EndState) -> Findings {
    let mut f = Findings::default();
    let attached: BTreeSet<&Pair> = state.attached.iter().collect();
    let declared: BTreeMap<String, &super::model::Declared> =
        state.declared.iter().map(|d| (d.key(), d)).collect();

    // Live objects: Ready=True, their recorded pair is the declared one, and it is in
    // Vultr (Orphan ones too: Orphan only changes what a deletion does).
    let mut present_pairs: BTreeSet<Pair> = BTreeSet::new();
    for obj in &state.present {
        let key = obj.key();
        let expected = declared.get(&key).map(|d| d.pair.clone());
        if let Some(p) = expected.clone().or_else(|| obj.recorded.clone()) {
            present_pairs.insert(p);
        }
        if let Some(p) = &obj.recorded {
            present_pairs.insert(p.clone());
        }
        if obj.terminating {
            f.stuck
                .push(format!("{key} (finalizers {:?})", obj.finalizers));
            continue;
        }
        f.live += 1;
        match &obj.ready {
            Some((status, _)) if status == "True" => {}
            other => f.not_ready.push(format!("{key} Ready={other:?}")),
        }
        match (&expected, &obj.recorded) {
            (Some(e), Some(r)) if e != r => f
                .wrong_pair
                .push(format!("{key}: declared {e}, recorded {r}")),
            _ => {}
        }
        if let Some(pair) = expected.or_else(|| obj.recorded.clone())
            && !attached.contains(&pair)
        {
            f.missing_grants.push(format!("{key}: {pair}"));
        }
    }

    // Pairs whose declarers are all gone: absent, unless one of them was Orphan.
    let mut orphan_pairs: BTreeSet<&Pair> = BTreeSet::new();
    for d in &state.declared {
        if d.orphan {
            orphan_pairs.insert(&d.pair);
        }
    }
    let mut lost: BTreeSet<Pair> = BTreeSet::new();
    for d in &state.declared {
        if !present_pairs.contains(&d.pair)
            && !orphan_pairs.contains(&d.pair)
            && attached.contains(&d.pair)
        {
            lost.insert(d.pair.clone());
        }
    }
    f.lost_revocations = lost.into_iter().collect();

    f.foreign_removed = state
        .foreign
        .iter()
        .filter(|p| !attached.contains(p))
        .cloned()
        .collect();

    for log in &state.logs {
        if log.text.contains("panicked at") {
            f.panics.push(log.label.clone());
        }
    }

    // A reused name resolves to the new object. Objects naming it that are live at the
    // end record their declared pair (the new object's), checked above; the journal
    // shows whether any object was granted the old one after the reuse.
    for r in &state.replaced {
        f.reuse_resolved += state
            .present
            .iter()
            .filter(|o| o.recorded.as_ref().is_some_and(|p| p.subject == r.new))
            .count();
        for w in &state.writes {
            if w.method == "POST" && w.at >= r.at && w.path.split('/').any(|s| s == r.old) {
                f.replaced_grants.push(describe(w));
            }
        }
    }
    f.refused = state.refused.iter().map(describe).collect();

    let tenures = tenures(&state.lease);
    for w in &state.writes {
        match sender(w, &state.identities) {
            None => f.unattributed_writes += 1,
            Some(who) => {
                if !held_at(&tenures, who, w.at, state.margin) {
                    f.unleased_writes.push(format!(
                        "{} {} ({}) by {who} at {}",
                        w.method,
                        w.path,
                        w.status,
                        unix_ms(w.at)
                    ));
                }
            }
        }
    }

    for s in &state.stops {
        match s.after {
            Some(after) if after <= STOP_WITHIN && s.clean => {}
            Some(after) => f.slow_stops.push(format!(
                "{} exited {} after {after:.1?}",
                s.identity,
                if s.clean { "cleanly" } else { "with an error" }
            )),
            None => f
                .slow_stops
                .push(format!("{} still running, SIGKILLed", s.identity)),
        }
    }

    for c in state.logs.iter().chain(&state.texts) {
        let n: usize = state
            .secrets
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| c.text.matches(k.as_str()).count())
            .sum();
        if n > 0 {
            f.key_leaks.push((c.label.clone(), n));
        }
    }
    f
}

fn describe(w: &Write) -> String {
    format!(
        "{} {} ({}) by {} at {}",
        w.method,
        w.path,
        w.status,
        w.agent.as_deref().unwrap_or("?"),
        unix_ms(w.at)
    )
}

/// The replica incarnation named in the write's User-Agent.
fn sender<'a>(w: &Write, identities: &'a [String]) -> Option<&'a str> {
    let agent = w.agent.as_deref()?;
    identities
        .iter()
        .find(|id| agent.contains(id.as_str()))
        .map(String::as_str)
}

/// True if `who` held the Lease at `at`: within one of its tenures, extended by `margin`
/// after its last renewal (the renew deadline: until then it may believe it leads), and
/// by a small slack before its acquireTime (the time is written by the holder's clock,
/// and its first write can reach the simulator in the same millisecond).
fn held_at(tenures: &[Tenure], who: &str, at: SystemTime, margin: Duration) -> bool {
    const SLACK: Duration = Duration::from_millis(250);
    tenures
        .iter()
        .any(|t| t.holder == who && at + SLACK >= t.start && at <= t.last_renew + margin)
}

pub fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::model::{Captured, Declared, Kind, Observed, Replaced, Stopped};
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn pair(p: &str, u: &str) -> Pair {
        Pair {
            policy: p.into(),
            kind: Kind::User,
            subject: u.into(),
        }
    }

    fn declared(name: &str, pair: Pair, orphan: bool, deleted: bool) -> Declared {
        Declared {
            namespace: "ns".into(),
            name: name.into(),
            pair,
            orphan,
            delete_requested: deleted.then(|| t(10)),
            gone_at: deleted.then(|| t(11)),
        }
    }

    fn live(name: &str, pair: Pair) -> Observed {
        Observed {
            namespace: "ns".into(),
            name: name.into(),
            terminating: false,
            ready: Some(("True".into(), "Attached".into())),
            recorded: Some(pair),
            finalizers: vec!["iam.vultr-operator.io/detach".into()],
        }
    }

    /// A consistent state: one live object with its grant, one deleted whose grant is
    /// gone, one deleted Orphan whose grant stayed, and a shared pair still declared.
    fn healthy() -> EndState {
        let (a, b, c, d) = (
            pair("p", "a"),
            pair("p", "b"),
            pair("p", "c"),
            pair("q", "d"),
        );
        EndState {
            declared: vec![
                declared("a", a.clone(), false, false),
                declared("b", b.clone(), false, true),
                declared("c", c.clone(), true, true),
                declared("d1", d.clone(), false, true),
                declared("d2", d.clone(), false, false),
            ],
            present: vec![live("a", a.clone()), live("d2", d.clone())],
            attached: vec![a, c, d, pair("f", "x")],
            foreign: vec![pair("f", "x")],
            lease: vec![
                LeaseSample {
                    holder: Some("r-a-001".into()),
                    acquire: Some(t(0)),
                    renew: Some(t(20)),
                    seen: t(20),
                },
                LeaseSample {
                    holder: Some("r-b-001".into()),
                    acquire: Some(t(40)),
                    renew: Some(t(60)),
                    seen: t(60),
                },
            ],
            margin: Duration::from_secs(4),
            identities: vec!["r-a-001".into(), "r-b-001".into()],
            writes: vec![
                write(t(5), "r-a-001"),
                write(t(23), "r-a-001"),
                write(t(50), "r-b-001"),
            ],
            logs: vec![Captured {
                label: "r-a-001.log".into(),
                text: "INFO attached".into(),
            }],
            texts: vec![],
            secrets: vec!["vk-SECRET".into()],
            refused: vec![],
            replaced: vec![],
            stops: vec![Stopped {
                identity: "r-b-001".into(),
                after: Some(Duration::from_millis(1200)),
                clean: true,
            }],
        }
    }

    fn write(at: SystemTime, who: &str) -> Write {
        Write {
            at,
            method: "DELETE".into(),
            path: "/v2/policies/p/users/b".into(),
            status: 204,
            agent: Some(format!("vultr-iam-operator/0.1.0 ({who})")),
        }
    }

    #[test]
    fn a_consistent_state_passes() {
        let f = check(&healthy());
        assert!(f.violations().is_empty(), "{:?}", f.violations());
        assert_eq!(f.live, 2);
    }

    #[test]
    fn a_leaked_grant_is_a_lost_revocation() {
        let mut s = healthy();
        s.attached.push(pair("p", "b"));
        let f = check(&s);
        assert_eq!(f.lost_revocations, vec![pair("p", "b")]);
        assert_eq!(f.violations().len(), 1, "{:?}", f.violations());
        // The last declarer of a shared pair gone too: its grant must go.
        let mut s = healthy();
        s.present.retain(|o| o.name != "d2");
        s.declared[4].delete_requested = Some(t(12));
        assert_eq!(check(&s).lost_revocations, vec![pair("q", "d")]);
    }

    #[test]
    fn a_live_object_without_its_grant_or_not_ready_fails() {
        let mut s = healthy();
        s.attached.retain(|p| *p != pair("p", "a"));
        s.present[1].ready = Some(("False".into(), "ApiUnavailable".into()));
        let f = check(&s);
        assert_eq!(f.missing_grants.len(), 1);
        assert_eq!(f.not_ready.len(), 1);
    }

    #[test]
    fn a_terminating_object_is_stuck() {
        let mut s = healthy();
        s.present[0].terminating = true;
        let f = check(&s);
        assert_eq!(f.stuck.len(), 1);
        assert_eq!(f.live, 1);
    }

    #[test]
    fn a_write_outside_the_tenure_is_unleased() {
        let mut s = healthy();
        // r-a renewed last at 20 s; margin 4 s; r-b took over at 40 s.
        s.writes.push(write(t(30), "r-a-001"));
        s.writes.push(write(t(45), "r-a-001"));
        s.writes.push(write(t(39), "r-b-001"));
        let f = check(&s);
        assert_eq!(f.unleased_writes.len(), 3, "{:?}", f.unleased_writes);
        // No agent: counted apart, not silently passed.
        let mut s = healthy();
        s.writes[0].agent = None;
        let f = check(&s);
        assert_eq!(f.unattributed_writes, 1);
        assert_eq!(f.violations().len(), 1, "{:?}", f.violations());
    }

    #[test]
    fn the_key_and_panics_are_found() {
        let mut s = healthy();
        s.logs[0]
            .text
            .push_str("\nthread 'x' panicked at src/run.rs:1:1");
        s.texts.push(Captured {
            label: "event".into(),
            text: "Bearer vk-SECRET vk-SECRET".into(),
        });
        // A rotated key is searched for too.
        s.secrets.push("vk-ROTATED".into());
        s.texts.push(Captured {
            label: "status".into(),
            text: "key vk-ROTATED".into(),
        });
        let f = check(&s);
        assert_eq!(f.panics, vec!["r-a-001.log".to_owned()]);
        assert_eq!(
            f.key_leaks,
            vec![("event".to_owned(), 2), ("status".to_owned(), 1)]
        );
    }

    #[test]
    fn a_replica_not_stopped_cleanly_within_5s_of_sigterm_is_a_violation() {
        let stop = |after: Option<u64>, clean: bool| Stopped {
            identity: "r-a-001".into(),
            after: after.map(Duration::from_millis),
            clean,
        };
        for bad in [
            stop(Some(5_001), true),
            stop(None, false),
            stop(Some(300), false),
        ] {
            let mut s = healthy();
            s.stops.push(bad.clone());
            let f = check(&s);
            assert_eq!(f.slow_stops.len(), 1, "{bad:?}");
            assert_eq!(f.violations().len(), 1, "{:?}", f.violations());
        }
        let mut s = healthy();
        s.stops.push(stop(Some(5_000), true));
        assert!(check(&s).violations().is_empty());
    }

    #[test]
    fn a_reused_name_must_resolve_to_the_new_object() {
        let new = Pair {
            policy: "p".into(),
            kind: Kind::Group,
            subject: "g-new".into(),
        };
        let old = Pair {
            subject: "g-old".into(),
            ..new.clone()
        };
        let grant = |p: &Pair, at: u64| Write {
            method: "POST".into(),
            path: format!("/v2/policies/{}/groups/{}", p.policy, p.subject),
            status: 201,
            ..write(t(at), "r-a-001")
        };
        let mut s = healthy();
        s.replaced.push(Replaced {
            old: "g-old".into(),
            new: "g-new".into(),
            at: t(4),
        });
        // Before the reuse, an object named the old group, was granted it and deleted.
        s.declared
            .push(declared("before", old.clone(), false, true));
        s.writes.push(grant(&old, 3));
        s.declared.push(declared("r", new.clone(), false, false));
        s.present.push(live("r", new.clone()));
        s.attached.push(new.clone());
        s.writes.push(grant(&new, 5));
        let f = check(&s);
        assert!(f.violations().is_empty(), "{:?}", f.violations());
        assert_eq!(f.reuse_resolved, 1);

        // Resolved to the old group: granted there, and recorded so at the end.
        let mut bad = s.clone();
        bad.present.last_mut().unwrap().recorded = Some(old.clone());
        bad.attached.retain(|p| *p != new);
        bad.attached.push(old.clone());
        bad.writes.push(grant(&old, 5));
        let f = check(&bad);
        assert_eq!(f.replaced_grants.len(), 1, "{:?}", f.replaced_grants);
        assert_eq!(f.wrong_pair.len(), 1);
        assert_eq!(f.missing_grants.len(), 1);
        assert_eq!(f.reuse_resolved, 0);

        // Granted to the old group and revoked again before the end: the journal tells.
        let mut gone = s.clone();
        gone.writes.push(grant(&old, 5));
        let f = check(&gone);
        assert_eq!(f.violations().len(), 1, "{:?}", f.violations());
        assert_eq!(f.replaced_grants.len(), 1);
    }

    #[test]
    fn a_request_refused_401_is_a_violation() {
        let mut s = healthy();
        s.refused.push(Write {
            method: "GET".into(),
            path: "/v2/users".into(),
            status: 401,
            ..write(t(30), "r-b-001")
        });
        let f = check(&s);
        assert_eq!(f.refused.len(), 1);
        assert_eq!(f.violations().len(), 1, "{:?}", f.violations());
    }

    #[test]
    fn a_removed_foreign_grant_is_reported() {
        let mut s = healthy();
        s.attached.retain(|p| *p != pair("f", "x"));
        assert_eq!(check(&s).foreign_removed, vec![pair("f", "x")]);
    }

    #[test]
    fn tenures_group_by_holder_and_acquire_time() {
        let sample = |h: &str, a: u64, r: u64| LeaseSample {
            holder: Some(h.into()),
            acquire: Some(t(a)),
            renew: Some(t(r)),
            seen: t(r),
        };
        let got = tenures(&[
            sample("x", 0, 2),
            sample("x", 0, 6),
            sample("y", 20, 22),
            sample("x", 40, 41),
        ]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].last_renew, t(6));
        assert_eq!(got[2].start, t(40));
    }
}
