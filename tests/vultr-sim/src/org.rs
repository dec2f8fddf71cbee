//! The handle on one organisation, and how a request finds the organisation it acts on.

use std::sync::{Arc, MutexGuard};
use std::time::SystemTime;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::config::ApiKeys;
use crate::error::ApiError;
use crate::faults::Fault;
use crate::journal::JournalEntry;
use crate::seed::{Seed, SeedError, SeedGroup, SeedPolicy, SeedRole, SeedUser};
use crate::shared::{Caller, OrgState, Shared};
use crate::state::{AttachOutcome, DetachOutcome, Snapshot, Store, Subject};

/// One organisation of a running simulator: its objects, its keys, its requests.
///
/// [`crate::Sim`] dereferences to its default organisation's handle, so
/// `sim.add_policy(..)` is `sim.org(DEFAULT_ORG).add_policy(..)`; [`crate::Sim::org`]
/// gives the others. Changes made through it are out of band: visible in listings at
/// once (no listing lag) and not journaled. Cheap to clone; it keeps the simulator's
/// state alive, not its server.
#[derive(Debug, Clone)]
pub struct Org {
    shared: Arc<Shared>,
    index: usize,
}

impl Org {
    pub(crate) fn new(shared: Arc<Shared>, index: usize) -> Self {
        Self { shared, index }
    }

    pub(crate) fn inner(&self) -> &OrgState {
        &self.shared.orgs[self.index]
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.inner().store()
    }

    /// The account name `GET /v2/account` answers; unique among the organisations.
    pub fn name(&self) -> &str {
        &self.inner().name
    }

    /// The account email `GET /v2/account` answers.
    pub fn email(&self) -> &str {
        &self.inner().email
    }

    /// Adds a policy with a random id and returns the id.
    pub fn add_policy(&self, name: &str) -> String {
        let policy = SeedPolicy {
            name: name.to_owned(),
            ..SeedPolicy::default()
        };
        self.add(|store, now| store.add_policy(&policy, now).map(|p| p.id))
    }

    /// Adds a user with a random id and returns the id.
    pub fn add_user(&self, email: &str) -> String {
        let user = SeedUser {
            email: email.to_owned(),
            ..SeedUser::default()
        };
        self.add(|store, now| store.add_user(&user, now).map(|u| u.id))
    }

    /// Adds a group with a random id and returns the id.
    pub fn add_group(&self, display_name: &str) -> String {
        let group = SeedGroup {
            id: None,
            display_name: display_name.to_owned(),
        };
        self.add(|store, now| store.add_group(&group, now).map(|g| g.id))
    }

    /// Adds a role with a random id and returns the id.
    pub fn add_role(&self, name: &str) -> String {
        let role = SeedRole {
            name: name.to_owned(),
            ..SeedRole::default()
        };
        self.add(|store, now| store.add_role(&role, now).map(|r| r.id))
    }

    /// Random ids cannot collide in practice; retry anyway rather than panic.
    fn add(&self, f: impl Fn(&mut Store, SystemTime) -> Result<String, String>) -> String {
        loop {
            if let Ok(id) = f(&mut self.inner().store(), SystemTime::now()) {
                return id;
            }
        }
    }

    /// Loads more entities and attachments, all or nothing.
    pub fn load_seed(&self, seed: &Seed) -> Result<(), SeedError> {
        self.inner().load_seed(seed)
    }

    /// Removes the policy and its attachments; false if it did not exist.
    pub fn remove_policy(&self, id: &str) -> bool {
        self.inner().store().remove_policy(id)
    }

    /// Removes the user, its attachments and memberships; false if it did not exist.
    pub fn remove_user(&self, id: &str) -> bool {
        self.inner().store().remove_user(id)
    }

    /// Removes the group, its attachments and memberships; false if it did not exist.
    pub fn remove_group(&self, id: &str) -> bool {
        self.inner().store().remove_group(id)
    }

    /// Removes the role and its attachments; false if it did not exist.
    pub fn remove_role(&self, id: &str) -> bool {
        self.inner().store().remove_role(id)
    }

    /// Gives the group another display name; false if it does not exist.
    pub fn rename_group(&self, id: &str, display_name: &str) -> bool {
        self.inner().store().rename_group(id, display_name)
    }

    /// True if this created the attachment; false if it existed or an id is unknown.
    pub fn attach_user(&self, policy_id: &str, user_id: &str) -> bool {
        self.attach(Subject::User, (policy_id, user_id))
    }

    /// True if this created the attachment; false if it existed or an id is unknown.
    pub fn attach_group(&self, policy_id: &str, group_id: &str) -> bool {
        self.attach(Subject::Group, (policy_id, group_id))
    }

    /// Role first, as Vultr's routes. True if this created the attachment; false if it
    /// existed or an id is unknown.
    pub fn attach_role(&self, role_id: &str, policy_id: &str) -> bool {
        self.attach(Subject::Role, (policy_id, role_id))
    }

