//! Per-pair serialisation and the pairs this process knows to be declared.
//!
//! Two objects can declare one (policy, subject) pair (a rename, a namespace move, an
//! Argo CD sync that deletes one and creates the other). Deciding "nobody else holds
//! this pair, revoke it" and "the listing shows the pair, Ready" are check-then-act
//! steps: without a lock, a DELETE in flight for `a` races `b`'s verification and `b`
//! says Ready=True over a grant that is gone a moment later. Every step that reads
//! or writes a pair in Vultr therefore holds that pair's lock, and an object registers
//! its pair here (under the lock) before its first listing, so a concurrent cleanup of
//! another object sees it even before the watch cache does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

use crate::domain::Grant;

/// An object that declared a pair: UID and where to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declarer {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl Declarer {
    pub fn of(obj: &crate::crd::PolicyAttachment) -> Self {
        use kube::ResourceExt;
        Self {
            uid: obj.uid().unwrap_or_default(),
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
        }
    }
}

/// Async locks by key, created on first use and dropped once nobody holds them.
#[derive(Debug)]
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self {
            locks: Mutex::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> KeyedLocks<K> {
    /// Waits for exclusive use of `key` within this process.
    pub async fn lock(&self, key: &K) -> OwnedMutexGuard<()> {
        let lock = locked(&self.locks).entry(key.clone()).or_default().clone();
        lock.lock_owned().await
    }

    /// Drops the locks nobody holds or waits for.
    pub fn prune(&self) {
        locked(&self.locks).retain(|_, lock| Arc::strong_count(lock) > 1);
    }

    /// How many entries it holds (the per-object memory metric).
    pub fn tracked(&self) -> usize {
        locked(&self.locks).len()
    }
}

#[derive(Debug, Default)]
pub struct Pairs {
    locks: KeyedLocks<Grant>,
    /// UID -> (pair, declarer): the pair this process recorded or saw recorded.
    declared: Mutex<HashMap<String, (Grant, Declarer)>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pairs {
    /// Waits for exclusive use of `grant` within this process.
    pub async fn lock(&self, grant: &Grant) -> OwnedMutexGuard<()> {
        self.locks.lock(grant).await
    }

    /// Records that `declarer` declares `grant`.
    pub fn declare(&self, grant: &Grant, declarer: Declarer) {
        locked(&self.declared).insert(declarer.uid.clone(), (grant.clone(), declarer));
    }

    /// `uid` no longer declares anything (its revocation finished, or it is gone).
    pub fn withdraw(&self, uid: &str) {
        locked(&self.declared).remove(uid);
    }

    /// The pair this process knows `uid` to have recorded.
    pub fn recorded_for(&self, uid: &str) -> Option<Grant> {
        locked(&self.declared).get(uid).map(|(g, _)| g.clone())
    }

    /// Every object known to declare `grant`, except `uid` itself.
    pub fn declarers(&self, grant: &Grant, except_uid: &str) -> Vec<Declarer> {
        locked(&self.declared)
            .values()
            .filter(|(g, d)| g == grant && d.uid != except_uid)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Drops the locks nobody holds or waits for (called once per verification pass).
    pub fn prune(&self) {
        self.locks.prune();
    }

    /// Locks and declarations held, in all.
    /// How many entries it holds (the per-object memory metric).
    pub fn tracked(&self) -> usize {
        self.locks.tracked() + locked(&self.declared).len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::Subject;

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

    #[tokio::test]
    async fn one_pair_is_used_by_one_step_at_a_time() {
        let pairs = Arc::new(Pairs::default());
        let held = pairs.lock(&grant("p")).await;
        let other = pairs.clone();
        let waiter = tokio::spawn(async move {
            let _g = other.lock(&grant("p")).await;
        });
        // Another pair is free meanwhile.
        drop(pairs.lock(&grant("q")).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "the second step must wait for the first"
        );
        drop(held);
        waiter.await.unwrap();
        pairs.prune();
        assert!(locked(&pairs.locks.locks).is_empty());
    }

    #[test]
    fn declarations_exclude_the_asker_and_other_pairs() {
        let pairs = Pairs::default();
        pairs.declare(&grant("p"), declarer("a"));
        pairs.declare(&grant("p"), declarer("b"));
        pairs.declare(&grant("q"), declarer("c"));
        assert_eq!(pairs.declarers(&grant("p"), "a"), vec![declarer("b")]);
        assert_eq!(pairs.recorded_for("c"), Some(grant("q")));
        pairs.withdraw("b");
        assert!(pairs.declarers(&grant("p"), "a").is_empty());
    }
}
