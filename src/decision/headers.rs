//! Claims to request headers, and the client-sent headers that must never reach
//! the upstream: every copy of a claim header, also under another case or with
//! `_` for `-` (CGI, PHP, WSGI and Rails read `X_Auth_Sub` as `X-Auth-Sub`), on
//! public routes too (cf. Envoy CVE-2023-27487).

use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::config::ConfigError;
use crate::VerifiedToken;

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

/// Names a proxy relies on: never a claim header, and a client's `_` spelling of
/// one of them is removed like a claim header's.
const RESERVED: [&str; 8] = [
    "host",
    "authorization",
    "content-length",
    "content-type",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// `claims_to_headers`, checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClaimHeaders {
    claims: Vec<(String, HeaderName)>,
}

/// The name a lenient upstream may read `name` as: lower case, `_` as `-`.
fn folded(name: &str) -> String {
    name.replace('_', "-")
}

impl ClaimHeaders {
    /// Checks `[forward] claims_to_headers`; a header a proxy relies on is refused.
    pub fn from_config(map: &BTreeMap<String, String>) -> Result<ClaimHeaders, ConfigError> {
        let mut claims = Vec::new();
        for (claim, header) in map {
            let key = format!("forward.claims_to_headers.{claim}");
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ConfigError::at(&key, format!("{header:?} is not a header name")))?;
            if name.as_str().contains('_') {
                return Err(ConfigError::at(
                    &key,
                    format!("{header:?}: use '-', not '_' (proxies drop or rename '_' headers)"),
                ));
            }
            if HOP_BY_HOP.contains(&name.as_str()) || RESERVED.contains(&name.as_str()) {
                return Err(ConfigError::at(
                    &key,
                    format!("{name} cannot carry a claim: the proxy relies on it"),
                ));
            }
            if claims.iter().any(|(_, n)| n == &name) {
                return Err(ConfigError::at(
                    &key,
                    format!("{name} already carries another claim"),
                ));
            }
            claims.push((claim.clone(), name));
        }
        Ok(ClaimHeaders { claims })
    }

    /// The configured header names, in order.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.claims.iter().map(|(_, name)| name)
    }

    /// The client-sent headers to remove, given the names about to be set: every
    /// header whose name folds (`_` to `-`) to a claim header or a reserved name,
    /// except the exact names being set (setting replaces every copy of those).
    pub fn to_remove(
        &self,
        headers: &HeaderMap,
        set: &[(HeaderName, HeaderValue)],
    ) -> Vec<HeaderName> {
        let mut remove: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            let sent = name.as_str();
            let folded = folded(sent);
            let claim = self.claims.iter().any(|(_, n)| n.as_str() == folded);
            let spoofed = claim || (sent != folded && RESERVED.contains(&folded.as_str()));
            if spoofed && !set.iter().any(|(n, _)| n == name) && !remove.contains(name) {
                remove.push(name.clone());
            }
        }
        remove
    }

    /// The claim headers for a verified token. Claims that are absent, not
    /// strings, or not valid header values are left out.
    pub fn values(&self, token: &VerifiedToken) -> Vec<(HeaderName, HeaderValue)> {
        let mut raw: Option<Value> = None;
        let mut out = Vec::with_capacity(self.claims.len());
        for (claim, name) in &self.claims {
            let value = match claim.as_str() {
                "scope" => Some(token.scopes().to_string()).filter(|s| !s.is_empty()),
                "sub" => token.subject().map(str::to_owned),
                "client_id" => token.client_id().map(str::to_owned),
                "iss" => Some(token.issuer().to_owned()),
                other => raw
                    .get_or_insert_with(|| {
                        serde_json::from_str(token.raw_claims()).unwrap_or(Value::Null)
                    })
                    .get(other)
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            };
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                out.push((name.clone(), value));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(pairs: &[(&str, &str)]) -> Result<ClaimHeaders, ConfigError> {
        ClaimHeaders::from_config(
            &pairs
                .iter()
                .map(|(c, h)| (c.to_string(), h.to_string()))
                .collect(),
        )
    }

    #[test]
    fn refuses_reserved_invalid_underscored_or_repeated_claim_headers() {
        assert!(claims(&[("sub", "x-auth-sub")]).is_ok());
        for bad in [
            "host",
            "Transfer-Encoding",
            "x-forwarded-for",
            "x auth",
            "",
            "x_auth_sub",
        ] {
            let e = claims(&[("sub", bad)]).expect_err(bad);
            assert_eq!(e.key(), Some("forward.claims_to_headers.sub"));
        }
        let e = claims(&[("sub", "x-a"), ("client_id", "X-A")]).expect_err("twice");
        assert_eq!(e.key(), Some("forward.claims_to_headers.sub"));
    }

    #[test]
    fn removes_client_copies_in_any_case_and_with_underscores() {
        let c = claims(&[("sub", "x-auth-sub"), ("scope", "x-auth-scope")]).expect("claims");
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("X-Auth-Sub", "admin"),
            ("x_auth_sub", "admin"),
            ("X_AUTH_SCOPE", "all"),
            ("x_forwarded_for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-other", "kept"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_static(v),
            );
        }
        let set = [(
            HeaderName::from_static("x-auth-sub"),
            HeaderValue::from_static("alice"),
        )];
        let names: Vec<String> = c
            .to_remove(&h, &set)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["x_auth_sub", "x_auth_scope", "x_forwarded_for"]);
        let none_set: Vec<String> = c.to_remove(&h, &[]).iter().map(|n| n.to_string()).collect();
        assert_eq!(
            none_set,
            [
                "x-auth-sub",
                "x_auth_sub",
                "x_auth_scope",
                "x_forwarded_for"
            ]
        );
    }
}
