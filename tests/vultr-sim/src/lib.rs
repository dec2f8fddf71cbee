//! In-memory simulator of the Vultr IAM API (see `shared/vultr-iam-api.md`).
//!
//! Use it in-process with [`Sim::start`], or run the `vultr-sim` binary. `/v2` serves
//! the contract, for one or more organisations (one per key, one rate limit for all);
//! `/_sim` is an unauthenticated control API (see the README).

mod admin;
mod api;
mod config;
mod error;
mod extract;
mod faults;
mod journal;
mod org;
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

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ApiKeys, Behaviour, DEFAULT_ORG, ListingShape, OrgConfig, RateLimit, SimConfig};
pub use faults::{Fault, FaultKind};
pub use journal::{JournalEntry, key_fingerprint};
pub use org::Org;
pub use seed::{
    Seed, SeedError, SeedGroup, SeedGroupAttachment, SeedGroupMember, SeedNamed, SeedPolicy,
    SeedRole, SeedRoleAttachment, SeedUser, SeedUserAttachment,
};
pub use state::{AttachmentView, Group, MemberView, Policy, Role, Snapshot, User};

use shared::Shared;

/// A running simulator. Dropping it (or [`Sim::shutdown`]) stops the server.
///
/// It serves one or more organisations ([`SimConfig::organisations`]), each API key
/// belonging to one of them, behind one rate limit. It dereferences to its default
/// organisation's [`Org`] handle, so `sim.add_policy(..)`, `sim.state()`,
/// `sim.set_api_keys(..)` and the like act on the default organisation; `sim.org(name)`
/// gives another one.
#[derive(Debug)]
pub struct Sim {
    shared: Arc<Shared>,
    default: Org,
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
    /// Loads the seeds, binds `config.listen` and serves on the current tokio runtime.
    /// A seed that does not resolve is an `InvalidData` error; an organisation without a
    /// name, two with the same name or a key of two organisations is `InvalidInput`.
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        let shared = Arc::new(Shared::new(&config)?);
        let default = Org::new(shared.clone(), 0);
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, app(shared.clone()), stopped));
        Ok(Sim {
            shared,
            default,
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

    /// The organisation named `name`.
    ///
    /// # Panics
    /// If there is none: organisations are fixed when the simulator starts.
    pub fn org(&self, name: &str) -> Org {
        self.try_org(name)
            .unwrap_or_else(|| panic!("the simulator has no organisation named {name:?}"))
    }

    /// The organisation named `name`, if there is one.
    pub fn try_org(&self, name: &str) -> Option<Org> {
        let shared = &self.shared;
        shared.org_index(name).map(|i| Org::new(shared.clone(), i))
    }

    /// Every organisation, the default one first.
    pub fn orgs(&self) -> Vec<Org> {
        let shared = &self.shared;
        (0..shared.orgs.len())
            .map(|i| Org::new(shared.clone(), i))
            .collect()
    }

    // What spans every organisation. The rest of the out-of-band control (the same
    // operations as /_sim) is on `Org`, which `Sim` dereferences to for the default
    // organisation.

    /// `/v2` requests so far of every organisation (each entry's `org` says which; empty
    /// without a known key), oldest first (the last 100,000 at most).
    /// [`Org::journal`] has one organisation's.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.shared.journal(None)
    }

    /// Forgets every organisation's journal entries.
    pub fn clear_journal(&self) {
        self.shared.clear_journal(None);
    }

    /// Returns the fault's id. It applies to every request, whatever its key;
    /// [`Org::add_fault`] adds one for one organisation's requests.
    pub fn add_fault(&self, fault: Fault) -> u64 {
        self.shared
            .add_fault(fault, None)
            .expect("no organisation to check")
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

    /// `None` (or a rate of zero) turns limiting off; a new limit starts with a full bucket.
    /// One bucket counts the requests of every key of every organisation.
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

impl std::ops::Deref for Sim {
    type Target = Org;

    /// The default organisation.
    fn deref(&self) -> &Org {
        &self.default
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // The server task sees the signal (or the closed channel) and stops by itself.
        let _ = self.stop.send(true);
    }
}
