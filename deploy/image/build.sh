#!/usr/bin/env bash
# Assembles the operator's OCI image without a container engine (`make image`):
# a root filesystem with the binary, exactly the shared libraries it links (ldd) and
# the dynamic loader, CA certificates and passwd/group entries for UID/GID 65532, packed
# as one reproducible layer (sorted entries, fixed mtimes, owner 0:0), then given its
# config (user 65532, entrypoint the binary, no shell) with crane
# (github.com/google/go-containerregistry, built from the Go module proxy and cached).
#
#   deploy/image/build.sh [--binary PATH] [--out DIR] [--name REPOSITORY:TAG]
#
# Writes to DIR (default target/image):
#   vultr-iam-operator.tar  docker-archive: `docker load`, `kind load image-archive`,
#                           `ctr images import`, `podman load`, `crane push`
#   oci/                    OCI image layout (same digest): `crane push`, `skopeo copy oci:`
#   digest                  the image manifest's digest (the same for the same commit)
# Docker v2 media types (the docker-archive format keeps no others; every engine and
# registry accepts them). SOURCE_DATE_EPOCH (default: the commit's time) sets every
# timestamp.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
binary="$repo/target/release/vultr-iam-operator"
out="$repo/target/image"
version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/charts/vultr-iam-operator/Chart.yaml")"
repository="$(sed -n 's/^  repository: *//p' "$repo/charts/vultr-iam-operator/values.yaml" | head -n 1)"
name="$repository:$version"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x "$binary" ]] || { echo "no executable $binary (cargo build --release first)" >&2; exit 1; }
revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}"
crane="$("$repo/deploy/image/tools.sh" crane | tail -n 1)"

work="$(mktemp -d -t vio-image.XXXXXX)"
registry_pid=""
cleanup() {
  [[ -n "$registry_pid" ]] && kill "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# ---- root filesystem -----------------------------------------------------------------
root="$work/rootfs"
mkdir -p "$root"
install -D -m 0755 "$binary" "$root/usr/local/bin/vultr-iam-operator"
# The glibc binary's libraries and loader, at the paths it looks them up by (a static
# binary has none: ldd then says "not a dynamic executable").
if ldd "$binary" >"$work/ldd" 2>&1; then
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' "$work/ldd" |
    sort -u | while read -r lib; do
      install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
elif ! grep -q "not a dynamic executable" "$work/ldd"; then
  cat "$work/ldd" >&2; exit 1
fi
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
mkdir -p "$root/tmp" && chmod 1777 "$root/tmp"
find "$root" -type d ! -path "$root/tmp" -exec chmod 0755 {} +

# One layer, byte-for-byte reproducible: sorted entries, one mtime, owner 0:0, no
# atime/ctime, no leading "./".
(cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort >"$work/entries")
tar --create --file "$work/rootfs.tar" --directory "$root" --no-recursion \
  --verbatim-files-from --files-from "$work/entries" \
  --format=pax --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
  --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner

# ---- image -----------------------------------------------------------------------------
# crane mutate edits images in a registry: a throwaway one on a free loopback port.
"$crane" registry serve --address 127.0.0.1:0 >"$work/registry.log" 2>&1 &
registry_pid=$!
# Up to 60 s: on a loaded machine crane takes a while to start.
for _ in $(seq 600); do
  port="$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log" 2>/dev/null)"
  [[ -n "$port" ]] && break
  sleep 0.1
done
[[ -n "${port:-}" ]] || { cat "$work/registry.log" >&2; exit 1; }
local_ref="127.0.0.1:$port/vultr-iam-operator"

"$crane" append --new_layer "$work/rootfs.tar" \
  --new_tag "$local_ref:layer" >/dev/null 2>"$work/crane.log" || { cat "$work/crane.log" >&2; exit 1; }
mutate=(mutate "$local_ref:layer" --set-platform linux/amd64
  --entrypoint /usr/local/bin/vultr-iam-operator --cmd run
  --user 65532:65532 --workdir /
  --env PATH=/usr/local/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  --exposed-ports 8080/tcp
  --label org.opencontainers.image.title=vultr-iam-operator
  --label org.opencontainers.image.licenses=Apache-2.0
  --label "org.opencontainers.image.version=$version"
  --label "org.opencontainers.image.revision=$revision")

mkdir -p "$out"
rm -rf "$out/oci" "$out/vultr-iam-operator.tar" "$out/digest"
# The docker-archive names the image like the chart's default (repository:appVersion).
"$crane" "${mutate[@]}" --tag "$name" --output "$out/vultr-iam-operator.tar" >/dev/null 2>"$work/crane.log" \
  || { cat "$work/crane.log" >&2; exit 1; }
# The archive through `crane push`, then back as an OCI layout.
"$crane" push "$out/vultr-iam-operator.tar" "$local_ref:final" >/dev/null 2>"$work/crane.log" \
  || { cat "$work/crane.log" >&2; exit 1; }
"$crane" pull --format oci "$local_ref:final" "$out/oci" 2>"$work/crane.log" \
  || { cat "$work/crane.log" >&2; exit 1; }
digest="$("$crane" digest --tarball "$out/vultr-iam-operator.tar")"
pushed="$("$crane" digest "$local_ref:final")"
[[ "$digest" == "$pushed" ]] || { echo "pushed digest $pushed differs from $digest" >&2; exit 1; }
echo "$digest" >"$out/digest"
echo "$name@$digest" >&2
echo "$out"
