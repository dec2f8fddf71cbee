//! Records what the binary is made of: the dependency list as cargo auditable embeds it
//! (zlib-compressed JSON in the linker section `.dep-v0`, see `src/build_info.rs`), and
//! the commit, rustc and kube versions that `vultr-iam-operator version` prints.

#[path = "build/info.rs"]
mod info;

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for file in ["build/info.rs", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={file}");
    }

    // The commit (VIO_GIT_COMMIT overrides it, e.g. for a build from a source archive).
    println!("cargo:rerun-if-env-changed=VIO_GIT_COMMIT");
    let commit = env::var("VIO_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| info::git_commit(&dir));
    watch_git(&dir);
    println!("cargo:rustc-env=VIO_GIT_COMMIT={commit}");

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc_version = run(Command::new(rustc).arg("--version"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=VIO_RUSTC_VERSION={rustc_version}");

    // The dependency tree of this package for this target, as cargo resolves it for
    // this build (features included, dev-dependencies excluded).
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = env::var("TARGET").expect("TARGET");
    let tree = |edges: &str| {
        let text = run(Command::new(&cargo)
            .current_dir(&dir)
            .args(["tree", "--frozen", "--color", "never", "-p"])
            .arg(env::var("CARGO_PKG_NAME").expect("CARGO_PKG_NAME"))
            .args([
                "--target", &target, "--prefix", "depth", "-f", "{p}", "-e", edges,
            ]));
        text.unwrap_or_else(|| panic!("cargo tree -e {edges} failed"))
    };
    let full = tree("normal,build");
    let runtime = tree("normal,no-proc-macro");
    let json = info::dep_list_json(&full, &runtime);
    std::fs::write(out.join("dep-v0"), info::zlib_stored(json.as_bytes())).expect("write dep-v0");
    let version_of = |name: &str| {
        runtime
            .lines()
            .filter_map(info::tree_line)
            .find(|(_, p, _)| p.name == name)
            .map(|(_, p, _)| p.version)
            .unwrap_or_else(|| "unknown".to_owned())
    };
    println!("cargo:rustc-env=VIO_KUBE_VERSION={}", version_of("kube"));
    println!(
        "cargo:rustc-env=VIO_K8S_OPENAPI_VERSION={}",
        version_of("k8s-openapi")
    );
}

/// Re-run when HEAD moves: HEAD itself, the branch it names, packed refs.
fn watch_git(dir: &Path) {
    let git = |args: &[&str]| run(Command::new("git").arg("-C").arg(dir).args(args));
    let mut paths = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(branch.trim().to_owned());
    }
    for path in paths {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
            let file = dir.join(file.trim());
            if file.exists() {
                println!("cargo:rerun-if-changed={}", file.display());
            }
        }
    }
}

fn run(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
