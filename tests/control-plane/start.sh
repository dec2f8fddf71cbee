#!/usr/bin/env bash
# Starts a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)
# on free 127.0.0.1 ports, with generated certificates, an admin identity and a static
# token for the operator's ServiceAccount.
#
# Usage: start.sh [--dir DIR] [--watch-pid PID] [--no-helm]
#   --dir DIR        state directory (default: $CLUSTER_DIR, else <repo>/.cluster)
#   --watch-pid PID  stop the control plane and delete DIR once process PID exits
#                    (used by the Rust test harness and `make test`)
#   --no-helm        do not build helm into the bin directory (`make demo`)
#
# Writes DIR/kubeconfig (admin, system:masters), DIR/operator.kubeconfig (static token of
# system:serviceaccount:vultr-iam-operator:vultr-iam-operator), DIR/pids, DIR/bin-dir and
# DIR/*.log. Progress goes to stderr; stdout ends with
#   export PATH=<bin dir>:$PATH
#   export KUBECONFIG=DIR/kubeconfig
# If the control plane in DIR is already running, it only prints those two lines.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${CLUSTER_DIR:-$(cd "$here/../.." && pwd)/.cluster}"
watch_pid=""
build_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --dir=*) dir="${1#--dir=}"; shift ;;
    --watch-pid) watch_pid="$2"; shift 2 ;;
    --watch-pid=*) watch_pid="${1#--watch-pid=}"; shift ;;
    --no-helm) build_args+=(--no-helm); shift ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "start.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
log() { echo "control-plane: $*" >&2; }
# shellcheck source=lib.sh
source "$here/lib.sh"

# One start or stop at a time per directory.
exec 9>"$dir/.lock"
flock 9

print_exports() {
  echo "export PATH=$(cat "$dir/bin-dir"):\$PATH"
  echo "export KUBECONFIG=$dir/kubeconfig"
}

all_alive() {
  [[ -s "$dir/pids" ]] || return 1
  local name pid
  while read -r name pid; do
    [[ "$name" == watchdog ]] && continue
    kill -0 "$pid" 2>/dev/null || return 1
  done <"$dir/pids"
}

if all_alive && readyz; then
  log "already running in $dir"
  print_exports
  exit 0
fi
if [[ -s "$dir/pids" ]]; then
  log "stale state in $dir, stopping it first"
  flock -u 9
  "$here/stop.sh" --dir "$dir" >&2
  flock 9
fi

started=$(date +%s.%N)
bin="$("$here/build.sh" "${build_args[@]}" | tail -n 1)"
for b in etcd kube-apiserver kube-controller-manager kubectl; do
  [[ -x "$bin/$b" ]] || { log "build.sh did not produce $bin/$b"; exit 1; }
done

