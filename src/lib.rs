//! vultr-iam-operator: Vultr IAM policy attachments as Kubernetes objects.
//!
//! - [`domain`]: grants and subjects, shared by the CRD and the client
//! - [`crd`]: the PolicyAttachment resource and its admission rules
//! - [`vultr`]: the Vultr IAM API client
//! - [`reconcile`]: attach on apply, guaranteed revocation on delete
//! - [`drift`]: periodic verification against Vultr
//! - [`run`]: wiring of the `run` command
//! - [`export`]: the `export` command (manifests for the grants in Vultr)
//! - [`connect`]: the Vultr client as the command line describes it
//! - [`build_info`]: what the binary was built from (`version`, `.dep-v0`)
pub mod build_info;
pub mod cli;
pub mod connect;
pub mod crd;
pub mod crdgen;
pub mod domain;
pub mod drift;
pub mod error;
pub mod export;
pub mod http;
pub mod leader;
pub mod listen;
pub mod listings;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod telemetry;
pub mod vultr;
pub mod watch_cache;
