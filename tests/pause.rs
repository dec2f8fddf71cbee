//! The pause switch (`iam.vultr-operator.io/paused: "true"`) on the real control plane
//! and the simulator: no Vultr call while paused (attach, drift repair, revocation), a
//! deletion held until resumed or orphaned, the paused gauge; and how status, Events and
//! messages name the pair.

use vio_harness::{e2e, support};

use std::time::{Duration, SystemTime};

use e2e::*;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const PAUSED: &str = "iam.vultr-operator.io/paused";

/// Sets (`Some`) or removes (`None`) the pause annotation.
async fn set_pause(env: &Env, name: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {PAUSED: value}}});
    env.api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("annotate {name}: {e}"));
}

async fn set_deletion_policy(env: &Env, name: &str, policy: &str) {
    let patch = json!({"spec": {"deletionPolicy": policy}});
    env.api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("set deletionPolicy of {name}: {e}"));
}

/// The value of an unlabelled metric on the operator's `/metrics`.
async fn metric(env: &Env, name: &str) -> Option<f64> {
    let (_, body) = env.operator.http_get("/metrics").await;
    body.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_metric(env: &Env, name: &str, value: f64) {
    support::wait_for(&format!("{name} = {value}"), WAIT, || async {
        (metric(env, name).await == Some(value)).then_some(())
    })
    .await
}

/// Waits until a verification pass that started after `since` has completed.
async fn wait_verification_pass(env: &Env, since: SystemTime) {
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    support::wait_for("a verification pass", WAIT, || async {
        metric(env, "vultr_iam_last_verification_timestamp_seconds")
            .await
            .filter(|last| *last > since)
    })
    .await;
}

/// Waits until `Synced` is `Paused` with a message containing `text`.
async fn wait_paused(env: &Env, name: &str, text: &str) -> String {
    support::wait_for(&format!("{name} paused: {text}"), WAIT, || async {
        let obj = env.api.get_opt(name).await.ok().flatten()?;
        let c = obj.status.as_ref()?.condition("Synced")?.clone();
        (c.status == "False" && c.reason == "Paused" && c.message.contains(text))
            .then_some(c.message)
    })
    .await
}

/// Paused events whose note contains `text`.
async fn paused_events(env: &Env, name: &str, text: &str) -> usize {
    env.events(name)
        .await
        .iter()
        .filter(|(_, reason, note)| reason == "Paused" && note.contains(text))
        .count()
}

fn by_names() -> serde_json::Value {
    spec_names("user", "dns-admin", "alice@example.com")
}

/// Created paused: not one Vultr request, across verification passes; Synced and Ready
/// say Paused; the gauge counts it; un-pausing attaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_paused_from_the_start_never_calls_vultr() {
    let env = Env::start("pause-first").await;
    let mut obj = policy_attachment("a", by_ids(DNS_ADMIN, ALICE));
    obj.metadata.annotations = Some([(PAUSED.to_owned(), "true".to_owned())].into());
    env.api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create a paused object");

    let message = wait_paused(&env, "a", "remove the annotation to resume").await;
    assert!(message.contains(PAUSED), "{message}");
    let obj = env.wait_ready("a", "False", "Paused").await;
    assert!(
        obj.finalizers()
            .contains(&"iam.vultr-operator.io/detach".to_owned()),
        "a paused object still gets the finalizer, so a deletion is held too"
    );
    env.wait_event("a", "Paused").await;
    wait_metric(&env, "vultr_iam_paused_policyattachments", 1.0).await;

    wait_verification_pass(&env, SystemTime::now()).await;
    let journal = env.sim.journal();
    assert!(journal.is_empty(), "Vultr calls while paused: {journal:?}");
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert_eq!(
        paused_events(&env, "a", "").await,
        1,
        "one Paused Event, not one per pass"
    );

    set_pause(&env, "a", None).await;
    env.wait_ready("a", "True", "Attached").await;
    env.wait_synced("a", "True", "ReconcileSuccess").await;
    assert_eq!(
        env.requests("POST", &format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}"))
            .len(),
        1
    );
    env.wait_event("a", "Resumed").await;
    wait_metric(&env, "vultr_iam_paused_policyattachments", 0.0).await;
}

