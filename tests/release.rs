//! `make release` (`deploy/release/release.sh`): two runs on one commit give the same
//! bytes; the chart's version and appVersion are the crate's; the image digest pinned in
//! the packaged chart and in the plain manifests is the image archive's; the SBOM lists
//! exactly the crates compiled into the binary in the image; the binary carries its
//! dependency list (`.dep-v0`) and prints its version.
//!
//! The pipeline runs on this test build's binary (`--binary`): `make release` runs the
//! same script on a release build, which would add ~10 minutes to `make test`.
//!
//! "Compiled into the binary" means: the crates whose code the linker puts in the
//! executable, which are the normal (not dev-, not build-) dependencies of the operator
//! for this target, minus proc macros (and what only they use): those run inside the
//! compiler and leave no code behind. Build scripts and proc macros are recorded in
//! `.dep-v0` with kind "build" and are not in the SBOM's component list. The test checks
//! this against two sources that do not come from the SBOM's own generator: the
//! binary's symbols (every crate of Cargo.lock that has code in the executable must be
//! listed) and `cargo metadata` (nothing listed may be a dev-dependency, a build
//! dependency or a proc macro, and every listed version and checksum is Cargo.lock's).

use vio_harness::e2e;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use e2e::{repo_path, run_ok};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_vultr-iam-operator");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The release pipeline run twice into two directories (once per test binary run).
fn releases() -> &'static (PathBuf, PathBuf) {
    static RELEASES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    RELEASES.get_or_init(|| {
        // In cargo's directory for test files (target/tmp): each run replaces the last.
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("release");
        let run = |name: &str| {
            let out = root.join(name);
            run_ok(
                Command::new(repo_path("deploy/release/release.sh"))
                    .arg("--binary")
                    .arg(BINARY)
                    .arg("--out")
                    .arg(&out),
            );
            out
        };
        (run("a"), run("b"))
    })
}

fn artifact(dir: &Path, suffix: &str) -> PathBuf {
    dir.join(format!("vultr-iam-operator-{VERSION}{suffix}"))
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read the release directory")
        .map(|e| {
            let e = e.expect("dir entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read an artifact"),
            )
        })
        .collect()
}

#[test]
fn two_releases_of_one_commit_are_identical() {
    let (a, b) = releases();
    let (a, b) = (files(a), files(b));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let expected: BTreeSet<String> = [
        "-image.tar".to_owned(),
        "-oci.tar".to_owned(),
        ".tgz".to_owned(),
        ".yaml".to_owned(),
        ".cdx.json".to_owned(),
        format!("-linux-{arch}"),
    ]
    .iter()
    .map(|s| format!("vultr-iam-operator-{VERSION}{s}"))
    .chain(["SHA256SUMS".to_owned()])
    .collect();
    assert_eq!(a.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let differ: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(
        differ.is_empty(),
        "these artifacts differ between two runs: {differ:?}"
    );
    // SHA256SUMS covers every other file and verifies.
    let sums = String::from_utf8(a["SHA256SUMS"].clone()).expect("UTF-8");
    let listed: BTreeSet<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).expect("sum and name"))
        .collect();
    let others: BTreeSet<&str> = expected
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "SHA256SUMS")
        .collect();
    assert_eq!(listed, others);
    run_ok(
        Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(&releases().0),
    );
}

/// The image digest as crane computes it from the docker-archive, and as the OCI
/// archive's index names it.
fn image_digest(dir: &Path) -> String {
    let crane = e2e::tool("crane");
    let digest = run_ok(
        Command::new(crane)
            .args(["digest", "--tarball"])
            .arg(artifact(dir, "-image.tar")),
    )
    .trim()
    .to_owned();
    let index = run_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(artifact(dir, "-oci.tar"))
            .arg("index.json"),
    );
    let index: Value = serde_json::from_str(&index).expect("index.json");
    assert_eq!(
        index["manifests"][0]["digest"], digest,
        "the OCI archive holds another image"
    );
    digest
}

fn chart_file(dir: &Path, file: &str) -> String {
    run_ok(
        Command::new("tar")
            .arg("-xzOf")
            .arg(artifact(dir, ".tgz"))
            .arg(format!("vultr-iam-operator/{file}")),
    )
}

fn yaml(text: &str) -> Value {
    serde_json::to_value(yaml_serde::from_str::<yaml_serde::Value>(text).expect("YAML"))
        .expect("YAML as JSON")
}

