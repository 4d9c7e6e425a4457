//! The observability assets shipped with babylon are valid and agree with the service:
//! prometheus.yml, the recording and alerting rules and their promtool unit tests pass the
//! real `promtool`, the Grafana dashboards are well-formed and filtered by the `job` and
//! `instance` variables, and every metric a dashboard or rule queries is one babylon
//! exports (or a recording rule, or Prometheus' own `up`/`scrape_*` series).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use rocket::http::{ContentType, Status};
use serde_json::{json, Value};

const RULE_FILES: [&str; 2] = ["prometheus/recording_rules.yml", "prometheus/alerts.yml"];
const DATASOURCE_UID: &str = "${datasource}";

/// Series that Prometheus itself records for every target.
const PROMETHEUS_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// Files of `dir` (relative to the crate) whose name ends with one of `extensions`, sorted.
fn files_in(dir: &str, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .and_then(|ext| ext.to_str())
                .is_some_and(|ext| extensions.contains(&ext))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {extensions:?} file in {dir}");
    files
}

/// Runs promtool in the crate root and returns its output; panics with it on failure.
fn promtool(promtool: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{report}",
        args.join(" ")
    );
    report
}

// ---------------------------------------------------------------------------------------
// A small reader for the YAML these files use: `key: value` scalars (plain or quoted) and
// `key: |` / `key: >-` block scalars. Enough to pull out rule names and expressions;
// `promtool check rules` counting the same number of rules keeps it honest.

fn unquote(value: &str) -> String {
    let value = value.trim();
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return value[1..value.len() - 1].to_string();
        }
    }
    value.to_string()
}

/// Every value of `key` in `yaml`, in order.
fn yaml_values(yaml: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut values = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let content = line.trim_start();
        let content = content.strip_prefix("- ").unwrap_or(content);
        let Some(value) = content
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
        else {
            continue;
        };
        let column = line.len() - content.len();
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let block: Vec<&str> = lines[index + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > column)
                .map(|l| l.trim())
                .collect();
            values.push(block.join("\n").trim().to_string());
        } else {
            values.push(unquote(value));
        }
    }
    values
}

// ---------------------------------------------------------------------------------------
// A PromQL reader that finds the metric selectors of an expression without a full parser:
// identifiers that are not functions, keywords, label names (inside `{…}` or grouping
// lists), strings, numbers, durations or Grafana variables.

#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    /// What stands between `{` and `}`, empty without matchers.
    matchers: String,
    /// What stands between `[` and `]` right after the selector.
    range: Option<String>,
}

const AGGREGATIONS_AND_KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    // Grouping keywords (`by`, `on`, …) are in GROUPING, which is checked first.
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Index of the `close` that ends the group opened at `open`, strings skipped.
fn closing(chars: &[char], open: usize, close: char) -> usize {
    let mut i = open + 1;
    while i < chars.len() && chars[i] != close {
        if matches!(chars[i], '"' | '\'' | '`') {
            i = skip_string(chars, i);
        } else {
            i += 1;
        }
    }
    assert!(
        i < chars.len(),
        "unbalanced `{}` in {:?}",
        chars[open],
        chars.iter().collect::<String>()
    );
    i
}

