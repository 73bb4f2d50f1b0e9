//! What the upstream receives: hop-by-hop headers removed (RFC 9110 §7.6.1),
//! claim headers always replaced, never taken from the client, no header that
//! overrides the route or the method, and the `X-Forwarded-*` headers the
//! gateway's own unless a trusted proxy is in front.
//!
//! The header rules are two functions: [`Forwarding::remove_untrusted`] (what a
//! client may not send on) and [`Forwarding::claim_headers`] (what the verified
//! token says, refused rather than altered when a value cannot be carried as is).

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use serde_json::Value;

use super::config::{ConfigError, ForwardConfig};
use crate::VerifiedToken;
use crate::scope::is_scope_token;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus
/// the legacy `Keep-Alive` and `Proxy-Connection`).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers the proxy itself relies on: never a claim header, and a look-alike
/// (`content_length`) is never passed on.
const RESERVED: [&str; 6] = [
    "host",
    "authorization",
    "proxy-authorization",
    "content-length",
    "content-type",
    "content-encoding",
];

/// Headers with which frameworks let a request choose another path or method than
/// the one the gateway matched (IIS/Symfony `X-Original-URL`, `X-Rewrite-URL`,
/// nginx-style `X-Original-URI`, Traefik/oauth2-proxy `X-Forwarded-Uri`, Spring
/// and Symfony `X-Forwarded-Prefix`, Envoy `X-Envoy-Original-Path`, and the method
/// overrides of Rails, Express, Laravel and ASP.NET). The gateway never sets them,
/// so they are always removed.
const ROUTE_OVERRIDE: [&str; 12] = [
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-envoy-original-path",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-forwarded-method",
];

/// Headers that claim who the client is or how it connected, besides every
/// `x-forwarded-*`: those client-IP helpers (e.g. npm `request-ip`, Rack, Gin)
/// read. Removed unless `trust_forwarded`.
const CLIENT_ADDRESS: [&str; 9] = [
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A header name as WSGI, CGI, PHP and several frameworks see it: `x_auth_sub`
/// and `X-Auth-Sub` are one variable (`HTTP_X_AUTH_SUB`) there.
fn normalise(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase().replace('_', "-"))
    } else {
        Cow::Borrowed(name)
    }
}

fn is_client_address(normal: &str) -> bool {
    normal.starts_with("x-forwarded-") || CLIENT_ADDRESS.contains(&normal)
}

/// Removes the hop-by-hop headers, and those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP[1..3] {
        headers.remove(*name);
    }
}

/// A verified claim that cannot be carried in its header exactly as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("claim {claim:?} cannot be forwarded in {header}: {problem}")]
pub(crate) struct ClaimValueError {
    claim: String,
    header: HeaderName,
    problem: &'static str,
}

/// `[forward]`, checked.
#[derive(Debug, Clone)]
pub(crate) struct Forwarding {
    /// Claim name, the header it is sent in, and that header's normalised name.
    claims: Vec<(String, HeaderName, String)>,
    pub strip_authorization: bool,
    x_forwarded: bool,
    trust_forwarded: bool,
}

