//! Every branch of the reconcile flow (apply, cleanup, pause, resume, failure
//! reporting) through the Vultr port, on the in-memory API server of `testing.rs`.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::json;

use super::testing::{Cluster, Object, grant, object, org};
use super::{Context, reconcile_deleted, reconcile_live};
use crate::boundary::{Boundary, Enforcement};
use crate::crd::{FINALIZER, PERMITTED, PolicyAttachment, READY, SYNCED};
use crate::domain::SubjectKind;
use crate::error::Error;
use crate::port::memory::{Call, InMemory, Write, unavailable};

struct World {
    cluster: Cluster,
    org: Arc<InMemory>,
    ctx: Arc<Context>,
}

fn world(org: InMemory, objects: impl IntoIterator<Item = Object>) -> World {
    let cluster = Cluster::default();
    for obj in objects {
        cluster.put(&obj.build());
    }
    let org = Arc::new(org);
    let ctx = super::testing::context(&cluster, org.clone());
    World { cluster, org, ctx }
}

impl World {
    /// The object as the API server holds it (a watch event would bring this).
    fn now(&self, name: &str) -> Arc<PolicyAttachment> {
        Arc::new(self.cluster.get(name).expect("the object exists"))
    }

    async fn live(&self, name: &str) -> Result<Action, Error> {
        reconcile_live(self.now(name), self.ctx.clone()).await
    }

    async fn deleted(&self, name: &str) -> Result<Action, Error> {
        reconcile_deleted(self.now(name), self.ctx.clone()).await
    }

    /// (status, reason) of condition `type_`.
    fn condition(&self, name: &str, type_: &str) -> (String, String) {
        let obj = self.cluster.get(name).expect("the object exists");
        let st = obj.status.expect("a status");
        let c = st.condition(type_).expect("the condition");
        (c.status.clone(), c.reason.clone())
    }

    /// Asserts the writes (attaches and revocations) Vultr answered, in order.
    fn writes_are(&self, expected: &[Call]) {
        assert_eq!(self.org.writes(), expected);
    }

    /// The verification hold after an attach has passed.
    fn hold_passed(&self, name: &str) {
        self.ctx.objects.end_wait(&format!("uid-{name}"));
    }
}

