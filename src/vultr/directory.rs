//! The directory: one shared, coalesced, paged walk of the policies, users, groups and
//! roles listings, against which every name, email and ID is resolved. Vultr has no
//! server-side filter, so resolving per object would walk the whole user listing for
//! each one; here 2,000 objects resolving at once wait for one walk.
//!
//! A walk is reused for `max_age`, the freshness bound of every resolution: a name
//! that Vultr gives to another object is resolved to the new one at most `max_age`
//! after the change. A reference that does not match (not found, or ambiguous)
//! refreshes its listing once, unless that listing is younger than `refresh_floor`: a
//! burst of misses costs one walk, not one each. A failed walk answers only the callers
//! that waited for it (an outage costs one failed request per listing and burst, not
//! one per object), and a walk made with an API key that has since been replaced is
//! never reused. Policies are kept without their documents, so memory follows the
//! number of objects in the organisation, not the size of their policies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::client::VultrClient;
use super::endpoints::Listed;
use super::error::VultrError;
use super::model::{Group, Policy, Role, User};
use super::resolve::{Key, Named, Resolved, resolved};
use crate::domain::{Grant, PolicyRef, Refs, Subject, SubjectKind, SubjectRef};

/// The oldest walk the operator resolves a reference against, whatever it is told: the
/// name-freshness bound the README states.
pub const DIRECTORY_MAX_AGE_LIMIT: Duration = Duration::from_secs(60);
/// A reference that matches nothing refreshes the operator's directory, but never more
/// often than this.
const REFRESH_FLOOR: Duration = Duration::from_secs(10);

/// The pair a manifest declares, and what people call its two sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub grant: Grant,
    pub policy_name: String,
    pub subject_name: String,
}

/// One completed walk.
struct Answer<T> {
    at: Instant,
    /// The API key it was made with (`VultrClient::key_epoch`).
    key_epoch: u64,
    /// Counts the walks of this listing: a caller that queued before walk `seq`
    /// completed waited for it.
    seq: u64,
    items: Result<Arc<Vec<T>>, VultrError>,
}

/// One listing's last walk; callers queue on the lock, so one walk serves them all.
pub(crate) struct Walk<T> {
    last: tokio::sync::Mutex<Option<Answer<T>>>,
    /// Walks completed so far (the `seq` of the last one).
    completed: AtomicU64,
}

impl<T> Walk<T> {
    fn new() -> Self {
        Self {
            last: tokio::sync::Mutex::new(None),
            completed: AtomicU64::new(0),
        }
    }

    /// The listing, walked now unless a walk younger than `max_age` made with the key
    /// in use is at hand, or the walk this caller waited for failed.
    async fn get<F, Fut>(
        &self,
        vultr: &VultrClient,
        max_age: Duration,
        walk: F,
    ) -> Result<(Instant, Arc<Vec<T>>), VultrError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, VultrError>>,
    {
        let seen = self.completed.load(Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if let Some(answer) = last.as_ref() {
            match &answer.items {
                // The walk this caller queued behind failed: it shares the failure.
                Err(err) if answer.seq > seen => return Err(err.clone()),
                Ok(items)
                    if answer.key_epoch == vultr.key_epoch() && answer.at.elapsed() <= max_age =>
                {
                    return Ok((answer.at, items.clone()));
                }
                _ => {}
            }
        }
        let at = Instant::now();
        let key_epoch = vultr.key_epoch();
        let items = walk().await.map(Arc::new);
        let seq = self.completed.load(Ordering::SeqCst) + 1;
        *last = Some(Answer {
            at,
            key_epoch,
            seq,
            items: items.clone(),
        });
        self.completed.store(seq, Ordering::SeqCst);
        items.map(|items| (at, items))
    }
}

/// Shared by every reconcile of the process; cheap to clone.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    vultr: VultrClient,
    max_age: Duration,
    refresh_floor: Duration,
    policies: Walk<Policy>,
    users: Walk<User>,
    groups: Walk<Group>,
    roles: Walk<Role>,
}

