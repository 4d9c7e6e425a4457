//! Grafana's provisioning (the Prometheus datasource and the dashboards provider) has one
//! definition, `grafana/provisioning.json`, which both stacks render: `scripts/local-stack.sh`
//! (with python3) and `nix run .#stack` (`nix/stack.nix`, through
//! `grafana/provisioning.nix`); the NixOS module provisions the same (`nix/lib.nix`).
//! These tests run the script's provisioning step (`--provision-only DIR`), evaluate the
//! Nix side (`nix/tests/grafana-provisioning.nix`), and fail when what a consumer writes
//! differs from the definition or from the other stack, or when a dashboard's datasource
//! does not resolve to the provisioned one.
//!
//! Needs bash and python3 (the script) and `nix-instantiate` (Debian: nix-bin); without
//! them a test prints SKIPPED, except under CI=true where it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// Where both stacks' Prometheus listens, as Grafana reaches it.
const PROMETHEUS_URL: &str = "http://127.0.0.1:9090";

/// The placeholders of the definition: what each consumer fills in.
const PLACEHOLDERS: [&str; 2] = ["prometheus_url", "dashboards_dir"];

/// Grafana's two provisioning directories, and the key of each in the definition.
const KINDS: [&str; 2] = ["datasources", "dashboards"];

/// The name scripts/local-stack.sh gave the datasource before the definition was shared.
/// The script deletes it (`deleteDatasources`): Grafana does not rename a provisioned
/// datasource whose uid it already holds, and would fail to start on an old `.stack/`.
const OLD_LOCAL_NAME: &str = "Prometheus";

/// One provisioning file per kind.
type Files = BTreeMap<String, Value>;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", path.display()))
}

/// grafana/provisioning.json.
fn definition() -> Value {
    read_json(&repo().join("grafana/provisioning.json"))
}

/// "name" for the placeholder "@name@".
fn placeholder(text: &str) -> Option<&str> {
    let name = text.strip_prefix('@')?.strip_suffix('@')?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    valid.then_some(name)
}

/// `value` with every placeholder replaced, as both consumers render the definition.
fn render(value: &Value, values: &[(&str, &str)]) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, item)| (key.clone(), render(item, values)))
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| render(item, values)).collect())
        }
        Value::String(text) => match placeholder(text) {
            Some(name) => {
                let given = values
                    .iter()
                    .find(|pair| pair.0 == name)
                    .unwrap_or_else(|| panic!("grafana/provisioning.json: nothing fills @{name}@"));
                Value::String(given.1.to_string())
            }
            None => value.clone(),
        },
        other => other.clone(),
    }
}

/// The files a stack must write, given the directory its dashboards provider reads.
fn expected(dashboards_dir: &str) -> Files {
    let definition = definition();
    let values = [
        ("prometheus_url", PROMETHEUS_URL),
        ("dashboards_dir", dashboards_dir),
    ];
    KINDS
        .iter()
        .map(|kind| (kind.to_string(), render(&definition[*kind], &values)))
        .collect()
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap()
}

