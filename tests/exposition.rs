//! The exposition formats: every format shows the same series with the same values, a
//! strict OpenMetrics parser (Python's `prometheus_client`) reads the whole body, both
//! ports answer in the format asked for with its exact `Content-Type`, and a real
//! Prometheus scrapes each format from the same worker.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use babylon::metrics::{Format, Metrics};
use common::ports::PortBlock;
use common::{client_with_routes, from, python_with_prometheus_client, tool};
use rocket::http::{ContentType, Header, Status};
use rocket::State;
use serde_json::{json, Value};

/// Families whose names and label values need escaping and a counter the by-name API
/// lets lack `_total`.
#[rocket::get("/odd")]
fn odd_families(metrics: &State<Metrics>) -> &'static str {
    let custom = metrics.custom();
    custom
        .counter("app_hits", "Hits, named without _total.", &["kind"])
        .unwrap()
        .with_label_values(&["a"])
        .inc();
    custom
        .gauge(
            "app_temperature",
            "A \"quoted\" \\ help\nover lines.",
            &["room"],
        )
        .unwrap()
        .with_label_values(&["back\\slash \"quote\"\nline"])
        .set(-1.5);
    let histogram = custom
        .histogram("app_size_bytes", "Sizes.", &["kind"], &[1.0, 10.0])
        .unwrap();
    for value in [0.5, 5.0, 50.0] {
        histogram.with_label_values(&["b"]).observe(value);
    }
    "ok"
}

#[rocket::get("/panic")]
fn panics() -> &'static str {
    panic!("deliberate test panic")
}

/// A service on which every kind of family has series: requests good and bad, a panic,
/// a blocked client, a write, custom families.
fn busy_service(overrides: Value) -> common::TestClient {
    let client = client_with_routes(
        overrides,
        babylon::instrument(rocket::routes![odd_families, panics]),
    );
    client.get("/api/health").dispatch();
    client.get("/nowhere").dispatch();
    client.get("/test/odd").dispatch();
    client.get("/test/panic").dispatch();
    from(client.get("/api/health"), "192.0.2.1").dispatch();
    let created = client
        .post("/api/items")
        .header(ContentType::JSON)
        .body(r#"{"name":"a","kind":"book"}"#)
        .dispatch()
        .status();
    assert_eq!(created, Status::Created);
    client
}

/// What Python's `prometheus_client` reads from an exposition: every sample as
/// `{family, type, name, labels, value}`. `openmetrics` uses the strict OpenMetrics
/// parser, `text` the text 0.0.4 parser.
const PARSE: &str = r##"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as text
parse = openmetrics if sys.argv[1] == "openmetrics" else text
exposition = sys.stdin.read()
# The text parser appends _total to the samples of a counter that lacks it; Prometheus
# does not, so the names are taken as the exposition wrote them.
written = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()
           if line and not line.startswith("#")}
samples = []
for family in parse(exposition):
    for sample in family.samples:
        name = sample.name
        if name not in written and name.endswith("_total"):
            name = name[:-len("_total")]
        exemplar = None
        if sample.exemplar is not None:
            exemplar = {"labels": sample.exemplar.labels, "value": repr(float(sample.exemplar.value))}
        samples.append({"family": family.name, "type": family.type, "unit": family.unit,
                        "name": name, "labels": sample.labels,
                        "value": repr(float(sample.value)), "exemplar": exemplar})
print(json.dumps(samples))
"##;

/// The samples of `exposition` as Python's parser for `format` reads them; panics with
/// the parser's complaint if it refuses the body.
fn python_parse(python: &std::path::Path, format: &str, exposition: &[u8]) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(python)
        .args(["-c", PARSE, format])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(exposition).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client's {format} parser refused the exposition:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(exposition)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Families read live at each render, which may move between two renders with no
/// request in between: the process' own figures, and the pool's connections (one goes
/// back to the pool when the task that used it gets to it).
const READ_LIVE: [&str; 2] = ["process_", "rocket_db_pool_connections"];

