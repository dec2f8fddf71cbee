//! `vultr-iam-operator export` against the simulator (and, for the round trip and
//! `--unmanaged`, the real control plane with the operator running): the manifests it
//! prints adopt every grant without a POST, a deletion revokes exactly its grant, and
//! filters, references, `--unmanaged` and errors behave as documented.

use vio_harness::{e2e, support};

use std::process::{Command, Output};

use e2e::*;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::json;
use support::TestNamespace;
use vultr_iam_operator::crd::PolicyAttachment;
use vultr_sim::{Fault, Sim};

/// The two users of the demo organisation that share `shared@example.com`.
const SHARED_ONE: &str = "c0ffee00-1111-4222-8333-444455556605";
const CAROL: &str = "9e8f7a6b-5c4d-4e3f-8a2b-1c0d9e8f7a04";

/// The binary's `export` with these arguments, against `sim`, with `key`.
fn export_with(sim_url: &str, key: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(support::operator_binary());
    cmd.args(["export", "--vultr-api-url", sim_url])
        .args(args)
        .env_remove("VULTR_API_KEY")
        .env_remove("RUST_LOG")
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    if let Some(key) = key {
        cmd.env("VULTR_API_KEY", key);
    }
    cmd
}

/// Runs an export that must succeed: (stdout, stderr).
fn export_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().expect("run the export");
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    (stdout, stderr)
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The documents of a multi-document YAML export.
fn documents(yaml: &str) -> Vec<PolicyAttachment> {
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| PolicyAttachment::deserialize(doc).expect("a PolicyAttachment"))
        .collect()
}

/// An export with the regular key that must yield exactly one document: (YAML, it).
fn export_one(sim_url: &str, args: &[&str]) -> (String, PolicyAttachment) {
    let (yaml, _) = export_ok(&mut export_with(sim_url, Some(API_KEY), args));
    let mut docs = documents(&yaml);
    assert_eq!(docs.len(), 1, "{yaml}");
    (yaml, docs.remove(0))
}

/// The paths the simulator journaled that `pred` accepts, oldest first.
fn journaled(sim: &Sim, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let paths = sim.journal().into_iter().map(|e| e.path);
    paths.filter(|p| pred(p)).collect()
}

fn name(obj: &PolicyAttachment) -> &str {
    obj.metadata.name.as_deref().expect("a name")
}

