//! OAuth 2.0 Protected Resource Metadata (RFC 9728): the document that tells a
//! client which authorization servers issue tokens for this API, and how to
//! present them.
//!
//! Configure it with [`GuardBuilder::resource_metadata`](crate::GuardBuilder::resource_metadata).
//! The guard then
//!
//! - builds the document once, at build time: `resource`, `authorization_servers`
//!   (the guard's exact issuers unless named explicitly), `bearer_methods_supported`
//!   (`["header"]`), `dpop_signing_alg_values_supported` and
//!   `dpop_bound_access_tokens_required` from its DPoP settings, and the optional
//!   fields you set;
//! - serves it at the well-known URL of RFC 9728 §3.1 — `/.well-known/oauth-protected-resource`
//!   inserted between the host and the path, so the resource
//!   `https://api.example.com/mcp` has its metadata at
//!   `https://api.example.com/.well-known/oauth-protected-resource/mcp`. The
//!   [`GuardLayer`](crate::GuardLayer), the gateway and the ext-authz check answer
//!   `GET` and `HEAD` on that path themselves, without a token;
//! - adds `resource_metadata="<that URL>"` to every `WWW-Authenticate` challenge
//!   (RFC 9728 §5.1), `Bearer` and `DPoP` alike, so a client that knows nothing
//!   but the resource URL can find its authorization server from the first 401.
//!
//! ```
//! use bearer_guard::{Guard, Issuer, ResourceMetadata};
//!
//! # fn build() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = Guard::builder()
//!     .issuer(Issuer::new("https://login.example.com").jwks_uri("https://login.example.com/jwks"))
//!     .audience("https://api.example.com/mcp")
//!     .resource_metadata(
//!         ResourceMetadata::new("https://api.example.com/mcp")
//!             .scopes_supported(["tools:read", "tools:call"])
//!             .resource_name("Example MCP server"),
//!     )
//!     .build()?;
//! let metadata = guard.resource_metadata().expect("configured");
//! assert_eq!(
//!     metadata.url(),
//!     "https://api.example.com/.well-known/oauth-protected-resource/mcp"
//! );
//! assert_eq!(metadata.path(), "/.well-known/oauth-protected-resource/mcp");
//! let doc: serde_json::Value = serde_json::from_slice(metadata.document())?;
//! assert_eq!(doc["authorization_servers"][0], "https://login.example.com");
//! assert_eq!(doc["bearer_methods_supported"][0], "header");
//! # Ok(()) }
//! # build().unwrap();
//! ```
//!
//! **What is not listed.** Tenant templates (`Issuer::tenant_template`) have no
//! one issuer URL to publish: they are left out of `authorization_servers`; name
//! the ones clients should use with [`ResourceMetadata::authorization_server`].
//! A token cookie ([`GuardBuilder::token_cookie`](crate::GuardBuilder::token_cookie))
//! is not an RFC 6750 method, so `bearer_methods_supported` stays `["header"]`.
//! The signed form (`signed_metadata`, §2.2) is not produced.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{Map, Value};

use crate::keys::discovery::check_url;

/// The well-known URI suffix of RFC 9728 §3.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// What the protected resource says about itself (RFC 9728 §2). Give it to
/// [`GuardBuilder::resource_metadata`](crate::GuardBuilder::resource_metadata);
/// see the [module docs](self).
#[derive(Debug, Clone)]
#[must_use]
pub struct ResourceMetadata {
    resource: String,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<String>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
    resource_policy_uri: Option<String>,
    resource_tos_uri: Option<String>,
    tls_client_certificate_bound: bool,
    max_age: Duration,
}

