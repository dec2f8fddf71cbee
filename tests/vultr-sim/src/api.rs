//! The Vultr IAM endpoints under `/v2`, and `GET /v2/account`. Each acts on the
//! organisation of the request's key.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::config::ListingShape;
use crate::error::ApiError;
use crate::extract::{Ids, json, status_only};
use crate::org::{KeyOrg, Org};
use crate::pagination::{Links, Meta, PageRequest};
use crate::shared::{Access, Shared};
use crate::state::{
    AttachOutcome, DetachOutcome, Group, Link, Policy, Store, Subject, Table, User,
};
use crate::timefmt::rfc3339;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    let attachments = Subject::ALL
        .into_iter()
        .fold(Router::new(), |router, kind| {
            router
                .route(&kind.listing_route("/v2"), listing_of(kind))
                .route(&kind.attachment_route("/v2"), attachment(kind))
        });
    attachments
        .route("/v2/account", get(account))
        .route("/v2/policies", list_of(|s| &s.policies, "policies"))
        .route(
            "/v2/policies/{policy_id}",
            one_of(|s| &s.policies, "policy"),
        )
        .route("/v2/users", list_of(|s| &s.users, "users"))
        .route("/v2/users/{user_id}", one_of(|s| &s.users, "user"))
        .route("/v2/users/{user_id}/policies", get(user_policies))
        .route("/v2/groups", get(list_groups))
        .route("/v2/groups/{group_id}", get(get_group))
        .route("/v2/roles", list_of(|s| &s.roles, "roles"))
        .route("/v2/roles/{role_id}", one_of(|s| &s.roles, "role"))
}

/// `{"<key>": [items], "meta": {...}}` without building a `serde_json::Value` first.
struct Listing<'a, T> {
    key: &'static str,
    items: Vec<T>,
    meta: &'a Meta,
}

impl<T: Serialize> Serialize for Listing<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry(self.key, &self.items)?;
        map.serialize_entry("meta", self.meta)?;
        map.end()
    }
}

/// `{"<key>": item}`.
struct Single<T> {
    key: &'static str,
    item: T,
}

impl<T: Serialize> Serialize for Single<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.key, &self.item)?;
        map.end()
    }
}

fn listing<T: Serialize>(key: &'static str, items: Vec<T>, meta: &Meta) -> Response {
    json(StatusCode::OK, &Listing { key, items, meta })
}

fn single<T: Serialize>(key: &'static str, item: T) -> Response {
    json(StatusCode::OK, &Single { key, item })
}

/// A user as govultr's `OrganizationUser` (group members, policy users).
#[derive(Serialize)]
struct OrgUser<'a> {
    id: &'a str,
    name: &'a str,
    email: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    date_created: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    assigned_date: Option<&'a str>,
}

impl<'a> OrgUser<'a> {
    fn new(u: &'a User, assigned: Option<&'a str>) -> Self {
        Self {
            id: &u.id,
            name: &u.name,
            email: &u.email,
            first_name: &u.first_name,
            last_name: &u.last_name,
            date_created: &u.date_created,
            assigned_date: assigned,
        }
    }
}

/// A group with its members, as govultr's `OrganizationGroup`.
#[derive(Serialize)]
struct OrgGroup<'a> {
    #[serde(flatten)]
    group: &'a Group,
    member_count: usize,
    members: Vec<OrgUser<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assigned_date: Option<&'a str>,
}

impl<'a> OrgGroup<'a> {
    fn new(store: &'a Store, g: &'a Group, assigned: Option<&'a str>) -> Self {
        let members: Vec<OrgUser<'a>> = store
            .members_of(&g.id)
            .into_iter()
            .map(|u| OrgUser::new(u, None))
            .collect();
        Self {
            group: g,
            member_count: members.len(),
            members,
            assigned_date: assigned,
        }
    }
}

/// The OpenAPI document's attachment record.
#[derive(Serialize)]
struct UserRelationship<'a> {
    user_id: &'a str,
    policy_id: &'a str,
    policy_name: &'a str,
    date_assigned: &'a str,
    assigned_by: &'a str,
}

