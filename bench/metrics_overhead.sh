#!/usr/bin/env bash
# First measurement of what metrics cost: throughput and p99 of a trivial route with
# metrics (and blocking) on vs off, same release binary, interleaved runs (A B A B …) so
# machine noise hits both sides alike. Needs wrk (Debian: apt-get install -y wrk).
#
#   bash bench/metrics_overhead.sh [rounds] [seconds-per-run] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}; seconds=${2:-5}; connections=${3:-32}
route=/api/live

cargo build --release --quiet
bin=target/release/babylon
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

start() { # name port extra-env...
    local name=$1 port=$2; shift 2
    env ROCKET_CONFIG="$PWD/Rocket.toml" ROCKET_PROFILE=release ROCKET_PORT="$port" \
        ROCKET_LOG_LEVEL=off BABYLON_METRICS__EXPORT__PORT_RANGE=18001-18050 \
        BABYLON_DATABASES__MAIN__URL="sqlite://$tmp/$name.sqlite" "$@" \
        "$bin" >"$tmp/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port$route" >/dev/null && return; sleep 0.1; done
    echo "$name did not start"; cat "$tmp/$name.log"; exit 1
}
start on 18080
start off 18081 BABYLON_METRICS__ENABLED=false BABYLON_BLOCKING__ENABLED=false

run() { # port -> "requests/s p99_ms"
    wrk -t2 -c"$connections" -d"${seconds}s" --latency "http://127.0.0.1:$1$route" |
        awk '/Requests\/sec/ {rps=$2} /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v} END {printf "%.0f %.3f\n", rps, p99}'
}

printf '%-6s %-4s %12s %10s\n' round side 'requests/s' 'p99 ms'
for round in $(seq "$rounds"); do
    for side in on off; do
        port=18080; [ "$side" = off ] && port=18081
        read -r rps p99 < <(run $port)
        printf '%-6s %-4s %12s %10s\n' "$round" "$side" "$rps" "$p99"
        echo "$side $rps $p99" >>"$tmp/results"
    done
done
awk '{n[$1]++; r[$1]+=$2; p[$1]+=$3} END {
    printf "\nmean on:  %.0f req/s, p99 %.3f ms\nmean off: %.0f req/s, p99 %.3f ms\nratio on/off: throughput %.3f, p99 %.3f\n",
        r["on"]/n["on"], p["on"]/n["on"], r["off"]/n["off"], p["off"]/n["off"],
        (r["on"]/n["on"])/(r["off"]/n["off"]), (p["on"]/n["on"])/(p["off"]/n["off"]) }' "$tmp/results"