fn skip_spaces(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = closing(&chars, i, '}') + 1;
        } else if c == '[' {
            i = closing(&chars, i, ']') + 1;
        } else if c.is_ascii_digit() || c == '.' || c == '$' {
            // Numbers, durations (5m), Grafana variables ($__rate_interval).
            i += 1;
            while i < chars.len() && (is_word_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_spaces(&chars, i);
            let next_char = chars.get(next).copied();
            if GROUPING.contains(&word.as_str()) {
                if next_char == Some('(') {
                    i = closing(&chars, next, ')') + 1;
                }
            } else if next_char == Some('(') || AGGREGATIONS_AND_KEYWORDS.contains(&word.as_str()) {
                // A function call or an aggregation: its arguments are read on.
            } else {
                let mut selector = Selector {
                    name: word,
                    matchers: String::new(),
                    range: None,
                };
                if next_char == Some('{') {
                    let end = closing(&chars, next, '}');
                    selector.matchers = chars[next + 1..end].iter().collect();
                    i = end + 1;
                }
                let after = skip_spaces(&chars, i);
                if chars.get(after) == Some(&'[') {
                    let end = closing(&chars, after, ']');
                    selector.range = Some(chars[after + 1..end].iter().collect());
                    i = end + 1;
                }
                found.push(selector);
            }
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn the_promql_reader_finds_metric_selectors_only() {
    let expr = r#"(sum by (job, le) (rate(a_total{job=~"$job", x="}[or"}[$__rate_interval]))
        or on (job) 0 * b:c:rate5m) / ignoring(le) group_left histogram_quantile(0.95, d_bucket[5m] offset 1h) > bool 1e3
        unless up"#;
    let got: Vec<(String, String, Option<String>)> = selectors(expr)
        .into_iter()
        .map(|s| (s.name, s.matchers, s.range))
        .collect();
    let want = vec![
        (
            "a_total".to_string(),
            r#"job=~"$job", x="}[or""#.to_string(),
            Some("$__rate_interval".to_string()),
        ),
        ("b:c:rate5m".to_string(), String::new(), None),
        (
            "d_bucket".to_string(),
            String::new(),
            Some("5m".to_string()),
        ),
        ("up".to_string(), String::new(), None),
    ];
    assert_eq!(got, want);
}

#[test]
fn the_yaml_reader_reads_plain_quoted_and_block_values() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - record: a:b:c\n        expr: |\n          sum(\n            x)\n        labels:\n          k: v\n      - alert: 'A'\n        expr: up == 0\n";
    assert_eq!(yaml_values(yaml, "record"), ["a:b:c"]);
    assert_eq!(yaml_values(yaml, "alert"), ["A"]);
    assert_eq!(yaml_values(yaml, "expr"), ["sum(\nx)", "up == 0"]);
}

// ---------------------------------------------------------------------------------------
// promtool

#[test]
fn prometheus_config_is_valid() {
    let Some(promtool_path) = common::tool("promtool") else {
        return;
    };
    let report = promtool(&promtool_path, &["check", "config", "prometheus.yml"]);
    assert!(
        report.contains("2 rule files found"),
        "prometheus.yml should load both rule files:\n{report}"
    );
}