impl Forwarding {
    pub fn from_config(c: &ForwardConfig) -> Result<Forwarding, ConfigError> {
        let mut claims: Vec<(String, HeaderName, String)> = Vec::new();
        for (claim, header) in &c.claims_to_headers {
            let key = format!("forward.claims_to_headers.{claim}");
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ConfigError::at(&key, format!("{header:?} is not a header name")))?;
            let normal = normalise(name.as_str()).into_owned();
            let n = normal.as_str();
            let reserved = HOP_BY_HOP.contains(&n)
                || RESERVED.contains(&n)
                || ROUTE_OVERRIDE.contains(&n)
                || is_client_address(n);
            if reserved {
                return Err(ConfigError::at(
                    &key,
                    format!("{name} cannot carry a claim: the proxy relies on it"),
                ));
            }
            if let Some((other, ..)) = claims.iter().find(|(.., o)| *o == normal) {
                return Err(ConfigError::at(
                    &key,
                    format!(
                        "{name} is the same header as the one for {other:?} to upstreams that \
                         read `_` as `-`"
                    ),
                ));
            }
            claims.push((claim.clone(), name, normal));
        }
        Ok(Forwarding {
            claims,
            strip_authorization: c.strip_authorization,
            x_forwarded: c.x_forwarded,
            trust_forwarded: c.trust_forwarded,
        })
    }

    /// Removes every request header that must not reach the upstream from the
    /// client, compared after lower-casing and reading `_` as `-` (so `x_auth_sub`
    /// is `x-auth-sub`), on every route, public ones included:
    ///
    /// - any header named like a configured claim header (cf. Envoy
    ///   CVE-2023-27487, oauth2-proxy CVE-2025-64484);
    /// - the route and method overrides ([`ROUTE_OVERRIDE`]);
    /// - `Forwarded`, every `X-Forwarded-*` and the client-IP headers
    ///   ([`CLIENT_ADDRESS`]), unless `trust_forwarded` (a trusted proxy's own
    ///   values are kept, under their exact names only);
    /// - look-alikes of the hop-by-hop and reserved headers (`transfer_encoding`,
    ///   `content_length`), whose exact names the proxy handles itself.
    pub fn remove_untrusted(&self, headers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| self.is_untrusted(name.as_str()))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }

    fn is_untrusted(&self, name: &str) -> bool {
        let normal = normalise(name);
        let n = normal.as_ref();
        let look_alike = n != name;
        if self.claims.iter().any(|(.., o)| o == n) || ROUTE_OVERRIDE.contains(&n) {
            return true;
        }
        if is_client_address(n) {
            return look_alike || !self.trust_forwarded;
        }
        look_alike && (HOP_BY_HOP.contains(&n) || RESERVED.contains(&n))
    }

    /// The `X-Forwarded-*` headers for a request from `peer`, whose target named
    /// `host` (the URI's authority or the `Host` header, as the client sent it).
    /// Called after [`remove_untrusted`](Self::remove_untrusted): what is left of
    /// these headers is a trusted proxy's, so the peer's address is appended to
    /// its `X-Forwarded-For` list (several fields joined in order), and its
    /// `-Proto` and `-Host` win over ours.
    pub fn set_forwarded_headers(
        &self,
        headers: &mut HeaderMap,
        peer: IpAddr,
        host: Option<HeaderValue>,
    ) {
        if !self.x_forwarded {
            return;
        }
        // An IPv4 client of a dual-stack listener shows as `::ffff:a.b.c.d`.
        let peer = peer.to_canonical().to_string();
        let mut list: Vec<u8> = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            let value = value.as_bytes().trim_ascii();
            if !value.is_empty() {
                list.extend_from_slice(value);
                list.extend_from_slice(b", ");
            }
        }
        list.extend_from_slice(peer.as_bytes());
        // Joined from valid values and an address: cannot fail, but never panic.
        if let Ok(value) = HeaderValue::from_bytes(&list) {
            headers.insert(X_FORWARDED_FOR, value);
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            // The gateway listens on plain http only.
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if !headers.contains_key(&X_FORWARDED_HOST)
            && let Some(host) = host
        {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }

    /// The claim headers for the verified token. `scope` is the space-joined
    /// scopes, `iss` the verified issuer, other names are looked up in the claims.
    /// An absent claim (or an empty scope set) sends no header; a claim that is
    /// present but not a string, or whose value the upstream could read
    /// differently ([`claim_value`]), is an error: the request is refused rather
    /// than forwarded with an altered or missing identity header.
    pub fn claim_headers(
        &self,
        token: &VerifiedToken,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, ClaimValueError> {
        let mut raw: Option<Value> = None;
        let mut out = Vec::with_capacity(self.claims.len());
        for (claim, name, _) in &self.claims {
            let fail = |problem| ClaimValueError {
                claim: claim.clone(),
                header: name.clone(),
                problem,
            };
            let value: Cow<'_, str> = match claim.as_str() {
                "scope" if token.scopes().is_empty() => continue,
                // Space-joined, so a scope holding a space (`scp: ["a b"]`) would
                // read as two: each must be an RFC 6749 scope token.
                "scope" if !token.scopes().iter().all(is_scope_token) => {
                    return Err(fail("a scope that is not a scope token"));
                }
                "scope" => Cow::Owned(token.scopes().to_string()),
                "iss" => Cow::Borrowed(token.issuer()),
                other => {
                    let claims = raw.get_or_insert_with(|| {
                        serde_json::from_str(token.claims_json()).unwrap_or(Value::Null)
                    });
                    match claims.get(other) {
                        None => continue,
                        Some(Value::String(s)) => Cow::Owned(s.clone()),
                        Some(_) => return Err(fail("not a string")),
                    }
                }
            };
            out.push((name.clone(), claim_value(&value).map_err(fail)?));
        }
        Ok(out)
    }
}

