//! Validated setting types. Each one parses from the forms a user writes in Rocket.toml or
//! an environment variable and refuses everything else with a message that says what was
//! expected, so a wrong value can never reach the code that uses it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An inclusive range of TCP ports, `start <= end`, both in `1..=65535`.
///
/// Written as `"8001-8050"`, `[8001, 8050]`, `{ start = 8001, end = 8050 }`, or a single
/// port `8001`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPortRange", into = "String")]
pub struct PortRange {
    start: u16,
    end: u16,
}

/// `metrics.export`'s default range, django-prometheus' documented example: 8001-8050.
impl Default for PortRange {
    fn default() -> Self {
        let (start, end) = crate::settings::ExportSettings::DEFAULT_PORTS;
        PortRange { start, end }
    }
}

impl PortRange {
    /// Builds a range, refusing port 0, ports above 65535 and reversed bounds.
    pub fn new(start: i64, end: i64) -> Result<Self, String> {
        let port = |value: i64| -> Result<u16, String> {
            u16::try_from(value)
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("port {value} is outside 1..=65535"))
        };
        let (start, end) = (port(start)?, port(end)?);
        if start > end {
            return Err(format!(
                "range {start}-{end} is reversed: the first port must not be above the last"
            ));
        }
        Ok(PortRange { start, end })
    }

    /// A range of one port; refuses port 0.
    pub fn single(port: u16) -> Result<Self, String> {
        Self::new(port.into(), port.into())
    }

    /// The first port of the range.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// The last port of the range (inclusive).
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Every port of the range, in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl From<PortRange> for String {
    fn from(range: PortRange) -> String {
        range.to_string()
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let number = |part: &str| {
            part.trim()
                .parse::<i64>()
                .map_err(|_| format!("`{text}` is not a port range (expected e.g. \"8001-8050\")"))
        };
        match text.split_once('-') {
            Some((start, end)) => Self::new(number(start)?, number(end)?),
            None => {
                let port = number(text)?;
                Self::new(port, port)
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPortRange {
    Single(i64),
    Text(String),
    Pair(Vec<i64>),
    Table { start: i64, end: i64 },
}

impl TryFrom<RawPortRange> for PortRange {
    type Error = String;

    fn try_from(raw: RawPortRange) -> Result<Self, String> {
        match raw {
            RawPortRange::Single(port) => Self::new(port, port),
            RawPortRange::Text(text) => text.parse(),
            RawPortRange::Pair(pair) => match pair[..] {
                [start, end] => Self::new(start, end),
                _ => Err(format!(
                    "expected two ports [first, last], found {} values",
                    pair.len()
                )),
            },
            RawPortRange::Table { start, end } => Self::new(start, end),
        }
    }
}

/// A CIDR block such as `10.0.0.0/8` or `::1/128`; a bare address means that one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` lies in the block. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports for IPv4 peers) match IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        // Compare in the block's own family: an IPv4 client (or its IPv4-mapped IPv6
        // spelling) against an IPv6 block is checked as `::ffff:a.b.c.d`, so `10.0.0.0/8`
        // and `::ffff:10.0.0.0/104` agree. This runs on every request: no allocation.
        match (self.0, canonical_ip(ip)) {
            (IpNet::V4(block), IpAddr::V4(v4)) => block.contains(&v4),
            (IpNet::V6(block), IpAddr::V4(v4)) => block.contains(&v4.to_ipv6_mapped()),
            (IpNet::V6(block), IpAddr::V6(v6)) => block.contains(&v6),
            (IpNet::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// Turns `::ffff:a.b.c.d` into `a.b.c.d` so that one allow-list works on every socket.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(ip)));
        }
        Err(format!(
            "`{text}` is not a CIDR block (expected e.g. \"10.0.0.0/8\", \"::1/128\" or an address)"
        ))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A list of CIDR blocks, written as a TOML array or, handy in environment variables, as
/// one comma-separated string (`"127.0.0.1/32,10.0.0.0/8"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StringOrList")]
pub struct CidrList(Vec<Cidr>);

impl CidrList {
    /// Whether any block holds `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// Whether the list has no block.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The blocks, in the order given.
    pub fn blocks(&self) -> &[Cidr] {
        &self.0
    }
}

impl FromIterator<Cidr> for CidrList {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> Self {
        CidrList(iter.into_iter().collect())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    Text(String),
    List(Vec<String>),
}

impl TryFrom<StringOrList> for CidrList {
    type Error = String;

    fn try_from(raw: StringOrList) -> Result<Self, String> {
        let items: Vec<String> = match raw {
            StringOrList::Text(text) => text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(String::from)
                .collect(),
            StringOrList::List(list) => list,
        };
        items.iter().map(|item| item.parse()).collect()
    }
}

/// Where the export listener binds: `""` means every interface, IPv4 and IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum ExportAddress {
    #[default]
    /// `""`: every interface, IPv4 and IPv6.
    EveryInterface,
    /// One address.
    Ip(IpAddr),
}

impl TryFrom<String> for ExportAddress {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(ExportAddress::EveryInterface);
        }
        text.parse().map(ExportAddress::Ip).map_err(|_| {
            format!("`{text}` is not an IP address (use \"\" for every interface, or e.g. \"127.0.0.1\")")
        })
    }
}

impl fmt::Display for ExportAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportAddress::EveryInterface => f.write_str("every interface"),
            ExportAddress::Ip(ip) => ip.fmt(f),
        }
    }
}

