# The benchmarked sides, shared by bench/run.sh and bench/instructions.sh (sourced, not run).
#
#   on     babylon, metrics, tracing, request lines and blocking on (a deny list, and a
#          per-client rate limit too high to trip, so its bookkeeping runs on every
#          request), native histograms and exemplars included (the defaults)
#   on-otlp  `on` exporting every request's span (and its statements') over OTLP/gRPC to
#          examples/otlp_sink.rs, a receiver that drops what it gets
#   on-no-log  `on` without request lines (logging.requests = false)
#   on-no-headers  `on-no-log` without `traceparent` and `X-Request-Id` on answers
#          (tracing.response_headers = false): native histograms and exemplars alone
#   on-classic  the same without native histograms and tracing (so without exemplars):
#          what `on` was before they existed
#   off    the same binary with metrics, tracing, request lines and blocking off
#   stock  examples/stock_rocket_prometheus.rs: a minimal Rocket app with only
#          rocket_prometheus' stock fairing, serving the same trivial route, with the
#          system allocator (as one would write it)
#   stock-mimalloc  the same app with babylon's allocator (crates/babylon/src/memory.rs), so that
#          babylon's own request path can be told apart from what its allocator buys
#
# `prepare_sides tool...` checks the tools, builds the release binaries, and sets `tmp` (a
# scratch directory) and `pids` (the servers started), both cleaned up on exit. The caller
# may set `server_prefix` (e.g. "taskset -c 0" or a valgrind command line) to run servers
# under.

prepare_sides() { # tools the caller needs besides curl
    local tool
    for tool in curl "$@"; do
        command -v "$tool" >/dev/null || { echo "$tool is missing (Debian: apt-get install -y $tool)" >&2; exit 1; }
    done
    cargo build --release --quiet --bin babylon \
        --example stock_rocket_prometheus --example stock_rocket_prometheus_mimalloc \
        --example otlp_sink
    tmp=$(mktemp -d)
    pids=()
    trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
}

wait_up() { # port path [tries of 0.1 s]
    for _ in $(seq "${3:-100}"); do
        curl -fs "http://127.0.0.1:$1$2" >/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answers on $1$2" >&2
    exit 1
}

# Starts one side in the background, appends its pid to `pids` and waits until it answers.
start_side() { # side app-port export-port [tries]
    local side=$1 port=$2 export_port=$3 tries=${4:-100}
    local -a settings=()
    case "$side" in
        on) settings=(BABYLON_BLOCKING__DENY=192.0.2.0/24
                      BABYLON_BLOCKING__RATE_LIMIT='{per_second = 1000000, burst = 1000000}') ;;
        on-otlp) start_otlp_sink
                      settings=(BABYLON_BLOCKING__DENY=192.0.2.0/24
                      BABYLON_BLOCKING__RATE_LIMIT='{per_second = 1000000, burst = 1000000}'
                      BABYLON_TRACING__OTLP__ENDPOINT="$otlp_endpoint") ;;
        on-no-log) settings=(BABYLON_BLOCKING__DENY=192.0.2.0/24
                      BABYLON_BLOCKING__RATE_LIMIT='{per_second = 1000000, burst = 1000000}'
                      BABYLON_LOGGING__REQUESTS=false) ;;
        on-no-headers) settings=(BABYLON_BLOCKING__DENY=192.0.2.0/24
                      BABYLON_BLOCKING__RATE_LIMIT='{per_second = 1000000, burst = 1000000}'
                      BABYLON_LOGGING__REQUESTS=false BABYLON_TRACING__RESPONSE_HEADERS=false) ;;
        on-classic) settings=(BABYLON_BLOCKING__DENY=192.0.2.0/24
                      BABYLON_BLOCKING__RATE_LIMIT='{per_second = 1000000, burst = 1000000}'
                      BABYLON_LOGGING__REQUESTS=false
                      BABYLON_METRICS__NATIVE_HISTOGRAMS__ENABLED=false
                      BABYLON_TRACING__ENABLED=false) ;;
        off) settings=(BABYLON_METRICS__ENABLED=false BABYLON_BLOCKING__ENABLED=false
                      BABYLON_TRACING__ENABLED=false BABYLON_LOGGING__REQUESTS=false) ;;
        stock|stock-mimalloc) ;;
        *) echo "unknown side $side" >&2; exit 2 ;;
    esac
    if [[ "$side" = stock* ]]; then
        local example=stock_rocket_prometheus${side#stock}
        env ROCKET_PORT="$port" ROCKET_LOG_LEVEL=off \
            ${server_prefix:-} "target/release/examples/${example//-/_}" >"$tmp/$side.log" 2>&1 &
    else
        # The cache is off so that every database read reaches the database.
        env ROCKET_CONFIG="$PWD/Rocket.toml" ROCKET_PROFILE=release ROCKET_PORT="$port" \
            BABYLON_METRICS__EXPORT__PORT="$export_port" BABYLON_CACHE__ENABLED=false \
            BABYLON_DATABASES__MAIN__URL="sqlite://$tmp/$side.sqlite" "${settings[@]}" \
            ${server_prefix:-} target/release/babylon >"$tmp/$side.log" 2>&1 &
    fi
    pids+=($!)
    wait_up "$port" /api/live "$tries"
}

# Starts examples/otlp_sink.rs once, appends its pid to `pids`, and sets `otlp_endpoint`.
start_otlp_sink() {
    [ -n "${otlp_endpoint:-}" ] && return 0
    target/release/examples/otlp_sink >"$tmp/otlp_sink.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        otlp_endpoint=$(head -n1 "$tmp/otlp_sink.out")
        [[ "$otlp_endpoint" = http://* ]] && return 0
        sleep 0.1
    done
    echo "examples/otlp_sink.rs printed no endpoint" >&2
    exit 1
}

# Creates one item on a babylon side and prints its path, for the database read route.
item_path() { # app-port
    local id
    id=$(curl -fs -X POST "http://127.0.0.1:$1/api/items" -H 'Content-Type: application/json' \
        -d '{"name":"benchmark item","kind":"book"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
    echo "/api/items/$id"
}
