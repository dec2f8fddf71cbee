//! Per-pair serialisation, and who declares a pair.
//!
//! Two objects can declare one (policy, subject) pair (a rename, a namespace move, an
//! Argo CD sync that deletes one and creates the other). Deciding "nobody else holds
//! this pair, revoke it" and "the listing shows the pair, Ready" are check-then-act
//! steps: without a lock, a DELETE in flight for `a` races `b`'s verification and `b`
//! says Ready=True over a grant that is gone a moment later. Every step that reads
//! or writes a pair in Vultr therefore holds that pair's lock, and an object registers
//! its pair (under the lock, in its state: `objects.rs`) before its first listing, so a
//! concurrent cleanup of another object sees it even before the watch cache does.

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

/// Async locks by pair, created on first use and dropped once nobody holds them.
#[derive(Debug, Default)]
pub struct Pairs {
    locks: Mutex<HashMap<Grant, Arc<tokio::sync::Mutex<()>>>>,
}

impl Pairs {
    fn locks(&self) -> MutexGuard<'_, HashMap<Grant, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for exclusive use of `grant` within this process.
    pub async fn lock(&self, grant: &Grant) -> OwnedMutexGuard<()> {
        let lock = self.locks().entry(grant.clone()).or_default().clone();
        lock.lock_owned().await
    }

    /// Drops the locks nobody holds or waits for (called once per verification pass).
    pub fn prune(&self) {
        self.locks().retain(|_, lock| Arc::strong_count(lock) > 1);
    }

    /// How many locks it holds (the per-object memory metric).
    pub fn tracked(&self) -> usize {
        self.locks().len()
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
        assert_eq!(pairs.tracked(), 0);
    }
}
