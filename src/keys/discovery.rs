//! Authorization-server metadata: where an issuer publishes its keys.
//!
//! Both forms are tried, OpenID Connect's suffix form first
//! (`{issuer}/.well-known/openid-configuration`), then RFC 8414's path-insertion form
//! (`{origin}/.well-known/oauth-authorization-server{path}`). The document's
//! `issuer` must equal the configured issuer byte for byte (RFC 8414 §3.3):
//! otherwise another tenant's metadata could hand us its keys.

use reqwest::Url;
use serde::Deserialize;
use url::Host;

use super::fetch::{self, FetchError, FetchLimits};

/// The members of a metadata document that bearer-guard uses.
#[derive(Debug, Deserialize)]
pub(crate) struct Metadata {
    pub issuer: String,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
}

/// Which endpoint of the metadata document is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Jwks,
    Introspection,
}

impl Endpoint {
    fn member(self) -> &'static str {
        match self {
            Endpoint::Jwks => "jwks_uri",
            Endpoint::Introspection => "introspection_endpoint",
        }
    }
}

/// Checks a configured or discovered URL: absolute, https, or http on a loopback
/// host (or anywhere, when the user allowed plain http explicitly).
pub(crate) fn check_url(url: &str, allow_http: bool) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not an absolute URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if allow_http || is_loopback(&parsed) => Ok(parsed),
        "http" => Err(format!(
            "{url:?} uses plain http on a non-loopback host; use https or allow http explicitly"
        )),
        other => Err(format!(
            "{url:?} has scheme {other:?}; only https (or http) is fetched"
        )),
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The two metadata URLs for an issuer, in the order they are tried.
pub(crate) fn metadata_urls(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    [oidc, rfc8414]
}

/// Parses a metadata document and checks it belongs to `issuer` (the fuzz
/// target's entry point; discovery itself goes through [`endpoint_from_metadata`]).
#[cfg(any(test, feature = "__fuzz"))]
pub(crate) fn jwks_uri_from_metadata(
    body: &[u8],
    issuer: &str,
    allow_http: bool,
) -> Result<Url, String> {
    endpoint_from_metadata(body, issuer, Endpoint::Jwks, allow_http)
}

/// The `endpoint` of a metadata document that belongs to `issuer`.
pub(crate) fn endpoint_from_metadata(
    body: &[u8],
    issuer: &str,
    endpoint: Endpoint,
    allow_http: bool,
) -> Result<Url, String> {
    let meta: Metadata = serde_json::from_slice(body)
        .map_err(|e| format!("the metadata document is not valid: {e}"))?;
    if meta.issuer != issuer {
        return Err(format!(
            "the metadata names issuer {:?}, not the configured {issuer:?}",
            meta.issuer
        ));
    }
    let url = match endpoint {
        Endpoint::Jwks => meta.jwks_uri,
        Endpoint::Introspection => meta.introspection_endpoint,
    }
    .ok_or_else(|| format!("the metadata document has no {}", endpoint.member()))?;
    check_url(&url, allow_http)
}

/// Finds the issuer's `jwks_uri`.
pub(crate) async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    limits: &FetchLimits,
    allow_http: bool,
) -> Result<Url, String> {
    discover_endpoint(client, issuer, Endpoint::Jwks, limits, allow_http).await
}

/// Finds one of the issuer's endpoints in its metadata document.
pub(crate) async fn discover_endpoint(
    client: &reqwest::Client,
    issuer: &str,
    endpoint: Endpoint,
    limits: &FetchLimits,
    allow_http: bool,
) -> Result<Url, String> {
    let base = check_url(issuer, allow_http)?;
    let mut errors = Vec::new();
    for url in metadata_urls(&base) {
        match fetch::get(client, &url, limits).await {
            Ok(doc) => return endpoint_from_metadata(&doc.body, issuer, endpoint, allow_http),
            Err(e @ FetchError::Status(_)) => errors.push(format!("GET {url}: {e}")),
            Err(e) => return Err(format!("GET {url}: {e}")),
        }
    }
    Err(format!("discovery failed: {}", errors.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_both_metadata_urls() {
        let [oidc, rfc] = metadata_urls(&Url::parse("https://a.example/tenant/v2.0").unwrap());
        assert_eq!(
            oidc.as_str(),
            "https://a.example/tenant/v2.0/.well-known/openid-configuration"
        );
        assert_eq!(
            rfc.as_str(),
            "https://a.example/.well-known/oauth-authorization-server/tenant/v2.0"
        );
        let [oidc, rfc] = metadata_urls(&Url::parse("https://a.example").unwrap());
        assert_eq!(
            oidc.as_str(),
            "https://a.example/.well-known/openid-configuration"
        );
        assert_eq!(
            rfc.as_str(),
            "https://a.example/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn http_only_on_loopback_unless_allowed() {
        assert!(check_url("https://idp.example/jwks", false).is_ok());
        for ok in [
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]/jwks",
            "http://127.9.9.9/",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        assert!(check_url("http://idp.example/jwks", false).is_err());
        assert!(check_url("http://idp.example/jwks", true).is_ok());
        assert!(check_url("file:///etc/passwd", true).is_err());
        assert!(check_url("/jwks", true).is_err());
    }

    #[test]
    fn metadata_issuer_must_match_exactly() {
        let doc = br#"{"issuer":"https://a.example/","jwks_uri":"https://a.example/jwks"}"#;
        assert!(jwks_uri_from_metadata(doc, "https://a.example", false).is_err());
        assert_eq!(
            jwks_uri_from_metadata(doc, "https://a.example/", false)
                .unwrap()
                .as_str(),
            "https://a.example/jwks"
        );
        let insecure = br#"{"issuer":"https://a.example","jwks_uri":"http://evil.example/jwks"}"#;
        assert!(jwks_uri_from_metadata(insecure, "https://a.example", false).is_err());
        assert!(jwks_uri_from_metadata(b"{}", "https://a.example", false).is_err());
    }
}
