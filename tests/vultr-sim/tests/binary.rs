//! The `vultr-sim` binary: flags, the printed address, graceful exit.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_vultr-sim");

/// Starts the binary and returns it with the URL from its first stdout line.
async fn start(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        // The caller's environment must not leak keys into the test.
        .env_remove("VULTR_SIM_API_KEYS")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("prints its address in time")
    .expect("reads stdout");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

/// A client; the workspace builds reqwest without a TLS crypto provider: install ring.
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn status(url: &str, method: reqwest::Method, key: &str) -> u16 {
    http()
        .request(method, url)
        .bearer_auth(key)
        .send()
        .await
        .expect("request succeeds")
        .status()
        .as_u16()
}

#[tokio::test]
async fn serves_the_demo_and_exits_on_sigterm() {
    let (mut child, url) = start(
        &[
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "bin-key",
            "--rate-limit",
            "0",
        ],
        &[],
    )
    .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let resp = http()
        .get(format!("{url}/v2/policies"))
        .bearer_auth("bin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["policies"][0]["name"], "dns-admin");
    assert_eq!(body["meta"]["total"], 3);
    assert_eq!(
        status(
            &format!("{url}/v2/policies"),
            reqwest::Method::GET,
            "test-key"
        )
        .await,
        401,
        "only the configured key"
    );

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "graceful exit: {exit:?}");
}

#[tokio::test]
async fn keys_from_env_read_only_keys_and_rate_limit() {
    let (mut child, url) = start(
        &[
            "--read-only-key",
            "ro",
            "--rate-limit",
            "2",
            "--burst",
            "2",
            "--listing-shape",
            "relationships",
        ],
        &[("VULTR_SIM_API_KEYS", "k1,k2")],
    )
    .await;
    let users = format!("{url}/v2/users");
    assert_eq!(status(&users, reqwest::Method::GET, "k1").await, 200);
    assert_eq!(status(&users, reqwest::Method::GET, "k2").await, 200);
    // The bucket (2) is empty now.
    assert_eq!(status(&users, reqwest::Method::GET, "ro").await, 429);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let attach = format!("{url}/v2/policies/p/users/u");
    assert_eq!(status(&attach, reqwest::Method::POST, "ro").await, 403);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn bad_seed_file_fails_to_start() {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(BIN)
            .args(["--seed", "/nonexistent/seed.yaml"])
            .output(),
    )
    .await
    .expect("exits")
    .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing listening");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/seed.yaml"));
}

async fn get_json(url: &str, key: &str) -> serde_json::Value {
    http()
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .expect("request succeeds")
        .json()
        .await
        .expect("JSON body")
}

#[tokio::test]
async fn more_organisations_from_files() {
    let dir = std::env::temp_dir().join(format!("vultr-sim-bin-orgs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let b = dir.join("b.yaml");
    std::fs::write(
        &b,
        "name: team-b\nemail: owner@b.example\napi_keys: [key-b]\nread_only_keys: [ro-b]\n\
         seed:\n  policies:\n    - name: dns-admin\n  users:\n    - email: dana@b.example\n  \
         user_attachments:\n    - {policy: dns-admin, user: dana@b.example}\n",
    )
    .unwrap();
    let c = dir.join("c.json");
    std::fs::write(&c, r#"{"name": "team-c", "api_keys": ["key-c"]}"#).unwrap();
    let (mut child, url) = start(
        &[
            "--demo",
            "--org-name",
            "Acme",
            "--org-email",
            "ops@acme.example",
            "--org",
            b.to_str().unwrap(),
            "--org",
            c.to_str().unwrap(),
            "--rate-limit",
            "0",
        ],
        &[],
    )
    .await;
    let account = format!("{url}/v2/account");
    let acme = get_json(&account, "test-key").await;
    assert_eq!(acme["account"]["name"], "Acme");
    assert_eq!(acme["account"]["email"], "ops@acme.example");
    assert_eq!(
        get_json(&account, "ro-b").await["account"]["name"],
        "team-b"
    );
    assert_eq!(
        get_json(&account, "key-c").await["account"]["name"],
        "team-c"
    );
    let policies = get_json(&format!("{url}/v2/policies"), "key-b").await;
    assert_eq!(policies["meta"]["total"], 1, "{policies}");
    let c_policies = get_json(&format!("{url}/v2/policies"), "key-c").await;
    assert_eq!(c_policies["meta"]["total"], 0, "{c_policies}");
    child.kill().await.unwrap();

    // A key of two organisations is refused at start.
    let clash = dir.join("clash.yaml");
    std::fs::write(&clash, "name: clash\napi_keys: [test-key]\n").unwrap();
    let out = Command::new(BIN)
        .args(["--org", clash.to_str().unwrap()])
        .env_remove("VULTR_SIM_API_KEYS")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another organisation"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