/// A URL path for the metrics endpoint: starts with `/`, no query, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct UrlPath(String);

impl UrlPath {
    /// The path, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UrlPath {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let valid = text.starts_with('/')
            && text.len() > 1
            && !text.ends_with('/')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
            && !text.contains("//");
        if valid {
            Ok(UrlPath(text))
        } else {
            Err(format!(
                "`{text}` is not a usable path (expected e.g. \"/metrics\": a leading /, no trailing /, letters, digits and -._~ only)"
            ))
        }
    }
}

/// How many leading bits of an IPv6 address name one client (`1..=128`). An IPv6 client
/// is given at least a /64, so keying on whole addresses would let it rotate through 2^64
/// of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Ipv6Prefix(u8);

impl Ipv6Prefix {
    /// The /64 every IPv6 subnet, and so every IPv6 client, has at least.
    pub const SUBNET: Ipv6Prefix = Ipv6Prefix(64);

    /// The prefix length in bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The first `bits` bits of `address`, the rest zero.
    pub fn of(self, address: std::net::Ipv6Addr) -> std::net::Ipv6Addr {
        let mask = u128::MAX << (128 - u32::from(self.0));
        std::net::Ipv6Addr::from(u128::from(address) & mask)
    }
}

impl TryFrom<i64> for Ipv6Prefix {
    type Error = String;

    fn try_from(bits: i64) -> Result<Self, String> {
        u8::try_from(bits)
            .ok()
            .filter(|bits| (1..=128).contains(bits))
            .map(Ipv6Prefix)
            .ok_or_else(|| {
                format!("{bits} is not an IPv6 prefix length (1 to 128; 64 keys each /64 subnet as one client)")
            })
    }
}

/// A Prometheus metric name prefix: `[a-zA-Z_][a-zA-Z0-9_]*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Namespace(String);

impl Namespace {
    /// The prefix as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Namespace {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let mut bytes = text.bytes();
        let valid = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if valid {
            Ok(Namespace(text))
        } else {
            Err(format!(
                "`{text}` is not a metric name prefix (letters, digits and _, not starting with a digit)"
            ))
        }
    }
}

/// `metrics.native_histograms.bucket_factor`: a number from 2^(2^-8) = 1.00271 (schema 8,
/// the finest resolution Prometheus reads) to 65536 (schema -4, the coarsest).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct BucketFactor(f64);

impl BucketFactor {
    /// The smallest factor a schema has (schema 8's).
    pub const FINEST: f64 = 1.002_711_275_050_202_5;
    /// The largest factor a schema has (schema -4's).
    pub const COARSEST: f64 = 65536.0;

