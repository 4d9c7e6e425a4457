# NixOS VM test of services.babylon on two hosts of one private network:
#
#   app1  two instances on SQLite with a metrics token, a local Redis (the cache and the
#         rate limit, over its Unix socket, also open to app2 over TCP), Prometheus
#         scraping its own instances and app2's, Grafana provisioned, nginx in front;
#   app2  two instances whose export ports listen on app2's address, for app1's
#         Prometheus only (allow-list and token), using app1's Redis by URL.
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
  redisPort = 6379;
in
pkgs.testers.runNixOSTest {
  name = "babylon";

  nodes.app1 =
    {
      config,
      nodes,
      pkgs,
      ...
    }:
    let
      tokenFile = pkgs.writeText "babylon-metrics-token" metricsToken;
      app2 = nodes.app2.networking.primaryIPAddress;
    in
    {
      imports = [ module ];

      services.babylon = {
        enable = true;
        instances = 2;
        metrics.tokenFile = tokenFile;
        # The cache and the rate limit in services.redis.servers.babylon.
        redis.enable = true;
        settings.blocking.rate_limit = {
          per_second = 1;
          burst = 1000;
        };
        prometheus = {
          enable = true;
          # app2's instances, in the same job, with the same token.
          remoteTargets = [
            "${app2}:8001"
            "${app2}:8002"
          ];
        };
        grafana = {
          enable = true;
          adminPasswordFile = pkgs.writeText "grafana-admin-password" grafanaPassword;
        };
        nginx.enable = true;
      };

      # app2 reaches the same Redis over the private network. Without a password on a
      # test network only: a real one wants requirePassFile here and redis.urlFile there.
      services.redis.servers.babylon = {
        port = redisPort;
        bind = config.networking.primaryIPAddress;
        openFirewall = true;
        settings.protected-mode = false;
      };
      # It binds that address: wait until it is up.
      systemd.services.redis-babylon = {
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
      };

      environment.systemPackages = [
        pkgs.curl
        pkgs.iproute2
        pkgs.jq
      ];
      virtualisation.memorySize = 2048;
    };

  nodes.app2 =
    {
      config,
      nodes,
      pkgs,
      ...
    }:
    let
      app1 = nodes.app1.networking.primaryIPAddress;
    in
    {
      imports = [ module ];

      services.babylon = {
        enable = true;
        instances = 2;
        # Export ports for app1's Prometheus: on app2's own address, open in the firewall
        # (the application ports stay on loopback, closed), app1 allowed in, token required.
        openFirewall = true;
        metrics = {
          address = config.networking.primaryIPAddress;
          allow = [
            "127.0.0.0/8"
            "::1/128"
            "${app1}/32"
          ];
          tokenFile = pkgs.writeText "babylon-metrics-token" metricsToken;
        };
        redis.url = "redis://${app1}:${toString redisPort}";
        # app2 has its own SQLite database: its cache entries must not mix with app1's.
        settings.redis.key_prefix = "app2";
      };

      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
    };

  testScript =
    { nodes, ... }:
    let
      app1Address = nodes.app1.networking.primaryIPAddress;
      app2Address = nodes.app2.networking.primaryIPAddress;
    in
    ''
      import json

      token = "${metricsToken}"
      auth = "admin:${grafanaPassword}"
      app1_address = "${app1Address}"
      app2_address = "${app2Address}"
      socket = "/run/redis-babylon/redis.sock"


      def status(machine, url, *curl_args):
          args = " ".join(curl_args)
          return machine.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {args} {url}").strip()


      start_all()

      for unit in ["redis-babylon", "babylon-1", "babylon-2", "prometheus", "grafana", "nginx"]:
          app1.wait_for_unit(f"{unit}.service")
      for port in [8080, 8081, 8001, 8002, 9090, 3000, 80]:
          app1.wait_for_open_port(port)
      app1.wait_for_open_port(${toString redisPort}, app1_address)
      for unit in ["babylon-1", "babylon-2"]:
          app2.wait_for_unit(f"{unit}.service")
      app2.wait_for_open_port(8080)
      for port in [8001, 8002]:
          app2.wait_for_open_port(port, app2_address)

      with subtest("the units run the flake's package, with a generous open-files limit"):
          for unit in ["babylon-1", "babylon-2"]:
              app1.succeed(f"systemctl cat {unit}.service | grep -qF 'ExecStart=${pkgs.lib.getExe package}'")
              limit = app1.succeed(f"systemctl show -P LimitNOFILE {unit}.service").strip()
              assert int(limit) >= 65536, f"{unit}: LimitNOFILE={limit}"

      with subtest("both instances are healthy, on one SQLite file, as a dynamic user"):
          for port in [8080, 8081]:
              app1.succeed(
                  f"curl -sf http://127.0.0.1:{port}/api/health"
                  + " | jq -e '.status == \"ok\" and .database.vendor == \"sqlite\"'"
              )
          app1.succeed("test -f /var/lib/babylon/babylon.sqlite")
          app1.succeed("systemctl show -p DynamicUser babylon-1.service | grep -qx DynamicUser=yes")

      with subtest("an item created through one instance is listed by the other"):
          app1.succeed(
              "curl -sf -X POST -H 'Content-Type: application/json'"
              + " -d '{\"name\": \"Dune\", \"kind\": \"book\"}'"
              + " http://127.0.0.1:8080/api/items | jq -e '.name == \"Dune\"'"
          )
          app1.succeed("curl -sf http://127.0.0.1:8081/api/items | jq -e '.total == 1'")

      with subtest("the local Redis: Unix socket only, opened by the units through its group"):
          app1.succeed("systemctl show -P SupplementaryGroups babylon-1.service | grep -qw redis-babylon")
          app1.succeed(f"test -S {socket}")
          app1.succeed(f"redis-cli -s {socket} ping | grep -qx PONG")

      with subtest("app1's instances keep their cache and rate limit in Redis"):
          for port in [8080, 8081]:
              app1.succeed(f"curl -sf http://127.0.0.1:{port}/api/items")
          app1.wait_until_succeeds(
              f"redis-cli -s {socket} --scan --pattern 'babylon:cache:*' | grep -q ."
          )
          app1.wait_until_succeeds(
              f"redis-cli -s {socket} --scan --pattern 'babylon:rate:*' | grep -q ."
          )

      with subtest("app2's instances use app1's Redis by URL, under their own prefix"):
          groups = app2.succeed("systemctl show -P SupplementaryGroups babylon-1.service").strip()
          assert groups == "", f"app2's units join {groups}"
          for port in [8080, 8081]:
              app2.succeed(f"curl -sf http://127.0.0.1:{port}/api/items | jq -e '.total == 0'")
          app1.wait_until_succeeds(
              f"redis-cli -s {socket} --scan --pattern 'app2:cache:*' | grep -q ."
          )

      with subtest("metrics only on the export ports, and only with the token"):
          for port in [8001, 8002]:
              app1.succeed(
                  f"curl -sf -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/metrics"
                  + " | grep -q '^babylon_build_info'"
              )
          assert status(app1, "http://127.0.0.1:8001/metrics") == "401"
          assert status(app1, "http://127.0.0.1:8080/metrics") == "404"

      with subtest("app2 exports to app1 only, with the token; nothing else is reachable"):
          for port in [8001, 8002]:
              app1.succeed(
                  f"curl -sf -H 'Authorization: Bearer {token}' http://{app2_address}:{port}/metrics"
                  + " | grep -q '^babylon_build_info'"
              )
          assert status(app1, f"http://{app2_address}:8001/metrics") == "401"
          # Not on app2's loopback: its export ports listen on its address only.
          app2.fail("curl -s -o /dev/null --max-time 5 http://127.0.0.1:8001/metrics")
          # app2's application ports stay on loopback, behind the firewall.
          app1.fail(f"curl -s -o /dev/null --max-time 5 http://{app2_address}:8080/api/health")
          # app1's export ports listen on loopback: app2 cannot scrape them.
          app2.fail(f"curl -s -o /dev/null --max-time 5 http://{app1_address}:8001/metrics")

      with subtest("Prometheus scrapes all four instances of both hosts, and loaded babylon's rules"):
          expected = {
              "127.0.0.1:8001",
              "127.0.0.1:8002",
              f"{app2_address}:8001",
              f"{app2_address}:8002",
          }
          app1.wait_until_succeeds(
              "curl -sfG http://127.0.0.1:9090/api/v1/query --data-urlencode 'query=up{job=\"babylon\"} == 1'"
              + " | jq -e '.data.result | length == 4'",
              timeout=180,
          )
          up = json.loads(
              app1.succeed(
                  "curl -sfG http://127.0.0.1:9090/api/v1/query --data-urlencode 'query=up{job=\"babylon\"}'"
              )
          )
          instances = {sample["metric"]["instance"]: sample["value"][1] for sample in up["data"]["result"]}
          assert instances == {instance: "1" for instance in expected}, instances
          app1.succeed(
              "curl -sf http://127.0.0.1:9090/api/v1/rules"
              + " | jq -e '[.data.groups[].name] | index(\"babylon_alerts\") != null'"
          )

      with subtest("Prometheus listens on loopback only"):
          listening = app1.succeed("ss -Htln 'sport = :9090'").split()
          addresses = [word for word in listening if word.endswith(":9090")]
          assert addresses == ["127.0.0.1:9090"], f"Prometheus listens on {addresses}"

      with subtest("Grafana's secret key was made by a sandboxed dynamic user, for systemd to read"):
          unit = "babylon-grafana-secret-key.service"
          app1.succeed(f"systemctl show -P DynamicUser {unit} | grep -qx yes")
          app1.succeed(f"systemctl show -P PrivateNetwork {unit} | grep -qx yes")
          owner_and_mode = app1.succeed("stat -L -c '%u %a' /var/lib/babylon-grafana/secret-key").split()
          assert owner_and_mode[0] != "0" and owner_and_mode[1] == "600", owner_and_mode

      with subtest("Grafana has the datasource and the dashboard"):
          app1.wait_until_succeeds(
              f"curl -sf -u {auth} http://127.0.0.1:3000/api/datasources/uid/babylon-prometheus"
              + " | jq -e '.type == \"prometheus\"'"
          )
          app1.wait_until_succeeds(
              f"curl -sf -u {auth} 'http://127.0.0.1:3000/api/search?query=babylon'"
              + " | jq -e 'any(.[]; .uid == \"babylon-overview\")'"
          )

      with subtest("nginx proxies the API and refuses the metrics path"):
          app1.succeed("curl -sf http://127.0.0.1/api/health | jq -e '.status == \"ok\"'")
          assert status(app1, "http://127.0.0.1/metrics") == "403"
    '';
}
