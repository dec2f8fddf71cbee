#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kubectl) and helm from the Go module proxy, once per version, into a cache outside
# the repository. Prints the bin directory on stdout as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="v1.37.2"
ETCD_VERSION="$(cd "$here" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
HELM_VERSION="v3.22.0"
cache_root="${VIO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vultr-iam-operator}"
bin="$cache_root/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"

if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" \
      && -x "$bin/kubectl" && -x "$bin/helm" ]]; then
  echo "$bin"
  exit 0
fi

export GOFLAGS="-buildvcs=false -mod=mod"
staging="$(mktemp -d "$cache_root/build.XXXXXX" 2>/dev/null || { mkdir -p "$cache_root"; mktemp -d "$cache_root/build.XXXXXX"; })"
trap 'rm -rf "$staging"' EXIT

start=$(date +%s)
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
 -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"

echo "building kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION and etcd $ETCD_VERSION (cold build: tens of minutes on 2 cores)" >&2
(cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$staging/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl)
(cd "$here" && go build -trimpath -ldflags "-s -w" -o "$staging/etcd" go.etcd.io/etcd/server/v3)

echo "building helm $HELM_VERSION" >&2
GOBIN="$staging" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

mkdir -p "$(dirname "$bin")"
rm -rf "$bin"
mv "$staging" "$bin"
trap - EXIT
echo "control-plane binaries built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
