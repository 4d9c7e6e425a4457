# The babylon binary, plus what the NixOS module and `nix run .#stack` read from the
# package: share/babylon/{Rocket.toml, prometheus.yml, prometheus/*.yml, dashboards/}.
{
  lib,
  rustPlatform,
  # The flake passes self.shortRev (or dirtyShortRev); build.rs reads SOURCE_COMMIT
  # because a Nix build has no .git to ask.
  sourceCommit ? "unknown",
}:
let
  root = ../.;
  cargoToml = lib.importTOML ../Cargo.toml;
  # Only what cargo reads: editing the README, dashboards or Nix files does not change
  # the crate's source. Cargo refuses a manifest whose explicitly declared targets
  # (`[[bench]]`, `[[example]]`, `[[test]]`) have no file, so their directories come too.
  crateSource = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../crates
      ../migrations
      ../Rocket.toml
      (lib.fileset.maybeMissing ../benches)
      (lib.fileset.maybeMissing ../examples)
      (lib.fileset.maybeMissing ../tests)
    ];
  };
  # Installed beside the binary for the module and the stack.
  assets = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../Rocket.toml
      ../prometheus.yml
      ../prometheus/recording_rules.yml
      ../prometheus/alerts.yml
      ../dashboards
    ];
  };
in
rustPlatform.buildRustPackage {
  # The binary is `babylon`; the package that builds it is the workspace's `babylon-app`.
  pname = "babylon";
  inherit (cargoToml.workspace.package) version;

  src = crateSource;
  cargoLock.lockFile = ../Cargo.lock;

  SOURCE_COMMIT = sourceCommit;

  # The integration tests need PostgreSQL, Prometheus and free ports; the unit tests of
  # the library (crates/babylon) need no service (those that use Redis skip without one),
  # so the package runs those.
  cargoTestFlags = [
    "--workspace"
    "--lib"
  ];
  # Some unit tests listen and connect on 127.0.0.1, which Darwin's sandbox forbids
  # unless asked, as nixpkgs' own packages do.
  __darwinAllowLocalNetworking = true;

  postInstall = ''
    mkdir -p $out/share/babylon
    cp ${assets}/Rocket.toml ${assets}/prometheus.yml $out/share/babylon/
    cp -r ${assets}/prometheus ${assets}/dashboards $out/share/babylon/
  '';

  meta = {
    inherit (cargoToml.package) description;
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "babylon";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
