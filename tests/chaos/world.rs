//! State shared by the driver, the fault steps and the observer for one run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use vultr_sim::Sim;

use super::cluster::Cluster;
use super::model::{Declared, LeaseSample, Pair, Replaced};
use super::org::{Org, PoolPair};
use super::replicas::Replicas;

/// Sizes of a run; `CHAOS_OBJECTS`, `CHAOS_SECONDS`, `CHAOS_KILLS` and `CHAOS_SEED`
/// override them.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub name: &'static str,
    pub objects: usize,
    pub namespaces: usize,
    pub chaos: Duration,
    pub kills: usize,
    pub storms: usize,
    pub hangs: usize,
    pub outage: Duration,
    pub resync: Duration,
    pub lease: Duration,
    /// Longest wait for the objects to settle once the faults stop.
    pub settle: Duration,
    pub policies: usize,
    pub users: usize,
    pub groups: usize,
    pub roles: usize,
    pub seed: u64,
}

impl Sizes {
    /// The run in `make test`: every fault kind, fewer objects and kills.
    pub fn short() -> Sizes {
        Sizes {
            name: "short",
            objects: 40,
            namespaces: 3,
            chaos: Duration::from_secs(45),
            kills: 2,
            storms: 2,
            hangs: 1,
            outage: Duration::from_secs(8),
            resync: Duration::from_secs(3),
            lease: Duration::from_secs(6),
            settle: Duration::from_secs(60),
            policies: 6,
            users: 20,
            groups: 6,
            roles: 4,
            seed: 9,
        }
    }

    /// `make chaos`.
    pub fn long() -> Sizes {
        Sizes {
            name: "long",
            objects: 240,
            namespaces: 4,
            chaos: Duration::from_secs(300),
            kills: 10,
            storms: 6,
            hangs: 4,
            outage: Duration::from_secs(30),
            resync: Duration::from_secs(5),
            lease: Duration::from_secs(8),
            settle: Duration::from_secs(180),
            policies: 12,
            users: 50,
            groups: 12,
            roles: 8,
            seed: 9,
        }
    }

    pub fn with_env(mut self) -> Sizes {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = var("CHAOS_OBJECTS") {
            self.objects = n as usize;
        }
        if let Some(n) = var("CHAOS_SECONDS") {
            self.chaos = Duration::from_secs(n);
        }
        if let Some(n) = var("CHAOS_KILLS") {
            self.kills = n as usize;
        }
        if let Some(n) = var("CHAOS_SEED") {
            self.seed = n;
        }
        self
    }
}

#[derive(Debug, Default, Clone)]
pub struct Ops {
    pub creates: usize,
    pub deletes: usize,
    pub renames: usize,
    pub failed: usize,
    pub namespace_deletions: usize,
}

/// Every object the driver declared, and the ones it may still delete.
#[derive(Debug, Default)]
pub struct Ledger {
    pub declared: Vec<Declared>,
    /// Indices into `declared` of objects known created and not yet deleted.
    pub live: Vec<usize>,
    pub ops: Ops,
    pub errors: Vec<String>,
}

impl Ledger {
    pub fn declare(&mut self, d: Declared) -> usize {
        let i = self.declared.len();
        self.declared.push(d);
        i
    }
}

#[derive(Debug, Clone)]
pub struct NsState {
    pub name: String,
    pub usable: bool,
}

pub struct World {
    pub sizes: Sizes,
    pub run: String,
    pub client: kube::Client,
    pub sim: Sim,
    pub cluster: Cluster,
    pub org: Org,
    pub pool: Vec<PoolPair>,
    pub replicas: Mutex<Replicas>,
    pub ledger: Mutex<Ledger>,
    pub namespaces: Mutex<Vec<NsState>>,
    /// Fault kind → times injected.
    pub tally: Mutex<BTreeMap<String, usize>>,
    /// What the fault steps observed (e.g. how long the cut leader took to exit).
    pub notes: Mutex<Vec<String>>,
    pub foreign: Mutex<Vec<Pair>>,
    pub lease: Mutex<Vec<LeaseSample>>,
    /// The replicas' `--vultr-api-key-file`.
    pub key_file: std::path::PathBuf,
    /// Every API key of the run, the one in use last.
    pub keys: Mutex<Vec<String>>,
    /// The name reuse's old and new objects.
    pub replaced: Mutex<Vec<Replaced>>,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl World {
    pub fn count(&self, what: &str) {
        *lock(&self.tally).entry(what.to_owned()).or_default() += 1;
    }

    pub fn note(&self, text: String) {
        eprintln!("chaos: {text}");
        lock(&self.notes).push(text);
    }

    pub fn error(&self, text: String) {
        let mut l = lock(&self.ledger);
        l.ops.failed += 1;
        l.errors.push(text);
    }

    pub fn usable_namespaces(&self) -> Vec<String> {
        lock(&self.namespaces)
            .iter()
            .filter(|n| n.usable)
            .map(|n| n.name.clone())
            .collect()
    }

    pub fn now() -> SystemTime {
        SystemTime::now()
    }
}

pub type Shared = Arc<World>;
