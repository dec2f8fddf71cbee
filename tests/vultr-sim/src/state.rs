//! The in-memory organization: policies, users, groups, roles, attachments, membership.
//!
//! Tables keep insertion order so pagination is stable between pages.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::seed::{SeedGroup, SeedPolicy, SeedRole, SeedUser};
use crate::timefmt::rfc3339;

/// A policy as `/v2/policies` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    pub policy_document: Value,
    pub version: String,
    pub is_system_policy: bool,
    pub date_created: String,
}

/// A user as `/v2/users` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub api_enabled: bool,
    pub service_user: bool,
    pub date_created: String,
}

/// A group as `/v2/groups` serves it (members are added when serving).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub date_created: String,
}

/// A role as `/v2/roles` serves it (the field list is the contract's least certain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub description: String,
    pub role_type: String,
    pub date_created: String,
}

/// One policy attachment, to a user, a group or a role, in [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentView {
    pub policy_id: String,
    /// User, group or role id, depending on the list it is in.
    pub target_id: String,
    pub date_assigned: String,
    pub assigned_by: String,
    /// False while the listing lag hides it from `/v2` listings.
    pub visible: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub group_id: String,
    pub user_id: String,
}

/// Everything the simulator holds, as `GET /_sim/state` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub policies: Vec<Policy>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub user_attachments: Vec<AttachmentView>,
    pub group_attachments: Vec<AttachmentView>,
    pub group_members: Vec<MemberView>,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub role_attachments: Vec<AttachmentView>,
}

/// Insertion-ordered table keyed by id.
#[derive(Debug, Clone)]
pub(crate) struct Table<T> {
    order: Vec<String>,
    by_id: HashMap<String, T>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            order: Vec::new(),
            by_id: HashMap::new(),
        }
    }
}

impl<T: Clone> Table<T> {
    /// Adds `value` under `id` and returns it; Err carries an id that exists already.
    fn insert(&mut self, id: String, value: T) -> Result<T, String> {
        if self.by_id.contains_key(&id) {
            return Err(id);
        }
        self.order.push(id.clone());
        self.by_id.insert(id, value.clone());
        Ok(value)
    }
}

impl<T> Table<T> {
    fn remove(&mut self, id: &str) -> bool {
        if self.by_id.remove(id).is_some() {
            self.order.retain(|x| x != id);
            true
        } else {
            false
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<&T> {
        self.by_id.get(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Items in insertion order from `offset`, at most `limit`.
    pub(crate) fn slice(&self, offset: usize, limit: usize) -> impl Iterator<Item = &T> {
        self.order
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|id| self.by_id.get(id))
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.slice(0, usize::MAX)
    }

    /// How a seed's reference `r` resolves: the id `r` if there is one, and the ids
    /// whose natural key (`key`: a name or an email) is `r`.
    pub(crate) fn matching(
        &self,
        r: &str,
        key: impl Fn(&T) -> bool,
    ) -> (Option<String>, Vec<String>) {
        let by_id = self.by_id.contains_key(r).then(|| r.to_owned());
        let by_key = self.order.iter().filter(|id| key(&self.by_id[*id]));
        (by_id, by_key.cloned().collect())
    }
}

/// An attachment of a policy to a user or group.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) target: String,
    pub(crate) date_assigned: String,
    pub(crate) assigned_by: String,
    /// Listings show the link only from this instant on (the listing lag).
    pub(crate) visible_at: Instant,
    /// Set once the link is detached through `/v2`: listings go on showing it until
    /// then (the listing lags behind a detach too). A detached link is no attachment.
    pub(crate) listed_until: Option<Instant>,
}

impl Link {
    fn attached(&self) -> bool {
        self.listed_until.is_none()
    }

    fn listed_at(&self, now: Instant) -> bool {
        self.visible_at <= now && self.listed_until.is_none_or(|until| now < until)
    }
}

/// Attachments per owner, in attach order. The owner is the policy for user and group
/// links (listed per policy), and the role for role links (listed per role, `target`
/// is then the policy).
#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    by_policy: HashMap<String, Vec<Link>>,
}

impl Links {
    fn contains(&self, policy: &str, target: &str) -> bool {
        self.by_policy
            .get(policy)
            .is_some_and(|v| v.iter().any(|l| l.attached() && l.target == target))
    }

    fn insert(&mut self, policy: &str, link: Link) {
        self.by_policy
            .entry(policy.to_owned())
            .or_default()
            .push(link);
    }