#[test]
fn the_chart_is_the_crate_version_and_pins_the_image_by_digest() {
    let dir = &releases().0;
    let digest = image_digest(dir);
    assert!(digest.starts_with("sha256:"), "{digest}");
    let chart = yaml(&chart_file(dir, "Chart.yaml"));
    assert_eq!(chart["version"], VERSION, "chart version");
    assert_eq!(chart["appVersion"], VERSION, "chart appVersion");
    let values = yaml(&chart_file(dir, "values.yaml"));
    assert_eq!(
        values["image"]["digest"],
        digest.as_str(),
        "the chart's image.digest"
    );
    // The committed chart carries no digest: only the packaged one is pinned.
    let committed = yaml(
        &std::fs::read_to_string(repo_path("charts/vultr-iam-operator/values.yaml"))
            .expect("values.yaml"),
    );
    assert_eq!(committed["image"]["digest"], "");
    // The plain manifests run the same image, by digest.
    let manifests = std::fs::read_to_string(artifact(dir, ".yaml")).expect("manifests");
    let images: BTreeSet<&str> = manifests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    let repository = values["image"]["repository"].as_str().expect("repository");
    assert_eq!(
        images,
        BTreeSet::from([format!("{repository}@{digest}").as_str()]),
        "the manifests' images"
    );
}

/// name -> versions of the crates the SBOM lists as components of the binary.
fn sbom_crates(sbom: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut crates: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in sbom["components"].as_array().expect("components") {
        if let Some(purl) = c["purl"].as_str()
            && purl.starts_with("pkg:cargo/")
        {
            crates
                .entry(c["name"].as_str().expect("name").to_owned())
                .or_default()
                .insert(c["version"].as_str().expect("version").to_owned());
        }
    }
    crates
}

/// The crates the toolchain links into every binary: std and the crates std is built
/// from (its own copies of object, gimli, hashbrown, memchr, ...), by their rlibs' names.
fn toolchain_crates() -> BTreeSet<String> {
    let sysroot = run_ok(Command::new("rustc").args(["--print", "sysroot"]));
    let host = run_ok(Command::new("rustc").args(["--print", "host-tuple"]));
    let libs = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host.trim())
        .join("lib");
    let names: BTreeSet<String> = std::fs::read_dir(&libs)
        .expect("read the sysroot's libraries")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let stem = name.strip_prefix("lib")?.strip_suffix(".rlib")?;
            Some(stem.rsplit_once('-').map_or(stem, |(n, _)| n).to_owned())
        })
        .collect();
    assert!(names.contains("std"), "no std in {}", libs.display());
    names
}

/// Crate names (with `_`) whose code is in `binary`: the first segment of every path in
/// its demangled symbols.
fn crates_in_symbols(binary: &Path) -> BTreeSet<String> {
    let symbols = run_ok(
        Command::new("nm")
            .args(["-p", "--defined-only", "--demangle=rust"])
            .arg(binary),
    );
    let mut crates = BTreeSet::new();
    for name in symbols.lines().filter_map(|l| l.splitn(3, ' ').nth(2)) {
        let bytes = name.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let starts =
                i == 0 || matches!(bytes[i - 1], b'<' | b' ' | b'&' | b'*' | b'(' | b'[' | b',');
            if starts && (bytes[i].is_ascii_lowercase() || bytes[i] == b'_') {
                let end = i + bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                if name[end..].starts_with("::") {
                    crates.insert(name[i..end].to_owned());
                }
                i = end.max(i + 1);
            } else {
                i += 1;
            }
        }
    }
    crates
}

/// (name, version, checksum) of every package in Cargo.lock.
fn lock_packages() -> BTreeMap<(String, String), Option<String>> {
    let lock = std::fs::read_to_string(repo_path("Cargo.lock")).expect("Cargo.lock");
    let mut out = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(&format!("{key} = \""))
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_owned)
            })
        };
        out.insert(
            (
                field("name").expect("name"),
                field("version").expect("version"),
            ),
            field("checksum"),
        );
    }
    out
}

