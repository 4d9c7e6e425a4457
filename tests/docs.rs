//! The documentation cannot drift from the code: every settings key babylon reads is in
//! `docs/configuration.md`, every metric family the service exports is in
//! `docs/metrics.md`, every relative link of the README and `docs/` resolves (anchors
//! included), the README stays short, and no document refers outside the repository or
//! narrates how the work went.
//!
//! The keys are not listed here by hand: they are found by asking the settings loader
//! itself, which names the keys of a section when given one it does not know. The
//! families are those a real service exposes after real traffic, plus every family name
//! the sources register.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rocket::http::Status;
use serde_json::json;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// The Markdown documents of the repository: the README, `docs/`, and the top-level
/// results and history.
fn documents() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "BENCHMARKS.md", "CHANGELOG.md"]
        .iter()
        .map(|name| root().join(name))
        .collect();
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    chapters.extend(
        std::fs::read_dir(root().join("docs/guide"))
            .expect("docs/guide/ exists")
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "md")),
    );
    chapters.sort();
    assert!(chapters.len() >= 7, "docs/ has {} chapters", chapters.len());
    files.extend(chapters);
    files
}

/// Whether `text` names `name` in backticks, alone or as the start of a code span
/// (`` `cache.ttl_seconds` `` or `` `cache.ttl_seconds = 5` ``).
fn names_in_code(text: &str, name: &str) -> bool {
    text.match_indices(&format!("`{name}")).any(|(at, _)| {
        let after = text[at + 1 + name.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    })
}

// ---------------------------------------------------------------------------------------
// Settings keys

#[test]
fn every_settings_key_is_documented() {
    let keys = common::settings_keys::babylon_keys();
    // The probe reaches nested sections, optional ones included.
    for nested in [
        "metrics.export.port_range",
        "metrics.export.file_sd.directory",
        "blocking.rate_limit.burst",
        "databases.main.max_connections",
    ] {
        assert!(keys.contains(nested), "{nested} not found among {keys:?}");
    }
    let configuration = read("docs/configuration.md");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| !names_in_code(&configuration, key))
        .collect();
    assert!(
        missing.is_empty(),
        "settings keys missing from docs/configuration.md (write each as `a.b.c`): {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Metric families

/// The family names of an exposition (`# TYPE` lines).
fn families_of(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Family names the sources register: string literals of babylon's own prefixes, outside
/// comments (a doc example is not a family).
fn families_in_sources(dir: &Path, found: &mut BTreeSet<String>) {
    let mut files = Vec::new();
    collect(dir, &mut files);
    for path in files
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
    {
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            // `#[families(prefix = "…")]` names the start of families, not a family.
            if code.contains("prefix = ") {
                continue;
            }
            for literal in code.split('"').skip(1).step_by(2) {
                let is_family = ["rocket_", "api_", "babylon_"]
                    .iter()
                    .any(|prefix| literal.starts_with(prefix))
                    && literal.len() > 8
                    && literal
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                // babylon's own table (crates/babylon/src/db/models.rs), not a family.
                if is_family && literal != "babylon_write_probe" {
                    found.insert(literal.to_string());
                }
            }
        }
    }
}

#[test]
fn every_exported_family_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("docs.sqlite").display());
    let client = common::client(json!({
        "databases": { "main": { "url": url } },
        "metrics": { "export": { "enabled": false } },
        "blocking": {
            "deny": ["192.0.2.0/24"],
            "rate_limit": { "per_second": 1000, "burst": 1000 },
        },
    }));
    // Traffic that touches every subsystem: writes, cached reads, a miss, a refusal.
    let id = common::create_item(&client, "Dune");
    for _ in 0..2 {
        assert_eq!(
            client.get(format!("/api/items/{id}")).dispatch().status(),
            Status::Ok
        );
    }
    assert_eq!(client.get("/api/items").dispatch().status(), Status::Ok);
    assert_eq!(client.get("/nowhere").dispatch().status(), Status::NotFound);
    let denied = client
        .get("/api/live")
        .remote("192.0.2.7:4000".parse().unwrap())
        .dispatch();
    assert_eq!(denied.status(), Status::Forbidden);
    let scrape = client
        .get("/metrics")
        .remote("127.0.0.1:4000".parse().unwrap())
        .dispatch();
    assert_eq!(scrape.status(), Status::Ok);
    let mut families = families_of(&scrape.into_string().unwrap());
    for expected in [
        "rocket_model_inserts_total",
        "rocket_cache_get_hits_total",
        "process_threads",
    ] {
        assert!(
            families.contains(expected),
            "{expected} not exported after the traffic"
        );
    }
    let exported = families.len();
    for dir in ["src", "crates"] {
        families_in_sources(&root().join(dir), &mut families);
    }
    assert!(
        families.len() > 30,
        "only {} families found",
        families.len()
    );

    let metrics = read("docs/metrics.md");
    let missing: Vec<&String> = families
        .iter()
        .filter(|family| !names_in_code(&metrics, family))
        .collect();
    assert!(
        missing.is_empty(),
        "families missing from docs/metrics.md ({exported} exported, {} in all): {missing:?}",
        families.len()
    );
}

