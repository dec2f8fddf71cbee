//! vultr-iam-operator: Vultr IAM policy attachments as Kubernetes objects. Modules are
//! layered (`layers.rs` holds the order and its test): each imports only lower ones.
//!
//! - `domain`: grants, subjects and references, shared by the CRD and the client
//! - `crd`: the PolicyAttachment resource and its admission rules
//! - `boundary`: the grant boundary (which grants a key may make)
//! - `vultr`: the Vultr IAM API client
//! - `port`: the reconciler's port to Vultr (resolve, observe, attach, revoke)
//! - `reconcile`: attach on apply, guaranteed revocation on delete
//! - `drift`: periodic verification against Vultr
//! - `run`: wiring of the `run` command
//! - `export`: the `export` command (manifests for the grants in Vultr)
//! - `connect`: the Vultr client as the command line describes it
//! - `leader`: leader election on a Lease, and the write fence it keeps
//! - `cli`: the command line, parsed and dispatched
//! - `build_info`: what the binary was built from (`version`, `.dep-v0`)
pub(crate) mod boundary;
pub(crate) mod build_info;
pub mod cli;
pub(crate) mod connect;
pub mod crd;
pub(crate) mod crdgen;
pub(crate) mod domain;
pub(crate) mod drift;
pub mod error;
pub(crate) mod export;
pub(crate) mod http;
#[cfg(test)]
mod layers;
pub(crate) mod leader;
pub(crate) mod listen;
pub mod metrics;
pub(crate) mod port;
pub mod reconcile;
pub(crate) mod run;
pub(crate) mod telemetry;
pub mod vultr;
pub mod watch_cache;
