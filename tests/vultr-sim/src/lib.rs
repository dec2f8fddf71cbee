//! In-memory simulator of the Vultr IAM API (see `shared/vultr-iam-api.md`).
//!
//! Use it in-process with [`Sim::start`], or run the `vultr-sim` binary. `/v2` serves
//! the contract; `/_sim` is an unauthenticated control API (see the README).

mod admin;
mod api;
mod config;
mod error;
mod extract;
mod faults;
mod journal;
mod pagination;
mod pipeline;
mod ratelimit;
mod seed;
mod server;
mod shared;
mod state;
mod timefmt;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ApiKeys, Behaviour, ListingShape, RateLimit, SimConfig};
pub use faults::{Fault, FaultKind};
pub use journal::{JournalEntry, key_fingerprint};
pub use seed::{
    Seed, SeedError, SeedGroup, SeedGroupAttachment, SeedGroupMember, SeedNamed, SeedPolicy,
    SeedRole, SeedRoleAttachment, SeedUser, SeedUserAttachment,
};
pub use state::{AttachmentView, Group, MemberView, Policy, Role, Snapshot, User};

use shared::Shared;
use state::{AttachOutcome, DetachOutcome, Store, Subject};

/// A running simulator. Dropping it (or [`Sim::shutdown`]) stops the server.
#[derive(Debug)]
pub struct Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

fn app(shared: Arc<Shared>) -> Router {
    api::routes()
        .merge(admin::routes())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Router::layer runs after routing, so the pipeline sees the matched route
        // template; it skips everything outside /v2 itself.
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            pipeline::v2_pipeline,
        ))
        .with_state(shared)
}

impl Sim {
    /// Loads the seed, binds `config.listen` and serves on the current tokio runtime.
    /// A seed that does not resolve is an `InvalidData` error.
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        let shared = Arc::new(Shared::new(&config)?);
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, app(shared.clone()), stopped));
        Ok(Sim {
            shared,
            addr,
            stop,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, gives in-flight requests a short grace period, and waits.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    // Out-of-band control: the same operations as /_sim. Changes are visible in
    // listings at once (no listing lag) and are not journaled.

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
            if let Ok(id) = f(&mut self.shared.store(), SystemTime::now()) {
                return id;
            }
        }
    }

    /// Loads more entities and attachments, all or nothing.
    pub fn load_seed(&self, seed: &Seed) -> Result<(), SeedError> {
        self.shared.load_seed(seed)
    }

    /// Removes the policy and its attachments; false if it did not exist.
    pub fn remove_policy(&self, id: &str) -> bool {
        self.shared.store().remove_policy(id)
    }

    /// Removes the user, its attachments and memberships; false if it did not exist.
    pub fn remove_user(&self, id: &str) -> bool {
        self.shared.store().remove_user(id)
    }

    /// Removes the group, its attachments and memberships; false if it did not exist.
    pub fn remove_group(&self, id: &str) -> bool {
        self.shared.store().remove_group(id)
    }

    /// Removes the role and its attachments; false if it did not exist.
    pub fn remove_role(&self, id: &str) -> bool {
        self.shared.store().remove_role(id)
    }

    /// Gives the group another display name; false if it does not exist.
    pub fn rename_group(&self, id: &str, display_name: &str) -> bool {
        self.shared.store().rename_group(id, display_name)
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
        self.shared.attach(kind, pair) == AttachOutcome::Created
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
        self.shared.detach(kind, pair) == DetachOutcome::Removed
    }

    /// The true state, whether or not the listing lag still hides the attachment.
    pub fn is_user_attached(&self, policy_id: &str, user_id: &str) -> bool {
        self.shared
            .store()
            .is_attached(Subject::User, (policy_id, user_id))
    }

    pub fn is_group_attached(&self, policy_id: &str, group_id: &str) -> bool {
        self.shared
            .store()
            .is_attached(Subject::Group, (policy_id, group_id))
    }

    pub fn is_role_attached(&self, role_id: &str, policy_id: &str) -> bool {
        self.shared
            .store()
            .is_attached(Subject::Role, (policy_id, role_id))
    }

    /// True if the user joined; false if already a member or an id is unknown.
    pub fn add_group_member(&self, group_id: &str, user_id: &str) -> bool {
        self.shared.store().add_member(group_id, user_id)
    }

    pub fn remove_group_member(&self, group_id: &str, user_id: &str) -> bool {
        self.shared.store().remove_member(group_id, user_id)
    }

    /// Everything the simulator holds, as `GET /_sim/state` returns it.
    pub fn state(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// `/v2` requests so far, oldest first (the last 100,000 at most).
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.shared.journal()
    }

    pub fn clear_journal(&self) {
        self.shared.clear_journal();
    }

    /// Returns the fault's id.
    pub fn add_fault(&self, fault: Fault) -> u64 {
        self.shared.add_fault(fault)
    }

    /// False if no such fault is active.
    pub fn remove_fault(&self, id: u64) -> bool {
        self.shared.remove_fault(id)
    }

    /// Requests a hold fault is holding right now (received, not yet applied).
    pub fn held_requests(&self) -> usize {
        self.shared.held()
    }

    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Statuses outside 200..=599 are answered as 500.
    pub fn set_behaviour(&self, b: Behaviour) {
        self.shared.set_behaviour(b);
    }

    pub fn behaviour(&self) -> Behaviour {
        self.shared.behaviour()
    }

    /// Replaces the accepted keys (e.g. to rotate them): a key left out gets 401 from now
    /// on. Err (and no change) for a key no Bearer header could carry.
    pub fn set_api_keys(&self, keys: ApiKeys) -> Result<(), String> {
        keys.validate()?;
        self.shared.set_api_keys(&keys);
        Ok(())
    }

    /// `None` (or a rate of zero) turns limiting off; a new limit starts with a full bucket.
    pub fn set_rate_limit(&self, r: Option<RateLimit>) {
        self.shared.set_rate_limit(r);
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.shared.rate_limit()
    }
}

// Tests share the handle across tasks.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Sim>();
};

impl Drop for Sim {
    fn drop(&mut self) {
        // The server task sees the signal (or the closed channel) and stops by itself.
        let _ = self.stop.send(true);
    }
}
