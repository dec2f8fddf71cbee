//! The API key file is followed while the operator runs: a rotated Secret takes effect
//! without a restart, a broken update keeps the key in use, and no key is ever logged.

use vio_harness::{e2e, support};

use std::path::PathBuf;

use e2e::*;
use support::wait_for;
use vultr_sim::ApiKeys;

/// The key the simulator accepts after the rotation.
const ROTATED_KEY: &str = "vk-ROTATED-7c6b5a4938271605f4e3d2c1b0a99887";
/// What the operator's environment holds: refused by the simulator, so only the file
/// can make anything Ready.
const ENV_KEY: &str = "vk-UNUSED-ENV-11223344556677889900";

/// A directory laid out like a Secret volume, updated the way the kubelet does it: the
/// content goes into a new directory, then the `..data` symlink is renamed onto it in one
/// step; `api-key` itself is a symlink through `..data`.
struct SecretVolume {
    dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    fn new(key: &str) -> SecretVolume {
        let dir = support::kept_dir("vio-secret-");
        let mut volume = SecretVolume { dir, generation: 0 };
        volume.write(key);
        std::os::unix::fs::symlink("..data/api-key", volume.path()).expect("api-key symlink");
        volume
    }

    fn path(&self) -> PathBuf {
        self.dir.join("api-key")
    }

    fn write(&mut self, content: &str) {
        self.generation += 1;
        let name = format!("..generation_{}", self.generation);
        let data = self.dir.join(&name);
        std::fs::create_dir(&data).expect("new data directory");
        std::fs::write(data.join("api-key"), content).expect("write the key");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).expect("..data_tmp symlink");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        if self.generation > 1 {
            let old = self
                .dir
                .join(format!("..generation_{}", self.generation - 1));
            std::fs::remove_dir_all(old).expect("remove the old generation");
        }
    }
}

async fn wait_log(operator: &Operator, needle: &str) {
    wait_for(&format!("{needle:?} in the operator log"), WAIT, || async {
        operator.logs().contains(needle).then_some(())
    })
    .await;
}

fn assert_no_key(text: &str, what: &str) {
    for key in [API_KEY, ROTATED_KEY, ENV_KEY] {
        assert!(!text.contains(key), "a key appears in {what}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_file_is_used_without_a_restart() {
    let mut volume = SecretVolume::new(&format!("{API_KEY}\n"));
    let key_file = volume.path();
    let key_file = key_file.to_str().expect("UTF-8 temp path");
    let mut env = Env::start_with(
        "pa-key-rotation",
        ENV_KEY,
        &[
            "--vultr-api-key-file",
            key_file,
            "--vultr-api-key-reload-interval",
            "300ms",
        ],
    )
    .await;

    env.attach("before", by_ids(DNS_ADMIN, ALICE)).await;

    // A broken update (an empty key) is refused with a warning; the key in use stays.
    volume.write("");
    wait_log(
        &env.operator,
        "holds no usable key: keeping the previous key",
    )
    .await;
    env.attach("during-broken-update", by_ids(BILLING_READ, ALICE))
        .await;

    // The rotation: Vultr accepts only the new key from now on, then the Secret changes.
    env.sim
        .set_api_keys(ApiKeys {
            api_keys: vec![ROTATED_KEY.to_owned()],
            read_only_keys: vec![],
        })
        .expect("valid keys");
    volume.write(&format!("{ROTATED_KEY}\n"));
    wait_log(&env.operator, "later requests use the new key").await;
    env.attach("after", by_ids(COMPUTE_ADMIN, ALICE)).await;
    assert!(env.sim.is_user_attached(COMPUTE_ADMIN, ALICE));
    assert!(env.operator.is_running(), "the operator restarted");

    // Deleting works with the new key too (the revocation is what matters most).
    env.delete_and_wait_gone("before").await;
    assert!(!env.sim.is_user_attached(DNS_ADMIN, ALICE));

    let logs = env.operator.logs();
    assert!(logs.contains(key_file), "the log names the file:\n{logs}");
    assert_no_key(&logs, "the operator log");
    for name in ["during-broken-update", "after"] {
        for (_, reason, note) in env.events(name).await {
            assert_no_key(&format!("{reason} {note}"), "an Event");
        }
        let obj = env.api.get(name).await.expect("get");
        assert_no_key(
            &serde_json::to_string(&obj.status).expect("status JSON"),
            "a status",
        );
    }
}

/// Reconcile failures with this reason, as the operator's /metrics counts them.
/// Vultr refuses the key in use (401 on a listing), then the key file gets the new key:
/// the next reconciles ask Vultr again, with the new key, and none is answered from a
/// failure of the old one: every failure came with a 401 and the object ends Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_not_answered_by_failures_of_the_old_one() {
    let mut volume = SecretVolume::new(&format!("{API_KEY}\n"));
    let key_file = volume.path();
    let key_file = key_file.to_str().expect("UTF-8 temp path");
    let env = Env::start_with(
        "pa-key-failures",
        ENV_KEY,
        &[
            "--vultr-api-key-file",
            key_file,
            "--vultr-api-key-reload-interval",
            "300ms",
            // Listings kept for a minute; no verification pass in between.
            "--resync-interval",
            "10m",
        ],
    )
    .await;
    env.attach("before", by_ids(DNS_ADMIN, ALICE)).await;

    // Vultr accepts only the new key from now on: the next listing fails with 401 ...
    env.sim
        .set_api_keys(ApiKeys {
            api_keys: vec![ROTATED_KEY.to_owned()],
            read_only_keys: vec![],
        })
        .expect("valid keys");
    let listing = format!("/v2/policies/{BILLING_READ}/users");
    let refusals = || {
        env.requests("GET", &listing)
            .iter()
            .filter(|e| e.path == listing && e.status == 401)
            .count()
    };
    env.create("after", by_ids(BILLING_READ, ALICE)).await;
    wait_for("a refused listing", WAIT, || async {
        (refusals() > 0).then_some(())
    })
    .await;
    // ... until the Secret changes.
    volume.write(&format!("{ROTATED_KEY}\n"));
    wait_log(&env.operator, "later requests use the new key").await;
    let unanswered = env
        .failure_without_a_request("after", "Unauthorized", refusals)
        .await;
    assert_eq!(
        unanswered, None,
        "(failures, 401s): a failure of the old key was served from a cache"
    );
    assert!(env.sim.is_user_attached(BILLING_READ, ALICE));
}