    /// The factor as set.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for BucketFactor {
    type Error = String;

    fn try_from(factor: f64) -> Result<Self, String> {
        if (Self::FINEST..=Self::COARSEST).contains(&factor) {
            Ok(BucketFactor(factor))
        } else {
            Err(format!(
                "{factor} is not a bucket factor Prometheus can use: it must be from {} (the finest resolution) to {} (the coarsest), such as 1.1",
                Self::FINEST,
                Self::COARSEST
            ))
        }
    }
}

/// `metrics.native_histograms.zero_threshold`: a finite number, zero or more.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct ZeroThreshold(f64);

impl ZeroThreshold {
    /// The threshold as set.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for ZeroThreshold {
    /// client_golang's default, 2^-128.
    fn default() -> Self {
        ZeroThreshold(2.938_735_877_055_719e-39)
    }
}

impl TryFrom<f64> for ZeroThreshold {
    type Error = String;

    fn try_from(threshold: f64) -> Result<Self, String> {
        if threshold.is_finite() && threshold >= 0.0 {
            Ok(ZeroThreshold(threshold))
        } else {
            Err(format!(
                "{threshold} is not a zero threshold: it must be a finite number, zero or more"
            ))
        }
    }
}

/// Histogram bucket upper bounds: non-empty, finite, positive, strictly increasing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Vec<f64>")]
pub struct Buckets(Arc<[f64]>);

impl Buckets {
    /// django-prometheus' default latency buckets, in seconds.
    pub fn django_latency() -> Self {
        Buckets(Arc::new([
            0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 25.0, 50.0,
            75.0,
        ]))
    }

    /// `count` bounds from `start`, each `factor` times the one before.
    pub fn exponential(start: f64, factor: f64, count: usize) -> Result<Self, String> {
        let bounds = std::iter::successors(Some(start), |bound| Some(bound * factor));
        Buckets::try_from(bounds.take(count).collect::<Vec<_>>())
    }

    /// The upper bounds, increasing.
    pub fn bounds(&self) -> &[f64] {
        &self.0
    }

    /// The upper bounds as a `Vec`, as the prometheus crate takes them.
    pub fn to_vec(&self) -> Vec<f64> {
        self.0.to_vec()
    }
}

impl Buckets {
    /// The bounds of an application's histogram, as the `prometheus` crate takes them:
    /// finite and strictly increasing, negative ones included; a last `+Inf` is the
    /// implicit last bucket and dropped.
    pub(crate) fn increasing(mut bounds: Vec<f64>) -> Result<Self, String> {
        if bounds.last() == Some(&f64::INFINITY) {
            bounds.pop();
        }
        if bounds.is_empty() {
            return Err("the bucket list is empty".into());
        }
        if let Some(bad) = bounds.iter().find(|b| !b.is_finite()) {
            return Err(format!("bucket bound {bad} is not a finite number"));
        }
        if let Some(pair) = bounds.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(format!(
                "bucket bounds must increase strictly, but {} is followed by {}",
                pair[0], pair[1]
            ));
        }
        Ok(Buckets(bounds.into()))
    }
}

impl TryFrom<Vec<f64>> for Buckets {
    type Error = String;

