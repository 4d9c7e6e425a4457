//! Hostile input (issue 7): everything that parses untrusted bytes is fed arbitrary input
//! (property tests), and the real binary is fed oversized and slow requests over raw TCP.
//!
//! - client-address headers: `ClientAddr::resolve` never panics, never invents an address,
//!   and untrusted peers are never believed;
//! - settings: every parser accepts or names the key it refuses, never panics;
//! - bearer tokens: only the exact token in the `Bearer` scheme gets in;
//! - request bodies: every answer is 201/409/413/415/422 with a JSON error, and the item
//!   count only grows by what was created;
//! - the real binary: oversized headers and bodies are refused, slow and idle connections
//!   are cut off. These probes share one worker and run in parallel (about 30 s in all).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use babylon::__internal::ClientAddr;
use babylon::__internal::MetricsAccess;
use babylon::settings::{canonical_ip, Cidr, CidrList, PortRange, Settings};
use figment::providers::Serialized;
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner,
};
use rocket::http::Header;
use rocket::local::blocking::Client;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// 1. Client-address headers
// ---------------------------------------------------------------------------------------

/// `cases` cases; failures are kept in tests/proptest-regressions/ (replayed first).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/hostile_input.txt",
        ))),
        ..ProptestConfig::default()
    }
}

const TRUSTED: [&str; 2] = ["10.0.0.0/8", "fd00::/8"];

fn resolver() -> ClientAddr {
    ClientAddr::new(TRUSTED.iter().map(|c| c.parse::<Cidr>().unwrap()).collect())
}

fn trusted_list() -> CidrList {
    TRUSTED.iter().map(|c| c.parse::<Cidr>().unwrap()).collect()
}

/// Addresses, biased towards the trusted blocks and the IPv4-mapped forms of them.
fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::V4(Ipv4Addr::new(10, a, b, c))),
        any::<[u16; 8]>().prop_map(|s| IpAddr::V6(Ipv6Addr::from(s))),
        any::<[u16; 7]>().prop_map(|[a, b, c, d, e, f, g]| {
            IpAddr::V6(Ipv6Addr::new(0xfd00 | (a & 0xff), b, c, d, e, f, g, 1))
        }),
        any::<[u8; 4]>().prop_map(|o| IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped())),
        any::<[u8; 3]>()
            .prop_map(|[a, b, c]| { IpAddr::V6(Ipv4Addr::new(10, a, b, c).to_ipv6_mapped()) }),
        Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ]
}

/// One `X-Forwarded-For` hop as a proxy might write it.
#[derive(Debug, Clone)]
enum Hop {
    /// Text that names exactly this address (possibly with a port or a zone).
    Good(IpAddr, String),
    /// Text that is not an address.
    Bad(String),
}

impl Hop {
    fn text(&self) -> &str {
        match self {
            Hop::Good(_, text) | Hop::Bad(text) => text,
        }
    }
}

fn whitespace() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(""), Just(" "), Just("  "), Just("\t")]
}

fn good_hop() -> impl Strategy<Value = Hop> {
    (
        arb_ip(),
        0..5u8,
        any::<u16>(),
        any::<u32>(),
        whitespace(),
        whitespace(),
    )
        .prop_map(|(ip, form, port, zone, lead, trail)| {
            let text = match (form, ip) {
                (1, _) => SocketAddr::new(ip, port).to_string(),
                (2, IpAddr::V6(v6)) => {
                    let s = v6.segments();
                    format!(
                        "{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
                        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
                    )
                }
                (3, IpAddr::V6(v6)) => v6.to_string().to_uppercase(),
                // A numeric zone is accepted by std in `[addr%zone]:port`; the zone is dropped.
                (4, IpAddr::V6(v6)) => format!("[{v6}%{zone}]:{port}"),
                _ => ip.to_string(),
            };
            Hop::Good(ip, format!("{lead}{text}{trail}"))
        })
}

fn bad_hop() -> impl Strategy<Value = Hop> {
    let garbage = prop_oneof![
        arb_ip().prop_map(|ip| format!("[{ip}]")),
        arb_ip().prop_map(|ip| format!("{ip}%eth0")),
        arb_ip().prop_map(|ip| format!("{ip}:")),
        arb_ip().prop_map(|ip| format!("{ip}:99999")),
        Just("unknown".to_string()),
        Just("_hidden".to_string()),
        Just(String::new()),
        Just("01.2.3.4".to_string()),
        Just("1.2.3".to_string()),
        Just("[1.2.3.4]:80".to_string()),
        Just("for=192.0.2.60".to_string()),
        "[0-9a-fA-F:.%\\[\\] ]{0,40}",
        "\\PC{0,20}",
    ];
    garbage
        .prop_filter("must not parse", |text| parse_any(text.trim()).is_none())
        .prop_map(Hop::Bad)
}