impl Directory {
    /// `max_age`: how long a walk serves references that match (the freshness bound of
    /// a resolution); `refresh_floor`: the youngest walk a miss may replace.
    pub(crate) fn new(vultr: VultrClient, max_age: Duration, refresh_floor: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                vultr,
                max_age,
                refresh_floor: refresh_floor.min(max_age),
                policies: Walk::new(),
                users: Walk::new(),
                groups: Walk::new(),
                roles: Walk::new(),
            }),
        }
    }

    /// The operator's directory: walks serve for `max_age`, at most
    /// [`DIRECTORY_MAX_AGE_LIMIT`].
    pub(crate) fn for_resolution(vultr: VultrClient, max_age: Duration) -> Self {
        Self::new(vultr, max_age.min(DIRECTORY_MAX_AGE_LIMIT), REFRESH_FLOOR)
    }

    /// Every object of a kind (policies without documents), from the shared walk.
    pub(crate) async fn all<T: Walked>(&self) -> Result<Arc<Vec<T>>, VultrError> {
        let inner = &self.inner;
        let walk = || T::fetch(&inner.vultr);
        Ok(T::walk(inner)
            .get(&inner.vultr, inner.max_age, walk)
            .await?
            .1)
    }

    /// The pair a manifest declares, and what people call its two sides: exact
    /// matches; "not found" and "ambiguous" are distinct errors.
    pub(crate) async fn resolve(&self, refs: &Refs) -> Result<Resolution, VultrError> {
        let policy = self.policy(&refs.policy).await?;
        let (subject, subject_name) = self.subject(&refs.subject).await?;
        Ok(Resolution {
            grant: Grant {
                policy_id: policy.id,
                subject,
            },
            policy_name: policy.name,
            subject_name,
        })
    }

    /// The policy a manifest names: by exact name, or by ID (which must exist).
    pub(crate) async fn policy(&self, policy: &PolicyRef) -> Result<Resolved, VultrError> {
        self.lookup::<Policy>(policy.key()).await
    }

    /// The subject a manifest names, and what people call it (email, group or role name).
    pub(crate) async fn subject(
        &self,
        subject: &SubjectRef,
    ) -> Result<(Subject, String), VultrError> {
        let (kind, found) = match subject {
            SubjectRef::User(user) => (SubjectKind::User, self.lookup::<User>(user.key()).await),
            SubjectRef::Group(group) => {
                (SubjectKind::Group, self.lookup::<Group>(group.key()).await)
            }
            SubjectRef::Role(role) => (SubjectKind::Role, self.lookup::<Role>(role.key()).await),
        };
        let found = found?;
        Ok((Subject::new(kind, found.id), found.name))
    }

    /// Finds a reference in a walk; a miss walks again once (see the module docs).
    async fn lookup<T: Walked>(&self, key: Key<'_>) -> Result<Resolved, VultrError> {
        let inner = &self.inner;
        let walk = T::walk(inner);
        let fetch = || T::fetch(&inner.vultr);
        let (at, items) = walk.get(&inner.vultr, inner.max_age, fetch).await?;
        match resolved(&items, key) {
            Ok(found) => Ok(found),
            Err(miss) if at.elapsed() < inner.refresh_floor => Err(miss),
            Err(_) => {
                let (_, items) = walk.get(&inner.vultr, inner.refresh_floor, fetch).await?;
                resolved(&items, key)
            }
        }
    }
}

/// An object the directory walks: where its last walk is kept, and how a walk reads it.
pub(crate) trait Walked: Named + Listed + Send {
    fn walk(inner: &Inner) -> &Walk<Self>;
    fn fetch(vultr: &VultrClient) -> impl Future<Output = Result<Vec<Self>, VultrError>> + Send {
        vultr.list::<Self>()
    }
}

impl Walked for Policy {
    fn walk(inner: &Inner) -> &Walk<Self> {
        &inner.policies
    }
    fn fetch(vultr: &VultrClient) -> impl Future<Output = Result<Vec<Self>, VultrError>> + Send {
        walk_policies(vultr)
    }
}

impl Walked for User {
    fn walk(inner: &Inner) -> &Walk<Self> {
        &inner.users
    }
}

impl Walked for Group {
    fn walk(inner: &Inner) -> &Walk<Self> {
        &inner.groups
    }
}

impl Walked for Role {
    fn walk(inner: &Inner) -> &Walk<Self> {
        &inner.roles
    }
}

