# Everything the babylon NixOS module computes, as pure functions of plain values:
# ports per instance, unit names, the settings each instance reads (Redis included),
# Prometheus scrape targets (this host's and other hosts'), nginx upstream servers,
# firewall ports, credentials, the units' start script and sandboxing, assertion messages.
#
# builtins only (no nixpkgs lib), so that `nix-instantiate --eval` can test it on any
# machine with Nix (nix/tests/lib-test.nix, tests/nix.rs); Grafana's provisioning comes
# from ../grafana/provisioning.nix, builtins only too. nix/module.nix turns the
# module's options into the plain attribute set `cfg` described by `defaults` below and
# calls these functions; nothing here knows about the module system.
let
  # ---- small helpers (the few pieces of nixpkgs lib we need) ----

  # [ from ... to ], empty when to < from.
  range = from: to: if to < from then [ ] else builtins.genList (n: from + n) (to - from + 1);

  optional = cond: value: if cond then [ value ] else [ ];
  optionals = cond: list: if cond then list else [ ];
  optionalAttrs = cond: attrs: if cond then attrs else { };

  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;

  hasSuffix =
    suffix: s:
    let
      length = builtins.stringLength s;
      suffixLength = builtins.stringLength suffix;
    in
    length >= suffixLength && builtins.substring (length - suffixLength) suffixLength s == suffix;

  # `override` wins; attribute sets merge recursively, anything else (lists included) is
  # replaced.
  recursiveMerge =
    base: override:
    if builtins.isAttrs base && builtins.isAttrs override then
      base
      // builtins.mapAttrs (
        name: value: if base ? ${name} then recursiveMerge base.${name} value else value
      ) override
    else
      override;

  trim =
    string:
    let
      matched = builtins.match "[[:space:]]*(.*[^[:space:]])[[:space:]]*" string;
    in
    if matched == null then "" else builtins.head matched;

  # The module's options with their defaults; every function accepts a partial `cfg`.
  defaults = {
    instances = 1;
    port = 8080;
    address = "127.0.0.1";
    openFirewall = false;
    metrics = {
      portRange = {
        from = 8001;
        to = 8050;
      };
      allow = [
        "127.0.0.0/8"
        "::1/128"
      ];
      # Path of the token file on the host (a string, never copied to the store).
      tokenFile = null;
      # Where the export ports listen (metrics.export.address); "" = every interface.
      address = "127.0.0.1";
      # HTTPS on the export ports (metrics.export.tls): host paths, handed to the units
      # as credentials. clientCaFile set: mutual TLS.
      tls = {
        certFile = null;
        keyFile = null;
        clientCaFile = null;
      };
    };
    database = {
      type = "sqlite";
      urlFile = null;
      postgresqlPort = 5432;
      postgresqlSocketDir = "/run/postgresql";
    };
    redis = {
      # A local Redis, services.redis.servers.babylon.
      enable = false;
      # Another Redis: its URL in the settings, or a file holding it (a credential).
      url = null;
      urlFile = null;
      # services.redis.servers.babylon as it takes effect (nixpkgs' defaults for a named
      # server, the module's port 0), read only with `enable`.
      server = {
        unixSocket = "/run/redis-${redisServerName}/redis.sock";
        port = 0;
        bind = "127.0.0.1";
        group = "redis-${redisServerName}";
        requiresPassword = false;
      };
    };
    prometheus = {
      enable = false;
      scrapeInterval = "15s";
      # babylon export targets on other hosts, "host:port".
      remoteTargets = [ ];
      # Directories of file_sd target files (*.json) naming targets on other hosts.
      fileSdDirectories = [ ];
      # services.prometheus.remoteWrite, passed on.
      remoteWrite = [ ];
      # How the local Prometheus scrapes export ports that serve TLS: the CA that signed
      # their certificates, its own client certificate and key (mutual TLS), and the name
      # to check in the certificates when the targets' hosts are not in them.
      tls = {
        caFile = null;
        certFile = null;
        keyFile = null;
        serverName = null;
      };
      # services.prometheus.listenAddress and webConfigFile as they take effect.
      server = {
        listenAddress = prometheusListenAddress;
        webConfigFile = null;
      };
    };
    grafana = {
      enable = false;
      adminPasswordFile = null;
      secretKeyFile = null;
      # Where an exemplar's trace_id leads: a Grafana data link URL, the uid of a tracing
      # datasource of the same Grafana, both or neither (no link).
      exemplarTraceUrl = null;
      exemplarTraceDatasourceUid = null;
    };
    nginx = {
      enable = false;
      virtualHost = "localhost";
    };
    # The user's `services.babylon.settings` (keys of the `release` profile).
    settings = { };
  };

  normalize = cfg: recursiveMerge defaults cfg;

  userSettings = cfg: (normalize cfg).settings;

  # ---- names ----

  # The profile the units select (ROCKET_PROFILE) and the generated file's only table.
  profile = "release";

  unitName = index: "babylon-${toString index}";
  serviceName = index: "${unitName index}.service";

  # systemd puts LoadCredential= files here (also $CREDENTIALS_DIRECTORY in the unit).
  credentialsDirectory = index: "/run/credentials/${serviceName index}";

  # Names of the credentials (LoadCredential=<name>:<host path>).
  credentialNames = {
    metricsToken = "metrics-token";
    databaseUrl = "database-url";
    redisUrl = "redis-url";
    exportTlsCert = "export-tls-cert";
    exportTlsKey = "export-tls-key";
    exportTlsClientCa = "export-tls-client-ca";
    # On prometheus.service and grafana.service; prefixed, since those units are shared.
    prometheusToken = "babylon-metrics-token";
    prometheusTlsCa = "babylon-tls-ca";
    prometheusTlsCert = "babylon-tls-cert";
    prometheusTlsKey = "babylon-tls-key";
    grafanaAdminPassword = "babylon-admin-password";
    grafanaSecretKey = "babylon-secret-key";
  };

  # Where the module generates Grafana's secret key when no file is given: the state
  # directory (StateDirectory=) of the unit that generates it.
  grafanaStateDirectory = "babylon-grafana";
  grafanaGeneratedSecretKey = "/var/lib/${grafanaStateDirectory}/secret-key";

  # The user babylon runs as: static for PostgreSQL peer authentication, else dynamic.
  user = "babylon";

  # The local Redis: services.redis.servers.<redisServerName>, whose unit nixpkgs names
  # redis-<name>.
  redisServerName = "babylon";
  redisService = "redis-${redisServerName}.service";

  # ---- ports ----

  indices = cfg: range 1 (normalize cfg).instances;

  appPort = cfg: index: (normalize cfg).port + index - 1;

  # Instance i gets the i-th port of metrics.portRange, a fixed `metrics.export.port`.
  exportPort =
    cfg: index:
    let
      c = normalize cfg;
      inherit (c.metrics.portRange) from to;
      port = from + index - 1;
      outside = "babylon: instance ${toString index} needs export port ${toString port}, outside services.babylon.metrics.portRange ${toString from}-${toString to}";
    in
    if index < 1 || port > to then throw outside else port;

  # One record per instance.
  instanceList =
    cfg:
    map (index: {
      inherit index;
      unit = unitName index;
      service = serviceName index;
      appPort = appPort cfg index;
      exportPort = exportPort cfg index;
    }) (indices cfg);

  appPorts = cfg: map (appPort cfg) (indices cfg);
  exportPorts = cfg: map (exportPort cfg) (indices cfg);

  # ---- addresses and the metrics allow-list ----

  # A CIDR list setting as babylon reads it: a list, or one comma-separated string.
  cidrList =
    value:
    if builtins.isList value then
      value
    else
      builtins.filter (entry: entry != "") (
        map trim (builtins.filter builtins.isString (builtins.split "," value))
      );

  isLoopbackCidr =
    cidr:
    hasPrefix "127." cidr
    || hasPrefix "::ffff:127." cidr
    || builtins.elem cidr [
      "::1"
      "::1/128"
    ];

  # metrics.export.allow as it takes effect (the user's setting, else the option).
  effectiveAllow = cfg: cidrList (sharedSettings cfg).metrics.export.allow;

  # Whether the allow-list lets in anyone beyond this host.
  exportedBeyondLoopback = cfg: !(builtins.all isLoopbackCidr (effectiveAllow cfg));

  # Whether local clients (Prometheus on this host) may read metrics.
  loopbackAllowed =
    cfg:
    builtins.any (
      cidr:
      isLoopbackCidr cidr
      || builtins.elem cidr [
        "0.0.0.0/0"
        "::/0"
      ]
    ) (effectiveAllow cfg);

  # Whether a server bound to `address` is reachable from this host only: 127.0.0.0/8
  # (also IPv4-mapped) and ::1. "" (every interface, for Rocket and babylon's export
  # listener), "0.0.0.0", "::" and any other address are reachable from outside. IPv6 may
  # come in brackets.
  isLoopbackAddress =
    address: isLoopbackCidr (builtins.head (builtins.match "\\[?([^]]*)]?" address));

  # Where to reach a server bound to `address` from this host.
  connectHost =
    address:
    if
      builtins.elem address [
        ""
        "0.0.0.0"
      ]
    then
      "127.0.0.1"
    else if
      builtins.elem address [
        "::"
        "[::]"
      ]
    then
      "[::1]"
    else if builtins.match ".*:.*" address != null && !(hasPrefix "[" address) then
      "[${address}]"
    else
      address;

  # ---- settings ----

  # databases.main.url for the database type, or null when it comes from a credential.
  databaseUrl =
    cfg:
    let
      c = normalize cfg;
      db = c.database;
      postgresqlUrl = "postgres://${user}@localhost:${toString db.postgresqlPort}/babylon?host=${db.postgresqlSocketDir}";
    in
    if db.type == "sqlite" then
      # Relative: babylon resolves it in $STATE_DIRECTORY (/var/lib/babylon).
      "sqlite://babylon.sqlite"
    else if db.type == "postgresql" then
      # Unix socket, peer authentication as the static user `babylon`; sqlx takes a
      # `host` parameter starting with / as the socket directory.
      postgresqlUrl
    else
      null;

  # Which of redis.enable, redis.url and redis.urlFile are set (at most one may be).
  redisSources =
    cfg:
    let
      inherit ((normalize cfg).redis) enable url urlFile;
    in
    optional enable "redis.enable"
    ++ optional (url != null) "redis.url"
    ++ optional (urlFile != null) "redis.urlFile";

  # Whether the instances use a Redis (their cache, and their rate limit when one is set).
  redisUsed = cfg: redisSources cfg != [ ];

  # How babylon reaches services.redis.servers.babylon (`server`, as in `defaults`): its
  # Unix socket, else its TCP port on the first address it binds; null when it has
  # neither.
  localRedisUrl =
    server:
    let
      # `bind` lists addresses, each optionally prefixed with "-" (optional address).
      words = builtins.filter builtins.isString (builtins.split " " (toString server.bind));
      unprefixed =
        word: if hasPrefix "-" word then builtins.substring 1 (builtins.stringLength word) word else word;
      binds = builtins.filter (word: word != "") (map unprefixed words);
      host =
        if server.bind == null || binds == [ ] then "127.0.0.1" else connectHost (builtins.head binds);
    in
    if server.unixSocket != null then
      "unix://${toString server.unixSocket}"
    else if server.port != 0 then
      "redis://${host}:${toString server.port}"
    else
      null;

  # redis.url for the settings, or null (no Redis, or its URL comes from a credential).
  redisUrl =
    cfg:
    let
      inherit ((normalize cfg).redis) enable url server;
    in
    if url != null then
      url
    else if enable then
      localRedisUrl server
    else
      null;

  # What the module sets for every instance, before the user's settings.
  sharedModuleSettings =
    cfg:
    let
      c = normalize cfg;
      url = databaseUrl c;
      redis = redisUrl c;
    in
    builtins.foldl' recursiveMerge { } [
      {
        address = c.address;
        # Client-address headers are judged by blocking.trusted_proxies, never by Rocket.
        ip_header = false;
        metrics = {
          # Prometheus scrapes the export port; the application port never serves metrics.
          serve_on_main_port = false;
          export = {
            enabled = true;
            inherit (c.metrics) address allow;
          };
        };
      }
      (optionalAttrs (url != null) { databases.main.url = url; })
      (optionalAttrs c.nginx.enable {
        # nginx on this host forwards the client address in X-Forwarded-For.
        blocking.trusted_proxies = [
          "127.0.0.1/32"
          "::1/128"
        ];
      })
      (optionalAttrs (redis != null) { redis.url = redis; })
      # One cache for every instance (and host) sharing the Redis.
      (optionalAttrs (redisUsed c) { cache.backend = "redis"; })
      # The rate limit, when the user sets one, counted in the Redis too: one budget per
      # client across every instance, not one per instance.
      (optionalAttrs (redisUsed c && c.settings ? blocking.rate_limit) {
        blocking.rate_limit.backend = "redis";
      })
    ];

  # What the module sets for instance `index`, before the user's settings.
  moduleSettings =
    cfg: index:
    let
      c = normalize cfg;
    in
    recursiveMerge (sharedModuleSettings c) {
      port = appPort c index;
      metrics.export = {
        port = exportPort c index;
      }
      // optionalAttrs (c.metrics.tokenFile != null) {
        token_file = "${credentialsDirectory index}/${credentialNames.metricsToken}";
      }
      // optionalAttrs (c.metrics.tls.certFile != null) {
        tls = {
          cert_file = "${credentialsDirectory index}/${credentialNames.exportTlsCert}";
          key_file = "${credentialsDirectory index}/${credentialNames.exportTlsKey}";
        }
        // optionalAttrs (c.metrics.tls.clientCaFile != null) {
          client_ca_file = "${credentialsDirectory index}/${credentialNames.exportTlsClientCa}";
        };
      };
    };

  # The settings instance `index` runs with: the module's, with the user's on top.
  instanceSettings = cfg: index: recursiveMerge (moduleSettings cfg index) (userSettings cfg);

  # The whole Rocket.toml of instance `index` (ROCKET_CONFIG; ROCKET_PROFILE=release).
  configFor = cfg: index: { ${profile} = instanceSettings cfg index; };

  # The settings every instance shares, as they take effect (the user's value, else the
  # module's); the per-instance ports and token path are left out.
  sharedSettings =
    cfg:
    let
      c = normalize cfg;
    in
    recursiveMerge (sharedModuleSettings c) c.settings;

  metricsPath = cfg: (sharedSettings cfg).metrics.path or "/metrics";

  # Whether metrics readers must send credentials: metrics.tokenFile, a token_file
  # setting, or users of a basic_auth_users setting.
  metricsTokenSet =
    cfg:
    let
      c = normalize cfg;
      export = c.settings.metrics.export or { };
    in
    c.metrics.tokenFile != null || export ? token_file || (export.basic_auth_users or { }) != { };

  # Whether the export ports serve TLS: metrics.tls, or a tls table of the user's settings.
  exportTlsSet =
    cfg:
    let
      c = normalize cfg;
    in
    c.metrics.tls.certFile != null || c.settings ? metrics.export.tls;

  # Whether they ask for client certificates (mutual TLS).
  exportMutualTls =
    cfg:
    let
      c = normalize cfg;
    in
    c.metrics.tls.clientCaFile != null || c.settings ? metrics.export.tls.client_ca_file;

  # Where the application ports and the export ports listen, as they take effect: a user's
  # `settings.address` (`settings.metrics.export.address`) wins over the option `address`
  # (`metrics.address`); without either, babylon's export listener would take "".
  appAddress = cfg: (sharedSettings cfg).address;
  exportAddress = cfg: (sharedSettings cfg).metrics.export.address or "";

  # ---- systemd ----

  environment = cfg: index: configFile: {
    ROCKET_CONFIG = toString configFile;
    ROCKET_PROFILE = profile;
    ROCKET_PORT = toString (appPort cfg index);
    BABYLON_METRICS__EXPORT__PORT = toString (exportPort cfg index);
  };

  # LoadCredential= entries of every babylon unit.
  loadCredentials =
    cfg:
    let
      c = normalize cfg;
    in
    credentialsOf [
      [ credentialNames.metricsToken c.metrics.tokenFile ]
      [
        credentialNames.databaseUrl
        (if c.database.type == "external" then c.database.urlFile else null)
      ]
      [ credentialNames.redisUrl c.redis.urlFile ]
      [ credentialNames.exportTlsCert c.metrics.tls.certFile ]
      [ credentialNames.exportTlsKey c.metrics.tls.keyFile ]
      [ credentialNames.exportTlsClientCa c.metrics.tls.clientCaFile ]
    ];

  # LoadCredential= entries "name:path" of the [ name path ] pairs whose path is set.
  credentialsOf =
    pairs:
    map (pair: "${builtins.elemAt pair 0}:${toString (builtins.elemAt pair 1)}") (
      builtins.filter (pair: builtins.elemAt pair 1 != null) pairs
    );

  # Settings that hold secrets (URLs with a password), as environment variables the start
  # script reads from the unit's credentials: { variable = credential name; }.
  credentialVariables =
    cfg:
    let
      c = normalize cfg;
    in
    optionalAttrs (c.database.type == "external" && c.database.urlFile != null) {
      BABYLON_DATABASES__MAIN__URL = credentialNames.databaseUrl;
    }
    // optionalAttrs (c.redis.urlFile != null) {
      BABYLON_REDIS__URL = credentialNames.redisUrl;
    };

  # The script the units run when a setting comes from a credential: it exports each one
  # (systemd's $CREDENTIALS_DIRECTORY) and execs `exe`; null when there is none.
  startScript =
    cfg: exe:
    let
      variables = credentialVariables cfg;
      export = name: ''
        ${name}="$(< "$CREDENTIALS_DIRECTORY/${variables.${name}}")"
        export ${name}
      '';
    in
    if variables == { } then
      null
    else
      builtins.concatStringsSep "" (map export (builtins.attrNames variables))
      + ''
        exec ${exe} "$@"
      '';

  # Whether the units wait for network-online.target: a database or Redis on another host,
  # or an application or export port bound to one specific address of this host (which
  # must be up before babylon can bind it).
  waitsForNetwork =
    cfg:
    let
      c = normalize cfg;
      specific =
        address:
        !(
          isLoopbackAddress address
          || builtins.elem address [
            ""
            "0.0.0.0"
            "::"
            "[::]"
          ]
        );
    in
    c.database.type == "external"
    || c.redis.url != null
    || c.redis.urlFile != null
    || specific (appAddress c)
    || specific (exportAddress c);

  # Whether the units need the static user (PostgreSQL peer authentication).
  staticUser = cfg: (normalize cfg).database.type == "postgresql";

  # The sandbox of every unit the module defines: no capabilities, a read-only system,
  # no devices, no kernel knobs, no other users' processes, files private to the unit.
  # Each unit adds the address families it needs.
  hardening = {
    AmbientCapabilities = "";
    CapabilityBoundingSet = "";
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    NoNewPrivileges = true;
    PrivateDevices = true;
    PrivateTmp = true;
    ProtectClock = true;
    ProtectControlGroups = true;
    ProtectHome = true;
    ProtectHostname = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectProc = "invisible";
    ProtectSystem = "strict";
    RemoveIPC = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    UMask = "0077";
  };

  # LimitNOFILE= of the babylon units. babylon raises its soft open-files limit to the
  # hard one at start, so the hard limit bounds how many connections it can hold.
  # systemd (since v240) gives services 1024:524288; a lower value (65536, say) would
  # cut that, so the units keep 524288, also on a host that lowered DefaultLimitNOFILE=.
  openFilesLimit = 524288;

  # ---- Prometheus ----

  # Where prometheus.service reads the token (LoadCredential on prometheus.service).
  prometheusTokenFile = "/run/credentials/prometheus.service/${credentialNames.prometheusToken}";

  # services.prometheus.listenAddress unless the user sets it (nixpkgs' default is
  # 0.0.0.0): Prometheus' API serves every scraped series to anyone who reaches it, which
  # would bypass metrics.allow and the metrics token.
  prometheusListenAddress = "127.0.0.1";

  scrapeTargets = cfg: map (port: "127.0.0.1:${toString port}") (exportPorts cfg);

  # The file_sd files Prometheus reads in a directory (babylon writes babylon-<host>-<port>.json
  # there, and a temporary .babylon-<host>-<port>.json.tmp first, which *.json leaves out).
  fileSdFiles =
    directory:
    let
      dir = toString directory;
      trimmed =
        if hasSuffix "/" dir && dir != "/" then
          builtins.substring 0 (builtins.stringLength dir - 1) dir
        else
          dir;
    in
    "${trimmed}/*.json";

  # Where prometheus.service reads the files of prometheus.tls (its credentials).
  prometheusCredential = name: "/run/credentials/prometheus.service/${name}";

  # The scrape job's `scheme` and `tls_config` when the export ports serve TLS: the CA,
  # and for mutual TLS the client certificate and key, from Prometheus' credentials.
  scrapeTls =
    cfg:
    let
      c = normalize cfg;
      inherit (c.prometheus) tls;
    in
    optionalAttrs (exportTlsSet c) {
      scheme = "https";
      tls_config =
        optionalAttrs (tls.caFile != null) {
          ca_file = prometheusCredential credentialNames.prometheusTlsCa;
        }
        // optionalAttrs (tls.certFile != null) {
          cert_file = prometheusCredential credentialNames.prometheusTlsCert;
        }
        // optionalAttrs (tls.keyFile != null) {
          key_file = prometheusCredential credentialNames.prometheusTlsKey;
        }
        // optionalAttrs (tls.serverName != null) { server_name = tls.serverName; };
    };

  # The `babylon` scrape job: one static target per instance export port, labelled with
  # its unit; then the other hosts' targets (prometheus.remoteTargets, whose `instance`
  # label is their "host:port"), and the file_sd files of prometheus.fileSdDirectories,
  # all in the same job with the same token and TLS. `tokenFile` is the path Prometheus
  # reads the bearer token from, or null.
  scrapeConfigWith =
    cfg: tokenFile:
    let
      c = normalize cfg;
      inherit (c.prometheus) remoteTargets fileSdDirectories;
      local = map (instance: {
        targets = [ "127.0.0.1:${toString instance.exportPort}" ];
        labels.unit = instance.unit;
      }) (instanceList c);
    in
    {
      job_name = "babylon";
      metrics_path = metricsPath c;
      scrape_interval = c.prometheus.scrapeInterval;
      static_configs = local ++ optional (remoteTargets != [ ]) { targets = remoteTargets; };
    }
    // optionalAttrs (fileSdDirectories != [ ]) {
      file_sd_configs = [ { files = map fileSdFiles fileSdDirectories; } ];
    }
    // optionalAttrs (tokenFile != null) {
      authorization = {
        type = "Bearer";
        credentials_file = tokenFile;
      };
    }
    // scrapeTls c;

  scrapeConfig =
    cfg:
    let
      tokenSet = (normalize cfg).metrics.tokenFile != null;
    in
    scrapeConfigWith cfg (if tokenSet then prometheusTokenFile else null);

  # services.prometheus.remoteWrite: the option's list, as it is.
  prometheusRemoteWrite = cfg: (normalize cfg).prometheus.remoteWrite;

  prometheusLoadCredentials =
    cfg:
    let
      c = normalize cfg;
      inherit (c.prometheus) tls;
    in
    credentialsOf (
      [
        [ credentialNames.prometheusToken c.metrics.tokenFile ]
      ]
      ++ optionals (exportTlsSet c) [
        [ credentialNames.prometheusTlsCa tls.caFile ]
        [ credentialNames.prometheusTlsCert tls.certFile ]
        [ credentialNames.prometheusTlsKey tls.keyFile ]
      ]
    );

  # promtool in the build sandbox cannot read credentials: check the syntax only then.
  prometheusCheckSyntaxOnly = cfg: prometheusLoadCredentials cfg != [ ];

  # services.prometheus.extraFlags, as prometheus.yml asks of any Prometheus running it:
  # keep exemplars (the trace_id and span_id of the request-duration buckets and of
  # api_requests_total), and scrape babylon's protobuf format with native histograms
  # (each histogram stored as one native series). Prometheus 3.9+ ignores the second.
  prometheusFeatureFlags = [ "--enable-feature=exemplar-storage,native-histograms" ];

  # What the module adds to the scrape job for NixOS' Prometheus (3.x): keep each
  # histogram's classic _bucket, _sum and _count series beside its native one, for tools
  # that read only those and for remote write (which sends no native histogram unless
  # told to). The rules and dashboards read either shape. Not in scrapeConfigWith:
  # Prometheus 2.x refuses the key (tests/nix.rs checks that job with its promtool).
  keepClassicHistograms = {
    always_scrape_classic_histograms = true;
  };

  # ---- Grafana ----

  # Grafana's provisioning has one definition, grafana/provisioning.json, which
  # nix/stack.nix and scripts/local-stack.sh render too (tests/grafana_provisioning.rs
  # holds all three to it). ../grafana/provisioning.nix uses builtins only, like this file.
  grafanaProvisioning = import ../grafana/provisioning.nix;

  # Where Grafana reaches the local Prometheus, wherever services.prometheus.listenAddress
  # binds it.
  grafanaPrometheusUrl =
    prometheusAddress: prometheusPort:
    "http://${connectHost prometheusAddress}:${toString prometheusPort}";

  # The definition rendered for the local Prometheus and the dashboards in `dashboardsDir`,
  # with the exemplar link of grafana.exemplarTraceUrl and exemplarTraceDatasourceUid
  # when one is set: { datasources; dashboards; }, as
  # services.grafana.provision.datasources.settings and .dashboards.settings take them.
  grafanaProvision =
    cfg: prometheusAddress: prometheusPort: dashboardsDir:
    let
      inherit ((normalize cfg).grafana) exemplarTraceUrl exemplarTraceDatasourceUid;
    in
    grafanaProvisioning.render {
      prometheus_url = grafanaPrometheusUrl prometheusAddress prometheusPort;
      dashboards_dir = dashboardsDir;
      exemplar_trace_url = exemplarTraceUrl;
      exemplar_trace_datasource_uid = exemplarTraceDatasourceUid;
    };

  # The definition's one datasource and one dashboard provider (each placeholder is
  # filled only when read, so each needs only its own value).
  grafanaDatasource =
    prometheusAddress: prometheusPort:
    let
      rendered = grafanaProvisioning.render {
        prometheus_url = grafanaPrometheusUrl prometheusAddress prometheusPort;
      };
    in
    builtins.head rendered.datasources.datasources;

  grafanaDashboardProvider =
    dashboardsDir:
    let
      rendered = grafanaProvisioning.render { dashboards_dir = dashboardsDir; };
    in
    builtins.head rendered.dashboards.providers;

  grafanaSecretKeyFile =
    cfg:
    let
      inherit ((normalize cfg).grafana) secretKeyFile;
    in
    if secretKeyFile != null then secretKeyFile else grafanaGeneratedSecretKey;

  grafanaLoadCredentials =
    cfg:
    credentialsOf [
      [ credentialNames.grafanaAdminPassword (normalize cfg).grafana.adminPasswordFile ]
      [ credentialNames.grafanaSecretKey (grafanaSecretKeyFile cfg) ]
    ];

  # The unit that generates Grafana's secret key. Nothing but systemd reads the key (as
  # root, for grafana.service's LoadCredential=), so a dynamic user may own it; the unit
  # needs no network at all.
  grafanaSecretKeyServiceConfig = hardening // {
    Type = "oneshot";
    RemainAfterExit = true;
    DynamicUser = true;
    StateDirectory = grafanaStateDirectory;
    StateDirectoryMode = "0700";
    PrivateNetwork = true;
    RestrictAddressFamilies = "none";
  };

  # Grafana's file provider reads the secrets from grafana.service's credentials.
  grafanaCredentials = "/run/credentials/grafana.service";
  grafanaSecurity = {
    admin_password = "$__file{${grafanaCredentials}/${credentialNames.grafanaAdminPassword}}";
    secret_key = "$__file{${grafanaCredentials}/${credentialNames.grafanaSecretKey}}";
  };

  # ---- nginx ----

  upstreamServers =
    cfg:
    let
      host = connectHost (normalize cfg).address;
    in
    map (port: "${host}:${toString port}") (appPorts cfg);

  # Locations nginx answers 403 itself (prefix matches).
  nginxDeniedLocations = cfg: [ (metricsPath cfg) ];

  # ---- firewall ----

  # With openFirewall: the ports other hosts can reach. An application port bound to
  # loopback is not; an export port is when it is not bound to loopback and the
  # allow-list lets in more than this host.
  firewallPorts =
    cfg:
    let
      c = normalize cfg;
      app = optionals (!isLoopbackAddress (appAddress c)) (appPorts c);
      exportReachable = exportedBeyondLoopback c && !isLoopbackAddress (exportAddress c);
      export = optionals exportReachable (exportPorts c);
    in
    optionals c.openFirewall (app ++ export);

  # ---- checks ----

  # Problems that must stop evaluation, as assertion messages (empty: all good).
  errors =
    cfg:
    let
      c = normalize cfg;
      inherit (c.metrics.portRange) from to;
      size = to - from + 1;
      lastApp = c.port + c.instances - 1;
      lastExport = from + c.instances - 1;
      userExport = c.settings.metrics.export or { };
      checks = [
        {
          when = c.instances < 1;
          message = "services.babylon.instances must be at least 1 (it is ${toString c.instances})";
        }
        {
          when = from > to;
          message = "services.babylon.metrics.portRange is reversed: from = ${toString from} is above to = ${toString to}";
        }
        {
          when = from <= to && c.instances > size;
          message = "services.babylon.instances = ${toString c.instances} does not fit services.babylon.metrics.portRange ${toString from}-${toString to} (${toString size} ports, one fixed export port per instance): widen the range or run fewer instances";
        }
        {
          when = lastApp > 65535;
          message = "services.babylon.port = ${toString c.port} with ${toString c.instances} instances needs ports up to ${toString lastApp}, beyond 65535";
        }
        {
          when = from <= to && c.instances >= 1 && c.port <= lastExport && from <= lastApp;
          message = "services.babylon application ports ${toString c.port}-${toString lastApp} overlap the export ports ${toString from}-${toString lastExport} of services.babylon.metrics.portRange";
        }
        {
          when = userExport ? port || userExport ? port_range;
          message = "services.babylon.settings.metrics.export.port / port_range: the module gives each instance a fixed export port; set services.babylon.metrics.portRange instead";
        }
        {
          when = c.database.type == "external" && c.database.urlFile == null;
          message = "services.babylon.database.type = \"external\" needs services.babylon.database.urlFile (a file holding the postgres:// URL, read at start as a credential)";
        }
        {
          when = c.database.type != "external" && c.database.urlFile != null;
          message = "services.babylon.database.urlFile is only read with database.type = \"external\" (it is \"${c.database.type}\")";
        }
        {
          when = c.grafana.enable && c.grafana.adminPasswordFile == null;
          message = "services.babylon.grafana.enable needs services.babylon.grafana.adminPasswordFile (Grafana's admin password, kept out of the Nix store)";
        }
        {
          when =
            c.grafana.exemplarTraceUrl != null
            && builtins.match ".*[$][$].*" c.grafana.exemplarTraceUrl != null;
          message = "services.babylon.grafana.exemplarTraceUrl = \"${c.grafana.exemplarTraceUrl}\" holds $$: give the link as Grafana's data links take it, with \${__value.raw} for the trace id (in a Nix string \"\\\${__value.raw}\"); the module doubles every $ for Grafana's provisioning file itself";
        }
        {
          when = builtins.length redis > 1;
          message = "services.babylon.${builtins.concatStringsSep " and services.babylon." redis} are set together: set only one of them: redis.enable for a Redis on this host (services.redis.servers.${redisServerName}), or redis.url or redis.urlFile for another one";
        }
        {
          when = c.redis.url != null && builtins.match "(redis|rediss|unix|redis\\+unix)://[^#]+" c.redis.url == null;
          message = "services.babylon.redis.url = \"${toString c.redis.url}\" is not redis://host[:port][/db], rediss://host[:port][/db] (TLS) or unix:///path/to/redis.sock, without a #fragment (babylon refuses #insecure: trust a private CA with settings.redis.tls_ca_file)";
        }
        {
          when = redis == [ "redis.enable" ] && localRedisUrl c.redis.server == null;
          message = "services.babylon.redis.enable: services.redis.servers.${redisServerName} has neither a unixSocket nor a TCP port, so babylon cannot reach it";
        }
        {
          when =
            redis == [ "redis.enable" ]
            && c.redis.server.unixSocket != null
            && c.redis.server.requiresPassword;
          message = "services.babylon.redis.enable: babylon reaches services.redis.servers.${redisServerName} over its Unix socket without a password, but that server sets requirePass or requirePassFile; drop it (the socket is open only to the group ${toString c.redis.server.group}), or run that Redis yourself and give babylon its URL with the password in services.babylon.redis.urlFile";
        }
        {
          when = exportExposed && !(exportedBeyondLoopback c && metricsTokenSet c);
          message = "services.babylon.metrics.address = \"${exportAddress c}\" (metrics.export.address) makes the metrics export ports listen beyond this host: ${
            builtins.concatStringsSep " and " (
              optional (!exportedBeyondLoopback c) "set services.babylon.metrics.allow to the addresses of the Prometheus servers that scrape them (it lets in loopback only)"
              ++ optional (!metricsTokenSet c) "set services.babylon.metrics.tokenFile (the bearer token they must send) or settings.metrics.export.basic_auth_users"
            )
          }, or keep metrics.address on loopback (127.0.0.1 or ::1)";
        }
        {
          when = (c.metrics.tls.certFile == null) != (c.metrics.tls.keyFile == null);
          message = "services.babylon.metrics.tls.certFile and metrics.tls.keyFile go together: set both (the export ports' certificate and its private key) or neither";
        }
        {
          when = c.metrics.tls.clientCaFile != null && c.metrics.tls.certFile == null;
          message = "services.babylon.metrics.tls.clientCaFile asks scrapers for client certificates, which needs TLS: set metrics.tls.certFile and metrics.tls.keyFile too";
        }
        {
          when = c.prometheus.enable && exportTlsSet c && c.prometheus.tls.caFile == null;
          message = "services.babylon.prometheus.enable: the export ports serve HTTPS (metrics.tls), so the local Prometheus must check their certificates: set services.babylon.prometheus.tls.caFile (the CA that signed them)";
        }
        {
          when =
            c.prometheus.enable
            && exportMutualTls c
            && (c.prometheus.tls.certFile == null || c.prometheus.tls.keyFile == null);
          message = "services.babylon.prometheus.enable: the export ports ask for client certificates (metrics.tls.clientCaFile), so the local Prometheus needs one: set services.babylon.prometheus.tls.certFile and prometheus.tls.keyFile (a certificate that client CA signed, and its key)";
        }
        {
          when =
            c.prometheus.enable
            && !isLoopbackAddress c.prometheus.server.listenAddress
            && c.prometheus.server.webConfigFile == null;
          message = "services.prometheus.listenAddress = \"${c.prometheus.server.listenAddress}\" serves Prometheus' API, with every series it scraped from babylon, beyond this host to anyone: set services.prometheus.webConfigFile (Prometheus' web configuration, with basic_auth_users or tls_server_config) or keep listenAddress on loopback";
        }
        {
          when = builtins.any (
            target: builtins.match "[^/[:space:]]+:[0-9]+" target == null
          ) c.prometheus.remoteTargets;
          message = "services.babylon.prometheus.remoteTargets: every target is \"host:port\" (a host name or address and an export port, no scheme or path); got ${builtins.toJSON c.prometheus.remoteTargets}";
        }
      ];
      redis = redisSources c;
      exportExposed = !isLoopbackAddress (exportAddress c);
    in
    map (check: check.message) (builtins.filter (check: check.when) checks);

  # Things worth a warning but not a failure.
  warnings =
    cfg:
    let
      c = normalize cfg;
      inStore = path: path != null && hasPrefix builtins.storeDir (toString path);
      secretInStore = option: path: {
        when = inStore path;
        message = "services.babylon.${option} (${toString path}) is in the Nix store, readable by every local user; use a path outside the store for real secrets";
      };
      checks = [
        (secretInStore "metrics.tokenFile" c.metrics.tokenFile)
        (secretInStore "database.urlFile" c.database.urlFile)
        (secretInStore "grafana.adminPasswordFile" c.grafana.adminPasswordFile)
        (secretInStore "grafana.secretKeyFile" c.grafana.secretKeyFile)
        (secretInStore "redis.urlFile" c.redis.urlFile)
        (secretInStore "metrics.tls.keyFile" c.metrics.tls.keyFile)
        (secretInStore "prometheus.tls.keyFile" c.prometheus.tls.keyFile)
        {
          when = !isLoopbackAddress (exportAddress c) && !(exportTlsSet c);
          message = "services.babylon.metrics.address = \"${exportAddress c}\": scrapes of the export ports leave this host in cleartext, series and token alike; set services.babylon.metrics.tls (and prometheus.tls on the scraping host)";
        }
        {
          when =
            !(exportTlsSet c)
            && builtins.any (file: file != null) (builtins.attrValues c.prometheus.tls);
          message = "services.babylon.prometheus.tls is used only when the export ports serve TLS (services.babylon.metrics.tls)";
        }
        {
          when = c.prometheus.enable && !(loopbackAllowed c);
          message = "services.babylon.prometheus.enable: the local Prometheus scrapes from 127.0.0.1, which metrics.export.allow does not let in; its targets will answer 403";
        }
        {
          when =
            c.redis.url != null && builtins.match "[a-z]+://[^/@]*:[^/@]*@.*" c.redis.url != null;
          message = "services.babylon.redis.url holds a password, which ends up in the Nix store, readable by every local user; give the URL in services.babylon.redis.urlFile instead";
        }
        {
          when = exportedBeyondLoopback c && isLoopbackAddress (exportAddress c);
          message = "services.babylon.metrics.allow lets in other hosts, but the export ports listen on ${exportAddress c} only (services.babylon.metrics.address): set metrics.address for other hosts to reach them";
        }
        {
          when =
            !c.prometheus.enable
            && (
              c.prometheus.remoteTargets != [ ]
              || c.prometheus.fileSdDirectories != [ ]
              || c.prometheus.remoteWrite != [ ]
            );
          message = "services.babylon.prometheus.remoteTargets, fileSdDirectories and remoteWrite configure the local Prometheus: they do nothing without services.babylon.prometheus.enable";
        }
        {
          when =
            !c.grafana.enable
            && (c.grafana.exemplarTraceUrl != null || c.grafana.exemplarTraceDatasourceUid != null);
          message = "services.babylon.grafana.exemplarTraceUrl and exemplarTraceDatasourceUid configure the module's Grafana: they do nothing without services.babylon.grafana.enable";
        }
      ];
    in
    map (check: check.message) (builtins.filter (check: check.when) checks);

  assertions =
    cfg:
    map (message: {
      assertion = false;
      inherit message;
    }) (errors cfg);