/// The operator's normal dependencies for this target per `cargo metadata`, not through
/// a proc macro, proc macros excluded: (name, version).
fn metadata_runtime_crates() -> BTreeSet<(String, String)> {
    let target = run_ok(Command::new("rustc").args(["--print", "host-tuple"]));
    let metadata = run_ok(
        Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--locked", "--offline"])
            .args(["--filter-platform", target.trim()])
            .current_dir(repo_path("")),
    );
    let metadata: Value = serde_json::from_str(&metadata).expect("metadata JSON");
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p))
        .collect();
    let proc_macro = |id: &str| {
        packages[id]["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
            })
    };
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let root = packages
        .values()
        .find(|p| p["name"] == "vultr-iam-operator")
        .and_then(|p| p["id"].as_str())
        .expect("the operator package");
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let normal = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().expect("pkg");
            if normal && !proc_macro(dep_id) {
                todo.push(dep_id);
            }
        }
    }
    seen.remove(root);
    seen.iter()
        .map(|id| {
            let p = packages[id];
            (
                p["name"].as_str().expect("name").to_owned(),
                p["version"].as_str().expect("version").to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_sbom_lists_exactly_the_crates_compiled_into_the_binary() {
    let dir = &releases().0;
    let sbom: Value = serde_json::from_str(
        &std::fs::read_to_string(artifact(dir, ".cdx.json")).expect("the SBOM"),
    )
    .expect("SBOM JSON");
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["metadata"]["component"]["version"], VERSION);
    assert_eq!(
        sbom["metadata"]["component"]["hashes"][0]["content"],
        image_digest(dir).trim_start_matches("sha256:")
    );
    let listed = sbom_crates(&sbom);
    let lock = lock_packages();

    // Every listed crate is in Cargo.lock, with its version and .crate checksum.
    for c in sbom["components"].as_array().expect("components") {
        if c["purl"]
            .as_str()
            .is_some_and(|p| p.starts_with("pkg:cargo/"))
        {
            let key = (
                c["name"].as_str().expect("name").to_owned(),
                c["version"].as_str().expect("version").to_owned(),
            );
            let checksum = lock
                .get(&key)
                .unwrap_or_else(|| panic!("{key:?} is listed but not in Cargo.lock"));
            assert_eq!(
                c["hashes"][0]["content"].as_str(),
                checksum.as_deref(),
                "{key:?}: checksum"
            );
            assert!(
                c["licenses"][0]["expression"].is_string(),
                "{key:?}: no licence"
            );
        }
    }

    // Nothing listed is a dev-dependency, a build dependency or a proc macro.
    let runtime = metadata_runtime_crates();
    let extra: Vec<String> = listed
        .iter()
        .flat_map(|(n, vs)| vs.iter().map(move |v| (n.clone(), v.clone())))
        .filter(|p| !runtime.contains(p))
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    assert!(
        extra.is_empty(),
        "listed but not compiled into the binary: {extra:?}"
    );
    // ... and every runtime crate cargo metadata knows is listed (it unifies the features
    // of every target, dev-dependencies included: if a dev-dependency's feature ever pulls
    // a crate in there that the binary does not link, this says so).
    let unlisted: Vec<String> = runtime
        .iter()
        .filter(|(n, v)| !listed.get(n).is_some_and(|vs| vs.contains(v)))
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    assert!(
        unlisted.is_empty(),
        "runtime dependencies for cargo metadata, not listed: {unlisted:?}"
    );

    // Every crate of Cargo.lock with code in the binary in the image is listed.
    let binary = artifact(dir, &format!("-linux-{}", arch()));
    let in_binary = crates_in_symbols(&binary);
    let lock_names: BTreeSet<String> = lock.keys().map(|(n, _)| n.replace('-', "_")).collect();
    let listed_names: BTreeSet<String> = listed.keys().map(|n| n.replace('-', "_")).collect();
    let root = "vultr_iam_operator".to_owned();
    // A name that std's own crates also have (object, gimli, hashbrown, ...) may be std's
    // copy: the symbols cannot tell, so those are left to the cargo metadata check below.
    let toolchain = toolchain_crates();
    let missing: Vec<&String> = in_binary
        .iter()
        .filter(|c| lock_names.contains(*c) && !listed_names.contains(*c) && **c != root)
        .filter(|c| !toolchain.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "compiled into the binary but not listed: {missing:?}"
    );
    let evidenced = in_binary
        .iter()
        .filter(|c| listed_names.contains(*c))
        .count();
    assert!(
        evidenced * 2 > listed.len(),
        "only {evidenced} of {} listed crates found in the symbols: is the binary stripped?",
        listed.len()
    );
    // Crates of the lock that are not compiled in (e.g. proptest, a dev-dependency; syn, a
    // proc macros' dependency) are not listed.
    for name in ["proptest", "syn", "serde_derive", "vultr-sim"] {
        assert!(!listed.contains_key(name), "{name} is listed");
    }
    eprintln!(
        "SBOM: {} crates ({} names, {evidenced} of them seen in the binary's symbols); cargo metadata: {} runtime crates",
        listed.values().map(BTreeSet::len).sum::<usize>(),
        listed.len(),
        runtime.len()
    );
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The binary carries its dependency list as cargo auditable does: zlib-compressed JSON
/// in the section `.dep-v0`, read here with objcopy and Python's zlib (readers that know
/// nothing of how it was written).
#[test]
fn the_binary_embeds_its_dependency_list() {
    let dump = tempfile::NamedTempFile::new().expect("temp file");
    run_ok(
        Command::new("objcopy")
            .arg(format!("--dump-section=.dep-v0={}", dump.path().display()))
            .arg(BINARY)
            .arg(tempfile::NamedTempFile::new().expect("temp file").path()),
    );
    let json = run_ok(
        Command::new("python3")
            .args(["-c", "import sys, zlib; sys.stdout.write(zlib.decompress(open(sys.argv[1], 'rb').read()).decode())"])
            .arg(dump.path()),
    );
    let list: Value = serde_json::from_str(&json).expect("the dependency list is JSON");
    let packages = list["packages"].as_array().expect("packages");
    let root: Vec<&Value> = packages.iter().filter(|p| p["root"] == true).collect();
    assert_eq!(root.len(), 1);
    assert_eq!(root[0]["name"], "vultr-iam-operator");
    assert_eq!(root[0]["version"], VERSION);
    let find = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the list"))
    };
    // kube is linked in (runtime), serde_derive is a proc macro (build).
    assert!(
        find("kube")["kind"].is_null(),
        "kube is a runtime dependency"
    );
    assert_eq!(find("serde_derive")["kind"], "build");
    assert_eq!(find("kube")["source"], "crates.io");
    // Dependencies are indices into the list, and every runtime crate but the root is
    // some runtime crate's dependency.
    let runtime: BTreeSet<usize> = packages
        .iter()
        .enumerate()
        .filter(|(_, p)| p["kind"].is_null())
        .map(|(i, _)| i)
        .collect();
    let mut depended: BTreeSet<usize> = BTreeSet::new();
    for i in &runtime {
        for d in packages[*i]["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let d = d.as_u64().expect("an index") as usize;
            assert!(d < packages.len());
            if runtime.contains(&d) {
                depended.insert(d);
            }
        }
    }
    let root_index = packages
        .iter()
        .position(|p| p["root"] == true)
        .expect("root");
    assert_eq!(depended.len(), runtime.len() - 1);
    assert!(!depended.contains(&root_index));
    // The same list as the metadata's runtime crates.
    let listed: BTreeSet<(String, String)> = runtime
        .iter()
        .filter(|i| **i != root_index)
        .map(|i| {
            (
                packages[*i]["name"].as_str().expect("name").to_owned(),
                packages[*i]["version"]
                    .as_str()
                    .expect("version")
                    .to_owned(),
            )
        })
        .collect();
    let metadata = metadata_runtime_crates();
    let only_metadata: Vec<_> = metadata.difference(&listed).collect();
    let only_list: Vec<_> = listed.difference(&metadata).collect();
    assert!(
        only_list.is_empty() && only_metadata.is_empty(),
        "the runtime crates of .dep-v0 differ from cargo metadata's: only in .dep-v0 \
         {only_list:?}, only in cargo metadata {only_metadata:?} (cargo metadata unifies \
         the features of every target; if a dev-dependency's feature pulls a crate in \
         there, say so here)"
    );
}

/// `version` prints the crate's version, the commit, rustc's and kube's versions.
#[test]
fn version_prints_what_the_binary_was_built_from() {
    let out = run_ok(Command::new(BINARY).arg("version"));
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {key} in {out}"))
    };
    assert_eq!(
        out.lines().next(),
        Some(format!("vultr-iam-operator {VERSION}").as_str())
    );
    let head = Command::new("git")
        .arg("-C")
        .arg(repo_path(""))
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        // The binary is built from HEAD (build.rs re-runs when HEAD moves).
        Some(head) if repo_path(".git").exists() => assert_eq!(field("commit:"), head),
        _ => assert_eq!(field("commit:"), "unknown"),
    }
    let rustc = run_ok(Command::new("rustc").arg("--version"));
    assert_eq!(field("rustc:"), rustc.trim());
    let kube = lock_packages()
        .keys()
        .find(|(n, _)| n == "kube")
        .map(|(_, v)| v.clone())
        .expect("kube in Cargo.lock");
    assert_eq!(field("kube:"), kube);
}
