# What Grafana is provisioned with by `nix run .#stack` (nix/stack.nix, called with stubs
# of the nixpkgs functions it takes) and by the NixOS module (nix/module.nix, through
# ./module-eval.nix), for tests/grafana_provisioning.rs to compare with
# grafana/provisioning.json and with what scripts/local-stack.sh writes:
#
#   nix-instantiate --eval --strict --json nix/tests/grafana-provisioning.nix
let
  # Store paths that are never built, as ./module-eval.nix makes them.
  storePath = name: "${builtins.storeDir}/00000000000000000000000000000000-${name}";
  package = name: {
    inherit name;
    outPath = storePath name;
  };
  babylon = package "babylon";
  share = "${babylon}/share/babylon";

  contains = needle: haystack: builtins.replaceStrings [ needle ] [ "" ] haystack != haystack;
  # The line of the script that puts `file` where Grafana reads its provisioning.
  linkLine = kind: file: "ln -sfn ${file} \"$state/grafana/provisioning/${kind}/babylon.yml\"";

  # The application as the arguments of writeShellApplication (text, passthru, …).
  stack = import ../stack.nix {
    writeShellApplication = args: args;
    writeText = name: text: package name // { inherit text; };
    inherit babylon;
    prometheus = package "prometheus";
    grafana = package "grafana";
    coreutils = package "coreutils";
  };

  module =
    (import ./module-eval.nix {
      babylon = {
        enable = true;
        prometheus.enable = true;
        grafana = {
          enable = true;
          adminPasswordFile = "/run/secrets/grafana-admin-password";
        };
      };
    }).config.services.grafana.provision;
in
{
  stack = {
    inherit share;
    # kind = { settings = what the file holds; linked = whether the script links it; }
    files = builtins.mapAttrs (kind: file: {
      settings = builtins.fromJSON file.text;
      linked = contains (linkLine kind file) stack.text;
    }) stack.passthru.grafanaProvisioning;
  };
  module = {
    # ./module-eval.nix's package is the same stub.
    inherit share;
    inherit (module) enable;
    datasources = module.datasources.settings;
    dashboards = module.dashboards.settings;
  };
}