fn is(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

#[tokio::test]
async fn a_new_object_gets_the_finalizer_before_any_vultr_call() {
    let w = world(org(), [object("a").without_finalizer()]);
    w.live("a").await.expect("reconciled");
    assert_eq!(
        w.now("a").metadata.finalizers,
        Some(vec![FINALIZER.to_owned()])
    );
    assert!(w.org.calls().is_empty(), "{:?}", w.org.calls());
}

#[tokio::test]
async fn apply_records_the_pair_attaches_and_then_verifies() {
    let w = world(org(), [object("a")]);
    let action = w.live("a").await.expect("attached");
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    assert_eq!(w.now("a").recorded_grant(), Some(grant()));
    assert_eq!(w.condition("a", READY), is("False", "Attaching"));
    w.writes_are(&[Call::Attach(grant())]);
    // The pair is on the object before the attach is sent: the first status write
    // records it (a crash after the POST still leaves it revocable).
    assert_eq!(w.cluster.requests()[0], "PATCH policyattachments/a/status");

    // Our own status write wakes the object early: the hold keeps it from acting.
    w.live("a").await.expect("held");
    assert_eq!(w.org.calls().len(), 3, "{:?}", w.org.calls());
    w.hold_passed("a");
    assert_eq!(w.live("a").await.expect("verified"), Action::await_change());
    assert_eq!(w.condition("a", READY), is("True", "Attached"));
    assert_eq!(w.condition("a", SYNCED), is("True", "ReconcileSuccess"));
    assert_eq!(w.cluster.reasons(), ["Attached"]);
    w.writes_are(&[Call::Attach(grant())]);
}

/// `a`, recorded, its grant in Vultr already: verified without a write.
async fn verified() -> World {
    let w = world(
        org().granting(&grant()),
        [object("a").recorded(&grant(), false)],
    );
    w.live("a").await.expect("verified");
    assert_eq!(w.condition("a", READY), is("True", "Attached"));
    w.writes_are(&[]);
    w
}

#[tokio::test]
async fn a_grant_already_in_vultr_is_verified_without_a_write() {
    let w = verified().await;
    assert_eq!(w.cluster.reasons(), ["Attached"]);
}

#[tokio::test]
async fn a_grant_removed_out_of_band_is_attached_again_with_a_warning() {
    let w = verified().await;
    w.org.remove_out_of_band(&grant());
    w.live("a").await.expect("repaired");
    w.writes_are(&[Call::Attach(grant())]);
    let repaired = w
        .cluster
        .events()
        .into_iter()
        .find(|e| e.reason == "DriftRepaired");
    assert_eq!(repaired.map(|e| e.type_), Some("Warning".to_owned()));
    assert_eq!(w.condition("a", READY), is("False", "Attaching"));
}

#[tokio::test]
async fn a_failed_attach_is_reported_on_the_object_and_retried() {
    let org = org();
    org.fail_next(
        Write::Attach,
        unavailable("POST /v2/policies/{policy_id}/users"),
    );
    let w = world(org, [object("a")]);
    let err = w.live("a").await.expect_err("the attach failed");
    assert_eq!(err.reason(), "ApiUnavailable");
    assert_eq!(w.condition("a", SYNCED), is("False", "ApiUnavailable"));
    // Transient: Ready stays as it was.
    assert_eq!(w.condition("a", READY), is("False", "Attaching"));
    let warning = &w.cluster.events()[0];
    assert_eq!(
        (warning.type_.as_str(), warning.reason.as_str()),
        ("Warning", "ApiUnavailable")
    );
    assert!(
        warning.note.contains("dns-admin"),
        "names the pair: {}",
        warning.note
    );
    // The pair was recorded before the POST: the retry attaches the same one.
    assert_eq!(w.now("a").recorded_grant(), Some(grant()));
    w.hold_passed("a");
    w.live("a").await.expect("attached on retry");
    w.writes_are(&[Call::Attach(grant()), Call::Attach(grant())]);
}

#[tokio::test]
async fn a_spec_that_names_nothing_in_vultr_is_a_terminal_failure() {
    let spec =
        json!({"policy": {"name": "no-such-policy"}, "user": {"email": "alice@example.com"}});
    let w = world(org(), [object("a").spec(spec)]);
    let err = w.live("a").await.expect_err("unresolvable");
    assert_eq!(err.reason(), "PolicyNotFound");
    assert_eq!(w.condition("a", READY), is("False", "PolicyNotFound"));
    w.writes_are(&[]);
    assert_eq!(w.now("a").recorded_grant(), None);
}

#[tokio::test]
async fn cleanup_revokes_the_recorded_pair_and_releases_the_object() {
    let w = world(
        org().granting(&grant()),
        [object("a").recorded(&grant(), true).deleting()],
    );
    w.deleted("a").await.expect("revoked");
    w.writes_are(&[Call::Revoke(grant())]);
    assert!(w.org.granted().is_empty());
    assert!(w.cluster.get("a").is_none(), "the finalizer is removed");
    assert!(w.cluster.reasons().contains(&"Revoked".to_owned()));
}

#[tokio::test]
async fn a_failed_revocation_keeps_the_finalizer_and_says_why() {
    let org = org().granting(&grant());
    org.fail_next(
        Write::Revoke,
        unavailable("DELETE /v2/policies/{policy_id}/users/{user_id}"),
    );
    let w = world(org, [object("a").recorded(&grant(), true).deleting()]);
    let err = w.deleted("a").await.expect_err("the revocation failed");
    assert_eq!(err.reason(), "ApiUnavailable");
    assert_eq!(
        w.now("a").metadata.finalizers,
        Some(vec![FINALIZER.to_owned()])
    );
    assert_eq!(w.condition("a", READY), is("False", "Detaching"));
    assert_eq!(w.condition("a", SYNCED), is("False", "ApiUnavailable"));
    assert_eq!(w.org.granted().len(), 1);
    w.deleted("a").await.expect("revoked on retry");
    assert!(w.org.granted().is_empty() && w.cluster.get("a").is_none());
}

#[tokio::test]
async fn orphan_releases_the_object_and_keeps_the_grant() {
    let w = world(
        org().granting(&grant()),
        [object("a").recorded(&grant(), true).orphan().deleting()],
    );
    w.deleted("a").await.expect("released");
    w.writes_are(&[]);
    assert!(w.cluster.get("a").is_none());
    assert_eq!(w.cluster.reasons(), ["Orphaned"]);
}

#[tokio::test]
async fn a_grant_another_object_declares_is_kept() {
    let w = world(
        org().granting(&grant()),
        [
            object("a").recorded(&grant(), true).deleting(),
            object("b").recorded(&grant(), true),
        ],
    );
    w.live("b").await.expect("b verified");
    w.deleted("a").await.expect("a released");
    w.writes_are(&[]);
    assert!(w.cluster.get("a").is_none());
    assert!(w.cluster.reasons().contains(&"GrantShared".to_owned()));
}

#[tokio::test]
async fn a_deletion_with_no_pair_recorded_reads_the_object_live_and_revokes_nothing() {
    let w = world(org().granting(&grant()), [object("a").deleting()]);
    w.deleted("a").await.expect("released");
    w.writes_are(&[]);
    assert!(w.cluster.get("a").is_none());
    assert!(
        w.cluster
            .requests()
            .contains(&"GET policyattachments/a".to_owned())
    );
}

#[tokio::test]
async fn a_paused_object_makes_no_vultr_call_and_says_so() {
    let w = world(org(), [object("a").paused()]);
    assert_eq!(w.live("a").await.expect("paused"), Action::await_change());
    assert!(w.org.calls().is_empty());
    assert_eq!(w.condition("a", SYNCED), is("False", "Paused"));
    assert_eq!(w.condition("a", READY), is("False", "Paused"));
    assert_eq!(w.cluster.reasons(), ["Paused"]);
    // Once: a second reconcile neither writes nor emits again.
    let writes = w.cluster.requests().len();
    w.live("a").await.expect("still paused");
    assert_eq!(
        (w.cluster.requests().len(), w.cluster.reasons().len()),
        (writes, 1)
    );
}

#[tokio::test]
async fn a_paused_deletion_holds_the_finalizer_and_the_grant() {
    let w = world(
        org().granting(&grant()),
        [object("a").recorded(&grant(), true).paused().deleting()],
    );
    w.deleted("a").await.expect("held");
    assert!(w.org.calls().is_empty());
    assert_eq!(
        w.now("a").metadata.finalizers,
        Some(vec![FINALIZER.to_owned()])
    );
    assert_eq!(w.condition("a", SYNCED), is("False", "Paused"));
    let held = &w.cluster.events()[0];
    assert_eq!(
        (held.type_.as_str(), held.reason.as_str()),
        ("Warning", "Paused")
    );
}

#[tokio::test]
async fn resuming_says_so_and_verifies_the_grant() {
    let condition = |type_: &str, status: &str, reason: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": "",
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z",
        })
    };
    let paused = json!({"conditions": [
        condition("Ready", "True", "Attached"),
        condition("Synced", "False", "Paused"),
    ]});
    let w = world(
        org().granting(&grant()),
        [object("a").recorded(&grant(), true).status(paused)],
    );
    w.live("a").await.expect("resumed");
    assert_eq!(w.cluster.reasons(), ["Resumed"]);
    assert_eq!(w.org.calls(), [Call::Observe(grant())]);
    assert_eq!(w.condition("a", SYNCED), is("True", "ReconcileSuccess"));
    assert_eq!(w.condition("a", READY), is("True", "Attached"));
}

