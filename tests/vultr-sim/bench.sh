#!/usr/bin/env bash
# Throughput of the simulator on loopback with the rate limit off.
#
#   tests/vultr-sim/bench.sh            # or: make bench-sim
#   BENCH_DURATION=30s BENCH_THREADS=2 BENCH_CONNECTIONS=50 tests/vultr-sim/bench.sh
#
# Builds the release binary, starts it with --demo --rate-limit 0, adds 1,000 users
# through the admin API (so a page of 100 is full), runs wrk against two listings,
# prints the figures and stops the simulator.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
duration="${BENCH_DURATION:-10s}"
threads="${BENCH_THREADS:-2}"
connections="${BENCH_CONNECTIONS:-50}"
key="bench-key"

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "installing $1 ..." >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq >/dev/null
        $sudo apt-get install -y -qq "$1" >/dev/null
    fi
}
need wrk
need curl

cargo build --release --quiet -p vultr-sim --manifest-path "$repo/Cargo.toml"
target="${CARGO_TARGET_DIR:-$repo/target}"
bin="$target/release/vultr-sim"

out="$(mktemp)"
"$bin" --demo --rate-limit 0 --api-key "$key" --listen 127.0.0.1:0 >"$out" 2>/dev/null &
sim_pid=$!
cleanup() {
    kill -TERM "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
    rm -f "$out"
}
trap cleanup EXIT

url=""
for _ in $(seq 100); do
    url="$(sed -n 's/^listening on //p' "$out")"
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "vultr-sim did not start" >&2; exit 1; }

# 1,000 extra users, 100 of them attached to compute-admin.
{
    printf '{"users":['
    for i in $(seq 1 1000); do
        [ "$i" -gt 1 ] && printf ','
        printf '{"id":"bench-%d","email":"bench%d@example.com","name":"Bench User%d"}' "$i" "$i" "$i"
    done
    printf '],"user_attachments":['
    for i in $(seq 1 100); do
        [ "$i" -gt 1 ] && printf ','
        printf '{"policy":"compute-admin","user":"bench-%d"}' "$i"
    done
    printf ']}'
} | curl -fsS -X POST --data-binary @- "$url/_sim/seed"

policy_users="$url/v2/policies/3c1d7a52-8e4b-4f6a-b2d9-7a0e5c4b1f02/users"
users_page="$url/v2/users?per_page=100"
for target_url in "$policy_users" "$users_page"; do
    # A sanity check that the request is answered 200 with the key.
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$target_url")"
    [ "$code" = 200 ] || { echo "GET $target_url answered $code" >&2; exit 1; }
done

echo "vultr-sim $url, wrk -t$threads -c$connections -d$duration, $(nproc) cores"
for target_url in "$policy_users" "$users_page"; do
    echo
    echo "== GET ${target_url#"$url"}"
    # wrk prints "Non-2xx or 3xx responses" when any request failed.
    wrk -t"$threads" -c"$connections" -d"$duration" --latency \
        -H "Authorization: Bearer $key" "$target_url" | sed -n '/Thread Stats/,$p'
done
