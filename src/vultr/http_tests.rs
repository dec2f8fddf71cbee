//! The client against a real HTTP server on loopback (see `fake.rs`).

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::fake::{FakeVultr, Recorded, Reply, TEST_KEY, paged};
use super::resolve::Resolved;
use super::*;
use crate::domain::{GroupRef, ListingSource, PolicyRef, RoleRef, Subject, SubjectRef, UserRef};

/// The grant of `policy` to `subject`.
fn pair(policy: &str, subject: Subject) -> crate::domain::Grant {
    crate::domain::Grant {
        policy_id: policy.to_owned(),
        subject,
    }
}

const POLICY: &str = "62948e0d-b09d-4d08-9554-3985b635cb17";
const USER: &str = "8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b";

fn ids(list: &[&str]) -> HashSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn list_policies_follows_cursors_across_three_pages() {
    let policies: Vec<Value> = (0..5)
        .map(
            |i| json!({"id": format!("p{i}"), "name": format!("policy-{i}"), "future_field": true}),
        )
        .collect();
    let fake = FakeVultr::start(move |r| {
        assert_eq!(r.path, "/v2/policies");
        paged("policies", &policies, 2, r)
    })
    .await;
    let got = fake.client().list::<Policy>().await.unwrap();
    let names: Vec<_> = got.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["policy-0", "policy-1", "policy-2", "policy-3", "policy-4"]
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let cursors: Vec<_> = requests.iter().map(|r| r.query("cursor")).collect();
    assert_eq!(cursors, [None, Some("c1"), Some("c2")]);
    for r in &requests {
        assert_eq!(r.query("per_page"), Some("500"));
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TEST_KEY}").as_str())
        );
        assert_eq!(r.accept.as_deref(), Some("application/json"));
    }
}

#[tokio::test]
async fn attachment_listing_in_govultr_shape_across_pages() {
    let users: Vec<Value> = ["u1", "u2", "u3"]
        .iter()
        .map(|id| json!({"id": id, "email": format!("{id}@x.io"), "first_name": "F"}))
        .collect();
    let fake = FakeVultr::start(move |r| {
        assert_eq!(r.path, format!("/v2/policies/{POLICY}/users"));
        paged("users", &users, 1, r)
    })
    .await;
    let got = fake
        .client()
        .listed_ids(&ListingSource::PolicyUsers(POLICY.into()))
        .await
        .unwrap();
    assert_eq!(got, ids(&["u1", "u2", "u3"]));
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn attachment_listing_in_openapi_shape() {
    let fake = FakeVultr::start(|r| match r.path.as_str() {
        p if p.ends_with("/users") => Reply::json(
            200,
            json!({"policy_user_relationships": [
                {"user_id": "u1", "policy_id": POLICY, "policy_name": "x",
                 "date_assigned": "2025-01-01", "assigned_by": "admin"}
            ], "meta": {"total": 1, "links": {"next": "", "prev": ""}}}),
        ),
        _ => Reply::json(
            200,
            json!({"policy_group_relationships": [{"group_id": "g1"}, {"group_id": "g2"}]}),
        ),
    })
    .await;
    let client = fake.client();
    assert_eq!(
        client
            .listed_ids(&ListingSource::PolicyUsers(POLICY.into()))
            .await
            .unwrap(),
        ids(&["u1"])
    );
    assert_eq!(
        client
            .listed_ids(&ListingSource::PolicyGroups(POLICY.into()))
            .await
            .unwrap(),
        ids(&["g1", "g2"])
    );
    assert_eq!(fake.lines()[1], format!("GET /v2/policies/{POLICY}/groups"));
}

#[tokio::test]
async fn revoke_treats_a_confirmed_404_as_already_absent_and_204_as_revoked() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::DELETE if r.path.ends_with("/gone") => Reply::error(404, "Not found."),
        Method::DELETE => Reply::empty(204),
        _ => Reply::json(200, json!({"users": [{"id": USER}]})),
    })
    .await;
    let client = fake.client();
    assert_eq!(
        client
            .revoke(&pair(POLICY, Subject::User("gone".into())))
            .await
            .unwrap(),
        RevokeOutcome::AlreadyAbsent
    );
    assert_eq!(
        client
            .revoke(&pair(POLICY, Subject::Group("g1".into())))
            .await
            .unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        fake.lines(),
        [
            format!("DELETE /v2/policies/{POLICY}/users/gone"),
            format!("GET /v2/policies/{POLICY}/users"),
            format!("DELETE /v2/policies/{POLICY}/groups/g1"),
        ]
    );
    // The raw call keeps the typed 404.
    let err = client
        .detach(&pair(POLICY, Subject::User("gone".into())))
        .await
        .unwrap_err();
    assert!(matches!(err, VultrError::NotFound { .. }));
}

