#!/usr/bin/env bash
# Instructions per request of GET /api/live through Rocket's local client, with metrics
# and blocking each on or off, counted by callgrind. Unlike wall-clock benchmarks the
# counts repeat exactly for the same binary, so a change of a few dozen instructions per
# request shows. Needs valgrind (Debian: apt-get install -y valgrind).
#
#   bash bench/instructions.sh [requests]
#
# Each configuration runs twice, with 1,000 and with 1,000 + N requests; the difference
# divided by N leaves start-up out.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-10000}
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install -y valgrind)" >&2; exit 1; }
cargo build --release --quiet --example request_loop
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

instructions() { # metrics blocking requests -> total instructions
    valgrind --tool=callgrind --callgrind-out-file="$tmp/out" \
        target/release/examples/request_loop "$@" 2>"$tmp/err" >/dev/null \
        || { cat "$tmp/err" >&2; exit 1; }
    sed -n 's/^summary: //p' "$tmp/out"
}

printf '%-9s %-9s %24s\n' metrics blocking 'instructions per request'
declare -A per_request
for metrics in off on; do
    for blocking in off on; do
        base=$(instructions "$metrics" "$blocking" 1000)
        more=$(instructions "$metrics" "$blocking" $((1000 + requests)))
        per_request[$metrics$blocking]=$(( (more - base) / requests ))
        printf '%-9s %-9s %24s\n' "$metrics" "$blocking" "${per_request[$metrics$blocking]}"
    done
done
off=${per_request[offoff]}
echo
for case in "metrics:onoff" "blocking:offon" "both:onon"; do
    name=${case%%:*} key=${case#*:}
    printf 'cost of %-8s %6d instructions per request (%+.1f %%)\n' "$name" \
        $(( ${per_request[$key]} - off )) "$(echo "${per_request[$key]} $off" | awk '{print ($1 - $2) * 100 / $2}')"
done