#[derive(Serialize)]
struct GroupRelationship<'a> {
    group_id: &'a str,
    group_name: &'a str,
    policy_id: &'a str,
    policy_name: &'a str,
    date_assigned: &'a str,
    assigned_by: &'a str,
}

/// The OpenAPI document's record of a policy attached to a role.
#[derive(Serialize)]
struct RoleRelationship<'a> {
    policy_id: &'a str,
    policy_name: &'a str,
    role_id: &'a str,
    role_name: &'a str,
    date_assigned: &'a str,
    assigned_by: &'a str,
}

/// A policy in a role's govultr-shaped listing.
#[derive(Serialize)]
struct RolePolicy<'a> {
    #[serde(flatten)]
    policy: &'a Policy,
    assigned_date: &'a str,
}

fn page(query: &Option<String>) -> Result<PageRequest, ApiError> {
    PageRequest::from_query(query.as_deref())
}

/// A paged `GET` of a collection served as stored, under `key`.
fn list_of<T: Serialize + Send + Sync + 'static>(
    table: fn(&Store) -> &Table<T>,
    key: &'static str,
) -> MethodRouter<Arc<Shared>> {
    get(
        move |KeyOrg(org, _): KeyOrg, RawQuery(q): RawQuery| async move {
            let page = page(&q)?;
            let store = org.store();
            let (range, meta) = page.window(table(&store).len());
            let items: Vec<&T> = table(&store).slice(range.start, range.len()).collect();
            Ok::<_, ApiError>(listing(key, items, &meta))
        },
    )
}

/// A `GET` of one object of a collection served as stored, under `key`; 404 for an
/// unknown id.
fn one_of<T: Serialize + Send + Sync + 'static>(
    table: fn(&Store) -> &Table<T>,
    key: &'static str,
) -> MethodRouter<Arc<Shared>> {
    get(
        move |KeyOrg(org, _): KeyOrg, Ids(id): Ids<String>| async move {
            let store = org.store();
            let item = table(&store).get(&id).ok_or_else(ApiError::not_found)?;
            Ok::<_, ApiError>(single(key, item))
        },
    )
}

async fn list_groups(KeyOrg(org, _): KeyOrg, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let page = page(&q)?;
    let store = org.store();
    let (range, meta) = page.window(store.groups.len());
    let items: Vec<OrgGroup> = store
        .groups
        .slice(range.start, range.len())
        .map(|g| OrgGroup::new(&store, g, None))
        .collect();
    Ok(listing("groups", items, &meta))
}

async fn get_group(KeyOrg(org, _): KeyOrg, Ids(id): Ids<String>) -> Result<Response, ApiError> {
    let store = org.store();
    let group = store.groups.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(single("group", OrgGroup::new(&store, group, None)))
}

/// The page of `owner`'s links that listings show now, each with its target, and the
/// page's meta.
fn linked<'s, T>(
    links: &'s crate::state::Links,
    targets: &'s Table<T>,
    owner: &str,
    page: PageRequest,
) -> (impl Iterator<Item = (&'s Link, &'s T)>, Meta) {
    let visible = links.visible(owner, Instant::now());
    let (range, meta) = page.window(visible.len());
    let shown = visible.into_iter().skip(range.start).take(range.len());
    (
        shown.filter_map(|l| Some((l, targets.get(&l.target)?))),
        meta,
    )
}