/// A text and an OpenMetrics render of one state of the registry. The service goes on
/// working after its requests are answered (the pool opens connections, the write probe
/// runs), so an OpenMetrics render is taken between two text renders until those agree:
/// counters and histograms only grow, so what both text renders hold, the one between
/// them held too. The `READ_LIVE` families, which move all the time, are not compared.
fn renders_of_one_state(metrics: &Metrics) -> (Vec<u8>, Vec<u8>) {
    let settled = |text: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(text)
            .lines()
            .filter(|line| !READ_LIVE.iter().any(|live| line.starts_with(live)))
            .map(str::to_string)
            .collect()
    };
    for _ in 0..100 {
        let before = metrics.render_as(Format::Text);
        let openmetrics = metrics.render_as(Format::OpenMetrics);
        let after = metrics.render_as(Format::Text);
        if settled(&before) == settled(&after) {
            return (after, openmetrics);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the registry kept changing for 10 s after the last request");
}

/// `name{labels}` → value, for the samples that do not move on their own between two
/// renders.
fn values(samples: &[Value]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|sample| {
            let name = sample["name"].as_str().unwrap();
            !READ_LIVE.iter().any(|live| name.starts_with(live))
        })
        .map(|sample| {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(sample["labels"].clone()).unwrap();
            let key = format!("{}{labels:?}", sample["name"].as_str().unwrap());
            (key, sample["value"].as_str().unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn openmetrics_is_read_by_a_strict_parser_with_the_series_and_values_of_text() {
    let Some(python) = python_with_prometheus_client() else {
        return;
    };
    let client = busy_service(json!({ "blocking": { "deny": ["192.0.2.0/24"] } }));
    let metrics = client.rocket().state::<Metrics>().unwrap();
    let (text, openmetrics) = renders_of_one_state(metrics);
    assert!(openmetrics.ends_with(b"\n# EOF\n"));

    let text_samples = python_parse(&python, "text", &text);
    let openmetrics_samples = python_parse(&python, "openmetrics", &openmetrics);
    // OpenMetrics adds when each counter and histogram series began: a moment of this test.
    let (created, openmetrics_samples): (Vec<_>, Vec<_>) = openmetrics_samples
        .into_iter()
        .partition(|sample| sample["name"].as_str().unwrap().ends_with("_created"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for sample in &created {
        let at: f64 = sample["value"].as_str().unwrap().parse().unwrap();
        assert!(now - 600.0 < at && at <= now, "{sample}");
        assert!(
            ["counter", "histogram"].contains(&sample["type"].as_str().unwrap()),
            "{sample}"
        );
    }
    assert!(created
        .iter()
        .any(|sample| sample["name"] == "api_requests_created"));
    assert!(created
        .iter()
        .any(|sample| sample["name"] == "rocket_http_request_duration_seconds_created"));
    let (text_values, openmetrics_values) = (values(&text_samples), values(&openmetrics_samples));
    assert!(text_values.len() > 100, "{text_values:#?}");
    let only_text: Vec<_> = text_values
        .keys()
        .filter(|key| !openmetrics_values.contains_key(*key))
        .collect();
    let only_openmetrics: Vec<_> = openmetrics_values
        .keys()
        .filter(|key| !text_values.contains_key(*key))
        .collect();
    assert!(
        only_text.is_empty() && only_openmetrics.is_empty(),
        "only in text: {only_text:#?}\nonly in OpenMetrics: {only_openmetrics:#?}"
    );
    for (series, value) in &text_values {
        let other = openmetrics_values[series];
        assert!(
            value == &other || (value.is_nan() && other.is_nan()),
            "{series}: {value} in text, {other} in OpenMetrics"
        );
    }

    // What OpenMetrics says of the families that differ from text.
    let family_of = |name: &str| {
        openmetrics_samples
            .iter()
            .find(|sample| sample["name"] == name)
            .unwrap_or_else(|| panic!("no sample {name}"))
    };
    let requests = family_of("api_requests_total");
    assert_eq!(
        (requests["family"].as_str(), requests["type"].as_str()),
        (Some("api_requests"), Some("counter"))
    );
    let hits = family_of("app_hits");
    assert_eq!(
        (hits["family"].as_str(), hits["type"].as_str()),
        (Some("app_hits"), Some("unknown"))
    );
    let sizes = family_of("app_size_bytes_bucket");
    assert_eq!(
        (sizes["type"].as_str(), sizes["unit"].as_str()),
        (Some("histogram"), Some("bytes"))
    );
    let temperature = family_of("app_temperature");
    assert_eq!(
        temperature["labels"]["room"], "back\\slash \"quote\"\nline",
        "label values are escaped and read back"
    );
}

/// The format a response says it is in, and whether it varies with `Accept`.
fn content_type_and_vary(headers: &rocket::http::HeaderMap<'_>) -> (String, Option<String>) {
    (
        headers.get_one("Content-Type").unwrap().to_string(),
        headers.get_one("Vary").map(str::to_string),
    )
}

/// Accept headers and queries, and the format each must get.
fn negotiation_cases() -> Vec<(Option<&'static str>, &'static str, Format)> {
    let prometheus_native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    vec![
        (None, "", Format::Text),
        (Some("*/*"), "", Format::Text),
        (Some("application/json"), "", Format::Text),
        (Some(prometheus), "", Format::OpenMetrics),
        (Some(prometheus_native), "", Format::Protobuf),
        (Some(prometheus_native), "?format=text", Format::Text),
        (
            Some(prometheus_native),
            "?format=openmetrics",
            Format::OpenMetrics,
        ),
        (None, "?format=protobuf", Format::Protobuf),
        (Some(prometheus), "?format=nonsense", Format::Text),
    ]
}

/// Checks a body is in `format`: text parses as samples, OpenMetrics ends in `# EOF`,
/// protobuf is length-delimited messages that name the request families.
fn assert_body_in(format: Format, body: &[u8]) {
    let utf8 = String::from_utf8_lossy(body);
    match format {
        Format::Text => {
            assert!(utf8.contains("# TYPE api_requests_total counter\n"));
            assert!(!utf8.contains("# EOF"));
        }
        Format::OpenMetrics => {
            assert!(utf8.contains("# TYPE api_requests counter\n"));
            assert!(utf8.ends_with("# EOF\n"));
        }
        Format::Protobuf => {
            // The first message: its varint length, then field 1 (name) as bytes.
            let (mut length, mut read) = (0usize, 0);
            while body[read] & 0x80 != 0 {
                length |= usize::from(body[read] & 0x7f) << (7 * read);
                read += 1;
            }
            length |= usize::from(body[read]) << (7 * read);
            assert!(length < body.len() && body[read + 1] == 0x0a, "{body:?}");
            assert!(utf8.contains("api_requests_total") && !utf8.contains("# TYPE"));
        }
    }
}

#[test]
fn both_ports_answer_in_the_negotiated_format_with_its_content_type() {
    let Some(curl) = tool("curl") else {
        return;
    };
    let ports = PortBlock::reserve(1);
    let client = busy_service(json!({ "metrics": { "export": {
        "enabled": true, "port_range": ports.range_setting(), "address": "127.0.0.1" } } }));
    for (accept, query, format) in negotiation_cases() {
        let context = format!("Accept {accept:?}, query {query:?}");
        // The main port.
        let mut request = from(client.get(format!("/metrics{query}")), "127.0.0.1");
        if let Some(accept) = accept {
            request = request.header(Header::new("Accept", accept));
        }
        let response = request.dispatch();
        assert_eq!(response.status(), Status::Ok, "{context}");
        let (content_type, vary) = content_type_and_vary(response.headers());
        assert_eq!(content_type, format.content_type(), "{context}");
        assert_eq!(vary.as_deref(), Some("Accept"), "{context}");
        assert_body_in(format, &response.into_bytes().unwrap());

        // The export port, through curl.
        let url = format!("http://127.0.0.1:{}/metrics{query}", ports.first());
        let dir = tempfile::tempdir().unwrap();
        let (headers, body) = (dir.path().join("headers"), dir.path().join("body"));
        let mut curl = Command::new(&curl);
        curl.args(["-sf", "-D"]).arg(&headers).arg("-o").arg(&body);
        if let Some(accept) = accept {
            curl.args(["-H", &format!("Accept: {accept}")]);
        }
        assert!(curl.arg(&url).status().unwrap().success(), "{context}");
        let headers = std::fs::read_to_string(&headers)
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            headers.contains(&format!(
                "\r\ncontent-type: {}\r\n",
                format.content_type().to_ascii_lowercase()
            )),
            "{context}: {headers}"
        );
        assert!(
            headers.contains("\r\nvary: accept\r\n"),
            "{context}: {headers}"
        );
        assert_body_in(format, &std::fs::read(&body).unwrap());
    }
}

/// Histograms babylon records native buckets for; Prometheus stores each as one series
/// when it scrapes protobuf with native histograms on.
const NATIVE_HISTOGRAMS: [&str; 5] = [
    "rocket_http_request_duration_seconds",
    "rocket_http_request_body_bytes",
    "rocket_http_response_body_bytes",
    "rocket_db_query_duration_seconds",
    // An application's histogram (by name) records native buckets as babylon's own do.
    "app_size_bytes",
];

/// The three formats from the same worker, as Prometheus 2.42 stores them with exemplars
/// and native histograms on: every target up; text and OpenMetrics hold the same series
/// (OpenMetrics' `_created` lines aside, which Prometheus 2.x stores as series too);
/// protobuf the same names, but each native histogram as one series where the others
/// have its `_bucket`, `_sum` and `_count`; and a quantile of the native request
/// durations has a value.
#[test]
fn prometheus_scrapes_every_format_from_the_same_worker() {
    use common::prometheus::{Place, Prometheus};
    if tool("prometheus").is_none() {
        return;
    }
    let ports = PortBlock::reserve(1);
    let client = busy_service(json!({ "metrics": { "export": {
        "enabled": true, "port_range": ports.range_setting(), "address": "127.0.0.1" } } }));
    let job = |format: Format| {
        format!(
            "  - job_name: {format}\n    params:\n      format: [{format}]\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            ports.first()
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}{}",
        job(Format::Text),
        job(Format::OpenMetrics),
        job(Format::Protobuf)
    );
    let prometheus = Prometheus::start(
        &config,
        Place::Loopback,
        &["--enable-feature=exemplar-storage,native-histograms"],
    );
    for target in prometheus.scraped_targets(3, &config) {
        assert_eq!(target["health"], "up", "{target:#}");
    }
    // Requests after the first scrapes, so that rates over the last minute are not zero.
    for _ in 0..20 {
        assert_eq!(client.get("/api/health").dispatch().status(), Status::Ok);
    }
    let names = |job: Format| -> std::collections::BTreeSet<String> {
        prometheus
            .query(&format!(r#"group by (__name__) ({{job="{job}"}})"#))
            .iter()
            .map(|sample| sample["metric"]["__name__"].as_str().unwrap().to_string())
            .collect()
    };
    // Prometheus 2.x stores OpenMetrics' `_created` lines as series of their own.
    let without_created = |names: std::collections::BTreeSet<String>| {
        names
            .into_iter()
            .filter(|name| !name.ends_with("_created"))
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(names(Format::OpenMetrics).contains("api_requests_created"));
    let native_count =
        r#"sum(histogram_count(rocket_http_request_duration_seconds{job="protobuf"}))"#;
    // What the protobuf job holds, given what the text job holds.
    let expected_protobuf = |text: &std::collections::BTreeSet<String>| {
        let mut expected = text.clone();
        for histogram in NATIVE_HISTOGRAMS {
            for suffix in ["_bucket", "_sum", "_count"] {
                expected.remove(&format!("{histogram}{suffix}"));
            }
            expected.insert(histogram.to_string());
        }
        expected
    };
    // Each job scrapes at its own moment: wait until all three have seen the same worker.
    let agree = common::wait_for(std::time::Duration::from_secs(30), || {
        let text = names(Format::Text);
        prometheus
            .query(native_count)
            .first()
            .is_some_and(|sample| common::prometheus::value(sample) >= 25.0)
            && NATIVE_HISTOGRAMS
                .iter()
                .all(|histogram| text.contains(&format!("{histogram}_bucket")))
            && text == without_created(names(Format::OpenMetrics))
            && names(Format::Protobuf) == expected_protobuf(&text)
    });
    assert!(
        agree,
        "text: {:?}\nopenmetrics: {:?}\nprotobuf: {:?}\n{native_count}: {:?}\n{}",
        names(Format::Text),
        names(Format::OpenMetrics),
        names(Format::Protobuf),
        prometheus.query(native_count),
        prometheus.log()
    );

    let p99 = prometheus.query(
        r#"histogram_quantile(0.99, sum(rate(rocket_http_request_duration_seconds{job="protobuf"}[1m])))"#,
    );
    let p99 = common::prometheus::value(&p99[0]);
    assert!(
        p99.is_finite() && p99 > 0.0,
        "p99 from native buckets: {p99}"
    );
}

/// `metrics.namespace` names every family alike in every format: the families babylon
/// collects in the full model get the prefix the registry gives its own.
#[test]
fn a_namespace_prefixes_every_family_in_every_format() {
    let client = busy_service(json!({ "metrics": { "namespace": "shop" } }));
    let metrics = client.rocket().state::<Metrics>().unwrap();
    for format in Format::ALL {
        let exposition = String::from_utf8_lossy(&metrics.render_as(format)).into_owned();
        for family in [
            "api_requests_total",
            "rocket_http_request_duration_seconds",
            "rocket_db_query_duration_seconds",
            "babylon_build_info",
        ] {
            assert!(
                exposition.contains(&format!("shop_{family}")),
                "{format}: no shop_{family}"
            );
        }
        if format != Format::Protobuf {
            let unprefixed = exposition
                .lines()
                .filter(|line| !line.starts_with('#') && !line.starts_with("shop_"))
                .collect::<Vec<_>>();
            assert!(unprefixed.is_empty(), "{format}: {unprefixed:?}");
        }
    }
}
