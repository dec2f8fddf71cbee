//! The control API under `/_sim`: unauthenticated, not rate limited, not journaled.
//! Routes on objects and keys act on the organisation `?org=NAME` names, the default one
//! without it; the journal spans every organisation unless `?org=` narrows it; a fault
//! names its organisation in its body; behaviour and the rate limit are global.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use serde::{Deserialize, Serialize};

use crate::config::{ApiKeys, Behaviour, RateLimit};
use crate::error::ApiError;
use crate::extract::{Ids, JsonBody, json};
use crate::faults::Fault;
use crate::org::{Org, OrgFilter, QueryOrg};
use crate::seed::{Seed, SeedGroup, SeedPolicy, SeedRole, SeedUser};
use crate::shared::Shared;
use crate::state::{AttachOutcome, DetachOutcome, Store, Subject};

type Sh = State<Arc<Shared>>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    let attachments = Subject::ALL
        .into_iter()
        .fold(Router::new(), |router, kind| {
            router.route(&kind.attachment_route("/_sim"), attachment(kind))
        });
    attachments
        .route("/_sim/orgs", get(list_orgs))
        .route("/_sim/state", get(state))
        .route("/_sim/seed", post(load_seed))
        .route("/_sim/policies", post(add_policy))
        .route("/_sim/policies/{policy_id}", removal(Store::remove_policy))
        .route("/_sim/users", post(add_user))
        .route("/_sim/users/{user_id}", removal(Store::remove_user))
        .route("/_sim/groups", post(add_group))
        .route(
            "/_sim/groups/{group_id}",
            removal(Store::remove_group).patch(rename_group),
        )
        .route(
            "/_sim/groups/{group_id}/users/{user_id}",
            put(add_member).delete(remove_member),
        )
        .route("/_sim/roles", post(add_role))
        .route("/_sim/roles/{role_id}", removal(Store::remove_role))
        .route("/_sim/journal", get(journal).delete(clear_journal))
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/faults/{fault_id}", delete(remove_fault))
        .route("/_sim/behaviour", get(get_behaviour).put(set_behaviour))
        .route("/_sim/rate-limit", get(get_rate_limit).put(set_rate_limit))
        .route("/_sim/api-keys", put(set_api_keys))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// 204 if something was found (and changed), 404 otherwise.
fn found(ok: bool) -> Response {
    if ok {
        no_content()
    } else {
        ApiError::not_found().into_response()
    }
}

fn created<T: Serialize>(result: Result<T, String>) -> Response {
    match result {
        Ok(item) => json(StatusCode::CREATED, &item),
        Err(id) => ApiError::conflict(format!("id {id} already exists")).into_response(),
    }
}

async fn state(QueryOrg(org): QueryOrg) -> Response {
    json(StatusCode::OK, &org.inner().snapshot())
}

async fn load_seed(QueryOrg(org): QueryOrg, JsonBody(seed): JsonBody<Seed>) -> Response {
    match org.inner().load_seed(&seed) {
        Ok(()) => no_content(),
        Err(e) => ApiError::bad_request(e.to_string()).into_response(),
    }
}

async fn add_policy(QueryOrg(org): QueryOrg, JsonBody(p): JsonBody<SeedPolicy>) -> Response {
    created(org.inner().store().add_policy(&p, SystemTime::now()))
}

async fn add_user(QueryOrg(org): QueryOrg, JsonBody(u): JsonBody<SeedUser>) -> Response {
    created(org.inner().store().add_user(&u, SystemTime::now()))
}

async fn add_group(QueryOrg(org): QueryOrg, JsonBody(g): JsonBody<SeedGroup>) -> Response {
    created(org.inner().store().add_group(&g, SystemTime::now()))
}

async fn add_role(QueryOrg(org): QueryOrg, JsonBody(r): JsonBody<SeedRole>) -> Response {
    created(org.inner().store().add_role(&r, SystemTime::now()))
}

/// DELETE of a policy, user, group or role (with its attachments and memberships).
fn removal(remove: fn(&mut Store, &str) -> bool) -> MethodRouter<Arc<Shared>> {
    delete(
        move |QueryOrg(org): QueryOrg, Ids(id): Ids<String>| async move {
            found(remove(&mut org.inner().store(), &id))
        },
    )
}

/// PUT attaches (idempotent: 204 whether new or present) and DELETE detaches the
/// attachment the route's two ids name.
fn attachment(kind: Subject) -> MethodRouter<Arc<Shared>> {
    put(
        move |QueryOrg(org): QueryOrg, Ids(ids): Ids<(String, String)>| async move {
            let (policy, subject) = kind.pair_of_route(ids);
            let outcome = org.inner().attach(kind, (&policy, &subject));
            found(matches!(
                outcome,
                AttachOutcome::Created | AttachOutcome::AlreadyAttached
            ))
        },
    )
    .delete(
        move |QueryOrg(org): QueryOrg, Ids(ids): Ids<(String, String)>| async move {
            let (policy, subject) = kind.pair_of_route(ids);
            found(org.inner().detach(kind, (&policy, &subject)) == DetachOutcome::Removed)
        },
    )
}

