//! The Nix packaging, checked without Nix's builder (nixpkgs cannot be fetched here):
//! every `.nix` file parses, the pure functions behind the NixOS module (`nix/lib.nix`)
//! pass their assertions (`nix/tests/lib-test.nix`), the module itself, evaluated with a
//! stub of nixpkgs' lib, passes its own (`nix/tests/module-test.nix`) and fails them when
//! one of its definitions is weakened, the scrape job they generate passes
//! `promtool check config`, the per-instance settings they generate pass
//! `babylon --check-config`, and `flake.lock` pins nixpkgs nixos-25.11 (docs/nix.md).
//!
//! Needs `nix-instantiate` (Debian: nix-bin) and `promtool` (Debian: prometheus); without
//! them the tests print SKIPPED, except under CI=true where they fail.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use figment::providers::{Format, Toml};
use figment::Figment;
use serde_json::{json, Map, Value};
use tempfile::TempDir;

/// The nixpkgs pin (docs/nix.md): flake.nix's url and flake.lock's node.
const NIXPKGS_URL: &str = "github:NixOS/nixpkgs/nixos-25.11";
const PINNED_REV: &str = "8fd9daa3db09ced9700431c5b7ad0e8ba199b575";
const PINNED_NAR_HASH: &str = "sha256-Ti+ZBvW6yrWWAg2szExVTwCd4qOJ3KlVr1tFHfyfi8Q=";
const PINNED_LAST_MODIFIED: u64 = 1778430510;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `nix-instantiate`, evaluating against a private chroot store so that neither a Nix
/// daemon nor a writable /nix is needed (nothing is built or fetched).
struct Nix {
    program: PathBuf,
    store: TempDir,
}

