//! What build.rs records about a build, as plain functions (build.rs includes this file,
//! and `src/build_info.rs` unit-tests it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// The commit checked out at `dir`, or "unknown" when `dir` is not the top of a git work
/// tree (a source archive, a clone without `.git`, no git installed): a directory inside
/// some other repository does not report that repository's commit.
pub fn git_commit(dir: &Path) -> String {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"]).map(std::path::PathBuf::from);
    let same = match (
        top.and_then(|t| t.canonicalize().ok()),
        dir.canonicalize().ok(),
    ) {
        (Some(top), Some(dir)) => top == dir,
        _ => false,
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(commit)
            if same && commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            commit
        }
        _ => "unknown".to_owned(),
    }
}

/// One package of the dependency list, as `.dep-v0` records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// "crates.io", "local", "git" or "registry".
    pub source: String,
}

/// A line of `cargo tree --prefix depth -f '{p}'`: (depth, package, proc-macro).
pub fn tree_line(line: &str) -> Option<(usize, Package, bool)> {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    let depth = line[..digits].parse().ok()?;
    let rest = line[digits..].trim().trim_end_matches(" (*)");
    let (name, rest) = rest.split_once(' ')?;
    let (version, rest) = match rest.split_once(' ') {
        Some((version, rest)) => (version, rest),
        None => (rest, ""),
    };
    let version = version.strip_prefix('v')?.to_owned();
    let proc_macro = rest.contains("(proc-macro)");
    let origin = rest.replace("(proc-macro)", "");
    let origin = origin.trim().trim_start_matches('(').trim_end_matches(')');
    let source = if origin.is_empty() {
        "crates.io"
    } else if origin.starts_with('/') {
        "local"
    } else if origin.contains("://") && !origin.starts_with("registry+") {
        "git"
    } else {
        "registry"
    };
    Some((
        depth,
        Package {
            name: name.to_owned(),
            version,
            source: source.to_owned(),
        },
        proc_macro,
    ))
}

/// The `.dep-v0` JSON (cargo auditable's format): every package of `full` (the
/// `-e normal,build` tree of the root) with its dependencies; those not in `runtime`
/// (the `-e normal,no-proc-macro` tree: what is linked into the binary) are of kind
/// "build" (build scripts, proc macros and what only they use).
pub fn dep_list_json(full: &str, runtime: &str) -> String {
    let mut edges: BTreeMap<Package, BTreeSet<Package>> = BTreeMap::new();
    let mut stack: Vec<Package> = Vec::new();
    let mut root = None;
    for (depth, package, _) in full.lines().filter_map(tree_line) {
        stack.truncate(depth);
        if let Some(parent) = stack.last() {
            edges
                .entry(parent.clone())
                .or_default()
                .insert(package.clone());
        } else {
            root = Some(package.clone());
        }
        edges.entry(package.clone()).or_default();
        stack.push(package);
    }
    let linked: BTreeSet<Package> = runtime
        .lines()
        .filter_map(tree_line)
        .map(|(_, p, _)| p)
        .collect();
    let index: BTreeMap<&Package, usize> = edges.keys().enumerate().map(|(i, p)| (p, i)).collect();
    let mut out = String::from("{\"packages\":[");
    for (i, (package, deps)) in edges.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"name\":{},\"version\":{},\"source\":{}",
            json_string(&package.name),
            json_string(&package.version),
            json_string(&package.source)
        ));
        if !linked.contains(package) {
            out.push_str(",\"kind\":\"build\"");
        }
        if !deps.is_empty() {
            let list: Vec<String> = deps.iter().map(|d| index[d].to_string()).collect();
            out.push_str(&format!(",\"dependencies\":[{}]", list.join(",")));
        }
        if root.as_ref() == Some(package) {
            out.push_str(",\"root\":true");
        }
        out.push('}');
    }
    out.push_str("]}");
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `data` as a zlib stream (RFC 1950) of stored deflate blocks (RFC 1951, no
/// compression): what every zlib reader decompresses, without a compression crate.
pub fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(0xffff).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}
