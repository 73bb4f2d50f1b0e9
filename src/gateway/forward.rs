//! What the upstream receives: hop-by-hop headers removed (RFC 9110 §7.6.1),
//! claim headers always replaced, never taken from the client.

use http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use serde_json::Value;

use super::config::{ConfigError, ForwardConfig};
use crate::VerifiedToken;

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

/// `[forward]`, checked.
#[derive(Debug, Clone)]
pub(crate) struct Forwarding {
    claims: Vec<(String, HeaderName)>,
    pub strip_authorization: bool,
}

impl Forwarding {
    pub fn from_config(c: &ForwardConfig) -> Result<Forwarding, ConfigError> {
        let mut claims = Vec::new();
        for (claim, header) in &c.claims_to_headers {
            let key = format!("forward.claims_to_headers.{claim}");
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ConfigError::at(&key, format!("{header:?} is not a header name")))?;
            let reserved = HOP_BY_HOP.contains(&name.as_str())
                || matches!(
                    name.as_str(),
                    "host" | "authorization" | "content-length" | "content-type"
                );
            if reserved {
                return Err(ConfigError::at(
                    &key,
                    format!("{name} cannot carry a claim: the proxy relies on it"),
                ));
            }
            claims.push((claim.clone(), name));
        }
        Ok(Forwarding {
            claims,
            strip_authorization: c.strip_authorization,
        })
    }

    /// Removes every configured claim header, whatever the route: a client must
    /// never be able to set them (cf. Envoy CVE-2023-27487).
    pub fn remove_claim_headers(&self, headers: &mut HeaderMap) {
        for (_, name) in &self.claims {
            headers.remove(name);
        }
    }

    /// Sets the claim headers from the verified token. Claims that are absent,
    /// not strings, or not valid header values are left out.
    pub fn set_claim_headers(&self, headers: &mut HeaderMap, token: &VerifiedToken) {
        let mut raw: Option<Value> = None;
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
                headers.insert(name.clone(), value);
            }
        }
    }
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
            strip_authorization: false,
        };
        assert!(Forwarding::from_config(&config("x-auth-sub")).is_ok());
        for bad in ["host", "Transfer-Encoding", "x auth", ""] {
            let e = Forwarding::from_config(&config(bad)).expect_err(bad);
            assert_eq!(e.key(), Some("forward.claims_to_headers.sub"));
        }
    }
}