/// A grant removed out of band while paused is not repaired across verification
/// passes, and is repaired (a POST, a DriftRepaired Event naming the pair) once
/// un-paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_band_detach_waits_for_the_end_of_the_pause() {
    let env = Env::start("pause-drift").await;
    env.attach("a", by_names()).await;
    let note = env.wait_event("a", "Attached").await;
    assert_eq!(
        note,
        format!(
            "attached policy dns-admin to user alice@example.com (policy {DNS_ADMIN}, \
             user {ALICE}) and verified it in Vultr"
        )
    );

    set_pause(&env, "a", Some("true")).await;
    wait_paused(&env, "a", "remove the annotation to resume").await;
    env.sim.clear_journal();
    assert!(env.sim.detach_user(DNS_ADMIN, ALICE));
    let detached_at = SystemTime::now();
    wait_verification_pass(&env, detached_at).await;
    wait_verification_pass(&env, SystemTime::now()).await;

    assert!(
        !env.sim.is_user_attached(DNS_ADMIN, ALICE),
        "repaired while paused"
    );
    let journal = env.sim.journal();
    assert!(journal.is_empty(), "Vultr calls while paused: {journal:?}");
    // Ready is the last known state of the grant; the pause does not touch it.
    let obj = env.wait_ready("a", "True", "Attached").await;
    assert_eq!(synced(&obj).reason, "Paused");

    set_pause(&env, "a", None).await;
    let note = env.wait_event("a", "DriftRepaired").await;
    assert_eq!(
        note,
        format!(
            "policy dns-admin on user alice@example.com (policy {DNS_ADMIN}, user {ALICE}) \
             was missing in Vultr (removed out of band); attached it again"
        )
    );
    env.wait_synced("a", "True", "ReconcileSuccess").await;
    env.wait_ready("a", "True", "Attached").await;
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert_eq!(
        env.requests("POST", &format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}"))
            .len(),
        1
    );
}

/// Deleted while paused: the finalizer holds, nothing is revoked, status and an Event
/// say why; un-pausing revokes and lets the object go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deletion_waits_for_the_end_of_the_pause() {
    let env = Env::start("pause-delete").await;
    env.attach("a", by_names()).await;
    set_pause(&env, "a", Some("true")).await;
    wait_paused(&env, "a", "remove the annotation to resume").await;
    env.sim.clear_journal();

    env.delete("a").await;
    let message = wait_paused(&env, "a", "deletion held").await;
    assert!(
        message.contains(
            "remove the annotation to revoke, or set deletionPolicy: Orphan to leave the grant"
        ) && message.contains("policy dns-admin on user alice@example.com"),
        "{message}"
    );
    support::wait_for("a Paused Event about the deletion", WAIT, || async {
        (paused_events(&env, "a", "deletion held").await == 1).then_some(())
    })
    .await;
    wait_metric(&env, "vultr_iam_paused_policyattachments", 1.0).await;
    assert_eq!(
        metric(&env, "vultr_iam_revocations_pending").await,
        Some(0.0),
        "a held deletion is not a pending revocation"
    );

    wait_verification_pass(&env, SystemTime::now()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let obj = env.api.get("a").await.expect("still there");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert!(
        obj.finalizers()
            .contains(&"iam.vultr-operator.io/detach".to_owned())
    );
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
    let journal = env.sim.journal();
    assert!(journal.is_empty(), "Vultr calls while paused: {journal:?}");

    set_pause(&env, "a", None).await;
    env.wait_gone("a").await;
    let deletes = env.requests("DELETE", &format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}"));
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    let note = env.wait_event("a", "Revoked").await;
    assert_eq!(
        note,
        format!(
            "revoked policy dns-admin from user alice@example.com (policy {DNS_ADMIN}, \
             user {ALICE}) in Vultr"
        )
    );
}

