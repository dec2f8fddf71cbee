//! What this binary was built from (recorded by build.rs): `vultr-iam-operator version`
//! prints it, and the dependency list sits in the linker section `.dep-v0` in the format
//! of cargo auditable (zlib-compressed JSON: every package with its version, source,
//! dependencies and kind, "build" for what is not linked in), which `cargo audit bin`,
//! `rust-audit-info`, syft and trivy read.

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit built, or "unknown" (a build outside a git work tree).
pub const GIT_COMMIT: &str = env!("VIO_GIT_COMMIT");
/// `rustc --version` of the compiler that built it.
pub const RUSTC_VERSION: &str = env!("VIO_RUSTC_VERSION");
/// The version of the kube crate linked in.
pub const KUBE_VERSION: &str = env!("VIO_KUBE_VERSION");
/// The version of the k8s-openapi crate linked in.
pub const K8S_OPENAPI_VERSION: &str = env!("VIO_K8S_OPENAPI_VERSION");

const DEP_LIST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dep-v0"));

/// The dependency list in its own linker section. `#[used]` keeps it through the
/// compiler; [`dependency_list`] reads it, so the linker keeps it too.
#[used]
#[unsafe(link_section = ".dep-v0")]
static DEP_V0: [u8; DEP_LIST.len()] = {
    let mut out = [0u8; DEP_LIST.len()];
    let mut i = 0;
    while i < DEP_LIST.len() {
        out[i] = DEP_LIST[i];
        i += 1;
    }
    out
};

/// The compressed dependency list as embedded in `.dep-v0`.
pub fn dependency_list() -> &'static [u8] {
    std::hint::black_box(&DEP_V0)
}

/// What `vultr-iam-operator version` prints.
pub fn version_text() -> String {
    format!(
        "vultr-iam-operator {VERSION}\n\
         commit:      {GIT_COMMIT}\n\
         rustc:       {RUSTC_VERSION}\n\
         kube:        {KUBE_VERSION}\n\
         k8s-openapi: {K8S_OPENAPI_VERSION} (Kubernetes API v1.37)\n\
         dependencies: {} bytes in the .dep-v0 section (cargo auditable format)\n",
        dependency_list().len()
    )
}

#[cfg(test)]
#[path = "../build/info.rs"]
#[allow(dead_code)]
mod info;

#[cfg(test)]
mod tests {
    use super::info;

    #[test]
    fn no_git_work_tree_means_an_unknown_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(info::git_commit(dir.path()), "unknown");
        // A directory inside a work tree is not its top: not that repository's commit.
        let inner = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        assert_eq!(info::git_commit(&inner), "unknown");
    }

    #[test]
    fn the_commit_of_this_checkout() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let expected = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success() && dir.join(".git").exists())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let commit = info::git_commit(dir);
        match expected {
            Some(expected) => assert_eq!(commit, expected),
            None => assert_eq!(commit, "unknown"),
        }
    }

    #[test]
    fn stored_zlib_is_what_zlib_readers_expect() {
        // Adler-32 of "Wikipedia" is 0x11E60398 (RFC 1950's example checksum).
        let z = info::zlib_stored(b"Wikipedia");
        assert_eq!(&z[..2], &[0x78, 0x01]);
        assert_eq!(z[2], 1, "one final stored block");
        assert_eq!(&z[3..7], &[9, 0, 0xf6, 0xff]);
        assert_eq!(&z[7..16], b"Wikipedia");
        assert_eq!(&z[16..], &[0x11, 0xe6, 0x03, 0x98]);
        // Large inputs are split in blocks of at most 65535 bytes.
        let big = vec![7u8; 70_000];
        let z = info::zlib_stored(&big);
        assert_eq!(z.len(), 2 + 2 * 5 + 70_000 + 4);
        assert_eq!(z[2], 0, "the first block is not final");
    }

    #[test]
    fn tree_lines_and_kinds() {
        let full = "0root v0.1.0 (/src/root)\n1a v1.0.0\n2b v2.0.0\n1m v0.3.0 (proc-macro)\n2b v2.0.0 (*)\n2c v1.1.0\n1a v1.0.0 (*)\n";
        let runtime = "0root v0.1.0 (/src/root)\n1a v1.0.0\n2b v2.0.0\n";
        let json = info::dep_list_json(full, runtime);
        assert_eq!(
            json,
            "{\"packages\":[\
             {\"name\":\"a\",\"version\":\"1.0.0\",\"source\":\"crates.io\",\"dependencies\":[1]},\
             {\"name\":\"b\",\"version\":\"2.0.0\",\"source\":\"crates.io\"},\
             {\"name\":\"c\",\"version\":\"1.1.0\",\"source\":\"crates.io\",\"kind\":\"build\"},\
             {\"name\":\"m\",\"version\":\"0.3.0\",\"source\":\"crates.io\",\"kind\":\"build\",\"dependencies\":[1,2]},\
             {\"name\":\"root\",\"version\":\"0.1.0\",\"source\":\"local\",\"dependencies\":[0,3],\"root\":true}]}"
        );
    }
}
