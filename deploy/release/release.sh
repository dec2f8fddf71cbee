#!/usr/bin/env bash
# `make release`: every artifact of one version, reproducibly (the same commit gives the
# same bytes), into target/release-artifacts/<version>/ (or --out DIR):
#
#   vultr-iam-operator-<v>-image.tar     the image as a docker-archive (docker load, kind
#                                        load image-archive, ctr import, crane push)
#   vultr-iam-operator-<v>-oci.tar       the same image as an OCI layout archive
#                                        (skopeo copy oci-archive:, crane push after untar)
#   vultr-iam-operator-<v>.tgz           the chart (helm package): version and appVersion
#                                        <v>, image.digest pinned to the image's digest
#   vultr-iam-operator-<v>.yaml          plain manifests: deploy/kustomize/base with the
#                                        image pinned by digest (kubectl apply -f)
#   vultr-iam-operator-<v>.cdx.json      SBOM of the image (CycloneDX 1.5, deploy/release/sbom.py)
#   vultr-iam-operator-<v>-linux-<arch>  the binary in the image
#   SHA256SUMS                           sha256sum of every file above (sha256sum -c)
#
#   deploy/release/release.sh [--out DIR] [--binary PATH]
#
# --binary packs that binary instead of a fresh `cargo build --release` (tests/release.rs
# runs the pipeline on its debug binary: a release build would add ~10 minutes to
# `make test`). <v> is the crate's version (Cargo.toml). Timestamps are the commit's time
# (SOURCE_DATE_EPOCH); archives have sorted entries, owner 0:0 and that time.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
version="$(sed -n '/^\[package\]/,/^\[/ s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
out="$repo/target/release-artifacts/$version"
binary=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
chart_src="$repo/charts/vultr-iam-operator"
chart_version="$(sed -n 's/^version: *//p' "$chart_src/Chart.yaml")"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart_src/Chart.yaml")"
if [[ "$chart_version" != "$version" || "$app_version" != "$version" ]]; then
  echo "Chart.yaml has version $chart_version and appVersion $app_version; Cargo.toml has $version: set both to $version" >&2
  exit 1
fi
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
timestamp="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
arch="$(uname -m)"; case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
name="vultr-iam-operator-$version"

if [[ -z "$binary" ]]; then
  echo "release $version: building the release binary (cargo build --release; cold: ~10 minutes on 2 cores)" >&2
  cargo build --release --locked --bin vultr-iam-operator
  binary="$repo/target/release/vultr-iam-operator"
fi
tools_bin="$(tests/control-plane/build.sh | tail -n 1)"

work="$(mktemp -d -t vio-release.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rm -rf "$out"
mkdir -p "$out"

# A tar of DIR's content, byte-for-byte reproducible.
repro_tar() {
  local dir="$1" file="$2"
  (cd "$dir" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort >"$work/entries")
  tar --create --file "$file" --directory "$dir" --no-recursion --verbatim-files-from \
    --files-from "$work/entries" --format=pax \
    --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
    --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner
}

echo "release $version: the image (deploy/image/build.sh)" >&2
deploy/image/build.sh --binary "$binary" --out "$work/image" >/dev/null
digest="$(cat "$work/image/digest")"
cp "$work/image/vultr-iam-operator.tar" "$out/$name-image.tar"
repro_tar "$work/image/oci" "$out/$name-oci.tar"
install -m 0755 "$binary" "$out/$name-linux-$arch"

echo "release $version: the chart (helm package), image $digest" >&2
mkdir -p "$work/chart"
cp -a "$chart_src" "$work/chart/vultr-iam-operator"
values="$work/chart/vultr-iam-operator/values.yaml"
# image.digest is the only `  digest:` key of values.yaml (a test checks the result).
sed -i "s|^  digest: \"\"$|  digest: \"$digest\"|" "$values"
grep -q "^  digest: \"$digest\"$" "$values" || { echo "cannot pin image.digest in $values" >&2; exit 1; }
helm() {
  HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" \
    HELM_DATA_HOME="$work/helm/data" "$tools_bin/helm" "$@"
}
helm package "$work/chart/vultr-iam-operator" --version "$version" --app-version "$version" \
  --destination "$work/packaged" >/dev/null
# helm package stamps the current time on every entry: repack with the commit's time.
mkdir -p "$work/unpacked"
tar --warning=no-timestamp -xzf "$work/packaged/$name.tgz" -C "$work/unpacked"
repro_tar "$work/unpacked" "$work/chart.tar"
gzip -9 -n <"$work/chart.tar" >"$out/$name.tgz"
helm lint --strict "$out/$name.tgz" >/dev/null

echo "release $version: plain manifests" >&2
mkdir -p "$work/kustomize/overlay"
cp -a deploy/kustomize/base "$work/kustomize/base"
repository="$(sed -n 's/^  repository: *//p' "$chart_src/values.yaml" | head -n 1)"
cat >"$work/kustomize/overlay/kustomization.yaml" <<YAML
resources: [../base]
images:
  - name: $repository
    digest: $digest
YAML
{
  echo "# vultr-iam-operator $version: the chart's default render (deploy/kustomize/base), image"
  echo "# pinned by digest. kubectl apply --server-side -f $name.yaml"
  "$tools_bin/kubectl" kustomize "$work/kustomize/overlay"
} >"$out/$name.yaml"
grep -q "image: $repository@$digest" "$out/$name.yaml" \
  || { echo "the manifests do not pin $repository@$digest" >&2; exit 1; }

echo "release $version: SBOM" >&2
cargo metadata --format-version 1 --locked --offline >"$work/metadata.json"
python3 deploy/release/sbom.py --image "$out/$name-image.tar" --lock Cargo.lock --metadata "$work/metadata.json" \
  --version "$version" --digest "$digest" --timestamp "$timestamp" --out "$out/$name.cdx.json"

(cd "$out" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort |
  xargs sha256sum >SHA256SUMS)
echo "release $version ($repository@$digest) in $out:" >&2
cat "$out/SHA256SUMS" >&2
echo "$out"
