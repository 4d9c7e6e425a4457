# services.babylon: N babylon instances as systemd units babylon-1 … babylon-N, each on
# its own application port and its own fixed metrics export port, with optional
# PostgreSQL, Redis (shared cache and rate limit), Prometheus (one target per instance,
# and other hosts' targets), Grafana (datasource and dashboards) and nginx in front. What
# is computed (ports, settings, targets, upstreams, firewall ports, the units' start script
# and sandboxing, assertion messages) lives in ./lib.nix as pure functions, tested
# without NixOS by nix/tests/lib-test.nix; this file only maps options to them.
# nix/tests/module-test.nix evaluates it with a stub of nixpkgs' lib to check which of
# its definitions a user's own value overrides.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.babylon;
  # Read for Grafana's datasource, wherever the user binds Prometheus.
  prometheus = config.services.prometheus;
  # The local Redis (redis.enable), as the user may have adjusted it.
  redisServer = config.services.redis.servers.${babylonLib.redisServerName};
  babylonLib = import ./lib.nix;
  settingsFormat = pkgs.formats.toml { };

  inherit (lib)
    literalExpression
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    types
    ;

  # A path option as a string, so that a file outside the store is never copied into it.
  nullOrString = value: if value == null then null else toString value;

  # The options as plain values: the input of every ./lib.nix function.
  plain = {
    inherit (cfg)
      instances
      port
      address
      openFirewall
      settings
      ;
    metrics = {
      portRange = {
        inherit (cfg.metrics.portRange) from to;
      };
      inherit (cfg.metrics) allow address;
      tokenFile = nullOrString cfg.metrics.tokenFile;
      tls = {
        certFile = nullOrString cfg.metrics.tls.certFile;
        keyFile = nullOrString cfg.metrics.tls.keyFile;
        clientCaFile = nullOrString cfg.metrics.tls.clientCaFile;
      };
    };
    database = {
      inherit (cfg.database) type;
      urlFile = nullOrString cfg.database.urlFile;
      postgresqlPort = config.services.postgresql.settings.port;
    };
    redis = {
      inherit (cfg.redis) enable url;
      urlFile = nullOrString cfg.redis.urlFile;
      # Read only with redis.enable: services.redis.servers.babylon exists only then.
      server =
        if cfg.redis.enable then
          {
            inherit (redisServer)
              unixSocket
              port
              bind
              group
              ;
            requiresPassword =
              redisServer.requirePass != null || redisServer.requirePassFile != null;
          }
        else
          { };
    };
    prometheus = {
      inherit (cfg.prometheus)
        enable
        scrapeInterval
        remoteTargets
        fileSdDirectories
        remoteWrite
        ;
      tls = {
        caFile = nullOrString cfg.prometheus.tls.caFile;
        certFile = nullOrString cfg.prometheus.tls.certFile;
        keyFile = nullOrString cfg.prometheus.tls.keyFile;
        inherit (cfg.prometheus.tls) serverName;
      };
      # Read only with prometheus.enable, for the check of where Prometheus listens.
      server =
        if cfg.prometheus.enable then
          {
            inherit (prometheus) listenAddress;
            webConfigFile = nullOrString prometheus.webConfigFile;
          }
        else
          { };
    };
    grafana = {
      inherit (cfg.grafana) enable exemplarTraceUrl exemplarTraceDatasourceUid;
      adminPasswordFile = nullOrString cfg.grafana.adminPasswordFile;
      secretKeyFile = nullOrString cfg.grafana.secretKeyFile;
    };
    nginx = {
      inherit (cfg.nginx) enable virtualHost;
    };
  };

  share = "${cfg.package}/share/babylon";
  staticUser = babylonLib.staticUser plain;
  # Another host's database or Redis, or one specific address to bind, needs the network.
  waitsForNetwork = babylonLib.waitsForNetwork plain;
  generateGrafanaKey = cfg.grafana.secretKeyFile == null;
  # Grafana's provisioning files: { datasources; dashboards; }.
  grafanaProvision =
    babylonLib.grafanaProvision plain prometheus.listenAddress prometheus.port "${share}/dashboards";

  # The Rocket.toml of instance `index`.
  configFile =
    index:
    let
      name = "babylon-${toString index}.toml";
    in
    settingsFormat.generate name (babylonLib.configFor plain index);

  # database.urlFile and redis.urlFile: URLs that may hold a password are credentials,
  # exported just before exec (null: nothing to export).
  startScript = babylonLib.startScript plain (lib.getExe cfg.package);
  start =
    if startScript == null then
      lib.getExe cfg.package
    else
      "${pkgs.writeShellScript "babylon-start" startScript}";

  unit = instance: {
    description = "babylon instance ${toString instance.index} (port ${toString instance.appPort}, metrics on ${toString instance.exportPort})";
    wantedBy = [ "multi-user.target" ];
    partOf = [ "babylon.target" ];
    # An external database or Redis, or a specific address to bind, needs the network up;
    # a local PostgreSQL must be ready. The local Redis is wanted, not required: babylon
    # serves without it (reads go to the database), so its restart must not stop babylon.
    wants =
      lib.optional waitsForNetwork "network-online.target"
      ++ lib.optional cfg.redis.enable babylonLib.redisService;
    after = [
      "network.target"
    ]
    ++ lib.optional waitsForNetwork "network-online.target"
    ++ lib.optional staticUser "postgresql.target"
    ++ lib.optional cfg.redis.enable babylonLib.redisService;
    requires = lib.optional staticUser "postgresql.target";
    environment = babylonLib.environment plain instance.index (configFile instance.index);
    # Hardening: babylon needs the network, its state directory and nothing else.
    serviceConfig = babylonLib.hardening // {
      ExecStart = start;
      User = babylonLib.user;
      Group = babylonLib.user;
      # The local Redis' socket is open to its group (unixSocketPerm 660, in a 0750
      # directory); a dynamic user gets supplementary groups as well as a static one.
      SupplementaryGroups = lib.optional cfg.redis.enable redisServer.group;
      # A static user only for PostgreSQL peer authentication (DynamicUser cannot).
      DynamicUser = !staticUser;
      # Shared by every instance: one SQLite file (WAL) in /var/lib/babylon.
      StateDirectory = "babylon";
      StateDirectoryMode = "0700";
      WorkingDirectory = "/var/lib/babylon";
      LoadCredential = babylonLib.loadCredentials plain;
      Restart = "on-failure";
      RestartSec = "5s";
      # Exit code 2 is a wrong setting (babylon names the key): restarting cannot help.
      RestartPreventExitStatus = 2;
      # babylon raises its soft limit to this one; each open connection takes a descriptor.
      LimitNOFILE = mkDefault babylonLib.openFilesLimit;
      RestrictAddressFamilies = [
        "AF_INET"
        "AF_INET6"
        "AF_UNIX"
      ];
    };
  };