impl Nix {
    fn find() -> Option<Nix> {
        let program = common::tool("nix-instantiate")?;
        Some(Nix {
            program,
            store: tempfile::tempdir().unwrap(),
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .env(
                "NIX_REMOTE",
                format!("local?root={}", self.store.path().display()),
            )
            .current_dir(repo());
        command
    }

    fn parse(&self, file: &Path) -> Output {
        self.command()
            .arg("--parse")
            .arg(file)
            .output()
            .expect("nix-instantiate runs")
    }

    fn eval(&self, args: &[&str]) -> Output {
        self.command()
            .args(["--eval", "--strict", "--json"])
            .args(args)
            .output()
            .expect("nix-instantiate runs")
    }

    fn eval_output(&self, args: &[&str]) -> Value {
        let output = self.eval(args);
        assert!(
            output.status.success(),
            "nix-instantiate --eval {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("nix-instantiate prints JSON")
    }

    /// Evaluates `body` with `lib` bound to nix/lib.nix.
    fn eval_lib(&self, body: &str) -> Value {
        let expr = format!(
            "let lib = import {}; in {body}",
            nix_string(&repo().join("nix/lib.nix").display().to_string())
        );
        self.eval_output(&["-E", &expr])
    }
}

/// A Nix string literal.
fn nix_string(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${");
    format!("\"{escaped}\"")
}

/// Every .nix file of the repository (build output and VCS data left out).
fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if ![".git", "target", ".stack", "node_modules", "result"].contains(&name.as_str()) {
                nix_files(&path, found);
            }
        } else if name.ends_with(".nix") {
            found.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let Some(nix) = Nix::find() else { return };
    let mut files = Vec::new();
    nix_files(repo(), &mut files);
    let relative: BTreeSet<String> = files
        .iter()
        .map(|f| f.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    for expected in [
        "flake.nix",
        "nix/package.nix",
        "nix/module.nix",
        "nix/lib.nix",
        "nix/stack.nix",
        "nix/tests/vm.nix",
        "nix/tests/lib-test.nix",
        "nix/tests/check.nix",
        "nix/tests/module-eval.nix",
        "nix/tests/module-test.nix",
    ] {
        assert!(
            relative.contains(expected),
            "{expected} is missing; found {relative:?}"
        );
    }
    for file in &files {
        let output = nix.parse(file);
        assert!(
            output.status.success(),
            "{} does not parse:\n{}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Runs a test file of nix/tests (through nix/tests/check.nix, it throws naming each
/// failed test unless every assertion holds; then it lists the tests) and checks that
/// the `expected` tests are among those that passed.
fn assert_nix_tests_pass(nix: &Nix, file: &str, args: &[&str], expected: &[&str]) {
    let passed = nix.eval_output(args);
    let names: BTreeSet<&str> = passed
        .as_array()
        .expect("a list of test names")
        .iter()
        .map(|name| name.as_str().expect("test names are strings"))
        .collect();
    for expected in expected {
        assert!(names.contains(expected), "{expected} not among {names:?}");
    }
    eprintln!("{file}: {} tests passed", names.len());
}

#[test]
fn lib_assertions_pass() {
    let Some(nix) = Nix::find() else { return };
    assert_nix_tests_pass(
        &nix,
        "nix/tests/lib-test.nix",
        &["nix/tests/lib-test.nix"],
        &[
            "instancesGetConsecutivePorts",
            "grafanaExemplarsLinkToTraces",
            "unitAndCredentialNames",
            "scrapeJobForTwoInstances",
            "tooManyInstancesIsAnError",
            "exportPortOutsideTheRangeThrows",
            "defaultSettingsRenderUnderTheReleaseProfile",
            "userSettingsWinAndModuleValuesStay",
            "upstreamServersOnePerInstance",
            "loopbackAddresses",
            "firewallPorts",
            "sandboxIsStrict",
            "grafanaKeyGeneratorIsSandboxedOffline",
            "listeningAddresses",
            "exportAddressIsLoopback",
            "exportBeyondLoopbackNeedsAllowListAndToken",
            "localRedisOverItsSocket",
            "redisUrlFileIsACredentialNotASetting",
            "redisConfigurationErrors",
            "fleetJobScrapesOtherHostsWithTheSameToken",
        ],
    );
}

/// The tests of nix/module.nix itself, optionally against another copy of it.
fn module_test_expr(module: Option<&Path>) -> String {
    let argument = module.map_or(String::new(), |path| {
        format!("module = /. + {};", nix_string(&path.display().to_string()))
    });
    format!("import ./nix/tests/module-test.nix {{ {argument} }}")
}

#[test]
fn module_assertions_pass() {
    let Some(nix) = Nix::find() else { return };
    assert_nix_tests_pass(
        &nix,
        "nix/tests/module-test.nix",
        &["-E", &module_test_expr(None)],
        &[
            "equalPlainDefinitionsAgreeDifferentOnesConflict",
            "prometheusListensOnLoopbackUnlessTheUserOpensIt",
            "grafanaReachesPrometheusWhereverItListens",
            "userGrafanaSecretsWin",
            "grafanaReadsTheKeyItIsGiven",
            "unitsShareTheSandbox",
            "babylonUnitsRaiseTheOpenFilesLimit",
            "firewallOpensWhatListensBeyondLoopback",
            "redisServerListensOnTheSocketOnly",
            "everyInstanceReadsTheLocalRedis",
            "babylonUnitsReachTheLocalRedis",
            "redisEnableAndUrlTripTheAssertion",
            "sharedRedisUrlFromAFileStaysOutOfTheStore",
            "nonLoopbackMetricsAddressNeedsTokenAndAllowList",
            "prometheusScrapesTheFleetAndWritesRemotely",
            "prometheusKeepsExemplarsAndBothHistogramShapes",
            "grafanaLinksExemplarsToTraces",
        ],
    );
}

#[test]
fn module_tests_fail_on_a_weakened_module() {
    let Some(nix) = Nix::find() else { return };
    let module = std::fs::read_to_string(repo().join("nix/module.nix")).unwrap();
    let lib = std::fs::read_to_string(repo().join("nix/lib.nix")).unwrap();
    // (what module.nix says, what a careless edit makes of it, the test that must fail)
    let weakenings = [
        (
            "listenAddress = mkDefault babylonLib.prometheusListenAddress;",
            "listenAddress = babylonLib.prometheusListenAddress;",
            "prometheusListensOnLoopbackUnlessTheUserOpensIt",
        ),
        (
            "listenAddress = mkDefault babylonLib.prometheusListenAddress;",
            "",
            "prometheusListensOnLoopbackUnlessTheUserOpensIt",
        ),
        (
            "admin_password = mkDefault babylonLib.grafanaSecurity.admin_password;",
            "admin_password = babylonLib.grafanaSecurity.admin_password;",
            "userGrafanaSecretsWin",
        ),
        (
            "LimitNOFILE = mkDefault babylonLib.openFilesLimit;",
            "LimitNOFILE = babylonLib.openFilesLimit;",
            "babylonUnitsRaiseTheOpenFilesLimit",
        ),
        (
            "serviceConfig = babylonLib.grafanaSecretKeyServiceConfig;",
            r#"serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };"#,
            "unitsShareTheSandbox",
        ),
        (
            "serviceConfig = babylonLib.hardening // {",
            "serviceConfig = {",
            "unitsShareTheSandbox",
        ),
        (
            "networking.firewall.allowedTCPPorts = babylonLib.firewallPorts plain;",
            "networking.firewall.allowedTCPPorts = babylonLib.appPorts plain;",
            "firewallOpensWhatListensBeyondLoopback",
        ),
        (
            "port = mkDefault 0;",
            "port = 0;",
            "redisServerListensOnTheSocketOnly",
        ),
        (
            "inherit (cfg.redis) enable url;",
            "inherit (cfg.redis) url;",
            "everyInstanceReadsTheLocalRedis",
        ),
        (
            "SupplementaryGroups = lib.optional cfg.redis.enable redisServer.group;",
            "",
            "babylonUnitsReachTheLocalRedis",
        ),
        (
            "ExecStart = start;",
            "ExecStart = lib.getExe cfg.package;",
            "sharedRedisUrlFromAFileStaysOutOfTheStore",
        ),
        (
            "assertions = babylonLib.assertions plain;",
            "assertions = [ ];",
            "nonLoopbackMetricsAddressNeedsTokenAndAllowList",
        ),
        (
            "inherit (cfg.metrics) allow address;",
            "inherit (cfg.metrics) allow;",
            "nonLoopbackMetricsAddressNeedsTokenAndAllowList",
        ),
        (
            "remoteWrite = babylonLib.prometheusRemoteWrite plain;",
            "",
            "prometheusScrapesTheFleetAndWritesRemotely",
        ),
        (
            "extraFlags = babylonLib.prometheusFeatureFlags;",
            "",
            "prometheusKeepsExemplarsAndBothHistogramShapes",
        ),
        (
            "scrapeConfigs = [ (babylonLib.scrapeConfig plain // babylonLib.keepClassicHistograms) ];",
            "scrapeConfigs = [ (babylonLib.scrapeConfig plain) ];",
            "prometheusKeepsExemplarsAndBothHistogramShapes",
        ),
        (
            "inherit (cfg.grafana) enable exemplarTraceUrl exemplarTraceDatasourceUid;",
            "inherit (cfg.grafana) enable;",
            "grafanaLinksExemplarsToTraces",
        ),
    ];
    for (original, weakened, test) in weakenings {
        assert_eq!(
            module.matches(original).count(),
            1,
            "nix/module.nix no longer says `{original}`: update this test"
        );
        // module.nix imports ./lib.nix, which imports ../grafana/provisioning.nix: the
        // copy gets its own, laid out as in the repository.
        let dir = tempfile::tempdir().unwrap();
        let nix_dir = dir.path().join("nix");
        let grafana_dir = dir.path().join("grafana");
        std::fs::create_dir_all(&nix_dir).unwrap();
        std::fs::create_dir_all(&grafana_dir).unwrap();
        for file in ["provisioning.nix", "provisioning.json"] {
            std::fs::copy(repo().join("grafana").join(file), grafana_dir.join(file)).unwrap();
        }
        std::fs::write(nix_dir.join("lib.nix"), &lib).unwrap();
        let copy = nix_dir.join("module.nix");
        std::fs::write(&copy, module.replace(original, weakened)).unwrap();

        let output = nix.eval(&["-E", &module_test_expr(Some(&copy))]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "the module tests pass with `{original}` made `{weakened}`"
        );
        assert!(
            stderr.contains("tests failed: ") && stderr.contains(test),
            "`{original}` made `{weakened}` should fail {test}:\n{stderr}"
        );
    }
}

/// A Prometheus configuration around the lib's scrape job and remote write, with the
/// repository's rules.
fn prometheus_config(nix: &Nix, cfg: &str, token_file: Option<&Path>) -> Value {
    let token = token_file.map_or("null".to_string(), |path| {
        nix_string(&path.display().to_string())
    });
    let rules = ["prometheus/recording_rules.yml", "prometheus/alerts.yml"]
        .map(|file| nix_string(&repo().join(file).display().to_string()))
        .join(" ");
    nix.eval_lib(&format!(
        r#"{{
          global = {{ scrape_interval = "15s"; evaluation_interval = "15s"; }};
          rule_files = [ {rules} ];
          scrape_configs = [ (lib.scrapeConfigWith ({cfg}) {token}) ];
          remote_write = lib.prometheusRemoteWrite ({cfg});
        }}"#
    ))
}

/// `promtool check config` of `config` written to a file of its own.
fn promtool_check(promtool: &Path, config: &Value, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML.
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, serde_json::to_string_pretty(config).unwrap()).unwrap();
    Command::new(promtool)
        .args(["check", "config"])
        .args(extra)
        .arg(&file)
        .output()
        .unwrap()
}

fn promtool_check_config(promtool: &Path, config: &Value, extra: &[&str]) {
    let output = promtool_check(promtool, config, extra);
    assert!(
        output.status.success(),
        "promtool check config {extra:?} refused\n{}\n{}{}",
        serde_json::to_string_pretty(config).unwrap(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn scrape_job_for_two_instances_passes_promtool() {
    let Some(nix) = Nix::find() else { return };
    let Some(promtool) = common::tool("promtool") else {
        return;
    };
    let config = prometheus_config(&nix, "{ instances = 2; }", None);
    let job = &config["scrape_configs"][0];
    assert_eq!(job["job_name"], "babylon");
    assert_eq!(job["metrics_path"], "/metrics");
    let targets: Vec<&Value> = job["static_configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["targets"].as_array().unwrap())
        .collect();
    assert_eq!(
        targets,
        [&json!("127.0.0.1:8001"), &json!("127.0.0.1:8002")]
    );
    assert!(job.get("authorization").is_none(), "{job}");
    promtool_check_config(&promtool, &config, &[]);

    // With a token, Prometheus reads it from a file; promtool checks the file exists.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "secret-token\n").unwrap();
    let config = prometheus_config(&nix, "{ instances = 2; }", Some(&token));
    assert_eq!(
        config["scrape_configs"][0]["authorization"],
        json!({ "type": "Bearer", "credentials_file": token.display().to_string() })
    );
    promtool_check_config(&promtool, &config, &[]);

    // The module's job with a token names prometheus.service's credential, which exists
    // only at run time: the module then sets checkConfig = "syntax-only", as here.
    let module_job = nix.eval_lib(
        r#"lib.scrapeConfig { instances = 2; metrics.tokenFile = "/run/secrets/token"; }"#,
    );
    assert_eq!(
        module_job["authorization"]["credentials_file"],
        "/run/credentials/prometheus.service/babylon-metrics-token"
    );
    let config = json!({ "scrape_configs": [module_job] });
    promtool_check_config(&promtool, &config, &["--syntax-only"]);
}

/// The scrape job of export ports that serve mutual TLS, as the module renders it:
/// `scheme: https` and a `tls_config` naming Prometheus' credentials. promtool takes it
/// with `--syntax-only` (as the module runs it, the credentials not existing at build
/// time), and in full once the files it names exist, and refuses it in full while they
/// do not.
#[test]
fn tls_scrape_job_passes_promtool() {
    let Some(nix) = Nix::find() else { return };
    let Some(promtool) = common::tool("promtool") else {
        return;
    };
    let fixture = nix_string(
        &repo()
            .join("nix/tests/mutual-tls.nix")
            .display()
            .to_string(),
    );
    let cfg = format!(
        r#"(let host = import {fixture}; in host // {{
          prometheus = host.prometheus // {{
            tls = host.prometheus.tls // {{ serverName = "babylon.internal"; }};
          }};
        }})"#
    );
    let config = prometheus_config(&nix, &cfg, None);
    let job = &config["scrape_configs"][0];
    assert_eq!(job["scheme"], "https", "{job}");
    assert_eq!(job["tls_config"]["server_name"], "babylon.internal");
    promtool_check_config(&promtool, &config, &["--syntax-only"]);

    let dir = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("scrape job CA");
    let client = ca.client("prometheus").write(dir.path(), "client", &ca);
    let mut rendered = serde_json::to_string(&config).unwrap();
    for (credential, file) in [
        ("babylon-tls-ca", &client.ca),
        ("babylon-tls-cert", &client.cert),
        ("babylon-tls-key", &client.key),
    ] {
        let path = format!("/run/credentials/prometheus.service/{credential}");
        assert!(rendered.contains(&path), "{rendered}");
        rendered = rendered.replace(&path, &file.display().to_string());
    }
    promtool_check_config(&promtool, &serde_json::from_str(&rendered).unwrap(), &[]);

    assert!(
        !promtool_check(&promtool, &config, &[]).status.success(),
        "promtool took TLS files that do not exist"
    );
}

#[test]
fn fleet_scrape_job_passes_promtool() {
    let Some(nix) = Nix::find() else { return };
    let Some(promtool) = common::tool("promtool") else {
        return;
    };
    // Other hosts' instances: static targets, and a file_sd directory holding a target
    // file as babylon writes it (promtool reads and checks it).
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "secret-token\n").unwrap();
    let targets = dir.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    std::fs::write(
        targets.join("babylon-8001.json"),
        r#"[{"labels":{"babylon_export_port":"8001","env":"staging"},"targets":["10.0.0.8:8001"]}]"#,
    )
    .unwrap();
    let fleet = |extra: &str| {
        format!(
            r#"{{
              instances = 2;
              prometheus = {{
                enable = true;
                remoteTargets = [ "app2:8001" "app2:8002" "[fd00::8]:8001" ];
                fileSdDirectories = [ {} ];
                remoteWrite = [ {{ url = "http://thanos:19291/api/v1/receive"; }} ];
              }};
              {extra}
            }}"#,
            nix_string(&targets.display().to_string())
        )
    };
    let config = prometheus_config(&nix, &fleet(""), Some(&token));
    let jobs = config["scrape_configs"].as_array().unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "one job, this host's and the others' targets"
    );
    let job = &jobs[0];
    assert_eq!(job["job_name"], "babylon");
    let groups = job["static_configs"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "{job}");
    assert_eq!(
        groups[2],
        json!({ "targets": ["app2:8001", "app2:8002", "[fd00::8]:8001"] })
    );
    assert_eq!(
        job["file_sd_configs"],
        json!([{ "files": [format!("{}/*.json", targets.display())] }])
    );
    assert_eq!(
        job["authorization"],
        json!({ "type": "Bearer", "credentials_file": token.display().to_string() })
    );
    assert_eq!(
        config["remote_write"],
        json!([{ "url": "http://thanos:19291/api/v1/receive" }])
    );
    promtool_check_config(&promtool, &config, &[]);

    // A target file promtool refuses: the check reads the file_sd directory.
    std::fs::write(targets.join("broken.json"), "not json").unwrap();
    assert!(
        !promtool_check(&promtool, &config, &[]).status.success(),
        "promtool accepted a broken file_sd file"
    );

    // The module's job names prometheus.service's token credential: syntax only.
    let module_job = nix.eval_lib(&format!(
        "lib.scrapeConfig ({})",
        fleet(r#"metrics.tokenFile = "/run/secrets/token";"#)
    ));
    assert_eq!(
        module_job["authorization"]["credentials_file"],
        "/run/credentials/prometheus.service/babylon-metrics-token"
    );
    let config = json!({ "scrape_configs": [module_job] });
    promtool_check_config(&promtool, &config, &["--syntax-only"]);
}