/// The listing in the configured shape: govultr's objects (`govultr`, under `keys[0]`)
/// or the OpenAPI document's relationship records (`relationship`, under `keys[1]`).
fn shaped<'s, T: 's, G: Serialize, R: Serialize>(
    shape: ListingShape,
    (pairs, meta): (impl Iterator<Item = (&'s Link, &'s T)>, Meta),
    keys: [&'static str; 2],
    govultr: impl Fn(&'s Link, &'s T) -> G,
    relationship: impl Fn(&'s Link, &'s T) -> R,
) -> Response {
    match shape {
        ListingShape::Govultr => {
            let items: Vec<G> = pairs.map(|(l, t)| govultr(l, t)).collect();
            listing(keys[0], items, &meta)
        }
        ListingShape::Relationships => {
            let items: Vec<R> = pairs.map(|(l, t)| relationship(l, t)).collect();
            listing(keys[1], items, &meta)
        }
    }
}

/// `GET` of an attachment listing: a policy's users or groups, or a role's policies.
fn listing_of(kind: Subject) -> MethodRouter<Arc<Shared>> {
    get(
        move |KeyOrg(org, _): KeyOrg, Ids(owner): Ids<String>, RawQuery(q): RawQuery| async move {
            attachments(&org, kind, &owner, &q)
        },
    )
}

fn attachments(
    org: &Org,
    kind: Subject,
    owner: &str,
    query: &Option<String>,
) -> Result<Response, ApiError> {
    let page = page(query)?;
    let shape = org.shared().behaviour().listing_shape;
    let store = org.store();
    let links = store.links(kind);
    let store = &*store;
    Ok(match kind {
        Subject::User => {
            let policy = store.policies.get(owner).ok_or_else(ApiError::not_found)?;
            shaped(
                shape,
                linked(links, &store.users, owner, page),
                ["users", "policy_user_relationships"],
                |l, u| OrgUser::new(u, Some(&l.date_assigned)),
                |l, u| UserRelationship {
                    user_id: &u.id,
                    policy_id: &policy.id,
                    policy_name: &policy.name,
                    date_assigned: &l.date_assigned,
                    assigned_by: &l.assigned_by,
                },
            )
        }
        Subject::Group => {
            let policy = store.policies.get(owner).ok_or_else(ApiError::not_found)?;
            shaped(
                shape,
                linked(links, &store.groups, owner, page),
                ["groups", "policy_group_relationships"],
                |l, g| OrgGroup::new(store, g, Some(&l.date_assigned)),
                |l, g| GroupRelationship {
                    group_id: &g.id,
                    group_name: &g.display_name,
                    policy_id: &policy.id,
                    policy_name: &policy.name,
                    date_assigned: &l.date_assigned,
                    assigned_by: &l.assigned_by,
                },
            )
        }
        Subject::Role => {
            let role = store.roles.get(owner).ok_or_else(ApiError::not_found)?;
            shaped(
                shape,
                linked(links, &store.policies, owner, page),
                ["policies", "role_policy_relationships"],
                |l, p| RolePolicy {
                    policy: p,
                    assigned_date: &l.date_assigned,
                },
                |l, p| RoleRelationship {
                    policy_id: &p.id,
                    policy_name: &p.name,
                    role_id: &role.id,
                    role_name: &role.name,
                    date_assigned: &l.date_assigned,
                    assigned_by: &l.assigned_by,
                },
            )
        }
    })
}

/// Who made `/v2` attachments, as far as the simulator knows.
const API_ASSIGNER: &str = "api";

/// Attach through `/v2`: 201, 404 for an unknown policy or target, and the
/// configured status for a pair that already exists.
fn attach_response(
    sh: &Shared,
    outcome: AttachOutcome,
    pair: (&str, &str),
    kind: &str,
) -> Response {
    let code = match outcome {
        AttachOutcome::Created => 201,
        AttachOutcome::AlreadyAttached => sh.behaviour().attach_existing,
        AttachOutcome::UnknownPolicy | AttachOutcome::UnknownTarget => {
            return ApiError::not_found().into_response();
        }
    };
    match StatusCode::from_u16(code) {
        // The body is undocumented; send a small one so clients prove they ignore it.
        Ok(status) if status.is_success() => {
            let mut body = serde_json::Map::new();
            body.insert("policy_id".to_owned(), pair.0.into());
            body.insert(format!("{kind}_id"), pair.1.into());
            json(status, &body)
        }
        _ => status_only(
            code,
            &format!("The policy is already attached to this {kind}."),
        ),
    }
}

fn detach_response(sh: &Shared, outcome: DetachOutcome) -> Response {
    match outcome {
        DetachOutcome::Removed => StatusCode::NO_CONTENT.into_response(),
        DetachOutcome::NotAttached => status_only(sh.behaviour().detach_absent, "Not found."),
    }
}

/// POST attaches and DELETE detaches the attachment the route's two ids name; the
/// listings show the change after the configured lags.
fn attachment(kind: Subject) -> MethodRouter<Arc<Shared>> {
    post(
        move |KeyOrg(org, _): KeyOrg, Ids(ids): Ids<(String, String)>| async move {
            let (policy, subject) = kind.pair_of_route(ids);
            let visible_at = Instant::now() + org.shared().behaviour().listing_lag;
            let pair = (policy.as_str(), subject.as_str());
            let now = SystemTime::now();
            let outcome = org
                .store()
                .attach(kind, pair, now, Some(visible_at), API_ASSIGNER);
            attach_response(org.shared(), outcome, pair, kind.name())
        },
    )
    .delete(
        move |KeyOrg(org, _): KeyOrg, Ids(ids): Ids<(String, String)>| async move {
            let (policy, subject) = kind.pair_of_route(ids);
            let listed_until = Instant::now() + org.shared().behaviour().detach_lag;
            let outcome = org
                .store()
                .detach(kind, (&policy, &subject), Some(listed_until));
            detach_response(org.shared(), outcome)
        },
    )
}

/// govultr's `OrganizationPoliciesForUser`: all, direct and inherited (via groups).
#[derive(Serialize)]
struct UserPolicies<'a> {
    all: Vec<&'a Policy>,
    direct: Vec<&'a Policy>,
    inherited: Vec<&'a Policy>,
}