/// Deleted while paused, then set to Orphan: the object goes without a DELETE and the
/// grant stays in Vultr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deletion_set_to_orphan_leaves_the_grant() {
    let env = Env::start("pause-orphan").await;
    env.attach("a", by_ids(DNS_ADMIN, ALICE)).await;
    set_pause(&env, "a", Some("true")).await;
    wait_paused(&env, "a", "remove the annotation to resume").await;
    env.sim.clear_journal();
    env.delete("a").await;
    wait_paused(&env, "a", "deletion held").await;

    set_deletion_policy(&env, "a", "Orphan").await;
    env.wait_gone("a").await;
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
    let journal = env.sim.journal();
    assert!(journal.is_empty(), "Vultr calls: {journal:?}");
    let note = env.wait_event("a", "Orphaned").await;
    assert!(
        note.contains("left policy dns-admin on user alice@example.com"),
        "{note}"
    );
}

/// A paused live object still declares its pair: another holder's deletion keeps it.
/// A value other than "true" does not pause, and says so once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_keeps_a_shared_grant() {
    let env = Env::start("pause-shared").await;
    env.attach_all(&[("paused", by_ids(DNS_ADMIN, ALICE)), ("other", by_names())])
        .await;
    set_pause(&env, "paused", Some("true")).await;
    wait_paused(&env, "paused", "remove the annotation to resume").await;

    env.delete_and_wait_gone("other").await;
    assert!(env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert!(env.requests("DELETE", "/v2/").is_empty());
    let note = env.wait_event("other", "GrantShared").await;
    assert!(
        note.contains("kept policy dns-admin on user alice@example.com")
            && note.ends_with(&format!(
                "still declared by PolicyAttachment {}/paused",
                env.ns.name
            )),
        "{note}"
    );

    set_pause(&env, "paused", Some("True")).await;
    let note = env.wait_event("paused", "InvalidPauseAnnotation").await;
    assert!(note.contains("only \"true\" pauses"), "{note}");
    env.wait_synced("paused", "True", "ReconcileSuccess").await;
}

/// Editing `deletionPolicy` of a Ready object declared by IDs keeps the names that
/// resolution found (not the raw IDs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_policy_edit_keeps_the_resolved_names() {
    let env = Env::start("pause-names").await;
    env.create("a", by_ids(DNS_ADMIN, ALICE)).await;
    let obj = env.wait_ready("a", "True", "Attached").await;
    let st = obj.status.expect("status");
    assert_eq!(st.policy.as_deref(), Some("dns-admin"));
    assert_eq!(st.subject.as_deref(), Some("alice@example.com"));

    set_deletion_policy(&env, "a", "Orphan").await;
    let obj = support::wait_for("generation 2 observed", WAIT, || async {
        let obj = env.api.get_opt("a").await.ok().flatten()?;
        (obj.metadata.generation == Some(2) && obj.status.as_ref()?.observed_generation == Some(2))
            .then_some(obj)
    })
    .await;
    // Give a stray later write the chance to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let obj = env.api.get("a").await.unwrap_or(obj);
    let st = obj.status.expect("status");
    assert_eq!(st.policy.as_deref(), Some("dns-admin"));
    assert_eq!(st.subject.as_deref(), Some("alice@example.com"));
    assert_eq!(
        st.condition("Ready").map(|c| c.reason.as_str()),
        Some("Attached")
    );
    let table = run_ok(env.kubectl().args(["get", "pa", "a"]));
    assert!(
        table.contains("dns-admin") && table.contains("alice@example.com"),
        "{table}"
    );
}

/// A failure once the pair is resolved names it: the policy deleted in Vultr behind the
/// operator's back is reported as `policy dns-admin on user alice@example.com (IDs): ...`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_resolution_names_the_pair() {
    let env = Env::start("pause-notfound").await;
    env.attach("a", by_names()).await;
    assert!(env.sim.remove_policy(DNS_ADMIN));
    let obj = env.wait_synced("a", "False", "NotFound").await;
    let message = &synced(&obj).message;
    assert!(
        message.starts_with(&format!(
            "policy dns-admin on user alice@example.com (policy {DNS_ADMIN}, user {ALICE}): "
        )) && message.contains("404"),
        "{message}"
    );
}