/// A 404 to the DELETE while the listing still shows the grant (a proxy or a misrouted
/// base URL answering 404) is not a revocation: the finalizer must hold.
#[tokio::test]
async fn revoke_does_not_trust_a_404_the_listing_contradicts() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::DELETE => Reply::error(404, "Not found."),
        _ => Reply::json(200, json!({"users": [{"id": USER}]})),
    })
    .await;
    let err = fake
        .client()
        .revoke(&pair(POLICY, Subject::User(USER.into())))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("still lists"), "{err}");
}

/// When the policy itself is gone (its listing is 404 too), the policy listing decides.
#[tokio::test]
async fn revoke_of_a_vanished_policy_is_confirmed_by_the_policy_listing() {
    let listed = Arc::new(Mutex::new(true));
    let state = listed.clone();
    let fake = FakeVultr::start(
        move |r: &Recorded| match (r.method.clone(), r.path.as_str()) {
            (Method::GET, "/v2/policies") if *state.lock().unwrap() => {
                Reply::json(200, json!({"policies": [{"id": POLICY, "name": "p"}]}))
            }
            (Method::GET, "/v2/policies") => Reply::json(200, json!({"policies": []})),
            _ => Reply::error(404, "Not found."),
        },
    )
    .await;
    let client = fake.client();
    let subject = Subject::User(USER.into());
    assert!(client.revoke(&pair(POLICY, subject.clone())).await.is_err());
    *listed.lock().unwrap() = false;
    assert_eq!(
        client.revoke(&pair(POLICY, subject.clone())).await.unwrap(),
        RevokeOutcome::AlreadyAbsent
    );
}

#[tokio::test]
async fn rate_limited_surfaces_retry_after() {
    let fake =
        FakeVultr::start(|_| Reply::error(429, "Too many requests").header("retry-after", "3"))
            .await;
    let err = fake
        .client()
        .revoke(&pair(POLICY, Subject::User(USER.into())))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "RateLimited");
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(fake.requests().len(), 1, "the client itself never retries");
}

#[tokio::test]
async fn server_error_is_transient_api_unavailable() {
    let fake = FakeVultr::start(|_| Reply::error(500, "Internal error")).await;
    let err = fake.client().list::<User>().await.unwrap_err();
    assert_eq!(err.reason(), "ApiUnavailable");
    assert!(err.is_transient());
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.retry_after(), None);
    assert_eq!(
        err.to_string(),
        "Vultr API unavailable on GET /v2/users: 500 Internal Server Error: Internal error"
    );
}