# ---- certificates -----------------------------------------------------------------
pki="$dir/pki"
rm -rf "$pki" && mkdir -p "$pki" && chmod 700 "$pki"
(
  cd "$pki"
  quiet() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; }; }
  quiet openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -keyout ca.key -out ca.crt -subj "/CN=vultr-iam-operator-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  # issue NAME SUBJECT EXTENSIONS...
  issue() {
    local name="$1" subj="$2"; shift 2
    printf '%s\n' "$@" >"$name.ext"
    quiet openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$name.key" \
      -out "$name.csr" -subj "$subj"
    quiet openssl x509 -req -sha256 -days 3650 -in "$name.csr" -CA ca.crt -CAkey ca.key \
      -CAcreateserial -out "$name.crt" -extfile "$name.ext"
    rm -f "$name.csr" "$name.ext"
  }
  issue apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  client_ext=("basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth")
  issue admin "/O=system:masters/CN=kubernetes-admin" "${client_ext[@]}"
  issue controller-manager "/O=system:masters/CN=system:kube-controller-manager" "${client_ext[@]}"
  quiet openssl genrsa -out sa.key 2048
  quiet openssl rsa -in sa.key -pubout -out sa.pub
  chmod 600 ./*.key
)

# Static token authenticating as the operator's ServiceAccount.
operator_user="system:serviceaccount:vultr-iam-operator:vultr-iam-operator"
operator_token="$(openssl rand -hex 32)"
printf '%s,%s,%s,"%s"\n' "$operator_token" "$operator_user" "vultr-iam-operator-static" \
  "system:serviceaccounts,system:serviceaccounts:vultr-iam-operator,system:authenticated" \
  >"$pki/tokens.csv"
chmod 600 "$pki/tokens.csv"

# ---- free loopback ports -----------------------------------------------------------
declare -A taken=()
while read -r p; do taken[$p]=1; done < <(ss -Htan | awk '{n=split($4,a,":"); print a[n]}')
# Below the kernel's ephemeral range, so an outgoing connection cannot take the port
# between this check and the bind.
read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range
(( ephemeral_low > 12000 )) || ephemeral_low=32768
free_port() {
  local p
  while :; do
    p=$(( 10000 + (RANDOM * 32768 + RANDOM) % (ephemeral_low - 10000) ))
    [[ -z "${taken[$p]:-}" ]] && { taken[$p]=1; echo "$p"; return; }
  done
}
etcd_port=$(free_port); etcd_peer_port=$(free_port); api_port=$(free_port); cm_port=$(free_port)
echo "$api_port" >"$dir/apiserver-port"
echo "$bin" >"$dir/bin-dir"

# ---- kubeconfigs ----------------------------------------------------------------------
b64() { base64 -w0 "$1"; }
write_kubeconfig() { # FILE USER AUTH-YAML
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vio-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $2
  user:
$3
contexts:
- name: vio-local
  context:
    cluster: vio-local
    user: $2
current-context: vio-local
EOF
  chmod 600 "$1"
}
cert_auth() { printf '    client-certificate-data: %s\n    client-key-data: %s' "$(b64 "$pki/$1.crt")" "$(b64 "$pki/$1.key")"; }
write_kubeconfig "$dir/kubeconfig" admin "$(cert_auth admin)"
write_kubeconfig "$dir/controller-manager.kubeconfig" controller-manager "$(cert_auth controller-manager)"
write_kubeconfig "$dir/operator.kubeconfig" vultr-iam-operator "    token: $operator_token"

# ---- processes ------------------------------------------------------------------------
: >"$dir/pids"
# Fresh logs for a fresh start (spawn appends, so a restarted process keeps the story).
rm -f "$dir/etcd.log" "$dir/kube-apiserver.log" "$dir/kube-controller-manager.log"
fail() {
  log "$1"
  for f in etcd kube-apiserver kube-controller-manager; do
    [[ -f "$dir/$f.log" ]] && { echo "---- last lines of $dir/$f.log" >&2; tail -n 20 "$dir/$f.log" >&2; }
  done
  flock -u 9
  "$here/stop.sh" --dir "$dir" >&2 || true
  exit 1
}
# wait_for DESCRIPTION SECONDS CMD...
wait_for() {
  local what="$1" deadline=$(( $(date +%s) + $2 )); shift 2
  until "$@" >/dev/null 2>&1; do
    all_alive || fail "a process exited while waiting for $what"
    (( $(date +%s) < deadline )) || fail "timed out waiting for $what"
    sleep 0.2
  done
}

rm -rf "$dir/etcd"
spawn etcd "$bin/etcd" --name=vio --data-dir="$dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster="vio=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync --log-level=warn
etcd_ok() { curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"'; }
wait_for etcd 30 etcd_ok

# --endpoint-reconciler-type=none: a loopback advertise address is rejected by the
# endpoint reconciler of the `kubernetes` Service (fatal since 1.37); no pods use it here.
printf '%s\n' "$bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
  --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
  --endpoint-reconciler-type=none \
  --cert-dir="$dir/apiserver-certs" --profiling=false >"$dir/kube-apiserver.args"
spawn_apiserver
wait_for "kube-apiserver /readyz" 120 readyz

spawn kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$dir/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$cm_port" --cert-dir="$dir/controller-manager-certs" \
  --leader-elect=false --controllers='*' --use-service-account-credentials=false \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --profiling=false
cm_ok() { curl -fsSk --max-time 2 "https://127.0.0.1:$cm_port/healthz" >/dev/null 2>&1; }
wait_for "kube-controller-manager /healthz" 60 cm_ok

kubectl=("$bin/kubectl" --kubeconfig="$dir/kubeconfig" --request-timeout=10s)
wait_for "namespace default" 60 "${kubectl[@]}" get namespace default -o name
# Prove the namespace controller works: a namespace with content must go away.
probe="vio-startup-probe-$RANDOM"
"${kubectl[@]}" create namespace "$probe" >/dev/null
"${kubectl[@]}" -n "$probe" create configmap probe --from-literal=k=v >/dev/null
"${kubectl[@]}" delete namespace "$probe" --wait=false >/dev/null
ns_gone() { ! "${kubectl[@]}" get namespace "$probe" -o name >/dev/null 2>&1; }
wait_for "the namespace controller to delete namespace $probe" 90 ns_gone

if [[ -n "$watch_pid" ]]; then
  # Stops the control plane and deletes DIR once watch_pid has exited (even if it was
  # killed), comparing its start time so a recycled PID is not mistaken for it.
  watch_start=""
  if stat="$(cat "/proc/$watch_pid/stat" 2>/dev/null)"; then
    read -ra fields <<<"${stat##*) }"; watch_start="${fields[19]}"
  fi
  [[ -n "$watch_start" ]] || fail "--watch-pid $watch_pid: no such process"
  setsid bash -c '
    pid=$1 start=$2 stop=$3 dir=$4
    alive() { local s; s=$(cat /proc/$pid/stat 2>/dev/null) || return 1
              s=${s##*) }; set -- $s; [[ $1 != Z && ${20} == "$start" ]]; }
    while alive; do sleep 0.5; done
    exec "$stop" --dir "$dir" --purge' watchdog "$watch_pid" "$watch_start" "$here/stop.sh" "$dir" \
    >>"$dir/watchdog.log" 2>&1 </dev/null 9>&- &
  echo "watchdog $!" >>"$dir/pids"
fi

log "ready in $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')s: https://127.0.0.1:$api_port (state in $dir)"
print_exports