/// How std reads one hop (the oracle of "an address literally present").
fn parse_any(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Every address that can be read out of the headers, hop by hop.
fn literal_addresses(lines: &[String], real_ip: Option<&str>) -> Vec<IpAddr> {
    lines
        .iter()
        .flat_map(|line| line.split(','))
        .chain(real_ip)
        .filter_map(|hop| parse_any(hop.trim()))
        .map(canonical_ip)
        .collect()
}

/// Header text of any shape: lossy UTF-8 of random bytes, comma storms, address soup,
/// huge lists of valid hops.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        "\\PC{0,200}",
        "[ ,]{0,500}",
        "[0-9a-fA-F:.%\\[\\], \t]{0,300}",
        prop::collection::vec(prop_oneof![good_hop(), bad_hop()], 0..20).prop_map(|hops| hops
            .iter()
            .map(Hop::text)
            .collect::<Vec<_>>()
            .join(",")),
        prop::collection::vec(good_hop(), 1000..3000).prop_map(|hops| hops
            .iter()
            .map(Hop::text)
            .collect::<Vec<_>>()
            .join(", ")),
        (0..20_000usize).prop_map(|n| ",".repeat(n)),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary headers from any peer: no panic; an untrusted peer gets itself; a trusted
    /// peer gets itself or an address that is literally in the headers.
    #[test]
    fn resolve_never_invents_an_address(
        peer in arb_ip(),
        lines in prop::collection::vec(header_text(), 0..4),
        real_ip in prop::option::of(header_text()),
    ) {
        let resolver = resolver();
        let got = resolver.resolve(peer, lines.iter().map(String::as_str), real_ip.as_deref());
        let peer = canonical_ip(peer);
        if trusted_list().contains(peer) {
            let present = literal_addresses(&lines, real_ip.as_deref());
            prop_assert!(
                got == peer || present.contains(&got),
                "resolved {got}, which is neither the peer {peer} nor in the headers {lines:?} / {real_ip:?}"
            );
        } else {
            prop_assert_eq!(got, peer, "an untrusted peer was not taken as the client");
        }
    }

    /// Well-formed forwarding chains (with ports, zones, mixed case, uncompressed IPv6,
    /// whitespace, several header lines): the client is exactly the rightmost hop that is
    /// not a trusted proxy, or the leftmost when every hop is trusted.
    #[test]
    fn resolve_takes_the_rightmost_untrusted_hop(
        peer in arb_ip(),
        lines in prop::collection::vec(prop::collection::vec(good_hop(), 1..6), 0..4),
        real_ip in prop::option::of(prop_oneof![good_hop(), bad_hop()]),
    ) {
        let trusted = trusted_list();
        let texts: Vec<String> = lines
            .iter()
            .map(|hops| hops.iter().map(Hop::text).collect::<Vec<_>>().join(","))
            .collect();
        let got = resolver().resolve(
            peer,
            texts.iter().map(String::as_str),
            real_ip.as_ref().map(Hop::text),
        );
        let peer = canonical_ip(peer);
        let hops: Vec<IpAddr> = lines
            .iter()
            .flatten()
            .map(|hop| match hop {
                Hop::Good(ip, _) => canonical_ip(*ip),
                Hop::Bad(_) => unreachable!(),
            })
            .collect();
        let expected = if !trusted.contains(peer) {
            peer
        } else if hops.is_empty() {
            match &real_ip {
                Some(Hop::Good(ip, _)) => canonical_ip(*ip),
                _ => peer,
            }
        } else {
            hops.iter().rev().copied().find(|hop| !trusted.contains(*hop)).unwrap_or(hops[0])
        };
        prop_assert_eq!(got, expected, "headers {:?}, X-Real-IP {:?}", texts, real_ip);
    }

    /// A hop that does not parse between us and the client: the proxy itself is taken, never
    /// an address beyond the garbage.
    #[test]
    fn resolve_stops_at_garbage_next_to_us(
        client in good_hop(),
        bad in bad_hop(),
        proxy in any::<[u8; 3]>(),
    ) {
        let peer = IpAddr::V4(Ipv4Addr::new(10, proxy[0], proxy[1], proxy[2]));
        let line = format!("{},{}", client.text(), bad.text());
        let got = resolver().resolve(peer, [line.as_str()].into_iter(), Some("198.51.100.1"));
        prop_assert_eq!(got, peer);
    }
}

/// BUG (crates/babylon/src/blocking/client.rs, `ClientAddr::resolve`): garbage that the *client* put at the
/// left of `X-Forwarded-For` makes the whole header "not parse", and the trusted proxy itself
/// becomes the client. nginx (`proxy_add_x_forwarded_for`, as the NixOS module configures
/// it) appends the real client to what the client sent, so a client behind it that sends
/// `X-Forwarded-For: x` is resolved as the proxy: past the deny list and into the proxy's
/// rate-limit bucket. Read right to left, the rightmost untrusted hop is the client and the
/// garbage left of it is irrelevant.
#[test]
fn garbage_left_of_the_client_does_not_turn_the_client_into_the_proxy() {
    let resolver = ClientAddr::new(
        ["127.0.0.1/32".parse::<Cidr>().unwrap()]
            .into_iter()
            .collect(),
    );
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    for line in [
        "x, 198.51.100.7",
        "unknown, 198.51.100.7",
        "[::1], 198.51.100.7",
        ", 198.51.100.7",
    ] {
        let got = resolver.resolve(proxy, [line].into_iter(), Some("198.51.100.7"));
        assert_eq!(
            got.to_string(),
            "198.51.100.7",
            "BUG: X-Forwarded-For `{line}` from the trusted proxy 127.0.0.1 resolved to {got} \
             (the proxy), not to the rightmost untrusted hop 198.51.100.7"
        );
    }
}

/// The same bug end to end: a denied client behind a trusted proxy gets through by sending
/// `X-Forwarded-For: x` (the proxy forwards `x, <client>`).
#[test]
fn denied_client_cannot_pass_the_deny_list_with_forwarded_garbage() {
    let client = common::client(json!({
        "blocking": { "deny": ["198.51.100.0/24"], "trusted_proxies": ["127.0.0.1/32"] }
    }));
    let plain = common::from(client.get("/api/live"), "127.0.0.1")
        .header(Header::new("X-Forwarded-For", "198.51.100.7"))
        .dispatch();
    assert_eq!(
        plain.status().code,
        403,
        "the denied client itself is refused"
    );
    let spoofed = common::from(client.get("/api/live"), "127.0.0.1")
        .header(Header::new("X-Forwarded-For", "x, 198.51.100.7"))
        .dispatch();
    assert_eq!(
        spoofed.status().code,
        403,
        "BUG: the denied client 198.51.100.7 passed the deny list by sending \
         `X-Forwarded-For: x` through the trusted proxy (forwarded as `x, 198.51.100.7`)"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Settings
// ---------------------------------------------------------------------------------------

/// Strings of every kind: printable, arbitrary Unicode, lossy bytes, and near-misses of
/// addresses, ranges, paths and names.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..60)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        "[0-9a-fA-F:./% ,\\-]{0,40}",
        "[/a-zA-Z0-9_.~\\- ]{0,20}",
        "[a-zA-Z0-9_]{0,12}",
        (arb_ip(), any::<u8>()).prop_map(|(ip, prefix)| format!("{ip}/{prefix}")),
        (any::<i64>(), any::<i64>()).prop_map(|(a, b)| format!("{a}-{b}")),
        (0..70_000i64, 0..70_000i64).prop_map(|(a, b)| format!(" {a} - {b} ")),
    ]
}

/// serde_json values of every shape, for type confusion.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        arb_text().prop_map(Value::String),
        prop_oneof![Just("book"), Just("tool"), Just("other"), Just("Dune")]
            .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("kind".to_string()),
                    Just("start".to_string()),
                    Just("end".to_string()),
                    "\\PC{0,8}",
                ],
                inner,
                0..4,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Settings with one key set; `Ok` or an error that names exactly that key.