#[tokio::test]
async fn timeout_is_api_unavailable() {
    let fake = FakeVultr::start(|_| {
        Reply::json(200, json!({"policies": []})).delayed(Duration::from_secs(3))
    })
    .await;
    let mut config = fake.config();
    config.timeout = Duration::from_millis(200);
    let client = VultrClient::new(config).unwrap();
    let err = client.list::<Policy>().await.unwrap_err();
    assert_eq!(err.reason(), "ApiUnavailable", "{err}");
    assert!(err.is_transient());
    assert_eq!(err.status(), None);
    assert!(err.to_string().contains("within 200ms"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_api_unavailable() {
    // Bind then drop to get a port on which nothing listens.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = FakeVultr::start(|_| Reply::empty(500)).await.config();
    config.base_url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let err = VultrClient::new(config)
        .unwrap()
        .list::<Group>()
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ApiUnavailable");
    assert!(err.to_string().contains("could not connect"), "{err}");
}

#[tokio::test]
async fn unauthorized_and_forbidden() {
    let fake = FakeVultr::start(|r| {
        if r.path == "/v2/users" {
            Reply::error(401, "Invalid API token.")
        } else {
            Reply::error(403, "Insufficient permissions.")
        }
    })
    .await;
    let client = fake.client();
    let err = client.list::<User>().await.unwrap_err();
    assert_eq!(err.reason(), "Unauthorized");
    assert!(
        err.to_string()
            .starts_with("Vultr rejected the API key (401 Unauthorized)")
    );
    let err = client.list::<Group>().await.unwrap_err();
    assert_eq!(err.reason(), "Forbidden");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn undecodable_success_body_is_invalid_response() {
    let fake = FakeVultr::start(|r| match r.path.as_str() {
        "/v2/policies" => Reply::empty(200),
        "/v2/users" => Reply::json(200, json!({"unexpected": []})),
        _ => Reply::json(200, json!({"groups": [{"display_name": "no id"}]})),
    })
    .await;
    let client = fake.client();
    for err in [
        client.list::<Policy>().await.unwrap_err(),
        client.list::<User>().await.unwrap_err(),
        client.list::<Group>().await.unwrap_err(),
    ] {
        assert_eq!(err.reason(), "InvalidResponse", "{err}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn attach_confirmed_posts_once() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::GET => Reply::json(200, json!({"groups": []})),
        _ => Reply::json(201, json!({"whatever": "ignored"})),
    })
    .await;
    let outcome = fake
        .client()
        .attach_confirmed(&pair(POLICY, Subject::Group("g1".into())))
        .await
        .unwrap();
    assert!(matches!(outcome, AttachOutcome::Attached), "{outcome:?}");
    assert_eq!(
        fake.lines(),
        [format!("POST /v2/policies/{POLICY}/groups/g1")]
    );
}

/// A POST that fails with 409 while someone else attached the pair: the second listing
/// shows it, which is success.
#[tokio::test]
async fn attach_confirmed_conflict_then_listed_is_success() {
    let attached = Arc::new(Mutex::new(false));
    let state = attached.clone();
    let fake = FakeVultr::start(move |r: &Recorded| {
        let mut attached = state.lock().unwrap();
        match r.method {
            Method::POST => {
                *attached = true;
                Reply::error(409, "Policy is already attached to the user.")
            }
            _ if *attached => Reply::json(200, json!({"users": [{"id": USER}]})),
            _ => Reply::json(200, json!({"users": []})),
        }
    })
    .await;
    let outcome = fake
        .client()
        .attach_confirmed(&pair(POLICY, Subject::User(USER.into())))
        .await
        .unwrap();
    assert!(
        matches!(outcome, AttachOutcome::AlreadyAttached),
        "{outcome:?}"
    );
    assert_eq!(fake.requests().len(), 2);
}

/// A rejected POST whose pair the listing does not show (yet) is not a terminal error:
/// after a restart, our own earlier attach may still be on its way into the listing.
#[tokio::test]
async fn attach_confirmed_rejection_without_listing_is_unconfirmed() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::POST => Reply::error(422, "User is not in this account."),
        _ => Reply::json(200, json!({"users": []})),
    })
    .await;
    let outcome = fake
        .client()
        .attach_confirmed(&pair(POLICY, Subject::User(USER.into())))
        .await
        .unwrap();
    let AttachOutcome::Unconfirmed(err) = outcome else {
        panic!("expected Unconfirmed, got {outcome:?}");
    };
    assert_eq!(err.reason(), "Rejected");
    assert_eq!(err.status(), Some(422));
    assert!(
        err.to_string().contains("User is not in this account."),
        "{err}"
    );
}

#[tokio::test]
async fn attach_confirmed_does_not_relist_after_forbidden() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::POST => Reply::error(403, "Forbidden"),
        _ => Reply::json(200, json!({"users": []})),
    })
    .await;
    let err = fake
        .client()
        .attach_confirmed(&pair(POLICY, Subject::User(USER.into())))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Forbidden");
    assert_eq!(fake.requests().len(), 1);
}

