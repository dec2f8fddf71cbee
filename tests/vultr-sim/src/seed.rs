//! Seed organizations: the file format, the shipped demo, and loading into a store.
//!
//! Attachments and group members refer to entities by **id or by natural key**: a
//! reference is first matched against ids, then against policy `name`, user `email`
//! or group `display_name`. A natural key must match exactly one entity, otherwise
//! loading fails (so the deliberately duplicated demo email can only be used by id).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::state::{Store, Subject};

/// A whole organization to load. Every list may be left out of the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Seed {
    pub policies: Vec<SeedPolicy>,
    pub users: Vec<SeedUser>,
    pub groups: Vec<SeedGroup>,
    pub user_attachments: Vec<SeedUserAttachment>,
    pub group_attachments: Vec<SeedGroupAttachment>,
    /// Group membership, which makes `GET /v2/users/{id}/policies` show inherited policies.
    pub group_members: Vec<SeedGroupMember>,
    pub roles: Vec<SeedRole>,
    pub role_attachments: Vec<SeedRoleAttachment>,
}

/// A policy or a role: a name, and an id (a random UUID when left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedNamed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: String,
}

pub type SeedPolicy = SeedNamed;
pub type SeedRole = SeedNamed;

/// A user; without `name` the email's local part is used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub email: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub display_name: String,
}

/// `policy`: id or name; `role`: id or name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRoleAttachment {
    pub policy: String,
    pub role: String,
}

/// `policy`: id or name; `user`: id or email.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUserAttachment {
    pub policy: String,
    pub user: String,
}

/// `policy`: id or name; `group`: id or display name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGroupAttachment {
    pub policy: String,
    pub group: String,
}

/// `group`: id or display name; `user`: id or email.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGroupMember {
    pub group: String,
    pub user: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read seed file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse seed file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("duplicate {kind} id {id}")]
    DuplicateId { kind: &'static str, id: String },
    #[error("{kind} {reference:?} matches nothing")]
    Unresolved {
        kind: &'static str,
        reference: String,
    },
    #[error("{kind} {reference:?} is ambiguous ({count} matches); refer to it by id")]
    Ambiguous {
        kind: &'static str,
        reference: String,
        count: usize,
    },
}

impl From<SeedError> for std::io::Error {
    fn from(e: SeedError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    }
}

fn policy(id: &str, name: &str, description: &str) -> SeedPolicy {
    SeedPolicy {
        id: Some(id.to_owned()),
        name: name.to_owned(),
        description: description.to_owned(),
    }
}

fn user(id: &str, email: &str, name: &str) -> SeedUser {
    SeedUser {
        id: Some(id.to_owned()),
        email: email.to_owned(),
        name: name.to_owned(),
    }
}

fn role(id: &str, name: &str, description: &str) -> SeedRole {
    SeedRole {
        id: Some(id.to_owned()),
        name: name.to_owned(),
        description: description.to_owned(),
    }
}

fn group(id: &str, display_name: &str) -> SeedGroup {
    SeedGroup {
        id: Some(id.to_owned()),
        display_name: display_name.to_owned(),
    }
}

/// Reads YAML, or JSON when the file name ends in `.json`.
pub(crate) fn read_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::Io {
        path: path.to_owned(),
        source,
    })?;
    let parse_error = |message: String| SeedError::Parse {
        path: path.to_owned(),
        message,
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(&text).map_err(|e| parse_error(e.to_string()))
    } else {
        yaml_serde::from_str(&text).map_err(|e| parse_error(e.to_string()))
    }
}

