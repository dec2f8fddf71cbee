//! Objects written by earlier releases' status layouts keep the revocation promise
//! through an upgrade: no write of this release removes their recorded pair, so a
//! revocation that fails once is retried with that pair. The layouts and their field
//! managers are listed in README's "Status layout and field managers".

use vio_harness::e2e;

use e2e::*;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vultr_iam_operator::crd::{FINALIZER, PAUSED_ANNOTATION};
use vultr_sim::Fault;

/// The status layouts of earlier releases: which field manager applied which fields.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// 0.1.0-alpha: the whole status, pair included, under `vultr-iam-operator`.
    WholeStatus,
    /// The pair under `vultr-iam-operator-pair`, everything else under
    /// `vultr-iam-operator`.
    SplitPair,
}

fn conditions() -> Value {
    json!([
        {"type": "Ready", "status": "True", "reason": "Attached", "message": "verified in Vultr",
         "observedGeneration": 1, "lastTransitionTime": "2026-11-01T00:00:00Z"},
        {"type": "Synced", "status": "True", "reason": "ReconcileSuccess",
         "message": "the last reconcile succeeded", "observedGeneration": 1,
         "lastTransitionTime": "2026-11-01T00:00:00Z"},
    ])
}

fn pair(policy: &str, user: &str) -> Value {
    json!({"policyId": policy, "subjectKind": "User", "subjectId": user})
}

/// Writes `name`'s status as `layout` did, with its managers.
async fn write_layout(env: &Env, name: &str, layout: Layout, policy: &str, user: &str) {
    let mut rest = json!({
        "observedGeneration": 1,
        "conditions": conditions(),
        "policy": "policy",
        "subject": "user",
        "attachedAt": "2026-11-01T00:00:00Z",
        "lastVerifiedAt": "2026-11-01T00:00:00Z",
    });
    let applies = match layout {
        Layout::WholeStatus => {
            merge(&mut rest, pair(policy, user));
            vec![("vultr-iam-operator", rest)]
        }
        Layout::SplitPair => vec![
            ("vultr-iam-operator-pair", pair(policy, user)),
            ("vultr-iam-operator", rest),
        ],
    };
    for (manager, status) in applies {
        let patch = e2e::status_apply(status);
        env.api
            .patch_status(
                name,
                &PatchParams::apply(manager).force(),
                &Patch::Apply(&patch),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {layout:?} status to {name}: {e}"));
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// Every earlier layout, on an object deleted while the operator was down (one of each
/// also paused at the upgrade): its first DELETE fails with 503, and the retry must
/// still revoke the recorded pair before the object goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_earlier_status_layout_is_revoked_after_a_failed_delete() {
    let mut env = Env::start("upgrade-layouts").await;
    env.operator.kill();
    let objects = [
        ("whole", Layout::WholeStatus, false, DNS_ADMIN, ALICE),
        ("split", Layout::SplitPair, false, DNS_ADMIN, BOB),
        (
            "whole-paused",
            Layout::WholeStatus,
            true,
            BILLING_READ,
            ALICE,
        ),
        ("split-paused", Layout::SplitPair, true, BILLING_READ, BOB),
    ];
    for (name, layout, paused, policy, user) in objects {
        env.sim.attach_user(policy, user);
        let mut obj = policy_attachment(name, by_ids(policy, user));
        obj.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        if paused {
            obj.metadata.annotations =
                Some([(PAUSED_ANNOTATION.to_owned(), "true".to_owned())].into());
        }
        env.api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        write_layout(&env, name, layout, policy, user).await;
        env.delete(name).await;
        let path = format!("/v2/policies/{policy}/users/{user}");
        env.sim
            .add_fault(Fault::status(503).on(Some("DELETE"), Some(&path)).times(1));
    }

    env.operator = env.start_operator(&[], &[]);
    // The held deletions say so (a status write of this release), then are let go.
    for (name, _, paused, ..) in objects {
        if paused {
            env.wait_synced(name, "False", "Paused").await;
            let unpause = json!({"metadata": {"annotations": {PAUSED_ANNOTATION: null}}});
            env.api
                .patch(name, &PatchParams::default(), &Patch::Merge(&unpause))
                .await
                .unwrap_or_else(|e| panic!("unpause {name}: {e}"));
        }
    }
    for (name, ..) in objects {
        env.wait_gone(name).await;
    }
    for (name, layout, paused, policy, user) in objects {
        let path = format!("/v2/policies/{policy}/users/{user}");
        let deletes: Vec<u16> = env
            .requests("DELETE", &path)
            .iter()
            .map(|e| e.status)
            .collect();
        assert!(
            !env.sim.is_user_attached(policy, user),
            "{name} ({layout:?}, paused: {paused}) is gone but its grant stayed: DELETEs {deletes:?}\n{}",
            env.operator.logs()
        );
        assert_eq!(deletes, [503, 204], "{name}: the failed DELETE was retried");
    }
}