fn directory(fake: &FakeVultr) -> Directory {
    fake.directory(Duration::from_secs(10))
}

#[tokio::test]
async fn ambiguous_email_lists_both_ids() {
    let users = vec![
        json!({"id": "u1", "email": "bob@example.com"}),
        json!({"id": "u2", "email": "alice@example.com"}),
        json!({"id": "u3", "email": "Bob@Example.com"}),
    ];
    let fake = FakeVultr::start(move |r| paged("users", &users, 2, r)).await;
    let err = directory(&fake)
        .subject(&SubjectRef::User(UserRef::ByEmail(
            "bob@example.com".into(),
        )))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        VultrError::Ambiguous {
            what: "users",
            reference: "email \"bob@example.com\"".into(),
            ids: vec!["u1".into(), "u3".into()],
        }
    );
    assert_eq!(fake.requests().len(), 2, "the whole listing was read");
}

#[tokio::test]
async fn policy_name_not_found_names_it() {
    let policies = vec![json!({"id": "p1", "name": "dns-admin"})];
    let fake = FakeVultr::start(move |r| paged("policies", &policies, 500, r)).await;
    let dir = directory(&fake);
    let err = dir
        .policy(&PolicyRef::ByName("billing-admin".into()))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "PolicyNotFound");
    assert!(err.to_string().contains("\"billing-admin\""), "{err}");
    assert_eq!(
        dir.policy(&PolicyRef::ByName("dns-admin".into()))
            .await
            .unwrap()
            .id,
        "p1"
    );
}

/// IDs are checked against the listings (no GET per object), names come with them.
#[tokio::test]
async fn resolution_by_id_checks_existence_in_the_directory() {
    let fake = FakeVultr::start(|r| match r.path.as_str() {
        "/v2/policies" => Reply::json(
            200,
            json!({"policies": [{"id": POLICY.to_uppercase(), "name": "dns-admin"}]}),
        ),
        "/v2/users" => Reply::json(200, json!({"users": [{"id": USER, "email": "a@x.io"}]})),
        "/v2/groups" => Reply::json(
            200,
            json!({"groups": [{"id": "g1", "display_name": "ops"}]}),
        ),
        _ => Reply::error(404, "Not found."),
    })
    .await;
    let dir = directory(&fake);
    // The listing's spelling of the ID is what gets recorded.
    assert_eq!(
        dir.policy(&PolicyRef::ById(POLICY.into())).await.unwrap(),
        Resolved {
            id: POLICY.to_uppercase(),
            name: "dns-admin".into()
        }
    );
    let err = dir
        .policy(&PolicyRef::ById("other".into()))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "PolicyNotFound");
    assert_eq!(
        dir.subject(&SubjectRef::User(UserRef::ById(USER.into())))
            .await
            .unwrap(),
        (Subject::User(USER.into()), "a@x.io".into())
    );
    let err = dir
        .subject(&SubjectRef::User(UserRef::ById("nobody".into())))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "UserNotFound");
    assert_eq!(
        dir.subject(&SubjectRef::Group(GroupRef::ByName("ops".into())))
            .await
            .unwrap(),
        (Subject::Group("g1".into()), "ops".into())
    );
    let err = dir
        .subject(&SubjectRef::Group(GroupRef::ById("g9".into())))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "GroupNotFound");
    // One walk per listing, misses included (the walks are younger than the floor).
    let mut lines = fake.lines();
    lines.sort();
    assert_eq!(
        lines,
        ["GET /v2/groups", "GET /v2/policies", "GET /v2/users"]
    );
}

