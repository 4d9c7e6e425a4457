#!/usr/bin/env bash
# Latency of a cached read (GET /api/items/<id>) with each cache backend: off (every read
# goes to SQLite), memory (moka, in the process) and redis (the shared Redis on
# 127.0.0.1:6379, `cache.backend = "redis"`). wrk drives each side in turn, interleaved
# for `--rounds` rounds, and the script prints the median over rounds of wrk's p50 and p99
# and of requests per second; the Redis cache's added latency is its p50 minus memory's.
# Needs wrk, curl and a Redis on 127.0.0.1:6379 (Debian: apt-get install -y wrk redis-server).
#
#   bash bench/cache_backends.sh [--rounds R] [--seconds S] [--connections C]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 seconds=3 connections=4
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
. bench/sides.sh
prepare_sides wrk redis-cli
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "no Redis on 127.0.0.1:6379" >&2; exit 1; }
prefix="babylon-bench-$$"
trap 'kill "${pids[@]}" 2>/dev/null || true; redis-cli -h 127.0.0.1 --scan --pattern "$prefix:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null; rm -rf "$tmp"' EXIT

declare -A port=([off]=18390 [memory]=18391 [redis]=18392) path=()
for backend in off memory redis; do
    case "$backend" in
        off) settings=(BABYLON_CACHE__ENABLED=false) ;;
        memory) settings=(BABYLON_CACHE__BACKEND=memory BABYLON_CACHE__TTL_SECONDS=3600) ;;
        redis) settings=(BABYLON_CACHE__BACKEND=redis BABYLON_CACHE__TTL_SECONDS=3600
                         BABYLON_REDIS__URL=redis://127.0.0.1:6379 BABYLON_REDIS__KEY_PREFIX="$prefix") ;;
    esac
    env ROCKET_CONFIG="$PWD/Rocket.toml" ROCKET_PROFILE=release ROCKET_PORT="${port[$backend]}" \
        BABYLON_METRICS__EXPORT__ENABLED=false BABYLON_METRICS__SERVE_ON_MAIN_PORT=true BABYLON_DATABASES__MAIN__URL="sqlite://$tmp/$backend.sqlite" \
        "${settings[@]}" target/release/babylon >"$tmp/$backend.log" 2>&1 &
    pids+=($!)
    wait_up "${port[$backend]}" /api/live
    path[$backend]=$(item_path "${port[$backend]}")
    curl -fs -o /dev/null "http://127.0.0.1:${port[$backend]}${path[$backend]}"
done

# wrk's latency in microseconds, from "1.23ms", "456.78us" or "1.01s".
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/, "", v); print v } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v*1000 } else { sub(/s$/, "", v); print v*1000000 } }'; }
median() { sort -g | awk '{ a[NR]=$1 } END { print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }'; }

for round in $(seq "$rounds"); do
    order=(off memory redis)
    [ $((round % 2)) -eq 0 ] && order=(redis memory off)
    for backend in "${order[@]}"; do
        out=$(wrk -t1 -c"$connections" -d"${seconds}s" --latency "http://127.0.0.1:${port[$backend]}${path[$backend]}")
        echo "$out" | awk '$1 == "50%" {print $2}' | to_us >>"$tmp/$backend.p50"
        echo "$out" | awk '$1 == "99%" {print $2}' | to_us >>"$tmp/$backend.p99"
        echo "$out" | awk '/Requests\/sec/ {print $2}' >>"$tmp/$backend.rps"
    done
done

printf '%-8s %12s %12s %14s\n' backend 'p50 (us)' 'p99 (us)' 'requests/s'
for backend in off memory redis; do
    printf '%-8s %12.1f %12.1f %14.0f\n' "$backend" "$(median <"$tmp/$backend.p50")" \
        "$(median <"$tmp/$backend.p99")" "$(median <"$tmp/$backend.rps")"
done
memory_p50=$(median <"$tmp/memory.p50") redis_p50=$(median <"$tmp/redis.p50")
memory_p99=$(median <"$tmp/memory.p99") redis_p99=$(median <"$tmp/redis.p99")
echo
echo "redis cache over memory: p50 +$(awk -v a="$redis_p50" -v b="$memory_p50" 'BEGIN {printf "%.1f", a-b}') us, p99 +$(awk -v a="$redis_p99" -v b="$memory_p99" 'BEGIN {printf "%.1f", a-b}') us ($rounds rounds of ${seconds} s, $connections connections)"
hits=$(curl -fs "http://127.0.0.1:${port[redis]}/metrics" | awk '/^rocket_cache_get_hits_total\{backend="redis"\}/ {print $2}')
echo "redis side: $hits cache hits (every measured read should be one)"