fn assert_same(actual: &Value, expected: &Value, what: &str) {
    assert!(
        actual == expected,
        "{what}\nexpected {}\nactual   {}",
        pretty(expected),
        pretty(actual)
    );
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What `scripts/local-stack.sh --provision-only DIR` writes, with the `deleteDatasources`
/// of its datasources file taken out and returned apart. None (SKIPPED) without bash or
/// python3.
fn local_stack() -> Option<(Files, Option<Value>)> {
    let bash = common::tool("bash")?;
    common::tool("python3")?;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("provisioning");
    let output = Command::new(bash)
        .arg(repo().join("scripts/local-stack.sh"))
        .arg("--provision-only")
        .arg(&out)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "scripts/local-stack.sh --provision-only failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files = Files::new();
    for kind in KINDS {
        let names = file_names(&out.join(kind));
        assert_eq!(
            names,
            ["babylon.yml"],
            "scripts/local-stack.sh should write {kind}/babylon.yml and nothing else there"
        );
        // JSON is YAML: Grafana reads the file as YAML, the test as JSON.
        files.insert(
            kind.to_string(),
            read_json(&out.join(kind).join("babylon.yml")),
        );
    }
    let deleted = files
        .get_mut("datasources")
        .and_then(Value::as_object_mut)
        .expect("the datasources file holds an object")
        .remove("deleteDatasources");
    Some((files, deleted))
}

/// nix/tests/grafana-provisioning.nix evaluated: `stack` (nix/stack.nix) and `module`
/// (nix/module.nix). None (SKIPPED) without nix-instantiate.
fn nix_side() -> Option<Value> {
    let program = common::tool("nix-instantiate")?;
    // A private chroot store, as tests/nix.rs does: no daemon, no writable /nix.
    let store = tempfile::tempdir().unwrap();
    let output = Command::new(program)
        .env(
            "NIX_REMOTE",
            format!("local?root={}", store.path().display()),
        )
        .current_dir(repo())
        .args([
            "--eval",
            "--strict",
            "--json",
            "nix/tests/grafana-provisioning.nix",
        ])
        .output()
        .expect("nix-instantiate runs");
    assert!(
        output.status.success(),
        "nix-instantiate --eval nix/tests/grafana-provisioning.nix failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("nix-instantiate prints JSON"))
}

/// The files nix/stack.nix links into Grafana's provisioning directory, and its share
/// directory (the package's share/babylon).
fn nix_stack(nix: &Value) -> (Files, String) {
    let stack = &nix["stack"];
    let files = stack["files"]
        .as_object()
        .expect("nix/stack.nix's provisioning files");
    let kinds: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(KINDS),
        "nix/stack.nix's passthru.grafanaProvisioning"
    );
    let mut settings = Files::new();
    for kind in KINDS {
        assert_eq!(
            files[kind]["linked"], true,
            "nix/stack.nix does not link its {kind} file to \
             $state/grafana/provisioning/{kind}/babylon.yml"
        );
        settings.insert(kind.to_string(), files[kind]["settings"].clone());
    }
    let share = stack["share"].as_str().expect("the share directory");
    (settings, share.to_string())
}

/// `file` with the path of each dashboards provider replaced by "<dashboards>", once
/// checked to be a `dashboards` directory.
fn without_dashboard_paths(file: &Value, who: &str) -> Value {
    let mut file = file.clone();
    if let Some(providers) = file.get_mut("providers").and_then(Value::as_array_mut) {
        for provider in providers {
            let path = provider["options"]["path"].as_str().unwrap_or_default();
            assert!(
                path.starts_with('/') && path.ends_with("/dashboards"),
                "{who}: the dashboards provider reads {path:?}, not a dashboards directory"
            );
            provider["options"]["path"] = json!("<dashboards>");
        }
    }
    file
}

#[test]
fn definition_has_what_the_stacks_rely_on() {
    let definition = definition();
    // Every placeholder is a whole string and one the consumers fill; a partial one
    // ("http://@prometheus_url@/") would be left as it is by both.
    fn strings<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::String(text) => found.push(text),
            Value::Array(items) => items.iter().for_each(|item| strings(item, found)),
            Value::Object(object) => object.values().for_each(|item| strings(item, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for kind in KINDS {
        assert!(
            definition[kind].is_object(),
            "grafana/provisioning.json has no {kind:?} object"
        );
        strings(&definition[kind], &mut found);
    }
    let mut used = BTreeSet::new();
    for text in found {
        match placeholder(text) {
            Some(name) => {
                assert!(
                    PLACEHOLDERS.contains(&name),
                    "grafana/provisioning.json: no consumer fills @{name}@"
                );
                used.insert(name);
            }
            None => assert!(
                !text.contains('@'),
                "grafana/provisioning.json: {text:?} holds a placeholder that is not a whole string"
            ),
        }
    }
    assert_eq!(used, BTreeSet::from(PLACEHOLDERS), "placeholders in use");

    let datasources = definition["datasources"]["datasources"]
        .as_array()
        .expect("a datasources list");
    assert_eq!(datasources.len(), 1, "babylon provisions one datasource");
    let datasource = &datasources[0];
    // The uid is what nix/module.nix, nix/stack.nix and the VM test name.
    assert_eq!(datasource["uid"], "babylon-prometheus");
    assert_eq!(datasource["type"], "prometheus");
    assert_eq!(datasource["url"], "@prometheus_url@");
    assert_ne!(
        datasource["name"], OLD_LOCAL_NAME,
        "scripts/local-stack.sh deletes the datasource named {OLD_LOCAL_NAME:?} at each start"
    );
    let providers = definition["dashboards"]["providers"]
        .as_array()
        .expect("a providers list");
    assert_eq!(providers.len(), 1, "one dashboards provider");
    assert_eq!(providers[0]["type"], "file");
    assert_eq!(providers[0]["options"]["path"], "@dashboards_dir@");
}

#[test]
fn local_stack_writes_the_definition() {
    let Some((files, deleted)) = local_stack() else {
        return;
    };
    let dashboards = repo().join("dashboards");
    let expected = expected(&dashboards.display().to_string());
    for kind in KINDS {
        assert_same(
            &files[kind],
            &expected[kind],
            &format!(
                "scripts/local-stack.sh's {kind}/babylon.yml is not grafana/provisioning.json"
            ),
        );
    }
    assert_eq!(
        deleted,
        Some(json!([{ "name": OLD_LOCAL_NAME, "orgId": 1 }])),
        "scripts/local-stack.sh deletes the datasource of its old name, and only that"
    );
    // Its provider reads the repository's dashboards.
    assert!(
        dashboards.join("babylon.json").is_file(),
        "{} holds no babylon.json",
        dashboards.display()
    );
}

#[test]
fn nix_stack_writes_the_definition() {
    let Some(nix) = nix_side() else { return };
    let (files, share) = nix_stack(&nix);
    let expected = expected(&format!("{share}/dashboards"));
    for kind in KINDS {
        assert_same(
            &files[kind],
            &expected[kind],
            &format!("nix/stack.nix's {kind} file is not grafana/provisioning.json"),
        );
    }
}

#[test]
fn nixos_module_provisions_the_definition() {
    let Some(nix) = nix_side() else { return };
    let module = &nix["module"];
    assert_eq!(
        module["enable"], true,
        "services.grafana.provision.enable with services.babylon.grafana.enable"
    );
    let share = module["share"].as_str().expect("the share directory");
    let expected = expected(&format!("{share}/dashboards"));
    for kind in KINDS {
        assert_same(
            &module[kind],
            &expected[kind],
            &format!(
                "nix/module.nix's services.grafana.provision.{kind}.settings (from nix/lib.nix) \
                 is not grafana/provisioning.json"
            ),
        );
    }
}

#[test]
fn both_stacks_provision_the_same_grafana() {
    let Some((local, _)) = local_stack() else {
        return;
    };
    let Some(nix) = nix_side() else { return };
    let (nix, _) = nix_stack(&nix);
    // Only where the dashboards are differs: the repository's, the package's.
    for kind in KINDS {
        assert_same(
            &without_dashboard_paths(&local[kind], "scripts/local-stack.sh"),
            &without_dashboard_paths(&nix[kind], "nix/stack.nix"),
            &format!(
                "the {kind} files of scripts/local-stack.sh (actual) and nix/stack.nix \
                 (expected) disagree"
            ),
        );
    }
}

/// The variable a datasource reference such as "${datasource}", "$datasource" or
/// "[[datasource]]" names.
fn variable_name(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix("${") {
        // "${datasource:text}" formats the same variable.
        rest.strip_suffix('}')?.split(':').next()
    } else if let Some(rest) = text.strip_prefix("[[") {
        rest.strip_suffix("]]")
    } else {
        text.strip_prefix('$')
    }
}

/// Every `datasource` in `value`, with where it is.
fn datasource_references<'a>(value: &'a Value, at: &str, found: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(object) => {
            for (key, item) in object {
                let here = format!("{at}/{key}");
                if key.as_str() == "datasource" {
                    found.push((here.clone(), item));
                }
                datasource_references(item, &here, found);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                datasource_references(item, &format!("{at}/{index}"), found);
            }
        }
        _ => {}
    }
}

/// Whether the dashboard variable `name` selects `provisioned`.
fn variable_resolves(
    name: &str,
    variables: &BTreeMap<&str, &Value>,
    provisioned: &Value,
) -> Result<(), String> {
    let variable: &Value = variables
        .get(name)
        .copied()
        .ok_or_else(|| format!("${name} is no variable of the dashboard"))?;
    if variable["type"] != "datasource" {
        return Err(format!(
            "${name} is a {} variable, not a datasource variable",
            variable["type"]
        ));
    }
    if variable["query"] != provisioned["type"] {
        return Err(format!(
            "${name} lists datasources of type {}, the provisioned one is {}",
            variable["query"], provisioned["type"]
        ));
    }
    let regex = variable["regex"].as_str().unwrap_or_default();
    if !regex.is_empty() {
        return Err(format!(
            "${name} filters datasources by {regex:?}, which this test cannot judge: \
             check that it lets {} through and teach the test",
            provisioned["name"]
        ));
    }
    // With nothing selected, Grafana selects the default datasource of the type.
    match &variable["current"]["value"] {
        Value::Null if provisioned["isDefault"] == true => Ok(()),
        Value::String(value) if *value == provisioned["uid"] || *value == provisioned["name"] => {
            Ok(())
        }
        other => Err(format!(
            "${name} selects {other}, not the provisioned {} (uid {})",
            provisioned["name"], provisioned["uid"]
        )),
    }
}

/// Whether the dashboard's datasource `reference` means `provisioned`.
fn resolves(
    reference: &Value,
    variables: &BTreeMap<&str, &Value>,
    provisioned: &Value,
) -> Result<(), String> {
    match reference {
        // None given: Grafana takes the default datasource.
        Value::Null if provisioned["isDefault"] == true => Ok(()),
        // Before Grafana 8.3 a reference was a name.
        Value::String(text) => match variable_name(text) {
            Some(name) => variable_resolves(name, variables, provisioned),
            None if *text == provisioned["name"] => Ok(()),
            None => Err(format!(
                "datasource {text:?} is not the provisioned {}",
                provisioned["name"]
            )),
        },
        Value::Object(object) => {
            let uid = object
                .get("uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // Grafana's own: "-- Grafana --" (annotations), "-- Mixed --", "-- Dashboard --".
            if uid.starts_with("-- ") && uid.ends_with(" --") {
                return Ok(());
            }
            if let Some(kind) = object.get("type") {
                if *kind != provisioned["type"] {
                    return Err(format!(
                        "datasource type {kind}, the provisioned one is {}",
                        provisioned["type"]
                    ));
                }
            }
            match variable_name(uid) {
                Some(name) => variable_resolves(name, variables, provisioned),
                None if provisioned["uid"] == uid => Ok(()),
                None => Err(format!(
                    "datasource uid {uid:?} is not the provisioned {}",
                    provisioned["uid"]
                )),
            }
        }
        other => Err(format!("datasource {other} is not the provisioned one")),
    }
}

fn dashboard_files() -> Vec<PathBuf> {
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = file_names(&dir)
        .into_iter()
        .filter(|name| name.ends_with(".json"))
        .map(|name| dir.join(name))
        .collect();
    files.sort();
    files
}

#[test]
fn dashboards_use_the_provisioned_datasource() {
    // What both stacks provision (the tests above hold them to it).
    let files = expected(&repo().join("dashboards").display().to_string());
    let datasources = files["datasources"]["datasources"]
        .as_array()
        .expect("a datasources list");
    assert_eq!(datasources.len(), 1, "babylon provisions one datasource");
    let provisioned = &datasources[0];
    assert!(
        provisioned["uid"]
            .as_str()
            .is_some_and(|uid| !uid.is_empty()),
        "the provisioned datasource needs a fixed uid"
    );

    let dashboards = dashboard_files();
    assert!(!dashboards.is_empty(), "no dashboards/*.json");
    for path in dashboards {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard = read_json(&path);
        let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|variable| Some((variable["name"].as_str()?, variable)))
                    .collect()
            })
            .unwrap_or_default();
        let mut references = Vec::new();
        datasource_references(&dashboard, "", &mut references);
        assert!(
            !references.is_empty(),
            "{file}: no datasource reference found"
        );
        for (at, reference) in references {
            if let Err(why) = resolves(reference, &variables, provisioned) {
                panic!("dashboards/{file} {at}: {why}");
            }
        }
    }
}