/// 50 resolutions at once wait for one paged walk; a later miss refreshes once, and
/// only once the walk is older than the floor.
#[tokio::test]
async fn concurrent_resolutions_share_one_walk_and_misses_refresh_once() {
    let users: Vec<Value> = (0..120)
        .map(|i| json!({"id": format!("u{i}"), "email": format!("user{i}@example.com")}))
        .collect();
    let users = Arc::new(Mutex::new(users));
    let listed = users.clone();
    let fake = FakeVultr::start(move |r| {
        let users = listed.lock().unwrap().clone();
        let mut reply = paged("users", &users, 50, r);
        reply.delay = Duration::from_millis(20);
        reply
    })
    .await;
    let dir = fake.directory(Duration::from_millis(300));
    let lookups = (0..50).map(|i| {
        let dir = dir.clone();
        async move {
            dir.subject(&SubjectRef::User(UserRef::ByEmail(format!(
                "user{i}@example.com"
            ))))
            .await
        }
    });
    for found in futures::future::join_all(lookups).await {
        found.unwrap();
    }
    assert_eq!(fake.requests().len(), 3, "one walk of three pages");

    // A new user: the first miss within the floor stays a miss ...
    users
        .lock()
        .unwrap()
        .push(json!({"id": "new", "email": "new@example.com"}));
    let new = SubjectRef::User(UserRef::ByEmail("new@example.com".into()));
    assert_eq!(
        dir.subject(&new).await.unwrap_err().reason(),
        "UserNotFound"
    );
    assert_eq!(fake.requests().len(), 3);
    // ... and past it, one refresh finds it; later hits cost nothing.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        dir.subject(&new).await.unwrap().0,
        Subject::User("new".into())
    );
    assert_eq!(
        dir.subject(&new).await.unwrap().0,
        Subject::User("new".into())
    );
    assert_eq!(fake.requests().len(), 6);
}

#[tokio::test]
async fn unusable_ids_send_nothing() {
    let fake = FakeVultr::start(|_| Reply::empty(204)).await;
    let client = fake.client();
    let err = client
        .revoke(&pair(POLICY, Subject::User("..".into())))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "UserNotFound");
    assert!(fake.requests().is_empty());
}

#[derive(Default)]
struct Collect(Mutex<Vec<RequestRecord>>);

impl RequestObserver for Collect {
    fn on_request(&self, record: &RequestRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}

#[tokio::test]
async fn observer_sees_route_status_and_limiter_wait() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::DELETE => Reply::error(404, "Not found."),
        _ => Reply::json(200, json!({"users": []})),
    })
    .await;
    let observer = Arc::new(Collect::default());
    let mut config = fake.config();
    config.observer = Some(observer.clone());
    // Burst 1 at 2/s: the second request waits about 500 ms for the shared bucket, less
    // what the first one took (a loaded machine may take a while).
    config.limiter = RateLimiter::new(2.0, 1).unwrap();
    let client = VultrClient::new(config).unwrap();
    client
        .listed_ids(&ListingSource::PolicyUsers(POLICY.into()))
        .await
        .unwrap();
    client
        .clone()
        .detach(&pair(POLICY, Subject::User(USER.into())))
        .await
        .unwrap_err();

    let records = observer.0.lock().unwrap().clone();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].route, routes::LIST_POLICY_USERS);
    assert_eq!(records[0].status, Some(200));
    assert_eq!(records[0].outcome, "ok");
    assert_eq!(records[1].route, routes::DETACH_USER);
    assert_eq!(records[1].status, Some(404));
    assert_eq!(records[1].outcome, "NotFound");
    assert!(
        records[1].limiter_wait >= Duration::from_millis(200),
        "{:?}",
        records[1].limiter_wait
    );
}

