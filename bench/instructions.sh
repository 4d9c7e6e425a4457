#!/usr/bin/env bash
# User-space instructions per HTTP request of each benchmark side (bench/sides.sh), counted
# by callgrind in the real server while wrk drives it. Unlike requests per second these
# counts repeat (within ~0.3 % here) on a shared, noisy machine, so a change of a few dozen
# instructions per request shows. Kernel time (sockets, scheduling) is not counted: it is
# the same for every side, so the ratios below overstate the share of user-space costs.
# Needs valgrind, wrk and curl (Debian: apt-get install -y valgrind wrk curl).
#
#   bash bench/instructions.sh [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=5
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
. bench/sides.sh
prepare_sides valgrind wrk
# Here, not in `count`'s subshell: one receiver for every on-otlp count, stopped on exit.
start_otlp_sink

# Counts one side on one path: start-up and the first requests are zeroed away, then
# the counters are dumped after wrk's run and divided by the requests wrk completed.
count() { # side path-or-"db" -> instructions per request
    local side=$1 path=$2 pid requests total
    server_prefix="valgrind --tool=callgrind --callgrind-out-file=$tmp/$side.out"
    start_side "$side" 18190 18191 600 >&2
    pid=${pids[-1]}
    if [ "$path" = db ]; then path=$(item_path 18190); fi
    curl -fs -o /dev/null "http://127.0.0.1:18190$path"
    callgrind_control -z "$pid" >/dev/null 2>&1
    requests=$(wrk -t1 -c4 -d"${seconds}s" "http://127.0.0.1:18190$path" | awk '/requests in/ {print $1}')
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    total=$(awk '/^summary:/ {print $2}' "$tmp/$side.out.1")
    rm -f "$tmp/$side.out"*
    echo $((total / requests))
}

printf '%-24s %26s\n' case 'instructions per request'
declare -A per_request
for case in live:on live:on-otlp live:on-no-log live:on-no-headers live:on-classic live:off live:stock live:stock-mimalloc db:on db:on-otlp db:on-classic db:off; do
    side=${case#*:} path=/api/live
    if [ "${case%%:*}" = db ]; then path=db; fi
    per_request[$case]=$(count "$side" "$path")
    printf '%-24s %26s\n' "$case" "${per_request[$case]}"
done
ratio() { echo "$1 $2" | awk '{printf "%.3f", $1 / $2}'; }
echo
echo "instruction ratios (user space only; a throughput ratio is this diluted by kernel time)"
printf 'trivial route, off/on      %s\n' "$(ratio "${per_request[live:off]}" "${per_request[live:on]}")"
printf 'trivial route, on/classic  %s\n' "$(ratio "${per_request[live:on]}" "${per_request[live:on-classic]}")"
printf 'no headers/classic         %s\n' "$(ratio "${per_request[live:on-no-headers]}" "${per_request[live:on-classic]}")"
printf 'request line cost          %d instructions per request\n' \
    $((per_request[live:on] - per_request[live:on-no-log]))
printf 'span export cost, trivial  %d instructions per request (one span)\n' \
    $((per_request[live:on-otlp] - per_request[live:on]))
printf 'span export cost, db read  %d instructions per request (two spans)\n' \
    $((per_request[db:on-otlp] - per_request[db:on]))
printf 'db read route, off/on      %s\n' "$(ratio "${per_request[db:off]}" "${per_request[db:on]}")"
printf 'trivial route, stock/on    %s\n' "$(ratio "${per_request[live:stock]}" "${per_request[live:on]}")"
printf 'same allocator, stock/on   %s\n' "$(ratio "${per_request[live:stock-mimalloc]}" "${per_request[live:on]}")"
printf 'metrics and blocking cost  %d instructions per request\n' \
    $((per_request[live:on] - per_request[live:off]))
