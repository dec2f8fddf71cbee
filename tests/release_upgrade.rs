//! An upgrade from the previous release to this one, and the downgrade back, on the real
//! control plane: the previous release's chart installed with Helm and its binary run as
//! the chart's ServiceAccount with the chart's arguments (there is no kubelet here), then
//! `helm upgrade` to this chart and this binary, then `helm rollback` and the previous
//! binary again.
//!
//! The previous release is built once from its commit and cached by
//! `tests/release/previous.sh` (`make previous-release`, part of `make test`).
//!
//! Attachments of every kind live through both: by email, by group name, by role name,
//! by IDs, a paused one, one deleted whose DELETE keeps failing (Terminating), one with
//! `deletionPolicy: Orphan`. Each grant is kept or revoked as declared, and nothing
//! unchanged costs a Vultr write: after each switch the only writes in the simulator's
//! journal are the failing DELETE's retries until the test lets it through, and the
//! revocations of the objects the test deletes.

use vio_harness::{e2e, support};

use std::path::{Path, PathBuf};

use e2e::*;
use futures::future::join_all;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{ControlPlane, TestNamespace, wait_for};
use vultr_iam_operator::crd::{PAUSED_ANNOTATION, PolicyAttachment, READY, SYNCED};
use vultr_sim::{Fault, Seed, Sim, SimConfig};

const CHART: &str = "charts/vultr-iam-operator";
use e2e::{CHART_NAMESPACE as NAMESPACE, CHART_RELEASE as RELEASE};
const CRD_NAME: &str = "policyattachments.iam.vultr-operator.io";
const CRD_FILE: &str = "crds/policyattachments.iam.vultr-operator.io.yaml";
const POD_NAME: &str = "vultr-iam-operator-upgrade-test";
const BINARY: &str = env!("CARGO_BIN_EXE_vultr-iam-operator");

/// The previous release's cache directory (its binary and chart), built by
/// `tests/release/previous.sh`.
fn previous_release() -> PathBuf {
    let script = std::fs::read_to_string(repo_path("tests/release/previous.sh"))
        .expect("read tests/release/previous.sh");
    let commit = script
        .lines()
        .find_map(|l| l.strip_prefix("PREVIOUS_COMMIT=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("PREVIOUS_COMMIT in previous.sh");
    let cache = std::env::var_os("VIO_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("vultr-iam-operator"))
        })
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/vultr-iam-operator")
        });
    let dir = cache.join("previous").join(commit);
    assert!(
        dir.join("vultr-iam-operator").is_file() && dir.join(CHART).join("Chart.yaml").is_file(),
        "the previous release ({commit}) is not built in {}: run `make previous-release` \
         (tests/release/previous.sh; `make test` does) before this test",
        dir.display()
    );
    dir
}

/// Removes the release, restores the committed CRD and strips the test namespace's
/// finalizers (nobody honours them once the test's operator is gone), also on failure.
struct Cleanup<'a> {
    cp: &'a ControlPlane,
    ns: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let out = output(
            self.cp
                .kubectl()
                .args(["get", "pa", "-n", &self.ns, "-o", "name"]),
        );
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = output(self.cp.kubectl().args([
                "patch",
                name,
                "-n",
                &self.ns,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]));
        }
        let _ = output(
            self.cp
                .helm()
                .args(["uninstall", RELEASE, "-n", NAMESPACE, "--wait"]),
        );
        e2e::restore_crd_and_drop(self.cp, &repo_path(CRD_FILE), NAMESPACE);
    }
}

/// The release namespace, empty (a failed earlier run may have left a release), and the
/// CRD handed to Helm if kubectl installed it (another test binary).
async fn prepare(cp: &ControlPlane, client: &kube::Client) {
    e2e::empty_release_namespace(cp, client, RELEASE, NAMESPACE).await;
    e2e::adopt_crd(cp, CRD_NAME, RELEASE, NAMESPACE);
}

/// `spec.versions` of the live CRD.
fn live_crd_versions(cp: &ControlPlane) -> Value {
    let live: Value = serde_json::from_str(&run_ok(
        cp.kubectl().args(["get", "crd", CRD_NAME, "-o", "json"]),
    ))
    .expect("CRD JSON");
    live["spec"]["versions"].clone()
}

/// `spec.versions` of a CRD file.
fn crd_versions(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let crd: Value =
        serde_json::to_value(yaml_serde::from_str::<yaml_serde::Value>(&text).expect("CRD YAML"))
            .expect("CRD as JSON");
    crd["spec"]["versions"].clone()
}