/// Everything the client logs, at every level, from every crate, never shows the key.
#[tokio::test]
async fn the_key_never_appears_in_logs_or_errors() {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeVultr::start(|r| match r.path.as_str() {
        "/v2/users" => Reply::error(401, "Invalid API token."),
        "/v2/groups" => Reply::error(429, "slow down").header("retry-after", "1"),
        _ => Reply::error(500, "boom"),
    })
    .await;
    let client = fake.client();
    let mut shown = format!("{client:?} {:?}", fake.config());
    for err in [
        client.list::<User>().await.unwrap_err(),
        client.list::<Group>().await.unwrap_err(),
        client.list::<Policy>().await.unwrap_err(),
    ] {
        shown.push_str(&format!("{err} {err:?}\n"));
    }
    let logs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    // The failure events, not the request span: tests on other threads, without this
    // subscriber, may leave the span's callsite cached as disabled.
    assert!(
        logs.contains("Vultr request failed"),
        "the subscriber saw the requests: {logs}"
    );
    assert!(logs.contains("GET /v2/users"), "{logs}");
    assert!(!logs.contains(TEST_KEY), "key in logs:\n{logs}");
    assert!(!shown.contains(TEST_KEY), "key in errors:\n{shown}");
}

/// With a fence, a write that reaches the front of the limiter after the leadership
/// deadline is refused without being sent; reads go on.
#[tokio::test]
async fn writes_past_the_fence_are_never_sent_reads_go_on() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::GET => Reply::json(200, json!({"users": []})),
        _ => Reply::empty(204),
    })
    .await;
    let fence = WriteFence::new();
    fence.open_until(tokio::time::Instant::now() + Duration::from_millis(300));
    let mut config = fake.config();
    config.fence = Some(fence.clone());
    // Burst 1 at 2/s: the second request waits about 500 ms, past the deadline.
    config.limiter = RateLimiter::new(2.0, 1).unwrap();
    let client = VultrClient::new(config).unwrap();
    let user = Subject::User(USER.into());
    client.attach(&pair(POLICY, user.clone())).await.unwrap();
    let err = client
        .detach(&pair(POLICY, user.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        VultrError::NotLeader {
            route: routes::DETACH_USER
        }
    );
    assert_eq!(err.reason(), "NotLeader");
    assert!(!err.is_transient());
    client
        .listed_ids(&ListingSource::PolicyUsers(POLICY.into()))
        .await
        .unwrap();
    // A renewal opens it again; closing it is for good.
    fence.open_until(tokio::time::Instant::now() + Duration::from_secs(30));
    client.detach(&pair(POLICY, user.clone())).await.unwrap();
    fence.close();
    assert_eq!(
        client
            .attach(&pair(POLICY, user.clone()))
            .await
            .unwrap_err()
            .reason(),
        "NotLeader"
    );
    assert_eq!(
        fake.lines(),
        [
            format!("POST /v2/policies/{POLICY}/users/{USER}"),
            format!("GET /v2/policies/{POLICY}/users"),
            format!("DELETE /v2/policies/{POLICY}/users/{USER}"),
        ]
    );
}

/// A write sent while the fence has 300 ms left is given up when the fence closes, not
/// after the configured timeout (5 s): Vultr answers in 3 s, too late for this leader.
#[tokio::test]
async fn a_write_is_given_up_when_the_fence_closes() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::GET => Reply::json(200, json!({"users": []})),
        _ => Reply::empty(204).delayed(Duration::from_secs(3)),
    })
    .await;
    let fence = WriteFence::new();
    fence.open_until(tokio::time::Instant::now() + Duration::from_millis(300));
    let mut config = fake.config();
    config.fence = Some(fence);
    let client = VultrClient::new(config).unwrap();
    let err = client
        .attach(&pair(POLICY, Subject::User(USER.into())))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ApiUnavailable", "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(!err.to_string().contains("within 5s"), "{err}");
    assert_eq!(
        fake.lines(),
        [format!("POST /v2/policies/{POLICY}/users/{USER}")]
    );
}