    fn attach(&self, kind: Subject, pair: (&str, &str)) -> bool {
        self.inner().attach(kind, pair) == AttachOutcome::Created
    }

    /// True if an attachment was removed.
    pub fn detach_user(&self, policy_id: &str, user_id: &str) -> bool {
        self.detach(Subject::User, (policy_id, user_id))
    }

    /// True if an attachment was removed.
    pub fn detach_group(&self, policy_id: &str, group_id: &str) -> bool {
        self.detach(Subject::Group, (policy_id, group_id))
    }

    /// True if an attachment was removed.
    pub fn detach_role(&self, role_id: &str, policy_id: &str) -> bool {
        self.detach(Subject::Role, (policy_id, role_id))
    }

    fn detach(&self, kind: Subject, pair: (&str, &str)) -> bool {
        self.inner().detach(kind, pair) == DetachOutcome::Removed
    }

    /// The true state, whether or not the listing lag still hides the attachment.
    pub fn is_user_attached(&self, policy_id: &str, user_id: &str) -> bool {
        self.inner()
            .store()
            .is_attached(Subject::User, (policy_id, user_id))
    }

    pub fn is_group_attached(&self, policy_id: &str, group_id: &str) -> bool {
        self.inner()
            .store()
            .is_attached(Subject::Group, (policy_id, group_id))
    }

    pub fn is_role_attached(&self, role_id: &str, policy_id: &str) -> bool {
        self.inner()
            .store()
            .is_attached(Subject::Role, (policy_id, role_id))
    }

    /// True if the user joined; false if already a member or an id is unknown.
    pub fn add_group_member(&self, group_id: &str, user_id: &str) -> bool {
        self.inner().store().add_member(group_id, user_id)
    }

    pub fn remove_group_member(&self, group_id: &str, user_id: &str) -> bool {
        self.inner().store().remove_member(group_id, user_id)
    }

    /// Everything this organisation holds, as `GET /_sim/state?org=NAME` returns it.
    pub fn state(&self) -> Snapshot {
        self.inner().snapshot()
    }

    /// Replaces this organisation's keys (e.g. to rotate them): a key left out gets 401
    /// from now on. Err (and no change) for a key no Bearer header could carry or one that
    /// belongs to another organisation.
    pub fn set_api_keys(&self, keys: ApiKeys) -> Result<(), String> {
        keys.validate()?;
        self.shared.set_api_keys(self.index, &keys)
    }

    /// `/v2` requests made with this organisation's keys, oldest first.
    /// [`crate::Sim::journal`] has every request, those without a known key included.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.shared.journal(Some(self.name()))
    }

    /// Forgets this organisation's journal entries.
    pub fn clear_journal(&self) {
        self.shared.clear_journal(Some(self.name()));
    }

    /// Adds `fault` for the requests made with this organisation's keys only and returns
    /// its id (remove it with [`crate::Sim::remove_fault`]). [`crate::Sim::add_fault`]
    /// adds one for every request.
    pub fn add_fault(&self, fault: Fault) -> u64 {
        self.shared
            .add_fault(fault, Some(self.name().to_owned()))
            .expect("the organisation exists")
    }
}

/// The organisation a `/v2` request acts on: the one its key belongs to.
pub(crate) struct KeyOrg(pub(crate) Org, pub(crate) Caller);

impl FromRequestParts<Arc<Shared>> for KeyOrg {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        // The pipeline puts the caller in once the key is accepted.
        let caller = parts
            .extensions
            .get::<Caller>()
            .copied()
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Self(Org::new(shared.clone(), caller.org), caller))
    }
}

/// The value of `org` in a query string, if any.
fn org_param(parts: &Parts) -> Option<String> {
    form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "org")
        .map(|(_, v)| v.into_owned())
}

fn resolve(shared: &Arc<Shared>, name: &str) -> Result<Org, ApiError> {
    shared
        .org_index(name)
        .map(|i| Org::new(shared.clone(), i))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("No organisation named {name:?}."),
            )
        })
}

/// The organisation a `/_sim` request acts on: `?org=NAME`, the default one without it;
/// 404 for an unknown name.
pub(crate) struct QueryOrg(pub(crate) Org);

impl FromRequestParts<Arc<Shared>> for QueryOrg {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        match org_param(parts) {
            Some(name) => resolve(shared, &name).map(Self),
            None => Ok(Self(Org::new(shared.clone(), 0))),
        }
    }
}

/// For `/_sim` routes that span every organisation unless `?org=NAME` narrows them
/// (the journal); 404 for an unknown name.
pub(crate) struct OrgFilter(pub(crate) Option<Org>);

impl FromRequestParts<Arc<Shared>> for OrgFilter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        org_param(parts)
            .map(|name| resolve(shared, &name))
            .transpose()
            .map(Self)
    }
}