fn settings_with<T: serde::Serialize>(
    key: &str,
    value: T,
) -> Result<Option<Settings>, TestCaseError> {
    let figment = common::settings(json!({})).merge(Serialized::global(key, value));
    match Settings::from_figment(&figment) {
        Ok(settings) => Ok(Some(settings)),
        Err(error) => {
            let message = error.to_string();
            // A list element is named with its index: `metrics.latency_buckets.0`.
            prop_assert!(
                message.contains(&format!("`{key}`")) || message.contains(&format!("`{key}.")),
                "error for `{}` does not name it: {}",
                key,
                message
            );
            Ok(None)
        }
    }
}

fn port_range_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_text().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        (-5..70_000i64).prop_map(Value::from),
        (-5..70_000i64, -5..70_000i64).prop_map(|(a, b)| json!([a, b])),
        (any::<i64>(), any::<i64>()).prop_map(|(a, b)| json!({ "start": a, "end": b })),
        prop::collection::vec(any::<i64>(), 0..4).prop_map(|v| json!(v)),
        arb_json(),
    ]
}

fn cidr_list_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_text().prop_map(Value::String),
        prop::collection::vec(arb_text(), 0..5).prop_map(|v| json!(v)),
        prop::collection::vec(arb_ip(), 0..5).prop_map(|ips| {
            Value::String(
                ips.iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
        }),
        arb_json(),
    ]
}

fn bucket_value() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        prop::collection::vec(any::<f64>(), 0..8),
        prop::collection::vec(
            prop_oneof![
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(0.0),
                Just(-0.0),
                Just(-1.0),
                Just(f64::MIN_POSITIVE),
                Just(f64::MAX),
                0.0001..100.0f64,
            ],
            0..8,
        ),
        prop::collection::vec(0.0001..100.0f64, 1..8).prop_map(|mut v| {
            v.sort_by(f64::total_cmp);
            v.dedup();
            v
        }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn cidr_parse_accepts_or_explains(text in arb_text()) {
        match text.parse::<Cidr>() {
            Ok(cidr) => {
                let again: Cidr = cidr.to_string().parse().expect("Display parses back");
                prop_assert_eq!(again, cidr);
            }
            Err(message) => prop_assert!(message.contains("not a CIDR block"), "{}", message),
        }
    }

    #[test]
    fn cidr_parse_of_address_and_prefix(ip in arb_ip(), prefix in any::<u8>()) {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let parsed = format!("{ip}/{prefix}").parse::<Cidr>();
        prop_assert_eq!(parsed.is_ok(), prefix <= max, "{}/{}: {:?}", ip, prefix, parsed);
        // IPv4-mapped addresses against IPv6 blocks: see the test after this block.
        if let (Ok(cidr), false) = (parsed, ip.is_ipv6() && canonical_ip(ip).is_ipv4()) {
            prop_assert!(cidr.contains(ip), "{} does not contain {}", cidr, ip);
        }
    }

    #[test]
    fn port_range_parse_accepts_only_ordered_ports(text in arb_text()) {
        if let Ok(range) = text.parse::<PortRange>() {
            prop_assert!(1 <= range.start() && range.start() <= range.end(), "{text:?} -> {range}");
            prop_assert_eq!(range.to_string().parse::<PortRange>(), Ok(range));
        }
    }

    #[test]
    fn port_range_parse_of_two_numbers(a in -10..70_000i64, b in -10..70_000i64) {
        let parsed = format!("{a}-{b}").parse::<PortRange>();
        prop_assert_eq!(parsed.is_ok(), 1 <= a && a <= b && b <= 65_535, "{}-{}: {:?}", a, b, parsed);
    }

    #[test]
    fn settings_metrics_path(value in prop_oneof![arb_text().prop_map(Value::String), arb_json()]) {
        if let Some(settings) = settings_with("metrics.path", &value)? {
            let path = settings.metrics.path.as_str();
            prop_assert!(path.starts_with('/') && !path.ends_with('/') && !path.contains("//"));
            prop_assert!(path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b)));
        }
    }

    #[test]
    fn settings_metrics_namespace(value in prop_oneof![arb_text().prop_map(Value::String), arb_json()]) {
        if let Some(settings) = settings_with("metrics.namespace", &value)? {
            if let Some(namespace) = &settings.metrics.namespace {
                let name = namespace.as_str();
                prop_assert!(!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()));
                prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            }
        }
    }

    #[test]
    fn settings_cidr_lists(
        key in prop_oneof![
            Just("metrics.export.allow"),
            Just("blocking.deny"),
            Just("blocking.trusted_proxies"),
        ],
        value in cidr_list_value(),
    ) {
        if let Some(settings) = settings_with(key, &value)? {
            prop_assert!(!settings.metrics.export.allow.is_empty(), "empty allow-list accepted");
        }
    }

    #[test]
    fn settings_export_address(value in prop_oneof![arb_text().prop_map(Value::String), arb_json()]) {
        settings_with("metrics.export.address", &value)?;
    }

    #[test]
    fn settings_port_range(value in port_range_value()) {
        if let Some(settings) = settings_with("metrics.export.port_range", &value)? {
            let range = settings.metrics.export.ports();
            prop_assert!(1 <= range.start() && range.start() <= range.end(), "{value} -> {range}");
        }
    }

    #[test]
    fn settings_export_port(value in prop_oneof![any::<i64>().prop_map(Value::from), arb_json()]) {
        if let Some(settings) = settings_with("metrics.export.port", &value)? {
            prop_assert!(settings.metrics.export.ports().start() >= 1);
        }
    }

    #[test]
    fn settings_latency_buckets(bounds in bucket_value()) {
        if let Some(settings) = settings_with("metrics.latency_buckets", &bounds)? {
            let accepted = settings.metrics.latency_buckets.to_vec();
            prop_assert!(!accepted.is_empty());
            prop_assert!(accepted.iter().all(|b| b.is_finite() && *b > 0.0), "{accepted:?}");
            prop_assert!(accepted.windows(2).all(|w| w[0] < w[1]), "{accepted:?}");
        }
    }

    #[test]
    fn settings_latency_buckets_of_any_type(value in arb_json()) {
        settings_with("metrics.latency_buckets", &value)?;
    }
}

