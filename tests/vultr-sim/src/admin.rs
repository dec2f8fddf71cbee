//! The control API under `/_sim`: unauthenticated, not rate limited, not journaled.

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

async fn state(State(sh): Sh) -> Response {
    json(StatusCode::OK, &sh.snapshot())
}

async fn load_seed(State(sh): Sh, JsonBody(seed): JsonBody<Seed>) -> Response {
    match sh.load_seed(&seed) {
        Ok(()) => no_content(),
        Err(e) => ApiError::bad_request(e.to_string()).into_response(),
    }
}

async fn add_policy(State(sh): Sh, JsonBody(p): JsonBody<SeedPolicy>) -> Response {
    created(sh.store().add_policy(&p, SystemTime::now()))
}

async fn add_user(State(sh): Sh, JsonBody(u): JsonBody<SeedUser>) -> Response {
    created(sh.store().add_user(&u, SystemTime::now()))
}

async fn add_group(State(sh): Sh, JsonBody(g): JsonBody<SeedGroup>) -> Response {
    created(sh.store().add_group(&g, SystemTime::now()))
}

async fn add_role(State(sh): Sh, JsonBody(r): JsonBody<SeedRole>) -> Response {
    created(sh.store().add_role(&r, SystemTime::now()))
}

/// DELETE of a policy, user, group or role (with its attachments and memberships).
fn removal(remove: fn(&mut Store, &str) -> bool) -> MethodRouter<Arc<Shared>> {
    delete(
        move |State(sh): Sh, Ids(id): Ids<String>| async move { found(remove(&mut sh.store(), &id)) },
    )
}

/// PUT attaches (idempotent: 204 whether new or present) and DELETE detaches the
/// attachment the route's two ids name.
fn attachment(kind: Subject) -> MethodRouter<Arc<Shared>> {
    put(
        move |State(sh): Sh, Ids(ids): Ids<(String, String)>| async move {
            let (policy, subject) = kind.pair_of_route(ids);
            let outcome = sh.attach(kind, (&policy, &subject));
            found(matches!(
                outcome,
                AttachOutcome::Created | AttachOutcome::AlreadyAttached
            ))
        },
    )
    .delete(
        move |State(sh): Sh, Ids(ids): Ids<(String, String)>| async move {
            let (policy, subject) = kind.pair_of_route(ids);
            found(sh.detach(kind, (&policy, &subject)) == DetachOutcome::Removed)
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
    State(sh): Sh,
    Ids(id): Ids<String>,
    JsonBody(rename): JsonBody<Rename>,
) -> Response {
    found(sh.store().rename_group(&id, &rename.display_name))
}

async fn add_member(State(sh): Sh, Ids((g, u)): Ids<(String, String)>) -> Response {
    // Idempotent like the attachments: 204 if the pair is members afterwards.
    let mut store = sh.store();
    found(store.add_member(&g, &u) || store.is_member(&g, &u))
}

async fn remove_member(State(sh): Sh, Ids((g, u)): Ids<(String, String)>) -> Response {
    found(sh.store().remove_member(&g, &u))
}

async fn journal(State(sh): Sh) -> Response {
    json(StatusCode::OK, &sh.journal())
}

async fn clear_journal(State(sh): Sh) -> Response {
    sh.clear_journal();
    no_content()
}

#[derive(Serialize)]
struct FaultWithId {
    id: u64,
    #[serde(flatten)]
    fault: Fault,
}

async fn list_faults(State(sh): Sh) -> Response {
    let faults: Vec<FaultWithId> = sh
        .faults()
        .into_iter()
        .map(|(id, fault)| FaultWithId { id, fault })
        .collect();
    json(StatusCode::OK, &faults)
}

async fn add_fault(State(sh): Sh, JsonBody(fault): JsonBody<Fault>) -> Response {
    let id = sh.add_fault(fault);
    json(StatusCode::CREATED, &serde_json::json!({ "id": id }))
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

/// Replaces the accepted keys (a key rotation); lists left out are emptied. Write-only,
/// so the keys are never echoed.
async fn set_api_keys(State(sh): Sh, JsonBody(keys): JsonBody<ApiKeys>) -> Response {
    if let Err(e) = keys.validate() {
        return ApiError::bad_request(e).into_response();
    }
    sh.set_api_keys(&keys);
    no_content()
}
