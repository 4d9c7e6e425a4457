{
  description = "babylon: a Rocket web backend whose Prometheus metrics are part of the product";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      # Everything is offered on Linux; packages and development shells on macOS too.
      linuxSystems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      allSystems = linuxSystems ++ [
        "x86_64-darwin"
        "aarch64-darwin"
      ];

      # The commit babylon_build_info and /api/health report.
      sourceCommit = self.shortRev or self.dirtyShortRev or "unknown";

      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
        };
      forSystems = systems: f: lib.genAttrs systems (system: f (pkgsFor system));

      # `nix run`: the packaged service with its state in a writable directory.
      runBabylon =
        pkgs:
        pkgs.writeShellApplication {
          name = "babylon-run";
          runtimeInputs = [ pkgs.coreutils ];
          text = ''
            state="''${XDG_STATE_HOME:-$HOME/.local/state}/babylon"
            mkdir -p "$state"
            export ROCKET_CONFIG="''${ROCKET_CONFIG:-${pkgs.babylon}/share/babylon/Rocket.toml}"
            export STATE_DIRECTORY="$state"
            export BABYLON_DATABASES__MAIN__URL="''${BABYLON_DATABASES__MAIN__URL:-sqlite://$state/babylon.sqlite}"
            echo "babylon: state in $state, settings from $ROCKET_CONFIG" >&2
            exec ${lib.getExe pkgs.babylon} "$@"
          '';
        };

      # Each throws on a failed assertion, else lists the assertions that passed.
      libTests = import ./nix/tests/lib-test.nix;
      moduleTests = import ./nix/tests/module-test.nix { };

      app = drv: description: {
        type = "app";
        program = lib.getExe drv;
        meta = { inherit description; };
      };
    in
    {
      overlays.default = final: _prev: {
        babylon = final.callPackage ./nix/package.nix { inherit sourceCommit; };
      };

      packages = forSystems allSystems (pkgs: {
        default = pkgs.babylon;
        babylon = pkgs.babylon;
      });

      apps = forSystems linuxSystems (
        pkgs:
        let
          stack = pkgs.callPackage ./nix/stack.nix { };
        in
        {
          default = app (runBabylon pkgs) "babylon, state in $XDG_STATE_HOME/babylon";
          stack = app stack "babylon with Prometheus and Grafana, provisioned";
        }
      );

      nixosModules.default =
        { pkgs, ... }:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
        in
        {
          imports = [ ./nix/module.nix ];
          services.babylon.package = lib.mkDefault self.packages.${system}.default;
        };

      checks = forSystems linuxSystems (pkgs: {
        package = pkgs.babylon;

        # The module as users import it, on nixpkgs without this flake's overlay: the
        # package must come from nixosModules.default.
        vm =
          let
            inherit (pkgs.stdenv.hostPlatform) system;
          in
          import ./nix/tests/vm.nix {
            pkgs = nixpkgs.legacyPackages.${system};
            module = self.nixosModules.default;
            package = self.packages.${system}.default;
          };

        # nixfmt (RFC 166 style) over every Nix file of the flake.
        fmt =
          let
            nixFiles = lib.fileset.toSource {
              root = ./.;
              fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ./.;
            };
          in
          pkgs.runCommand "babylon-nixfmt" { nativeBuildInputs = [ pkgs.nixfmt ]; } ''
            cd ${nixFiles}
            find . -name '*.nix' -print0 | xargs -0 nixfmt --check
            touch $out
          '';

        # The pure functions behind the module (nix/lib.nix), and the module's own
        # definitions evaluated with a stub lib (priorities, units, firewall).
        lib = pkgs.writeText "babylon-lib-tests.json" (builtins.toJSON libTests);
        module = pkgs.writeText "babylon-module-tests.json" (builtins.toJSON moduleTests);
      });

      devShells = forSystems allSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            rustc
            cargo
            clippy
            rustfmt
            sqlx-cli
            prometheus
            grafana
            postgresql
            nixfmt
          ];
        };
      });

      formatter = forSystems linuxSystems (pkgs: pkgs.nixfmt);
    };
}
