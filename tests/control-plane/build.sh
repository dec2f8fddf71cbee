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
bin="$cache_root/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-k8sstamp/bin"

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

# Helm's release build stamps the Kubernetes version of its client-go into chartutil and
# the lint rules; without it `helm template` assumes v1.20 and refuses the chart's
# kubeVersion. The same flags, read off Helm's own go.mod.
echo "building helm $HELM_VERSION" >&2
helm_gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$helm_gomod")"
helm_k8s_minor="$(echo "$client_go" | cut -d. -f2)"
[[ -n "$helm_k8s_minor" ]] || { echo "cannot read client-go's version from $helm_gomod" >&2; exit 1; }
hv=helm.sh/helm/v3
GOBIN="$staging" go install -trimpath \
  -ldflags "-s -w -X $hv/internal/version.version=$HELM_VERSION -X $hv/internal/version.gitTreeState=clean \
    -X $hv/pkg/lint/rules.k8sVersionMajor=1 -X $hv/pkg/lint/rules.k8sVersionMinor=$helm_k8s_minor \
    -X $hv/pkg/chartutil.k8sVersionMajor=1 -X $hv/pkg/chartutil.k8sVersionMinor=$helm_k8s_minor" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

mkdir -p "$(dirname "$bin")"
rm -rf "$bin"
mv "$staging" "$bin"
trap - EXIT
echo "control-plane binaries built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
