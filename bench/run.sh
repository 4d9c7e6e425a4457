#!/usr/bin/env bash
# babylon's benchmark harness: one command, interleaved repetitions (A B C A B C …) so
# that machine noise hits every side alike, ratios printed at the end. Needs wrk and curl
# (Debian: apt-get install -y wrk curl).
#
#   bash bench/run.sh [--rounds N] [--seconds S] [--connections C]
#
# Sides (same release binary for babylon; the setting is what differs): on, off, stock
# and stock-mimalloc, defined in bench/sides.sh.
# Routes: /api/live (trivial) and /api/items/<id> (a database read; the cache is off on
# both babylon sides so every request reads SQLite).
# Also: throughput of `on` while a scraper reads its export port every second, and the
# resident memory of `on` idle and after every round.
# Per-request and per-scrape micro-benchmarks: cargo bench --bench recording.
# Instruction counts per request, which repeat where timings do not: bench/instructions.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 seconds=5 connections=32
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
# Servers run on CPU 0 and wrk on CPU 1 (when there are two or more), so that the load
# generator does not steal cycles from the side being measured; pinning made runs on a
# 2-core machine far more repeatable.
server_cpu="" load_cpu=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    server_cpu="taskset -c 0" load_cpu="taskset -c 1"
fi
. bench/sides.sh
prepare_sides wrk

server_prefix=$server_cpu
start_side on 18080 18001
on_pid=${pids[-1]}
start_side off 18081 18002
start_side stock 18082 -
start_side stock-mimalloc 18083 -
db_on=$(item_path 18080)
db_off=$(item_path 18081)

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
echo "idle $(rss_kib "$on_pid")" >"$tmp/rss"

wrk_run() { # url -> "requests/s p50_ms p99_ms"
    $load_cpu wrk -t2 -c"$connections" -d"${seconds}s" --latency "$1" | awk '
        function ms(v) { if (v ~ /us$/) { sub(/us/, "", v); return v / 1000 }
                         if (v ~ /ms$/) { sub(/ms/, "", v); return v }
                         if (v ~ /s$/)  { sub(/s/, "", v);  return v * 1000 } return v }
        /Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
        END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}
scraping() { # scrape babylon-on's export port every second until killed
    while true; do $load_cpu curl -fs -o /dev/null http://127.0.0.1:18001/metrics; sleep 1; done
}

printf '%-5s %-22s %12s %9s %9s\n' round case 'requests/s' 'p50 ms' 'p99 ms'
cases=(live:on live:off live:stock live:stock-mimalloc db:on db:off live:on-scraped)
for round in $(seq "$rounds"); do
    # Odd rounds run the cases forwards, even rounds backwards, so that no side always
    # runs right after the same neighbour (a warm cache, a scrape just stopped).
    order=("${cases[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=(); for ((i = ${#cases[@]} - 1; i >= 0; i--)); do order+=("${cases[i]}"); done
    fi
    for case in "${order[@]}"; do
        case "$case" in
            live:on) url=http://127.0.0.1:18080/api/live ;;
            live:off) url=http://127.0.0.1:18081/api/live ;;
            live:stock) url=http://127.0.0.1:18082/api/live ;;
            live:stock-mimalloc) url=http://127.0.0.1:18083/api/live ;;
            db:on) url="http://127.0.0.1:18080$db_on" ;;
            db:off) url="http://127.0.0.1:18081$db_off" ;;
            live:on-scraped) url=http://127.0.0.1:18080/api/live ;;
        esac
        scraper=""
        if [ "$case" = live:on-scraped ]; then scraping & scraper=$!; fi
        read -r rps p50 p99 < <(wrk_run "$url")
        if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null; wait "$scraper" 2>/dev/null || true; fi
        printf '%-5s %-22s %12s %9s %9s\n' "$round" "$case" "$rps" "$p50" "$p99"
        echo "$round $case $rps $p50 $p99" >>"$tmp/results"
    done
    echo "round$round $(rss_kib "$on_pid")" >>"$tmp/rss"
done
scrape_bytes=$(curl -fs http://127.0.0.1:18001/metrics | wc -c)

# Ratios are paired within each round (on and off measured minutes apart, not the whole
# run apart) and the median over rounds is the result; min and max show the spread.
awk -v rounds="$rounds" -v bytes="$scrape_bytes" '
    function median(list,    parts, n, i, j, t) {
        n = split(list, parts, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && parts[j - 1] + 0 > parts[j] + 0; j--) {
            t = parts[j]; parts[j] = parts[j - 1]; parts[j - 1] = t }
        lo = parts[1]; hi = parts[n]
        return n % 2 ? parts[(n + 1) / 2] : (parts[n / 2] + parts[n / 2 + 1]) / 2
    }
    function ratio(label, a, b, field, target,    i, list, m) {
        list = ""
        for (i = 1; i <= rounds; i++) list = list " " (v[i, a, field] / v[i, b, field])
        m = median(list)
        printf "%-48s %6.3f  (rounds %.3f .. %.3f)  [%s]\n", label, m, lo, hi, target
    }
    FNR == NR { v[$1, $2, "rps"] = $3; v[$1, $2, "p50"] = $4; v[$1, $2, "p99"] = $5
                n[$2]++; r[$2] += $3; p50[$2] += $4; p99[$2] += $5; next }
    { rss[$1] = $2; order[++k] = $1 }
    END {
        printf "\nmeans over %d interleaved rounds\n", rounds
        printf "%-22s %12s %9s %9s\n", "case", "requests/s", "p50 ms", "p99 ms"
        split("live:on live:off live:stock live:stock-mimalloc db:on db:off live:on-scraped", cases, " ")
        for (i = 1; i <= 7; i++) { c = cases[i]; printf "%-22s %12.0f %9.3f %9.3f\n", c, r[c]/n[c], p50[c]/n[c], p99[c]/n[c] }
        printf "\nratios: median of the per-round ratios (target in brackets)\n"
        ratio("trivial route, on/off throughput", "live:on", "live:off", "rps", ">= 0.97")
        ratio("trivial route, on/off p99", "live:on", "live:off", "p99", "<= 1.05")
        ratio("db read route, on/off throughput", "db:on", "db:off", "rps", ">= 0.97")
        ratio("db read route, on/off p99", "db:on", "db:off", "p99", "<= 1.05")
        ratio("babylon on / stock rocket_prometheus throughput", "live:on", "live:stock", "rps", ">= 1.0")
        ratio("babylon on / stock, same allocator, throughput", "live:on", "live:stock-mimalloc", "rps", "info")
        ratio("stock with mimalloc / stock throughput", "live:stock-mimalloc", "live:stock", "rps", "info")
        ratio("scraped every 1 s / not scraped throughput", "live:on-scraped", "live:on", "rps", ">= 0.98")
        printf "\nexposition of babylon on: %d bytes per scrape\n", bytes
        printf "resident memory of babylon on (MiB): idle %.1f", rss["idle"] / 1024
        for (i = 2; i <= k; i++) printf ", after %s %.1f", order[i], rss[order[i]] / 1024
        printf "  [idle < 30, no growth]\n"
    }' "$tmp/results" "$tmp/rss"
