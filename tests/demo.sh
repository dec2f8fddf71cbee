#!/usr/bin/env bash
# `make demo`: the operator doing its job on a local control plane and the Vultr
# simulator. Builds what it needs, starts everything in a temporary directory, applies
# deploy/examples/, shows the grants appear in "Vultr", deletes one, shows the journal
# proving the revocation, and cleans up (also on failure or Ctrl-C).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
work="$(mktemp -d -t vio-demo.XXXXXX)"
key="demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
ns=demo
sim_pid="" op_pid=""

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  set +e
  if [[ -n "$op_pid" ]] && kill -0 "$op_pid" 2>/dev/null && [[ -n "${KUBECONFIG:-}" ]]; then
    # Revoke what is left before the operator goes, as a user would.
    kubectl delete pa --all -n "$ns" --timeout=30s >/dev/null 2>&1
  fi
  [[ -n "$op_pid" ]] && kill "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null
  [[ -n "$sim_pid" ]] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  tests/control-plane/stop.sh --dir "$work/cluster" --purge >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# Only what the demo runs: the control plane (no helm), the operator and the simulator.
step "Building the control plane (cached after the first run), the operator and the simulator"
tests/control-plane/build.sh --no-helm >/dev/null
echo "building the operator and the Vultr simulator (cargo, debug; the first build compiles ~235 crates)"
cargo build --bin vultr-iam-operator -p vultr-iam-operator --bin vultr-sim -p vultr-sim 2>&1 |
  awk '/^ *Compiling / { n++; if (n % 25 == 0) printf "  %d crates compiled (now %s %s)\n", n, $2, $3; fflush(); next }
       /^ *(Downloaded|Downloading|Locking|Adding|Updating) / { next } { print; fflush() }'
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug"

step "Starting etcd, kube-apiserver and kube-controller-manager"
eval "$(tests/control-plane/start.sh --dir "$work/cluster" --watch-pid $$ --no-helm)"
kubectl version 2>/dev/null | grep -i '^server'

step "Starting the Vultr simulator with its demo organization"
"$bin/vultr-sim" --demo --listen 127.0.0.1:0 --api-key "$key" >"$work/sim.out" 2>"$work/sim.log" &
sim_pid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$work/sim.out" && break; sleep 0.1; done
sim_url="$(sed -n 's/^listening on //p' "$work/sim.out")"
echo "simulator at $sim_url"
sim_state() { curl -fsS "$sim_url/_sim/state" | python3 tests/demo_show.py state; }
echo "grants in Vultr before the operator runs:"; sim_state

step "Installing the CRD and starting the operator"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/policyattachments.iam.vultr-operator.io
VULTR_API_KEY="$key" "$bin/vultr-iam-operator" run --vultr-api-url "$sim_url" \
  --metrics-bind-address 127.0.0.1:0 --resync-interval 30s >"$work/operator.log" 2>&1 &
op_pid=$!

step "Applying deploy/examples/ (by name/email, by IDs, a group, a role)"
kubectl create namespace "$ns" >/dev/null
kubectl apply -n "$ns" -f deploy/examples/
kubectl wait -n "$ns" --for=condition=Ready pa --all --timeout=90s
kubectl get pa -n "$ns"
echo; echo "grants in Vultr now:"; sim_state

step "Deleting alice-dns-admin: the finalizer holds it until Vultr confirms the revocation"
kubectl delete pa alice-dns-admin -n "$ns" --timeout=60s
kubectl get pa -n "$ns"
echo; echo "Vultr's request journal (writes):"
curl -fsS "$sim_url/_sim/journal" | python3 tests/demo_show.py journal
echo; echo "grants in Vultr now:"; sim_state
echo; echo "Events of the revocation:"
kubectl get events -n "$ns" --field-selector involvedObject.name=alice-dns-admin \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message 2>/dev/null || true
if grep -q "$key" "$work/operator.log"; then echo "the API key leaked into the operator log" >&2; exit 1; fi

step "Cleaning up (remaining PolicyAttachments are revoked first)"