/// A held fence (a new leader) delays writes, not reads, until it opens.
#[tokio::test]
async fn a_held_fence_delays_writes_until_it_opens() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::GET => Reply::json(200, json!({"users": []})),
        _ => Reply::empty(204),
    })
    .await;
    let fence = WriteFence::new();
    let now = tokio::time::Instant::now();
    fence.open_until(now + Duration::from_secs(30));
    fence.hold_until(now + Duration::from_secs(2));
    let mut config = fake.config();
    config.fence = Some(fence);
    let client = VultrClient::new(config).unwrap();
    let write = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .detach(&pair(POLICY, Subject::User(USER.into())))
                .await
        })
    };
    client
        .listed_ids(&ListingSource::PolicyUsers(POLICY.into()))
        .await
        .unwrap();
    write.await.unwrap().unwrap();
    // The read went first although the write was started before it.
    assert_eq!(
        fake.lines(),
        [
            format!("GET /v2/policies/{POLICY}/users"),
            format!("DELETE /v2/policies/{POLICY}/users/{USER}"),
        ]
    );
}

const ROLE: &str = "4b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c09";

/// Role grants are role-first: the routes put the role before the policy.
#[tokio::test]
async fn role_attach_and_detach_are_role_first() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::POST => Reply::json(201, json!({"ignored": true})),
        _ => Reply::empty(204),
    })
    .await;
    let client = fake.client();
    let role = Subject::Role(ROLE.into());
    client.attach(&pair(POLICY, role.clone())).await.unwrap();
    assert_eq!(
        client.revoke(&pair(POLICY, role.clone())).await.unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        fake.lines(),
        [
            format!("POST /v2/roles/{ROLE}/policies/{POLICY}"),
            format!("DELETE /v2/roles/{ROLE}/policies/{POLICY}"),
        ]
    );
}

/// A role's listing comes in either shape and across pages; its IDs are policy IDs.
#[tokio::test]
async fn role_policy_listing_in_both_shapes_across_pages() {
    let policies: Vec<Value> = ["p1", "p2", "p3"]
        .iter()
        .map(|id| json!({"id": id, "name": format!("{id}-name"), "policy_document": {}}))
        .collect();
    let relationships: Vec<Value> = ["p1", "p2"]
        .iter()
        .map(|id| json!({"policy_id": id, "policy_name": "x", "role_id": ROLE, "role_name": "r"}))
        .collect();
    let fake = FakeVultr::start(move |r| {
        if r.path == format!("/v2/roles/{ROLE}/policies") {
            paged("policies", &policies, 2, r)
        } else {
            paged("role_policy_relationships", &relationships, 1, r)
        }
    })
    .await;
    let client = fake.client();
    assert_eq!(
        client
            .listed_ids(&ListingSource::RolePolicies(ROLE.into()))
            .await
            .unwrap(),
        ids(&["p1", "p2", "p3"])
    );
    assert_eq!(
        client
            .listed_ids(&ListingSource::RolePolicies("r2".into()))
            .await
            .unwrap(),
        ids(&["p1", "p2"])
    );
    let lines = fake.lines();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], format!("GET /v2/roles/{ROLE}/policies"));
    assert_eq!(lines[2], "GET /v2/roles/r2/policies");
}