// ---------------------------------------------------------------------------------------
// Links

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks), with GitHub's `-1`,
/// `-2` … for repeated ones.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let anchor = anchor_of(line.trim_start_matches('#'));
        let count = seen.entry(anchor.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            anchor.clone()
        } else {
            format!("{anchor}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// The targets of the inline links `[text](target)` of a Markdown text, outside code.
fn links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Inline code may hold `](`; links are outside it.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            targets.push(target.to_string());
            rest = &after[end..];
        }
    }
    targets
}

#[test]
fn every_link_of_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        let name = document.strip_prefix(root()).unwrap().display().to_string();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                document.clone()
            } else {
                document.parent().unwrap().join(path)
            };
            let Ok(file) = file.canonicalize() else {
                broken.push(format!("{name}: {target} (no such file)"));
                continue;
            };
            if !file.starts_with(root()) {
                broken.push(format!("{name}: {target} (outside the repository)"));
                continue;
            }
            if !anchor.is_empty() {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if !anchors(&text).contains(anchor) {
                    broken.push(format!("{name}: {target} (no heading #{anchor})"));
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} links found");
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_link_parser_and_anchors_follow_github() {
    assert_eq!(
        links("see [a](x.md#b) and `[no](t)` and [c](../y)"),
        ["x.md#b", "../y"]
    );
    assert_eq!(
        anchor_of(" `metrics.export.*` settings"),
        "metricsexport-settings"
    );
    assert_eq!(
        anchor_of("Known limits of the main port (Rocket 0.5.2)"),
        "known-limits-of-the-main-port-rocket-052"
    );
    let repeated = anchors("# A\n## A\n```\n# not a heading\n```\n");
    assert_eq!(repeated.into_iter().collect::<Vec<_>>(), ["a", "a-1"]);
}

// ---------------------------------------------------------------------------------------
// What the documents say of themselves

#[test]
fn the_readme_is_short_and_points_into_docs() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines; move detail into docs/"
    );
    for chapter in [
        "configuration",
        "metrics",
        "operations",
        "nix",
        "security",
        "architecture",
        "testing",
    ] {
        assert!(
            readme.contains(&format!("docs/{chapter}.md")),
            "README.md does not link docs/{chapter}.md"
        );
    }
}