/// The file_sd job drops the static job's ports, so no worker is scraped twice, and keeps
/// every other worker: checked with `promtool check service-discovery`, which runs the
/// job's discovery and relabelling on the real config.
#[test]
fn the_file_sd_job_does_not_scrape_the_static_targets_again() {
    let Some(promtool_path) = common::tool("promtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config =
        read("prometheus.yml").replace("prometheus/", &format!("{}/prometheus/", root().display()));
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::fs::create_dir(dir.path().join("file_sd")).unwrap();
    let targets = json!([{ "targets": ["127.0.0.1:8001", "127.0.0.1:8004", "127.0.0.1:8005"], "labels": {} }]);
    std::fs::write(dir.path().join("file_sd/workers.json"), targets.to_string()).unwrap();
    let out = Command::new(promtool_path)
        .args([
            "check",
            "service-discovery",
            "--timeout=3s",
            "prometheus.yml",
            "babylon_file_sd",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let kept: BTreeSet<String> = report
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|target| target["labels"]["instance"].as_str().map(String::from))
        .collect();
    assert_eq!(
        kept,
        BTreeSet::from(["127.0.0.1:8005".to_string()]),
        "{report:#}"
    );
}

#[test]
fn rule_files_are_valid_and_fully_read_by_this_test() {
    let Some(promtool_path) = common::tool("promtool") else {
        return;
    };
    let mut args = vec!["check", "rules"];
    args.extend(RULE_FILES);
    promtool(&promtool_path, &args);
    // The YAML reader of this file sees exactly the rules promtool counts, so the name
    // check below misses no expression.
    for file in RULE_FILES {
        let report = promtool(&promtool_path, &["check", "rules", file]);
        let counted: usize = report
            .lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix("SUCCESS: ")?
                    .strip_suffix(" rules found")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no rule count in promtool's report:\n{report}"));
        assert_eq!(
            yaml_values(&read(file), "expr").len(),
            counted,
            "{file}: this test reads a different number of rules than promtool"
        );
    }
}

#[test]
fn rule_unit_tests_pass() {
    let Some(promtool_path) = common::tool("promtool") else {
        return;
    };
    for file in files_in("prometheus/tests", &["yml", "yaml"]) {
        let file = file.to_str().unwrap();
        let report = promtool(&promtool_path, &["test", "rules", file]);
        assert!(report.contains("SUCCESS"), "{file}:\n{report}");
    }
}

/// Every recording rule is evaluated by a unit test, and every alert is tested both
/// firing (`exp_alerts` with labels) and silent (`exp_alerts: []`).
#[test]
fn rule_unit_tests_cover_every_rule() {
    let tests: Vec<String> = files_in("prometheus/tests", &["yml", "yaml"])
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();

    let tested_exprs: BTreeSet<String> = tests
        .iter()
        .flat_map(|text| yaml_values(text, "expr"))
        .flat_map(|expr| selectors(&expr))
        .map(|selector| selector.name)
        .collect();
    for record in yaml_values(&read(RULE_FILES[0]), "record") {
        assert!(
            tested_exprs.contains(&record),
            "recording rule {record} has no promql_expr_test"
        );
    }

    // alert_rule_test items begin with `- eval_time:`; each names its alert and either
    // expects nothing or expects alerts with labels.
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for text in &tests {
        let lines: Vec<&str> = text.lines().collect();
        for (start, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with("- eval_time:") {
                continue;
            }
            let item: Vec<&str> = lines[start + 1..]
                .iter()
                .take_while(|l| {
                    let l = l.trim_start();
                    !(l.starts_with("- eval_time:")
                        || l.starts_with("- name:")
                        || l.starts_with("- expr:"))
                })
                .copied()
                .collect();
            let item = item.join("\n");
            let Some(alert) = yaml_values(&item, "alertname").pop() else {
                continue;
            };
            let case = cases.entry(alert).or_default();
            if item.contains("exp_alerts: []") {
                case.1 = true;
            } else if item.contains("exp_labels:") {
                case.0 = true;
            }
        }
    }
    for alert in yaml_values(&read(RULE_FILES[1]), "alert") {
        assert_eq!(
            cases.get(&alert),
            Some(&(true, true)),
            "alert {alert} needs a firing and a silent alert_rule_test"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Grafana dashboards

fn dashboards() -> Vec<(String, Value)> {
    files_in("dashboards", &["json"])
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
            (name, json)
        })
        .collect()
}

/// Every panel, those nested in collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("a panels array") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

fn exprs(panel: &Value) -> Vec<&str> {
    panel["targets"]
        .as_array()
        .map(|targets| {
            targets
                .iter()
                .filter_map(|target| target["expr"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

fn variable_query(variable: &Value) -> &str {
    variable["query"]
        .as_str()
        .or_else(|| variable["query"]["query"].as_str())
        .unwrap_or_default()
}

#[test]
fn dashboards_are_provisionable_and_filtered_by_job_and_instance() {
    let datasource = json!({ "type": "prometheus", "uid": DATASOURCE_UID });
    let mut uids = BTreeSet::new();
    for (name, dashboard) in dashboards() {
        assert!(
            dashboard.get("__inputs").is_none(),
            "{name}: __inputs needs an import dialog; provisioning cannot fill it"
        );
        let uid = dashboard["uid"].as_str().expect("a uid");
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid} used twice");
        assert_eq!(dashboard["schemaVersion"], 39, "{name}");
        assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));

        let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
            .as_array()
            .expect("templating variables")
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        let ds = variables.get("datasource").expect("a datasource variable");
        assert_eq!(ds["type"], "datasource", "{name}");
        assert_eq!(ds["query"], "prometheus", "{name}");
        let job = variables.get("job").expect("a job variable");
        assert_eq!(job["type"], "query", "{name}");
        assert_eq!(variable_query(job), "label_values(up, job)", "{name}");
        assert!(
            job["current"].to_string().contains("\"babylon\""),
            "{name}: job should default to babylon"
        );
        let instance = variables.get("instance").expect("an instance variable");
        assert_eq!(
            variable_query(instance),
            r#"label_values(up{job=~"$job"}, instance)"#,
            "{name}"
        );
        assert_eq!(instance["multi"], true, "{name}");
        assert_eq!(instance["includeAll"], true, "{name}");
        assert_eq!(instance["allValue"], ".*", "{name}");
        for variable in [job, instance] {
            assert_eq!(variable["datasource"], datasource, "{name}");
        }

        let mut ids = BTreeSet::new();
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or_default();
            let id = panel["id"].as_u64().expect("a numeric panel id");
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
            if panel["type"] == "row" {
                continue;
            }
            let here = format!("{name}, panel {id} \"{title}\"");
            assert!(!title.is_empty(), "{here}: no title");
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{here}: no description"
            );
            for key in ["h", "w", "x", "y"] {
                assert!(panel["gridPos"][key].is_u64(), "{here}: gridPos.{key}");
            }
            assert!(
                panel["fieldConfig"]["defaults"]["unit"].is_string(),
                "{here}: no unit"
            );
            assert_eq!(panel["datasource"], datasource, "{here}");
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{here}: no target");
            for target in targets {
                if let Some(ds) = target.get("datasource") {
                    assert_eq!(ds, &datasource, "{here}: target datasource");
                }
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{here}: empty expr");
                let found = selectors(expr);
                if found.is_empty() && expr.trim_start().starts_with('{') {
                    // A selector by `__name__` alone (the application families, whatever
                    // they are called): filtered like every other.
                    let matchers: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
                    assert!(
                        matchers.contains("__name__")
                            && matchers.contains(r#"job=~"$job""#)
                            && matchers.contains(r#"instance=~"$instance""#),
                        "{here}: {expr} is not filtered by $job and $instance"
                    );
                    continue;
                }
                assert!(!found.is_empty(), "{here}: no metric in {expr}");
                for selector in found {
                    let matchers: String = selector
                        .matchers
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect();
                    assert!(
                        matchers.contains(r#"job=~"$job""#)
                            && matchers.contains(r#"instance=~"$instance""#),
                        "{here}: {} is not filtered by $job and $instance",
                        selector.name
                    );
                    if let Some(range) = selector.range {
                        assert_eq!(
                            range, "$__rate_interval",
                            "{here}: {} should use [$__rate_interval]",
                            selector.name
                        );
                    }
                }
            }
        }
        assert!(!ids.is_empty(), "{name}: no panels");
    }
}

// ---------------------------------------------------------------------------------------
// Metric names against a live exposition

/// Families exposed by in-process services after traffic that touches every family the
/// assets query: HTTP, blocked-reason counters, DB statements and errors and the cache of
/// the default settings, and the Redis and rate-limiter families of a service whose cache
/// and rate limit are in the shared Redis (its error counters are exposed from start-up),
/// and the TLS families of a service whose export port serves HTTPS.
fn exported_names() -> BTreeSet<String> {
    let mut names = families_of(&default_service_scrape());
    names.extend(families_of(&tls_service_scrape()));
    if !common::redis_server::redis_available() {
        return names;
    }
    let prefix = common::redis_server::unique_prefix("assets");
    let _keys = common::redis_server::Keys(prefix.clone());
    let client = common::client(json!({
        "cache": { "backend": "redis" },
        "redis": { "url": common::redis_server::REDIS, "key_prefix": prefix },
        "blocking": { "rate_limit": { "per_second": 1000, "burst": 1000, "backend": "redis" } },
    }));
    let id = common::create_item(&client, "a");
    assert_eq!(
        client.get(format!("/api/items/{id}")).dispatch().status(),
        Status::Ok
    );
    names.extend(families_of(&common::scrape(&client)));
    names
}

/// The exposition of a service whose export port serves TLS (`babylon_export_tls_*`).
fn tls_service_scrape() -> String {
    let dir = tempfile::tempdir().unwrap();
    let ports = common::ports::PortBlock::reserve(1);
    let ca = common::pki::Ca::new("assets CA");
    let server = ca.server(30).write(dir.path(), "server", &ca);
    let client = common::client(json!({ "metrics": { "export": {
        "enabled": true, "port_range": ports.range_setting(), "address": "127.0.0.1",
        "tls": { "cert_file": server.cert, "key_file": server.key },
    }}}));
    common::scrape(&client)
}

/// The exposition of a service with the default settings after traffic of every kind.
fn default_service_scrape() -> String {
    let client = common::client(json!({}));
    assert_eq!(client.get("/api/health").dispatch().status(), Status::Ok);
    let create = || {
        client
            .post("/api/items")
            .header(ContentType::JSON)
            .body(r#"{"name":"a","kind":"book"}"#)
            .dispatch()
    };
    let created = create();
    assert_eq!(created.status(), Status::Created);
    let id = created.into_json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A duplicate name is a unique violation, counted in rocket_db_refusals_total.
    assert_eq!(create().status(), Status::Conflict);
    // A miss, then a hit of the item cache.
    for _ in 0..2 {
        assert_eq!(
            client.get(format!("/api/items/{id}")).dispatch().status(),
            Status::Ok
        );
    }
    assert_eq!(client.get("/nowhere").dispatch().status(), Status::NotFound);
    common::scrape(&client)
}

/// The family names of an exposition, with `_bucket`, `_sum` and `_count` for histograms
/// and summaries.
fn families_of(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            panic!("malformed TYPE line: {line}");
        };
        if matches!(kind, "histogram" | "summary") {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name.to_string());
    }
    names
}

#[test]
fn every_queried_metric_is_exported() {
    let mut known = exported_names();
    for family in [
        "api_requests_total",
        "api_requests_blocked_total",
        "rocket_http_request_duration_seconds",
        "rocket_db_errors_total",
        "rocket_db_query_duration_seconds",
        "rocket_cache_get_hits_total",
        "rocket_redis_commands_total",
        "rocket_redis_errors_total",
        "rocket_redis_command_duration_seconds",
        "api_rate_limit_errors_total",
        "process_resident_memory_bytes",
        "babylon_build_info",
    ] {
        assert!(
            known.contains(family),
            "the exposition lacks {family}: the traffic above no longer reaches it"
        );
    }
    let records = yaml_values(&read(RULE_FILES[0]), "record");
    assert!(!records.is_empty(), "no recording rule found");
    known.extend(records);
    known.extend(PROMETHEUS_SERIES.iter().map(|s| s.to_string()));

    let mut queries: Vec<(String, String)> = Vec::new();
    for file in RULE_FILES {
        for expr in yaml_values(&read(file), "expr") {
            queries.push((file.to_string(), expr));
        }
    }
    for (name, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for expr in exprs(panel) {
                let place = format!("{name}, panel \"{}\"", panel["title"].as_str().unwrap());
                queries.push((place, expr.to_string()));
            }
        }
    }
    assert!(queries.len() > 20, "too few queries found: {queries:?}");

    let mut unknown = Vec::new();
    for (place, expr) in &queries {
        for selector in selectors(expr) {
            if !known.contains(&selector.name) {
                unknown.push(format!("{place}: {}", selector.name));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "queried metrics that babylon does not export (known: {known:?}):\n{}",
        unknown.join("\n")
    );
}

/// Every expression of the dashboards, the recording rules and the alerts.
fn every_expression() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for file in RULE_FILES {
        for expr in yaml_values(&read(file), "expr") {
            all.push((file.to_string(), expr));
        }
    }
    for (name, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for expr in exprs(panel) {
                all.push((format!("{name}: {}", panel["title"]), expr.to_string()));
            }
        }
    }
    all
}

/// A Prometheus that scrapes babylon's protobuf with native histograms on stores each
/// histogram as one native series and none of its `_bucket` series (2.42 keeps no
/// classic copy); one that does not, the classic series only. So wherever an expression
/// reads a histogram's buckets it reads the native series too (`<native> or <classic>`),
/// and works on either shape.
#[test]
fn every_histogram_query_reads_the_native_and_the_classic_shape() {
    let mut histograms_read = 0;
    for (place, expr) in every_expression() {
        let names: BTreeSet<String> = selectors(&expr).into_iter().map(|s| s.name).collect();
        for bucket in names.iter().filter(|name| name.ends_with("_bucket")) {
            histograms_read += 1;
            let native = bucket.trim_end_matches("_bucket");
            assert!(
                names.contains(native) && expr.split_whitespace().any(|word| word == "or"),
                "{place}: `{expr}` reads {bucket} but not {native}, the native shape"
            );
        }
    }
    assert!(
        histograms_read >= 15,
        "only {histograms_read} histogram reads found"
    );
}

/// Grafana draws exemplars (the trace of one recent request per bucket) on time-series
/// panels whose queries ask for them: every one over the families that carry them.
#[test]
fn the_panels_over_families_with_exemplars_show_them() {
    let mut panels_with_exemplars = 0;
    for (name, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            if panel["type"] != "timeseries" {
                continue;
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                let carries_exemplars = selectors(expr).iter().any(|s| {
                    s.name == "rocket_http_request_duration_seconds"
                        || s.name == "api_requests_total"
                });
                if carries_exemplars {
                    panels_with_exemplars += 1;
                    assert_eq!(
                        target["exemplar"], true,
                        "{name}: {}: `{expr}` should ask for exemplars",
                        panel["title"]
                    );
                }
            }
        }
    }
    assert!(panels_with_exemplars >= 3, "{panels_with_exemplars}");
}