impl Seed {
    /// The demo organization; `tests/vultr-sim/demo-org.yaml` holds the same data.
    pub fn demo() -> Seed {
        Seed {
            policies: vec![
                policy(
                    "62948e0d-b09d-4d08-9554-3985b635cb17",
                    "dns-admin",
                    "Full access to DNS",
                ),
                policy(
                    "0b6b6c1e-5f0a-4c55-9d3e-6f2f1c3e9a01",
                    "billing-read",
                    "Read-only access to billing",
                ),
                policy(
                    "3c1d7a52-8e4b-4f6a-b2d9-7a0e5c4b1f02",
                    "compute-admin",
                    "Full access to compute instances",
                ),
            ],
            users: vec![
                user(
                    "8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b",
                    "alice@example.com",
                    "Alice Adams",
                ),
                user(
                    "5d2c9b71-3a4e-4b8f-9c6d-1e0f2a3b4c03",
                    "bob@example.com",
                    "Bob Brown",
                ),
                user(
                    "9e8f7a6b-5c4d-4e3f-8a2b-1c0d9e8f7a04",
                    "carol@example.com",
                    "Carol Clark",
                ),
                user(
                    "c0ffee00-1111-4222-8333-444455556605",
                    "shared@example.com",
                    "Shared One",
                ),
                user(
                    "c0ffee00-1111-4222-8333-444455556606",
                    "shared@example.com",
                    "Shared Two",
                ),
            ],
            groups: vec![
                group("7f3e2d1c-0b9a-4876-a543-210fedcba907", "ops"),
                group("1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c08", "developers"),
            ],
            user_attachments: vec![SeedUserAttachment {
                policy: "compute-admin".to_owned(),
                user: "carol@example.com".to_owned(),
            }],
            group_attachments: vec![SeedGroupAttachment {
                policy: "billing-read".to_owned(),
                group: "ops".to_owned(),
            }],
            group_members: vec![
                SeedGroupMember {
                    group: "ops".to_owned(),
                    user: "bob@example.com".to_owned(),
                },
                SeedGroupMember {
                    group: "developers".to_owned(),
                    user: "alice@example.com".to_owned(),
                },
            ],
            roles: vec![
                role(
                    "4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09",
                    "auditors",
                    "Read-only auditors",
                ),
                role(
                    "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e510",
                    "on-call",
                    "On-call engineers",
                ),
                // A second "on-call" to show an ambiguous role name.
                role(
                    "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e511",
                    "on-call",
                    "On-call engineers (EU)",
                ),
            ],
            role_attachments: vec![SeedRoleAttachment {
                policy: "billing-read".to_owned(),
                role: "auditors".to_owned(),
            }],
        }
    }

    /// Reads YAML, or JSON when the file name ends in `.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Seed, SeedError> {
        read_file(path.as_ref())
    }

    /// Adds this seed to `store`; on error the store may be half-filled, so callers
    /// apply it to a copy.
    pub(crate) fn apply(&self, store: &mut Store, now: SystemTime) -> Result<(), SeedError> {
        let duplicate = |kind| move |id| SeedError::DuplicateId { kind, id };
        for p in &self.policies {
            store.add_policy(p, now).map_err(duplicate("policy"))?;
        }
        for u in &self.users {
            store.add_user(u, now).map_err(duplicate("user"))?;
        }
        for g in &self.groups {
            store.add_group(g, now).map_err(duplicate("group"))?;
        }
        for r in &self.roles {
            store.add_role(r, now).map_err(duplicate("role"))?;
        }
        let users = self.user_attachments.iter();
        let groups = self.group_attachments.iter();
        let roles = self.role_attachments.iter();
        let attachments = (users.map(|a| (Subject::User, &a.policy, &a.user)))
            .chain(groups.map(|a| (Subject::Group, &a.policy, &a.group)))
            .chain(roles.map(|a| (Subject::Role, &a.policy, &a.role)));
        for (kind, policy, subject) in attachments {
            let pair = (policy_id(store, policy)?, subject_id(store, kind, subject)?);
            store.attach(kind, (&pair.0, &pair.1), now, None, "seed");
        }
        for m in &self.group_members {
            let g = subject_id(store, Subject::Group, &m.group)?;
            let u = subject_id(store, Subject::User, &m.user)?;
            store.add_member(&g, &u);
        }
        Ok(())
    }
}

/// The policy a seed names by id or name.
fn policy_id(store: &Store, r: &str) -> Result<String, SeedError> {
    resolve("policy", r, store.policies.matching(r, |p| p.name == r))
}

/// The user (id or email), group or role (id or name) a seed names.
fn subject_id(store: &Store, kind: Subject, r: &str) -> Result<String, SeedError> {
    let candidates = match kind {
        Subject::User => store.users.matching(r, |u| u.email == r),
        Subject::Group => store.groups.matching(r, |g| g.display_name == r),
        Subject::Role => store.roles.matching(r, |x| x.name == r),
    };
    resolve(kind.name(), r, candidates)
}

/// `candidates` are the ids that match `reference` as an id or as a natural key,
/// id matches first.
fn resolve(
    kind: &'static str,
    reference: &str,
    candidates: (Option<String>, Vec<String>),
) -> Result<String, SeedError> {
    let (by_id, mut by_key) = candidates;
    if let Some(id) = by_id {
        return Ok(id);
    }
    match by_key.len() {
        0 => Err(SeedError::Unresolved {
            kind,
            reference: reference.to_owned(),
        }),
        1 => Ok(by_key.remove(0)),
        count => Err(SeedError::Ambiguous {
            kind,
            reference: reference.to_owned(),
            count,
        }),
    }
}
