# Assertions over the pure functions of nix/lib.nix. Needs only builtins:
#
#   nix-instantiate --eval --strict --json nix/tests/lib-test.nix
#
# prints the names of the tests (all passed), or fails with every test whose actual
# value differs from the expected one. tests/nix.rs runs it; so does `nix flake check`.
let
  babylon = import ../lib.nix;
  inherit (import ./check.nix) fails run;

  two = {
    instances = 2;
  };

  # The settings the module writes for instance 1 with every option at its default.
  defaultSettings = {
    address = "127.0.0.1";
    port = 8080;
    ip_header = false;
    metrics = {
      serve_on_main_port = false;
      export = {
        enabled = true;
        port = 8001;
        address = "127.0.0.1";
        allow = [
          "127.0.0.0/8"
          "::1/128"
        ];
      };
    };
    databases.main.url = "sqlite://babylon.sqlite";
  };

  # The export ports' certificate and key (metrics.tls), a client CA (mutual TLS), and
  # the local Prometheus' side of it.
  mutualTlsHost = import ./mutual-tls.nix;
  mutualTls = mutualTlsHost.metrics.tls;
  exportTls = removeAttrs mutualTls [ "clientCaFile" ];
  prometheusTls = mutualTlsHost.prometheus.tls;

  # A metrics token file, for configurations that export beyond this host.
  token = {
    tokenFile = "/run/secrets/metrics-token";
  };

  userSettings = {
    address = "0.0.0.0";
    log_level = "normal";
    metrics = {
      namespace = "shop";
      export.allow = [ "10.0.0.0/8" ];
    };
    blocking.rate_limit = {
      per_second = 50;
      burst = 100;
    };
  };

  matches = fragment: message: builtins.match ".*${fragment}.*" message != null;
  hasMessage = fragment: builtins.any (matches fragment);

  # name = { actual; expected; }
  tests = {
    # ---- ports and names ----
    instancesGetConsecutivePorts = {
      actual = babylon.instanceList { instances = 3; };
      expected = [
        {
          index = 1;
          unit = "babylon-1";
          service = "babylon-1.service";
          appPort = 8080;
          exportPort = 8001;
        }
        {
          index = 2;
          unit = "babylon-2";
          service = "babylon-2.service";
          appPort = 8081;
          exportPort = 8002;
        }
        {
          index = 3;
          unit = "babylon-3";
          service = "babylon-3.service";
          appPort = 8082;
          exportPort = 8003;
        }
      ];
    };

    portsFollowTheOptions = {
      actual =
        let
          cfg = {
            instances = 2;
            port = 9000;
            metrics.portRange = {
              from = 9100;
              to = 9101;
            };
          };
        in
        {
          app = babylon.appPorts cfg;
          export = babylon.exportPorts cfg;
        };
      expected = {
        app = [
          9000
          9001
        ];
        export = [
          9100
          9101
        ];
      };
    };

    unitAndCredentialNames = {
      actual = [
        (babylon.unitName 1)
        (babylon.serviceName 2)
        (babylon.credentialsDirectory 3)
      ];
      expected = [
        "babylon-1"
        "babylon-2.service"
        "/run/credentials/babylon-3.service"
      ];
    };

    oneInstanceByDefault = {
      actual = babylon.indices { };
      expected = [ 1 ];
    };

    # ---- the port range ----
    exportPortOutsideTheRangeThrows = {
      actual = {
        last = babylon.exportPort { instances = 50; } 50;
        beyond = fails (babylon.exportPort { instances = 51; } 51);
        zero = fails (babylon.exportPort { } 0);
      };
      expected = {
        last = 8050;
        beyond = true;
        zero = true;
      };
    };

    fiftyInstancesFitTheDefaultRange = {
      actual = babylon.errors { instances = 50; };
      expected = [ ];
    };

    tooManyInstancesIsAnError = {
      actual = babylon.errors { instances = 51; };
      expected = [
        "services.babylon.instances = 51 does not fit services.babylon.metrics.portRange 8001-8050 (50 ports, one fixed export port per instance): widen the range or run fewer instances"
      ];
    };

    assertionsCarryTheMessages = {
      actual = babylon.assertions {
        instances = 3;
        metrics.portRange = {
          from = 9001;
          to = 9002;
        };
      };
      expected = [
        {
          assertion = false;
          message = "services.babylon.instances = 3 does not fit services.babylon.metrics.portRange 9001-9002 (2 ports, one fixed export port per instance): widen the range or run fewer instances";
        }
      ];
    };

    otherConfigurationErrors = {
      actual = {
        reversed = hasMessage "is reversed" (
          babylon.errors {
            metrics.portRange = {
              from = 9010;
              to = 9001;
            };
          }
        );
        overlap = hasMessage "overlap the export ports" (
          babylon.errors {
            port = 8000;
            instances = 3;
          }
        );
        beyond65535 = hasMessage "beyond 65535" (
          babylon.errors {
            port = 65535;
            instances = 2;
          }
        );
        userPortRange = hasMessage "set services.babylon.metrics.portRange instead" (
          babylon.errors { settings.metrics.export.port_range = "9001-9010"; }
        );
        externalWithoutUrl = hasMessage "needs services.babylon.database.urlFile" (
          babylon.errors { database.type = "external"; }
        );
        urlFileWithoutExternal = hasMessage "only read with database.type" (
          babylon.errors { database.urlFile = "/run/secrets/url"; }
        );
        grafanaWithoutPassword = hasMessage "needs services.babylon.grafana.adminPasswordFile" (
          babylon.errors { grafana.enable = true; }
        );
        remoteTargetWithoutPort = hasMessage "prometheus.remoteTargets: every target is .host:port." (
          babylon.errors {
            prometheus.remoteTargets = [
              "app2:8001"
              "app3"
            ];
          }
        );
        remoteTargetWithScheme = hasMessage "prometheus.remoteTargets" (
          babylon.errors { prometheus.remoteTargets = [ "http://app2:8001" ]; }
        );
        remoteTargetsFine = babylon.errors {
          prometheus.remoteTargets = [
            "app2:8001"
            "10.0.0.8:8002"
            "[fd00::8]:8001"
          ];
        };
        defaultsAreFine = babylon.errors { } == [ ];
      };
      expected = {
        reversed = true;
        overlap = true;
        beyond65535 = true;
        userPortRange = true;
        externalWithoutUrl = true;
        urlFileWithoutExternal = true;
        grafanaWithoutPassword = true;
        remoteTargetWithoutPort = true;
        remoteTargetWithScheme = true;
        remoteTargetsFine = [ ];
        defaultsAreFine = true;
      };
    };

    # ---- the export address ----
    exportAddressIsLoopback = {
      actual =
        map
          (address: {
            inherit address;
            loopback = babylon.isLoopbackAddress address;
          })
          [
            "127.0.0.1"
            "127.1.2.3"
            "::1"
            ""
            "0.0.0.0"
            "::"
            "10.0.0.2"
            "fd00::1"
          ];
      expected = [
        {
          address = "127.0.0.1";
          loopback = true;
        }
        {
          address = "127.1.2.3";
          loopback = true;
        }
        {
          address = "::1";
          loopback = true;
        }
        {
          address = "";
          loopback = false;
        }
        {
          address = "0.0.0.0";
          loopback = false;
        }
        {
          address = "::";
          loopback = false;
        }
        {
          address = "10.0.0.2";
          loopback = false;
        }
        {
          address = "fd00::1";
          loopback = false;
        }
      ];
    };

    exportBeyondLoopbackNeedsAllowListAndToken =
      let
        exposed = "listen beyond this host";
        needsAllow = "set services.babylon.metrics.allow";
        needsToken = "set services.babylon.metrics.tokenFile";
        wide = [
          "127.0.0.0/8"
          "10.0.0.5/32"
        ];
        check = metrics: babylon.errors { inherit metrics; };
      in
      {
        actual = {
          loopbackDefault = babylon.errors { };
          otherLoopback = check { address = "127.1.2.3"; };
          ipv6Loopback = check { address = "::1"; };
          bare = {
            error = hasMessage exposed (check { address = "10.0.0.7"; });
            allow = hasMessage needsAllow (check { address = "10.0.0.7"; });
            token = hasMessage needsToken (check { address = "10.0.0.7"; });
          };
          everyInterface = hasMessage exposed (check { address = ""; });
          everyInterfaceIpv6 = hasMessage exposed (check { address = "::"; });
          allowOnly = {
            allow = hasMessage needsAllow (
              check {
                address = "0.0.0.0";
                allow = wide;
              }
            );
            token = hasMessage needsToken (
              check {
                address = "0.0.0.0";
                allow = wide;
              }
            );
          };
          tokenOnly = {
            allow = hasMessage needsAllow (check ({ address = "fd00::1"; } // token));
            token = hasMessage needsToken (check ({ address = "fd00::1"; } // token));
          };
          # A loopback-only list in another form is still loopback only.
          loopbackListWithToken = hasMessage needsAllow (
            check (
              {
                address = "0.0.0.0";
                allow = [ "127.0.0.1/32" ];
              }
              // token
            )
          );
          allowAndToken = check (
            {
              address = "10.0.0.7";
              allow = wide;
            }
            // token
          );
          # The user's settings count too: their address, allow-list and token file.
          settingsExposed = hasMessage exposed (
            babylon.errors { settings.metrics.export.address = ""; }
          );
          settingsComplete = babylon.errors {
            settings.metrics.export = {
              address = "";
              allow = wide;
              token_file = "/run/secrets/token";
            };
          };
          settingsBackToLoopback = babylon.errors {
            metrics.address = "0.0.0.0";
            settings.metrics.export.address = "127.0.0.1";
          };
          # Users of basic_auth_users are credentials too; an empty table is none.
          settingsWithUsers = babylon.errors {
            settings.metrics.export = {
              address = "";
              allow = wide;
              basic_auth_users.prometheus = "$2b$12$GhvMmNVjRW29ulnudl.LbuAnUtN/LRfe1JsBm1Xu6LE3059z5Tr8m";
            };
          };
          settingsWithNoUsers = hasMessage needsToken (
            babylon.errors {
              settings.metrics.export = {
                address = "";
                allow = wide;
                basic_auth_users = { };
              };
            }
          );
        };
        expected = {
          loopbackDefault = [ ];
          otherLoopback = [ ];
          ipv6Loopback = [ ];
          bare = {
            error = true;
            allow = true;
            token = true;
          };
          everyInterface = true;
          everyInterfaceIpv6 = true;
          allowOnly = {
            allow = false;
            token = true;
          };
          tokenOnly = {
            allow = true;
            token = false;
          };
          loopbackListWithToken = true;
          allowAndToken = [ ];
          settingsExposed = true;
          settingsComplete = [ ];
          settingsBackToLoopback = [ ];
          settingsWithUsers = [ ];
          settingsWithNoUsers = true;
        };
      };

    exportAddressBecomesTheSetting = {
      actual = {
        default = (babylon.instanceSettings { } 1).metrics.export.address;
        option =
          (babylon.instanceSettings { metrics.address = "10.0.0.7"; } 1).metrics.export.address;
        everyInterface =
          (babylon.instanceSettings { metrics.address = ""; } 1).metrics.export.address;
        userWins =
          (babylon.instanceSettings {
            metrics.address = "10.0.0.7";
            settings.metrics.export.address = "::1";
          } 1).metrics.export.address;
      };
      expected = {
        default = "127.0.0.1";
        option = "10.0.0.7";
        everyInterface = "";
        userWins = "::1";
      };
    };

    # ---- settings ----
    defaultSettingsRenderUnderTheReleaseProfile = {
      actual = babylon.configFor { } 1;
      expected = {
        release = defaultSettings;
      };
    };

    secondInstanceGetsItsOwnPorts = {
      actual =
        let
          settings = babylon.instanceSettings two 2;
        in
        {
          inherit (settings) port;
          export = settings.metrics.export.port;
        };
      expected = {
        port = 8081;
        export = 8002;
      };
    };

    userSettingsWinAndModuleValuesStay = {
      actual = babylon.instanceSettings {
        instances = 2;
        settings = userSettings;
      } 2;
      expected = {
        address = "0.0.0.0";
        port = 8081;
        ip_header = false;
        log_level = "normal";
        metrics = {
          serve_on_main_port = false;
          namespace = "shop";
          export = {
            enabled = true;
            port = 8002;
            address = "127.0.0.1";
            allow = [ "10.0.0.0/8" ];
          };
        };
        databases.main.url = "sqlite://babylon.sqlite";
        blocking.rate_limit = {
          per_second = 50;
          burst = 100;
        };
      };
    };

    userCanTurnModuleDefaultsBack = {
      actual =
        (babylon.instanceSettings {
          settings.metrics.serve_on_main_port = true;
        } 1).metrics;
      expected = defaultSettings.metrics // {
        serve_on_main_port = true;
      };
    };

    postgresqlUsesTheUnixSocketAndPeerAuth = {
      actual = {
        url = babylon.databaseUrl { database.type = "postgresql"; };
        otherPort = babylon.databaseUrl {
          database = {
            type = "postgresql";
            postgresqlPort = 5433;
          };
        };
        static = babylon.staticUser { database.type = "postgresql"; };
        dynamic = babylon.staticUser { };
        settings = (babylon.instanceSettings { database.type = "postgresql"; } 1).databases;
      };
      expected = {
        url = "postgres://babylon@localhost:5432/babylon?host=/run/postgresql";
        otherPort = "postgres://babylon@localhost:5433/babylon?host=/run/postgresql";
        static = true;
        dynamic = false;
        settings.main.url = "postgres://babylon@localhost:5432/babylon?host=/run/postgresql";
      };
    };

    externalDatabaseUrlIsACredentialNotASetting = {
      actual =
        let
          cfg = {
            database = {
              type = "external";
              urlFile = "/run/secrets/babylon-db-url";
            };
          };
        in
        {
          hasDatabases = (babylon.instanceSettings cfg 1) ? databases;
          credentials = babylon.loadCredentials cfg;
          errors = babylon.errors cfg;
        };
      expected = {
        hasDatabases = false;
        credentials = [ "database-url:/run/secrets/babylon-db-url" ];
        errors = [ ];
      };
    };

    tokenFileIsReadFromTheUnitsCredentials = {
      actual =
        let
          cfg = {
            instances = 2;
            metrics.tokenFile = "/run/secrets/metrics-token";
          };
        in
        {
          tokenFile = (babylon.instanceSettings cfg 2).metrics.export.token_file;
          credentials = babylon.loadCredentials cfg;
          prometheusCredentials = babylon.prometheusLoadCredentials cfg;
          warnings = babylon.warnings cfg;
        };
      expected = {
        tokenFile = "/run/credentials/babylon-2.service/metrics-token";
        credentials = [ "metrics-token:/run/secrets/metrics-token" ];
        prometheusCredentials = [ "babylon-metrics-token:/run/secrets/metrics-token" ];
        warnings = [ ];
      };
    };

    exportTlsFilesAreTheUnitsCredentials = {
      actual =
        let
          cfg = {
            instances = 2;
            metrics.tls = mutualTls;
          };
        in
        {
          tls = (babylon.instanceSettings cfg 2).metrics.export.tls;
          credentials = babylon.loadCredentials cfg;
          serverOnly = (babylon.instanceSettings { metrics.tls = exportTls; } 1).metrics.export.tls;
          without = (babylon.instanceSettings { } 1).metrics.export ? tls;
        };
      expected = {
        tls = {
          cert_file = "/run/credentials/babylon-2.service/export-tls-cert";
          key_file = "/run/credentials/babylon-2.service/export-tls-key";
          client_ca_file = "/run/credentials/babylon-2.service/export-tls-client-ca";
        };
        credentials = [
          "export-tls-cert:/var/lib/acme/app/cert.pem"
          "export-tls-key:/var/lib/acme/app/key.pem"
          "export-tls-client-ca:/etc/babylon/scrapers-ca.pem"
        ];
        serverOnly = {
          cert_file = "/run/credentials/babylon-1.service/export-tls-cert";
          key_file = "/run/credentials/babylon-1.service/export-tls-key";
        };
        without = false;
      };
    };

    scrapeJobSpeaksTlsWhenTheExportPortsDo = {
      actual =
        let
          mutual = {
            metrics = {
              tls = mutualTls;
            }
            // token;
            prometheus = {
              enable = true;
              tls = prometheusTls // {
                serverName = "app.internal";
              };
            };
          };
          job = babylon.scrapeConfig mutual;
        in
        {
          inherit (job) scheme tls_config;
          credentials = babylon.prometheusLoadCredentials mutual;
          syntaxOnly = babylon.prometheusCheckSyntaxOnly mutual;
          # A tls table of the user's settings makes it HTTPS as well.
          bySettings =
            (babylon.scrapeConfig {
              settings.metrics.export.tls = {
                cert_file = "/etc/babylon/cert.pem";
                key_file = "/etc/babylon/key.pem";
              };
              prometheus.tls.caFile = "/etc/babylon/ca.pem";
            }).scheme;
          plain = babylon.scrapeConfig { } ? scheme || babylon.scrapeConfig { } ? tls_config;
          plainSyntaxOnly = babylon.prometheusCheckSyntaxOnly { };
          errors = babylon.errors mutual;
        };
      expected = {
        scheme = "https";
        tls_config = {
          ca_file = "/run/credentials/prometheus.service/babylon-tls-ca";
          cert_file = "/run/credentials/prometheus.service/babylon-tls-cert";
          key_file = "/run/credentials/prometheus.service/babylon-tls-key";
          server_name = "app.internal";
        };
        credentials = [
          "babylon-metrics-token:/run/secrets/metrics-token"
          "babylon-tls-ca:/etc/babylon/ca.pem"
          "babylon-tls-cert:/etc/prometheus/client.pem"
          "babylon-tls-key:/run/secrets/prometheus-client.key"
        ];
        syntaxOnly = true;
        bySettings = "https";
        plain = false;
        plainSyntaxOnly = false;
        errors = [ ];
      };
    };

    tlsConfigurationErrors = {
      actual =
        let
          check = cfg: babylon.errors cfg;
        in
        {
          certWithoutKey = hasMessage "certFile and metrics.tls.keyFile go together" (
            check { metrics.tls.certFile = exportTls.certFile; }
          );
          keyWithoutCert = hasMessage "certFile and metrics.tls.keyFile go together" (
            check { metrics.tls.keyFile = exportTls.keyFile; }
          );
          clientCaWithoutCert = hasMessage "clientCaFile asks scrapers for client certificates" (
            check { metrics.tls.clientCaFile = mutualTls.clientCaFile; }
          );
          prometheusWithoutCa = hasMessage "set services.babylon.prometheus.tls.caFile" (
            check {
              metrics.tls = exportTls;
              prometheus.enable = true;
            }
          );
          prometheusWithoutClientCertificate = hasMessage "set services.babylon.prometheus.tls.certFile and prometheus.tls.keyFile" (
            check {
              metrics.tls = mutualTls;
              prometheus = {
                enable = true;
                tls.caFile = prometheusTls.caFile;
              };
            }
          );
          # Prometheus' API beyond loopback needs its web configuration.
          prometheusOpenWithoutWebConfig = hasMessage "set services.prometheus.webConfigFile" (
            check {
              prometheus = {
                enable = true;
                server.listenAddress = "0.0.0.0";
              };
            }
          );
          prometheusOpenWithWebConfig = check {
            prometheus = {
              enable = true;
              server = {
                listenAddress = "10.0.0.5";
                webConfigFile = "/etc/prometheus/web.yml";
              };
            };
          };
          prometheusOnLoopback = check {
            prometheus = {
              enable = true;
              server.listenAddress = "::1";
            };
          };
          # Without the local Prometheus, its side is not asked for.
          noPrometheus = check { metrics.tls = mutualTls; };
        };
      expected = {
        certWithoutKey = true;
        keyWithoutCert = true;
        clientCaWithoutCert = true;
        prometheusWithoutCa = true;
        prometheusWithoutClientCertificate = true;
        prometheusOpenWithoutWebConfig = true;
        prometheusOpenWithWebConfig = [ ];
        prometheusOnLoopback = [ ];
        noPrometheus = [ ];
      };
    };

    noTokenNoCredentials = {
      actual = {
        settings = (babylon.instanceSettings { } 1).metrics.export ? token_file;
        credentials = babylon.loadCredentials { };
        prometheus = babylon.prometheusLoadCredentials { };
      };
      expected = {
        settings = false;
        credentials = [ ];
        prometheus = [ ];
      };
    };

    environmentOfAUnit = {
      actual = babylon.environment two 2 "/nix/store/babylon-2.toml";
      expected = {
        ROCKET_CONFIG = "/nix/store/babylon-2.toml";
        ROCKET_PROFILE = "release";
        ROCKET_PORT = "8081";
        BABYLON_METRICS__EXPORT__PORT = "8002";
      };
    };

    # ---- Redis ----
    localRedisOverItsSocket = {
      actual =
        let
          settings = babylon.instanceSettings {
            instances = 2;
            redis.enable = true;
          } 2;
        in
        {
          inherit (settings) redis cache;
          # No rate limit is set, so none is made up.
          blocking = settings ? blocking;
          sources = babylon.redisSources { redis.enable = true; };
          credentials = babylon.loadCredentials { redis.enable = true; };
          start = babylon.startScript { redis.enable = true; } "/bin/babylon";
          errors = babylon.errors { redis.enable = true; };
        };
      expected = {
        redis.url = "unix:///run/redis-babylon/redis.sock";
        cache.backend = "redis";
        blocking = false;
        sources = [ "redis.enable" ];
        credentials = [ ];
        start = null;
        errors = [ ];
      };
    };

    redisCountsTheRateLimitWhenOneIsSet = {
      actual = {
        local =
          (babylon.instanceSettings {
            redis.enable = true;
            nginx.enable = true;
            settings.blocking.rate_limit = {
              per_second = 50;
              burst = 100;
            };
          } 1).blocking;
        withoutRedis =
          (babylon.instanceSettings {
            settings.blocking.rate_limit = {
              per_second = 50;
              burst = 100;
            };
          } 1).blocking.rate_limit;
      };
      expected = {
        local = {
          trusted_proxies = [
            "127.0.0.1/32"
            "::1/128"
          ];
          rate_limit = {
            per_second = 50;
            burst = 100;
            backend = "redis";
          };
        };
        withoutRedis = {
          per_second = 50;
          burst = 100;
        };
      };
    };

    userRedisSettingsWin = {
      actual =
        let
          settings = babylon.instanceSettings {
            redis.enable = true;
            settings = {
              redis = {
                url = "unix:///run/other/redis.sock";
                key_prefix = "shop";
              };
              cache.backend = "memory";
              blocking.rate_limit = {
                per_second = 5;
                burst = 10;
                backend = "memory";
                when_redis_fails = "fail_closed";
              };
            };
          } 1;
        in
        {
          inherit (settings) redis cache;
          inherit (settings.blocking) rate_limit;
        };
      expected = {
        redis = {
          url = "unix:///run/other/redis.sock";
          key_prefix = "shop";
        };
        cache.backend = "memory";
        rate_limit = {
          per_second = 5;
          burst = 10;
          backend = "memory";
          when_redis_fails = "fail_closed";
        };
      };
    };

    localRedisUrlFollowsTheServer = {
      actual = map babylon.localRedisUrl [
        {
          unixSocket = "/run/redis-babylon/redis.sock";
          port = 6379;
          bind = "10.0.0.4";
        }
        {
          unixSocket = null;
          port = 6379;
          bind = "127.0.0.1";
        }
        {
          unixSocket = null;
          port = 6380;
          bind = null;
        }
        {
          unixSocket = null;
          port = 6379;
          bind = "-::1 127.0.0.1";
        }
        {
          unixSocket = null;
          port = 0;
          bind = "127.0.0.1";
        }
      ];
      expected = [
        "unix:///run/redis-babylon/redis.sock"
        "redis://127.0.0.1:6379"
        "redis://127.0.0.1:6380"
        "redis://[::1]:6379"
        null
      ];
    };

    sharedRedisByUrl = {
      actual =
        let
          cfg = {
            redis.url = "redis://10.0.0.4:6379/2";
            settings.blocking.rate_limit = {
              per_second = 50;
              burst = 100;
            };
          };
          settings = babylon.instanceSettings cfg 1;
        in
        {
          inherit (settings) redis cache;
          rateLimitBackend = settings.blocking.rate_limit.backend;
          errors = babylon.errors cfg;
          warnings = babylon.warnings cfg;
          socketUrl =
            (babylon.instanceSettings { redis.url = "unix:///run/redis/redis.sock"; } 1).redis.url;
        };
      expected = {
        redis.url = "redis://10.0.0.4:6379/2";
        cache.backend = "redis";
        rateLimitBackend = "redis";
        errors = [ ];
        warnings = [ ];
        socketUrl = "unix:///run/redis/redis.sock";
      };
    };

    redisUrlFileIsACredentialNotASetting = {
      actual =
        let
          cfg = {
            redis.urlFile = "/run/secrets/babylon-redis-url";
          };
          settings = babylon.instanceSettings cfg 1;
        in
        {
          hasRedisUrl = settings ? redis;
          inherit (settings) cache;
          credentials = babylon.loadCredentials cfg;
          variables = babylon.credentialVariables cfg;
          start = babylon.startScript cfg "/nix/store/x-babylon/bin/babylon";
          errors = babylon.errors cfg;
        };
      expected = {
        hasRedisUrl = false;
        cache.backend = "redis";
        credentials = [ "redis-url:/run/secrets/babylon-redis-url" ];
        variables.BABYLON_REDIS__URL = "redis-url";
        start = ''
          BABYLON_REDIS__URL="$(< "$CREDENTIALS_DIRECTORY/redis-url")"
          export BABYLON_REDIS__URL
          exec /nix/store/x-babylon/bin/babylon "$@"
        '';
        errors = [ ];
      };
    };

    startScriptExportsEveryCredentialUrl = {
      actual = {
        database = babylon.startScript {
          database = {
            type = "external";
            urlFile = "/run/secrets/db";
          };
        } "/bin/babylon";
        both = babylon.startScript {
          database = {
            type = "external";
            urlFile = "/run/secrets/db";
          };
          redis.urlFile = "/run/secrets/redis";
        } "/bin/babylon";
        none = babylon.startScript { metrics.tokenFile = "/run/secrets/token"; } "/bin/babylon";
      };
      expected = {
        database = ''
          BABYLON_DATABASES__MAIN__URL="$(< "$CREDENTIALS_DIRECTORY/database-url")"
          export BABYLON_DATABASES__MAIN__URL
          exec /bin/babylon "$@"
        '';
        both = ''
          BABYLON_DATABASES__MAIN__URL="$(< "$CREDENTIALS_DIRECTORY/database-url")"
          export BABYLON_DATABASES__MAIN__URL
          BABYLON_REDIS__URL="$(< "$CREDENTIALS_DIRECTORY/redis-url")"
          export BABYLON_REDIS__URL
          exec /bin/babylon "$@"
        '';
        none = null;
      };
    };

    redisConfigurationErrors = {
      actual = {
        enableAndUrl = babylon.errors {
          redis = {
            enable = true;
            url = "redis://10.0.0.4:6379";
          };
        };
        enableAndUrlFile = hasMessage "redis.enable and services.babylon.redis.urlFile are set together" (
          babylon.errors {
            redis = {
              enable = true;
              urlFile = "/run/secrets/redis";
            };
          }
        );
        urlAndUrlFile = hasMessage "redis.url and services.babylon.redis.urlFile are set together" (
          babylon.errors {
            redis = {
              url = "redis://10.0.0.4:6379";
              urlFile = "/run/secrets/redis";
            };
          }
        );
        tls = babylon.errors { redis.url = "rediss://redis.internal:6380"; } == [ ];
        insecure = hasMessage "without a #fragment" (
          babylon.errors { redis.url = "rediss://redis.internal:6380/#insecure"; }
        );
        noScheme = hasMessage "is not redis://" (
          babylon.errors { redis.url = "10.0.0.4:6379"; }
        );
        unreachable = hasMessage "has neither a unixSocket nor a TCP port" (
          babylon.errors {
            redis = {
              enable = true;
              server = {
                unixSocket = null;
                port = 0;
              };
            };
          }
        );
        tcpOnly = babylon.errors {
          redis = {
            enable = true;
            server = {
              unixSocket = null;
              port = 6379;
            };
          };
        };
        password = hasMessage "sets requirePass or requirePassFile" (
          babylon.errors {
            redis = {
              enable = true;
              server.requiresPassword = true;
            };
          }
        );
      };
      expected = {
        enableAndUrl = [
          "services.babylon.redis.enable and services.babylon.redis.url are set together: set only one of them: redis.enable for a Redis on this host (services.redis.servers.babylon), or redis.url or redis.urlFile for another one"
        ];
        enableAndUrlFile = true;
        urlAndUrlFile = true;
        tls = true;
        insecure = true;
        noScheme = true;
        unreachable = true;
        tcpOnly = [ ];
        password = true;
      };
    };

    # ---- systemd ordering ----
    unitsWaitForTheNetworkWhenTheyNeedIt = {
      actual = map babylon.waitsForNetwork [
        { }
        { address = "0.0.0.0"; }
        { metrics.address = ""; }
        { metrics.address = "::"; }
        { redis.enable = true; }
        { redis.url = "redis://10.0.0.4:6379"; }
        { redis.urlFile = "/run/secrets/redis-url"; }
        {
          database = {
            type = "external";
            urlFile = "/run/secrets/db";
          };
        }
        { metrics.address = "10.0.0.7"; }
        { address = "fd00::7"; }
      ];
      expected = [
        false
        false
        false
        false
        false
        true
        true
        true
        true
        true
      ];
    };

    # ---- Prometheus ----
    scrapeTargetsOnePerInstance = {
      actual = babylon.scrapeTargets two;
      expected = [
        "127.0.0.1:8001"
        "127.0.0.1:8002"
      ];
    };

    scrapeJobForTwoInstances = {
      actual = babylon.scrapeConfig two;
      expected = {
        job_name = "babylon";
        metrics_path = "/metrics";
        scrape_interval = "15s";
        static_configs = [
          {
            targets = [ "127.0.0.1:8001" ];
            labels.unit = "babylon-1";
          }
          {
            targets = [ "127.0.0.1:8002" ];
            labels.unit = "babylon-2";
          }
        ];
      };
    };

    scrapeJobSendsTheToken = {
      actual =
        (babylon.scrapeConfig {
          metrics.tokenFile = "/run/secrets/metrics-token";
        }).authorization;
      expected = {
        type = "Bearer";
        credentials_file = "/run/credentials/prometheus.service/babylon-metrics-token";
      };
    };

    fleetJobScrapesOtherHostsWithTheSameToken = {
      actual = babylon.scrapeConfig {
        instances = 2;
        metrics.tokenFile = "/run/secrets/metrics-token";
        prometheus = {
          enable = true;
          remoteTargets = [
            "app2:8001"
            "app2:8002"
          ];
          fileSdDirectories = [
            "/var/lib/babylon-targets/"
            "/srv/targets"
          ];
        };
      };
      expected = {
        job_name = "babylon";
        metrics_path = "/metrics";
        scrape_interval = "15s";
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
        file_sd_configs = [
          {
            files = [
              "/var/lib/babylon-targets/*.json"
              "/srv/targets/*.json"
            ];
          }
        ];
        authorization = {
          type = "Bearer";
          credentials_file = "/run/credentials/prometheus.service/babylon-metrics-token";
        };
      };
    };

    remoteWriteIsPassedOn = {
      actual = {
        none = babylon.prometheusRemoteWrite { };
        thanos = babylon.prometheusRemoteWrite {
          prometheus.remoteWrite = [ { url = "http://thanos:19291/api/v1/receive"; } ];
        };
      };
      expected = {
        none = [ ];
        thanos = [ { url = "http://thanos:19291/api/v1/receive"; } ];
      };
    };

    scrapeJobFollowsTheMetricsPathSetting = {
      actual =
        let
          cfg = {
            settings.metrics.path = "/internal/metrics";
          };
        in
        {
          job = (babylon.scrapeConfig cfg).metrics_path;
          denied = babylon.nginxDeniedLocations cfg;
        };
      expected = {
        job = "/internal/metrics";
        denied = [ "/internal/metrics" ];
      };
    };

    # ---- nginx ----
    upstreamServersOnePerInstance = {
      actual = {
        default = babylon.upstreamServers two;
        everyInterface = babylon.upstreamServers {
          instances = 2;
          address = "0.0.0.0";
        };
        ipv6Any = babylon.upstreamServers { address = "::"; };
        ipv6 = babylon.upstreamServers { address = "fd00::5"; };
        denied = babylon.nginxDeniedLocations { };
      };
      expected = {
        default = [
          "127.0.0.1:8080"
          "127.0.0.1:8081"
        ];
        everyInterface = [
          "127.0.0.1:8080"
          "127.0.0.1:8081"
        ];
        ipv6Any = [ "[::1]:8080" ];
        ipv6 = [ "[fd00::5]:8080" ];
        denied = [ "/metrics" ];
      };
    };

    nginxMakesBabylonTrustTheLocalProxy = {
      actual = {
        withNginx = (babylon.instanceSettings { nginx.enable = true; } 1).blocking;
        without = (babylon.instanceSettings { } 1) ? blocking;
      };
      expected = {
        withNginx.trusted_proxies = [
          "127.0.0.1/32"
          "::1/128"
        ];
        without = false;
      };
    };

    # ---- firewall ----
    loopbackAddresses = {
      actual = builtins.filter babylon.isLoopbackAddress [
        "127.0.0.1"
        "127.0.1.1"
        "::1"
        "[::1]"
        "::ffff:127.0.0.1"
        ""
        "0.0.0.0"
        "::"
        "[::]"
        "10.0.0.5"
        "fd00::5"
        "128.0.0.1"
      ];
      expected = [
        "127.0.0.1"
        "127.0.1.1"
        "::1"
        "[::1]"
        "::ffff:127.0.0.1"
      ];
    };

    firewallPorts =
      let
        open = cfg: babylon.firewallPorts (two // { openFirewall = true; } // cfg);
        wideAllow = [
          "127.0.0.0/8"
          "10.0.0.0/8"
        ];
      in
      {
        actual = {
          closed = babylon.firewallPorts (two // { address = "0.0.0.0"; });
          loopbackOnly = open { };
          ipv6Loopback = open { address = "::1"; };
          everyInterface = open { address = "0.0.0.0"; };
          everyInterfaceIpv6 = open { address = "::"; };
          emptyAddress = open { address = ""; };
          userSettingWins = open { settings.address = "0.0.0.0"; };
          userSettingToLoopback = open {
            address = "0.0.0.0";
            settings.address = "127.0.0.1";
          };
          # The allow-list alone: the export ports still listen on loopback.
          exportOnLoopbackByDefault = open { metrics.allow = wideAllow; };
          # The README's example: behind nginx, scraped by 10.0.0.5.
          exportedMetricsOnly = open {
            metrics = {
              allow = wideAllow;
              address = "10.0.0.7";
            };
          };
          exportedMetrics = open {
            address = "0.0.0.0";
            metrics = {
              allow = wideAllow;
              address = "";
            };
          };
          exportBoundToLoopback = open {
            address = "0.0.0.0";
            metrics = {
              allow = wideAllow;
              address = "0.0.0.0";
            };
            settings.metrics.export.address = "127.0.0.1";
          };
          exportBoundToOneAddress = open {
            metrics.allow = wideAllow;
            settings.metrics.export.address = "10.0.0.7";
          };
          commaSeparatedLoopback = open {
            address = "0.0.0.0";
            settings.metrics.export.allow = "127.0.0.1, ::1";
          };
        };
        expected = {
          closed = [ ];
          loopbackOnly = [ ];
          ipv6Loopback = [ ];
          everyInterface = [
            8080
            8081
          ];
          everyInterfaceIpv6 = [
            8080
            8081
          ];
          emptyAddress = [
            8080
            8081
          ];
          userSettingWins = [
            8080
            8081
          ];
          userSettingToLoopback = [ ];
          exportOnLoopbackByDefault = [ ];
          exportedMetricsOnly = [
            8001
            8002
          ];
          exportedMetrics = [
            8080
            8081
            8001
            8002
          ];
          exportBoundToLoopback = [
            8080
            8081
          ];
          exportBoundToOneAddress = [
            8001
            8002
          ];
          commaSeparatedLoopback = [
            8080
            8081
          ];
        };
      };

    # ---- systemd ----
    sandboxIsStrict = {
      actual = {
        inherit (babylon.hardening)
          CapabilityBoundingSet
          NoNewPrivileges
          PrivateTmp
          ProtectSystem
          UMask
          ;
        systemServiceCalls = builtins.elem "@system-service" babylon.hardening.SystemCallFilter;
        noPrivilegedCalls = builtins.elem "~@privileged" babylon.hardening.SystemCallFilter;
      };
      expected = {
        CapabilityBoundingSet = "";
        NoNewPrivileges = true;
        PrivateTmp = true;
        ProtectSystem = "strict";
        UMask = "0077";
        systemServiceCalls = true;
        noPrivilegedCalls = true;
      };
    };

    grafanaKeyGeneratorIsSandboxedOffline = {
      actual =
        let
          unit = babylon.grafanaSecretKeyServiceConfig;
        in
        {
          keepsTheSandbox = builtins.intersectAttrs babylon.hardening unit == babylon.hardening;
          inherit (unit)
            DynamicUser
            PrivateNetwork
            RestrictAddressFamilies
            Type
            ;
          keyInItsStateDirectory =
            dirOf babylon.grafanaGeneratedSecretKey == "/var/lib/${unit.StateDirectory}";
        };
      expected = {
        keepsTheSandbox = true;
        DynamicUser = true;
        PrivateNetwork = true;
        RestrictAddressFamilies = "none";
        Type = "oneshot";
        keyInItsStateDirectory = true;
      };
    };

    # ---- what the units listen on ----
    listeningAddresses = {
      actual = {
        app = babylon.appAddress { };
        appFromSettings = babylon.appAddress { settings.address = "::"; };
        export = babylon.exportAddress { };
        exportFromOption = babylon.exportAddress { metrics.address = "10.0.0.7"; };
        exportFromSettings = babylon.exportAddress { settings.metrics.export.address = "::1"; };
        prometheusOnLoopback = babylon.isLoopbackAddress babylon.prometheusListenAddress;
      };
      expected = {
        app = "127.0.0.1";
        appFromSettings = "::";
        export = "127.0.0.1";
        exportFromOption = "10.0.0.7";
        exportFromSettings = "::1";
        prometheusOnLoopback = true;
      };
    };

    # ---- Grafana ----
    grafanaProvisioningAndCredentials = {
      actual = {
        datasource = babylon.grafanaDatasource "127.0.0.1" 9090;
        datasourceEveryInterface = (babylon.grafanaDatasource "0.0.0.0" 9091).url;
        datasourceOneAddress = (babylon.grafanaDatasource "10.0.0.5" 9090).url;
        provider = babylon.grafanaDashboardProvider "/nix/store/x-babylon/dashboards";
        # The files of grafana/provisioning.json, rendered as the module provisions them.
        provision = babylon.grafanaProvision { } "::" 9091 "/nix/store/x-babylon/dashboards";
        generatedKey = babylon.grafanaLoadCredentials {
          grafana = {
            enable = true;
            adminPasswordFile = "/run/secrets/grafana";
          };
        };
        givenKey = babylon.grafanaLoadCredentials {
          grafana = {
            adminPasswordFile = "/run/secrets/grafana";
            secretKeyFile = "/run/secrets/grafana-key";
          };
        };
        security = babylon.grafanaSecurity;
      };
      expected = {
        datasource = {
          name = "Prometheus (babylon)";
          type = "prometheus";
          uid = "babylon-prometheus";
          url = "http://127.0.0.1:9090";
          access = "proxy";
          isDefault = true;
        };
        datasourceEveryInterface = "http://127.0.0.1:9091";
        datasourceOneAddress = "http://10.0.0.5:9090";
        provider = {
          name = "babylon";
          type = "file";
          options.path = "/nix/store/x-babylon/dashboards";
        };
        provision = {
          datasources = {
            apiVersion = 1;
            datasources = [
              {
                name = "Prometheus (babylon)";
                type = "prometheus";
                uid = "babylon-prometheus";
                url = "http://[::1]:9091";
                access = "proxy";
                isDefault = true;
              }
            ];
          };
          dashboards = {
            apiVersion = 1;
            providers = [
              {
                name = "babylon";
                type = "file";
                options.path = "/nix/store/x-babylon/dashboards";
              }
            ];
          };
        };
        generatedKey = [
          "babylon-admin-password:/run/secrets/grafana"
          "babylon-secret-key:/var/lib/babylon-grafana/secret-key"
        ];
        givenKey = [
          "babylon-admin-password:/run/secrets/grafana"
          "babylon-secret-key:/run/secrets/grafana-key"
        ];
        security = {
          admin_password = "$__file{/run/credentials/grafana.service/babylon-admin-password}";
          secret_key = "$__file{/run/credentials/grafana.service/babylon-secret-key}";
        };
      };
    };

    # Exemplars link to their traces only when told where traces are. The URL is given as
    # Grafana shows it; its provisioning file holds every $ doubled, since Grafana
    # expands environment variables there ($${__value.raw} reads back as ${__value.raw}).
    grafanaExemplarsLinkToTraces = {
      actual =
        let
          jsonData =
            grafana:
            let
              provision = babylon.grafanaProvision { inherit grafana; } "127.0.0.1" 9090 "/d";
            in
            (builtins.head provision.datasources.datasources).jsonData or null;
          url = "https://jaeger.example.org/trace/\${__value.raw}";
        in
        {
          none = jsonData { };
          url = jsonData { exemplarTraceUrl = url; };
          tempo = jsonData { exemplarTraceDatasourceUid = "tempo"; };
          both = jsonData {
            exemplarTraceUrl = url;
            exemplarTraceDatasourceUid = "tempo";
          };
          # "$${__value.raw}" in a Nix string is already doubled: it would be doubled again.
          escapedTwice = hasMessage "exemplarTraceUrl .* holds [$][$]" (
            babylon.errors {
              grafana.exemplarTraceUrl = "https://jaeger.example.org/trace/$${__value.raw}";
            }
          );
          given = babylon.errors { grafana.exemplarTraceUrl = url; };
          withoutGrafana = hasMessage "do nothing without services.babylon.grafana.enable" (
            babylon.warnings { grafana.exemplarTraceDatasourceUid = "tempo"; }
          );
          withGrafana = babylon.warnings {
            grafana = {
              enable = true;
              adminPasswordFile = "/run/secrets/grafana";
              exemplarTraceUrl = url;
            };
          };
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
        both.exemplarTraceIdDestinations = [
          {
            name = "trace_id";
            url = "https://jaeger.example.org/trace/$${__value.raw}";
            datasourceUid = "tempo";
            urlDisplayLabel = "View trace";
          }
        ];
        escapedTwice = true;
        given = [ ];
        withoutGrafana = true;
        withGrafana = [ ];
      };
    };

    # ---- warnings ----
    warnings = {
      actual = {
        storeToken = hasMessage "metrics.tokenFile .* is in the Nix store" (
          babylon.warnings { metrics.tokenFile = "${builtins.storeDir}/abc-token"; }
        );
        prometheusLockedOut = hasMessage "its targets will answer 403" (
          babylon.warnings {
            prometheus.enable = true;
            metrics.allow = [ "10.0.0.0/8" ];
          }
        );
        prometheusAllowedEverywhere = babylon.warnings {
          prometheus = {
            enable = true;
            tls.caFile = "/etc/babylon/ca.pem";
          };
          metrics = {
            allow = [ "0.0.0.0/0" ];
            address = "";
            tls = exportTls;
          }
          // token;
        };
        cleartextBeyondLoopback = hasMessage "leave this host in cleartext" (
          babylon.warnings {
            metrics = {
              allow = [ "10.0.0.0/8" ];
              address = "10.0.0.7";
            }
            // token;
          }
        );
        prometheusTlsWithoutExportTls = hasMessage "prometheus.tls is used only when" (
          babylon.warnings { prometheus.tls.caFile = "/etc/babylon/ca.pem"; }
        );
        storeTlsKey = hasMessage "metrics.tls.keyFile .* is in the Nix store" (
          babylon.warnings {
            metrics.tls = exportTls // {
              keyFile = "${builtins.storeDir}/abc-key.pem";
            };
          }
        );
        allowedButOnLoopback = hasMessage "the export ports listen on 127.0.0.1 only" (
          babylon.warnings { metrics.allow = [ "10.0.0.0/8" ]; }
        );
        storeRedisUrl = hasMessage "redis.urlFile .* is in the Nix store" (
          babylon.warnings { redis.urlFile = "${builtins.storeDir}/abc-redis-url"; }
        );
        passwordInRedisUrl = hasMessage "redis.url holds a password" (
          babylon.warnings { redis.url = "redis://:secret@10.0.0.4:6379"; }
        );
        userAndPasswordInRedisUrl = hasMessage "redis.url holds a password" (
          babylon.warnings { redis.url = "redis://babylon:secret@10.0.0.4:6379/1"; }
        );
        redisUrlWithoutPassword = babylon.warnings { redis.url = "redis://10.0.0.4:6379/1"; };
        fleetWithoutPrometheus = hasMessage "do nothing without services.babylon.prometheus.enable" (
          babylon.warnings { prometheus.remoteTargets = [ "app2:8001" ]; }
        );
      };
      expected = {
        storeToken = true;
        prometheusLockedOut = true;
        prometheusAllowedEverywhere = [ ];
        cleartextBeyondLoopback = true;
        prometheusTlsWithoutExportTls = true;
        storeTlsKey = true;
        allowedButOnLoopback = true;
        storeRedisUrl = true;
        passwordInRedisUrl = true;
        userAndPasswordInRedisUrl = true;
        redisUrlWithoutPassword = [ ];
        fleetWithoutPrometheus = true;
      };
    };

    # ---- helpers ----
    helpers = {
      actual = {
        merge = babylon.recursiveMerge {
          a = {
            b = 1;
            c = [ 1 ];
          };
          d = 2;
        } { a.c = [ 2 ]; };
        cidrs = babylon.cidrList " 10.0.0.0/8 ,::1,";
        range = babylon.range 3 5;
        emptyRange = babylon.range 5 3;
      };
      expected = {
        merge = {
          a = {
            b = 1;
            c = [ 2 ];
          };
          d = 2;
        };
        cidrs = [
          "10.0.0.0/8"
          "::1"
        ];
        range = [
          3
          4
          5
        ];
        emptyRange = [ ];
      };
    };
  };
in
run "babylon lib" tests