/// A 404 to a role DELETE is revoked only when the role's listing agrees, or when
/// the role itself is gone from `GET /v2/roles`.
#[tokio::test]
async fn role_revoke_404_is_confirmed_by_the_role_listing() {
    let listed = Arc::new(Mutex::new(vec![POLICY]));
    let role_exists = Arc::new(Mutex::new(true));
    let (l, e) = (listed.clone(), role_exists.clone());
    let fake = FakeVultr::start(
        move |r: &Recorded| match (r.method.clone(), r.path.as_str()) {
            (Method::DELETE, _) => Reply::error(404, "Not found."),
            (Method::GET, "/v2/roles") if *e.lock().unwrap() => {
                Reply::json(200, json!({"roles": [{"id": ROLE, "name": "auditors"}]}))
            }
            (Method::GET, "/v2/roles") => Reply::json(200, json!({"roles": []})),
            (Method::GET, _) if *e.lock().unwrap() => {
                let items: Vec<Value> =
                    l.lock().unwrap().iter().map(|p| json!({"id": p})).collect();
                Reply::json(200, json!({"policies": items}))
            }
            _ => Reply::error(404, "Not found."),
        },
    )
    .await;
    let client = fake.client();
    let role = Subject::Role(ROLE.into());
    // Still listed: not revoked, and transient.
    let err = client
        .revoke(&pair(POLICY, role.clone()))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("policies of role"), "{err}");
    // The listing no longer shows it.
    listed.lock().unwrap().clear();
    assert_eq!(
        client.revoke(&pair(POLICY, role.clone())).await.unwrap(),
        RevokeOutcome::AlreadyAbsent
    );
    // The role is gone: its listing is 404, and GET /v2/roles confirms.
    *role_exists.lock().unwrap() = false;
    assert_eq!(
        client.revoke(&pair(POLICY, role.clone())).await.unwrap(),
        RevokeOutcome::AlreadyAbsent
    );
    assert_eq!(
        fake.lines()[fake.lines().len() - 3..],
        [
            format!("DELETE /v2/roles/{ROLE}/policies/{POLICY}"),
            format!("GET /v2/roles/{ROLE}/policies"),
            "GET /v2/roles".to_owned(),
        ]
    );
}

/// Everything answering 404 (a misrouted base URL) is never a role revocation.
#[tokio::test]
async fn role_revoke_does_not_trust_404_everywhere() {
    let fake = FakeVultr::start(|_| Reply::error(404, "Not found.")).await;
    let err = fake
        .client()
        .revoke(&pair(POLICY, Subject::Role(ROLE.into())))
        .await
        .unwrap_err();
    assert!(matches!(err, VultrError::NotFound { .. }), "{err}");
}

/// A rejected role attach is decided by the role's listing.
#[tokio::test]
async fn rejected_role_attach_consults_the_role_listing() {
    let fake = FakeVultr::start(|r| match r.method {
        Method::POST => Reply::error(409, "already attached"),
        _ => Reply::json(
            200,
            json!({"role_policy_relationships": [{"policy_id": POLICY}]}),
        ),
    })
    .await;
    let outcome = fake
        .client()
        .attach_confirmed(&pair(POLICY, Subject::Role(ROLE.into())))
        .await
        .unwrap();
    assert!(matches!(outcome, AttachOutcome::AlreadyAttached));
    assert_eq!(fake.lines()[1], format!("GET /v2/roles/{ROLE}/policies"));
}

#[tokio::test]
async fn roles_resolve_by_exact_name_or_id_in_the_directory() {
    let fake = FakeVultr::start(|r| match r.path.as_str() {
        "/v2/roles" => Reply::json(
            200,
            json!({"roles": [
                {"id": ROLE, "name": "auditors", "role_type": "custom", "new_field": [1]},
                {"id": "r2", "name": "on-call"},
                {"id": "r3", "name": "on-call"}
            ]}),
        ),
        _ => Reply::error(404, "Not found."),
    })
    .await;
    let dir = directory(&fake);
    assert_eq!(
        dir.subject(&SubjectRef::Role(RoleRef::ByName("auditors".into())))
            .await
            .unwrap(),
        (Subject::Role(ROLE.into()), "auditors".into())
    );
    assert_eq!(
        dir.subject(&SubjectRef::Role(RoleRef::ById(ROLE.to_uppercase())))
            .await
            .unwrap(),
        (Subject::Role(ROLE.into()), "auditors".into())
    );
    let err = dir
        .subject(&SubjectRef::Role(RoleRef::ByName("Auditors".into())))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "RoleNotFound");
    let err = dir
        .subject(&SubjectRef::Role(RoleRef::ByName("on-call".into())))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Ambiguous");
    assert!(err.to_string().contains("2 Vultr roles (r2, r3)"), "{err}");
}