#[test]
fn documents_speak_of_the_project_not_of_work_sessions() {
    let mut files = documents();
    for dir in [
        "src",
        "crates",
        "tests",
        "nix",
        "scripts",
        "bench",
        "prometheus",
    ] {
        collect(&root().join(dir), &mut files);
    }
    let outside = ["../shared", "DESIGN.md", "nix-facts.md"];
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        if name == "tests/docs.rs" {
            continue;
        }
        for (number, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            let narrates = lower.contains("this session")
                || lower.contains("earlier session")
                || lower.contains("work session")
                || lower
                    .match_indices("stop ")
                    .any(|(at, _)| lower[at + 5..].starts_with(|c: char| c.is_ascii_digit()));
            let points_outside = outside.iter().any(|reference| line.contains(reference))
                // CI's own contract: the advisory database sits beside the clone.
                && !line.contains("../shared/advisory-db")
                && !line.contains("with `../shared` beside it")
                && !line.contains("with ../shared beside it");
            if narrates || points_outside {
                found.push(format!("{name}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "lines to rewrite:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn every_file_path_the_repository_mentions_exists() {
    // The changelog is history: it may name files that are gone.
    let mut files: Vec<PathBuf> = documents()
        .into_iter()
        .filter(|file| !file.ends_with("CHANGELOG.md"))
        .collect();
    for dir in [
        "src", "crates", "tests", "benches", "bench", "nix", "scripts", "examples",
    ] {
        collect(&root().join(dir), &mut files);
    }
    files.extend([
        root().join("Cargo.toml"),
        root().join("Rocket.toml"),
        root().join("flake.nix"),
    ]);
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        // A manifest or source inside a member crate names paths from that crate's folder.
        let base = match file.strip_prefix(root().join("crates")) {
            Ok(inside) => root().join("crates").join(inside.iter().next().unwrap()),
            Err(_) => root().to_path_buf(),
        };
        let is_path_char =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-');
        for (number, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("src/") {
                // `src/…` or `crates/<crate>/src/…` of this repository, not `…/src/…` of
                // another path.
                let start = line[..at]
                    .char_indices()
                    .rev()
                    .take_while(|&(_, c)| is_path_char(c))
                    .last()
                    .map_or(at, |(index, _)| index);
                let path: String = line[start..]
                    .chars()
                    .take_while(|&c| is_path_char(c))
                    .collect();
                let path = path.trim_end_matches('.');
                let relative_to = if start == at {
                    &base
                } else if path.starts_with("crates/")
                    && path[..at - start].matches('/').count() == 2
                {
                    root()
                } else {
                    continue;
                };
                if !path.ends_with(".rs") {
                    continue;
                }
                checked += 1;
                if !relative_to.join(path).exists() {
                    missing.push(format!("{name}:{}: {path}", number + 1));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} source paths found");
    assert!(
        missing.is_empty(),
        "paths that do not exist:\n  {}",
        missing.join("\n  ")
    );
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// The README's way to see what did not run: a test that skips says so on the terminal
/// while libtest shows it as passed, and its binary ends with the list. Runs this very
/// test binary again, outside CI, with one test made to skip.
#[test]
fn a_skipped_test_says_so_at_once_and_in_the_closing_summary() {
    const PROBE: &str = "BABYLON_SKIP_PROBE";
    if std::env::var_os(PROBE).is_some() {
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "skip_probe", "--test-threads", "1"])
        .env(PROBE, "1")
        .env_remove("CI")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("test skip_probe ... ok"), "{stdout}");
    let at_once = "SKIPPED skip_probe: the probe's tool is missing";
    assert!(stderr.starts_with(at_once), "{stderr}");
    let summary = stderr
        .split_once("SKIPPED in docs: 1 test(s) did not run")
        .unwrap_or_else(|| panic!("no closing summary: {stderr}"))
        .1;
    assert!(
        summary.contains("  skip_probe: the probe's tool is missing"),
        "{stderr}"
    );
}

/// Skips when run by the test above, and passes otherwise.
#[test]
fn skip_probe() {
    if std::env::var_os("BABYLON_SKIP_PROBE").is_some() {
        common::skip::skip("the probe's tool is missing");
    }
}

// ---------------------------------------------------------------------------------------
// Drift: what the documents list against what is there

/// Every chapter with a table of contents (the list of `- [Section](#anchor)` lines
/// before its first section) lists exactly its `## ` sections.
#[test]
fn every_table_of_contents_lists_exactly_its_sections() {
    let mut checked = 0;
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        let name = document.strip_prefix(root()).unwrap().display().to_string();
        let (head, body) = text.split_once("\n## ").unwrap_or((&text, ""));
        let listed: BTreeSet<String> = head
            .lines()
            .filter(|line| line.starts_with("- [") && line.contains("](#"))
            .filter_map(|line| {
                line.split_once("](#")?
                    .1
                    .strip_suffix(')')
                    .map(String::from)
            })
            .collect();
        if listed.is_empty() {
            continue;
        }
        checked += 1;
        let sections: BTreeSet<String> = format!("\n## {body}")
            .lines()
            .filter_map(|line| line.strip_prefix("## "))
            .map(anchor_of)
            .collect();
        assert_eq!(
            listed, sections,
            "{name}: the table of contents (left) and the sections (right) differ"
        );
    }
    assert!(
        checked >= 7,
        "only {checked} documents have a table of contents"
    );
}

/// The keys of a JSON value, recursively, as dotted paths; array elements as `[]`.
fn shape(value: &serde_json::Value, path: &str, found: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let path = format!("{path}.{key}");
                found.insert(path.clone());
                shape(inner, &path, found);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                shape(item, &format!("{path}[]"), found);
            }
        }
        _ => {}
    }
}

/// The first fenced JSON block after `heading` in `document`.
fn json_example(document: &str, heading: &str) -> serde_json::Value {
    let text = read(document);
    let after = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("{document} has no {heading}"))
        .1;
    let block = after
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("{document}: no JSON block after {heading}"))
        .0;
    serde_json::from_str(block).unwrap_or_else(|e| panic!("{document}: {e}: {block}"))
}