/// A claim as a header value, only when every upstream reads it back unchanged:
/// not empty, printable ASCII (`0x20`-`0x7E`) only, no leading or trailing space.
/// Anything else (a control character, a non-ASCII character, which stacks decode
/// as Latin-1 or UTF-8 or drop, or whitespace they trim) is refused with the reason.
pub(crate) fn claim_value(value: &str) -> Result<HeaderValue, &'static str> {
    if value.is_empty() {
        return Err("empty");
    }
    if let Some(c) = value.chars().find(|c| !matches!(c, ' '..='~')) {
        return Err(if c.is_control() {
            "control character"
        } else {
            "non-ASCII character"
        });
    }
    if value.starts_with(' ') || value.ends_with(' ') {
        return Err("leading or trailing whitespace");
    }
    HeaderValue::from_str(value).map_err(|_| "not a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret-hop", "1"),
            ("x-end-to-end", "kept"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-end-to-end"], "kept");
    }

    #[test]
    fn refuses_reserved_or_invalid_claim_headers() {
        let config = |header: &str| ForwardConfig {
            claims_to_headers: [("sub".to_owned(), header.to_owned())].into(),
            ..ForwardConfig::default()
        };
        assert!(Forwarding::from_config(&config("x-auth-sub")).is_ok());
        for bad in [
            "host",
            "Transfer-Encoding",
            "x-forwarded-for",
            "x_forwarded_for",
            "content_length",
            "x-original-url",
            "X_Real_IP",
            "x-forwarded-whatever",
            "x auth",
            "",
        ] {
            let e = Forwarding::from_config(&config(bad)).expect_err(bad);
            assert_eq!(e.key(), Some("forward.claims_to_headers.sub"));
        }
    }

    fn forwarding(x_forwarded: bool, trust_forwarded: bool) -> Forwarding {
        Forwarding::from_config(&ForwardConfig {
            x_forwarded,
            trust_forwarded,
            ..ForwardConfig::default()
        })
        .expect("forwarding")
    }

    /// What the gateway does to the forwarding headers: remove, then set.
    fn forwarded(f: &Forwarding, h: &mut HeaderMap, peer: IpAddr, host: Option<HeaderValue>) {
        f.remove_untrusted(h);
        f.set_forwarded_headers(h, peer, host);
    }

    /// A client's attempt at spoofing every forwarding header.
    fn spoofed() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-forwarded-for", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "admin.internal"),
            ("forwarded", "for=10.0.0.1"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        h
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn x_forwarded_defaults_on_and_untrusted() {
        let c = ForwardConfig::default();
        assert!(c.x_forwarded && !c.trust_forwarded);
    }

    #[test]
    fn client_forwarding_headers_are_replaced_by_default() {
        let mut h = spoofed();
        let host = HeaderValue::from_static("api.example.com:8080");
        forwarded(
            &forwarding(true, false),
            &mut h,
            "192.0.2.7".parse().expect("ip"),
            Some(host),
        );
        assert_eq!(all(&h, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["api.example.com:8080"]);
        assert!(h.get(http::header::FORWARDED).is_none());
    }

    #[test]
    fn a_trusted_proxy_list_is_appended_to_and_its_values_kept() {
        let mut h = spoofed();
        forwarded(
            &forwarding(true, true),
            &mut h,
            "::ffff:192.0.2.7".parse().expect("ip"),
            Some(HeaderValue::from_static("gw.local")),
        );
        assert_eq!(
            all(&h, "x-forwarded-for"),
            ["10.0.0.1, 10.0.0.2, 192.0.2.7"],
            "fields joined in order, the peer (canonical IPv4) last"
        );
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["admin.internal"]);
        assert_eq!(all(&h, "forwarded"), ["for=10.0.0.1"]);

        let mut fresh = HeaderMap::new();
        forwarded(
            &forwarding(true, true),
            &mut fresh,
            "2001:db8::1".parse().expect("ip"),
            None,
        );
        assert_eq!(all(&fresh, "x-forwarded-for"), ["2001:db8::1"]);
        assert_eq!(all(&fresh, "x-forwarded-proto"), ["http"]);
        assert!(fresh.get("x-forwarded-host").is_none(), "no host, none set");
    }

    #[test]
    fn x_forwarded_off_still_removes_untrusted_values() {
        let peer: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut h = spoofed();
        forwarded(&forwarding(false, false), &mut h, peer, None);
        assert!(h.is_empty(), "{h:?}");
        let mut h = spoofed();
        forwarded(&forwarding(false, true), &mut h, peer, None);
        assert_eq!(h, spoofed(), "trusted and off: passed through untouched");
    }

    fn with_claims(pairs: &[(&str, &str)], trust_forwarded: bool) -> Forwarding {
        Forwarding::from_config(&ForwardConfig {
            claims_to_headers: pairs
                .iter()
                .map(|(c, h)| (c.to_string(), h.to_string()))
                .collect(),
            trust_forwarded,
            ..ForwardConfig::default()
        })
        .expect("forwarding")
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn claim_header_look_alikes_are_removed() {
        let f = with_claims(&[("sub", "x-auth-sub"), ("tenant", "X-Auth-Tenant")], false);
        let mut h = HeaderMap::new();
        for name in [
            "x-auth-sub",
            "x_auth_sub",
            "x_auth-sub",
            "x-auth_tenant",
            "x-auth-subx",
        ] {
            h.append(name, HeaderValue::from_static("mallory"));
        }
        f.remove_untrusted(&mut h);
        assert_eq!(names(&h), ["x-auth-subx"]);
    }

    #[test]
    fn two_claim_headers_that_normalise_alike_are_refused() {
        let config = ForwardConfig {
            claims_to_headers: [
                ("sub".to_owned(), "x-auth-sub".to_owned()),
                ("client_id".to_owned(), "x_auth_sub".to_owned()),
            ]
            .into(),
            ..ForwardConfig::default()
        };
        let e = Forwarding::from_config(&config).expect_err("one header for two claims");
        assert_eq!(e.key(), Some("forward.claims_to_headers.sub"));
    }

    /// A client's route, method and address overrides, with look-alikes.
    fn overrides() -> HeaderMap {
        let mut h = HeaderMap::new();
        for name in ROUTE_OVERRIDE.iter().chain(&CLIENT_ADDRESS).chain(&[
            "x-forwarded-port",
            "x-forwarded-server",
            "x-forwarded-ssl",
            "x_original_url",
            "x_forwarded_for",
            "x_real_ip",
            "transfer_encoding",
            "content_length",
            "keep_alive",
            "x-request-id",
            "x_custom_thing",
        ]) {
            h.append(*name, HeaderValue::from_static("1"));
        }
        h
    }

    #[test]
    fn route_overrides_and_client_addresses_are_removed_by_default() {
        let mut h = overrides();
        with_claims(&[], false).remove_untrusted(&mut h);
        assert_eq!(names(&h), ["x-request-id", "x_custom_thing"]);
    }

    #[test]
    fn a_trusted_proxy_keeps_its_address_headers_never_the_overrides() {
        let mut h = overrides();
        with_claims(&[], true).remove_untrusted(&mut h);
        let mut kept: Vec<&str> = CLIENT_ADDRESS
            .iter()
            .copied()
            .chain([
                "x-forwarded-port",
                "x-forwarded-server",
                "x-forwarded-ssl",
                "x-request-id",
                "x_custom_thing",
            ])
            .collect();
        kept.sort_unstable();
        assert_eq!(names(&h), kept, "exact names only; overrides always go");
    }

    #[test]
    fn claim_values_are_forwarded_only_when_read_back_unchanged() {
        for good in [
            "alice",
            "a b",
            "user@example.com",
            "~!#$%&'()*+,-./:;<=>?@[]^_`{|}",
        ] {
            let v = claim_value(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
            assert_eq!(v.as_bytes(), good.as_bytes());
        }
        for (bad, why) in [
            ("", "empty"),
            (" alice", "leading or trailing whitespace"),
            ("alice ", "leading or trailing whitespace"),
            ("alice\t", "control character"),
            ("al\rice", "control character"),
            ("a\nX-Admin: 1", "control character"),
            ("a\u{0}b", "control character"),
            ("a\u{7f}", "control character"),
            ("a\u{85}", "control character"),
            ("jos\u{e9}", "non-ASCII character"),
            ("\u{202e}nimda", "non-ASCII character"),
        ] {
            assert_eq!(claim_value(bad).err(), Some(why), "{bad:?}");
        }
    }
}
