# NixOS VM test of services.babylon: two instances on SQLite with a metrics token,
# Prometheus scraping both, Grafana provisioned, nginx in front.
#
#   nix build .#checks.x86_64-linux.vm -L
#
# Needs a Linux machine with KVM; the secrets below are store files, fine in a test only.
{
  pkgs,
  # The flake's nixosModules.default, as users import it.
  module,
  # The package that module must run (the flake's build).
  package,
}:
let
  metricsToken = "vm-test-token";
  grafanaPassword = "vm-test-password";
in
pkgs.testers.runNixOSTest {
  name = "babylon";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ module ];

      services.babylon = {
        enable = true;
        instances = 2;
        metrics.tokenFile = pkgs.writeText "babylon-metrics-token" metricsToken;
        prometheus.enable = true;
        grafana = {
          enable = true;
          adminPasswordFile = pkgs.writeText "grafana-admin-password" grafanaPassword;
        };
        nginx.enable = true;
      };

      environment.systemPackages = [
        pkgs.curl
        pkgs.iproute2
        pkgs.jq
      ];
      virtualisation.memorySize = 2048;
    };

  testScript = ''
    token = "${metricsToken}"
    auth = "admin:${grafanaPassword}"


    def status(url, *curl_args):
        args = " ".join(curl_args)
        return machine.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {args} {url}").strip()


    start_all()

    for unit in ["babylon-1", "babylon-2", "prometheus", "grafana", "nginx"]:
        machine.wait_for_unit(f"{unit}.service")
    for port in [8080, 8081, 8001, 8002, 9090, 3000, 80]:
        machine.wait_for_open_port(port)

    with subtest("the units run the flake's package, with a generous open-files limit"):
        for unit in ["babylon-1", "babylon-2"]:
            machine.succeed(f"systemctl cat {unit}.service | grep -qF 'ExecStart=${pkgs.lib.getExe package}'")
            limit = machine.succeed(f"systemctl show -P LimitNOFILE {unit}.service").strip()
            assert int(limit) >= 65536, f"{unit}: LimitNOFILE={limit}"

    with subtest("both instances are healthy, on one SQLite file, as a dynamic user"):
        for port in [8080, 8081]:
            machine.succeed(
                f"curl -sf http://127.0.0.1:{port}/api/health"
                + " | jq -e '.status == \"ok\" and .database.vendor == \"sqlite\"'"
            )
        machine.succeed("test -f /var/lib/babylon/babylon.sqlite")
        machine.succeed("systemctl show -p DynamicUser babylon-1.service | grep -qx DynamicUser=yes")

    with subtest("an item created through one instance is listed by the other"):
        machine.succeed(
            "curl -sf -X POST -H 'Content-Type: application/json'"
            + " -d '{\"name\": \"Dune\", \"kind\": \"book\"}'"
            + " http://127.0.0.1:8080/api/items | jq -e '.name == \"Dune\"'"
        )
        machine.succeed("curl -sf http://127.0.0.1:8081/api/items | jq -e '.total == 1'")

    with subtest("metrics only on the export ports, and only with the token"):
        for port in [8001, 8002]:
            machine.succeed(
                f"curl -sf -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/metrics"
                + " | grep -q '^babylon_build_info'"
            )
        assert status("http://127.0.0.1:8001/metrics") == "401"
        assert status("http://127.0.0.1:8080/metrics") == "404"

    with subtest("Prometheus scrapes both instances and loaded babylon's rules"):
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/targets | jq -e '[.data.activeTargets[]"
            + " | select(.labels.job == \"babylon\" and .health == \"up\")] | length == 2'",
            timeout=180,
        )
        machine.succeed(
            "curl -sf http://127.0.0.1:9090/api/v1/rules"
            + " | jq -e '[.data.groups[].name] | index(\"babylon_alerts\") != null'"
        )

    with subtest("Prometheus listens on loopback only"):
        listening = machine.succeed("ss -Htln 'sport = :9090'").split()
        addresses = [word for word in listening if word.endswith(":9090")]
        assert addresses == ["127.0.0.1:9090"], f"Prometheus listens on {addresses}"

    with subtest("Grafana's secret key was made by a sandboxed dynamic user, for systemd to read"):
        unit = "babylon-grafana-secret-key.service"
        machine.succeed(f"systemctl show -P DynamicUser {unit} | grep -qx yes")
        machine.succeed(f"systemctl show -P PrivateNetwork {unit} | grep -qx yes")
        owner_and_mode = machine.succeed("stat -L -c '%u %a' /var/lib/babylon-grafana/secret-key").split()
        assert owner_and_mode[0] != "0" and owner_and_mode[1] == "600", owner_and_mode

    with subtest("Grafana has the datasource and the dashboard"):
        machine.wait_until_succeeds(
            f"curl -sf -u {auth} http://127.0.0.1:3000/api/datasources/uid/babylon-prometheus"
            + " | jq -e '.type == \"prometheus\"'"
        )
        machine.wait_until_succeeds(
            f"curl -sf -u {auth} 'http://127.0.0.1:3000/api/search?query=babylon'"
            + " | jq -e 'any(.[]; .uid == \"babylon-overview\")'"
        )

    with subtest("nginx proxies the API and refuses the metrics path"):
        machine.succeed("curl -sf http://127.0.0.1/api/health | jq -e '.status == \"ok\"'")
        assert status("http://127.0.0.1/metrics") == "403"
  '';
}
