//! Every settings key babylon reads, found by asking the settings loader itself, which
//! names the keys of a section when given one it does not know: no list kept by hand.

use std::collections::BTreeSet;

use babylon::settings::Settings;
use serde_json::{json, Map, Value};

/// The keys of the section at `path`, as the loader lists them when given an unknown one;
/// `None` when `path` holds a value rather than a section.
fn keys_of(path: &[&str]) -> Option<Vec<String>> {
    const PROBE: &str = "zz_unknown_probe";
    let mut value = json!({ PROBE: 1 });
    for part in path.iter().rev() {
        let mut section = Map::new();
        section.insert(part.to_string(), value);
        value = Value::Object(section);
    }
    let error = match Settings::from_figment(&super::settings(value)) {
        Ok(_) => panic!("an unknown key under {path:?} was accepted"),
        Err(error) => error.to_string(),
    };
    let dotted = path
        .iter()
        .chain([&PROBE])
        .copied()
        .collect::<Vec<_>>()
        .join(".");
    let line = error
        .lines()
        .find(|line| line.contains(&format!("`{dotted}`")) && line.contains("unknown key"))?;
    let (_, list) = line
        .split_once("the keys here are ")
        .unwrap_or_else(|| panic!("{dotted}: the message lists no keys: {line}"));
    Some(
        list.split(", ")
            .map(|key| key.trim_matches('`').to_string())
            .collect(),
    )
}

/// Every key under `path`, as full dotted paths, found by probing each key for keys of
/// its own.
fn all_keys(path: &mut Vec<String>, found: &mut BTreeSet<String>) {
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    let Some(keys) = keys_of(&parts) else {
        return;
    };
    for key in keys {
        path.push(key);
        let dotted = path.join(".");
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        match keys_of(&parts) {
            Some(_) => all_keys(path, found),
            None => {
                found.insert(dotted);
            }
        }
        path.pop();
    }
}

/// The sections babylon reads (its own and `databases.main`).
pub const SECTIONS: [&[&str]; 5] = [
    &["metrics"],
    &["blocking"],
    &["cache"],
    &["redis"],
    &["databases", "main"],
];

/// Every key of babylon's sections, dotted (`metrics.export.port_range`).
pub fn babylon_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for section in SECTIONS {
        let before = keys.len();
        all_keys(
            &mut section.iter().map(|part| part.to_string()).collect(),
            &mut keys,
        );
        assert!(keys.len() > before, "no keys found under {section:?}");
    }
    keys
}

/// Every key of Rocket's own settings, dotted (`shutdown.grace`, `limits.json`), from
/// Rocket's defaults.
pub fn rocket_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, inner) in map {
                    let dotted = match prefix {
                        "" => key.clone(),
                        _ => format!("{prefix}.{key}"),
                    };
                    walk(&dotted, inner, found);
                }
            }
            _ => {
                found.insert(prefix.to_string());
            }
        }
    }
    let defaults: Value = figment::Figment::from(rocket::Config::default())
        .extract()
        .expect("Rocket's defaults");
    let mut keys = BTreeSet::new();
    walk("", &defaults, &mut keys);
    keys.remove("profile");
    keys
}