/// The document whose subject is the user (or group) `id`, declared by `field`.
fn find<'a>(
    docs: &'a [PolicyAttachment],
    policy: &str,
    pred: impl Fn(&PolicyAttachment) -> bool,
) -> &'a PolicyAttachment {
    docs.iter()
        .find(|d| {
            (d.spec.policy.id.as_deref() == Some(policy)
                || d.spec.policy.name.as_deref() == Some(policy))
                && pred(d)
        })
        .unwrap_or_else(|| panic!("no document for {policy}: {docs:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_an_export_adopts_every_grant_without_a_post_and_a_deletion_revokes_only_its_own()
{
    let env = Env::start("export-round-trip").await;
    // Out-of-band grants besides the demo's (carol: compute-admin, ops: billing-read,
    // the role auditors: billing-read): a user whose email is unique (by email), one
    // whose email is not (by id), a group, and a role whose name is not unique (by id).
    assert!(env.sim.attach_user(DNS_ADMIN, ALICE));
    assert!(env.sim.attach_user(DNS_ADMIN, SHARED_ONE));
    assert!(env.sim.attach_group(DNS_ADMIN, DEVELOPERS));
    assert!(env.sim.attach_role(ON_CALL, DNS_ADMIN));

    let (yaml, stderr) = export_ok(&mut export_with(&env.sim.url(), Some(API_KEY), &[]));
    let docs = documents(&yaml);
    assert_eq!(docs.len(), 7, "{yaml}");
    assert!(stderr.contains(SHARED_ONE), "{stderr}");
    assert!(stderr.contains(ON_CALL), "{stderr}");
    assert!(stderr.contains("2 role grants"), "{stderr}");
    find(&docs, "billing-read", |d| {
        d.spec.role.as_ref().and_then(|r| r.name.as_deref()) == Some("auditors")
    });
    find(&docs, "dns-admin", |d| {
        d.spec.role.as_ref().and_then(|r| r.id.as_deref()) == Some(ON_CALL)
    });
    let alice = find(&docs, "dns-admin", |d| {
        d.spec.user.as_ref().and_then(|u| u.email.as_deref()) == Some("alice@example.com")
    });
    find(&docs, "dns-admin", |d| {
        d.spec.user.as_ref().and_then(|u| u.id.as_deref()) == Some(SHARED_ONE)
    });
    find(&docs, "dns-admin", |d| {
        d.spec.group.as_ref().and_then(|g| g.name.as_deref()) == Some("developers")
    });

    env.sim.clear_journal();
    let applied = with_stdin(env.kubectl().args(["apply", "-f", "-"]), &yaml);
    assert!(applied.status.success(), "{}", texts(&applied).1);
    for doc in &docs {
        env.wait_ready(name(doc), "True", "Attached").await;
    }
    let posts = env.requests("POST", "/v2/");
    assert!(posts.is_empty(), "adopting sent POSTs: {posts:?}");

    env.delete_and_wait_gone(name(alice)).await;
    let deletes = env.requests("DELETE", "/v2/");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(
        deletes[0].path,
        format!("/v2/policies/{DNS_ADMIN}/users/{ALICE}")
    );
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));
    assert!(env.sim.is_user_attached(DNS_ADMIN, SHARED_ONE));
    assert!(env.sim.is_user_attached(COMPUTE_ADMIN, CAROL));
    assert!(env.sim.is_group_attached(DNS_ADMIN, DEVELOPERS));
    assert!(env.sim.is_group_attached(BILLING_READ, OPS));
    assert!(env.sim.is_role_attached(AUDITORS, BILLING_READ));
    assert!(env.sim.is_role_attached(ON_CALL, DNS_ADMIN));
    assert!(env.requests("POST", "/v2/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_prints_only_the_grants_no_object_declares() {
    let env = Env::start("export-unmanaged").await;
    let sim = &env.sim;
    // A policy of this test alone, so objects of other tests in the cluster (which
    // resolve against the demo organisation) cannot declare its grants.
    let policy = sim.add_policy("export-unmanaged");
    let by_operator = sim.add_user("managed@export.example");
    let by_spec = sim.add_user("spec@export.example");
    let by_status = sim.add_user("status@export.example");
    let free_user = sim.add_user("free@export.example");
    let free_group = sim.add_group("free-team");
    for user in [&by_operator, &by_spec, &by_status, &free_user] {
        assert!(sim.attach_user(&policy, user));
    }
    assert!(sim.attach_group(&policy, &free_group));

    // Declared by an object the operator reconciles (status and spec).
    env.create(
        "managed",
        spec_names("user", "export-unmanaged", "managed@export.example"),
    )
    .await;
    env.wait_ready("managed", "True", "Attached").await;
    // In a namespace no operator watches: declared by its spec alone...
    let other = TestNamespace::new(&env.client, "export-unmanaged-b").await;
    let api: Api<PolicyAttachment> = Api::namespaced(env.client.clone(), &other.name);
    let spec_only = policy_attachment(
        "spec-only",
        json!({"policy": {"id": policy}, "user": {"email": "spec@export.example"}}),
    );
    api.create(&PostParams::default(), &spec_only)
        .await
        .expect("create spec-only");
    // ...and by a recorded pair whose spec no longer resolves.
    let recorded = policy_attachment(
        "recorded",
        spec_names("user", "renamed-since", "status@export.example"),
    );
    api.create(&PostParams::default(), &recorded)
        .await
        .expect("create recorded");
    let status =
        json!({"status": {"policyId": policy, "subjectKind": "User", "subjectId": by_status}});
    api.patch_status("recorded", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("record a pair in status");

    let unmanaged = |extra: &[&str]| {
        let mut cmd = export_with(&sim.url(), Some(API_KEY), &["--policy", &policy]);
        cmd.args(extra).env("KUBECONFIG", &env.cp.kubeconfig);
        export_ok(&mut cmd)
    };
    let (all, _) = unmanaged(&[]);
    assert_eq!(documents(&all).len(), 5, "{all}");
    let (yaml, stderr) = unmanaged(&["--unmanaged"]);
    let docs = documents(&yaml);
    let mut subjects: Vec<String> = docs
        .iter()
        .map(|d| match (&d.spec.user, &d.spec.group) {
            (Some(u), _) => u.email.clone().unwrap_or_default(),
            (_, Some(g)) => g.name.clone().unwrap_or_default(),
            _ => String::new(),
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["free-team", "free@export.example"], "{yaml}");
    assert!(
        stderr.contains("whose spec does not resolve"),
        "the unresolvable spec is noted: {stderr}"
    );
    assert!(stderr.contains("for unmanaged grants"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_filters_and_repeated_runs() {
    let sim = demo_sim().await;
    assert!(sim.attach_user(DNS_ADMIN, ALICE));
    assert!(sim.attach_user(DNS_ADMIN, SHARED_ONE));
    let url = sim.url();

    // Names: readable, except where a name is not unique (then the ID, and a note).
    let (names, stderr) = export_ok(&mut export_with(&url, Some(API_KEY), &[]));
    let by_name = documents(&names);
    assert_eq!(by_name.len(), 5, "{names}");
    let shared = find(&by_name, "dns-admin", |d| {
        d.spec.user.as_ref().and_then(|u| u.id.as_deref()) == Some(SHARED_ONE)
    });
    assert!(
        stderr.contains(&format!(
            "user {SHARED_ONE} shares its email \"shared@example.com\""
        )),
        "{stderr}"
    );
    assert!(by_name.iter().all(|d| d.metadata.namespace.is_none()));
    let named: Vec<&str> = by_name.iter().map(name).collect();
    let mut sorted = named.clone();
    sorted.sort();
    assert_eq!(named, sorted, "documents are sorted by name");

    // A second run prints the same bytes.
    let (again, _) = export_ok(&mut export_with(&url, Some(API_KEY), &[]));
    assert_eq!(again, names);

    // IDs: no names anywhere in the specs, no note; the same object names.
    let (ids, stderr) = export_ok(&mut export_with(
        &url,
        Some(API_KEY),
        &["--reference", "ids"],
    ));
    let by_id = documents(&ids);
    assert!(!stderr.contains("note:"), "{stderr}");
    for doc in &by_id {
        assert!(doc.spec.policy.id.is_some() && doc.spec.policy.name.is_none());
        let user_ok = doc
            .spec
            .user
            .as_ref()
            .is_none_or(|u| u.id.is_some() && u.email.is_none());
        let group_ok = doc
            .spec
            .group
            .as_ref()
            .is_none_or(|g| g.id.is_some() && g.name.is_none());
        assert!(user_ok && group_ok, "{ids}");
    }
    assert_eq!(by_id.iter().map(name).collect::<Vec<_>>(), named);
    assert!(named.contains(&name(shared)));

    // Filters: one user (and then no group listing is read).
    sim.clear_journal();
    let (_, doc) = export_one(&url, &["--user", "ALICE@example.com"]);
    assert_eq!(
        doc.spec.user.as_ref().and_then(|u| u.email.as_deref()),
        Some("alice@example.com")
    );
    let group_listings = journaled(&sim, |p| {
        p.ends_with("/groups") && p.starts_with("/v2/policies/")
    });
    assert!(group_listings.is_empty(), "{group_listings:?}");
    // A group and a policy by ID, with a namespace and Orphan.
    let (yaml, doc) = export_one(
        &url,
        &[
            "--group",
            "ops",
            "--policy",
            BILLING_READ,
            "--namespace",
            "team-a",
            "--deletion-policy",
            "Orphan",
        ],
    );
    assert_eq!(
        doc.spec.group.as_ref().and_then(|g| g.name.as_deref()),
        Some("ops")
    );
    assert_eq!(doc.metadata.namespace.as_deref(), Some("team-a"));
    assert!(yaml.contains("deletionPolicy: Orphan"), "{yaml}");
    // A role by name: only its listing of policies is read, no policy listing.
    sim.clear_journal();
    let (_, doc) = export_one(&url, &["--role", "auditors"]);
    assert_eq!(
        doc.spec.role.as_ref().and_then(|r| r.name.as_deref()),
        Some("auditors")
    );
    let listings = journaled(&sim, |p| p.matches('/').count() == 4);
    assert_eq!(listings, [format!("/v2/roles/{AUDITORS}/policies")]);
    // Filters of different kinds must all match: carol has no dns-admin.
    let (yaml, stderr) = export_ok(&mut export_with(
        &url,
        Some(API_KEY),
        &["--policy", "dns-admin", "--user", "carol@example.com"],
    ));
    assert_eq!(yaml, "");
    assert!(stderr.contains("exported 0 PolicyAttachments"), "{stderr}");
    // A filter that names nothing is an error, not an empty export.
    let out = export_with(&url, Some(API_KEY), &["--policy", "dns-admn"])
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("--policy \"dns-admn\" names no Vultr IAM policy"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_exit_non_zero() {
    let sim = demo_sim().await;
    let url = sim.url();
    let failing = |key: Option<&str>, args: &[&str]| {
        let out = export_with(&url, key, args)
            .output()
            .expect("run the export");
        let (stdout, stderr) = texts(&out);
        assert!(!out.status.success(), "{args:?} succeeded: {stdout}");
        assert!(stdout.is_empty(), "{stdout}");
        stderr
    };
    let wrong_key = "vk-WRONG-00112233445566778899";
    let stderr = failing(Some(wrong_key), &[]);
    assert!(
        stderr.contains("rejected the API key (401 Unauthorized)"),
        "{stderr}"
    );
    assert!(stderr.contains("VULTR_API_KEY"), "{stderr}");
    assert!(!stderr.contains(wrong_key), "the key leaked: {stderr}");

    let stderr = failing(None, &[]);
    assert!(stderr.contains("VULTR_API_KEY is not set"), "{stderr}");
    let stderr = failing(Some(API_KEY), &["--vultr-api-key-file", "/nonexistent/key"]);
    assert!(stderr.contains("/nonexistent/key"), "{stderr}");

    // The connection flags are run's, with run's messages.
    let stderr = failing(Some(API_KEY), &["--vultr-ca-file", "/nonexistent/ca.crt"]);
    assert!(stderr.contains("cannot read the Vultr CA file"), "{stderr}");
    let out = Command::new(support::operator_binary())
        .args(["export", "--vultr-api-url", "http://vultr.invalid"])
        .env("VULTR_API_KEY", API_KEY)
        .output()
        .expect("run the export");
    assert!(!out.status.success());
    assert!(
        texts(&out).1.contains("--allow-insecure-http"),
        "{}",
        texts(&out).1
    );

    // 403 on a listing: the key lacks IAM permission.
    let fault = sim.add_fault(Fault::status(403).on(Some("GET"), Some("/v2/policies/")));
    let stderr = failing(Some(API_KEY), &[]);
    assert!(
        stderr.contains("403 Forbidden") && stderr.contains("IAM permissions"),
        "{stderr}"
    );
    sim.remove_fault(fault);

    // --unmanaged without a cluster says so, before asking Vultr anything. (A request of
    // the run above may still be journaled now, so requests are told apart by arrival.)
    let since = std::time::SystemTime::now();
    let stderr = failing(Some(API_KEY), &["--unmanaged"]);
    assert!(stderr.contains("--unmanaged needs the cluster"), "{stderr}");
    let asked: Vec<_> = sim
        .journal()
        .into_iter()
        .filter(|e| e.at >= since)
        .collect();
    assert!(asked.is_empty(), "{asked:?}");

    // An export only reads: a read-only key is enough.
    let (yaml, _) = export_ok(&mut export_with(&url, Some(READ_ONLY_KEY), &[]));
    assert_eq!(documents(&yaml).len(), 3, "{yaml}");
    assert!(sim.journal().iter().all(|e| e.method == "GET"));
    assert!(
        sim.journal()
            .iter()
            .all(|e| e.user_agent.ends_with("(export)")),
        "the export names itself in the User-Agent"
    );
}
