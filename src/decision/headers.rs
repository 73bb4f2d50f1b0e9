//! Claims to request headers, and the client-sent headers that must never reach
//! the upstream: the rules every front door applies (the gateway itself, Envoy
//! through `headers_to_remove`, nginx and Caddy in their configurations).
//!
//! The header rules are two functions: [`ClaimHeaders::untrusted`] (what a client
//! may not send on) and [`ClaimHeaders::values`] (what the verified token says,
//! refused rather than altered when a value cannot be carried as is).

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::config::ConfigError;
use crate::VerifiedToken;
use crate::scope::is_scope_token;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus
/// the legacy `Keep-Alive` and `Proxy-Connection`).
pub(crate) const HOP_BY_HOP: [&str; 7] = [
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

/// A header name as WSGI, CGI, PHP and several frameworks see it: `x_auth_sub`
/// and `X-Auth-Sub` are one variable (`HTTP_X_AUTH_SUB`) there.
fn normalise(name: &str) -> Cow<'_, str> {
    if changes_in_normal_form(name) {
        Cow::Owned(name.to_ascii_lowercase().replace('_', "-"))
    } else {
        Cow::Borrowed(name)
    }
}

/// Whether [`normalise`] changes `name`: it has a `_` or an upper-case letter.
fn changes_in_normal_form(name: &str) -> bool {
    // Without an early exit, so it is checked many bytes at a time.
    name.bytes()
        .fold(false, |odd, b| odd | (b == b'_') | b.is_ascii_uppercase())
}

/// Whether `normal` may be in [`ROUTE_OVERRIDE`] or be a client address
/// ([`is_client_address`]): by its first letter, the only test most names need.
fn may_be_listed(normal: &str) -> bool {
    matches!(normal.as_bytes().first(), Some(b'x' | b'f' | b't' | b'c'))
}

fn is_client_address(normal: &str) -> bool {
    normal.starts_with("x-forwarded-") || CLIENT_ADDRESS.contains(&normal)
}

/// A verified claim that cannot be carried in its header exactly as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("claim {claim:?} cannot be forwarded in {header}: {problem}")]
pub(crate) struct ClaimValueError {
    claim: String,
    header: HeaderName,
    problem: &'static str,
}

/// `[forward] claims_to_headers`, checked.
#[derive(Debug, Clone)]
pub(crate) struct ClaimHeaders {
    /// Claim name, the header it is sent in, and that header's normalised name.
    claims: Vec<(String, HeaderName, String)>,
    /// Joins the elements of an array claim (`[forward] claims_separator`).
    separator: Box<str>,
    /// What a name's first byte says of it ([`first_bytes`]).
    first: [u8; 128],
}

/// A name starting so may be untrusted as it is: a claim header's, or (`x`,
/// `f`, `t`, `c`) a listed one.
const EXACT: u8 = 1;
/// A name starting so may be untrusted if it is a look-alike (of a hop-by-hop
/// or reserved name, say `proxy_authorization`).
const LOOK_ALIKE: u8 = 2;

/// The class of each first byte (after [`normalise`]) of the names
/// [`ClaimHeaders::is_untrusted`] looks for; `0` for a byte no such name
/// starts with, whose names (`accept`, `user-agent`) are trusted at once.
fn first_bytes<'a>(claims: impl Iterator<Item = &'a str>) -> [u8; 128] {
    let mut first = [0u8; 128];
    let mut mark = |name: &str, class: u8| {
        // Every name here is in normal form, and ASCII (a header name).
        if let Some(slot) = name
            .bytes()
            .next()
            .and_then(|b| first.get_mut(usize::from(b)))
        {
            *slot |= class;
        }
    };
    for claim in claims {
        mark(claim, EXACT | LOOK_ALIKE);
    }
    for listed in ["x", "f", "t", "c"] {
        mark(listed, EXACT | LOOK_ALIKE);
    }
    for name in HOP_BY_HOP
        .iter()
        .chain(&RESERVED)
        .chain(&ROUTE_OVERRIDE)
        .chain(&CLIENT_ADDRESS)
    {
        mark(name, LOOK_ALIKE);
    }
    first
}

impl Default for ClaimHeaders {
    fn default() -> Self {
        ClaimHeaders {
            claims: Vec::new(),
            separator: DEFAULT_SEPARATOR.into(),
            first: first_bytes(std::iter::empty()),
        }
    }
}