/// TOML for nested tables of strings, numbers, booleans and arrays (what the module's
/// `pkgs.formats.toml` writes), from the JSON nix-instantiate prints.
fn to_toml(value: &Value) -> String {
    let Value::Object(table) = value else {
        panic!("a TOML document is a table, not {value}")
    };
    let mut out = String::new();
    write_table(&mut out, &[], table);
    out
}

fn write_table(out: &mut String, path: &[String], table: &Map<String, Value>) {
    if !path.is_empty() {
        let header: Vec<String> = path.iter().map(|key| toml_key(key)).collect();
        out.push_str(&format!("[{}]\n", header.join(".")));
    }
    for (key, value) in table.iter().filter(|(_, value)| !value.is_object()) {
        out.push_str(&format!("{} = {}\n", toml_key(key), toml_value(value)));
    }
    for (key, value) in table {
        if let Value::Object(inner) = value {
            let mut inner_path = path.to_vec();
            inner_path.push(key.clone());
            write_table(out, &inner_path, inner);
        }
    }
}

fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        serde_json::to_string(key).unwrap()
    }
}

fn toml_value(value: &Value) -> String {
    match value {
        Value::Null => panic!("TOML has no null"),
        // JSON's string escapes are valid in TOML basic strings.
        Value::Bool(_) | Value::Number(_) | Value::String(_) => value.to_string(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(table) => {
            let pairs: Vec<String> = table
                .iter()
                .map(|(key, value)| format!("{} = {}", toml_key(key), toml_value(value)))
                .collect();
            format!("{{ {} }}", pairs.join(", "))
        }
    }
}

/// The settings the lib generates for one instance, written as the unit's Rocket.toml,
/// validated by `babylon --check-config` with the environment the unit sets.
struct Rendered {
    dir: TempDir,
    config: Value,
    environment: Map<String, Value>,
}

fn render(nix: &Nix, cfg: &str, index: u32) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join(format!("babylon-{index}.toml"));
    let result = nix.eval_lib(&format!(
        "let cfg = {cfg}; in {{ config = lib.configFor cfg {index}; environment = lib.environment cfg {index} {}; errors = lib.errors cfg; }}",
        nix_string(&toml_path.display().to_string())
    ));
    assert_eq!(result["errors"], json!([]), "the lib refuses {cfg}");
    let Value::Object(environment) = result["environment"].clone() else {
        panic!("environment is a set: {result}")
    };
    Rendered {
        dir,
        config: result["config"].clone(),
        environment,
    }
}

