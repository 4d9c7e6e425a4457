#!/usr/bin/env bash
# Soak: a bounded load run on loopback at high concurrency with a Prometheus-style scrape
# every second, sampling the worker's resident memory and open file descriptors. Passes
# when nothing failed and memory and descriptors stayed flat. Needs wrk and curl.
#
#   bash bench/soak.sh [--minutes M] [--connections C]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=3 connections=256
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
seconds=$((minutes * 60))
cargo build --release --quiet --bin babylon
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

env ROCKET_CONFIG="$PWD/Rocket.toml" ROCKET_PROFILE=release ROCKET_PORT=18180 \
    BABYLON_METRICS__EXPORT__PORT=18101 BABYLON_DATABASES__MAIN__URL="sqlite://$tmp/soak.sqlite" \
    target/release/babylon >"$tmp/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
for _ in $(seq 100); do curl -fs http://127.0.0.1:18180/api/live >/dev/null && break; sleep 0.1; done
for n in $(seq 20); do
    curl -fs -o /dev/null -X POST http://127.0.0.1:18180/api/items -H 'Content-Type: application/json' \
        -d "{\"name\":\"soak $n\",\"kind\":\"book\"}"
done

sample() { # seconds-since-start rss-kib open-fds
    echo "$1 $(awk '/^VmRSS/ {print $2}' "/proc/$worker/status") $(ls "/proc/$worker/fd" | wc -l)"
}
half=$((connections / 2))
wrk -t1 -c"$half" -d"${seconds}s" http://127.0.0.1:18180/api/live >"$tmp/live.txt" 2>&1 &
pids+=($!); live=$!
wrk -t1 -c"$half" -d"${seconds}s" "http://127.0.0.1:18180/api/items?per_page=5" >"$tmp/items.txt" 2>&1 &
pids+=($!); items=$!
scrape_failures=0 scrapes=0
start=$(date +%s)
sample 0 >"$tmp/samples"
while kill -0 "$live" 2>/dev/null; do
    now=$(($(date +%s) - start))
    if curl -fs -o /dev/null --max-time 2 http://127.0.0.1:18101/metrics; then scrapes=$((scrapes + 1)); else scrape_failures=$((scrape_failures + 1)); fi
    [ $((now % 10)) -eq 0 ] && sample "$now" >>"$tmp/samples"
    sleep 1
done
wait "$live" "$items" || true
sleep 6 # let keep-alive connections close before the last sample
sample end >>"$tmp/samples"

errors() { awk '/Socket errors|Non-2xx/ {print}' "$1"; }
requests() { awk '/requests in/ {print $1}' "$1"; }
echo "soak: $minutes min, $connections connections (live + items), scrape every second"
echo "requests: /api/live $(requests "$tmp/live.txt"), /api/items $(requests "$tmp/items.txt")"
echo "wrk errors: $(errors "$tmp/live.txt"; errors "$tmp/items.txt" | tr '\n' ' ')(none if empty); scrape failures: $scrape_failures of $((scrapes + scrape_failures))"
echo "samples (seconds, RSS KiB, open fds):"
column -t "$tmp/samples"
awk '$1 == "10" { rss0 = $2; fd0 = $3 } { rss = $2; fd = $3; if ($2 > max) max = $2 }
     END { printf "RSS after 10 s %d KiB, max %d KiB, end %d KiB; fds after 10 s %d, end %d\n", rss0, max, rss, fd0, fd }' "$tmp/samples"
if [ -n "$(errors "$tmp/live.txt"; errors "$tmp/items.txt")" ] || [ "$scrape_failures" -ne 0 ]; then
    echo "FAILED: errors during the soak"; exit 1
fi