/// `{"display_name": "..."}`: the group's new name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    display_name: String,
}

async fn rename_group(
    QueryOrg(org): QueryOrg,
    Ids(id): Ids<String>,
    JsonBody(rename): JsonBody<Rename>,
) -> Response {
    found(org.inner().store().rename_group(&id, &rename.display_name))
}

async fn add_member(QueryOrg(org): QueryOrg, Ids((g, u)): Ids<(String, String)>) -> Response {
    // Idempotent like the attachments: 204 if the pair is members afterwards.
    let mut store = org.inner().store();
    found(store.add_member(&g, &u) || store.is_member(&g, &u))
}

async fn remove_member(QueryOrg(org): QueryOrg, Ids((g, u)): Ids<(String, String)>) -> Response {
    found(org.inner().store().remove_member(&g, &u))
}

/// Every organisation's requests, or one's with `?org=NAME`.
async fn journal(State(sh): Sh, OrgFilter(org): OrgFilter) -> Response {
    json(StatusCode::OK, &sh.journal(org.as_ref().map(Org::name)))
}

async fn clear_journal(State(sh): Sh, OrgFilter(org): OrgFilter) -> Response {
    sh.clear_journal(org.as_ref().map(Org::name));
    no_content()
}

#[derive(Serialize)]
struct FaultWithId {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    org: Option<String>,
    #[serde(flatten)]
    fault: Fault,
}

/// A fault as `POST /_sim/faults` takes it: a [`Fault`], and `org` to break only the
/// requests made with that organisation's keys.
#[derive(Deserialize)]
struct ScopedFault {
    #[serde(default)]
    org: Option<String>,
    #[serde(flatten)]
    fault: Fault,
}

async fn list_faults(State(sh): Sh) -> Response {
    let faults: Vec<FaultWithId> = sh
        .faults()
        .into_iter()
        .map(|(id, org, fault)| FaultWithId { id, org, fault })
        .collect();
    json(StatusCode::OK, &faults)
}

/// 400 if its `org` names no organisation.
async fn add_fault(State(sh): Sh, JsonBody(f): JsonBody<ScopedFault>) -> Response {
    match sh.add_fault(f.fault, f.org) {
        Ok(id) => json(StatusCode::CREATED, &serde_json::json!({ "id": id })),
        Err(e) => ApiError::bad_request(e).into_response(),
    }
}

async fn remove_fault(State(sh): Sh, Ids(id): Ids<u64>) -> Response {
    found(sh.remove_fault(id))
}

async fn clear_faults(State(sh): Sh) -> Response {
    sh.clear_faults();
    no_content()
}

async fn get_behaviour(State(sh): Sh) -> Response {
    json(StatusCode::OK, &sh.behaviour())
}

/// Fields left out keep their defaults (not their current values).
async fn set_behaviour(State(sh): Sh, JsonBody(b): JsonBody<Behaviour>) -> Response {
    if let Err(e) = b.validate() {
        return ApiError::bad_request(e).into_response();
    }
    sh.set_behaviour(b);
    json(StatusCode::OK, &b)
}

async fn get_rate_limit(State(sh): Sh) -> Response {
    json(StatusCode::OK, &sh.rate_limit())
}

/// A `RateLimit` object, or `null` to turn limiting off.
async fn set_rate_limit(State(sh): Sh, JsonBody(r): JsonBody<Option<RateLimit>>) -> Response {
    sh.set_rate_limit(r);
    json(StatusCode::OK, &sh.rate_limit())
}

/// Replaces the organisation's keys (a key rotation); lists left out are emptied; 400
/// for a key of another organisation. Write-only, so the keys are never echoed.
async fn set_api_keys(QueryOrg(org): QueryOrg, JsonBody(keys): JsonBody<ApiKeys>) -> Response {
    match org.set_api_keys(keys) {
        Ok(()) => no_content(),
        Err(e) => ApiError::bad_request(e).into_response(),
    }
}

/// An organisation as `GET /_sim/orgs` lists it (its keys are never shown).
#[derive(Serialize)]
struct OrgView<'a> {
    name: &'a str,
    email: &'a str,
}

/// Every organisation, the default one first.
async fn list_orgs(State(sh): Sh) -> Response {
    let orgs: Vec<OrgView> = sh
        .orgs
        .iter()
        .map(|o| OrgView {
            name: &o.name,
            email: &o.email,
        })
        .collect();
    json(StatusCode::OK, &orgs)
}
