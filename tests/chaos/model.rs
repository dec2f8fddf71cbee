//! What the chaos run talks about: grant pairs, the objects the driver declared, and
//! what it observed at the end. Plain data, shared by the driver and the checker.

use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    User,
    Group,
    Role,
}

/// A (policy, user|group|role) grant, by IDs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair {
    pub policy: String,
    pub kind: Kind,
    pub subject: String,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Role => "role",
        };
        write!(f, "policy {} / {kind} {}", self.policy, self.subject)
    }
}

/// One PolicyAttachment the driver asked the API server to create (whether or not the
/// create is known to have succeeded: a create cut by an API server restart may have
/// been stored).
#[derive(Clone, Debug)]
pub struct Declared {
    pub namespace: String,
    pub name: String,
    pub pair: Pair,
    pub orphan: bool,
    /// When the driver asked for its deletion (or deleted its namespace), if it did.
    pub delete_requested: Option<SystemTime>,
    /// When the object was first seen gone after that.
    pub gone_at: Option<SystemTime>,
}

impl Declared {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A PolicyAttachment present at the end of the run.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub namespace: String,
    pub name: String,
    pub terminating: bool,
    /// `Ready` status and reason, if the operator wrote one.
    pub ready: Option<(String, String)>,
    /// The pair recorded in status.
    pub recorded: Option<Pair>,
    pub finalizers: Vec<String>,
}

impl Observed {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One observation of the leader Lease.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseSample {
    pub holder: Option<String>,
    pub acquire: Option<SystemTime>,
    pub renew: Option<SystemTime>,
    pub seen: SystemTime,
}

/// A request the simulator journaled (a POST/DELETE, or a refused one).
#[derive(Clone, Debug)]
pub struct Write {
    pub at: SystemTime,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The request's User-Agent, if the simulator journals it.
    pub agent: Option<String>,
}

/// A Vultr object renamed, and the one created under its old name.
#[derive(Clone, Debug, PartialEq)]
pub struct Replaced {
    pub old: String,
    pub new: String,
    /// When the name was reused.
    pub at: SystemTime,
}

/// A text that must never contain the API key (a log, an Event, a status, an error).
#[derive(Clone, Debug)]
pub struct Captured {
    pub label: String,
    pub text: String,
}

/// How a replica incarnation ended when the run stopped it with SIGTERM.
#[derive(Clone, Debug, PartialEq)]
pub struct Stopped {
    pub identity: String,
    /// How long after SIGTERM it was seen gone; `None` if it was still running when
    /// given up on (then SIGKILLed).
    pub after: Option<Duration>,
    /// Exit status 0.
    pub clean: bool,
}

/// Everything the checker needs.
#[derive(Clone, Debug, Default)]
pub struct EndState {
    pub declared: Vec<Declared>,
    pub present: Vec<Observed>,
    /// Pairs attached in the simulator (its true state).
    pub attached: Vec<Pair>,
    /// Pairs attached out of band that no object ever declared: must be left alone.
    pub foreign: Vec<Pair>,
    pub lease: Vec<LeaseSample>,
    /// How long after its last observed renewal a holder may still write.
    pub margin: Duration,
    /// Lease identities of every replica incarnation.
    pub identities: Vec<String>,
    pub writes: Vec<Write>,
    /// Operator logs, checked for panics and for the key.
    pub logs: Vec<Captured>,
    /// Events, statuses and errors, checked for the keys.
    pub texts: Vec<Captured>,
    /// Every API key of the run (the rotation adds one).
    pub secrets: Vec<String>,
    /// Requests Vultr refused with 401: a key used after its removal.
    pub refused: Vec<Write>,
    /// Vultr objects whose name was given to another (the name reuse).
    pub replaced: Vec<Replaced>,
    /// The replicas stopped at the end of the run.
    pub stops: Vec<Stopped>,
}
