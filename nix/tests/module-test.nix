# Assertions over nix/module.nix itself, evaluated with builtins only (./module-eval.nix):
# which of its definitions give way to a user's own, and what it wires from nix/lib.nix
# into the units, Prometheus, Grafana and the firewall.
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
        };
      expected = {
        loopback = [ ];
        everyInterface = [ 8080 ];
        closed = [ ];
      };
    };
  };
in
run "babylon module" tests
