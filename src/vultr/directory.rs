//! The directory: one shared, coalesced, paged walk of the policies, users, groups and
//! roles listings, against which every name, email and ID is resolved. Vultr has no
//! server-side filter, so resolving per object would walk the whole user listing for
//! each one; here 2,000 objects resolving at once wait for one walk.
//!
//! A walk is reused for `max_age`. A reference that does not match (not found, or
//! ambiguous) refreshes its listing once, unless that listing is younger than
//! `refresh_floor`: a burst of misses costs one walk, not one each. Failures are
//! shared for a second, so an outage costs one failed request per listing, not one per
//! object. Policies are kept without their documents, so memory follows the number of
//! objects in the organisation, not the size of their policies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::VultrClient;
use super::error::VultrError;
use super::model::{Group, Policy, Role, User};
use super::resolve::{
    GroupRef, PolicyRef, Resolved, RoleRef, SubjectRef, UserRef, group_by_id, group_by_name,
    policy_by_id, policy_by_name, role_by_id, role_by_name, user_by_email, user_by_id,
};
use crate::domain::Subject;

/// How long a failed walk is shared before the next caller tries again.
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

type Answer<T> = (Instant, Result<Arc<Vec<T>>, VultrError>);

/// One listing's last walk; callers queue on the lock, so one walk serves them all.
struct Walk<T> {
    last: tokio::sync::Mutex<Option<Answer<T>>>,
}

impl<T> Walk<T> {
    fn new() -> Self {
        Self {
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The listing, walked now unless an answer younger than `max_age` is at hand.
    async fn get<F, Fut>(
        &self,
        max_age: Duration,
        walk: F,
    ) -> Result<(Instant, Arc<Vec<T>>), VultrError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, VultrError>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            let keep = match answer {
                Ok(_) => max_age,
                Err(_) => FAILURE_MEMORY.min(max_age),
            };
            if at.elapsed() <= keep {
                return answer.clone().map(|items| (*at, items));
            }
        }
        let at = Instant::now();
        let answer = walk().await.map(Arc::new);
        *last = Some((at, answer.clone()));
        answer.map(|items| (at, items))
    }
}

/// Shared by every reconcile of the process; cheap to clone.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    vultr: VultrClient,
    max_age: Duration,
    refresh_floor: Duration,
    policies: Walk<Policy>,
    users: Walk<User>,
    groups: Walk<Group>,
    roles: Walk<Role>,
}