impl ResourceMetadata {
    /// Metadata for the resource identifier `resource`: the `https` URL clients
    /// address the API by (and, usually, the audience of its tokens; RFC 8707),
    /// without a fragment. It is published exactly as written here, since a
    /// client compares it with the URL it started from (RFC 9728 §3.3).
    pub fn new(resource: impl Into<String>) -> Self {
        ResourceMetadata {
            resource: resource.into(),
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            resource_name: None,
            resource_documentation: None,
            resource_policy_uri: None,
            resource_tos_uri: None,
            tls_client_certificate_bound: false,
            max_age: Duration::from_secs(3600),
        }
    }

    /// Lists this authorization server (its issuer identifier). Once one is
    /// named, the guard's issuers are no longer listed automatically.
    pub fn authorization_server(mut self, issuer: impl Into<String>) -> Self {
        self.authorization_servers.push(issuer.into());
        self
    }

    /// `scopes_supported`: the scopes the resource's routes ask for.
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported
            .extend(scopes.into_iter().map(Into::into));
        self
    }

    /// `resource_name`: a human-readable name for end users.
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// `resource_documentation`: a URL of developer documentation.
    pub fn resource_documentation(mut self, url: impl Into<String>) -> Self {
        self.resource_documentation = Some(url.into());
        self
    }

    /// `resource_policy_uri`: a URL of the data-use policy.
    pub fn resource_policy_uri(mut self, url: impl Into<String>) -> Self {
        self.resource_policy_uri = Some(url.into());
        self
    }

    /// `resource_tos_uri`: a URL of the terms of service.
    pub fn resource_tos_uri(mut self, url: impl Into<String>) -> Self {
        self.resource_tos_uri = Some(url.into());
        self
    }

    /// Publishes `tls_client_certificate_bound_access_tokens: true` (RFC 8705).
    /// Say so only when the server in front passes client certificates to the
    /// guard (see [`sender`](crate::sender)): the guard cannot tell by itself.
    pub fn tls_client_certificate_bound_access_tokens(mut self, supported: bool) -> Self {
        self.tls_client_certificate_bound = supported;
        self
    }

    /// How long clients and caches may keep the document (`Cache-Control:
    /// public, max-age=…`; default one hour).
    pub fn cache_max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }
}

/// What the guard knows that goes into the document.
pub(crate) struct GuardFacts<'a> {
    pub issuers: Vec<&'a str>,
    /// The accepted DPoP proof algorithms, when DPoP is configured.
    pub dpop_algs: Option<Vec<&'a str>>,
    /// Whether every issuer requires DPoP-bound tokens.
    pub dpop_required: bool,
    pub allow_http: bool,
}

/// The built document, its URL and the response serving it.
#[derive(Debug, Clone)]
pub struct PublishedMetadata {
    url: Box<str>,
    path: Box<str>,
    document: Bytes,
    cache_control: HeaderValue,
}

impl PublishedMetadata {
    /// The metadata URL, as advertised in `resource_metadata="…"`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The path part of [`url`](Self::url), which the guard answers.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The JSON document.
    pub fn document(&self) -> &[u8] {
        &self.document
    }

