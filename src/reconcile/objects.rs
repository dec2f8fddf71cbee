//! What this process remembers about each object, by UID, in one entry: its lock (the
//! live and the deleted lane never run one object at once), an attach it sent that the
//! listing does not show yet, a deletion it handled (revoked, or released in any other
//! way: a reconcile from a stale cache entry neither revokes twice nor attaches again),
//! its retry state, the pair it declares, the pause value reported as unrecognised, and
//! whether it has had its first turn. [`Objects::forget`] and [`Objects::prune`] are the
//! only ways out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use crate::domain::Grant;
use crate::reconcile::backoff::{Backoff, Retry, Revision};
use crate::reconcile::pairs::Declarer;

/// A handled deletion is remembered at least this long, and after that until no watch
/// cache holds the object any more (see [`Objects::prune`]).
const DELETION_MEMORY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct State {
    lock: Arc<tokio::sync::Mutex<()>>,
    attach_sent: Option<Instant>,
    deletion_handled: Option<Instant>,
    retry: Option<Retry>,
    declared: Option<(Grant, Declarer)>,
    pause_reported: Option<String>,
    had_turn: bool,
}

#[derive(Debug)]
pub struct Objects {
    backoff: Backoff,
    states: Mutex<HashMap<String, State>>,
}

impl Objects {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            states: Mutex::default(),
        }
    }

    fn states(&self) -> MutexGuard<'_, HashMap<String, State>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state of `uid`, creating it on first use.
    fn update<R>(&self, uid: &str, f: impl FnOnce(&mut State) -> R) -> R {
        f(self.states().entry(uid.to_owned()).or_default())
    }

    /// Reads the state of `uid` without creating one.
    fn read<R: Default>(&self, uid: &str, f: impl FnOnce(&State) -> R) -> R {
        self.states().get(uid).map(f).unwrap_or_default()
    }

    /// Waits for exclusive use of the object within this process.
    pub async fn lock(&self, uid: &str) -> OwnedMutexGuard<()> {
        let lock = self.update(uid, |s| s.lock.clone());
        lock.lock_owned().await
    }

    pub fn mark_attach_sent(&self, uid: &str) {
        self.update(uid, |s| s.attach_sent = Some(Instant::now()));
    }

    /// When the attach of `uid` was sent, if it has not been seen in a listing yet.
    pub fn attach_sent_at(&self, uid: &str) -> Option<Instant> {
        self.read(uid, |s| s.attach_sent)
    }

    /// The grant of `uid` was seen in a listing: no attach is awaited any more.
    pub fn attach_seen(&self, uid: &str) {
        self.update(uid, |s| s.attach_sent = None);
    }

    /// The deletion of `uid` was handled: revoked, or its finalizer released. It no
    /// longer declares its pair.
    pub fn mark_deletion_handled(&self, uid: &str) {
        self.update(uid, |s| {
            s.deletion_handled = Some(Instant::now());
            s.declared = None;
        });
    }

    /// Whether this process handled the deletion of `uid`: a snapshot that shows it
    /// live is stale, and nothing may be attached for it again.
    pub fn deletion_handled(&self, uid: &str) -> bool {
        self.read(uid, |s| s.deletion_handled.is_some())
    }

    /// Records a failure of `uid`; returns how long to wait before retrying.
    pub fn next_delay(
        &self,
        uid: &str,
        revision: Revision,
        retry_after: Option<Duration>,
    ) -> Duration {
        self.update(uid, |s| {
            self.backoff.next_delay(&mut s.retry, revision, retry_after)
        })
    }

    /// Time left before `uid` may be retried, unless the object changed since.
    pub fn remaining(&self, uid: &str, revision: Revision) -> Option<Duration> {
        self.read(uid, |s| s.retry.and_then(|r| r.remaining(revision)))
    }

    /// Holds `uid` until `until` without counting a failure.
    pub fn hold(&self, uid: &str, revision: Revision, until: Instant) {
        self.update(uid, |s| Retry::hold(&mut s.retry, revision, until));
    }

    /// A reconcile of `uid` succeeded: its failure count starts again.
    pub fn clear_failures(&self, uid: &str) {
        if let Some(retry) = self.states().get_mut(uid).and_then(|s| s.retry.as_mut()) {
            retry.clear_failures();
        }
    }

    /// The hold or backoff of `uid` is over (the tests' clock).
    #[cfg(test)]
    pub fn end_wait(&self, uid: &str) {
        self.update(uid, |s| s.retry = None);
    }

    /// Records that `declarer` declares `grant` (before the watch cache may show it).
    pub fn declare(&self, grant: &Grant, declarer: Declarer) {
        let uid = declarer.uid.clone();
        self.update(&uid, |s| s.declared = Some((grant.clone(), declarer)));
    }

    /// The pair this process knows `uid` to have recorded.
    pub fn recorded_for(&self, uid: &str) -> Option<Grant> {
        self.read(uid, |s| s.declared.as_ref().map(|(g, _)| g.clone()))
    }

    /// Every object known to declare `grant`, except `uid` itself.
    pub fn declarers(&self, grant: &Grant, except_uid: &str) -> Vec<Declarer> {
        self.states()
            .iter()
            .filter(|(uid, _)| uid.as_str() != except_uid)
            .filter_map(|(_, s)| s.declared.as_ref())
            .filter(|(g, _)| g == grant)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// True the first time `value` is seen as an unrecognised pause value of `uid`.
    pub fn first_unrecognised_pause(&self, uid: &str, value: &str) -> bool {
        self.update(uid, |s| {
            s.pause_reported.replace(value.to_owned()).as_deref() != Some(value)
        })
    }

    /// A live reconcile of `uid` ran to an end (attach sent, verified, failed, paused).
    pub fn mark_turn(&self, uid: &str) {
        self.update(uid, |s| s.had_turn = true);
    }

    pub fn had_turn(&self, uid: &str) -> bool {
        self.read(uid, |s| s.had_turn)
    }

    /// The object is gone: forget all about it but that its deletion was handled (and
    /// its lock, which a reconcile may still hold).
    pub fn forget(&self, uid: &str) {
        self.update(uid, |s| {
            *s = State {
                lock: s.lock.clone(),
                deletion_handled: Some(Instant::now()),
                ..State::default()
            }
        });
    }

    /// Drops the state of objects that no watch cache holds (`cached` says which UIDs
    /// they hold), unless a reconcile holds its lock or its deletion is younger than
    /// [`DELETION_MEMORY`].
    pub fn prune(&self, cached: impl Fn(&str) -> bool) {
        self.states().retain(|uid, s| {
            cached(uid)
                || Arc::strong_count(&s.lock) > 1
                || s.deletion_handled
                    .is_some_and(|at| at.elapsed() < DELETION_MEMORY)
        });
    }

    /// How many objects it remembers (the per-object memory metric).
    pub fn tracked(&self) -> usize {
        self.states().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Subject;

    const REV: Revision = crate::reconcile::backoff::FIRST;

    fn objects() -> Objects {
        Objects::new(Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ))
    }

    fn grant(p: &str) -> Grant {
        Grant {
            policy_id: p.into(),
            subject: Subject::User("u".into()),
        }
    }

    fn declarer(uid: &str) -> Declarer {
        Declarer {
            uid: uid.into(),
            namespace: "ns".into(),
            name: uid.into(),
        }
    }

    #[test]
    fn remembers_per_uid() {
        let m = objects();
        assert!(m.attach_sent_at("a").is_none());
        m.mark_attach_sent("a");
        assert!(m.attach_sent_at("a").is_some());
        assert!(m.attach_sent_at("b").is_none());
        m.attach_seen("a");
        assert!(m.attach_sent_at("a").is_none());
        m.mark_deletion_handled("b");
        assert!(m.deletion_handled("b") && !m.deletion_handled("a"));
        assert!(m.first_unrecognised_pause("a", "True"));
        assert!(!m.first_unrecognised_pause("a", "True"));
        assert!(m.first_unrecognised_pause("a", "yes"));
        m.forget("a");
        assert!(m.first_unrecognised_pause("a", "yes"));
        m.mark_turn("c");
        assert!(m.had_turn("c") && !m.had_turn("d"));
        m.forget("c");
        assert!(
            !m.had_turn("c"),
            "a re-created object waits for its turn again"
        );
        assert!(
            m.deletion_handled("c"),
            "a forgotten object's deletion was handled"
        );
    }

    #[test]
    fn objects_back_off_independently_and_forgetting_resets() {
        let m = objects();
        for _ in 0..5 {
            m.next_delay("a", REV, None);
        }
        assert!(m.next_delay("b", REV, None) <= Duration::from_millis(1001));
        assert!(m.remaining("a", REV).is_some());
        m.forget("a");
        assert_eq!(m.remaining("a", REV), None);
        assert!(m.next_delay("a", REV, None) <= Duration::from_millis(1001));
    }

    #[test]
    fn declarations_exclude_the_asker_and_other_pairs() {
        let m = objects();
        m.declare(&grant("p"), declarer("a"));
        m.declare(&grant("p"), declarer("b"));
        m.declare(&grant("q"), declarer("c"));
        assert_eq!(m.declarers(&grant("p"), "a"), vec![declarer("b")]);
        assert_eq!(m.recorded_for("c"), Some(grant("q")));
        m.mark_deletion_handled("b");
        assert!(m.declarers(&grant("p"), "a").is_empty());
    }

    #[tokio::test]
    async fn pruning_keeps_cached_locked_and_recently_deleted_objects() {
        let m = objects();
        m.mark_attach_sent("live");
        m.mark_turn("live");
        m.mark_attach_sent("gone");
        m.forget("deleted");
        let held = m.lock("running").await;
        m.prune(|uid| uid == "live");
        assert!(m.attach_sent_at("live").is_some() && m.had_turn("live"));
        assert!(m.attach_sent_at("gone").is_none());
        assert!(m.deletion_handled("deleted"), "kept while young");
        assert_eq!(m.tracked(), 3, "live, deleted and the locked one");
        drop(held);
        m.update("deleted", |s| {
            s.deletion_handled = Some(Instant::now() - 2 * DELETION_MEMORY)
        });
        m.prune(|_| false);
        assert_eq!(m.tracked(), 0);
    }

    #[tokio::test]
    async fn one_object_is_run_by_one_reconcile_at_a_time() {
        let m = Arc::new(objects());
        let held = m.lock("a").await;
        let other = m.clone();
        let waiter = tokio::spawn(async move { drop(other.lock("a").await) });
        drop(m.lock("b").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second reconcile waits");
        drop(held);
        waiter.await.expect("ran after the first");
    }
}
