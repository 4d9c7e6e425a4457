# `nix run .#stack`: babylon workers, Prometheus and Grafana on this machine, like the
# seed's docker-compose file (and scripts/local-stack.sh without Nix).
#
#   babylon      http://127.0.0.1:8080 (worker i on 8080+i-1), metrics on 8001, 8002, …
#   Prometheus   http://127.0.0.1:9090, from the repository's prometheus.yml and rules
#   Grafana      http://127.0.0.1:3000, admin / $GRAFANA_ADMIN_PASSWORD (default "admin"),
#                datasource uid babylon-prometheus and the repository's dashboards
#
# State (SQLite file, Prometheus data, Grafana data and provisioning, file_sd targets)
# lives in ${XDG_STATE_HOME:-~/.local/state}/babylon-stack. BABYLON_STACK_WORKERS sets
# the number of workers (default 2). Ctrl-C stops everything.
{
  writeShellApplication,
  writeText,
  babylon,
  prometheus,
  grafana,
  coreutils,
}:
let
  share = "${babylon}/share/babylon";
  prometheusAddress = "127.0.0.1:9090";

  # Grafana's provisioning, rendered from grafana/provisioning.json, the definition that
  # scripts/local-stack.sh renders too (tests/grafana_provisioning.rs compares them), as
  # files: { datasources = <file>; dashboards = <file>; }. JSON is YAML to Grafana.
  provisioning = (import ../grafana/provisioning.nix).render {
    prometheus_url = "http://${prometheusAddress}";
    dashboards_dir = "${share}/dashboards";
  };
  provisioningFile =
    kind: settings: writeText "babylon-grafana-${kind}.yml" (builtins.toJSON settings);
  grafanaProvisioning = builtins.mapAttrs provisioningFile provisioning;
in
writeShellApplication {
  name = "babylon-stack";
  runtimeInputs = [
    babylon
    prometheus
    grafana
    coreutils
  ];
  text = ''
    share=${share}
    state="''${XDG_STATE_HOME:-$HOME/.local/state}/babylon-stack"
    workers="''${BABYLON_STACK_WORKERS:-2}"
    case "$workers" in
      "" | *[!0-9]* | 0)
        echo "BABYLON_STACK_WORKERS must be a positive number" >&2
        exit 2
        ;;
    esac

    mkdir -p "$state/file_sd" "$state/prometheus-data" \
      "$state/grafana/data" "$state/grafana/logs" "$state/grafana/plugins" \
      "$state/grafana/provisioning/datasources" "$state/grafana/provisioning/dashboards"

    # The repository's prometheus.yml resolves rule_files and file_sd/*.json next to
    # itself: link it and its rules into the state directory, beside a writable file_sd/.
    ln -sfn "$share/prometheus.yml" "$state/prometheus.yml"
    ln -sfn "$share/prometheus" "$state/prometheus"

    # Grafana provisioning: the datasource with the uid the dashboards expect, and the
    # packaged dashboards, from grafana/provisioning.json.
    ln -sfn ${grafanaProvisioning.datasources} "$state/grafana/provisioning/datasources/babylon.yml"
    ln -sfn ${grafanaProvisioning.dashboards} "$state/grafana/provisioning/dashboards/babylon.yml"
    # Grafana encrypts its stored secrets with this key: made once, kept.
    if [ ! -s "$state/grafana/secret-key" ]; then
      (umask 077 && head -c 32 /dev/urandom | base64 > "$state/grafana/secret-key")
    fi

    pids=()
    trap 'kill "''${pids[@]}" 2>/dev/null || true' EXIT INT TERM

    for i in $(seq "$workers"); do
      ROCKET_CONFIG="$share/Rocket.toml" ROCKET_PROFILE=release ROCKET_PORT=$((8079 + i)) \
        STATE_DIRECTORY="$state" \
        BABYLON_DATABASES__MAIN__URL="sqlite://$state/babylon.sqlite" \
        BABYLON_METRICS__EXPORT__FILE_SD__DIRECTORY="$state/file_sd" \
        babylon &
      pids+=("$!")
    done

    # Exemplars, and native histograms from babylon's protobuf format (see prometheus.yml).
    prometheus --config.file="$state/prometheus.yml" \
      --storage.tsdb.path="$state/prometheus-data" \
      --web.listen-address=${prometheusAddress} \
      --enable-feature=exemplar-storage,native-histograms &
    pids+=("$!")

    GF_PATHS_DATA="$state/grafana/data" \
      GF_PATHS_LOGS="$state/grafana/logs" \
      GF_PATHS_PLUGINS="$state/grafana/plugins" \
      GF_PATHS_PROVISIONING="$state/grafana/provisioning" \
      GF_SERVER_HTTP_ADDR=127.0.0.1 \
      GF_SERVER_HTTP_PORT=3000 \
      GF_SECURITY_ADMIN_PASSWORD="''${GRAFANA_ADMIN_PASSWORD:-admin}" \
      GF_SECURITY_SECRET_KEY="$(cat "$state/grafana/secret-key")" \
      GF_ANALYTICS_REPORTING_ENABLED=false \
      grafana server --homepath ${grafana}/share/grafana &
    pids+=("$!")

    echo "babylon-stack: $workers workers on 8080+, Prometheus on 9090, Grafana on 3000; state in $state" >&2
    # Stop everything as soon as one process ends (a worker that failed to start, …).
    wait -n
  '';
  # What tests/grafana_provisioning.rs reads (through nix/tests/grafana-provisioning.nix).
  passthru = { inherit grafanaProvisioning; };
}
