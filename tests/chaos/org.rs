//! The seeded organisation the run works on, and the pool of pairs objects declare:
//! each pair has one deletion policy (so a pair is never declared both Orphan and
//! Delete), and "outsider" users and roles that no object ever declares receive the out-of-band
//! grants the operator must leave alone. One group, in no pair, has its name reused in
//! Vultr during the run.

use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use vultr_sim::{Seed, SeedGroup, SeedNamed, SeedUser};

use super::model::{Kind, Pair};

#[derive(Clone, Debug)]
pub struct Entity {
    pub id: String,
    /// Policy name, user email, group display name or role name.
    pub key: String,
}

#[derive(Clone, Debug)]
pub struct Org {
    pub policies: Vec<Entity>,
    pub users: Vec<Entity>,
    pub groups: Vec<Entity>,
    pub roles: Vec<Entity>,
    /// Users no object declares.
    pub outsiders: Vec<Entity>,
    /// Roles no object declares.
    pub outsider_roles: Vec<Entity>,
    /// A group no pair uses: the name reuse renames it and gives its name to a new one.
    pub reused: Entity,
}

/// A pair objects may declare, with its deletion policy.
#[derive(Clone, Debug)]
pub struct PoolPair {
    pub policy: usize,
    pub kind: Kind,
    pub subject: usize,
    pub orphan: bool,
}

fn uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

impl Org {
    pub fn generate(
        rng: &mut StdRng,
        policies: usize,
        users: usize,
        groups: usize,
        roles: usize,
    ) -> Org {
        let mut entities = |n: usize, key: &dyn Fn(usize) -> String| -> Vec<Entity> {
            (0..n)
                .map(|i| Entity {
                    id: uuid(rng),
                    key: key(i),
                })
                .collect()
        };
        Org {
            policies: entities(policies, &|i| format!("chaos-policy-{i:02}")),
            users: entities(users, &|i| format!("user-{i:03}@chaos.example")),
            groups: entities(groups, &|i| format!("chaos-group-{i:02}")),
            outsiders: entities(8, &|i| format!("outsider-{i}@chaos.example")),
            roles: entities(roles, &|i| format!("chaos-role-{i:02}")),
            outsider_roles: entities(2, &|i| format!("outsider-role-{i}")),
            reused: Entity {
                id: uuid(rng),
                key: "chaos-reused-group".to_owned(),
            },
        }
    }

    /// The organisation as a simulator seed; no attachments.
    pub fn seed(&self) -> Seed {
        let named = |e: &Entity| SeedNamed {
            id: Some(e.id.clone()),
            name: e.key.clone(),
            description: String::new(),
        };
        Seed {
            policies: self.policies.iter().map(named).collect(),
            users: (self.users.iter().chain(&self.outsiders))
                .map(|u| SeedUser {
                    id: Some(u.id.clone()),
                    email: u.key.clone(),
                    name: String::new(),
                })
                .collect(),
            groups: (self.groups.iter().chain([&self.reused]))
                .map(|g| SeedGroup {
                    id: Some(g.id.clone()),
                    display_name: g.key.clone(),
                })
                .collect(),
            roles: (self.roles.iter().chain(&self.outsider_roles))
                .map(named)
                .collect(),
            ..Seed::default()
        }
    }

    /// `n` distinct pairs, about a quarter of them groups and a fifth roles,
    /// `orphan_share` of them Orphan.
    pub fn pool(&self, rng: &mut StdRng, n: usize, orphan_share: f64) -> Vec<PoolPair> {
        let capacity =
            self.policies.len() * (self.users.len() + self.groups.len() + self.roles.len());
        let n = n.min(capacity);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let policy = rng.random_range(0..self.policies.len());
            let (kind, subject) = match rng.random_range(0..100) {
                0..20 if !self.roles.is_empty() => {
                    (Kind::Role, rng.random_range(0..self.roles.len()))
                }
                20..45 => (Kind::Group, rng.random_range(0..self.groups.len())),
                _ => (Kind::User, rng.random_range(0..self.users.len())),
            };
            if seen.insert((policy, kind, subject)) {
                out.push(PoolPair {
                    policy,
                    kind,
                    subject,
                    orphan: rng.random_bool(orphan_share),
                });
            }
        }
        out
    }

    pub fn pair(&self, p: &PoolPair) -> Pair {
        Pair {
            policy: self.policies[p.policy].id.clone(),
            kind: p.kind,
            subject: self.subject(p).0.id.clone(),
        }
    }

    /// The pair's subject, its field in a spec and the field of its natural key.
    fn subject(&self, p: &PoolPair) -> (&Entity, &'static str, &'static str) {
        match p.kind {
            Kind::User => (&self.users[p.subject], "user", "email"),
            Kind::Group => (&self.groups[p.subject], "group", "name"),
            Kind::Role => (&self.roles[p.subject], "role", "name"),
        }
    }

    /// A spec for the pair, each side by name/email or by ID at random.
    pub fn spec(&self, rng: &mut StdRng, p: &PoolPair) -> Value {
        let policy = reference(rng, &self.policies[p.policy], "name");
        let (subject, field, key) = self.subject(p);
        let mut spec = json!({"policy": policy, field: reference(rng, subject, key)});
        if p.orphan {
            spec["deletionPolicy"] = json!("Orphan");
        }
        spec
    }
}

/// `{"id": ...}` or `{<key>: ...}`, at random.
fn reference(rng: &mut StdRng, entity: &Entity, key: &str) -> Value {
    if rng.random_bool(0.5) {
        json!({"id": entity.id})
    } else {
        json!({key: entity.key})
    }
}