/// `helm install` or `helm upgrade` of `chart` with the test's values.
fn helm_apply(cp: &ControlPlane, verb: &str, chart: &Path, watched: &str) {
    run_ok(
        cp.helm()
            .args([verb, RELEASE])
            .arg(chart)
            .args(["-n", NAMESPACE, "--set", "apiKey.create=true"])
            .args(["--set", &format!("apiKey.value={API_KEY}")])
            .args(["--set", &format!("watchNamespaces={{{watched}}}")]),
    );
}

/// The container args of the installed Deployment.
fn chart_args(cp: &ControlPlane) -> Vec<String> {
    let deployment = e2e::installed_deployment(cp, RELEASE, NAMESPACE);
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("a string").to_owned())
        .collect()
}

/// `binary` as the installed chart runs it: its args (the key file, Vultr URL, metrics
/// address and timings replaced for the test, later flags win), the ServiceAccount's
/// identity, the downward API's variables.
fn start(cp: &ControlPlane, binary: &Path, sim: &Sim) -> Operator {
    let dir = tempfile::Builder::new()
        .prefix("vio-upgrade-operator-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, API_KEY).expect("write the key file");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut args = chart_args(cp);
    args.extend([
        format!("--vultr-api-key-file={}", key_file.display()),
        format!("--vultr-api-url={}", sim.url()),
        format!("--metrics-bind-address={metrics_addr}"),
        "--resync-interval=3s".to_owned(),
        "--backoff-base=200ms".to_owned(),
        "--backoff-max=2s".to_owned(),
        "--vultr-timeout=2s".to_owned(),
        "--attach-visibility-timeout=5s".to_owned(),
    ]);
    e2e::as_chart_service_account(cp, binary, &args, POD_NAME, NAMESPACE, &dir, metrics_addr)
}

/// The grants the test declares, and how to tell whether each is live in Vultr.
#[derive(Clone, Copy, Debug)]
enum Subject {
    User(&'static str),
    Group(&'static str),
    Role(&'static str),
}

struct Grant {
    name: &'static str,
    policy: &'static str,
    subject: Subject,
    spec: Value,
}

impl Grant {
    fn live(&self, sim: &Sim) -> bool {
        match self.subject {
            Subject::User(u) => sim.is_user_attached(self.policy, u),
            Subject::Group(g) => sim.is_group_attached(self.policy, g),
            Subject::Role(r) => sim.is_role_attached(r, self.policy),
        }
    }

    /// The path of its POST and DELETE.
    fn path(&self) -> String {
        match self.subject {
            Subject::User(u) => format!("/v2/policies/{}/users/{u}", self.policy),
            Subject::Group(g) => format!("/v2/policies/{}/groups/{g}", self.policy),
            Subject::Role(r) => format!("/v2/roles/{r}/policies/{}", self.policy),
        }
    }
}

fn grants() -> Vec<Grant> {
    use Subject::{Group, Role, User};
    // Declared by names: the policy's and the subject's (a user's email).
    let names = |name, policy, policy_name, subject: Subject, subject_name| {
        let (kind, field) = match subject {
            User(_) => ("user", "email"),
            Group(_) => ("group", "name"),
            Role(_) => ("role", "name"),
        };
        let spec = json!({"policy": {"name": policy_name}, kind: {field: subject_name}});
        Grant {
            name,
            policy,
            subject,
            spec,
        }
    };
    // Declared by IDs.
    let ids = |name, policy, subject: Subject| {
        let (kind, id) = match subject {
            User(id) => ("user", id),
            Group(id) => ("group", id),
            Role(id) => ("role", id),
        };
        let spec = json!({"policy": {"id": policy}, kind: {"id": id}});
        Grant {
            name,
            policy,
            subject,
            spec,
        }
    };
    let mut orphan = ids("orphan", DNS_ADMIN, User(BOB));
    orphan.spec["deletionPolicy"] = json!("Orphan");
    vec![
        names(
            "user-by-email",
            DNS_ADMIN,
            "dns-admin",
            User(ALICE),
            "alice@example.com",
        ),
        names(
            "group-by-name",
            COMPUTE_ADMIN,
            "compute-admin",
            Group(OPS),
            "ops",
        ),
        names(
            "role-by-name",
            DNS_ADMIN,
            "dns-admin",
            Role(AUDITORS),
            "auditors",
        ),
        ids("user-by-ids", BILLING_READ, User(BOB)),
        ids("paused", BILLING_READ, User(ALICE)),
        ids("terminating", COMPUTE_ADMIN, User(BOB)),
        orphan,
        ids("deleted-after-upgrade", BILLING_READ, Group(DEVELOPERS)),
        // Created by this release, read by the previous one after the downgrade.
        names(
            "created-by-current",
            COMPUTE_ADMIN,
            "compute-admin",
            User(ALICE),
            "alice@example.com",
        ),
        ids("terminating-at-downgrade", BILLING_READ, Role(ON_CALL)),
    ]
}

/// SIGTERM: the operator must stop cleanly, and the chart's RBAC must never have denied
/// it anything.
fn stop(mut operator: Operator, which: &str) {
    let logs = operator.logs();
    assert!(
        operator.terminate(),
        "{which} did not stop cleanly:\n{logs}"
    );
    let denied: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("is forbidden: User"))
        .collect();
    assert!(
        denied.is_empty(),
        "the chart's RBAC denied {which}: {denied:#?}"
    );
}

struct Test<'a> {
    api: Api<PolicyAttachment>,
    sim: &'a Sim,
    grants: Vec<Grant>,
}

impl Test<'_> {
    fn grant(&self, name: &str) -> &Grant {
        self.grants
            .iter()
            .find(|g| g.name == name)
            .expect("a grant of the test")
    }

    async fn create(&self, name: &str) {
        let obj = policy_attachment(name, self.grant(name).spec.clone());
        self.api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }

    async fn delete(&self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }

    /// Starts `binary` after a switch made at journal entry `mark`: everything kept as
    /// declared (see [`Test::kept_as_declared`]), then the failing revocation (`fault`)
    /// let through: the object goes, and its grant with it.
    async fn after_switch(
        &self,
        cp: &ControlPlane,
        (binary, mark, fault): (&Path, usize, u64),
        unchanged: &[&str],
        held: (&str, &str),
        when: &str,
    ) -> Operator {
        let operator = start(cp, binary, self.sim);
        self.kept_as_declared(&operator, mark, unchanged, held, when)
            .await;
        self.sim.remove_fault(fault);
        self.gone_and_revoked(held.1).await;
        operator
    }

    /// After a switch of operator at journal entry `mark`: the `unchanged` objects Ready
    /// and their grants live after two verifications; `paused` still paused with its grant;
    /// `terminating` still there with its grant; no Vultr write but its failing DELETE.
    async fn kept_as_declared(
        &self,
        op: &Operator,
        mark: usize,
        unchanged: &[&str],
        (paused, terminating): (&str, &str),
        when: &str,
    ) {
        self.wait_two_verifications(mark, unchanged).await;
        self.wait_condition(op, paused, SYNCED, "False", "Paused")
            .await;
        self.assert_ready_and_live(unchanged).await;
        assert!(
            self.grant(paused).live(self.sim),
            "{paused} lost its grant {when}"
        );
        assert!(
            self.grant(terminating).live(self.sim),
            "the failing DELETE revoked the grant {when}"
        );
        assert!(
            self.api.get_opt(terminating).await.expect("get").is_some(),
            "{terminating} went without its revocation {when}"
        );
        self.assert_no_write_but_the_failing_delete(mark, terminating, when);
    }

    /// Creates `names`, then waits until each is Ready.
    async fn create_attached(&self, op: &Operator, names: &[&str]) {
        join_all(names.iter().map(|name| self.create(name))).await;
        let ready = |name| self.wait_condition(op, name, READY, "True", "Attached");
        join_all(names.iter().map(|name| ready(name))).await;
    }

    /// Deletes `names`, then waits until each is gone with its grant.
    async fn delete_revoked(&self, names: &[&str]) {
        join_all(names.iter().map(|name| self.delete(name))).await;
        join_all(names.iter().map(|name| self.gone_and_revoked(name))).await;
    }

    /// Waits until `name` is gone, and checks that its grant went with it.
    async fn gone_and_revoked(&self, name: &str) {
        self.wait_gone(name).await;
        assert!(
            !self.grant(name).live(self.sim),
            "{name} went, its grant stayed"
        );
    }

    /// Pauses `name` and waits until `op` says so.
    async fn pause(&self, op: &Operator, name: &str) {
        self.annotate_paused(name, true).await;
        self.wait_condition(op, name, SYNCED, "False", "Paused")
            .await;
    }

    /// Deletes `name` with every DELETE of its grant answered 503, and waits for the
    /// first; returns the fault, to lift it later.
    async fn delete_with_a_failing_revocation(&self, name: &str) -> u64 {
        let terminating = self.grant(name).path();
        let fault = self.sim.add_fault(
            Fault::status(503)
                .on(Some("DELETE"), Some(&terminating))
                .times(100_000),
        );
        let before = self.sim.journal().len();
        self.delete(name).await;
        wait_for("the failing DELETE", WAIT, || async {
            self.writes_since(before)
                .iter()
                .any(|(m, p, s)| m == "DELETE" && *p == terminating && *s == 503)
                .then_some(())
        })
        .await;
        fault
    }

    async fn annotate_paused(&self, name: &str, paused: bool) {
        let value = if paused { json!("true") } else { Value::Null };
        let patch = json!({"metadata": {"annotations": {PAUSED_ANNOTATION: value}}});
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("annotate {name}: {e}"));
    }

    async fn wait_condition(
        &self,
        op: &Operator,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) {
        wait_for(
            &format!("{name} {type_}={status} {reason}"),
            WAIT,
            || async {
                let obj = self.api.get_opt(name).await.ok().flatten();
                let ok = obj
                    .as_ref()
                    .is_some_and(|obj| e2e::has_condition(obj, type_, status, reason));
                if !ok && std::env::var_os("VIO_UPGRADE_DEBUG").is_some() {
                    eprintln!("{}", op.logs());
                }
                ok.then_some(())
            },
        )
        .await
    }

    async fn wait_gone(&self, name: &str) {
        e2e::wait_gone(&self.api, name).await
    }

    /// The POSTs and DELETEs in the journal from entry `since` on: (method, path, status).
    fn writes_since(&self, since: usize) -> Vec<(String, String, u16)> {
        self.sim
            .journal()
            .into_iter()
            .skip(since)
            .filter(|e| e.method == "POST" || e.method == "DELETE")
            .map(|e| (e.method, e.path, e.status))
            .collect()
    }

    /// Waits until the listings of every live grant's policy (or role) were fetched
    /// twice after entry `since`: two verification passes of the operator started then.
    async fn wait_two_verifications(&self, since: usize, live: &[&str]) {
        let listings: Vec<String> = live
            .iter()
            .map(|name| {
                let g = self.grant(name);
                match g.subject {
                    Subject::User(_) => format!("/v2/policies/{}/users", g.policy),
                    Subject::Group(_) => format!("/v2/policies/{}/groups", g.policy),
                    Subject::Role(r) => format!("/v2/roles/{r}/policies"),
                }
            })
            .collect();
        wait_for("two verification passes", WAIT, || async {
            let journal = self.sim.journal();
            listings
                .iter()
                .all(|path| {
                    journal
                        .iter()
                        .skip(since)
                        .filter(|e| e.method == "GET" && e.path == *path)
                        .count()
                        >= 2
                })
                .then_some(())
        })
        .await
    }

    /// Every grant named is live in Vultr and its object Ready.
    async fn assert_ready_and_live(&self, names: &[&str]) {
        for name in names {
            assert!(
                self.grant(name).live(self.sim),
                "the grant of {name} is gone"
            );
            let obj = self
                .api
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("get {name}: {e}"));
            let ready = obj
                .status
                .as_ref()
                .and_then(|s| s.condition(READY))
                .expect("Ready");
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("True", "Attached"),
                "{name}"
            );
        }
    }

    /// Only the failing DELETE of `failing` was sent since `since`.
    fn assert_no_write_but_the_failing_delete(&self, since: usize, failing: &str, phase: &str) {
        let path = self.grant(failing).path();
        let writes = self.writes_since(since);
        let others: Vec<_> = writes
            .iter()
            .filter(|(m, p, s)| !(m == "DELETE" && *p == path && *s == 503))
            .collect();
        assert!(
            others.is_empty(),
            "{phase}: Vultr writes for unchanged grants: {others:?}"
        );
        assert!(
            !writes.is_empty(),
            "{phase}: the Terminating {failing} was not retried (no DELETE at all)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_and_a_downgrade_keep_or_revoke_every_grant_as_declared() {
    let previous = previous_release();
    let previous_binary = previous.join("vultr-iam-operator");
    let previous_chart = previous.join(CHART);
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TestNamespace::new(&client, "upgrade").await;
    let _cleanup = Cleanup {
        cp,
        ns: ns.name.clone(),
    };
    prepare(cp, &client).await;
    let sim = Sim::start(SimConfig {
        api_keys: vec![API_KEY.to_owned()],
        rate_limit: None,
        seed: Seed::demo(),
        ..SimConfig::default()
    })
    .await
    .expect("start the simulator");
    let t = Test {
        api: Api::namespaced(client.clone(), &ns.name),
        sim: &sim,
        grants: grants(),
    };

    // ---- the previous release -----------------------------------------------------------
    helm_apply(cp, "install", &previous_chart, &ns.name);
    let operator = start(cp, &previous_binary, &sim);
    let first = [
        "user-by-email",
        "group-by-name",
        "role-by-name",
        "user-by-ids",
        "paused",
        "terminating",
        "orphan",
        "deleted-after-upgrade",
    ];
    t.create_attached(&operator, &first).await;
    t.pause(&operator, "paused").await;
    let fault = t.delete_with_a_failing_revocation("terminating").await;
    stop(operator, "the previous release's operator");

    // ---- upgrade: this chart, this binary ---------------------------------------------
    let mark = sim.journal().len();
    helm_apply(cp, "upgrade", &repo_path(CHART), &ns.name);
    assert_eq!(
        live_crd_versions(cp),
        crd_versions(&repo_path(CRD_FILE)),
        "helm upgrade did not update the CRD"
    );
    let unchanged = [
        "user-by-email",
        "group-by-name",
        "role-by-name",
        "user-by-ids",
        "orphan",
        "deleted-after-upgrade",
    ];
    let held = ("paused", "terminating");
    let switch = (Path::new(BINARY), mark, fault);
    let operator = t
        .after_switch(cp, switch, &unchanged, held, "after the upgrade")
        .await;

    // As declared: a deletion revokes, an Orphan deletion keeps the grant, a resumed
    // object (Synced back to True) needs no write.
    t.delete("deleted-after-upgrade").await;
    t.gone_and_revoked("deleted-after-upgrade").await;
    t.delete("orphan").await;
    t.wait_gone("orphan").await;
    assert!(t.grant("orphan").live(&sim), "the Orphan grant was revoked");
    let before_resume = sim.journal().len();
    t.annotate_paused("paused", false).await;
    t.wait_condition(&operator, "paused", SYNCED, "True", "ReconcileSuccess")
        .await;
    t.wait_condition(&operator, "paused", READY, "True", "Attached")
        .await;
    let writes = t.writes_since(before_resume);
    assert!(
        writes.is_empty(),
        "resuming a live grant wrote to Vultr: {writes:?}"
    );
    let revoked: Vec<String> = t
        .writes_since(mark)
        .into_iter()
        .filter(|(m, _, s)| m == "DELETE" && *s == 204)
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(
        revoked,
        [
            t.grant("terminating").path(),
            t.grant("deleted-after-upgrade").path()
        ],
        "revocations after the upgrade"
    );

    // Objects this release wrote: a new one, and one deleted whose DELETE fails.
    t.create("created-by-current").await;
    t.create("terminating-at-downgrade").await;
    t.wait_condition(&operator, "created-by-current", READY, "True", "Attached")
        .await;
    t.wait_condition(
        &operator,
        "terminating-at-downgrade",
        READY,
        "True",
        "Attached",
    )
    .await;
    t.pause(&operator, "user-by-ids").await;
    let fault = t
        .delete_with_a_failing_revocation("terminating-at-downgrade")
        .await;
    stop(operator, "this release's operator");

    // ---- downgrade: helm rollback to the previous chart, the previous binary ----------
    let mark = sim.journal().len();
    run_ok(cp.helm().args(["rollback", RELEASE, "1", "-n", NAMESPACE]));
    assert_eq!(
        live_crd_versions(cp),
        crd_versions(
            &previous_chart.join("files/crds/policyattachments.iam.vultr-operator.io.yaml")
        ),
        "helm rollback did not restore the previous release's CRD"
    );
    let unchanged = [
        "user-by-email",
        "group-by-name",
        "role-by-name",
        "paused",
        "created-by-current",
    ];
    let held = ("user-by-ids", "terminating-at-downgrade");
    let switch = (previous_binary.as_path(), mark, fault);
    let operator = t
        .after_switch(cp, switch, &unchanged, held, "after the downgrade")
        .await;

    // The previous release revokes a grant this one recorded.
    t.delete("created-by-current").await;
    t.gone_and_revoked("created-by-current").await;
    t.annotate_paused("user-by-ids", false).await;
    let rest = [
        "user-by-email",
        "group-by-name",
        "role-by-name",
        "user-by-ids",
        "paused",
    ];
    t.delete_revoked(&rest).await;
    stop(
        operator,
        "the previous release's operator after the downgrade",
    );
}
