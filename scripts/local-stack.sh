#!/usr/bin/env bash
# The whole stack on one machine without Nix or Docker: babylon workers, Prometheus from
# the repository's prometheus.yml and rules, and Grafana (if installed) provisioned with
# the repository's dashboards — what the seed's docker-compose file did.
#
#   scripts/local-stack.sh [--workers N] [--debug] [--dry-run]
#
# Needs: cargo; prometheus (Debian: apt-get install prometheus); grafana-server or grafana
# (optional: from Grafana's own packages). State lives in .stack/ (git-ignored); workers
# announce themselves in file_sd/ for the `babylon_file_sd` job. Ctrl-C stops everything.
#   babylon      http://127.0.0.1:8080 (worker i on 8080+i-1), metrics on 8001+…
#   Prometheus   http://127.0.0.1:9090
#   Grafana      http://127.0.0.1:3000 (admin / $GRAFANA_ADMIN_PASSWORD, default "admin")
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
workers=2 profile=release dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers="$2"; shift 2 ;;
        --debug) profile=debug; shift ;;
        --dry-run) dry_run=true; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$workers" in ''|*[!0-9]*|0) echo "--workers needs a positive number" >&2; exit 2 ;; esac

cd "$repo"
state="$repo/.stack"
if $dry_run; then
    # Nothing is written in a dry run: show where the provisioning would go.
    state="$(mktemp -d)"
    trap 'rm -rf "$state"' EXIT
    echo "(dry run: provisioning shown in $state, removed on exit)"
fi
mkdir -p "$state/grafana/provisioning/datasources" "$state/grafana/provisioning/dashboards" \
         "$state/grafana/data" "$state/prometheus"
$dry_run || mkdir -p "$repo/file_sd"

# Grafana provisioning: one Prometheus datasource with a fixed uid, and the repo's dashboards.
cat > "$state/grafana/provisioning/datasources/babylon.yml" <<YAML
apiVersion: 1
datasources:
  - name: Prometheus
    type: prometheus
    uid: babylon-prometheus
    url: http://127.0.0.1:9090
    access: proxy
    isDefault: true
YAML
cat > "$state/grafana/provisioning/dashboards/babylon.yml" <<YAML
apiVersion: 1
providers:
  - name: babylon
    type: file
    options:
      path: $repo/dashboards
YAML

run() { # prints the command; runs it in the background unless --dry-run
    echo "+ $*"
    if ! $dry_run; then "$@" & fi
}

if ! $dry_run; then
    if [ "$profile" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
fi
bin="$repo/target/$profile/babylon"
$dry_run || trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM

for i in $(seq "$workers"); do
    run env ROCKET_CONFIG="$repo/Rocket.toml" ROCKET_PROFILE="$profile" ROCKET_PORT=$((8079 + i)) \
        BABYLON_DATABASES__MAIN__URL="sqlite://$state/babylon.sqlite" \
        BABYLON_METRICS__EXPORT__FILE_SD__DIRECTORY="$repo/file_sd" "$bin"
done
run prometheus --config.file="$repo/prometheus.yml" --storage.tsdb.path="$state/prometheus" \
    --web.listen-address=127.0.0.1:9090
grafana=""
command -v grafana-server >/dev/null 2>&1 && grafana="grafana-server"
[ -z "$grafana" ] && command -v grafana >/dev/null 2>&1 && grafana="grafana server"
if [ -n "$grafana" ]; then
    # Packaged Grafana finds conf/defaults.ini under its home path (GRAFANA_HOME overrides).
    home="${GRAFANA_HOME:-/usr/share/grafana}"
    run env GF_PATHS_PROVISIONING="$state/grafana/provisioning" GF_PATHS_DATA="$state/grafana/data" \
        GF_SERVER_HTTP_ADDR=127.0.0.1 GF_SERVER_HTTP_PORT=3000 \
        GF_SECURITY_ADMIN_PASSWORD="${GRAFANA_ADMIN_PASSWORD:-admin}" $grafana --homepath "$home"
else
    echo "Grafana not found: Prometheus and babylon run without it (import dashboards/*.json by hand)"
fi
$dry_run && exit 0
wait