#[tokio::test]
async fn a_stale_live_snapshot_of_a_revoked_object_attaches_nothing() {
    let w = world(
        org().granting(&grant()),
        [object("a").recorded(&grant(), true)],
    );
    let stale = w.now("a");
    w.cluster
        .put(&object("a").recorded(&grant(), true).deleting().build());
    w.deleted("a").await.expect("revoked");
    w.writes_are(&[Call::Revoke(grant())]);
    reconcile_live(stale, w.ctx.clone()).await.expect("skipped");
    w.writes_are(&[Call::Revoke(grant())]);
}

#[tokio::test]
async fn an_attach_from_a_snapshot_that_predates_the_deletion_is_not_sent() {
    // Recorded but not listed: the next step is a POST, and no UID-tested write came
    // first in this reconcile, so the object is read live, and it is being deleted.
    let w = world(org(), [object("a").recorded(&grant(), false)]);
    let snapshot = w.now("a");
    w.cluster
        .put(&object("a").recorded(&grant(), false).deleting().build());
    reconcile_live(snapshot, w.ctx.clone())
        .await
        .expect("no attach");
    w.writes_are(&[]);
}

fn bounded(org: InMemory, boundary: Boundary, objects: impl IntoIterator<Item = Object>) -> World {
    let w = world(org, objects);
    let ctx = super::testing::bounded_context(&w.cluster, w.org.clone(), boundary);
    World { ctx, ..w }
}

