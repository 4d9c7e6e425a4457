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
            for literal in code.split('"').skip(1).step_by(2) {
                let is_family = ["rocket_", "api_", "babylon_"]
                    .iter()
                    .any(|prefix| literal.starts_with(prefix))
                    && literal.len() > 8
                    && literal
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if is_family {
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
    families_in_sources(&root().join("src"), &mut families);
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
    for dir in ["src", "tests", "nix", "scripts", "bench", "prometheus"] {
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
        "src", "tests", "benches", "bench", "nix", "scripts", "examples",
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
        for (number, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("src/") {
                // `src/…` of this repository, not `…/src/…` of another path.
                let before = line[..at].chars().last();
                if before
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '.')
                {
                    continue;
                }
                let path: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-'))
                    .collect();
                let path = path.trim_end_matches('.');
                if !path.ends_with(".rs") {
                    continue;
                }
                checked += 1;
                if !root().join(path).exists() {
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
