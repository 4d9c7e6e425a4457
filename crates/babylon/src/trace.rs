//! W3C trace context (<https://www.w3.org/TR/trace-context/>): every request gets a trace
//! id and a span id of its own, continued from a valid incoming `traceparent` when the
//! sender may set one, otherwise minted here.
//!
//! The span id doubles as the request id: one 16-hex-digit value that every answer,
//! error body, exemplar and log line of the request carries.

use std::cell::Cell;
use std::fmt;

/// An id of the trace context: a non-zero number written as fixed-width lower-case hex.
macro_rules! id {
    ($(#[$doc:meta])* $name:ident($raw:ty), $digits:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name($raw);

        impl $name {
            /// A random id: W3C asks for random ids, and zero is no id.
            fn mint() -> Self {
                loop {
                    let id = rand::random::<$raw>();
                    if id != 0 {
                        return $name(id);
                    }
                }
            }

            /// The id as a number (big-endian, as it is written).
            pub fn get(self) -> $raw {
                self.0
            }

            /// The id `raw`, unless it is zero (no id is).
            pub(crate) fn from_raw(raw: $raw) -> Option<Self> {
                (raw != 0).then_some($name(raw))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // By hand: every request line writes two ids, and `{:032x}` costs several
                // times more.
                let mut digits = [0u8; $digits];
                hex_digits(&mut digits, u128::from(self.0));
                f.write_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

id!(
    /// The 16 bytes naming a trace; never all zero.
    TraceId(u128),
    32
);
id!(
    /// The 8 bytes naming a span; never all zero.
    SpanId(u64),
    16
);

/// The trace context of one request: the trace it belongs to, the span babylon opened for
/// it (also its request id), and the span of the caller when the trace was continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    sampled: bool,
}

/// What an incoming `traceparent` carries, once it is known to be valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parent {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
}

impl TraceContext {
    /// The context of a request whose `traceparent` header values are `incoming`:
    /// continued from them when `continue_incoming` and they hold exactly one valid
    /// value, else a new trace. A malformed value is ignored, never refused.
    pub(crate) fn start<'a>(
        mut incoming: impl Iterator<Item = &'a str>,
        continue_incoming: bool,
    ) -> Self {
        let parent = if continue_incoming {
            // Two values are no valid header (the W3C rule): start afresh.
            match (incoming.next(), incoming.next()) {
                (Some(value), None) => parse(value),
                _ => None,
            }
        } else {
            None
        };
        match parent {
            Some(parent) => TraceContext {
                trace_id: parent.trace_id,
                span_id: SpanId::mint(),
                parent: Some(parent.span_id),
                sampled: parent.sampled,
            },
            None => TraceContext {
                trace_id: TraceId::mint(),
                span_id: SpanId::mint(),
                parent: None,
                sampled: true,
            },
        }
    }

    /// The trace this request belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span babylon opened for this request.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The caller's span, when the trace was continued from its `traceparent`.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent
    }

    /// Whether the trace is recorded (the `sampled` flag): a new trace is; a continued
    /// one is when its caller's was. Only sampled requests' spans are exported.
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// A span of this trace opened under this one: a new span id, this span its parent,
    /// the same sampling decision.
    pub(crate) fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: SpanId::mint(),
            parent: Some(self.span_id),
            sampled: self.sampled,
        }
    }

    /// The request id: the span id, written as 16 hex digits.
    pub fn request_id(&self) -> String {
        let mut id = String::with_capacity(16);
        push_hex(&mut id, u128::from(self.span_id.0), 16);
        id
    }

    /// The `traceparent` header naming this request's span, for the answer and for
    /// calls made on the request's behalf.
    pub fn traceparent(&self) -> String {
        // Written by hand: every answer carries one, and `format!` costs ten times more.
        let mut header = String::with_capacity(55);
        header.push_str("00-");
        push_hex(&mut header, self.trace_id.0, 32);
        header.push('-');
        push_hex(&mut header, u128::from(self.span_id.0), 16);
        header.push_str(if self.sampled { "-01" } else { "-00" });
        header
    }
}

thread_local! {
    /// The context of the request whose handler this thread is running, if any.
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// The trace context of the request being handled, in code its handler runs (the
/// handler itself, what it awaits, the database and Redis calls it makes): set while
/// babylon polls a handler of routes passed through [`Babylon::instrument`](crate::Babylon::instrument)
/// (or [`instrument`](crate::instrument)); `None` elsewhere, in tasks the handler spawns,
/// or with `tracing.enabled = false`.
///
/// babylon's database and Redis durations take their exemplars from it; a call made on
/// the request's behalf can carry [`TraceContext::traceparent`]. A handler can also take
/// the context as a request guard (`trace: Option<TraceContext>`).
pub fn current() -> Option<TraceContext> {
    CURRENT.with(Cell::get)
}

/// Makes `trace` the [`current`] one until the returned guard is dropped, then restores
/// the one before.
pub(crate) fn enter(trace: Option<TraceContext>) -> Entered {
    Entered(CURRENT.with(|current| current.replace(trace)))
}

/// Awaits `future` with `trace` [current](current) whenever it is polled, and only then:
/// a guard held across an `.await` would leave it current for whatever else the thread
/// runs meanwhile.
pub(crate) async fn within<F: std::future::Future>(
    trace: Option<TraceContext>,
    future: F,
) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let _current = enter(trace);
        future.as_mut().poll(cx)
    })
    .await
}

