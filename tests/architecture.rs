//! The crate's modules depend on one another in one direction only.
//!
//! Every top-level module of the library (`crates/babylon/src/`) sits in one layer of [`LAYERS`], and may use only
//! modules of lower layers: settings and the other leaves at the bottom, the composition
//! root (`app`) at the top, nothing depending on it. A module of the same layer is not
//! below, so modules of one layer are independent of one another. The test reads every
//! `crate::…` path (and `super::…` paths that climb to the crate root) in the sources,
//! so an import that points upward, or a module missing from the list, fails here with
//! the file and the path to fix. `docs/architecture.md` explains each layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. Keep in step with `docs/architecture.md`.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves",
        &["build", "settings", "routing", "limits", "memory", "trace"],
    ),
    ("cores", &["metrics", "logging"]),
    ("span export", &["otlp"]),
    ("request context", &["request"]),
    ("shared engines", &["redis_client"]),
    ("independent subsystems", &["blocking", "db", "cache"]),
    ("HTTP observation", &["observe"]),
    ("serving metrics", &["export"]),
    ("request handling", &["pipeline", "api"]),
    ("composition root", &["app"]),
];

/// The crate roots: they declare the modules and re-export the public surface.
const ROOTS: [&str; 2] = ["lib", "main"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The module path of a source file: `crates/babylon/src/db/pool.rs` is `["db", "pool"]`,
/// `crates/babylon/src/db/mod.rs` is `["db"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// The source without comments, so that prose naming a module is not an import.
fn without_comments(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("//") {
        code.push_str(&rest[..start]);
        rest = &rest[start..];
        rest = rest.find('\n').map_or("", |end| &rest[end..]);
    }
    code.push_str(rest);
    code
}

/// The top-level modules a file's paths name: `crate::x`, `crate::{x, y::z}`, and
/// `super::x` from a file whose `super` is the crate root.
fn named_modules(code: &str, module: &[String]) -> BTreeSet<String> {
    let top_level: BTreeSet<&str> = LAYERS
        .iter()
        .flat_map(|(_, modules)| modules.iter().copied())
        .collect();
    let mut named = BTreeSet::new();
    let bytes = code.as_bytes();
    for (start, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
            continue;
        }
        // How many levels `super::super::…` climbs; `crate::` climbs to the root.
        let mut rest = &code[start..];
        let mut climbs = 0;
        let from_root = if let Some(after) = rest.strip_prefix("crate::") {
            rest = after;
            true
        } else {
            while let Some(after) = rest.strip_prefix("super::") {
                rest = after;
                climbs += 1;
            }
            climbs >= module.len()
        };
        if !from_root {
            continue;
        }
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            group
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or("").trim())
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        named.extend(
            names
                .into_iter()
                .filter(|name| top_level.contains(name))
                .map(str::to_string),
        );
    }
    named
}

/// Every import between top-level modules: (from, to) -> the files that make it.
fn module_graph() -> BTreeMap<(String, String), BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("crates/babylon/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut graph: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_path(&src, &file);
        let top = module[0].clone();
        if ROOTS.contains(&top.as_str()) {
            continue;
        }
        assert!(
            layer_of(&top).is_some(),
            "crates/babylon/src/{top} is in no layer of tests/architecture.rs: add it to LAYERS (and to \
             docs/architecture.md) where its dependencies allow"
        );
        let text = std::fs::read_to_string(&file).expect("readable source");
        let display = file.strip_prefix(root).unwrap().display().to_string();
        for to in named_modules(&without_comments(&text), &module) {
            if to != top {
                graph
                    .entry((top.clone(), to))
                    .or_default()
                    .insert(display.clone());
            }
        }
    }
    graph
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let graph = module_graph();
    let upward: Vec<String> = graph
        .iter()
        .filter_map(|((from, to), files)| {
            let (from_layer, to_layer) = (layer_of(from)?, layer_of(to)?);
            (to_layer >= from_layer).then(|| {
                format!(
                    "{from} ({}) uses {to} ({}), in {}",
                    LAYERS[from_layer].0,
                    LAYERS[to_layer].0,
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect();
    assert!(
        upward.is_empty(),
        "imports that do not point to a lower layer:\n  {}\n(move the shared item down, or \
         pass it in from the composition root)",
        upward.join("\n  ")
    );
    // The check sees real imports: the subsystems do use the layers below them.
    for edge in [
        ("db", "settings"),
        ("observe", "metrics"),
        ("app", "export"),
    ] {
        assert!(
            graph.contains_key(&(edge.0.to_string(), edge.1.to_string())),
            "expected {} -> {} in the module graph; the parser misses imports",
            edge.0,
            edge.1
        );
    }
}

#[test]
fn nothing_depends_on_the_composition_root() {
    let graph = module_graph();
    let users: Vec<&String> = graph
        .keys()
        .filter(|(_, to)| to == "app")
        .map(|(from, _)| from)
        .collect();
    assert!(users.is_empty(), "modules that use `app`: {users:?}");
}

#[test]
fn the_parser_reads_every_form_of_path() {
    let module = vec!["export".to_string(), "listener".to_string()];
    let code = without_comments(
        "use crate::{metrics::Metrics, observe};\n\
         use super::super::db::Db; // crate::app is prose\n\
         use super::access::MetricsAccess;\n\
         fn f() { crate::settings::figment(); my_crate::api(); }",
    );
    let named: Vec<String> = named_modules(&code, &module).into_iter().collect();
    assert_eq!(named, ["db", "metrics", "observe", "settings"]);
}

/// The service (`src/`) is built on the library's public API alone: what its example
/// resource does, a user's resource can do. The compiler enforces the rest of the
/// boundary; the hidden `__internal` module is the one door it would leave open.
#[test]
fn the_service_uses_only_the_public_api_of_the_library() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() >= 3, "found only {files:?}");
    let users: Vec<String> = files
        .iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).expect("readable source");
            without_comments(&text).contains("__internal")
        })
        .map(|file| file.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(
        users.is_empty(),
        "the service reaches babylon::__internal in {users:?}: make what it needs public \
         (a user's resource needs it too)"
    );
}