impl Rendered {
    fn toml_path(&self) -> PathBuf {
        PathBuf::from(self.environment["ROCKET_CONFIG"].as_str().unwrap())
    }

    /// Writes the TOML (checking that it reads back as the JSON it came from) and runs
    /// `babylon --check-config` as the unit would.
    fn check_config(&self, extra_env: &[(&str, &str)]) -> Output {
        let toml = to_toml(&self.config);
        let read_back: Value = Figment::from(Toml::string(&toml)).extract().unwrap();
        assert_eq!(read_back, self.config, "TOML written wrongly:\n{toml}");
        std::fs::write(self.toml_path(), &toml).unwrap();

        let mut command = common::binary();
        command.arg("--check-config");
        for (name, _) in std::env::vars() {
            if name.starts_with("ROCKET_")
                || name.starts_with("BABYLON_")
                || name == "STATE_DIRECTORY"
            {
                command.env_remove(name);
            }
        }
        for (name, value) in &self.environment {
            command.env(name, value.as_str().unwrap());
        }
        // systemd's StateDirectory=, where relative SQLite paths land.
        command.env("STATE_DIRECTORY", self.dir.path());
        command.envs(extra_env.iter().copied());
        command.output().unwrap()
    }

    fn assert_valid(&self, extra_env: &[(&str, &str)]) {
        let output = self.check_config(extra_env);
        assert!(
            output.status.success(),
            "babylon --check-config refused the generated settings:\n{}\n{}{}",
            to_toml(&self.config),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("configuration is valid"));
    }
}