    /// The answer to a request for the document, or `None` when `path` is not
    /// the well-known path: 200 with the JSON for `GET` and `HEAD`, 405 for any
    /// other method.
    pub fn respond(&self, method: &Method, path: &str) -> Option<Response<Bytes>> {
        if path != &*self.path {
            return None;
        }
        let mut response = if method == Method::GET || method == Method::HEAD {
            let mut r = Response::new(self.document.clone());
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(CACHE_CONTROL, self.cache_control.clone());
            r
        } else {
            let mut r = crate::response::json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the resource metadata is read with GET",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        };
        // Public by definition, and read by browser-based clients from other origins.
        response
            .headers_mut()
            .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        Some(response)
    }
}

/// The metadata URL of a resource identifier (RFC 9728 §3.1): the well-known
/// suffix between the host and the path (a lone `/` path dropped), the query kept.
pub fn metadata_url(resource: &str) -> Result<String, String> {
    let url = url::Url::parse(resource)
        .map_err(|e| format!("resource {resource:?} is not an absolute URL: {e}"))?;
    Ok(well_known(&url).0)
}

fn well_known(url: &url::Url) -> (String, String) {
    let path = match url.path() {
        "/" | "" => "",
        p => p,
    };
    // The path as the server sees it: percent-encoded, as the URL is.
    let path = format!("{WELL_KNOWN}{path}");
    let origin = url.origin().ascii_serialization();
    let mut full = format!("{origin}{path}");
    if let Some(q) = url.query() {
        full.push('?');
        full.push_str(q);
    }
    (full, path)
}

impl ResourceMetadata {
    /// Checks the settings and builds the document.
    pub(crate) fn publish(&self, facts: &GuardFacts<'_>) -> Result<PublishedMetadata, String> {
        let url =
            check_url(&self.resource, facts.allow_http).map_err(|e| format!("resource: {e}"))?;
        if url.fragment().is_some() {
            return Err(format!(
                "resource {:?} has a fragment; RFC 9728 forbids one",
                self.resource
            ));
        }
        if url.host().is_none() {
            return Err(format!("resource {:?} has no host", self.resource));
        }
        let (full, path) = well_known(&url);
        // Goes inside a quoted-string of WWW-Authenticate.
        if full.contains(['"', '\\']) || full.chars().any(|c| c.is_control()) {
            return Err(format!(
                "resource {:?} cannot be written in a challenge",
                self.resource
            ));
        }
        for (name, value) in [
            ("resource_documentation", &self.resource_documentation),
            ("resource_policy_uri", &self.resource_policy_uri),
            ("resource_tos_uri", &self.resource_tos_uri),
        ] {
            if let Some(v) = value {
                url::Url::parse(v)
                    .map_err(|e| format!("{name} {v:?} is not an absolute URL: {e}"))?;
            }
        }
        for s in &self.scopes_supported {
            if !crate::scope::is_scope_token(s) {
                return Err(format!("scopes_supported: {s:?} is not a scope token"));
            }
        }
        let servers: Vec<&str> = if self.authorization_servers.is_empty() {
            facts.issuers.clone()
        } else {
            for a in &self.authorization_servers {
                check_url(a, facts.allow_http).map_err(|e| format!("authorization server: {e}"))?;
            }
            self.authorization_servers
                .iter()
                .map(String::as_str)
                .collect()
        };

        let mut doc = Map::new();
        doc.insert("resource".into(), self.resource.clone().into());
        if !servers.is_empty() {
            doc.insert("authorization_servers".into(), servers.into());
        }
        if !self.scopes_supported.is_empty() {
            doc.insert(
                "scopes_supported".into(),
                self.scopes_supported.clone().into(),
            );
        }
        doc.insert("bearer_methods_supported".into(), vec!["header"].into());
        let texts = [
            ("resource_name", &self.resource_name),
            ("resource_documentation", &self.resource_documentation),
            ("resource_policy_uri", &self.resource_policy_uri),
            ("resource_tos_uri", &self.resource_tos_uri),
        ];
        for (name, value) in texts {
            if let Some(v) = value {
                doc.insert(name.into(), v.clone().into());
            }
        }
        if self.tls_client_certificate_bound {
            doc.insert(
                "tls_client_certificate_bound_access_tokens".into(),
                Value::Bool(true),
            );
        }
        if let Some(algs) = &facts.dpop_algs {
            doc.insert(
                "dpop_signing_alg_values_supported".into(),
                algs.clone().into(),
            );
            doc.insert(
                "dpop_bound_access_tokens_required".into(),
                Value::Bool(facts.dpop_required),
            );
        }
        let cache_control =
            HeaderValue::from_str(&format!("public, max-age={}", self.max_age.as_secs()))
                .map_err(|e| e.to_string())?;
        Ok(PublishedMetadata {
            url: full.into(),
            path: path.into(),
            document: Bytes::from(Value::Object(doc).to_string()),
            cache_control,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> GuardFacts<'static> {
        GuardFacts {
            issuers: vec!["https://as.example.com"],
            dpop_algs: None,
            dpop_required: false,
            allow_http: false,
        }
    }

    #[test]
    fn well_known_url_goes_between_host_and_path() {
        let cases = [
            (
                "https://api.example.com",
                "https://api.example.com/.well-known/oauth-protected-resource",
            ),
            (
                "https://api.example.com/",
                "https://api.example.com/.well-known/oauth-protected-resource",
            ),
            (
                "https://api.example.com/mcp",
                "https://api.example.com/.well-known/oauth-protected-resource/mcp",
            ),
            (
                "https://api.example.com:8443/a/b/",
                "https://api.example.com:8443/.well-known/oauth-protected-resource/a/b/",
            ),
            (
                "https://api.example.com/r?x=1",
                "https://api.example.com/.well-known/oauth-protected-resource/r?x=1",
            ),
        ];
        for (resource, expected) in cases {
            assert_eq!(metadata_url(resource).unwrap(), expected, "{resource}");
        }
    }

    #[test]
    fn document_lists_issuers_header_method_and_dpop() {
        let mut f = facts();
        f.dpop_algs = Some(vec!["ES256", "EdDSA"]);
        f.dpop_required = true;
        let p = ResourceMetadata::new("https://api.example.com/mcp")
            .scopes_supported(["a", "b"])
            .resource_name("API")
            .tls_client_certificate_bound_access_tokens(true)
            .publish(&f)
            .unwrap();
        let doc: Value = serde_json::from_slice(p.document()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "resource": "https://api.example.com/mcp",
                "authorization_servers": ["https://as.example.com"],
                "scopes_supported": ["a", "b"],
                "bearer_methods_supported": ["header"],
                "resource_name": "API",
                "tls_client_certificate_bound_access_tokens": true,
                "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
                "dpop_bound_access_tokens_required": true,
            })
        );
        assert_eq!(p.path(), "/.well-known/oauth-protected-resource/mcp");
    }

