#!/usr/bin/env bash
# The previous release, for the upgrade test (tests/release_upgrade.rs): its binary and
# chart, built once from its commit into ~/.cache/vultr-iam-operator/previous/<commit>/
# (like the control plane). Prints that directory.
#
# The previous release is the last state of main before versioned releases: commit
# c5544d2 (0.1.0 before `make release`; call it v0.0.0). It is named by its commit, not
# a tag, so a fresh clone of main (full history) has it; a shallow clone or a source
# archive does not, and then this fails saying so.
#
# Its binary is built from `git archive` of that commit with this checkout's target
# directory (CARGO_TARGET_DIR), so the dependencies already compiled for this checkout
# are reused (the same Cargo.lock). Cargo names a workspace's own crate by its path
# relative to the workspace, so the previous crate may share this checkout's artifacts
# and fingerprints: build.rs is touched (its commit differs, so this checkout's crate is
# rebuilt) and this checkout's binary is built again, so target/debug holds it, not the
# previous one.
set -euo pipefail

PREVIOUS_COMMIT="c5544d2bb427d1fc6557386b4f2b21dd0a9cef55"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache_root="${VIO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vultr-iam-operator}"
dir="$cache_root/previous/$PREVIOUS_COMMIT"
if [[ -x "$dir/vultr-iam-operator" && -f "$dir/charts/vultr-iam-operator/Chart.yaml" ]]; then
  echo "$dir"
  exit 0
fi
if ! git -C "$repo" cat-file -e "$PREVIOUS_COMMIT^{commit}" 2>/dev/null; then
  echo "the previous release's commit $PREVIOUS_COMMIT is not in this clone (shallow, or no .git):" \
    "fetch main's history (git fetch --unshallow) to build it" >&2
  exit 1
fi
target_dir="${CARGO_TARGET_DIR:-$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
mkdir -p "$cache_root/previous"
staging="$(mktemp -d "$cache_root/previous/build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
git -C "$repo" archive --format=tar --prefix=src/ "$PREVIOUS_COMMIT" | tar -x -C "$staging"
echo "building the previous release ($PREVIOUS_COMMIT, debug) with the target directory $target_dir" >&2
(cd "$staging/src" && CARGO_TARGET_DIR="$target_dir" cargo build --locked --bin vultr-iam-operator 2>&1 |
  awk '/^ *Compiling / { n++; printf "  previous release: %d crates compiled (now %s %s)\n", n, $2, $3; fflush(); next } { print; fflush() }') >&2
install -m 0755 "$target_dir/debug/vultr-iam-operator" "$staging/vultr-iam-operator"
mkdir -p "$staging/charts"
cp -a "$staging/src/charts/vultr-iam-operator" "$staging/charts/"
echo "$PREVIOUS_COMMIT" >"$staging/commit"
rm -rf "$staging/src"
touch "$repo/build.rs"
(cd "$repo" && CARGO_TARGET_DIR="$target_dir" cargo build --locked --quiet --bin vultr-iam-operator) >&2
rm -rf "$dir"
mv "$staging" "$dir"
trap - EXIT
echo "$dir"
