# nix/module.nix evaluated without nixpkgs, for nix/tests/module-test.nix. `lib` stubs
# the few functions the module calls, with mkIf, mkMerge and mkDefault represented as
# nixpkgs represents them, and every option's definitions are resolved level by level as
# lib.modules does: the highest priority (lowest number) wins, lists concatenate, and
# different values at the winning priority are a conflict. A test thereby sees whether a
# user's own plain definition wins over the module's or conflicts with it.
#
# Not a module system: option types are not checked, and the module reads back only the
# other NixOS options listed in `nixosDefaults`. The files the module generates (each
# instance's settings, the start script) are never written (`nix-instantiate --eval`
# writes nothing to the store): their name is a store path followed by `#` and what the
# file would hold, which `generated` below reads back.
{
  # services.babylon as the user sets it, over the defaults the module declares.
  babylon,
  # The user's definitions of other NixOS options (services.prometheus.listenAddress, …).
  user ? { },
  # The module under test; tests/nix.rs passes altered copies to see the tests catch them.
  module ? ../module.nix,
}:
let
  babylonLib = import ../lib.nix;

  # lib.modules' priorities: a plain definition, mkDefault, an option's default.
  plainPriority = 100;
  defaultPriority = 1000;
  optionDefaultPriority = 1500;

  lib = rec {
    mkOverride = priority: content: {
      _type = "override";
      inherit priority content;
    };
    mkDefault = mkOverride defaultPriority;
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption =
      name:
      mkOption {
        type = types.bool;
        default = false;
        description = "Whether to enable ${name}.";
      };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    optional = cond: value: if cond then [ value ] else [ ];
    genAttrs =
      names: f:
      builtins.listToAttrs (
        map (name: {
          inherit name;
          value = f name;
        }) names
      );
    getExe = package: "${package}/bin/${package.meta.mainProgram}";
    # Only the names: optionDefaults below needs to know a submodule.
    types =
      let
        named = name: { inherit name; };
      in
      {
        bool = named "bool";
        package = named "package";
        path = named "path";
        port = named "port";
        str = named "str";
        ints.positive = named "positive integer";
        enum = _: named "enum";
        listOf = _: named "listOf";
        nullOr = _: named "nullOr";
        attrsOf = _: named "attrsOf";
        anything = named "anything";
        submodule = submodule: named "submodule" // { inherit (submodule) options; };
      };
  };

  # Store paths that are never built: the module only interpolates them.
  storePath = name: "${builtins.storeDir}/00000000000000000000000000000000-${name}";
  pkgs = {
    babylon = {
      outPath = storePath "babylon";
      meta.mainProgram = "babylon";
    };
    formats.toml = _: {
      type = lib.types.str // {
        name = "toml";
      };
      # As JSON, not TOML: a test reads it back with builtins.fromJSON.
      generate = name: value: "${storePath name}#${builtins.toJSON value}";
    };
    writeShellScript = name: text: "${storePath name}#${text}";
  };

  evaluated = import module {
    inherit lib pkgs;
    config.services = {
      babylon = babylonConfig;
      inherit (config.services) postgresql prometheus redis;
    };
  };

  # The value of each option under `options` when nobody defines it.
  optionDefaults =
    options:
    if options._type or null == "option" then
      if options.type.name == "submodule" then
        babylonLib.recursiveMerge (optionDefaults options.type.options) options.default
      else
        options.default
    else
      builtins.mapAttrs (_: optionDefaults) options;

  babylonConfig = babylonLib.recursiveMerge (optionDefaults evaluated.options.services.babylon) babylon;

  # nixpkgs' defaults (NixOS 25.11) of the other options the module reads.
  nixosDefaults = {
    services.postgresql.settings.port = 5432;
    services.prometheus = {
      listenAddress = "0.0.0.0";
      port = 9090;
      extraFlags = [ ];
      remoteWrite = [ ];
      webConfigFile = null;
    };
    # A server's defaults depend on its name; the module only defines `babylon`.
    services.redis.servers.babylon = {
      enable = false;
      port = 0;
      bind = "127.0.0.1";
      unixSocket = "/run/redis-babylon/redis.sock";
      unixSocketPerm = 660;
      user = "redis-babylon";
      group = "redis-babylon";
      save = [
        [
          900
          1
        ]
        [
          300
          10
        ]
        [
          60
          10000
        ]
      ];
      appendOnly = false;
      requirePass = null;
      requirePassFile = null;
    };
  };

  # One definition with mkIf, mkMerge and mkOverride taken off its top: a list of
  # { priority; value; }.
  push =
    priority: value:
    let
      type = if builtins.isAttrs value then value._type or null else null;
    in
    if type == "if" then
      (if value.condition then push priority value.content else [ ])
    else if type == "merge" then
      builtins.concatMap (push priority) value.contents
    else if type == "override" then
      push value.priority value.content
    else
      [ { inherit priority value; } ];

  pushAll = builtins.concatMap (def: push def.priority def.value);

  isTree = value: builtins.isAttrs value && !(value ? outPath);

  # The value at `path` of the definitions there.
  resolve =
    path: definitions:
    let
      pushed = pushAll definitions;
      values = map (def: def.value) pushed;
      below =
        name:
        builtins.concatMap (
          def:
          if def.value ? ${name} then
            [
              {
                inherit (def) priority;
                value = def.value.${name};
              }
            ]
          else
            [ ]
        ) pushed;
      defined = builtins.attrNames (
        builtins.foldl' (names: value: names // value) { } (builtins.filter isTree values)
      );
      # As in attrsOf, an attribute whose definitions are all mkIf false is absent. Not at
      # the top, which holds option namespaces: looking into `warnings` there would need
      # the options the module reads back, while they are being resolved.
      names =
        if path == [ ] then defined else builtins.filter (name: pushAll (below name) != [ ]) defined;
    in
    if builtins.all isTree values then
      lib.genAttrs names (name: resolve (path ++ [ name ]) (below name))
    else
      winner path pushed;

  winner =
    path: definitions:
    let
      higher = best: def: if def.priority < best then def.priority else best;
      best = builtins.foldl' higher (builtins.head definitions).priority definitions;
      values = map (def: def.value) (builtins.filter (def: def.priority == best) definitions);
      first = builtins.head values;
    in
    if builtins.all builtins.isList values then
      builtins.concatLists values
    else if builtins.all (value: value == first) values then
      first
    else
      throw "The option `${builtins.concatStringsSep "." path}' has conflicting definition values: ${builtins.toJSON values}";

  everything = [
    {
      priority = optionDefaultPriority;
      value = nixosDefaults;
    }
    {
      priority = plainPriority;
      value = evaluated.config;
    }
    {
      priority = plainPriority;
      value = user;
    }
  ];
  config = resolve [ ] everything;
in
{
  # The NixOS configuration the module and the user's definitions make.
  inherit config;
  # What the module declares under `options`, and the services.babylon it was given.
  inherit (evaluated) options;
  # What a file the module generates holds (see pkgs above).
  generated =
    file:
    builtins.concatStringsSep "#" (
      builtins.tail (builtins.filter builtins.isString (builtins.split "#" file))
    );
  babylon = babylonConfig;
}
