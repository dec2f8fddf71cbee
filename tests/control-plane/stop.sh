#!/usr/bin/env bash
# Stops the control plane started by start.sh, by the PIDs recorded in DIR/pids:
# SIGTERM, then SIGKILL after a timeout. Removes DIR's runtime state (etcd data,
# certificates, kubeconfigs, pids) and keeps DIR/*.log; --purge removes DIR entirely.
#
# Usage: stop.sh [--dir DIR] [--purge] [--timeout SECONDS]
#   --dir DIR    state directory (default: $CLUSTER_DIR, else <repo>/.cluster)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${CLUSTER_DIR:-$(cd "$here/../.." && pwd)/.cluster}"
purge=false
timeout=15
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --dir=*) dir="${1#--dir=}"; shift ;;
    --purge) purge=true; shift ;;
    --timeout) timeout="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "stop.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ -d "$dir" ]] || exit 0
dir="$(cd "$dir" && pwd)"

exec 9>"$dir/.lock"
flock 9

# PIDs this script must not signal: itself and the watchdog that may have exec'd it.
self=("$$" "$PPID")
ours() { # PID: alive, not us, and its command line mentions DIR (guards against PID reuse)
  local pid="$1" s
  for s in "${self[@]}"; do [[ "$pid" == "$s" ]] && return 1; done
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir"
}

# terminate PID...: SIGTERM, wait up to $timeout seconds, then SIGKILL what is left.
terminate() {
  local pid alive deadline=$(( $(date +%s) + timeout ))
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  while :; do
    alive=()
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    [[ ${#alive[@]} -eq 0 ]] && break
    if (( $(date +%s) >= deadline )); then
      echo "control-plane: SIGKILL ${alive[*]} after ${timeout}s" >&2
      for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
      break
    fi
    sleep 0.1
  done
  # Each process led its own session: make sure nothing it spawned is left behind.
  for pid in "$@"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
# pids_of NAME...: the recorded PIDs of those names that are still ours.
pids_of() {
  [[ -s "$dir/pids" ]] || return 0
  local name pid want
  while read -r name pid; do
    for want in "$@"; do [[ "$name" == "$want" ]] && ours "$pid" && echo "$pid"; done
  done <"$dir/pids"
  return 0
}

# The watchdog first, so it does not race this stop; etcd last, so the API server can
# shut down cleanly.
for stage in watchdog "kube-controller-manager kube-apiserver" etcd; do
  # shellcheck disable=SC2086
  mapfile -t stage_pids < <(pids_of $stage)
  if [[ ${#stage_pids[@]} -gt 0 ]]; then terminate "${stage_pids[@]}"; fi
done

if $purge; then
  rm -rf "$dir"
else
  find "$dir" -mindepth 1 -maxdepth 1 ! -name '*.log' ! -name .lock -exec rm -rf {} +
fi
echo "control-plane: stopped ($dir)" >&2