    #[test]
    fn explicit_authorization_servers_replace_the_issuers() {
        let p = ResourceMetadata::new("https://api.example.com")
            .authorization_server("https://other.example.com")
            .publish(&facts())
            .unwrap();
        let doc: Value = serde_json::from_slice(p.document()).unwrap();
        assert_eq!(
            doc["authorization_servers"],
            serde_json::json!(["https://other.example.com"])
        );
    }

    #[test]
    fn refuses_bad_resources_and_scopes() {
        for bad in [
            "not a url",
            "http://api.example.com/",
            "https://api.example.com/#frag",
            "ftp://api.example.com/",
        ] {
            assert!(
                ResourceMetadata::new(bad).publish(&facts()).is_err(),
                "{bad}"
            );
        }
        let e = ResourceMetadata::new("https://api.example.com")
            .scopes_supported(["a b"])
            .publish(&facts());
        assert!(e.is_err());
        let e = ResourceMetadata::new("https://api.example.com")
            .resource_documentation("nope")
            .publish(&facts());
        assert!(e.is_err());
    }

    #[test]
    fn answers_get_and_head_only_on_its_path() {
        let p = ResourceMetadata::new("https://api.example.com/mcp")
            .cache_max_age(Duration::from_secs(60))
            .publish(&facts())
            .unwrap();
        assert!(p.respond(&Method::GET, "/mcp").is_none());
        assert!(
            p.respond(&Method::GET, "/.well-known/oauth-protected-resource")
                .is_none()
        );
        let r = p.respond(&Method::GET, p.path()).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[CACHE_CONTROL], "public, max-age=60");
        assert_eq!(
            p.respond(&Method::HEAD, p.path()).unwrap().status(),
            StatusCode::OK
        );
        let r = p.respond(&Method::POST, p.path()).unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }
}
