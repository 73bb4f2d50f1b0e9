//! The access log, the request id and the request latency histogram.
//!
//! Every request the gateway answers gives one event at `info` with target
//! `bearer_guard::access` (filter it with `bearer_guard::access=info`), with the
//! fields `request_id`, `peer`, `method`, `path` (as received, no query: a query
//! may carry secrets), `route` (the matched `[[route]]`'s `path` as configured),
//! `status`, `outcome` (the `bearer_guard_gateway_requests_total` label), `reason`
//! (what failed: a short stable code such as `expired` or `missing_token`, never the token), `sub`
//! and `client_id` (of a verified token) and `latency_us` (until the response
//! headers were ready). Never a header value, a token or a query.
//!
//! The request id is a random 128-bit hex value made per request, set on the
//! request the upstream receives and on the response as `x-request-id`. A
//! client's own `x-request-id` is kept only with `[forward] trust_forwarded`
//! (the peer is a proxy that set it), and only when it is a short printable
//! token; otherwise it is replaced, so a client cannot forge log correlation.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`, forwarded and returned.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-sent request id kept from a trusted proxy.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The histogram of request latency per outcome (seconds, until the response
/// headers were ready); its buckets are [`LATENCY_BUCKETS`].
pub(crate) const REQUEST_DURATION: &str = "bearer_guard_request_duration_seconds";

/// Buckets of `bearer_guard_request_duration_seconds`: from 100 µs (a cached
/// token, a local upstream) to 30 s (the default upstream timeout).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The request id of a request: the trusted proxy's, or a fresh one.
pub(crate) fn request_id(headers: &HeaderMap, trust_forwarded: bool) -> HeaderValue {
    if trust_forwarded {
        let mut sent = headers.get_all(&X_REQUEST_ID).iter();
        // Exactly one, well-formed: two copies would leave which one counts open.
        if let (Some(value), None) = (sent.next(), sent.next())
            && acceptable(value)
        {
            return value.clone();
        }
    }
    fresh_request_id()
}

/// Whether a client-sent request id is one the logs and the upstream can take as
/// is: 1 to 128 characters of letters, digits and `-_.:/+=@`.
fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

/// A 128-bit id as 32 lowercase hex digits, unique within the process: 64 bits
/// drawn at random once per process, then a per-request counter through a
/// bijection of `u64` (so ids never repeat before 2^64 requests, and do not
/// read as a count). An id names a request in the logs; it is no secret, and
/// costs no random-number generator call per request.
pub(crate) fn fresh_request_id() -> HeaderValue {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<[u64; 2]> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let [process, start] = *SEED.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            // No system randomness: the time still tells processes apart.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = nanos.to_be_bytes();
        }
        let (a, b) = bytes.split_at(8);
        let word = |half: &[u8]| u64::from_be_bytes(half.try_into().unwrap_or_default());
        [word(a), word(b)]
    });
    let count = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_add(start);
    // Multiplying by an odd constant and xor-shifting are both invertible.
    let mut scrambled = count.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    scrambled ^= scrambled >> 29;
    let value = (u128::from(process) << 64) | u128::from(scrambled);
    let mut hex = [0u8; 32];
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = DIGITS[((value >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// What the access log line says about how a request was decided, carried in
/// the response's extensions from where it is known to where the line is written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Note {
    pub outcome: &'static str,
    pub reason: Option<&'static str>,
    pub route: Option<Arc<str>>,
    pub sub: Option<String>,
    pub client_id: Option<String>,
}

/// Writes the access log line and records the latency.
pub(crate) struct Line<'a> {
    pub request_id: &'a HeaderValue,
    pub peer: std::net::SocketAddr,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub status: u16,
    pub note: &'a Note,
    pub latency: Duration,
}

impl Line<'_> {
    pub(crate) fn emit(&self) {
        let note = self.note;
        static FORWARDED: crate::metrics::Hot<metrics::Histogram> = crate::metrics::Hot::new();
        crate::metrics::with_handle(
            (note.outcome == "forwarded").then_some(&FORWARDED),
            || metrics::histogram!(REQUEST_DURATION, "outcome" => note.outcome),
            |h| h.record(self.latency.as_secs_f64()),
        );
        tracing::info!(
            target: "bearer_guard::access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            peer = %self.peer,
            method = %self.method,
            path = self.path,
            route = note.route.as_deref(),
            status = self.status,
            outcome = note.outcome,
            reason = note.reason,
            sub = note.sub.as_deref(),
            client_id = note.client_id.as_deref(),
            latency_us = u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_REQUEST_ID, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fresh_ids_are_128_bit_hex_and_differ() {
        let a = fresh_request_id();
        let b = fresh_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn fresh_ids_never_repeat_and_share_the_process_half() {
        let ids: std::collections::HashSet<HeaderValue> =
            (0..10_000).map(|_| fresh_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        let first = fresh_request_id();
        let second = fresh_request_id();
        assert_eq!(first.as_bytes()[..16], second.as_bytes()[..16]);
        assert_ne!(first.as_bytes()[16..], second.as_bytes()[16..]);
    }

    #[test]
    fn a_client_id_is_kept_only_from_a_trusted_proxy() {
        let sent = with(&["req-42.abc"]);
        assert_eq!(request_id(&sent, true), "req-42.abc");
        let replaced = request_id(&sent, false);
        assert_ne!(replaced, "req-42.abc");
        assert_eq!(replaced.len(), 32);
    }

    #[test]
    fn malformed_or_repeated_ids_are_replaced_even_when_trusted() {
        let long: &'static str = "a".repeat(129).leak();
        for bad in [
            with(&[""]),
            with(&["has space"]),
            with(&["quote\"d"]),
            with(&[long]),
            with(&["one", "two"]),
        ] {
            let id = request_id(&bad, true);
            assert_eq!(id.len(), 32, "{bad:?} -> {id:?}");
        }
        let longest: &'static str = "a".repeat(128).leak();
        assert_eq!(request_id(&with(&[longest]), true), longest);
    }
}
