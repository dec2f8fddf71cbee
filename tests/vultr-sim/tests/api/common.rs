//! Helpers of the API tests: the demo organization's ids, the simulator, a client.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use vultr_sim::{Behaviour, Sim, SimConfig};

pub const KEY: &str = "test-key";
pub const READ_ONLY_KEY: &str = "read-only-key";

pub const DNS_ADMIN: &str = "62948e0d-b09d-4d08-9554-3985b635cb17";
pub const BILLING_READ: &str = "0b6b6c1e-5f0a-4c55-9d3e-6f2f1c3e9a01";
pub const COMPUTE_ADMIN: &str = "3c1d7a52-8e4b-4f6a-b2d9-7a0e5c4b1f02";
pub const ALICE: &str = "8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b";
pub const BOB: &str = "5d2c9b71-3a4e-4b8f-9c6d-1e0f2a3b4c03";
pub const CAROL: &str = "9e8f7a6b-5c4d-4e3f-8a2b-1c0d9e8f7a04";
pub const OPS: &str = "7f3e2d1c-0b9a-4876-a543-210fedcba907";
pub const DEVELOPERS: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c08";

/// Demo organization, no rate limit, plus a read-only key.
pub fn demo_config() -> SimConfig {
    SimConfig::demo().keys(&[KEY], &[READ_ONLY_KEY])
}

pub async fn demo_sim() -> Sim {
    Sim::start(demo_config()).await.expect("sim starts")
}

/// [`demo_sim`] with these behaviours.
pub async fn demo_sim_with(behaviour: Behaviour) -> Sim {
    let sim = demo_sim().await;
    sim.set_behaviour(behaviour);
    sim
}

pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(10))
}

/// A client builder. The workspace builds reqwest without a TLS crypto provider (the
/// operator installs ring): install it first, or building a client panics.
pub fn http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    http().timeout(timeout).build().expect("client builds")
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// Parsed body; `Null` if empty or not JSON.
    pub body: Value,
}

impl Resp {
    /// Asserts the contract's error shape with `status`.
    pub fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        assert!(
            self.body["error"].as_str().is_some_and(|s| !s.is_empty()),
            "error text missing: {self:?}"
        );
        assert_eq!(self.body["status"], status, "status in body: {self:?}");
        assert_eq!(
            self.headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "content type: {self:?}"
        );
    }
}

pub async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Result<Resp, reqwest::Error> {
    let mut req = client.request(method, url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Resp {
        status,
        headers,
        text,
        body,
    })
}

/// A `/v2` call with the full-access key.
pub async fn v2(sim: &Sim, method: Method, path: &str) -> Resp {
    as_key(sim, KEY, method, path).await
}

/// The route of `policy`'s grant to `user`.
pub fn user_grant(policy: &str, user: &str) -> String {
    format!("/v2/policies/{policy}/users/{user}")
}

/// `method` on `path` of the simulator, with `key` (if any) and a JSON `body` (if any).
async fn call(
    sim: &Sim,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Resp {
    send(
        &client(),
        method,
        &format!("{}{path}", sim.url()),
        key,
        body,
    )
    .await
    .expect("request succeeds")
}

/// A call without a key.
pub async fn anonymous(sim: &Sim, method: Method, path: &str) -> Resp {
    call(sim, method, path, None, None).await
}

/// A `/v2` call with `key`.
pub async fn as_key(sim: &Sim, key: &str, method: Method, path: &str) -> Resp {
    call(sim, method, path, Some(key), None).await
}

pub async fn get(sim: &Sim, path: &str) -> Resp {
    v2(sim, Method::GET, path).await
}

/// An unauthenticated `/_sim` call.
pub async fn admin(sim: &Sim, method: Method, path: &str, body: Option<Value>) -> Resp {
    call(sim, method, path, None, body).await
}

/// An unauthenticated `/_sim` call with a JSON body.
pub async fn admin_with(sim: &Sim, method: Method, path: &str, body: Value) -> Resp {
    admin(sim, method, path, Some(body)).await
}

/// The status of an unauthenticated `/_sim` call without a body.
pub async fn admin_status(sim: &Sim, method: Method, path: &str) -> u16 {
    admin(sim, method, path, None).await.status
}

/// PUTs `path` twice: 204 both times (out-of-band attaches are idempotent).
pub async fn put_twice(sim: &Sim, path: &str) {
    assert_eq!(admin_status(sim, Method::PUT, path).await, 204);
    let again = admin_status(sim, Method::PUT, path).await;
    assert_eq!(again, 204, "idempotent");
}

/// POSTs `body` to a `/_sim` collection, expects 201 and returns the new object's id.
pub async fn admin_created(sim: &Sim, path: &str, body: Value) -> String {
    let r = admin_with(sim, Method::POST, path, body).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body["id"].as_str().expect("an id").to_owned()
}

/// The body of a `/v2` listing, which must answer 200 with `total` items.
pub async fn listing(sim: &Sim, path: &str, total: usize) -> Value {
    let r = get(sim, path).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["meta"]["total"], total, "{}", r.body);
    r.body
}

/// The ids in a govultr-shaped listing under `key`.
pub fn ids(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} array in {body}"))
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect()
}

pub const AUDITORS: &str = "4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09";
pub const ON_CALL: &str = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e510";
pub const ON_CALL_EU: &str = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e511";