/// The error of the [`TraceContext`] request guard when `tracing.enabled` is false:
/// the request has no trace context. Take `Option<TraceContext>` where tracing may be off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tracing.enabled is false, so this request has no trace context; take Option<TraceContext> where tracing may be off")]
pub struct NoTraceContext;

/// Restores the previous [`current`] trace when dropped.
pub(crate) struct Entered(Option<TraceContext>);

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

/// Appends the low `digits` hex digits of `value`, lower case, leading zeros included.
fn push_hex(out: &mut String, value: u128, digits: u32) {
    let mut buffer = [0u8; 32];
    let written = &mut buffer[..digits as usize];
    hex_digits(written, value);
    out.push_str(std::str::from_utf8(written).expect("hex digits are ASCII"));
}

/// Fills `out` with the low `out.len()` hex digits of `value`, lower case, leading zeros
/// included.
fn hex_digits(out: &mut [u8], value: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let last = out.len() - 1;
    for (index, digit) in out.iter_mut().enumerate() {
        *digit = HEX[(value >> ((last - index) * 4)) as usize & 0xf];
    }
}

/// The trace id, parent id and flags of a `traceparent` value, if it is valid: version
/// `00` exactly 55 characters, a later version at least that followed by `-` and more
/// (which is ignored); lower-case hex throughout; neither id all zeros; version `ff`
/// refused.
fn parse(value: &str) -> Option<Parent> {
    let value = value.trim_matches([' ', '\t']);
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = hex(&bytes[0..2])?;
    if version == 0xff || (version == 0 && bytes.len() != 55) {
        return None;
    }
    if version > 0 && bytes.len() > 55 && bytes[55] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id = hex(&bytes[3..35])?;
    let span_id = hex(&bytes[36..52])? as u64;
    let flags = hex(&bytes[53..55])?;
    (trace_id != 0 && span_id != 0).then_some(Parent {
        trace_id: TraceId(trace_id),
        span_id: SpanId(span_id),
        sampled: flags & 1 == 1,
    })
}

/// Lower-case hex digits (at most 32) as a number.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |value, digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(nibble))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn continued(value: &str) -> Option<TraceContext> {
        let context = TraceContext::start(std::iter::once(value), true);
        context.parent.is_some().then_some(context)
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_span_of_our_own() {
        let context = continued(VALID).unwrap();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            context.parent_span_id().unwrap().to_string(),
            "00f067aa0ba902b7"
        );
        assert_ne!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(
            context.traceparent(),
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                context.request_id()
            )
        );
        // Not sampled upstream: not sampled here either.
        let unsampled = continued(&VALID.replace("-01", "-00")).unwrap();
        assert!(unsampled.traceparent().ends_with("-00"));
        // A later version may carry more after a dash.
        assert!(continued(&format!("{}-more", VALID.replacen("00", "01", 1))).is_some());
    }

    #[test]
    fn ids_are_written_as_fixed_width_lower_case_hex() {
        for _ in 0..100 {
            let context = TraceContext::start(std::iter::empty(), false);
            assert_eq!(
                context.traceparent(),
                format!(
                    "00-{:032x}-{:016x}-01",
                    context.trace_id.0, context.span_id.0
                )
            );
            assert_eq!(context.request_id(), format!("{:016x}", context.span_id.0));
        }
        let small = TraceContext {
            trace_id: TraceId(1),
            span_id: SpanId(2),
            parent: None,
            sampled: false,
        };
        assert_eq!(
            small.traceparent(),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
    }

    #[test]
    fn a_traceparent_is_not_continued_when_its_sender_may_not_set_one() {
        let context = TraceContext::start(std::iter::once(VALID), false);
        assert_eq!(context.parent_span_id(), None);
        assert_ne!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn malformed_values_start_a_new_trace() {
        for value in [
            "",
            "00",
            &VALID[..54],
            &format!("{VALID}0"),
            &format!("{VALID}-more"),
            &VALID.replacen("00", "ff", 1),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            &VALID.to_uppercase(),
            &VALID.replace('-', "_"),
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            &format!("01-{}", "a".repeat(10_000)),
            &"0".repeat(10_000),
        ] {
            assert_eq!(continued(value), None, "{value:.80}");
        }
        // Two values are no valid header.
        let twice = TraceContext::start([VALID, VALID].into_iter(), true);
        assert_eq!(twice.parent_span_id(), None);
    }

    proptest! {
        /// Whatever arrives, a request gets a usable context: a `traceparent` that parses
        /// back to its own ids, never a panic.
        #[test]
        fn any_value_gives_a_valid_context(value in prop_oneof![
            "\\PC{0,80}",
            "[0-9a-f-]{50,60}",
            Just(VALID.to_string()),
            proptest::collection::vec(any::<u8>(), 0..100)
                .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        ]) {
            let context = TraceContext::start(std::iter::once(value.as_str()), true);
            let written = context.traceparent();
            let parsed = parse(&written).unwrap();
            prop_assert_eq!(parsed.trace_id, context.trace_id());
            prop_assert_eq!(parsed.span_id, context.span_id());
        }
    }
}
