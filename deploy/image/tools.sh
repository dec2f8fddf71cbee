#!/usr/bin/env bash
# Builds one tool, once per version, into a cache outside the repository (like
# tests/control-plane/build.sh): Go tools from the Go module proxy, Rust tools from
# crates.io (`cargo install --locked`). Prints the binary's path.
#   deploy/image/tools.sh crane       # github.com/google/go-containerregistry/cmd/crane
#   deploy/image/tools.sh promtool    # github.com/prometheus/prometheus/cmd/promtool
#   deploy/image/tools.sh cargo-deny  # crates.io cargo-deny (the dependency policy)
set -euo pipefail

CRANE_VERSION="v0.22.1"
PROMETHEUS_VERSION="v0.316.0"
CARGO_DENY_VERSION="0.20.2"

case "${1:-}" in
  crane) module=github.com/google/go-containerregistry/cmd/crane; version=$CRANE_VERSION ;;
  promtool) module=github.com/prometheus/prometheus/cmd/promtool; version=$PROMETHEUS_VERSION ;;
  cargo-deny) crate=cargo-deny; version=$CARGO_DENY_VERSION ;;
  *) echo "usage: $0 crane|promtool|cargo-deny" >&2; exit 2 ;;
esac
name="$1"
cache_root="${VIO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vultr-iam-operator}"
out="$cache_root/tools/$name-$version/$name"
if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root/tools"
staging="$(mktemp -d "$cache_root/tools/build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
if [[ -n "${crate:-}" ]]; then
  # Its own target directory (in the staging one), so the project's is not locked.
  # A debug build: it compiles in about half the time of a release build, and checking
  # a lock file takes it seconds either way.
  echo "building $name $version from crates.io (cargo install --locked --debug; cold: several minutes)" >&2
  CARGO_TARGET_DIR="$staging/target" cargo install --locked --debug --root "$staging" \
    --version "=$version" "$crate" >&2
  mkdir -p "$(dirname "$out")"
  mv "$staging/bin/$name" "$out"
else
  echo "building $name $version from the Go module proxy (progress: Go packages compiled)" >&2
  # -v names each package as it is compiled: a count every 50, the end of it on failure.
  if ! GOFLAGS="-buildvcs=false -mod=mod" GOBIN="$staging" CGO_ENABLED=0 \
    go install -v -trimpath -ldflags "-s -w" "$module@$version" 2>&1 |
    tee "$staging/build.log" | awk -v name="$name" '{ n++ } n % 50 == 0 { printf "  %s: %d packages compiled\n", name, n; fflush() }' >&2
  then
    tail -n 40 "$staging/build.log" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$out")"
  mv "$staging/$name" "$out"
fi
echo "$out"