#[test]
fn generated_settings_pass_check_config() {
    let Some(nix) = Nix::find() else { return };

    // SQLite (the default), second of two instances.
    let sqlite = render(&nix, "{ instances = 2; }", 2);
    assert_eq!(sqlite.environment["ROCKET_PROFILE"], "release");
    assert_eq!(sqlite.environment["ROCKET_PORT"], "8081");
    assert_eq!(sqlite.environment["BABYLON_METRICS__EXPORT__PORT"], "8002");
    assert_eq!(sqlite.config["release"]["metrics"]["export"]["port"], 8002);
    assert_eq!(
        sqlite.config["release"]["databases"]["main"]["url"],
        "sqlite://babylon.sqlite"
    );
    sqlite.assert_valid(&[]);

    // Local PostgreSQL over the Unix socket.
    let postgresql = render(&nix, r#"{ database.type = "postgresql"; }"#, 1);
    assert_eq!(
        postgresql.config["release"]["databases"]["main"]["url"],
        "postgres://babylon@localhost:5432/babylon?host=/run/postgresql"
    );
    postgresql.assert_valid(&[]);

    // External database: no URL in the file; the start script exports it.
    let external = render(
        &nix,
        r#"{ database = { type = "external"; urlFile = "/run/secrets/db-url"; }; }"#,
        1,
    );
    assert!(external.config["release"].get("databases").is_none());
    external.assert_valid(&[(
        "BABYLON_DATABASES__MAIN__URL",
        "postgres://babylon:secret@db.internal:5432/babylon",
    )]);

    // A metrics token: the unit reads it from its credentials directory; here from a
    // temporary file in its place.
    let mut token = render(
        &nix,
        r#"{ instances = 2; metrics.tokenFile = "/run/secrets/metrics-token"; }"#,
        2,
    );
    let export = &mut token.config["release"]["metrics"]["export"];
    assert_eq!(
        export["token_file"],
        "/run/credentials/babylon-2.service/metrics-token"
    );
    let token_file = token.dir.path().join("metrics-token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    export["token_file"] = json!(token_file.display().to_string());
    token.assert_valid(&[]);

    // Export ports on a private address, for a Prometheus on another host: allowed in
    // and holding the token, as the lib's assertion demands.
    let mut exported = render(
        &nix,
        r#"{
          metrics = {
            address = "10.0.0.7";
            allow = [ "127.0.0.0/8" "::1/128" "10.0.0.5/32" ];
            tokenFile = "/run/secrets/metrics-token";
          };
        }"#,
        1,
    );
    let export = &mut exported.config["release"]["metrics"]["export"];
    assert_eq!(export["address"], "10.0.0.7");
    let token_file = exported.dir.path().join("metrics-token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    export["token_file"] = json!(token_file.display().to_string());
    exported.assert_valid(&[]);

    // A local Redis: every instance on its socket, the cache and the rate limit in it.
    let redis = render(
        &nix,
        r#"{
          instances = 2;
          redis.enable = true;
          settings.blocking.rate_limit = { per_second = 50; burst = 100; };
        }"#,
        2,
    );
    let release = &redis.config["release"];
    assert_eq!(
        release["redis"]["url"],
        "unix:///run/redis-babylon/redis.sock"
    );
    assert_eq!(release["cache"]["backend"], "redis");
    assert_eq!(release["blocking"]["rate_limit"]["backend"], "redis");
    redis.assert_valid(&[]);

    // A shared Redis whose URL (with a password) is a credential: not in the file; the
    // start script exports it.
    let shared = render(&nix, r#"{ redis.urlFile = "/run/secrets/redis-url"; }"#, 1);
    assert!(shared.config["release"].get("redis").is_none());
    assert_eq!(shared.config["release"]["cache"]["backend"], "redis");
    shared.assert_valid(&[("BABYLON_REDIS__URL", "redis://:secret@10.0.0.4:6379/0")]);

    // Every option and user settings on top (nginx makes babylon trust the local proxy).
    let everything = render(
        &nix,
        r#"{
          instances = 3;
          port = 9080;
          address = "0.0.0.0";
          metrics = {
            portRange = { from = 9101; to = 9110; };
            allow = [ "127.0.0.0/8" "::1/128" "10.0.0.0/8" ];
          };
          nginx.enable = true;
          settings = {
            log_level = "normal";
            metrics = { namespace = "shop"; latency_buckets = [ 0.05 0.5 5 ]; };
            blocking.rate_limit = { per_second = 50; burst = 100; };
            cache.ttl_seconds = 10;
            databases.main.max_connections = 16;
          };
        }"#,
        3,
    );
    let release = &everything.config["release"];
    assert_eq!(release["port"], 9082);
    assert_eq!(release["metrics"]["export"]["port"], 9103);
    assert_eq!(release["metrics"]["namespace"], "shop");
    assert_eq!(
        release["blocking"]["trusted_proxies"],
        json!(["127.0.0.1/32", "::1/128"])
    );
    everything.assert_valid(&[]);
}

#[test]
fn wrong_generated_settings_stop_with_the_key() {
    let Some(nix) = Nix::find() else { return };

    let bad_cidr = render(
        &nix,
        r#"{ settings.metrics.export.allow = [ "10.0.0.0/33" ]; }"#,
        1,
    );
    let output = bad_cidr.check_config(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("metrics.export.allow"), "{stderr}");

    // A user port_range next to the module's fixed port: babylon refuses it, which is
    // why the lib turns it into an assertion naming the module option instead.
    let errors =
        nix.eval_lib(r#"lib.errors { settings.metrics.export.port_range = "9001-9010"; }"#);
    assert!(
        errors[0]
            .as_str()
            .is_some_and(|message| message.contains("services.babylon.metrics.portRange")),
        "{errors}"
    );
    let config =
        nix.eval_lib(r#"lib.configFor { settings.metrics.export.port_range = "9001-9010"; } 1"#);
    let both = Rendered {
        config,
        ..render(&nix, "{ }", 1)
    };
    let output = both.check_config(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("metrics.export.port"), "{stderr}");
}

/// The string value of `inputs.nixpkgs.url = "…";` in flake.nix.
fn flake_nixpkgs_url(flake: &str) -> Vec<String> {
    flake
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(".url = \"")?;
            Some(rest.split_once('"')?.0.to_string())
        })
        .collect()
}

#[test]
fn flake_lock_pins_nixpkgs_of_flake_nix() {
    let lock: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("flake.lock")).unwrap())
            .expect("flake.lock is JSON");
    assert_eq!(lock["version"], 7);
    assert_eq!(lock["root"], "root");
    let nodes: BTreeSet<&String> = lock["nodes"].as_object().unwrap().keys().collect();
    assert_eq!(
        nodes,
        BTreeSet::from([&"nixpkgs".to_string(), &"root".to_string()]),
        "nixpkgs is the only input"
    );
    assert_eq!(
        lock["nodes"]["root"],
        json!({ "inputs": { "nixpkgs": "nixpkgs" } })
    );

    let nixpkgs = &lock["nodes"]["nixpkgs"];
    assert_eq!(
        nixpkgs["locked"],
        json!({
            "lastModified": PINNED_LAST_MODIFIED,
            "narHash": PINNED_NAR_HASH,
            "owner": "NixOS",
            "repo": "nixpkgs",
            "rev": PINNED_REV,
            "type": "github",
        })
    );
    let original = &nixpkgs["original"];
    assert_eq!(
        *original,
        json!({ "owner": "NixOS", "ref": "nixos-25.11", "repo": "nixpkgs", "type": "github" })
    );

    // `original` must be exactly flake.nix's url, or Nix re-locks.
    let flake = std::fs::read_to_string(repo().join("flake.nix")).unwrap();
    let urls = flake_nixpkgs_url(&flake);
    assert_eq!(urls, [NIXPKGS_URL], "flake.nix has one input, nixpkgs");
    let from_lock = format!(
        "github:{}/{}/{}",
        original["owner"].as_str().unwrap(),
        original["repo"].as_str().unwrap(),
        original["ref"].as_str().unwrap()
    );
    assert_eq!(urls[0], from_lock);
    assert!(!flake.contains("flake-utils"));
}

