//! Verification batching, the reconciler's side of it (the listing cache decides when a
//! listing is worth fetching: `port/listings.rs`). While attaches are still to come
//! (live objects in the caches that have not had their first turn), a verification may
//! be put off; the objects put off are woken, and only they, once the backlog empties.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use tracing::debug;

use crate::crd::PolicyAttachment;

/// How long a count of the backlog is reused: a count is a scan of the caches.
const BACKLOG_RECOUNT: Duration = Duration::from_millis(250);

/// Makes a controller reconcile the object it is sent.
pub type Waker = UnboundedSender<ObjectRef<PolicyAttachment>>;

/// A count of the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Attaches still to come.
    pub count: usize,
    /// The count found none after one that found some: time to wake the objects put off.
    pub drained: bool,
}

#[derive(Default)]
pub struct Batching {
    /// The last count, and when it was taken.
    last: Mutex<Option<(Instant, usize)>>,
    /// Per watched scope (a namespace, or `None` for the whole cluster), the trigger
    /// that makes its controller reconcile one object.
    wakers: Mutex<Vec<(Option<String>, Waker)>>,
    /// The objects whose verification was put off.
    put_off: Mutex<HashSet<ObjectRef<PolicyAttachment>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Batching {
    /// The backlog, counted by `count` at most every [`BACKLOG_RECOUNT`].
    pub fn backlog(&self, count: impl FnOnce() -> usize) -> Backlog {
        let mut last = locked(&self.last);
        let previous = match *last {
            Some((at, count)) if at.elapsed() < BACKLOG_RECOUNT => {
                return Backlog {
                    count,
                    drained: false,
                };
            }
            Some((_, count)) => count,
            None => 0,
        };
        let count = count();
        *last = Some((Instant::now(), count));
        Backlog {
            count,
            drained: previous > 0 && count == 0,
        }
    }

    /// Remembers that `obj`'s verification was put off.
    pub fn put_off(&self, obj: &PolicyAttachment) {
        locked(&self.put_off).insert(ObjectRef::from_obj(obj));
    }

    /// Reconciles the objects put off, each through the controller of its scope; the
    /// others are not woken (a reconcile may cost a listing).
    pub fn wake(&self) {
        let put_off: Vec<_> = locked(&self.put_off).drain().collect();
        if put_off.is_empty() {
            return;
        }
        debug!(
            objects = put_off.len(),
            "every object has had its turn: verifying the batches"
        );
        let wakers = locked(&self.wakers);
        for object in put_off {
            let scopes = wakers.iter().map(|(scope, _)| scope.as_deref());
            if let Some(i) = scope_of(scopes, object.namespace.as_deref()) {
                let _ = wakers[i].1.unbounded_send(object);
            }
        }
    }

    /// Registers the "reconcile this object" trigger of the controller of `scope`.
    pub fn add_waker(&self, scope: Option<String>, waker: Waker) {
        locked(&self.wakers).push((scope, waker));
    }

    /// The object is gone.
    pub fn forget(&self, uid: &str) {
        locked(&self.put_off).retain(|o| o.extra.uid.as_deref() != Some(uid));
    }

    /// How many objects are put off (the per-object memory metric).
    pub fn tracked(&self) -> usize {
        locked(&self.put_off).len()
    }
}

/// Which of the watched `scopes` (a namespace, or `None` for the whole cluster) holds an
/// object of `namespace`.
fn scope_of<'a>(
    mut scopes: impl Iterator<Item = Option<&'a str>>,
    namespace: Option<&str>,
) -> Option<usize> {
    scopes.position(|scope| scope.is_none() || scope == namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_woken_through_the_controller_of_its_scope() {
        let scopes = [Some("a"), Some("b")];
        assert_eq!(scope_of(scopes.into_iter(), Some("b")), Some(1));
        assert_eq!(scope_of(scopes.into_iter(), Some("c")), None);
        assert_eq!(scope_of([None].into_iter(), Some("c")), Some(0));
    }

    #[test]
    fn the_backlog_is_drained_once_when_it_empties() {
        let b = Batching::default();
        assert_eq!(
            b.backlog(|| 3),
            Backlog {
                count: 3,
                drained: false
            }
        );
        // Within the recount period the last count stands.
        assert_eq!(b.backlog(|| 0).count, 3);
        *locked(&b.last) = Some((Instant::now() - 2 * BACKLOG_RECOUNT, 3));
        assert_eq!(
            b.backlog(|| 0),
            Backlog {
                count: 0,
                drained: true
            }
        );
        *locked(&b.last) = Some((Instant::now() - 2 * BACKLOG_RECOUNT, 0));
        assert!(!b.backlog(|| 0).drained, "only the count that empties it");
    }
}