/// docs/api.md's example of `GET /api/metrics` has exactly the fields of a real answer.
#[test]
fn the_api_metrics_example_has_the_fields_of_a_real_answer() {
    let example = json_example("docs/api.md", "### `GET /api/metrics`");
    let client = common::client(json!({}));
    let real: serde_json::Value = client.get("/api/metrics").dispatch().into_json().unwrap();
    let (mut documented, mut served) = (BTreeSet::new(), BTreeSet::new());
    shape(&example, "", &mut documented);
    shape(&real, "", &mut served);
    assert_eq!(
        documented, served,
        "docs/api.md's example (left) and a real answer (right) differ: {real}"
    );
}

/// Every route the service mounts is a row of the README's endpoints table and of
/// docs/api.md, by method and path.
#[test]
fn every_route_is_in_the_endpoint_tables() {
    let client = common::client(json!({}));
    let routes: Vec<(String, String)> = client
        .rocket()
        .routes()
        .map(|route| (route.method.to_string(), route.uri.path().to_string()))
        .collect();
    assert!(routes.len() >= 10, "{routes:?}");
    for document in ["README.md", "docs/api.md"] {
        let text = read(document);
        let missing: Vec<&(String, String)> = routes
            .iter()
            .filter(|(method, path)| {
                !text.lines().any(|line| {
                    line.starts_with(&format!("| {method} | `{path}`"))
                        || line.starts_with(&format!("| {method} | `{path}?"))
                })
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{document}: no row `| METHOD | `path` …` for {missing:?}"
        );
    }
}

/// Every program and Debian package `.ci/run` installs is named in docs/testing.md, and
/// every package in the README.
#[test]
fn what_ci_installs_is_documented() {
    let ci = read(".ci/run");
    let pairs: Vec<(&str, &str)> = ci
        .lines()
        .filter_map(|line| line.trim().strip_prefix("apt_install "))
        .flat_map(|list| list.split_whitespace())
        .filter_map(|pair| pair.split_once(':'))
        .collect();
    assert!(pairs.len() >= 10, "{pairs:?}");
    let testing = read("docs/testing.md");
    let readme = read("README.md");
    for (command, package) in &pairs {
        assert!(
            testing.contains(&format!("`{package}`")) && testing.contains(&format!("`{command}`")),
            "docs/testing.md does not name `{package}` ({command}), which .ci/run installs"
        );
        assert!(
            readme.contains(&format!("`{package}`")),
            "README.md does not name `{package}`, which .ci/run installs"
        );
    }
    // Packages installed for a library rather than a command.
    let packages: Vec<&str> = ci
        .lines()
        .filter_map(|line| line.trim().strip_prefix("apt_get_install "))
        .flat_map(|list| list.split_whitespace())
        .filter(|word| word.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .collect();
    assert!(!packages.is_empty());
    for package in packages {
        assert!(
            testing.contains(&format!("`{package}`")) && readme.contains(&format!("`{package}`")),
            "docs/testing.md and README.md must name `{package}`, which .ci/run installs"
        );
    }
    for tool in ["cargo-audit", "cargo-deny"] {
        assert!(
            ci.contains(tool) && testing.contains(tool) && readme.contains(tool),
            "{tool}"
        );
    }
}

/// The families of an exposition (`# TYPE` lines).
fn families_in(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[rocket::get("/fail")]
fn failing() -> rocket::http::Status {
    rocket::http::Status::InternalServerError
}

/// docs/metrics.md's "When series appear" holds: each family listed there appears with
/// its event and not before, every other one is there from start-up.
#[test]
fn series_appear_when_the_docs_say() {
    // Without a backend in Redis, no Redis family at all, whatever the traffic.
    let without_redis = common::client(json!({}));
    common::create_item(&without_redis, "no redis");
    let families = families_in(&common::scrape(&without_redis));
    assert!(
        !families
            .iter()
            .any(|family| family.starts_with("rocket_redis_")),
        "{families:?}"
    );
    if !common::redis_server::redis_available() {
        return;
    }
    let metrics = read("docs/metrics.md");
    let section = metrics
        .split_once("## When series appear")
        .and_then(|(_, rest)| rest.split_once("\n## "))
        .expect("the section")
        .0;
    let mut documented: BTreeMap<String, String> = BTreeMap::new();
    for line in section.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (families, event) = (cells[1], cells[2]);
        for family in families.split(", ") {
            documented.insert(family.trim_matches('`').to_string(), event.to_string());
        }
    }
    let events = [
        "with the first request",
        "with the first Redis command",
        "with the first write",
        "with the first use of a custom family",
        "with the first 5xx answer",
    ];
    for (family, event) in &documented {
        assert!(
            events.contains(&event.as_str()),
            "{family}: unknown event `{event}`"
        );
    }
    let prefix = common::redis_server::unique_prefix("appear");
    let _keys = common::redis_server::Keys(prefix.clone());
    let client = common::client_with_routes(
        json!({ "cache": { "backend": "redis" },
                "redis": { "url": common::redis_server::REDIS, "key_prefix": prefix } }),
        rocket::routes![failing],
    );
    let mut present = families_in(&common::scrape(&client));
    let mut done: Vec<&str> = Vec::new();
    let check = |present: &BTreeSet<String>, done: &[&str], step: &str| {
        for (family, event) in &documented {
            let due = done.contains(&event.as_str());
            let state = if due { "missing" } else { "there before it" };
            assert_eq!(
                present.contains(family),
                due,
                "after {step}: {family} ({event}) is {state}"
            );
        }
    };
    check(&present, &done, "start-up");
    let at_start = present.clone();
    // Each step: the events it is, then what it sends.
    let steps: [(&[&str], &str); 4] = [
        (&["with the first request"], "GET /api/live"),
        (&["with the first Redis command"], "GET /api/items"),
        (
            &[
                "with the first write",
                "with the first use of a custom family",
            ],
            "POST /api/items",
        ),
        (&["with the first 5xx answer"], "GET /test/fail"),
    ];
    for (events_of_step, request) in steps {
        match request {
            "POST /api/items" => {
                common::create_item(&client, "appears");
            }
            _ => {
                let path = request.trim_start_matches("GET ");
                client.get(path).dispatch();
            }
        }
        done.extend_from_slice(events_of_step);
        present = families_in(&common::scrape(&client));
        check(&present, &done, request);
    }
    // Every family not listed was there from the start.
    let unlisted_late: Vec<&String> = present
        .iter()
        .filter(|family| !documented.contains_key(*family) && !at_start.contains(*family))
        .collect();
    assert!(
        unlisted_late.is_empty(),
        "{unlisted_late:?} appear later, but docs/metrics.md says they are there from start-up"
    );
}

/// The fenced blocks of `lang` in a Markdown text, each without its fences.
fn code_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == format!("```{lang}") => current = Some(String::new()),
            Some(block) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The guide's code is the code CI compiles and runs: its complete resource is
/// docs/guide/orders.rs (tests/guide.rs and examples/shop.rs build it), its migration the
/// one file of docs/guide/migrations/, and the lines it shows of `src/lib.rs` are there,
/// but for the resource's own.
#[test]
fn the_guides_code_is_the_code_ci_builds() {
    let guide = read("docs/guide/adding-a-resource.md");
    let rust = code_blocks(&guide, "rust");
    let orders = read("docs/guide/orders.rs");
    assert!(
        rust.contains(&orders),
        "the guide does not show docs/guide/orders.rs as it is"
    );
    let migrations: Vec<PathBuf> = std::fs::read_dir(root().join("docs/guide/migrations"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(migrations.len(), 1, "{migrations:?}");
    let sql = std::fs::read_to_string(&migrations[0]).unwrap();
    assert_eq!(
        code_blocks(&guide, "sql"),
        vec![sql],
        "the guide's migration"
    );
    let lib = read("src/lib.rs");
    let lib_lines: Vec<&str> = lib.lines().map(str::trim).collect();
    let mut checked = 0;
    for block in rust.iter().filter(|block| **block != orders) {
        for line in block.lines().map(str::trim) {
            if line.is_empty() || line.contains("orders") {
                continue;
            }
            checked += 1;
            let line = line.trim_end_matches(';');
            assert!(
                lib_lines
                    .iter()
                    .any(|have| have.trim_end_matches(';') == line),
                "the guide shows `{line}` of src/lib.rs, which src/lib.rs does not have"
            );
        }
    }
    assert!(checked >= 4, "only {checked} lines of src/lib.rs checked");
}