    /// Detaches; `listed_until`: listings go on showing a link they already showed
    /// until then (`None`: gone from listings at once, like out-of-band changes).
    fn remove(&mut self, policy: &str, target: &str, listed_until: Option<Instant>) -> bool {
        let Some(v) = self.by_policy.get_mut(policy) else {
            return false;
        };
        let now = Instant::now();
        // Links detached earlier whose lag is over are forgotten.
        v.retain(|l| l.listed_until.is_none_or(|until| now < until));
        let Some(i) = v.iter().position(|l| l.attached() && l.target == target) else {
            return false;
        };
        match listed_until {
            Some(until) if v[i].visible_at <= now && now < until => {
                v[i].listed_until = Some(until);
            }
            _ => {
                v.remove(i);
            }
        }
        true
    }

    fn remove_policy(&mut self, policy: &str) {
        self.by_policy.remove(policy);
    }

    fn remove_target(&mut self, target: &str) {
        for v in self.by_policy.values_mut() {
            v.retain(|l| l.target != target);
        }
    }

    /// Links of `policy` that listings may show at `now`, each target once.
    pub(crate) fn visible(&self, policy: &str, now: Instant) -> Vec<&Link> {
        let mut shown: Vec<&Link> = Vec::new();
        for link in self.by_policy.get(policy).into_iter().flatten() {
            if link.listed_at(now) && !shown.iter().any(|l| l.target == link.target) {
                shown.push(link);
            }
        }
        shown
    }

    fn views(&self, order: &[String], now: Instant) -> Vec<AttachmentView> {
        order
            .iter()
            .flat_map(|p| {
                self.by_policy
                    .get(p)
                    .into_iter()
                    .flatten()
                    .filter(|l| l.attached())
                    .map(|l| AttachmentView {
                        policy_id: p.clone(),
                        target_id: l.target.clone(),
                        date_assigned: l.date_assigned.clone(),
                        assigned_by: l.assigned_by.clone(),
                        visible: l.visible_at <= now,
                    })
            })
            .collect()
    }
}

/// What a policy is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject {
    User,
    Group,
    Role,
}

impl Subject {
    pub(crate) const ALL: [Subject; 3] = [Self::User, Self::Group, Self::Role];

    /// The route of the listing of this kind's attachments under `prefix` (`/v2`):
    /// a policy's users or groups, a role's policies.
    pub(crate) fn listing_route(self, prefix: &str) -> String {
        match self {
            Self::User => format!("{prefix}/policies/{{policy_id}}/users"),
            Self::Group => format!("{prefix}/policies/{{policy_id}}/groups"),
            Self::Role => format!("{prefix}/roles/{{role_id}}/policies"),
        }
    }

    /// The route of one attachment under `prefix` (`/v2` or `/_sim`): the listing's
    /// route and the other id (role first for roles, as Vultr's routes).
    pub(crate) fn attachment_route(self, prefix: &str) -> String {
        let other = match self {
            Self::User => "{user_id}",
            Self::Group => "{group_id}",
            Self::Role => "{policy_id}",
        };
        format!("{}/{other}", self.listing_route(prefix))
    }

