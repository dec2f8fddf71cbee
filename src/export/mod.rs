//! `vultr-iam-operator export`: PolicyAttachment manifests for the grants that exist in
//! Vultr, ready to commit. Pure parts, each with its tests: [`filter`] (which grants,
//! which listings), [`reference`] (names or IDs in the spec), [`naming`] (object
//! names), [`manifest`] (objects, order, YAML), [`unmanaged`] (pairs the cluster
//! declares). The I/O sits at the edge: [`read`] (Vultr listings) and [`command`]
//! (the directory walk, the cluster list, stdout and stderr).
//!
//! Adding a subject kind (roles) means: a [`filter::Source`] arm and its listing in
//! [`read`], a selector in [`filter`], an arm in [`reference`] and [`org::Org`]'s
//! labels; names, manifests and `--unmanaged` follow from `Grant`.

mod args;
pub mod command;
pub mod filter;
pub mod manifest;
pub mod naming;
pub mod org;
pub mod read;
pub mod reference;
pub mod unmanaged;

pub use args::{ExportArgs, Reference};
pub(crate) use command::run;
