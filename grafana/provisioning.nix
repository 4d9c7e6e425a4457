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
# .settings and .dashboards.settings take them. Two more values, absent or null by
# default, give the prometheus datasource a link from exemplars to their traces (the
# definition's exemplarTraceIdDestination): `exemplar_trace_url`, a Grafana data link in
# which ${__value.raw} stands for the trace id, written as Grafana shows it
# ("https://tempo.example.org/trace/\${__value.raw}" in a Nix string), and
# `exemplar_trace_datasource_uid`, the uid of a tracing datasource of the same Grafana.
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

  # `string` as Grafana reads it back from a provisioning file, where it expands
  # environment variables ($NAME, ${NAME}) and reads $$ as one $.
  literal = builtins.replaceStrings [ "$" ] [ "$$" ];

  # The exemplar link of `values` (see above), or null when it gives no trace URL or uid.
  traceDestination =
    values:
    let
      url = values.exemplar_trace_url or null;
      datasourceUid = values.exemplar_trace_datasource_uid or null;
    in
    if url == null && datasourceUid == null then
      null
    else
      source.exemplarTraceIdDestination
      // (if url == null then { } else { url = literal url; })
      // (if datasourceUid == null then { } else { datasourceUid = literal datasourceUid; });

  # The datasources file with `destination` in every prometheus datasource's jsonData.
  withTraceDestination =
    destination: file:
    let
      links = {
        exemplarTraceIdDestinations = [ destination ];
      };
      linked =
        datasource:
        if datasource.type == "prometheus" then
          datasource // { jsonData = (datasource.jsonData or { }) // links; }
        else
          datasource;
    in
    if destination == null then file else file // { datasources = map linked file.datasources; };

  render =
    values:
    let
      datasources = substitute values source.datasources;
    in
    {
      datasources = withTraceDestination (traceDestination values) datasources;
      dashboards = substitute values source.dashboards;
    };
in
{
  inherit
    source
    placeholderName
    substitute
    literal
    traceDestination
    render
    ;
}