/// BUG (crates/babylon/src/settings/types.rs, `Cidr::contains`): the address is turned into IPv4 when it is
/// IPv4-mapped (`::ffff:a.b.c.d`), but the block is not, so an IPv6 block never contains
/// any IPv4 client: `::/0` does not contain `::ffff:1.2.3.4`, and a deny-list entry written
/// in the mapped form (`::ffff:198.51.100.0/120`) lets 198.51.100.7 through. (README: "`::/0`
/// allow[s] everyone"; the doc of `contains`: "Whether `ip` lies in the block".)
#[test]
fn ipv6_blocks_that_cover_mapped_addresses_match_ipv4_clients() {
    let missed: Vec<String> = [
        ("::/0", "::ffff:1.2.3.4"),
        ("::ffff:0:0/96", "::ffff:1.2.3.4"),
        ("::ffff:198.51.100.0/120", "::ffff:198.51.100.7"),
    ]
    .iter()
    .filter(|(block, ip)| !block.parse::<Cidr>().unwrap().contains(ip.parse().unwrap()))
    .map(|(block, ip)| format!("`{block}` does not contain {ip}"))
    .collect();
    assert!(missed.is_empty(), "BUG: {}", missed.join("; "));
}

/// The same bug through the deny list: a block written in the IPv4-mapped form blocks nobody.
#[test]
fn deny_list_in_ipv4_mapped_form_blocks_the_ipv4_client() {
    let client = common::client(json!({ "blocking": { "deny": ["::ffff:198.51.100.0/120"] } }));
    // What a dual-stack socket reports for the IPv4 client 198.51.100.7.
    let response = common::from(client.get("/api/live"), "::ffff:198.51.100.7").dispatch();
    assert_eq!(
        response.status().code,
        403,
        "BUG: blocking.deny = [\"::ffff:198.51.100.0/120\"] let the peer ::ffff:198.51.100.7 through"
    );
}

// ---------------------------------------------------------------------------------------
// Bearer token
// ---------------------------------------------------------------------------------------

const TOKEN: &str = "s3cret-Token_1";

/// Whether `access` lets `client` in with `header`, its check run to completion (a bcrypt
/// check runs on the runtime's blocking pool).
fn admits(access: &MetricsAccess, client: Option<IpAddr>, header: &str) -> bool {
    rocket::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(access.check(client, Some(header)))
        .is_ok()
}

fn guarded_access() -> MetricsAccess {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        dir
    });
    let figment = common::settings(json!({
        "metrics": { "export": { "token_file": dir.path().join("token") } }
    }));
    let settings = Settings::from_figment(&figment).expect("token settings");
    MetricsAccess::new(&settings.metrics.export)
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary `Authorization` values never panic and get in only if they carry the token.
    #[test]
    fn bearer_arbitrary_headers(header in prop_oneof![
        arb_text(),
        arb_text().prop_map(|t| format!("Bearer {t}")),
        arb_text().prop_map(|t| format!("Bearer {TOKEN}{t}")),
        arb_text().prop_map(|t| format!("{t} {TOKEN}")),
    ]) {
        let local = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        if admits(&guarded_access(), local, &header) {
            let (scheme, token) = header.trim().split_once(' ').expect("scheme and token");
            prop_assert!(scheme.eq_ignore_ascii_case("bearer"), "{header:?}");
            prop_assert_eq!(token.trim(), TOKEN);
        }
    }

    /// The right token in any spelling of the scheme, with surrounding blanks, gets in; one
    /// character more or less does not.
    #[test]
    fn bearer_scheme_and_token(
        scheme in "[bB][eE][aA][rR][eE][rR]",
        lead in whitespace(),
        gap in " {1,3}",
        trail in whitespace(),
        change in 0..3u8,
    ) {
        let token = match change {
            0 => TOKEN.to_string(),
            1 => format!("{TOKEN}x"),
            _ => TOKEN[1..].to_string(),
        };
        let header = format!("{lead}{scheme}{gap}{token}{trail}");
        let local = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        prop_assert_eq!(admits(&guarded_access(), local, &header), change == 0, "{:?}", header);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Request bodies
// ---------------------------------------------------------------------------------------

const ALLOWED_BODY_STATUSES: [u16; 5] = [201, 409, 413, 415, 422];

fn item_count(client: &Client) -> i64 {
    let response = client.get("/api/items?per_page=1").dispatch();
    assert_eq!(response.status().code, 200);
    response.into_json::<Value>().unwrap()["total"]
        .as_i64()
        .unwrap()
}

/// POSTs `body`; checks the status and the error shape; returns how many items it created.
fn post_body(
    client: &Client,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Value), TestCaseError> {
    let mut request = client.post(path.to_string()).body(body);
    if let Some(content_type) = content_type {
        request = request.header(Header::new("Content-Type", content_type.to_string()));
    }
    let response = request.dispatch();
    let status = response.status().code;
    let text = response.into_string().unwrap_or_default();
    prop_assert!(
        ALLOWED_BODY_STATUSES.contains(&status),
        "{} answered {}: {}",
        path,
        status,
        text
    );
    let json: Value = serde_json::from_str(&text).map_err(|e| {
        TestCaseError::fail(format!("{path} {status}: body is not JSON ({e}): {text}"))
    })?;
    if status >= 400 {
        prop_assert!(
            json["error"]["reason"].is_string(),
            "no error.reason: {}",
            text
        );
        prop_assert_eq!(json["error"]["status"].as_u64(), Some(u64::from(status)));
    }
    Ok((status, json))
}

fn created_by(path: &str, status: u16, json: &Value) -> i64 {
    match (status, path) {
        (201, "/api/items") => 1,
        (201, _) => json["created"].as_i64().expect("created count"),
        _ => 0,
    }
}

#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    Json(Value),
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Bytes(bytes) => bytes.clone(),
            Body::Json(value) => value.to_string().into_bytes(),
        }
    }
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(Some("application/json".to_string())),
        1 => Just(None),
        1 => Just(Some("application/json; charset=utf-8".to_string())),
        1 => Just(Some("text/plain".to_string())),
        1 => Just(Some("application/x-www-form-urlencoded".to_string())),
        1 => Just(Some("application/vnd.api+json".to_string())),
        1 => "[ -~]{0,30}".prop_map(Some),
    ]
}

