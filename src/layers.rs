//! The layers of the crate, lowest first, and a test that every `crate::` path in `src/`
//! points down: a module may name modules of lower layers only, never one of its own
//! layer or above, so the import graph between top-level modules has no cycle.
//!
//! - domain: grants, subjects, references; no Kubernetes or HTTP types
//! - crd, vultr: the resource, and the Vultr client
//! - support of the reconciler and the commands
//! - reconcile, export: the reconciler, and the `export` command
//! - drift, http: periodic verification, the `/metrics` and probe listener
//! - leader, run, cli: the operator's wiring and the command line

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` sits in exactly one layer.
const LAYERS: &[&[&str]] = &[
    &["domain", "listen", "telemetry", "build_info"],
    &["crd", "vultr", "boundary"],
    &[
        "error",
        "connect",
        "crdgen",
        "watch_cache",
        "port",
        "metrics",
    ],
    &["reconcile", "export"],
    &["drift", "http"],
    &["leader"],
    &["run"],
    &["cli"],
];

/// Imports that still point up, each (from, to) until the code moves. The test fails
/// when one of them goes, so that the list shrinks with the code.
const PENDING: &[(&str, &str)] = &[];

/// The top-level modules each top-level module names, with the files that name them.
fn imports(src: &Path) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut found = BTreeMap::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = path
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // The crate root declares the modules; this file names them in its own test.
        if !rel.ends_with(".rs") || ["lib.rs", "main.rs", "layers.rs"].contains(&rel.as_str()) {
            continue;
        }
        let from = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for to in crate_paths(&text) {
            if to != from {
                found
                    .entry((from.clone(), to))
                    .or_insert_with(BTreeSet::new)
                    .insert(rel.clone());
            }
        }
    }
    found
}

/// The first segment of every `crate::` path in code (comments left out), including
/// each of a group: `use crate::{a::X, b}` names `a` and `b`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(ident(group[start..i].trim_start()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(ident(group[start..i].trim_start()));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names.remove("");
    names
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn every_import_points_down_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let imports = imports(&src);
    let modules: BTreeSet<&String> = imports.keys().flat_map(|(a, b)| [a, b]).collect();
    let unplaced: Vec<&&String> = modules.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules in no layer of src/layers.rs: {unplaced:?}"
    );
    let mut violations = Vec::new();
    let mut pending = BTreeSet::new();
    for ((from, to), files) in &imports {
        if layer_of(to) < layer_of(from) {
            continue;
        }
        if PENDING.contains(&(from.as_str(), to.as_str())) {
            pending.insert((from.as_str(), to.as_str()));
            continue;
        }
        violations.push(format!(
            "{from} -> {to} (in {})",
            files.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    assert!(
        violations.is_empty(),
        "imports that do not point down a layer:\n{}",
        violations.join("\n")
    );
    let gone: Vec<_> = PENDING.iter().filter(|p| !pending.contains(*p)).collect();
    assert!(
        gone.is_empty(),
        "these imports no longer point up: remove them from PENDING: {gone:?}"
    );
}

#[test]
fn crate_paths_are_found_in_uses_groups_and_expressions() {
    let text = "use crate::a::X;\nuse crate::{b::{Y, Z}, c};\n// crate::d\nlet v = crate::e::f();\n\
                let w = other_crate::g;";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "e"]);
}
