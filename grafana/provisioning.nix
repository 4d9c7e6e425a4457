# Grafana provisioning of babylon's stacks, from ./provisioning.json: the one definition
# that nix/stack.nix, nix/lib.nix (for the NixOS module) and scripts/local-stack.sh render
# (tests/grafana_provisioning.rs compares what they write). builtins only, like nix/lib.nix, so that
# `nix-instantiate --eval` can evaluate it anywhere.
#
#   (import ./provisioning.nix).render {
#     prometheus_url = "http://127.0.0.1:9090";
#     dashboards_dir = "${babylon}/share/babylon/dashboards";
#   }
#
# is `{ datasources; dashboards; }`: the contents of Grafana's provisioning/datasources/
# and provisioning/dashboards/ files, as NixOS' services.grafana.provision.datasources
# .settings and .dashboards.settings take them.
let
  source = builtins.fromJSON (builtins.readFile ./provisioning.json);

  # "name" for the placeholder "@name@"; null for any other string.
  placeholderName =
    string:
    let
      matched = builtins.match "@([a-z_]+)@" string;
    in
    if matched == null then null else builtins.head matched;

  # `value` with every string "@name@" in it replaced by `values.name`.
  substitute =
    values: value:
    if builtins.isAttrs value then
      builtins.mapAttrs (_: substitute values) value
    else if builtins.isList value then
      map (substitute values) value
    else if builtins.isString value && placeholderName value != null then
      let
        name = placeholderName value;
      in
      values.${name} or (throw "grafana/provisioning.json: no value given for @${name}@")
    else
      value;

  render = values: {
    datasources = substitute values source.datasources;
    dashboards = substitute values source.dashboards;
  };
in
{
  inherit
    source
    placeholderName
    substitute
    render
    ;
}