/// Item names: a small pool (so that names collide: 409), blanks, long and odd Unicode.
fn item_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop_oneof![
            Just("Dune"),
            Just(" Dune "),
            Just("dune"),
            Just("Dune\t"),
            Just("a\u{0}b")
        ]
        .prop_map(|s| Value::String(s.to_string())),
        "\\PC{0,30}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        "[ \t\n]{0,4}".prop_map(Value::String),
        (195..206usize).prop_map(|n| Value::String("é".repeat(n))),
        arb_json(),
    ]
}

fn item() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        4 => prop_oneof![Just("book"), Just("tool"), Just("other")].prop_map(|s| json!(s)),
        1 => arb_json(),
    ];
    (
        prop::option::weighted(0.9, item_name()),
        prop::option::weighted(0.9, kind),
        prop::option::weighted(0.1, arb_json()),
    )
        .prop_map(|(name, kind, extra)| {
            let mut object = serde_json::Map::new();
            if let Some(name) = name {
                object.insert("name".into(), name);
            }
            if let Some(kind) = kind {
                object.insert("kind".into(), kind);
            }
            if let Some(extra) = extra {
                object.insert("extra".into(), extra);
            }
            Value::Object(object)
        })
}

fn body_for(path: &'static str) -> impl Strategy<Value = Body> {
    // Well-formed items, with names that often repeat (409, inside one bulk too).
    let valid = (
        prop_oneof![Just("Dune".to_string()), "[a-z]{1,3}", "\\PC{1,20}"],
        prop_oneof![Just("book"), Just("tool"), Just("other")],
    )
        .prop_map(|(name, kind)| json!({ "name": name, "kind": kind }));
    let (structured, valid) = if path == "/api/items" {
        (item().boxed(), valid.boxed())
    } else {
        (
            prop::collection::vec(item(), 0..6)
                .prop_map(Value::Array)
                .boxed(),
            prop::collection::vec(valid, 1..5)
                .prop_map(Value::Array)
                .boxed(),
        )
    };
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Body::Bytes),
        1 => arb_json().prop_map(Body::Json),
        2 => structured.prop_map(Body::Json),
        2 => valid.prop_map(Body::Json),
    ]
}

fn check_bodies(client: &Client, path: &'static str, cases: u32) {
    let mut runner = TestRunner::new(config(cases));
    let strategy = (content_type(), body_for(path));
    let result = runner.run(&strategy, |(content_type, body)| {
        let before = item_count(client);
        let (status, json) = post_body(client, path, content_type.as_deref(), body.bytes())?;
        let after = item_count(client);
        let created = created_by(path, status, &json);
        prop_assert_eq!(
            after - before,
            created,
            "{} answered {} ({}) but the count went {} -> {}",
            path,
            status,
            json,
            before,
            after
        );
        if let (201, "/api/items", Body::Json(Value::Object(sent))) = (status, path, &body) {
            let name = sent["name"]
                .as_str()
                .expect("a created item had a string name");
            prop_assert_eq!(json["name"].as_str(), Some(name.trim()));
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{path}: {error}");
    }
}

#[test]
fn arbitrary_bodies_get_a_4xx_json_answer_and_create_only_what_they_report() {
    let client = common::client(json!({}));
    check_bodies(&client, "/api/items", 128);
    check_bodies(&client, "/api/items/bulk", 128);

    // Over the 1 MiB json limit, even when it is valid JSON padded with blanks.
    for path in ["/api/items", "/api/items/bulk"] {
        let mut padded = vec![b' '; 1024 * 1024];
        padded.extend_from_slice(br#"{"name":"padded","kind":"book"}"#);
        let (status, json) = post_body(&client, path, Some("application/json"), padded).unwrap();
        assert_eq!(status, 413, "{path}: {json}");
        assert_eq!(json["error"]["reason"], "body_too_large");
    }
    // More than 1000 items: refused before the database is touched.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({ "name": format!("many-{i}"), "kind": "other" }))
        .collect();
    let before = item_count(&client);
    let (status, json) = post_body(
        &client,
        "/api/items/bulk",
        Some("application/json"),
        Value::Array(many).to_string().into_bytes(),
    )
    .unwrap();
    assert_eq!(status, 422, "{json}");
    assert_eq!(item_count(&client), before);
}

/// A name holding U+0000 would be stored by SQLite but makes PostgreSQL fail the statement
/// (`invalid byte sequence for encoding "UTF8": 0x00`): it is a 422 naming `name` on both.
#[test]
fn nul_in_an_item_name_is_refused_the_same_way_on_every_backend() {
    let bodies = [
        (
            "/api/items",
            json!({ "name": "nul\u{0}name", "kind": "book" }),
        ),
        (
            "/api/items/bulk",
            json!([{ "name": "nul\u{0}bulk", "kind": "book" }]),
        ),
    ];
    let answer = |client: &Client| -> Vec<u16> {
        bodies
            .iter()
            .map(|(path, body)| {
                client
                    .post(*path)
                    .header(rocket::http::ContentType::JSON)
                    .body(body.to_string())
                    .dispatch()
                    .status()
                    .code
            })
            .collect()
    };
    let sqlite = answer(&common::client(json!({})));
    let Some(admin) = common::pg::server_url() else {
        return;
    };
    let database = common::pg::TestDatabase::create(&admin);
    let postgres = answer(&common::client(
        json!({ "databases": { "main": { "url": database.url } } }),
    ));
    assert!(
        !postgres.contains(&500),
        "BUG: a name with U+0000 gets {postgres:?} on PostgreSQL (SQLite: {sqlite:?}); expected 422 naming `name`"
    );
    assert_eq!(
        sqlite, postgres,
        "SQLite and PostgreSQL disagree on a name with U+0000"
    );
}

// ---------------------------------------------------------------------------------------
// 3b. Every route and parameter, on SQLite and PostgreSQL
// ---------------------------------------------------------------------------------------

/// What a client can put in one path segment or query value: any bytes, percent-encoded
/// where a URI needs it (NUL, `/`, `?`, `%`, non-ASCII), and near-misses of real values.
fn uri_part() -> impl Strategy<Value = String> {
    let encoded = prop::collection::vec(any::<u8>(), 0..40).prop_map(|bytes| {
        bytes
            .iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    });
    prop_oneof![
        encoded,
        "[a-zA-Z0-9._~-]{0,12}",
        Just("abc%00def".to_string()),
        Just("%00".to_string()),
        Just("..".to_string()),
        (any::<i64>()).prop_map(|n| n.to_string()),
        (any::<u64>()).prop_map(|n| n.to_string()),
        Just("99999999999999999999999".to_string()),
        Just("0190a3c4-0000-7000-8000-00000000000".to_string()),
        Just("0190a3c4-0000-7000-8000-0000000000000".to_string()),
        Just("%C3%A9".repeat(300)),
    ]
}

/// One request: a method, a path built from a route template (or none), a query, a body.
#[derive(Debug, Clone)]
struct ClientRequest {
    method: rocket::http::Method,
    path: String,
    query: Option<String>,
    body: Option<(bool, Vec<u8>)>,
}

/// Requests for every route, with every parameter taking hostile values; `ids` are the
/// items that exist, so that paths also name real ones (in any spelling of their UUID).
fn client_request(ids: Vec<String>) -> impl Strategy<Value = ClientRequest> {
    let method = prop::sample::select(common::METHODS.to_vec());
    let id = prop_oneof![
        3 => uri_part(),
        2 => prop::sample::select(ids.clone()),
        1 => prop::sample::select(ids).prop_map(|id| id.to_uppercase()),
        1 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        1 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).simple().to_string()),
    ];
    let path = prop_oneof![
        4 => id.clone().prop_map(|id| format!("/api/items/{id}")),
        2 => Just("/api/items".to_string()),
        2 => Just("/api/items/bulk".to_string()),
        1 => Just("/api/health".to_string()),
        1 => Just("/api/live".to_string()),
        1 => Just("/api/metrics".to_string()),
        1 => Just("/metrics".to_string()),
        1 => Just("/__babylon/blocked".to_string()),
        1 => (id.clone(), uri_part()).prop_map(|(a, b)| format!("/api/items/{a}/{b}")),
        1 => uri_part().prop_map(|part| format!("/api/{part}")),
        1 => uri_part().prop_map(|part| format!("/{part}")),
    ];
    let key = prop_oneof![
        Just("page".to_string()),
        Just("per_page".to_string()),
        uri_part()
    ];
    let query = prop::option::weighted(
        0.5,
        prop::collection::vec((key, uri_part()), 0..4).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        }),
    );
    let body = prop::option::weighted(
        0.6,
        (
            any::<bool>(),
            prop_oneof![
                body_for("/api/items").prop_map(|body| body.bytes()),
                body_for("/api/items/bulk").prop_map(|body| body.bytes()),
            ],
        ),
    );
    (method, path, query, body).prop_map(|(method, path, query, body)| ClientRequest {
        method,
        path,
        query,
        body,
    })
}

