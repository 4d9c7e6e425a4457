#!/usr/bin/env bash
# The whole stack on one machine without Nix or Docker: babylon workers, Prometheus from
# the repository's prometheus.yml and rules, and Grafana (if installed) provisioned with
# the repository's dashboards — what the seed's docker-compose file did.
#
#   scripts/local-stack.sh [--workers N] [--debug] [--dry-run] [--provision-only DIR]
#
# Needs: cargo; python3; prometheus (Debian: apt-get install prometheus); grafana-server
# or grafana (optional: from Grafana's own packages). State lives in .stack/ (git-ignored);
# workers announce themselves in file_sd/ for the `babylon_file_sd` job. Ctrl-C stops
# everything. --provision-only DIR only writes Grafana's provisioning (from
# grafana/provisioning.json) into DIR/datasources/ and DIR/dashboards/, and exits.
#   babylon      http://127.0.0.1:8080 (worker i on 8080+i-1), metrics on 8001+…
#   Prometheus   http://127.0.0.1:9090
#   Grafana      http://127.0.0.1:3000 (admin / $GRAFANA_ADMIN_PASSWORD, default "admin")
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
workers=2 profile=release dry_run=false provision_only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers="$2"; shift 2 ;;
        --debug) profile=debug; shift ;;
        --dry-run) dry_run=true; shift ;;
        --provision-only) provision_only="${2:?--provision-only needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$workers" in ''|*[!0-9]*|0) echo "--workers needs a positive number" >&2; exit 2 ;; esac

prometheus_address=127.0.0.1:9090
# Before grafana/provisioning.json, this script named the datasource "Prometheus". Grafana
# does not rename a provisioned datasource: it would add a second one with the same uid
# and fail to start on an old .stack/. The old name is deleted first (deleteDatasources).
old_datasource_name="Prometheus"

# Grafana provisioning: DIR/datasources/babylon.yml and DIR/dashboards/babylon.yml, from
# grafana/provisioning.json, which nix/stack.nix renders too: every string "@name@" in it
# becomes the value given here. Grafana reads YAML, and JSON is YAML.
provision() { # provision DIR
    command -v python3 >/dev/null 2>&1 || {
        echo "python3 is needed to write Grafana's provisioning (Debian: apt-get install python3)" >&2
        exit 1
    }
    mkdir -p "$1/datasources" "$1/dashboards"
    python3 - "$repo/grafana/provisioning.json" "$1" "$old_datasource_name" \
        prometheus_url="http://$prometheus_address" dashboards_dir="$repo/dashboards" <<'PY'
import json, re, sys

source, out, old_name = sys.argv[1:4]
values = dict(arg.split("=", 1) for arg in sys.argv[4:])


def fill(value):
    if isinstance(value, dict):
        return {key: fill(item) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item) for item in value]
    if isinstance(value, str):
        placeholder = re.fullmatch(r"@([a-z_]+)@", value)
        if placeholder:
            name = placeholder.group(1)
            if name not in values:
                sys.exit(f"{source}: no value given for @{name}@")
            return values[name]
    return value


with open(source) as file:
    definition = json.load(file)
files = {kind: fill(definition[kind]) for kind in ("datasources", "dashboards")}
if old_name:
    files["datasources"]["deleteDatasources"] = [{"name": old_name, "orgId": 1}]
for kind, content in files.items():
    with open(f"{out}/{kind}/babylon.yml", "w") as file:
        json.dump(content, file, indent=2)
        file.write("\n")
PY
}

if [ -n "$provision_only" ]; then
    provision "$provision_only"
    exit 0
fi

cd "$repo"
state="$repo/.stack"
if $dry_run; then
    # Nothing is written in a dry run: show where the provisioning would go.
    state="$(mktemp -d)"
    trap 'rm -rf "$state"' EXIT
    echo "(dry run: provisioning shown in $state, removed on exit)"
fi
mkdir -p "$state/grafana/data" "$state/prometheus"
$dry_run || mkdir -p "$repo/file_sd"

provision "$state/grafana/provisioning"

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
# Exemplars, and native histograms from babylon's protobuf format (see prometheus.yml).
run prometheus --config.file="$repo/prometheus.yml" --storage.tsdb.path="$state/prometheus" \
    --web.listen-address="$prometheus_address" --enable-feature=exemplar-storage,native-histograms
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