/// The default `[forward] claims_separator`.
pub(crate) const DEFAULT_SEPARATOR: &str = ",";

/// A claim by name: the top-level member of that exact name (`"https://example.com/roles"`),
/// else the dot-separated path into nested objects (`realm_access.roles`), as
/// [`VerifiedToken::claim`] and the route rules read it.
fn lookup<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.')
        .try_fold(claims, |v, segment| v.get(segment))
}

/// One JSON scalar as header text: a string as is, a number or a boolean as its
/// JSON text. `None` for anything else.
fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

impl ClaimHeaders {
    /// Checks `claims_to_headers`: a header the proxy relies on, or two headers
    /// that normalise alike, are refused naming the key.
    pub(crate) fn from_config(map: &BTreeMap<String, String>) -> Result<ClaimHeaders, ConfigError> {
        let mut claims: Vec<(String, HeaderName, String)> = Vec::new();
        for (claim, header) in map {
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
        Ok(ClaimHeaders {
            first: first_bytes(claims.iter().map(|(.., normal)| normal.as_str())),
            claims,
            separator: DEFAULT_SEPARATOR.into(),
        })
    }

    /// Sets the separator of array claims: 1 to 8 printable ASCII characters,
    /// not only spaces.
    pub(crate) fn with_separator(mut self, separator: &str) -> Result<ClaimHeaders, ConfigError> {
        let printable = separator.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if separator.is_empty() || separator.len() > 8 || !printable || separator.trim().is_empty()
        {
            return Err(ConfigError::at(
                "forward.claims_separator",
                "must be 1 to 8 printable ASCII characters, not only spaces",
            ));
        }
        self.separator = separator.into();
        Ok(self)
    }

    /// The configured header names, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.claims.iter().map(|(_, name, _)| name)
    }

    /// The request headers that must not reach the upstream from the
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
    ///
    /// Each name once, in the order first sent.
    pub(crate) fn untrusted(&self, headers: &HeaderMap, trust_forwarded: bool) -> Vec<HeaderName> {
        headers
            .keys()
            .filter(|name| self.is_untrusted(name.as_str(), trust_forwarded))
            .cloned()
            .collect()
    }