/// The sum of every sample of `family` in an exposition.
fn family_total(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(family) && line[family.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// No request a client can send is answered 5xx, counts a database error or counts an
/// exception: `cases` generated requests against `client`.
fn check_client_requests(client: &Client, vendor: &str, cases: u32) {
    let ids: Vec<String> = (0..8)
        .map(|i| common::create_item(client, &format!("{vendor}-seed-{i}")))
        .collect();
    let families = [
        "rocket_db_errors_total",
        "rocket_http_exceptions_by_type_total",
    ];
    let mut runner = TestRunner::new(config(cases));
    let result = runner.run(&client_request(ids), |request| {
        let before = common::scrape(client);
        let target = match &request.query {
            Some(query) => format!("{}?{query}", request.path),
            None => request.path.clone(),
        };
        let mut local = client.req(request.method, target.clone());
        if let Some((json, bytes)) = &request.body {
            if *json {
                local = local.header(rocket::http::ContentType::JSON);
            }
            local = local.body(bytes);
        }
        let response = local.dispatch();
        let status = response.status().code;
        let text = response.into_string().unwrap_or_default();
        prop_assert!(
            status < 500,
            "{vendor}: {} {target} answered {status}: {text}",
            request.method
        );
        let after = common::scrape(client);
        for family in families {
            prop_assert_eq!(
                family_total(&after, family),
                family_total(&before, family),
                "{}: {} {} ({}) counted {}",
                vendor,
                request.method,
                target,
                status,
                family
            );
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{vendor}: {error}");
    }
}

#[test]
fn no_request_makes_a_5xx_or_a_database_error_on_sqlite() {
    check_client_requests(&common::client(json!({})), "sqlite", 400);
}

#[test]
fn no_request_makes_a_5xx_or_a_database_error_on_postgresql() {
    let Some(admin) = common::pg::server_url() else {
        return;
    };
    let database = common::pg::TestDatabase::create(&admin);
    let client = common::client(json!({ "databases": { "main": { "url": database.url } } }));
    check_client_requests(&client, "postgresql", 400);
}

/// The case an outside test found: a NUL in an item's id, on every method of the route.
#[test]
fn a_nul_in_an_item_id_is_a_404_on_both_databases() {
    let mut clients = vec![("sqlite", common::client(json!({})), None)];
    if let Some(admin) = common::pg::server_url() {
        let database = common::pg::TestDatabase::create(&admin);
        let client = common::client(json!({ "databases": { "main": { "url": database.url } } }));
        clients.push(("postgresql", client, Some(database)));
    }
    for (vendor, client, _database) in &clients {
        for method in [
            rocket::http::Method::Get,
            rocket::http::Method::Put,
            rocket::http::Method::Delete,
        ] {
            let response = client
                .req(method, "/api/items/abc%00def")
                .header(rocket::http::ContentType::JSON)
                .body(r#"{"name":"x","kind":"book"}"#)
                .dispatch();
            assert_eq!(response.status().code, 404, "{vendor} {method}");
            let body: Value = response.into_json().unwrap();
            assert_eq!(body["error"]["reason"], "not_found", "{vendor} {method}");
        }
        let exposition = common::scrape(client);
        assert_eq!(
            family_total(&exposition, "rocket_db_errors_total"),
            0.0,
            "{vendor}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4 and 5. The real binary: oversized and slow requests
// ---------------------------------------------------------------------------------------

/// How a connection ended, measured from its first byte sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// The server closed it (EOF).
    Closed(Duration),
    /// The server reset it (or writing failed).
    Reset(Duration),
    /// Still open when we stopped waiting.
    StillOpen(Duration),
}

impl Ending {
    /// When the server ended the connection, if it did.
    fn cut_after(self) -> Option<Duration> {
        match self {
            Ending::Closed(after) | Ending::Reset(after) => Some(after),
            Ending::StillOpen(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Observed {
    ending: Ending,
    response: Vec<u8>,
}

impl Observed {
    fn status(&self) -> Option<u16> {
        let head = self.response.get(..12)?;
        std::str::from_utf8(head)
            .ok()?
            .strip_prefix("HTTP/1.1 ")?
            .parse()
            .ok()
    }

    fn body_json(&self) -> Option<Value> {
        let text = String::from_utf8_lossy(&self.response);
        // Skip interim answers (100 Continue) to the last header block.
        let (_, body) = text.rsplit_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    fn describe(&self) -> String {
        let head = String::from_utf8_lossy(&self.response);
        let first = head.lines().next().unwrap_or("<nothing>");
        format!("{:?}, first line {first:?}", self.ending)
    }
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(5),
    )
    .expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads until the server ends the connection or `until` passes.
fn watch(
    stream: &mut TcpStream,
    started: Instant,
    until: Instant,
    response: &mut Vec<u8>,
) -> Option<Ending> {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        if now >= until {
            return None;
        }
        stream
            .set_read_timeout(Some((until - now).min(Duration::from_millis(250))))
            .unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return Some(Ending::Closed(started.elapsed())),
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(Ending::Reset(started.elapsed())),
        }
    }
}

/// Sends `payload` (from a second thread, so a server that answers early is seen) and
/// waits up to `bound` for the server to end the connection.
fn send_and_watch(port: u16, payload: Vec<u8>, bound: Duration) -> Observed {
    let mut stream = connect(port);
    let mut writer = stream.try_clone().unwrap();
    writer.set_write_timeout(Some(bound)).unwrap();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&payload);
        writer
    });
    let mut response = Vec::new();
    let ending = watch(&mut stream, started, started + bound, &mut response)
        .unwrap_or(Ending::StillOpen(started.elapsed()));
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    Observed { ending, response }
}

/// Slowloris: sends `bytes` one per second, never finishing, and waits up to `bound`.
fn trickle(port: u16, bytes: &[u8], bound: Duration) -> Observed {
    let mut stream = connect(port);
    let started = Instant::now();
    let until = started + bound;
    let mut response = Vec::new();
    for byte in bytes {
        if Instant::now() >= until {
            break;
        }
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            return Observed {
                ending: Ending::Reset(started.elapsed()),
                response,
            };
        }
        let next = (Instant::now() + Duration::from_secs(1)).min(until);
        if let Some(ending) = watch(&mut stream, started, next, &mut response) {
            return Observed { ending, response };
        }
    }
    let ending = watch(&mut stream, started, until, &mut response)
        .unwrap_or(Ending::StillOpen(started.elapsed()));
    Observed { ending, response }
}

/// `GET /api/live` with timeouts, on a fresh connection.
fn live(port: u16) -> Result<u16, String> {
    let observed = send_and_watch(
        port,
        b"GET /api/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        Duration::from_secs(5),
    );
    observed.status().ok_or_else(|| observed.describe())
}

/// What the hostile probes saw, all against one worker.
#[derive(Debug)]
struct Probes {
    app_port: u16,
    big_header_main: Observed,
    many_headers_main: Observed,
    big_header_export: Observed,
    live_after_headers: Result<u16, String>,
    big_body: Observed,
    truncated_body: Observed,
    slowloris_main: Observed,
    slowloris_export: Observed,
    idle_main: Observed,
    idle_export: Observed,
    live_at_end: Result<u16, String>,
    /// `Some(status and stderr tail)` when the worker exited.
    crashed: Option<String>,
}

/// How long the slow probes wait for the server to hang up.
const SLOW_BOUND: Duration = Duration::from_secs(30);

fn probes() -> &'static Probes {
    static PROBES: OnceLock<Probes> = OnceLock::new();
    PROBES.get_or_init(run_probes)
}

fn run_probes() -> Probes {
    let log_dir = tempfile::tempdir().unwrap();
    let stderr_path = log_dir.path().join("stderr");
    let ports = common::ports::PortBlock::reserve(3);
    let mut command = common::workers::command(&ports);
    command.stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut worker = common::workers::start_command(command);
    let (app_port, export_port) = (worker.app_port, worker.export_port());
    let started = Instant::now();

    let headers = std::thread::spawn(move || {
        let big = |path: &str| {
            let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: ").into_bytes();
            request.extend(std::iter::repeat_n(b'a', 1024 * 1024));
            request.extend_from_slice(b"\r\n\r\n");
            request
        };
        let bound = Duration::from_secs(10);
        let big_header_main = send_and_watch(app_port, big("/api/live"), bound);
        let mut many = b"GET /api/live HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..10_000 {
            many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let many_headers_main = send_and_watch(app_port, many, bound);
        let big_header_export = send_and_watch(export_port, big("/metrics"), bound);
        (
            big_header_main,
            many_headers_main,
            big_header_export,
            live(app_port),
        )
    });
    let big_body = std::thread::spawn(move || {
        let mut body = br#"{"name":""#.to_vec();
        body.extend(std::iter::repeat_n(b'a', 1024 * 1024 + 1024));
        body.extend_from_slice(br#"","kind":"book"}"#);
        let mut request = format!(
            "POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        send_and_watch(app_port, request, Duration::from_secs(10))
    });
    let truncated_body = std::thread::spawn(move || {
        // More than the 14 bytes Rocket 0.5.2 peeks at before routing (it waits for those
        // without a timeout; see README Troubleshooting), fewer than announced.
        let request = b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":\"partial";
        send_and_watch(app_port, request.to_vec(), SLOW_BOUND)
    });
    let slowloris_main = std::thread::spawn(move || {
        trickle(
            app_port,
            b"GET /api/live HTTP/1.1\r\nHost: x\r\n",
            SLOW_BOUND,
        )
    });
    let slowloris_export = std::thread::spawn(move || {
        trickle(
            export_port,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(20),
        )
    });
    let idle_main = std::thread::spawn(move || {
        send_and_watch(
            app_port,
            b"GET /api/live HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            SLOW_BOUND,
        )
    });
    let idle_export = std::thread::spawn(move || {
        send_and_watch(
            export_port,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Duration::from_secs(20),
        )
    });

    let (big_header_main, many_headers_main, big_header_export, live_after_headers) =
        headers.join().unwrap();
    let probes = Probes {
        app_port,
        big_header_main,
        many_headers_main,
        big_header_export,
        live_after_headers,
        big_body: big_body.join().unwrap(),
        truncated_body: truncated_body.join().unwrap(),
        slowloris_main: slowloris_main.join().unwrap(),
        slowloris_export: slowloris_export.join().unwrap(),
        idle_main: idle_main.join().unwrap(),
        idle_export: idle_export.join().unwrap(),
        live_at_end: live(app_port),
        crashed: worker.child.try_wait().unwrap().map(|status| {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!(
                "{status}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        }),
    };
    eprintln!(
        "hostile probes against worker :{} (export :{}) took {:.1?}:\n{}",
        app_port,
        export_port,
        started.elapsed(),
        [
            ("1 MiB header, main port", &probes.big_header_main),
            ("10,000 headers, main port", &probes.many_headers_main),
            ("1 MiB header, export port", &probes.big_header_export),
            ("2 MiB JSON body", &probes.big_body),
            ("Content-Length 100, 16 bytes sent", &probes.truncated_body),
            ("slowloris, main port", &probes.slowloris_main),
            ("slowloris, export port", &probes.slowloris_export),
            ("idle keep-alive, main port", &probes.idle_main),
            ("idle keep-alive, export port", &probes.idle_export),
        ]
        .iter()
        .map(|(what, observed)| format!("  {what}: {}", observed.describe()))
        .collect::<Vec<_>>()
        .join("\n")
    );
    drop(worker);
    probes
}

/// 4a: a 1 MiB header and 10,000 headers are refused at once (431 or 400, or the
/// connection is closed), on both ports; the worker keeps serving.
#[test]
fn oversized_request_headers_are_refused_and_the_worker_survives() {
    let probes = probes();
    for (what, observed) in [
        ("1 MiB header on the main port", &probes.big_header_main),
        ("10,000 headers on the main port", &probes.many_headers_main),
        ("1 MiB header on the export port", &probes.big_header_export),
    ] {
        let cut = observed.ending.cut_after();
        assert!(
            cut.is_some_and(|after| after < Duration::from_secs(5)),
            "{what}: not refused promptly: {}",
            observed.describe()
        );
        assert!(
            observed
                .status()
                .is_none_or(|status| [400, 431].contains(&status)),
            "{what}: {}",
            observed.describe()
        );
    }
    assert_eq!(
        probes.live_after_headers,
        Ok(200),
        "worker :{} after oversized headers",
        probes.app_port
    );
}

/// 4b: a JSON body over `limits.json` (1 MiB) gets 413 with a JSON error.
#[test]
fn json_body_over_the_limit_gets_413_json() {
    let observed = &probes().big_body;
    assert_eq!(observed.status(), Some(413), "{}", observed.describe());
    let json = observed.body_json().expect("a JSON body");
    assert_eq!(json["error"]["reason"], "body_too_large", "{json}");
}

/// 4c: a body shorter than its Content-Length (16 bytes of 100), then silence: the server
/// must hang up.
/// Rocket 0.5.2 has no read timeout of its own; JsonBody gives the body 10 s, then answers
/// 408 and the connection is closed.
#[test]
fn truncated_body_then_silence_is_cut_off() {
    let observed = &probes().truncated_body;
    assert!(
        observed.ending.cut_after().is_some(),
        "POST /api/items with Content-Length: 100 and 16 bytes sent is still open after {SLOW_BOUND:?}: {}",
        observed.describe()
    );
}

/// 5a: slowloris on the main port (one byte a second, headers never finished).
/// KNOWN GAP: Rocket 0.5.2 builds its hyper connection with `header_read_timeout(None)` and
/// no timer and offers no setting or custom listener to change that, so the main port needs
/// a reverse proxy with header timeouts in front (the NixOS module's nginx). Kept, ignored,
/// so that a Rocket upgrade can be checked with `cargo test -- --ignored`.
#[test]
#[ignore = "Rocket 0.5.2 cannot time out slow headers on the main port; see README Troubleshooting"]
fn slowloris_on_the_main_port_is_cut_off() {
    let observed = &probes().slowloris_main;
    assert!(
        observed.ending.cut_after().is_some(),
        "BUG: a client sending its headers one byte a second is still connected after {SLOW_BOUND:?}: {}",
        observed.describe()
    );
}

/// 5b: slowloris on the export port is cut off by hyper's 10 s header read timeout.
#[test]
fn slowloris_on_the_export_port_is_cut_off_by_the_header_read_timeout() {
    let observed = &probes().slowloris_export;
    let after = observed.ending.cut_after();
    assert!(
        after.is_some_and(|t| t >= Duration::from_secs(8) && t <= Duration::from_secs(15)),
        "expected a hang-up after about 10 s: {}",
        observed.describe()
    );
}

/// 5c: an idle keep-alive connection on the main port is closed after `keep_alive` (5 s).
/// KNOWN GAP: in Rocket 0.5.2 (hyper 1) `keep_alive` only switches HTTP/1 keep-alive on or
/// off; no idle timeout is applied. As above, a reverse proxy closes idle clients.
#[test]
#[ignore = "Rocket 0.5.2 has no idle timeout on the main port; see README Troubleshooting"]
fn idle_keep_alive_on_the_main_port_is_closed() {
    let observed = &probes().idle_main;
    assert_eq!(observed.status(), Some(200), "{}", observed.describe());
    let after = observed.ending.cut_after();
    assert!(
        after.is_some_and(|t| t <= Duration::from_secs(10)),
        "BUG: an idle keep-alive connection is not closed within 10 s (keep_alive = 5): {}",
        observed.describe()
    );
}

/// The export listener applies its header read timeout to the wait for the next request.
#[test]
fn idle_keep_alive_on_the_export_port_is_closed() {
    let observed = &probes().idle_export;
    assert_eq!(observed.status(), Some(200), "{}", observed.describe());
    let after = observed.ending.cut_after();
    assert!(
        after.is_some_and(|t| t <= Duration::from_secs(15)),
        "{}",
        observed.describe()
    );
}

/// After everything above, the worker is alive and still answers.
#[test]
fn the_worker_survives_every_probe() {
    let probes = probes();
    assert_eq!(probes.crashed, None, "the worker exited");
    assert_eq!(probes.live_at_end, Ok(200));
}
