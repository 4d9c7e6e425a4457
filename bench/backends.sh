#!/usr/bin/env bash
# What a shared backend costs a request: p50/p99 latency with a feature off, on its
# in-process backend (memory) and on the shared Redis on 127.0.0.1:6379 (redis).
#
#   --subject cache       a cached read, GET /api/items/<id> (one HGET per read on Redis)
#   --subject rate_limit  GET /api/live through a per-client rate limit too high to trip
#                         (one EVALSHA of the GCRA script per request on Redis)
#
# wrk drives each side in turn, interleaved for `--rounds` rounds, and the script prints
# the median over rounds of wrk's p50 and p99 and of requests per second, and what Redis
# adds: the median (and the range) over rounds of the Redis side's p50 (p99) minus the
# memory side's of the same round. Needs wrk, curl and a Redis on
# 127.0.0.1:6379 (Debian: apt-get install -y wrk redis-server).
#
#   bash bench/backends.sh [--subject cache|rate_limit] [--rounds R] [--seconds S] [--connections C]
set -euo pipefail
cd "$(dirname "$0")/.."
subject=cache rounds=5 seconds=3 connections=4
while [ $# -gt 0 ]; do
    case "$1" in
        --subject) subject="$2"; shift 2 ;;
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

redis=(BABYLON_REDIS__URL=redis://127.0.0.1:6379 BABYLON_REDIS__KEY_PREFIX="$prefix")
limit="BABYLON_BLOCKING__RATE_LIMIT__PER_SECOND=1000000 BABYLON_BLOCKING__RATE_LIMIT__BURST=1000000"
case "$subject" in
    cache)
        declare -A settings=(
            [off]="BABYLON_CACHE__ENABLED=false"
            [memory]="BABYLON_CACHE__BACKEND=memory BABYLON_CACHE__TTL_SECONDS=3600"
            [redis]="BABYLON_CACHE__BACKEND=redis BABYLON_CACHE__TTL_SECONDS=3600") ;;
    rate_limit)
        declare -A settings=(
            [off]="BABYLON_CACHE__ENABLED=false"
            [memory]="BABYLON_CACHE__ENABLED=false $limit"
            [redis]="BABYLON_CACHE__ENABLED=false $limit BABYLON_BLOCKING__RATE_LIMIT__BACKEND=redis") ;;
    *) echo "unknown subject $subject (cache, rate_limit)" >&2; exit 2 ;;
esac

declare -A port=([off]=18390 [memory]=18391 [redis]=18392) path=()
for backend in off memory redis; do
    # Word splitting of the settings is intended: each word is one VAR=value.
    # shellcheck disable=SC2086
    env ROCKET_CONFIG="$PWD/Rocket.toml" ROCKET_PROFILE=release ROCKET_PORT="${port[$backend]}" \
        BABYLON_METRICS__EXPORT__ENABLED=false BABYLON_METRICS__SERVE_ON_MAIN_PORT=true \
        BABYLON_DATABASES__MAIN__URL="sqlite://$tmp/$backend.sqlite" "${redis[@]}" \
        ${settings[$backend]} target/release/babylon >"$tmp/$backend.log" 2>&1 &
    pids+=($!)
    wait_up "${port[$backend]}" /api/live
    case "$subject" in
        cache) path[$backend]=$(item_path "${port[$backend]}") ;;
        rate_limit) path[$backend]=/api/live ;;
    esac
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
        echo "$out" | awk '/Non-2xx/ {print $4}' >>"$tmp/$backend.non2xx"
    done
done

printf '%-8s %12s %12s %14s\n' backend 'p50 (us)' 'p99 (us)' 'requests/s'
for backend in off memory redis; do
    printf '%-8s %12.1f %12.1f %14.0f\n' "$backend" "$(median <"$tmp/$backend.p50")" \
        "$(median <"$tmp/$backend.p99")" "$(median <"$tmp/$backend.rps")"
done
# What Redis adds, round by round (the sides of one round ran back to back, so a drift of
# the machine's speed between rounds cancels out): the median and the range of the
# per-round differences.
added() { # p50|p99
    paste "$tmp/redis.$1" "$tmp/memory.$1" | awk '{print $1 - $2}' | sort -g \
        | awk '{ a[NR]=$1 } END { m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2;
                                  printf "%+.1f us (rounds: %+.1f to %+.1f)", m, a[1], a[NR] }'
}
echo
echo "$subject on redis over memory, per round: p50 $(added p50), p99 $(added p99); $rounds rounds of ${seconds} s, $connections connections"
metrics=$(curl -fs "http://127.0.0.1:${port[redis]}/metrics")
case "$subject" in
    cache) echo "redis side: $(echo "$metrics" | awk '/^rocket_cache_get_hits_total\{backend="redis"\}/ {print $2}') cache hits (every measured read should be one)" ;;
    rate_limit) echo "redis side: $(echo "$metrics" | awk '/^rocket_redis_commands_total\{alias="main",command="EVALSHA"\}/ {print $2}') checks in Redis, $(echo "$metrics" | awk '/^api_rate_limit_errors_total/ {print $2}') failed; non-2xx answers: $(cat "$tmp"/*.non2xx | awk '{s+=$1} END {print s+0}')" ;;
esac