in
{
  inherit
    range
    recursiveMerge
    defaults
    normalize
    profile
    unitName
    serviceName
    credentialsDirectory
    credentialNames
    grafanaStateDirectory
    grafanaGeneratedSecretKey
    user
    redisServerName
    redisService
    indices
    appPort
    exportPort
    instanceList
    appPorts
    exportPorts
    cidrList
    isLoopbackCidr
    exportedBeyondLoopback
    effectiveAllow
    loopbackAllowed
    isLoopbackAddress
    connectHost
    databaseUrl
    redisSources
    redisUsed
    localRedisUrl
    redisUrl
    sharedModuleSettings
    moduleSettings
    instanceSettings
    configFor
    sharedSettings
    metricsPath
    metricsTokenSet
    exportTlsSet
    exportMutualTls
    appAddress
    exportAddress
    environment
    loadCredentials
    credentialVariables
    startScript
    waitsForNetwork
    staticUser
    hardening
    openFilesLimit
    prometheusListenAddress
    prometheusTokenFile
    scrapeTargets
    fileSdFiles
    scrapeTls
    scrapeConfigWith
    scrapeConfig
    prometheusRemoteWrite
    prometheusLoadCredentials
    prometheusCheckSyntaxOnly
    prometheusFeatureFlags
    keepClassicHistograms
    credentialsOf
    grafanaProvisioning
    grafanaPrometheusUrl
    grafanaProvision
    grafanaDatasource
    grafanaDashboardProvider
    grafanaSecretKeyFile
    grafanaLoadCredentials
    grafanaSecretKeyServiceConfig
    grafanaCredentials
    grafanaSecurity
    upstreamServers
    nginxDeniedLocations
    firewallPorts
    errors
    warnings
    assertions
    ;
}
