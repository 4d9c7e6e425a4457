# Assertions over nix/module.nix itself, evaluated with builtins only (./module-eval.nix):
# which of its definitions give way to a user's own, and what it wires from nix/lib.nix
# into the units (their settings files and start script included), Redis, Prometheus,
# Grafana, the firewall and the assertions.
#
#   nix-instantiate --eval --strict --json -E 'import ./nix/tests/module-test.nix { }'
#
# prints the names of the tests (all passed), or fails naming each failed test.
# tests/nix.rs runs it, and also runs it against altered copies of the module (a
# dropped mkDefault, say) to see it fail; so does `nix flake check`.
{
  module ? ../module.nix,
}:
let
  babylon = import ../lib.nix;
  inherit (import ./check.nix) fails run;
  inherit (import ./module-eval.nix { babylon = { }; }) generated options;

  # The NixOS configuration made by services.babylon = `options` and by the user's own
  # definitions `user` of other options.
  configWith =
    options: user:
    (import ./module-eval.nix {
      inherit module user;
      babylon = options;
    }).config;
  configOf = options: configWith options { };

  enabled = {
    enable = true;
  };
  withPrometheus = enabled // {
    prometheus.enable = true;
  };
  withGrafana = withPrometheus // {
    grafana = {
      enable = true;
      adminPasswordFile = "/run/secrets/grafana-admin-password";
    };
  };
  givenKey = withGrafana // {
    grafana = withGrafana.grafana // {
      secretKeyFile = "/run/secrets/grafana-secret-key";
    };
  };

  withRedis = enabled // {
    instances = 2;
    redis.enable = true;
  };
  rateLimit = {
    blocking.rate_limit = {
      per_second = 50;
      burst = 100;
    };
  };
  # A fleet's Prometheus host: its own two instances, two on app2, file_sd targets.
  fleet = withPrometheus // {
    instances = 2;
    metrics.tokenFile = "/run/secrets/metrics-token";
    prometheus = {
      enable = true;
      remoteTargets = [
        "app2:8001"
        "app2:8002"
      ];
      fileSdDirectories = [ "/var/lib/babylon-targets" ];
      remoteWrite = [ { url = "http://thanos:19291/api/v1/receive"; } ];
    };
  };

  matches = fragment: message: builtins.match ".*${fragment}.*" message != null;
  # The messages of the failed assertions.
  failedAssertions =
    config:
    map (assertion: assertion.message) (
      builtins.filter (assertion: !assertion.assertion) config.assertions
    );
  asserts = fragment: config: builtins.any (matches fragment) (failedAssertions config);

  # The settings (the `release` table) instance `index` reads (as JSON, in the stub).
  settingsOf =
    config: index:
    (builtins.fromJSON (
      generated config.systemd.services."babylon-${toString index}".environment.ROCKET_CONFIG
    )).release;
  lines = text: builtins.filter builtins.isString (builtins.split "\n" text);

  prometheusAddress = config: config.services.prometheus.listenAddress;
  datasources = config: config.services.grafana.provision.datasources.settings.datasources;
  datasourceUrl = config: (builtins.head (datasources config)).url;

  # Whether a unit keeps every setting of the shared sandbox.
  sandboxed =
    unit:
    builtins.all (name: unit.serviceConfig.${name} or null == babylon.hardening.${name}) (
      builtins.attrNames babylon.hardening
    );

  # name = { actual; expected; }
  tests = {
    # ---- the stub resolves priorities as nixpkgs does ----
    equalPlainDefinitionsAgreeDifferentOnesConflict = {
      actual =
        let
          # The module sets services.prometheus.enable = true with prometheus.enable.
          userEnables = enable: configWith withPrometheus { services.prometheus.enable = enable; };
        in
        {
          same = (userEnables true).services.prometheus.enable;
          different = fails (userEnables false).services.prometheus.enable;
          nixpkgsDefault = prometheusAddress (configOf enabled);
        };
      expected = {
        same = true;
        different = true;
        nixpkgsDefault = "0.0.0.0";
      };
    };

    # ---- Prometheus ----
    prometheusListensOnLoopbackUnlessTheUserOpensIt = {
      actual = {
        default = babylon.isLoopbackAddress (prometheusAddress (configOf withPrometheus));
        opened = prometheusAddress (
          configWith withPrometheus { services.prometheus.listenAddress = "0.0.0.0"; }
        );
      };
      expected = {
        default = true;
        opened = "0.0.0.0";
      };
    };

    # Prometheus' API beyond loopback: an assertion until its web configuration is set.
    prometheusBeyondLoopbackNeedsItsWebConfig = {
      actual = {
        open = asserts "set services.prometheus.webConfigFile" (
          configWith withPrometheus { services.prometheus.listenAddress = "0.0.0.0"; }
        );
        protected = failedAssertions (
          configWith withPrometheus {
            services.prometheus = {
              listenAddress = "0.0.0.0";
              webConfigFile = "/etc/prometheus/web.yml";
            };
          }
        );
        loopback = failedAssertions (configOf withPrometheus);
      };
      expected = {
        open = true;
        protected = [ ];
        loopback = [ ];
      };
    };

    # metrics.tls with mutual TLS: the units read the files as credentials and the
    # settings name them; Prometheus scrapes over HTTPS with its own certificate, from its
    # credentials, and promtool checks the syntax only (the build cannot read them).
    exportPortsServeMutualTls = {
      actual =
        let
          config = configOf (withPrometheus // import ./mutual-tls.nix);
          job = builtins.head config.services.prometheus.scrapeConfigs;
        in
        {
          tls = (settingsOf config 1).metrics.export.tls;
          unitCredentials = config.systemd.services.babylon-1.serviceConfig.LoadCredential;
          inherit (job) scheme tls_config;
          prometheusCredentials = config.systemd.services.prometheus.serviceConfig.LoadCredential;
          inherit (config.services.prometheus) checkConfig;
          assertions = failedAssertions config;
        };
      expected = {
        tls = {
          cert_file = "/run/credentials/babylon-1.service/export-tls-cert";
          key_file = "/run/credentials/babylon-1.service/export-tls-key";
          client_ca_file = "/run/credentials/babylon-1.service/export-tls-client-ca";
        };
        unitCredentials = [
          "export-tls-cert:/var/lib/acme/app/cert.pem"
          "export-tls-key:/var/lib/acme/app/key.pem"
          "export-tls-client-ca:/etc/babylon/scrapers-ca.pem"
        ];
        scheme = "https";
        tls_config = {
          ca_file = "/run/credentials/prometheus.service/babylon-tls-ca";
          cert_file = "/run/credentials/prometheus.service/babylon-tls-cert";
          key_file = "/run/credentials/prometheus.service/babylon-tls-key";
        };
        prometheusCredentials = [
          "babylon-tls-ca:/etc/babylon/ca.pem"
          "babylon-tls-cert:/etc/prometheus/client.pem"
          "babylon-tls-key:/run/secrets/prometheus-client.key"
        ];
        checkConfig = "syntax-only";
        assertions = [ ];
      };
    };

    # nginx over HTTPS: the user's TLS options on the module's virtual host merge with
    # the module's locations.
    nginxVirtualHostTakesTheUsersTls = {
      actual =
        let
          host =
            (configWith (enabled // { nginx.enable = true; }) {
              services.nginx.virtualHosts.localhost = {
                forceSSL = true;
                enableACME = true;
              };
            }).services.nginx.virtualHosts.localhost;
        in
        {
          inherit (host) forceSSL enableACME;
          proxied = host.locations."/".proxyPass;
          metricsRefused = host.locations."= /metrics".return or host.locations."/metrics".return or null;
        };
      expected = {
        forceSSL = true;
        enableACME = true;
        proxied = "http://babylon";
        metricsRefused = "403";
      };
    };

    grafanaReachesPrometheusWhereverItListens = {
      actual = {
        default = datasourceUrl (configOf withGrafana);
        everyInterface = datasourceUrl (
          configWith withGrafana { services.prometheus.listenAddress = "0.0.0.0"; }
        );
        oneAddress = datasourceUrl (
          configWith withGrafana {
            services.prometheus = {
              listenAddress = "10.0.0.5";
              port = 9191;
            };
          }
        );
        ipv6 = datasourceUrl (configWith withGrafana { services.prometheus.listenAddress = "::"; });
      };
      expected = {
        default = "http://127.0.0.1:9090";
        everyInterface = "http://127.0.0.1:9090";
        oneAddress = "http://10.0.0.5:9191";
        ipv6 = "http://[::1]:9090";
      };
    };

    # ---- Grafana ----
    userGrafanaSecretsWin = {
      actual = {
        module = (configOf withGrafana).services.grafana.settings.security;
        user =
          (configWith withGrafana {
            services.grafana.settings.security = {
              admin_password = "$__file{/run/secrets/own-password}";
              secret_key = "$__file{/run/secrets/own-key}";
            };
          }).services.grafana.settings.security;
      };
      expected = {
        module = babylon.grafanaSecurity;
        user = {
          admin_password = "$__file{/run/secrets/own-password}";
          secret_key = "$__file{/run/secrets/own-key}";
        };
      };
    };

    grafanaReadsTheKeyItIsGiven = {
      actual =
        let
          generated = (configOf withGrafana).systemd.services;
          given = (configOf givenKey).systemd.services;
          generator = generated.babylon-grafana-secret-key.serviceConfig;
        in
        {
          generatorWritesTheCredential = builtins.elem "${babylon.credentialNames.grafanaSecretKey}:/var/lib/${generator.StateDirectory or ""}/secret-key" generated.grafana.serviceConfig.LoadCredential;
          grafanaWaits = {
            inherit (generated.grafana) after requires;
          };
          generatorWithAGivenKey = given ? babylon-grafana-secret-key;
          givenCredentials = given.grafana.serviceConfig.LoadCredential;
        };
      expected = {
        generatorWritesTheCredential = true;
        grafanaWaits = {
          after = [ "babylon-grafana-secret-key.service" ];
          requires = [ "babylon-grafana-secret-key.service" ];
        };
        generatorWithAGivenKey = false;
        givenCredentials = babylon.grafanaLoadCredentials givenKey;
      };
    };

    # ---- units ----
    unitsShareTheSandbox = {
      actual =
        let
          units = (configOf withGrafana).systemd.services;
          generator = units.babylon-grafana-secret-key.serviceConfig;
        in
        {
          babylon = sandboxed units.babylon-1;
          generator = sandboxed units.babylon-grafana-secret-key;
          babylonNetwork = units.babylon-1.serviceConfig.RestrictAddressFamilies;
          generatorUser = {
            dynamic = generator.DynamicUser or false;
            root = (generator.User or "root") == "root" && !(generator.DynamicUser or false);
          };
          generatorNetwork = {
            private = generator.PrivateNetwork or false;
            families = generator.RestrictAddressFamilies or null;
          };
        };
      expected = {
        babylon = true;
        generator = true;
        babylonNetwork = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        generatorUser = {
          dynamic = true;
          root = false;
        };
        generatorNetwork = {
          private = true;
          families = "none";
        };
      };
    };

    babylonUnitsRaiseTheOpenFilesLimit = {
      actual =
        let
          units =
            (configWith (withPrometheus // { instances = 2; }) {
              systemd.services.babylon-2.serviceConfig.LimitNOFILE = 8192;
            }).systemd.services;
        in
        {
          generous = units.babylon-1.serviceConfig.LimitNOFILE >= 65536;
          module = units.babylon-1.serviceConfig.LimitNOFILE;
          user = units.babylon-2.serviceConfig.LimitNOFILE;
        };
      expected = {
        generous = true;
        module = babylon.openFilesLimit;
        user = 8192;
      };
    };

    # ---- Redis ----
    redisServerListensOnTheSocketOnly = {
      actual =
        let
          server = (configOf withRedis).services.redis.servers.babylon;
          userServer =
            (configWith withRedis {
              services.redis.servers.babylon = {
                port = 6379;
                save = [
                  [
                    60
                    1000
                  ]
                ];
              };
            }).services.redis.servers.babylon;
        in
        {
          inherit (server) enable port save;
          userPort = userServer.port;
          userSave = userServer.save;
          withoutRedis = (configOf enabled).services.redis.servers.babylon.enable;
        };
      expected = {
        enable = true;
        port = 0;
        save = [ ];
        userPort = 6379;
        userSave = [
          [
            60
            1000
          ]
        ];
        withoutRedis = false;
      };
    };

    everyInstanceReadsTheLocalRedis = {
      actual =
        let
          config = configOf (withRedis // { settings = rateLimit; });
          moved = configWith withRedis {
            services.redis.servers.babylon.unixSocket = "/run/redis-babylon/cache.sock";
          };
          pick = settings: {
            redis = settings.redis or null;
            cache = settings.cache or null;
            rateLimitBackend = settings.blocking.rate_limit.backend or null;
            exportAddress = settings.metrics.export.address or null;
          };
        in
        {
          instances = map pick [
            (settingsOf config 1)
            (settingsOf config 2)
          ];
          movedSocket = (settingsOf moved 2).redis.url or null;
          withoutRateLimit = (settingsOf (configOf withRedis) 1) ? blocking;
          withoutRedis = (settingsOf (configOf enabled) 1) ? redis;
        };
      expected = {
        instances =
          builtins.genList
            (_: {
              redis.url = "unix:///run/redis-babylon/redis.sock";
              cache.backend = "redis";
              rateLimitBackend = "redis";
              exportAddress = "127.0.0.1";
            })
            2;
        movedSocket = "unix:///run/redis-babylon/cache.sock";
        withoutRateLimit = false;
        withoutRedis = false;
      };
    };

    babylonUnitsReachTheLocalRedis = {
      actual =
        let
          units = (configOf withRedis).systemd.services;
          otherGroup =
            (configWith withRedis {
              services.redis.servers.babylon.group = "babylon-cache";
            }).systemd.services;
          unit = units.babylon-2;
        in
        {
          groups = unit.serviceConfig.SupplementaryGroups or null;
          dynamicUser = unit.serviceConfig.DynamicUser or null;
          after = builtins.elem "redis-babylon.service" (unit.after or [ ]);
          wants = builtins.elem "redis-babylon.service" (unit.wants or [ ]);
          requires = builtins.elem "redis-babylon.service" (unit.requires or [ ]);
          otherGroup = otherGroup.babylon-1.serviceConfig.SupplementaryGroups or null;
          withoutRedis =
            (configOf enabled).systemd.services.babylon-1.serviceConfig.SupplementaryGroups or null;
        };
      expected = {
        groups = [ "redis-babylon" ];
        dynamicUser = true;
        after = true;
        wants = true;
        requires = false;
        otherGroup = [ "babylon-cache" ];
        withoutRedis = [ ];
      };
    };

    redisEnableAndUrlTripTheAssertion = {
      actual = {
        both = asserts "redis.enable and services.babylon.redis.url are set together" (
          configOf (
            withRedis
            // {
              redis = {
                enable = true;
                url = "redis://10.0.0.4:6379";
              };
            }
          )
        );
        enableOnly = failedAssertions (configOf withRedis);
        urlOnly = failedAssertions (configOf (enabled // { redis.url = "redis://10.0.0.4:6379"; }));
        # A password on the server the module reaches over its socket without one.
        password = asserts "sets requirePass or requirePassFile" (
          configWith withRedis {
            services.redis.servers.babylon.requirePassFile = "/run/secrets/redis";
          }
        );
      };
      expected = {
        both = true;
        enableOnly = [ ];
        urlOnly = [ ];
        password = true;
      };
    };

    sharedRedisUrlFromAFileStaysOutOfTheStore = {
      actual =
        let
          config = configOf (
            enabled
            // {
              redis.urlFile = "/run/secrets/babylon-redis-url";
              settings = rateLimit;
            }
          );
          unit = config.systemd.services.babylon-1;
          settings = settingsOf config 1;
          script = lines (generated unit.serviceConfig.ExecStart);
        in
        {
          localServer = config.services.redis.servers.babylon.enable;
          credentials = unit.serviceConfig.LoadCredential or null;
          exportsTheUrl = builtins.elem ''BABYLON_REDIS__URL="$(< "$CREDENTIALS_DIRECTORY/redis-url")"'' script;
          urlInSettings = settings ? redis;
          cache = settings.cache or null;
          rateLimitBackend = settings.blocking.rate_limit.backend or null;
          network = builtins.elem "network-online.target" (unit.wants or [ ]);
          groups = unit.serviceConfig.SupplementaryGroups or null;
          plainStart = (configOf enabled).systemd.services.babylon-1.serviceConfig.ExecStart;
        };
      expected = {
        localServer = false;
        credentials = [ "redis-url:/run/secrets/babylon-redis-url" ];
        exportsTheUrl = true;
        urlInSettings = false;
        cache.backend = "redis";
        rateLimitBackend = "redis";
        network = true;
        groups = [ ];
        plainStart = "${builtins.storeDir}/00000000000000000000000000000000-babylon/bin/babylon";
      };
    };

    # ---- the export address ----
    nonLoopbackMetricsAddressNeedsTokenAndAllowList =
      let
        exposed = "makes the metrics export ports listen beyond this host";
        open = metrics: configOf (enabled // { inherit metrics; });
        complete = open {
          address = "10.0.0.7";
          allow = [
            "127.0.0.0/8"
            "10.0.0.5/32"
          ];
          tokenFile = "/run/secrets/metrics-token";
        };
      in
      {
        actual = {
          bare = asserts exposed (open { address = "10.0.0.7"; });
          everyInterface = asserts exposed (open { address = ""; });
          allowOnly = asserts exposed (
            open {
              address = "0.0.0.0";
              allow = [ "10.0.0.0/8" ];
            }
          );
          tokenOnly = asserts exposed (
            open {
              address = "::";
              tokenFile = "/run/secrets/metrics-token";
            }
          );
          complete = failedAssertions complete;
          setting = (settingsOf complete 1).metrics.export.address or null;
          loopback = failedAssertions (configOf enabled);
        };
        expected = {
          bare = true;
          everyInterface = true;
          allowOnly = true;
          tokenOnly = true;
          complete = [ ];
          setting = "10.0.0.7";
          loopback = [ ];
        };
      };

    # ---- Prometheus for a fleet ----
    prometheusScrapesTheFleetAndWritesRemotely = {
      actual =
        let
          prometheus = (configOf fleet).services.prometheus;
          job = builtins.head prometheus.scrapeConfigs;
          own = {
            url = "http://mimir:9009/api/v1/push";
          };
        in
        {
          jobs = builtins.length prometheus.scrapeConfigs;
          job_name = job.job_name or null;
          static_configs = job.static_configs or null;
          file_sd_configs = job.file_sd_configs or null;
          token = job.authorization.credentials_file or null;
          remoteWrite = prometheus.remoteWrite or null;
          userRemoteWrite =
            (configWith fleet { services.prometheus.remoteWrite = [ own ]; })
            .services.prometheus.remoteWrite;
          noRemoteWrite = (configOf withPrometheus).services.prometheus.remoteWrite;
        };
      expected = {
        jobs = 1;
        job_name = "babylon";
        static_configs = [
          {
            targets = [ "127.0.0.1:8001" ];
            labels.unit = "babylon-1";
          }
          {
            targets = [ "127.0.0.1:8002" ];
            labels.unit = "babylon-2";
          }
          {
            targets = [
              "app2:8001"
              "app2:8002"
            ];
          }
        ];
        file_sd_configs = [ { files = [ "/var/lib/babylon-targets/*.json" ]; } ];
        token = babylon.prometheusTokenFile;
        remoteWrite = [ { url = "http://thanos:19291/api/v1/receive"; } ];
        userRemoteWrite = [
          { url = "http://thanos:19291/api/v1/receive"; }
          { url = "http://mimir:9009/api/v1/push"; }
        ];
        noRemoteWrite = [ ];
      };
    };

    # ---- Prometheus: exemplars and native histograms ----
    # Prometheus keeps exemplars and scrapes native histograms, and keeps each histogram's
    # classic series too (Prometheus 3.x): a key nixpkgs' scrape config does not declare,
    # which the module lets through by extending that option's type, giving nothing else
    # (a default or description would clash with nixpkgs' declaration).
    prometheusKeepsExemplarsAndBothHistogramShapes = {
      actual =
        let
          prometheus = (configOf withPrometheus).services.prometheus;
          job = builtins.head prometheus.scrapeConfigs;
        in
        {
          inherit (prometheus) extraFlags;
          userFlags =
            let
              user.services.prometheus.extraFlags = [ "--log.level=debug" ];
            in
            (configWith withPrometheus user).services.prometheus.extraFlags;
          always_scrape_classic_histograms = job.always_scrape_classic_histograms or null;
          declared = builtins.attrNames options.services.prometheus.scrapeConfigs;
        };
      expected = {
        extraFlags = [ "--enable-feature=exemplar-storage,native-histograms" ];
        userFlags = [
          "--enable-feature=exemplar-storage,native-histograms"
          "--log.level=debug"
        ];
        always_scrape_classic_histograms = true;
        declared = [
          "_type"
          "type"
        ];
      };
    };

    # Grafana's datasource links exemplars to their traces when told where they are.
    grafanaLinksExemplarsToTraces = {
      actual =
        let
          jsonData =
            grafana:
            let
              config = configOf (withGrafana // { grafana = withGrafana.grafana // grafana; });
            in
            (builtins.head (datasources config)).jsonData or null;
          url = "https://jaeger.example.org/trace/\${__value.raw}";
        in
        {
          none = jsonData { };
          url = jsonData { exemplarTraceUrl = url; };
          tempo = jsonData { exemplarTraceDatasourceUid = "tempo"; };
        };
      expected = {
        none = null;
        url.exemplarTraceIdDestinations = [
          {
            name = "trace_id";
            url = "https://jaeger.example.org/trace/$${__value.raw}";
            urlDisplayLabel = "View trace";
          }
        ];
        tempo.exemplarTraceIdDestinations = [
          {
            name = "trace_id";
            datasourceUid = "tempo";
            urlDisplayLabel = "View trace";
          }
        ];
      };
    };

    # ---- firewall ----
    firewallOpensWhatListensBeyondLoopback = {
      actual =
        let
          ports = options: (configOf options).networking.firewall.allowedTCPPorts;
        in
        {
          loopback = ports {
            enable = true;
            openFirewall = true;
          };
          everyInterface = ports {
            enable = true;
            openFirewall = true;
            address = "0.0.0.0";
          };
          closed = ports {
            enable = true;
            address = "0.0.0.0";
          };
          # Exported to a Prometheus on another host: the export port, not the
          # application port on loopback.
          exported = ports {
            enable = true;
            openFirewall = true;
            metrics = {
              address = "";
              allow = [
                "127.0.0.0/8"
                "10.0.0.5/32"
              ];
              tokenFile = "/run/secrets/metrics-token";
            };
          };
          allowedButOnLoopback = ports {
            enable = true;
            openFirewall = true;
            metrics.allow = [ "10.0.0.5/32" ];
          };
        };
      expected = {
        loopback = [ ];
        everyInterface = [ 8080 ];
        closed = [ ];
        exported = [ 8001 ];
        allowedButOnLoopback = [ ];
      };
    };
  };
in
run "babylon module" tests
