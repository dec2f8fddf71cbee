#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kubectl) and helm from the Go module proxy, once per version, into a cache outside
# the repository. Prints the bin directory on stdout as its last line.
#
#   build.sh            # the control plane and helm (the tests use helm)
#   build.sh --no-helm  # the control plane only (what `make demo` runs)
#
# helm is cached in a directory of its own and linked into the bin directory, so a
# control plane built without it gains it later without a rebuild. Each step says what
# it builds and how far it is (packages compiled of those it needs) on stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
with_helm=1
case "${1:-}" in
  --no-helm) with_helm=0 ;;
  "") ;;
  *) echo "usage: $0 [--no-helm]" >&2; exit 2 ;;
esac
K8S_VERSION="v1.37.2"
ETCD_VERSION="$(cd "$here" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
HELM_VERSION="v3.22.0"
cache_root="${VIO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vultr-iam-operator}"
bin="$cache_root/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-k8sstamp/bin"
helm_dir="$cache_root/tools/helm-$HELM_VERSION-k8sstamp"
export GOFLAGS="-buildvcs=false -mod=mod"

# progress LABEL TOTAL LOG: reads `go build -v` output (one line per package compiled)
# and prints how far LABEL is every 10% or 30 s; everything goes to LOG too.
progress() {
  local label="$1" total="$2" log="$3" n=0 shown=0 last line now
  last=$(date +%s)
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$log"
    n=$((n + 1))
    now=$(date +%s)
    if (( n * 10 / total > shown || now - last >= 30 )); then
      shown=$((n * 10 / total)); last=$now
      echo "  $label: $n of ~$total packages compiled" >&2
    fi
  done
}

# go_step LABEL DIR PKGS... -- GO ARGS...: runs `go ARGS -v` in this script's directory
# with progress (the total is `go list -deps PKGS` in DIR); on failure prints the end of
# its output.
go_step() {
  local label="$1" dir="$2"; shift 2
  local pkgs=()
  while [[ "$1" != "--" ]]; do pkgs+=("$1"); shift; done
  shift
  local total log rc
  total="$(cd "$dir" && GOFLAGS="-buildvcs=false -mod=readonly" go list -deps "${pkgs[@]}" | wc -l)"
  (( total > 0 )) || total=1
  log="$(mktemp -t vio-go-build.XXXXXX)"
  local start; start=$(date +%s)
  echo "building $label (~$total Go packages; cached packages are skipped)" >&2
  set +e
  (cd "$here" && go "$@" -v 2>&1) | progress "$label" "$total" "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if (( rc != 0 )); then
    tail -n 40 "$log" >&2
    rm -f "$log"
    exit "$rc"
  fi
  rm -f "$log"
  echo "  $label: done in $(( $(date +%s) - start ))s" >&2
}

if ! [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" \
        && -x "$bin/kubectl" ]]; then
  staging="$(mktemp -d "$cache_root/build.XXXXXX" 2>/dev/null || { mkdir -p "$cache_root"; mktemp -d "$cache_root/build.XXXXXX"; })"
  trap 'rm -rf "$staging"' EXIT
  start=$(date +%s)
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
   -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  k8s=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
    k8s.io/kubernetes/cmd/kubectl)
  echo "building the control plane once into $bin (cold: tens of minutes on 2 cores)" >&2
  go_step "kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION" "$here" "${k8s[@]}" -- \
    build -trimpath -ldflags "$ldflags" -o "$staging/" "${k8s[@]}"
  go_step "etcd $ETCD_VERSION" "$here" go.etcd.io/etcd/server/v3 -- \
    build -trimpath -ldflags "-s -w" -o "$staging/etcd" go.etcd.io/etcd/server/v3
  mkdir -p "$(dirname "$bin")"
  rm -rf "$bin"
  mv "$staging" "$bin"
  trap - EXIT
  echo "control-plane binaries built in $(( $(date +%s) - start ))s" >&2
fi

if (( with_helm )); then
  if ! [[ -x "$helm_dir/helm" ]]; then
    # Helm's release build stamps the Kubernetes version of its client-go into chartutil
    # and the lint rules; without it `helm template` assumes v1.20 and refuses the
    # chart's kubeVersion. The same flags, read off Helm's own go.mod.
    mkdir -p "$cache_root/tools"
    staging="$(mktemp -d "$cache_root/tools/build.XXXXXX")"
    trap 'rm -rf "$staging"' EXIT
    helm_gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
    client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$helm_gomod")"
    helm_k8s_minor="$(echo "$client_go" | cut -d. -f2)"
    [[ -n "$helm_k8s_minor" ]] || { echo "cannot read client-go's version from $helm_gomod" >&2; exit 1; }
    hv=helm.sh/helm/v3
    export GOBIN="$staging"
    helm_src="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
    go_step "helm $HELM_VERSION (only the tests and make release use it)" "$helm_src" ./cmd/helm -- \
      install -trimpath \
      -ldflags "-s -w -X $hv/internal/version.version=$HELM_VERSION -X $hv/internal/version.gitTreeState=clean \
        -X $hv/pkg/lint/rules.k8sVersionMajor=1 -X $hv/pkg/lint/rules.k8sVersionMinor=$helm_k8s_minor \
        -X $hv/pkg/chartutil.k8sVersionMajor=1 -X $hv/pkg/chartutil.k8sVersionMinor=$helm_k8s_minor" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    rm -rf "$helm_dir"
    mv "$staging" "$helm_dir"
    trap - EXIT
  fi
  [[ "$(readlink "$bin/helm" 2>/dev/null)" == "$helm_dir/helm" ]] || ln -sfn "$helm_dir/helm" "$bin/helm"
fi
echo "$bin"