in
{
  # nixpkgs types services.prometheus.scrapeConfigs with some of Prometheus' keys only; the
  # babylon job also sets always_scrape_classic_histograms (babylonLib.keepClassicHistograms).
  # Keys nixpkgs does not declare are passed on as they are (a freeform submodule, merged
  # into nixpkgs' own), and promtool still checks them all (services.prometheus.checkConfig).
  # Only the type is given here: nixpkgs declares the option's default and description.
  options.services.prometheus.scrapeConfigs = mkOption {
    type = types.listOf (types.submodule { freeformType = types.attrsOf types.anything; });
  };

  options.services.babylon = {
    enable = mkEnableOption "babylon, a web backend whose Prometheus metrics are the product";

    package = mkOption {
      type = types.package;
      default = pkgs.babylon or (pkgs.callPackage ./package.nix { });
      defaultText = literalExpression "pkgs.babylon";
      description = ''
        The babylon package. The flake's `nixosModules.default` sets it to the flake's
        own build; the package's `share/babylon` provides the Prometheus rules and the
        Grafana dashboards.
      '';
    };

    instances = mkOption {
      type = types.ints.positive;
      default = 1;
      example = 4;
      description = ''
        How many babylon processes to run, as systemd units `babylon-1` …
        `babylon-<instances>` (together: `babylon.target`). Instance i listens on
        `port + i - 1` and serves metrics on `metrics.portRange.from + i - 1`.
      '';
    };

    port = mkOption {
      type = types.port;
      default = 8080;
      description = "Application port of instance 1; instance i uses `port + i - 1`.";
    };

    address = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = "Address the application ports listen on (Rocket's `address`).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open in the firewall the ports other hosts can reach: the application ports
        unless `address` (or `settings.address`) is a loopback address such as
        `127.0.0.1` or `::1`, and the metrics export ports when the metrics allow-list
        lets in more than this host and `metrics.address` (or
        `settings.metrics.export.address`) is not a loopback address: a Prometheus on
        another host needs them open. `""`, `0.0.0.0` and `::` mean every interface.
        nginx's ports and Redis' are not opened here.
      '';
    };

    metrics = {
      portRange = mkOption {
        type = types.submodule {
          options = {
            from = mkOption {
              type = types.port;
              default = 8001;
              description = "First export port (instance 1).";
            };
            to = mkOption {
              type = types.port;
              default = 8050;
              description = "Last export port; the range must hold one port per instance.";
            };
          };
        };
        default = { };
        description = ''
          The metrics export ports. Unlike a bare babylon process, which takes the first
          free port of `metrics.export.port_range`, each instance gets a fixed port
          (`metrics.export.port`): instance i exports on `from + i - 1`, so Prometheus
          can scrape static targets across restarts.
        '';
      };

      allow = mkOption {
        type = types.listOf types.str;
        default = [
          "127.0.0.0/8"
          "::1/128"
        ];
        example = [
          "127.0.0.0/8"
          "::1/128"
          "10.0.0.5/32"
        ];
        description = ''
          CIDR blocks that may read metrics (`metrics.export.allow`); everyone else gets
          403. The local Prometheus scrapes from 127.0.0.1; add the address of a
          Prometheus on another host (with `metrics.address` and `metrics.tokenFile`).
        '';
      };

      tokenFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/babylon-metrics-token";
        description = ''
          File holding a bearer token that metrics readers must send
          (`metrics.export.token_file`). It is handed to the units with systemd's
          `LoadCredential=` (and to Prometheus, when `prometheus.enable` is set), so it
          stays outside the Nix store: give a path as a string, not a Nix path literal.
        '';
      };

      address = mkOption {
        type = types.str;
        default = "127.0.0.1";
        example = "10.0.0.7";
        description = ''
          Address the metrics export ports listen on (`metrics.export.address`): an IP
          address of this host, or `""` for every interface. On loopback (the default)
          only this host's Prometheus can scrape them. Any other address (for a
          Prometheus on another host) needs `metrics.allow` to let in more than loopback
          and `metrics.tokenFile`, or evaluation fails; with `openFirewall` the export
          ports are then opened.
        '';
      };

      tls = {
        certFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = "/var/lib/acme/babylon.internal/cert.pem";
          description = ''
            PEM certificate (then any intermediates) of the metrics export ports: set,
            they serve HTTPS only (`metrics.export.tls.cert_file`). Its subject
            alternative names must hold the host (or address) Prometheus scrapes. Handed
            to the units with `LoadCredential=`, like `keyFile`, so the units read a copy
            made when they start: after renewing the files, restart the units
            (`systemctl restart babylon.target`, or list `babylon.target` in
            `security.acme.certs.<name>.reloadServices`).
          '';
        };

        keyFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = "/var/lib/acme/babylon.internal/key.pem";
          description = ''
            PEM private key of `certFile` (`metrics.export.tls.key_file`); set both or
            neither. A credential: give a path outside the Nix store, as a string.
          '';
        };

        clientCaFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = "/etc/babylon/scrapers-ca.pem";
          description = ''
            PEM certificates of the CAs that sign scrapers' client certificates: set,
            every scraper must present one (mutual TLS,
            `metrics.export.tls.client_ca_file`); the allow-list and token still apply.
            Needs `certFile` and `keyFile`; the local Prometheus then needs
            `prometheus.tls.certFile` and `prometheus.tls.keyFile`.
          '';
        };
      };
    };

    settings = mkOption {
      type = settingsFormat.type;
      default = { };
      example = literalExpression ''
        {
          metrics.namespace = "shop";
          blocking.rate_limit = { per_second = 50; burst = 100; };
          databases.main.max_connections = 16;
          log_level = "normal";
          logging.format = "json";
        }
      '';
      description = ''
        babylon settings (see the README's settings tables), written into the
        `[release]` table of the `Rocket.toml` each unit reads (`ROCKET_CONFIG`,
        `ROCKET_PROFILE=release`). The module's own values (addresses, ports, allow-list,
        token file, database URL, Redis URL and backends,
        `metrics.serve_on_main_port = false`, `ip_header = false`) lie underneath: a key
        set here wins. The ports always come from `port` and `metrics.portRange` (the
        units set `ROCKET_PORT` and `BABYLON_METRICS__EXPORT__PORT`).
      '';
    };

    database = {
      type = mkOption {
        type = types.enum [
          "sqlite"
          "postgresql"
          "external"
        ];
        default = "sqlite";
        description = ''
          `sqlite`: a file in the state directory, `/var/lib/babylon/babylon.sqlite`,
          shared by all instances. `postgresql`: a local PostgreSQL
          (`services.postgresql`) with a database and role `babylon`, reached over the
          Unix socket with peer authentication; the units then run as the static user
          `babylon`. `external`: any `postgres://` URL, read at start from
          `database.urlFile`.
        '';
      };

      urlFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/babylon-database-url";
        description = ''
          With `type = "external"`: a file holding the database URL (it may contain a
          password). Handed to the units with `LoadCredential=` and exported as
          `BABYLON_DATABASES__MAIN__URL` just before babylon starts, so it never enters
          the Nix store.
        '';
      };
    };

    redis = {
      enable = mkEnableOption ''
        a Redis on this host for babylon
        (`services.redis.servers.${babylonLib.redisServerName}`, unit
        `${babylonLib.redisService}`), reached over its Unix socket only (no TCP port
        unless you set `services.redis.servers.${babylonLib.redisServerName}.port`). Every
        instance gets `redis.url` (that socket), `cache.backend = "redis"` and, when
        `settings` sets `blocking.rate_limit`, `blocking.rate_limit.backend = "redis"`; a
        value of these in `settings` wins. The units join the server's group to open the
        socket'';

      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "redis://10.0.0.4:6379/0";
        description = ''
          Another Redis (shared by several hosts, say): `redis://host[:port][/db]`, `rediss://…` (TLS) or
          `unix:///path/to/redis.sock`, set as every instance's `redis.url`, with
          `cache.backend` and the rate limit's backend as with `redis.enable`; no local
          Redis is provisioned. It lands in the Nix store: a URL with a password belongs
          in `redis.urlFile`. Not together with `redis.enable`.
        '';
      };

      urlFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/babylon-redis-url";
        description = ''
          Like `redis.url`, from a file holding the URL (it may contain a password).
          Handed to the units with `LoadCredential=` and exported as `BABYLON_REDIS__URL`
          just before babylon starts, so it never enters the Nix store: give a path as a
          string.
        '';
      };
    };

    prometheus = {
      enable = mkEnableOption ''
        a local Prometheus (`services.prometheus`) with a scrape job `babylon` (one
        static target per instance export port, and other hosts' instances from
        `prometheus.remoteTargets` and `prometheus.fileSdDirectories`) and babylon's
        recording and alerting rules. It listens on
        `${babylonLib.prometheusListenAddress}` only (`services.prometheus.listenAddress`
        defaults to that here, not to nixpkgs' `0.0.0.0`): its API hands every scraped
        series to anyone who reaches it, without the metrics token or allow-list. To
        reach it from other hosts, set
        `services.prometheus.listenAddress` yourself and protect
        `services.prometheus.port` (9090 by default): open it only to trusted hosts,
        or put authentication in front (`services.prometheus.webConfigFile` or a
        reverse proxy)
      '';

      scrapeInterval = mkOption {
        type = types.str;
        default = "15s";
        description = "Scrape interval of the `babylon` job.";
      };

      remoteTargets = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "app2.internal:8001"
          "app2.internal:8002"
          "10.0.0.8:8001"
        ];
        description = ''
          babylon export ports on other hosts, as `"host:port"`, scraped by the same
          `babylon` job (with the same token, from `metrics.tokenFile`); their `instance`
          label is that `host:port`. Those hosts must listen beyond loopback
          (`metrics.address`), let this host in (`metrics.allow`), use the same token and
          open their export ports (`openFirewall`).
        '';
      };

      fileSdDirectories = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "/var/lib/babylon-targets" ];
        description = ''
          Directories of Prometheus file_sd target files (`*.json`, as babylon writes with
          `metrics.export.file_sd`) naming babylon instances on other hosts, read by the
          same `babylon` job (`file_sd_configs`, with the same token). Prometheus must be
          able to read them; how the files get there (a shared file system, a deployment
          tool) is up to you. Not this host's instances: they are scraped already.
        '';
      };

      tls = {
        caFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = "/etc/prometheus/babylon-ca.pem";
          description = ''
            PEM certificate of the CA that signed the export ports' certificates
            (`metrics.tls.certFile` here, and on the hosts of `remoteTargets`): required
            when they serve TLS. The scrape job then uses `scheme: https` and a
            `tls_config`; the files of this group reach Prometheus as `LoadCredential=`
            of `prometheus.service`.
          '';
        };

        certFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = "/etc/prometheus/babylon-client.pem";
          description = ''
            Prometheus' client certificate, signed by a CA of `metrics.tls.clientCaFile`:
            required when the export ports ask for one (mutual TLS).
          '';
        };

        keyFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = "/run/secrets/prometheus-babylon-client.key";
          description = ''
            The private key of `prometheus.tls.certFile`; a path outside the Nix store,
            as a string.
          '';
        };

        serverName = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "babylon.internal";
          description = ''
            The name Prometheus checks in the export ports' certificates
            (`tls_config.server_name`), when the targets' hosts (127.0.0.1 for this
            host's instances) are not among their subject alternative names.
          '';
        };
      };

      remoteWrite = mkOption {
        type = types.listOf (types.attrsOf types.anything);
        default = [ ];
        example = literalExpression ''
          [ { url = "http://thanos-receive.internal:19291/api/v1/receive"; } ]
        '';
        description = ''
          Remote write endpoints of the local Prometheus (a Thanos receiver, Mimir, …),
          passed on to `services.prometheus.remoteWrite` (Prometheus' `remote_write`
          entries, with the keys nixpkgs declares there: `url`, `basic_auth`,
          `bearer_token_file`, `tls_config`, `queue_config`, `write_relabel_configs`, …).
          Give secrets as files (`basic_auth.password_file`, `bearer_token_file`) outside
          the Nix store that the `prometheus` user can read, and set
          `services.prometheus.checkConfig = "syntax-only"`: the build's promtool cannot
          read them.
        '';
      };
    };

    grafana = {
      enable = mkEnableOption ''
        Grafana (`services.grafana`) provisioned with a Prometheus datasource (uid
        `babylon-prometheus`, the local Prometheus) and babylon's dashboards
      '';

      adminPasswordFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/grafana-admin-password";
        description = ''
          File holding the password of Grafana's `admin` user; required with
          `grafana.enable`. Read by Grafana through its file provider from a systemd
          credential, so it stays outside the Nix store. A
          `services.grafana.settings.security.admin_password` of your own wins over it.
        '';
      };

      secretKeyFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = ''
          File holding Grafana's `secret_key`. When null, the module generates a random
          key once, in `${babylonLib.grafanaGeneratedSecretKey}`, and keeps it.
        '';
      };

      exemplarTraceUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://jaeger.example.org/trace/\${__value.raw}";
        description = ''
          Where the exemplars of babylon's dashboards lead (one recent request per
          latency bucket, and of `api_requests_total`, named by its `trace_id`): a URL in
          which Grafana puts an exemplar's `trace_id` for `''${__value.raw}`, written as
          Grafana's data links take it (`"…/\''${__value.raw}"` in a Nix string; the
          module doubles each `$` for Grafana's provisioning file). Set, the datasource's
          `jsonData.exemplarTraceIdDestinations` gets a "View trace" link. Null (the
          default), and without `exemplarTraceDatasourceUid`, Grafana shows exemplars
          without a link: the module provisions no tracing backend.
        '';
      };

      exemplarTraceDatasourceUid = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "tempo";
        description = ''
          The uid of a Tempo datasource of the same Grafana: each exemplar then links to
          its `trace_id` in Explore with that datasource. Beside or instead of
          `exemplarTraceUrl`; null by default (no link).
        '';
      };
    };

    nginx = {
      enable = mkEnableOption ''
        nginx in front of babylon: an upstream `babylon` with one server per instance, a
        virtual host proxying `/` to it and answering 403 on the metrics path; babylon
        then trusts the client address nginx forwards
      '';

      virtualHost = mkOption {
        type = types.str;
        default = "localhost";
        example = "babylon.example.org";
        description = ''
          Name of the nginx virtual host (`services.nginx.virtualHosts.<name>`). The
          module defines only its `locations`: give it HTTPS by setting TLS options on
          the same virtual host in your configuration, which NixOS merges with the
          module's, e.g. `services.nginx.virtualHosts."babylon.example.org" = {
          forceSSL = true; enableACME = true; };` (or `sslCertificate` and
          `sslCertificateKey`).
        '';
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = babylonLib.assertions plain;
      warnings = babylonLib.warnings plain;

      systemd.services = builtins.listToAttrs (
        map (instance: {
          name = instance.unit;
          value = unit instance;
        }) (babylonLib.instanceList plain)
      );

      systemd.targets.babylon = {
        description = "All babylon instances";
        wantedBy = [ "multi-user.target" ];
        wants = map (index: babylonLib.serviceName index) (babylonLib.indices plain);
      };

      networking.firewall.allowedTCPPorts = babylonLib.firewallPorts plain;
    }

    (mkIf staticUser {
      users.users.${babylonLib.user} = {
        isSystemUser = true;
        group = babylonLib.user;
        description = "babylon service user";
      };
      users.groups.${babylonLib.user} = { };

      services.postgresql = {
        enable = true;
        ensureDatabases = [ "babylon" ];
        ensureUsers = [
          {
            name = babylonLib.user;
            ensureDBOwnership = true;
          }
        ];
      };
    })

    (mkIf cfg.redis.enable {
      services.redis.servers.${babylonLib.redisServerName} = {
        enable = true;
        # The Unix socket only, unless the user opens a TCP port.
        port = mkDefault 0;
        # A cache and rate-limit counters: nothing worth writing to disk.
        save = mkDefault [ ];
      };
    })

    (mkIf cfg.prometheus.enable {
      services.prometheus = {
        enable = true;
        listenAddress = mkDefault babylonLib.prometheusListenAddress;
        # Exemplars, and native histograms from the protobuf format, as prometheus.yml.
        extraFlags = babylonLib.prometheusFeatureFlags;
        scrapeConfigs = [ (babylonLib.scrapeConfig plain // babylonLib.keepClassicHistograms) ];
        remoteWrite = babylonLib.prometheusRemoteWrite plain;
        ruleFiles = [
          "${share}/prometheus/recording_rules.yml"
          "${share}/prometheus/alerts.yml"
        ];
        # promtool runs in the build sandbox, where the credentials (token, TLS files) do
        # not exist.
        checkConfig = mkIf (babylonLib.prometheusCheckSyntaxOnly plain) "syntax-only";
      };
      systemd.services.prometheus.serviceConfig.LoadCredential =
        babylonLib.prometheusLoadCredentials plain;
    })

    (mkIf cfg.grafana.enable {
      services.grafana = {
        enable = true;
        settings.security = {
          admin_password = mkDefault babylonLib.grafanaSecurity.admin_password;
          secret_key = mkDefault babylonLib.grafanaSecurity.secret_key;
        };
        # grafana/provisioning.json, the definition nix/stack.nix and
        # scripts/local-stack.sh render too, for the local Prometheus and the packaged
        # dashboards.
        provision = {
          enable = true;
          datasources.settings = grafanaProvision.datasources;
          dashboards.settings = grafanaProvision.dashboards;
        };
      };

      systemd.services.grafana = {
        serviceConfig.LoadCredential = babylonLib.grafanaLoadCredentials plain;
        after = lib.optional generateGrafanaKey "babylon-grafana-secret-key.service";
        requires = lib.optional generateGrafanaKey "babylon-grafana-secret-key.service";
      };

      # Grafana encrypts its stored secrets with secret_key: make one once and keep it.
      systemd.services.babylon-grafana-secret-key = mkIf generateGrafanaKey {
        description = "Generate Grafana's secret key for babylon's Grafana";
        before = [ "grafana.service" ];
        serviceConfig = babylonLib.grafanaSecretKeyServiceConfig;
        script = ''
          key=${babylonLib.grafanaGeneratedSecretKey}
          if [ ! -s "$key" ]; then
            head -c 32 /dev/urandom | base64 > "$key.new"
            mv "$key.new" "$key"
          fi
        '';
      };
    })

    (mkIf cfg.nginx.enable {
      services.nginx = {
        enable = true;
        upstreams.babylon.servers = lib.genAttrs (babylonLib.upstreamServers plain) (_: { });
        virtualHosts.${cfg.nginx.virtualHost}.locations = {
          "/" = {
            proxyPass = "http://babylon";
            recommendedProxySettings = true;
          };
        }
        // lib.genAttrs (babylonLib.nginxDeniedLocations plain) (_: {
          return = "403";
        });
      };
    })
  ]);
}