    fn try_from(bounds: Vec<f64>) -> Result<Self, String> {
        if bounds.is_empty() {
            return Err("the bucket list is empty".into());
        }
        if let Some(bad) = bounds.iter().find(|b| !b.is_finite() || **b <= 0.0) {
            return Err(format!(
                "bucket bound {bad} is not a positive finite number"
            ));
        }
        if let Some(pair) = bounds.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(format!(
                "bucket bounds must increase strictly, but {} is followed by {}",
                pair[0], pair[1]
            ));
        }
        Ok(Buckets(bounds.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_buckets_grow_by_their_factor_or_are_refused() {
        let buckets = Buckets::exponential(64.0, 2.0, 3).unwrap();
        assert_eq!(buckets.bounds(), [64.0, 128.0, 256.0]);
        assert!(Buckets::exponential(1.0, 1.0, 3)
            .unwrap_err()
            .contains("increase strictly"));
        assert!(
            Buckets::exponential(1.0, 2.0, 0).is_err(),
            "no bounds at all"
        );
    }

    #[test]
    fn bucket_factors_and_zero_thresholds_prometheus_cannot_use_are_refused() {
        assert_eq!(BucketFactor::FINEST, 2f64.powf(2f64.powi(-8)));
        for usable in [BucketFactor::FINEST, 1.1, 2.0, BucketFactor::COARSEST] {
            assert_eq!(BucketFactor::try_from(usable).unwrap().get(), usable);
        }
        for unusable in [1.0, 1.001, 0.5, -2.0, 65537.0, f64::NAN, f64::INFINITY] {
            let refusal = BucketFactor::try_from(unusable).unwrap_err();
            assert!(refusal.contains("such as 1.1"), "{refusal}");
        }
        assert_eq!(ZeroThreshold::default().get(), 2f64.powi(-128));
        assert_eq!(ZeroThreshold::try_from(0.0).unwrap().get(), 0.0);
        for unusable in [-1e-9, f64::NAN, f64::INFINITY] {
            assert!(ZeroThreshold::try_from(unusable).is_err());
        }
    }

    #[test]
    fn port_range_forms() {
        assert_eq!(
            "8001-8050".parse::<PortRange>().unwrap().to_string(),
            "8001-8050"
        );
        assert_eq!("9000".parse::<PortRange>().unwrap().ports().count(), 1);
        assert!("9010-9001"
            .parse::<PortRange>()
            .unwrap_err()
            .contains("reversed"));
        assert!("0-10"
            .parse::<PortRange>()
            .unwrap_err()
            .contains("outside 1..=65535"));
        assert!("1-70000"
            .parse::<PortRange>()
            .unwrap_err()
            .contains("70000"));
        assert!("a-b"
            .parse::<PortRange>()
            .unwrap_err()
            .contains("not a port range"));
    }

    #[test]
    fn cidr_forms_and_mapped_addresses() {
        let block: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(block.contains("127.1.2.3".parse().unwrap()));
        assert!(block.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!block.contains("10.0.0.1".parse().unwrap()));
        let host: Cidr = "::1".parse().unwrap();
        assert!(host.contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("not a CIDR block"));
    }

    #[test]
    fn ipv6_prefixes_keep_their_leading_bits() {
        let address: std::net::Ipv6Addr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(Ipv6Prefix::SUBNET.of(address).to_string(), "2001:db8:1:2::");
        let prefix = Ipv6Prefix::try_from(48).unwrap();
        assert_eq!(prefix.of(address).to_string(), "2001:db8:1::");
        assert_eq!(Ipv6Prefix::try_from(128).unwrap().of(address), address);
        assert_eq!(
            Ipv6Prefix::try_from(1).unwrap().of(address).to_string(),
            "::"
        );
        for bad in [0, 129, -1, 300] {
            assert!(Ipv6Prefix::try_from(bad)
                .unwrap_err()
                .contains("not an IPv6 prefix length"));
        }
    }

    #[test]
    fn buckets_must_increase() {
        assert!(Buckets::try_from(vec![0.1, 0.1])
            .unwrap_err()
            .contains("strictly"));
        assert!(Buckets::try_from(vec![]).is_err());
        assert!(Buckets::try_from(vec![-1.0]).is_err());
        assert!(Buckets::try_from(vec![f64::NAN]).is_err());
    }

    #[test]
    fn paths_and_namespaces() {
        assert!(UrlPath::try_from("/metrics".to_string()).is_ok());
        assert!(UrlPath::try_from("metrics".to_string()).is_err());
        assert!(UrlPath::try_from("/a b".to_string()).is_err());
        assert!(Namespace::try_from("shop_1".to_string()).is_ok());
        assert!(Namespace::try_from("1shop".to_string()).is_err());
        assert!(Namespace::try_from(String::new()).is_err());
    }
}