#[test]
fn flake_nix_url_is_what_nix_reads() {
    // The text match above, confirmed by evaluating flake.nix's `inputs`.
    let Some(nix) = Nix::find() else { return };
    let inputs = nix.eval_output(&["-E", "(import ./flake.nix).inputs"]);
    assert_eq!(inputs, json!({ "nixpkgs": { "url": NIXPKGS_URL } }));
}

/// The paths of the package's source (`crateSource` of nix/package.nix), as strings,
/// evaluated with a `lib` that records what `lib.fileset` is given: each path, whether
/// `maybeMissing` wraps it.
fn package_source_paths(nix: &Nix) -> Vec<(PathBuf, bool)> {
    let expr = format!(
        r#"let
  fileset = {{
    unions = paths: paths;
    maybeMissing = path: {{ maybeMissing = toString path; }};
    toSource = {{ root, fileset }}: map (p: if builtins.isAttrs p then p else {{ path = toString p; }}) fileset;
  }};
  lib = {{
    inherit fileset;
    importTOML = file: builtins.fromTOML (builtins.readFile file);
    licenses = {{ mit = "mit"; asl20 = "asl20"; }};
    platforms = {{ linux = [ ]; darwin = [ ]; }};
  }};
  package = import {} {{ inherit lib; rustPlatform = {{ buildRustPackage = args: args; }}; }};
in package.src"#,
        nix_string(&repo().join("nix/package.nix").display().to_string())
    );
    let value = nix.eval_output(&["-E", &expr]);
    value
        .as_array()
        .expect("a list of paths")
        .iter()
        .map(
            |entry| match (entry["path"].as_str(), entry["maybeMissing"].as_str()) {
                (Some(path), None) => (PathBuf::from(path), false),
                (None, Some(path)) => (PathBuf::from(path), true),
                _ => panic!("unexpected fileset entry {entry}"),
            },
        )
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// The Nix package builds from its source fileset alone, as the Nix sandbox would build
/// it: only the paths nix/package.nix names are copied (no `.git`, no `target`), and
/// `cargo build --offline --locked` and the package's own tests (`--workspace --lib`, its
/// `cargoTestFlags`) run there, with the network unshared where the test may. A crate
/// or file the build needs but the fileset leaves out fails here, not on the first
/// `nix build`.
#[test]
fn the_package_builds_from_its_source_fileset_alone() {
    let Some(nix) = Nix::find() else { return };
    let paths = package_source_paths(&nix);
    let relative: Vec<PathBuf> = paths
        .iter()
        .map(|(path, _)| path.strip_prefix(repo()).unwrap().to_path_buf())
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src", "crates", "migrations"] {
        assert!(
            relative.iter().any(|path| path == Path::new(needed)),
            "the fileset lacks {needed}: {relative:?}"
        );
    }
    let tree = tempfile::tempdir().unwrap();
    for ((path, maybe_missing), relative) in paths.iter().zip(&relative) {
        if !path.exists() {
            assert!(
                maybe_missing,
                "{} is in the fileset but missing",
                path.display()
            );
            continue;
        }
        copy_tree(path, &tree.path().join(relative));
    }
    // Built in a target directory of its own (the suite's is locked by the cargo that
    // runs it), kept between runs so that only babylon's crates are rebuilt.
    let target = repo().join("target/fileset-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    // A network namespace of its own, with only loopback (up, as in Nix's sandbox: the
    // unit tests listen on 127.0.0.1).
    let unshare = rustix::process::geteuid().is_root()
        && common::tool("unshare").is_some()
        && common::tool("ip").is_some();
    for args in [
        &["build", "--offline", "--locked"][..],
        &["test", "--offline", "--locked", "--workspace", "--lib"][..],
    ] {
        let mut command = match unshare {
            true => {
                let mut command = Command::new("unshare");
                command
                    .args([
                        "--net",
                        "--",
                        "sh",
                        "-c",
                        r#"ip link set lo up && exec "$@""#,
                        "sh",
                    ])
                    .arg(&cargo);
                command
            }
            false => Command::new(&cargo),
        };
        let output = command
            .args(args)
            .current_dir(tree.path())
            .env("CARGO_TARGET_DIR", &target)
            .env("SOURCE_COMMIT", "fileset")
            // No debug info: a third of the disk and of the link time of a copy nobody
            // debugs (a full debug build here is gigabytes beside the suite's own).
            .env("CARGO_PROFILE_DEV_DEBUG", "0")
            .env_remove("RUSTFLAGS")
            // As in Nix's sandbox, no Redis answers there: its unit tests skip, which
            // CI=true would make failures.
            .env_remove("CI")
            .output()
            .expect("cargo runs");
        assert!(
            output.status.success(),
            "cargo {} in the package's source alone failed:\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
}