    fn is_untrusted(&self, name: &str, trust_forwarded: bool) -> bool {
        // Most names are told by their first byte: `host`, `authorization`
        // and `accept` are not untrusted unless they are look-alikes.
        let Some(&b) = name.as_bytes().first() else {
            return false;
        };
        let b = if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        };
        let class = self.first.get(usize::from(b)).copied().unwrap_or(0);
        if class == 0 || (class & EXACT == 0 && !changes_in_normal_form(name)) {
            return false;
        }
        self.is_untrusted_by_name(name, trust_forwarded)
    }

    /// [`is_untrusted`](Self::is_untrusted) without the first-byte shortcut.
    fn is_untrusted_by_name(&self, name: &str, trust_forwarded: bool) -> bool {
        let normal = normalise(name);
        let n = normal.as_ref();
        let look_alike = n != name;
        if self.claims.iter().any(|(.., o)| o == n) {
            return true;
        }
        if !look_alike && !may_be_listed(n) {
            // `host`, `user-agent`, `accept`, `authorization`: on every request.
            return false;
        }
        if ROUTE_OVERRIDE.contains(&n) {
            return true;
        }
        if is_client_address(n) {
            return look_alike || !trust_forwarded;
        }
        look_alike && (HOP_BY_HOP.contains(&n) || RESERVED.contains(&n))
    }

    /// The claim headers for the verified token. `scope` is the space-joined
    /// scopes, `iss` the verified issuer, other names are looked up in the claims
    /// (an exact top-level name, else a dotted path such as `realm_access.roles`).
    /// Strings go as they are, numbers and booleans as their JSON text, arrays of
    /// those joined with the separator. An absent claim, an empty array (or an
    /// empty scope set) sends no header. `null`, an object, a nested array or
    /// `null` inside an array, an element that is empty or contains the
    /// separator, or any value the upstream could read differently
    /// ([`claim_value`]), is an error: the request is refused rather than
    /// forwarded with an altered or missing identity header.
    pub(crate) fn values(
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
                // Verified as strings with the token: no second parse per request.
                "sub" => match token.subject() {
                    Some(sub) => Cow::Borrowed(sub),
                    None => continue,
                },
                "client_id" => match token.client_id() {
                    Some(id) => Cow::Borrowed(id),
                    None => continue,
                },
                other => {
                    let claims = raw.get_or_insert_with(|| {
                        serde_json::from_str(token.claims_json()).unwrap_or(Value::Null)
                    });
                    match lookup(claims, other) {
                        None => continue,
                        // Present yet without a value: not the same as absent.
                        Some(Value::Null) => return Err(fail("null")),
                        Some(Value::Object(_)) => return Err(fail("an object")),
                        Some(Value::Array(items)) if items.is_empty() => continue,
                        Some(Value::Array(items)) => {
                            let mut joined = String::new();
                            for item in items {
                                let text = scalar_text(item).ok_or_else(|| {
                                    fail("an array element that is not a string, number or boolean")
                                })?;
                                // Each element must read back alone, and the
                                // separator must split them exactly as joined.
                                claim_value(&text).map_err(fail)?;
                                if text.contains(&*self.separator) {
                                    return Err(fail("an array element contains the separator"));
                                }
                                if !joined.is_empty() {
                                    joined.push_str(&self.separator);
                                }
                                joined.push_str(&text);
                            }
                            Cow::Owned(joined)
                        }
                        Some(scalar) => match scalar_text(scalar) {
                            Some(text) => Cow::Owned(text.into_owned()),
                            None => return Err(fail("not a string")),
                        },
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
    fn the_first_letter_test_lets_every_listed_name_through() {
        for name in ROUTE_OVERRIDE.iter().chain(&CLIENT_ADDRESS) {
            assert!(may_be_listed(name), "{name}");
        }
        assert!(may_be_listed("x-forwarded-anything"));
    }

    #[test]
    fn the_first_byte_shortcut_never_changes_the_answer() {
        let mut names: Vec<String> = [
            "host",
            "authorization",
            "accept",
            "user-agent",
            "cookie",
            "_x-auth-sub",
            "-x-auth-sub",
            "a_b",
            "Z",
            "",
            "\u{e9}tag",
            "proxy_authorization",
            "keep_alive",
            "upgrade",
            "x-auth-sub",
            "Y-Claim",
        ]
        .map(str::to_owned)
        .into();
        for listed in HOP_BY_HOP
            .iter()
            .chain(&RESERVED)
            .chain(&ROUTE_OVERRIDE)
            .chain(&CLIENT_ADDRESS)
            .chain(&["y-claim", "-dash-claim", "x-auth-sub"])
        {
            names.push((*listed).to_owned());
            names.push(listed.replace('-', "_"));
            names.push(listed.to_ascii_uppercase());
            names.push(format!("{listed}-more"));
        }
        let map: BTreeMap<String, String> = [
            ("sub", "x-auth-sub"),
            ("scope", "Y-Claim"),
            ("tid", "_dash-claim"),
        ]
        .map(|(c, h)| (c.to_owned(), h.to_owned()))
        .into();
        for headers in [
            ClaimHeaders::default(),
            ClaimHeaders::from_config(&map).expect("valid"),
        ] {
            for name in &names {
                for trust in [false, true] {
                    assert_eq!(
                        headers.is_untrusted(name, trust),
                        headers.is_untrusted_by_name(name, trust),
                        "{name:?} (trust_forwarded {trust})"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_reserved_or_invalid_claim_headers() {
        let config = |header: &str| -> BTreeMap<String, String> {
            [("sub".to_owned(), header.to_owned())].into()
        };
        assert!(ClaimHeaders::from_config(&config("x-auth-sub")).is_ok());
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
            let e = ClaimHeaders::from_config(&config(bad)).expect_err(bad);
            assert_eq!(e.key(), Some("forward.claims_to_headers.sub"));
        }
    }

    /// The claim headers of `pairs`, applied as the gateway does: remove what is
    /// untrusted (`trust_forwarded` as configured).
    struct Rules(ClaimHeaders, bool);

    impl Rules {
        fn remove_untrusted(&self, h: &mut HeaderMap) {
            for name in self.0.untrusted(h, self.1) {
                h.remove(name);
            }
        }
    }

    fn with_claims(pairs: &[(&str, &str)], trust_forwarded: bool) -> Rules {
        let map = pairs
            .iter()
            .map(|(c, h)| (c.to_string(), h.to_string()))
            .collect();
        Rules(
            ClaimHeaders::from_config(&map).expect("claims"),
            trust_forwarded,
        )
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
        let config: BTreeMap<String, String> = [
            ("sub".to_owned(), "x-auth-sub".to_owned()),
            ("client_id".to_owned(), "x_auth_sub".to_owned()),
        ]
        .into();
        let e = ClaimHeaders::from_config(&config).expect_err("one header for two claims");
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

    /// The claim headers `values` gives for `claims` (one verified token).
    fn forwarded(
        pairs: &[(&str, &str)],
        separator: Option<&str>,
        claims: Value,
    ) -> Result<Vec<(String, String)>, String> {
        let map = pairs
            .iter()
            .map(|(c, h)| (c.to_string(), h.to_string()))
            .collect();
        let mut headers = ClaimHeaders::from_config(&map).expect("claims");
        if let Some(sep) = separator {
            headers = headers.with_separator(sep).expect("separator");
        }
        let token = crate::claims::VerifiedToken::for_tests(claims);
        headers
            .values(&token)
            .map(|v| {
                v.into_iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn arrays_numbers_booleans_and_nested_paths_are_forwarded() {
        let claims = serde_json::json!({
            "iss": "https://as", "sub": "alice",
            "roles": ["admin", "auditor"],
            "level": 3, "ratio": 1.5, "staff": true,
            "realm_access": {"roles": ["ops", "dev"]},
            "https://example.com/tenant": "acme",
            "empty": [],
        });
        let pairs = [
            ("roles", "x-roles"),
            ("level", "x-level"),
            ("ratio", "x-ratio"),
            ("staff", "x-staff"),
            ("realm_access.roles", "x-realm-roles"),
            ("https://example.com/tenant", "x-tenant"),
            ("empty", "x-empty"),
            ("absent.path", "x-absent"),
        ];
        let mut got = forwarded(&pairs, None, claims.clone()).unwrap();
        got.sort();
        let expect = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut v: Vec<_> = v
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            got,
            expect(&[
                ("x-roles", "admin,auditor"),
                ("x-level", "3"),
                ("x-ratio", "1.5"),
                ("x-staff", "true"),
                ("x-realm-roles", "ops,dev"),
                ("x-tenant", "acme"),
            ])
        );
        let got = forwarded(&[("roles", "x-roles")], Some(" | "), claims).unwrap();
        assert_eq!(got, expect(&[("x-roles", "admin | auditor")]));
    }

    #[test]
    fn ambiguous_arrays_and_objects_are_refused() {
        for (claims, why) in [
            (
                serde_json::json!({"roles": ["a,b", "c"]}),
                "contains the separator",
            ),
            (serde_json::json!({"roles": ["a", ""]}), "empty"),
            (serde_json::json!({"roles": ["a", " b"]}), "whitespace"),
            (
                serde_json::json!({"roles": ["a", ["b"]]}),
                "not a string, number or boolean",
            ),
            (
                serde_json::json!({"roles": ["a", null]}),
                "not a string, number or boolean",
            ),
            (
                serde_json::json!({"roles": ["a", {"b": 1}]}),
                "not a string, number or boolean",
            ),
            (serde_json::json!({"roles": {"admin": true}}), "an object"),
            (serde_json::json!({"roles": null}), "null"),
            (serde_json::json!({"roles": ["jos\u{e9}"]}), "non-ASCII"),
        ] {
            let e = forwarded(&[("roles", "x-roles")], None, claims.clone()).unwrap_err();
            assert!(e.contains(why), "{claims}: {e}");
        }
    }

    #[test]
    fn separators_must_be_short_printable_and_not_blank() {
        let headers = || ClaimHeaders::from_config(&BTreeMap::new()).unwrap();
        for good in [",", ";", " | ", ", "] {
            assert!(headers().with_separator(good).is_ok(), "{good:?}");
        }
        for bad in ["", " ", "\t", "\u{e9}", "123456789"] {
            let e = headers().with_separator(bad).unwrap_err();
            assert_eq!(e.key(), Some("forward.claims_separator"));
        }
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