    /// "user", "group" or "role".
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
            Self::Role => "role",
        }
    }

    /// (policy, subject) from the two ids of a route: role routes name the role first.
    pub(crate) fn pair_of_route(self, (first, second): (String, String)) -> (String, String) {
        match self {
            Self::Role => (second, first),
            Self::User | Self::Group => (first, second),
        }
    }

    /// (owner, target) of the link: role links are owned by the role (Vultr lists a
    /// role's policies), the others by the policy.
    fn link<'a>(self, policy: &'a str, subject: &'a str) -> (&'a str, &'a str) {
        match self {
            Self::Role => (subject, policy),
            Self::User | Self::Group => (policy, subject),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachOutcome {
    Created,
    AlreadyAttached,
    UnknownPolicy,
    UnknownTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DetachOutcome {
    Removed,
    NotAttached,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Store {
    pub(crate) policies: Table<Policy>,
    pub(crate) users: Table<User>,
    pub(crate) groups: Table<Group>,

    pub(crate) roles: Table<Role>,
    /// Attachments per [`Subject`] kind, in the order of its variants. User and group
    /// links are owned by the policy, role links by the role (Vultr lists a role's
    /// policies, not a policy's roles).
    links: [Links; 3],
    /// (group id, user id) pairs.
    members: Vec<(String, String)>,
}

fn new_id(given: &Option<String>) -> String {
    given
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// A plausible document: the part of the name before the first '-' as the service.
fn document_for(name: &str) -> Value {
    let service = name.split('-').next().unwrap_or(name);
    json!({
        "Version": "2024-01-01",
        "Statement": [{
            "Effect": "Allow",
            "Action": [format!("{service}:*")],
            "Resource": ["*"],
        }],
    })
}

impl Store {
    /// Err carries the id that already exists.
    pub(crate) fn add_policy(&mut self, p: &SeedPolicy, now: SystemTime) -> Result<Policy, String> {
        let policy = Policy {
            id: new_id(&p.id),
            name: p.name.clone(),
            description: p.description.clone(),
            policy_document: document_for(&p.name),
            version: "1".to_owned(),
            is_system_policy: false,
            date_created: rfc3339(now),
        };
        self.policies.insert(policy.id.clone(), policy)
    }

    pub(crate) fn add_user(&mut self, u: &SeedUser, now: SystemTime) -> Result<User, String> {
        let name = if u.name.is_empty() {
            u.email.split('@').next().unwrap_or_default().to_owned()
        } else {
            u.name.clone()
        };
        let (first, last) = match name.split_once(' ') {
            Some((f, l)) => (f.to_owned(), l.to_owned()),
            None => (name.clone(), String::new()),
        };
        let user = User {
            id: new_id(&u.id),
            name,
            email: u.email.clone(),
            first_name: first,
            last_name: last,
            api_enabled: true,
            service_user: false,
            date_created: rfc3339(now),
        };
        self.users.insert(user.id.clone(), user)
    }

    pub(crate) fn add_group(&mut self, g: &SeedGroup, now: SystemTime) -> Result<Group, String> {
        let group = Group {
            id: new_id(&g.id),
            display_name: g.display_name.clone(),
            description: String::new(),
            date_created: rfc3339(now),
        };
        self.groups.insert(group.id.clone(), group)
    }

    pub(crate) fn add_role(&mut self, r: &SeedRole, now: SystemTime) -> Result<Role, String> {
        let role = Role {
            id: new_id(&r.id),
            name: r.name.clone(),
            description: r.description.clone(),
            role_type: "custom".to_owned(),
            date_created: rfc3339(now),
        };
        self.roles.insert(role.id.clone(), role)
    }

    /// Removing an entity removes its attachments and memberships too.
    pub(crate) fn remove_policy(&mut self, id: &str) -> bool {
        self.links_mut(Subject::User).remove_policy(id);
        self.links_mut(Subject::Group).remove_policy(id);
        self.links_mut(Subject::Role).remove_target(id);
        self.policies.remove(id)
    }

    pub(crate) fn remove_role(&mut self, id: &str) -> bool {
        // Role links are keyed by role.
        self.links_mut(Subject::Role).remove_policy(id);
        self.roles.remove(id)
    }

    pub(crate) fn remove_user(&mut self, id: &str) -> bool {
        self.links_mut(Subject::User).remove_target(id);
        self.members.retain(|(_, u)| u != id);
        self.users.remove(id)
    }

    pub(crate) fn remove_group(&mut self, id: &str) -> bool {
        self.links_mut(Subject::Group).remove_target(id);
        self.members.retain(|(g, _)| g != id);
        self.groups.remove(id)
    }

    /// `visible_at: None` makes the attachment visible at once.
    pub(crate) fn attach(
        &mut self,
        kind: Subject,
        (policy, subject): (&str, &str),
        now: SystemTime,
        visible_at: Option<Instant>,
        by: &str,
    ) -> AttachOutcome {
        if self.policies.get(policy).is_none() {
            return AttachOutcome::UnknownPolicy;
        }
        if !self.subject_exists(kind, subject) {
            return AttachOutcome::UnknownTarget;
        }
        let (owner, target) = kind.link(policy, subject);
        let links = self.links_mut(kind);
        if links.contains(owner, target) {
            return AttachOutcome::AlreadyAttached;
        }
        links.insert(
            owner,
            Link {
                target: target.to_owned(),
                date_assigned: rfc3339(now),
                assigned_by: by.to_owned(),
                visible_at: visible_at.unwrap_or_else(Instant::now),
                listed_until: None,
            },
        );
        AttachOutcome::Created
    }

    /// `listed_until`: see [`Links::remove`].
    pub(crate) fn detach(
        &mut self,
        kind: Subject,
        (policy, subject): (&str, &str),
        listed_until: Option<Instant>,
    ) -> DetachOutcome {
        let (owner, target) = kind.link(policy, subject);
        if self.links_mut(kind).remove(owner, target, listed_until) {
            DetachOutcome::Removed
        } else {
            DetachOutcome::NotAttached
        }
    }

    /// The true state, whether or not the listing lag still hides the attachment.
    pub(crate) fn is_attached(&self, kind: Subject, (policy, subject): (&str, &str)) -> bool {
        let (owner, target) = kind.link(policy, subject);
        self.links(kind).contains(owner, target)
    }

    fn subject_exists(&self, kind: Subject, id: &str) -> bool {
        match kind {
            Subject::User => self.users.get(id).is_some(),
            Subject::Group => self.groups.get(id).is_some(),
            Subject::Role => self.roles.get(id).is_some(),
        }
    }

    pub(crate) fn links(&self, kind: Subject) -> &Links {
        &self.links[kind as usize]
    }

    fn links_mut(&mut self, kind: Subject) -> &mut Links {
        &mut self.links[kind as usize]
    }

    /// Renames a group (out of band); false if it does not exist.
    pub(crate) fn rename_group(&mut self, id: &str, display_name: &str) -> bool {
        match self.groups.by_id.get_mut(id) {
            Some(group) => {
                group.display_name = display_name.to_owned();
                true
            }
            None => false,
        }
    }

    /// False if either id is unknown or the user is already a member.
    pub(crate) fn add_member(&mut self, group: &str, user: &str) -> bool {
        if self.groups.get(group).is_none()
            || self.users.get(user).is_none()
            || self.is_member(group, user)
        {
            return false;
        }
        self.members.push((group.to_owned(), user.to_owned()));
        true
    }

    pub(crate) fn is_member(&self, group: &str, user: &str) -> bool {
        self.members.iter().any(|(g, u)| g == group && u == user)
    }

    pub(crate) fn remove_member(&mut self, group: &str, user: &str) -> bool {
        let before = self.members.len();
        self.members.retain(|(g, u)| !(g == group && u == user));
        before != self.members.len()
    }

    /// Users in `group`, in the order they joined.
    pub(crate) fn members_of(&self, group: &str) -> Vec<&User> {
        self.members
            .iter()
            .filter(|(g, _)| g == group)
            .filter_map(|(_, u)| self.users.get(u))
            .collect()
    }

    /// (direct, inherited through groups) policies of a user as listings see them
    /// at `now`, each in policy order; `None` if the user is unknown.
    pub(crate) fn user_policies(
        &self,
        user: &str,
        now: Instant,
    ) -> Option<(Vec<&Policy>, Vec<&Policy>)> {
        self.users.get(user)?;
        let groups: Vec<&str> = self
            .members
            .iter()
            .filter(|(_, u)| u == user)
            .map(|(g, _)| g.as_str())
            .collect();
        let mut direct = Vec::new();
        let mut inherited = Vec::new();
        for p in self.policies.iter() {
            if self
                .links(Subject::User)
                .visible(&p.id, now)
                .iter()
                .any(|l| l.target == user)
            {
                direct.push(p);
            }
            if self
                .links(Subject::Group)
                .visible(&p.id, now)
                .iter()
                .any(|l| groups.contains(&l.target.as_str()))
            {
                inherited.push(p);
            }
        }
        Some((direct, inherited))
    }

    pub(crate) fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            policies: self.policies.iter().cloned().collect(),
            users: self.users.iter().cloned().collect(),
            groups: self.groups.iter().cloned().collect(),
            user_attachments: self.links(Subject::User).views(&self.policies.order, now),
            group_attachments: self.links(Subject::Group).views(&self.policies.order, now),
            group_members: self
                .members
                .iter()
                .map(|(g, u)| MemberView {
                    group_id: g.clone(),
                    user_id: u.clone(),
                })
                .collect(),
            roles: self.roles.iter().cloned().collect(),
            // Keyed by role: swap back so `policy_id` is the policy.
            role_attachments: self
                .links(Subject::Role)
                .views(&self.roles.order, now)
                .into_iter()
                .map(|v| AttachmentView {
                    policy_id: v.target_id,
                    target_id: v.policy_id,
                    ..v
                })
                .collect(),
        }
    }
}