#[derive(Serialize)]
struct UserPoliciesBody<'a> {
    policies: UserPolicies<'a>,
    meta: Meta,
}

/// Not paginated: the list is short and the contract says not to rely on it.
async fn user_policies(KeyOrg(org, _): KeyOrg, Ids(id): Ids<String>) -> Result<Response, ApiError> {
    let store = org.store();
    let (direct, inherited) = store
        .user_policies(&id, Instant::now())
        .ok_or_else(ApiError::not_found)?;
    let all: Vec<&Policy> = store
        .policies
        .slice(0, usize::MAX)
        .filter(|p| direct.iter().chain(&inherited).any(|q| q.id == p.id))
        .collect();
    let meta = Meta {
        total: all.len(),
        links: Links {
            next: String::new(),
            prev: String::new(),
        },
    };
    Ok(json(
        StatusCode::OK,
        &UserPoliciesBody {
            policies: UserPolicies {
                all,
                direct,
                inherited,
            },
            meta,
        },
    ))
}
/// What Vultr's user ACLs give a key with full access.
const FULL_ACLS: &[&str] = &[
    "manage_users",
    "subscriptions_view",
    "subscriptions",
    "billing",
    "support",
    "provisioning",
    "dns",
    "abuse",
    "upgrade",
    "firewall",
    "alerts",
    "objstore",
    "loadbalancer",
];

/// A read-only key's ACLs: viewing only, no `manage_users`.
const READ_ONLY_ACLS: &[&str] = &["subscriptions_view"];

/// govultr's `Account`.
#[derive(Serialize)]
struct Account<'a> {
    name: &'a str,
    email: &'a str,
    acls: &'a [&'a str],
    balance: f64,
    pending_charges: f64,
    last_payment_date: String,
    last_payment_amount: f64,
}

/// `GET /v2/account`: the organisation the key belongs to. Name and email are its
/// identity (Vultr exposes no account id); the money fields are constant.
async fn account(KeyOrg(org, caller): KeyOrg) -> Response {
    let acls = match caller.access {
        Access::Full => FULL_ACLS,
        Access::ReadOnly => READ_ONLY_ACLS,
    };
    single(
        "account",
        Account {
            name: org.name(),
            email: org.email(),
            acls,
            balance: 0.0,
            pending_charges: 0.0,
            last_payment_date: rfc3339(org.inner().created),
            last_payment_amount: 0.0,
        },
    )
}
