#!/usr/bin/env bash
# Builds one Go tool from the Go module proxy, once per version, into a cache outside
# the repository (like tests/control-plane/build.sh). Prints the binary's path.
#   deploy/image/tools.sh crane     # github.com/google/go-containerregistry/cmd/crane
#   deploy/image/tools.sh promtool  # github.com/prometheus/prometheus/cmd/promtool
set -euo pipefail

CRANE_VERSION="v0.22.1"
PROMETHEUS_VERSION="v0.316.0"

case "${1:-}" in
  crane) module=github.com/google/go-containerregistry/cmd/crane; version=$CRANE_VERSION ;;
  promtool) module=github.com/prometheus/prometheus/cmd/promtool; version=$PROMETHEUS_VERSION ;;
  *) echo "usage: $0 crane|promtool" >&2; exit 2 ;;
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
echo "building $name $version from the Go module proxy" >&2
GOFLAGS="-buildvcs=false -mod=mod" GOBIN="$staging" CGO_ENABLED=0 \
  go install -trimpath -ldflags "-s -w" "$module@$version" >&2
mkdir -p "$(dirname "$out")"
mv "$staging/$name" "$out"
echo "$out"
