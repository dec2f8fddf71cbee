#!/usr/bin/env bash
# Restarts the kube-apiserver of a control plane started by start.sh: stops it (SIGTERM,
# SIGKILL after a timeout, or SIGKILL at once with --kill) and starts it again with the
# same command line (DIR/kube-apiserver.args): same port, certificates and etcd, whose
# data is kept. Waits for /readyz. For tests that need an API server outage; never use
# it on a control plane other tests share.
#
# Usage: restart-apiserver.sh --dir DIR [--kill] [--down SECONDS] [--timeout SECONDS]
#   --down SECONDS  stay down this long before starting again (default 0)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir=""
hard=false
down=0
timeout=15
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --dir=*) dir="${1#--dir=}"; shift ;;
    --kill) hard=true; shift ;;
    --down) down="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "restart-apiserver.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ -n "$dir" && -s "$dir/kube-apiserver.args" && -s "$dir/pids" ]] || {
  echo "restart-apiserver.sh: --dir must name a running control plane" >&2; exit 2; }
dir="$(cd "$dir" && pwd)"
log() { echo "control-plane: $*" >&2; }
# shellcheck source=lib.sh
source "$here/lib.sh"

exec 9>"$dir/.lock"
flock 9

pid="$(awk '$1 == "kube-apiserver" { p = $2 } END { print p }' "$dir/pids")"
# Only a process whose command line names DIR (guards against PID reuse).
if [[ -n "$pid" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir"; then
  if $hard; then kill -KILL "$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
  deadline=$(( $(date +%s) + timeout ))
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) >= deadline )); then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.1
  done
fi
grep -v '^kube-apiserver ' "$dir/pids" >"$dir/pids.new" || true
mv "$dir/pids.new" "$dir/pids"
sleep "$down"

started=$(date +%s.%N)
spawn_apiserver
deadline=$(( $(date +%s) + 120 ))
until readyz; do
  (( $(date +%s) < deadline )) || { log "kube-apiserver not ready 120s after the restart"; exit 1; }
  sleep 0.2
done
log "kube-apiserver restarted in $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')s"