fn only(policy: &str, kinds: &[SubjectKind], enforcement: Enforcement) -> Boundary {
    Boundary::new(&[policy.to_owned()], kinds, enforcement)
}

#[tokio::test]
async fn a_grant_outside_the_boundary_is_never_sent_nor_recorded() {
    let billing = only("billing-read", &[], Enforcement::Enforce);
    let w = bounded(org(), billing, [object("a")]);
    let err = w.live("a").await.expect_err("refused");
    assert_eq!(err.reason(), "NotPermitted");
    w.writes_are(&[]);
    assert_eq!(w.condition("a", READY), is("False", "NotPermitted"));
    let refused = &w.cluster.events()[0];
    assert!(
        refused
            .note
            .contains("allows the policies billing-read only, not dns-admin"),
        "names the rule: {}",
        refused.note
    );
    // Nothing recorded: its deletion revokes nothing, even a grant made elsewhere.
    assert_eq!(w.now("a").recorded_grant(), None);
    w.cluster.put(&object("a").deleting().build());
    w.deleted("a").await.expect("released");
    w.writes_are(&[]);
}

#[tokio::test]
async fn a_subject_kind_outside_the_boundary_is_refused() {
    let org = org().subject(SubjectKind::Group, "group-1", "ops");
    let spec = json!({"policy": {"name": "dns-admin"}, "group": {"name": "ops"}});
    let users_only = only("dns-admin", &[SubjectKind::User], Enforcement::Enforce);
    let w = bounded(org, users_only, [object("a").spec(spec)]);
    let err = w.live("a").await.expect_err("refused");
    let message = "not permitted: the grant boundary allows subjects of kind User only, not Group";
    assert!(err.to_string().ends_with(message), "{err}");
    w.writes_are(&[]);
}

#[tokio::test]
async fn a_grant_made_before_the_boundary_narrowed_is_revoked_once() {
    let billing = only("billing-read", &[], Enforcement::Enforce);
    let w = bounded(
        org().granting(&grant()),
        billing,
        [object("a").recorded(&grant(), true)],
    );
    let err = w.live("a").await.expect_err("outside");
    assert_eq!(err.reason(), "NotPermitted");
    w.writes_are(&[Call::Revoke(grant())]);
    assert!(w.org.granted().is_empty());
    assert_eq!(w.condition("a", READY), is("False", "NotPermitted"));
    assert!(w.cluster.reasons().contains(&"NotPermitted".to_owned()));
    w.hold_passed("a");
    w.live("a").await.expect_err("still outside");
    w.writes_are(&[Call::Revoke(grant())]);
}

#[tokio::test]
async fn an_audit_boundary_keeps_the_grant_and_reports_it() {
    let audit = only("billing-read", &[], Enforcement::Audit);
    let w = bounded(org(), audit, [object("a")]);
    w.live("a").await.expect("attached");
    w.writes_are(&[Call::Attach(grant())]);
    assert_eq!(w.condition("a", PERMITTED), is("False", "NotPermitted"));
    let warned = w
        .cluster
        .events()
        .into_iter()
        .filter(|e| e.reason == "NotPermitted")
        .count();
    w.hold_passed("a");
    w.live("a").await.expect("verified");
    assert_eq!(w.condition("a", READY), is("True", "Attached"));
    assert_eq!(
        w.cluster
            .events()
            .into_iter()
            .filter(|e| e.reason == "NotPermitted")
            .count(),
        warned,
        "reported once, not per reconcile"
    );
    assert_eq!(warned, 1);
}