/// The policy listing, without what only costs memory here: only IDs and names are
/// needed, and documents can be large.
async fn walk_policies(vultr: &VultrClient) -> Result<Vec<Policy>, VultrError> {
    let mut policies = vultr.list::<Policy>().await?;
    for p in &mut policies {
        p.policy_document = None;
        p.description = None;
    }
    Ok(policies)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};

    use super::*;
    use crate::domain::GroupRef;
    use crate::vultr::ApiKey;
    use crate::vultr::fake::{FakeVultr, Reply, paged};

    /// Resolves the group named "ops" and checks that it is `id`.
    async fn assert_ops_is(dir: &Directory, id: &str) {
        assert_eq!(
            dir.subject(&ops()).await.unwrap().0,
            Subject::Group(id.into())
        );
    }

    fn ops() -> SubjectRef {
        SubjectRef::Group(GroupRef::ByName("ops".into()))
    }

    #[tokio::test]
    async fn a_reused_name_resolves_to_the_new_object_once_the_walk_is_older_than_the_bound() {
        let groups = Arc::new(Mutex::new(vec![
            json!({"id": "g-old", "display_name": "ops"}),
        ]));
        let listed = groups.clone();
        let fake =
            FakeVultr::start(move |r| paged("groups", &listed.lock().unwrap(), 100, r)).await;
        let max_age = Duration::from_millis(300);
        let dir = Directory::for_resolution(fake.client(), max_age);
        assert_ops_is(&dir, "g-old").await;

        // Renamed, and its name given to a new group.
        *groups.lock().unwrap() = vec![
            json!({"id": "g-old", "display_name": "ops-old"}),
            json!({"id": "g-new", "display_name": "ops"}),
        ];
        // A burst within the bound is served by the one walk ...
        for _ in 0..10 {
            dir.subject(&ops()).await.unwrap();
        }
        assert_eq!(fake.requests().len(), 1, "one walk serves a burst");
        // ... and past it, the name resolves against a new walk.
        tokio::time::sleep(max_age + Duration::from_millis(50)).await;
        assert_ops_is(&dir, "g-new").await;
        assert_eq!(fake.requests().len(), 2);
    }

    #[tokio::test]
    async fn the_operator_never_resolves_against_a_walk_older_than_the_bound() {
        let fake = FakeVultr::start(|_| Reply::empty(500)).await;
        let hour = Duration::from_secs(3600);
        let dir = Directory::for_resolution(fake.client(), hour);
        assert_eq!(dir.inner.max_age, DIRECTORY_MAX_AGE_LIMIT);
        assert!(DIRECTORY_MAX_AGE_LIMIT <= Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_failed_walk_answers_only_the_callers_that_waited_for_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let groups: Vec<Value> = vec![json!({"id": "g1", "display_name": "ops"})];
        let fake = FakeVultr::start(move |r| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::error(503, "down").delayed(Duration::from_millis(200))
            } else {
                paged("groups", &groups, 100, r)
            }
        })
        .await;
        let dir = fake.directory(Duration::from_secs(10));
        let waiting = (0..5).map(|_| {
            let dir = dir.clone();
            async move { dir.subject(&ops()).await }
        });
        for answer in futures::future::join_all(waiting).await {
            assert_eq!(answer.unwrap_err().reason(), "ApiUnavailable");
        }
        assert_eq!(
            fake.requests().len(),
            1,
            "the waiting callers shared one failure"
        );
        // The next caller asks again, at once.
        assert_ops_is(&dir, "g1").await;
        assert_eq!(fake.requests().len(), 2);
    }

    #[tokio::test]
    async fn a_new_api_key_walks_again() {
        let fake = FakeVultr::start(|r| {
            paged(
                "groups",
                &[json!({"id": "g1", "display_name": "ops"})],
                100,
                r,
            )
        })
        .await;
        let client = fake.client();
        let dir = Directory::new(
            client.clone(),
            Duration::from_secs(600),
            Duration::from_secs(10),
        );
        dir.subject(&ops()).await.unwrap();
        dir.subject(&ops()).await.unwrap();
        assert_eq!(fake.requests().len(), 1);
        client
            .set_api_key(&ApiKey::new("ROTATED-KEY", "a test").unwrap())
            .unwrap();
        dir.subject(&ops()).await.unwrap();
        let requests = fake.requests();
        assert_eq!(
            requests.len(),
            2,
            "the walk made with the old key was dropped"
        );
        assert_eq!(
            requests[1].authorization.as_deref(),
            Some("Bearer ROTATED-KEY")
        );
    }
}