impl Directory {
    /// `max_age`: how long a walk serves references that match; `refresh_floor`: the
    /// youngest walk a miss may replace.
    pub fn new(vultr: VultrClient, max_age: Duration, refresh_floor: Duration) -> Self {
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

    /// Every policy (without documents), from the shared walk.
    pub async fn all_policies(&self) -> Result<Arc<Vec<Policy>>, VultrError> {
        let walk = || walk_policies(&self.inner.vultr);
        Ok(self.inner.policies.get(self.inner.max_age, walk).await?.1)
    }

    /// Every user, from the shared walk.
    pub async fn all_users(&self) -> Result<Arc<Vec<User>>, VultrError> {
        let walk = || self.inner.vultr.list_users();
        Ok(self.inner.users.get(self.inner.max_age, walk).await?.1)
    }

    /// Every group, from the shared walk.
    pub async fn all_groups(&self) -> Result<Arc<Vec<Group>>, VultrError> {
        let walk = || self.inner.vultr.list_groups();
        Ok(self.inner.groups.get(self.inner.max_age, walk).await?.1)
    }

    /// Every role, from the shared walk.
    pub async fn all_roles(&self) -> Result<Arc<Vec<Role>>, VultrError> {
        let walk = || self.inner.vultr.list_roles();
        Ok(self.inner.roles.get(self.inner.max_age, walk).await?.1)
    }

    /// The policy a manifest names: by exact name, or by ID (which must exist).
    pub async fn policy(&self, policy: &PolicyRef) -> Result<Resolved, VultrError> {
        let inner = &self.inner;
        let walk = || walk_policies(&inner.vultr);
        self.lookup(&inner.policies, walk, |policies| {
            let (id, name) = match policy {
                PolicyRef::ById(id) => {
                    let id = policy_by_id(policies, id)?;
                    let name = name_of(policies, &id, |p| &p.id, |p| &p.name);
                    (id, name)
                }
                PolicyRef::ByName(name) => (policy_by_name(policies, name)?, name.clone()),
            };
            Ok(Resolved { id, name })
        })
        .await
    }

    /// The subject a manifest names, and what people call it (email, group or role name).
    pub async fn subject(&self, subject: &SubjectRef) -> Result<(Subject, String), VultrError> {
        let inner = &self.inner;
        match subject {
            SubjectRef::User(user) => {
                let walk = || inner.vultr.list_users();
                let found = self
                    .lookup(&inner.users, walk, |users| {
                        // An email is shown as the manifest spells it.
                        let (id, name) = match user {
                            UserRef::ById(id) => {
                                let id = user_by_id(users, id)?;
                                let name = name_of(users, &id, |u| &u.id, |u| &u.email);
                                (id, name)
                            }
                            UserRef::ByEmail(email) => {
                                (user_by_email(users, email)?, email.clone())
                            }
                        };
                        Ok(Resolved { id, name })
                    })
                    .await?;
                Ok((Subject::User(found.id), found.name))
            }
            SubjectRef::Group(group) => {
                let walk = || inner.vultr.list_groups();
                let found = self
                    .lookup(&inner.groups, walk, |groups| {
                        let id = match group {
                            GroupRef::ById(id) => group_by_id(groups, id)?,
                            GroupRef::ByName(name) => group_by_name(groups, name)?,
                        };
                        let name = name_of(groups, &id, |g| &g.id, |g| &g.display_name);
                        Ok(Resolved { id, name })
                    })
                    .await?;
                Ok((Subject::Group(found.id), found.name))
            }
            SubjectRef::Role(role) => {
                let walk = || inner.vultr.list_roles();
                let found = self
                    .lookup(&inner.roles, walk, |roles| {
                        let id = match role {
                            RoleRef::ById(id) => role_by_id(roles, id)?,
                            RoleRef::ByName(name) => role_by_name(roles, name)?,
                        };
                        let name = name_of(roles, &id, |r| &r.id, |r| &r.name);
                        Ok(Resolved { id, name })
                    })
                    .await?;
                Ok((Subject::Role(found.id), found.name))
            }
        }
    }

    /// Finds a reference in a walk; a miss walks again once (see the module docs).
    async fn lookup<T, F, Fut>(
        &self,
        walk: &Walk<T>,
        fetch: F,
        find: impl Fn(&[T]) -> Result<Resolved, VultrError>,
    ) -> Result<Resolved, VultrError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, VultrError>>,
    {
        let (at, items) = walk.get(self.inner.max_age, &fetch).await?;
        match find(&items) {
            Ok(found) => Ok(found),
            Err(miss) if at.elapsed() < self.inner.refresh_floor => Err(miss),
            Err(_) => {
                let (_, items) = walk.get(self.inner.refresh_floor, &fetch).await?;
                find(&items)
            }
        }
    }
}

/// The policy listing, without what only costs memory here: only IDs and names are
/// needed, and documents can be large.
async fn walk_policies(vultr: &VultrClient) -> Result<Vec<Policy>, VultrError> {
    let mut policies = vultr.list_policies().await?;
    for p in &mut policies {
        p.policy_document = None;
        p.description = None;
    }
    Ok(policies)
}

/// What people call the object with `id` (empty if the listing has no name for it).
fn name_of<T>(
    items: &[T],
    id: &str,
    id_of: impl Fn(&T) -> &String,
    name: impl Fn(&T) -> &String,
) -> String {
    items
        .iter()
        .find(|item| id_of(item) == id)
        .map(|item| name(item).clone())
        .unwrap_or_default()
}
