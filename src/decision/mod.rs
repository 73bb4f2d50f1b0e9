//! The one decision shared by every front door: the gateway, Envoy's gRPC
//! `Authorization/Check` and the HTTP check for nginx, Caddy, Traefik and Envoy's
//! HTTP mode (feature `gateway`).
//!
//! A [`Decider`] holds the route table (`[[route]]`), the claim headers
//! (`[forward] claims_to_headers`) and a [`Guard`]. [`Decider::decide`] turns a
//! request (method, target with its query, headers) into an [`Allow`] (the headers
//! to set and to remove before the request goes on) or a [`Deny`] (the complete
//! response for the client), in this order:
//!
//! 1. the target's path is normalised ([`path`]); a refused path is a 400;
//! 2. the first route whose prefix (whole segments, compared on the decoded
//!    path: [`path::match_key`]) and methods match is taken;
//!    routes covering the path but not the method: 405 with `Allow`; none: 404;
//!    both before the token is looked at;
//! 3. unless the route is public, the token is validated by the guard as the
//!    layer does (its RFC 6750 answer on failure: 400, 401, 503 with
//!    `Retry-After`): a DPoP proof against the request's method and the guard's
//!    public URL plus the target's path, on every request (a cached token
//!    included), and a certificate-bound token against
//!    [`CheckRequest::certificate`]; then the route's requirements (`dpop_bound`,
//!    403 `insufficient_scope` with `scope=`, claims, step-up);
//! 4. allowed: the claim headers to set from the verified token (a claim the
//!    upstream would read differently, not a string or not printable ASCII
//!    without a space at either end, refuses the request with 401
//!    `invalid_token`), and the client-sent headers to remove, on public routes
//!    too: claim headers in any case and with `_` for `-`, route and method
//!    overrides (`X-Original-URL`, `X-HTTP-Method-Override`...), look-alikes of
//!    reserved names, and unless [`HeaderRules::trust_forwarded`] the
//!    client-address headers (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`...).
//!
//! Refusals are the layer's responses byte for byte (realm and error hook applied).
//!
//! ```
//! use bearer_guard::decision::{CheckRequest, Decider, Decision};
//! use bearer_guard::gateway::RouteConfig;
//! use bearer_guard::{Guard, Issuer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Nothing is fetched below: the public route needs no token, and a request
//! // without one is refused before any key lookup.
//! let guard = Guard::builder()
//!     .issuer(Issuer::new("https://login.example.com").jwks_uri("https://login.example.com/jwks"))
//!     .audience("https://api.example.com")
//!     .build()?;
//! let routes: Vec<RouteConfig> = toml::from_str::<toml::Table>(r#"
//!     [[route]]
//!     path = "/health"
//!     public = true
//!     [[route]]
//!     path = "/orders"
//!     scopes_all = ["orders:read"]
//! "#)?["route"].clone().try_into()?;
//! let claims = [("sub".to_owned(), "x-auth-sub".to_owned())].into();
//! let decider = Decider::from_config(guard, &routes, &claims, Default::default())?;
//!
//! let headers = http::HeaderMap::new();
//! let health = decider.decide(&CheckRequest::new(&http::Method::GET, "/health", &headers)).await;
//! assert!(matches!(health, Decision::Allow(_)));
//! let Decision::Deny(deny) = decider.decide(&CheckRequest::new(&http::Method::GET, "/orders/7", &headers)).await
//! else { unreachable!() };
//! assert_eq!(deny.response.status(), 401);
//! assert_eq!(deny.response.headers()["www-authenticate"], "Bearer");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response, StatusCode, Uri};

use crate::error::TokenProblem;
use crate::response::is_grpc;
use crate::sender::ClientCertificate;
use crate::{AuthError, Guard, VerifiedToken};

pub mod config;
pub(crate) mod headers;
pub mod path;
mod route;

pub use config::{ConfigError, DpopConfig, IssuerConfig, ResourceMetadataConfig, RouteConfig};

use headers::ClaimHeaders;
use route::{Route, Selected};

/// The route table, the claim headers and the guard: decides every request.
/// Share it in an `Arc`.
#[derive(Debug)]
pub struct Decider {
    guard: Guard,
    routes: Vec<Route>,
    claims: ClaimHeaders,
    rules: HeaderRules,
}

/// How the client's own headers are treated besides the claim headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Remove `Authorization` from allowed requests (`[forward] strip_authorization`).
    pub strip_authorization: bool,
    /// Keep `Forwarded`, `X-Forwarded-*` and the client-IP headers (`X-Real-IP`...)
    /// under their exact names: the peer is a trusted proxy that set them
    /// (`[forward] trust_forwarded`; always for the check services, whose proxy
    /// sets them itself). Their `_` look-alikes are removed either way.
    pub trust_forwarded: bool,
}

/// How a refusal is written ([`CheckRequest::refusals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalForm {
    /// A status, `WWW-Authenticate` and an RFC 6750-style JSON body.
    Http,
    /// gRPC trailers-only: HTTP 200 with `grpc-status` and `grpc-message`
    /// (`WWW-Authenticate` kept), as the layer answers gRPC clients.
    Grpc,
}

/// The request to decide on, as a front door received it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CheckRequest<'a> {
    /// The client's method.
    pub method: &'a Method,
    /// The client's request target: the path with its query (origin form), or an
    /// absolute URI whose path and query are taken.
    pub target: &'a str,
    /// The client's request headers (the bearer token among them).
    pub headers: &'a HeaderMap,
    /// The form of a refusal: gRPC (trailers-only, `grpc-status`), as the layer
    /// answers a gRPC request, or plain HTTP. [`CheckRequest::new`] sets it from
    /// `content-type`, like the layer; a check service that hands its refusal to
    /// a proxy asks for HTTP ([`CheckRequest::http_answers`]).
    pub refusals: RefusalForm,
    /// The TLS client certificate of the client's connection, for
    /// certificate-bound tokens (RFC 8705 §3). `None`: the client presented none
    /// (a certificate-bound token is then refused).
    pub certificate: Option<&'a ClientCertificate>,
    /// `target` as the server already parsed it (origin form), so it is not
    /// parsed again: the gateway's hyper request URI.
    parsed: Option<&'a PathAndQuery>,
}

impl<'a> CheckRequest<'a> {
    /// A request; refusals in gRPC form when `headers` say the request is gRPC.
    pub fn new(method: &'a Method, target: &'a str, headers: &'a HeaderMap) -> Self {
        CheckRequest {
            method,
            target,
            headers,
            refusals: if is_grpc(headers) {
                RefusalForm::Grpc
            } else {
                RefusalForm::Http
            },
            certificate: None,
            parsed: None,
        }
    }

    /// `target` already parsed by the server: the same path and query,
    /// origin-form.
    pub(crate) fn parsed_target(mut self, parsed: Option<&'a PathAndQuery>) -> Self {
        self.parsed = parsed;
        self
    }

    /// The client's TLS certificate: the gateway's TLS listener, Envoy's
    /// `attributes.source.certificate`, or a trusted proxy's certificate header.
    pub fn client_certificate(mut self, certificate: Option<&'a ClientCertificate>) -> Self {
        self.certificate = certificate;
        self
    }

    /// Refusals as HTTP responses whatever the request's `content-type` (a proxy
    /// in front renders them for gRPC clients itself, as Envoy does).
    pub fn http_answers(mut self) -> Self {
        self.refusals = RefusalForm::Http;
        self
    }
}

/// What the decision is.
#[derive(Debug)]
pub enum Decision {
    /// The request may go on, with these header changes.
    Allow(Allow),
    /// The request is refused with this response.
    Deny(Deny),
}

/// An allowed request.
#[derive(Debug)]
#[non_exhaustive]
pub struct Allow {
    /// The matched route: its index in `[[route]]` (from 0).
    pub route_index: usize,
    /// The normalised path (what the route matched, and what to forward).
    pub path: String,
    /// The original query, if any.
    pub query: Option<String>,
    /// The verified token (`None` on a public route).
    pub token: Option<VerifiedToken>,
    /// The matched route's `path` as configured (for logs).
    pub route: Arc<str>,
    /// Headers to set, replacing every existing copy.
    pub headers_to_set: Vec<(HeaderName, HeaderValue)>,
    /// Client-sent headers to remove (never one of `headers_to_set`).
    pub headers_to_remove: Vec<HeaderName>,
    /// The `DPoP-Nonce` for the client's response (RFC 9449 §8.2): set when the
    /// guard demands DPoP nonces and the token was DPoP-bound, so the client
    /// moves on to the current nonce before its own expires.
    pub dpop_nonce: Option<HeaderValue>,
}

/// A refused request.
#[derive(Debug)]
#[non_exhaustive]
pub struct Deny {
    /// The complete answer: status, headers (`WWW-Authenticate`, `Retry-After`,
    /// `Allow`, `Cache-Control`, `Content-Type`) and the small JSON body.
    pub response: Response<Bytes>,
    /// Why, for metrics and logs.
    pub outcome: Outcome,
    /// What failed, in a few stable words ([`AuthError::reason`] for a token
    /// refusal, else `bad_request`, `not_found` or `method_not_allowed`).
    pub reason: &'static str,
    /// The matched route's `path` as configured (none for 400, 404 and 405).
    pub route: Option<Arc<str>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The target was refused (400).
    BadRequest,
    /// No route covers the path (404).
    NotFound,
    /// Routes cover the path, none the method (405).
    MethodNotAllowed,
    /// The token is missing or invalid, or keys are unavailable (400/401/503).
    Rejected,
    /// The token lacks a scope the route requires (403).
    Forbidden,
    /// Not a refusal: the request is for the RFC 9728 metadata document, which
    /// the response is (200), answered without a token and without forwarding.
    ResourceMetadata,
}

impl Outcome {
    /// The metrics label: `bad_request`, `not_found`, `method_not_allowed`,
    /// `rejected`, `forbidden`, `resource_metadata`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::BadRequest => "bad_request",
            Outcome::NotFound => "not_found",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::Rejected => "rejected",
            Outcome::Forbidden => "forbidden",
            Outcome::ResourceMetadata => "resource_metadata",
        }
    }
}

impl Decider {
    /// Checks `[[route]]` and `[forward] claims_to_headers` (errors name the key).
    pub fn from_config(
        guard: Guard,
        routes: &[RouteConfig],
        claims_to_headers: &BTreeMap<String, String>,
        rules: HeaderRules,
    ) -> Result<Decider, ConfigError> {
        if routes.is_empty() {
            return Err(ConfigError::at(
                "route",
                "no [[route]]: at least one is required (path = \"/\" for any valid token)",
            ));
        }
        let routes = routes
            .iter()
            .enumerate()
            .map(|(i, r)| Route::from_config(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        if guard.inner.dpop.is_none()
            && let Some(i) = routes.iter().position(|r| r.dpop_bound)
        {
            return Err(ConfigError::at(
                format!("route[{i}].dpop_bound"),
                "DPoP-bound tokens are accepted only with a [dpop] section (public_url)",
            ));
        }
        Ok(Decider {
            guard,
            routes,
            claims: ClaimHeaders::from_config(claims_to_headers)?,
            rules,
        })
    }

    /// Joins array claims forwarded in headers with `separator` instead of `,`
    /// (`[forward] claims_separator`): 1 to 8 printable ASCII characters, not
    /// only spaces. An element containing it refuses the request.
    pub fn claims_separator(mut self, separator: &str) -> Result<Decider, ConfigError> {
        self.claims = self.claims.with_separator(separator)?;
        Ok(self)
    }

    /// The guard validating the tokens.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The configured claim header names.
    pub fn claim_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.claims.names()
    }

    /// Decides on one request (see the [module docs](self)).
    pub async fn decide(&self, request: &CheckRequest<'_>) -> Decision {
        // The target the server parsed, else `target` parsed here (an
        // absolute-form target keeps its scheme and authority in `parsed`).
        let parsed = match request.parsed {
            Some(_) => None,
            None => match split_target(request.target) {
                Some(uri) => Some(uri),
                None => return deny(Outcome::BadRequest, bad_request("invalid request target")),
            },
        };
        let Some(pq) = request
            .parsed
            .or_else(|| parsed.as_ref().and_then(Uri::path_and_query))
            .filter(|pq| pq.path().starts_with('/'))
        else {
            return deny(Outcome::BadRequest, bad_request("invalid request target"));
        };
        let (raw_path, query) = (pq.path(), pq.query());
        if let Some(metadata) = &self.guard.inner.resource_metadata
            && let Some(response) = metadata.respond(request.method, raw_path)
        {
            return deny(Outcome::ResourceMetadata, response);
        }
        let path = match path::normalize_path(raw_path) {
            Ok(p) => p,
            Err(e) => return deny(Outcome::BadRequest, bad_request(&e.to_string())),
        };
        // Like the 404, the 405 is answered before authentication: without a
        // matching route there are no requirements to check a token against, and
        // verifying a signature only to refuse the request anyway would be work
        // an anonymous client could make us do. What the 405 tells such a client
        // (this path is routed, for these methods) is configuration, which the
        // 404/401 difference already shows for paths.
        let key = path::decoded(&path);
        let route = match route::select(&self.routes, request.method, &key) {
            Selected::Route(route) => route,
            Selected::MethodNotAllowed(allowed) => {
                return deny(Outcome::MethodNotAllowed, method_not_allowed(&allowed));
            }
            Selected::NotFound => {
                return deny(
                    Outcome::NotFound,
                    own(StatusCode::NOT_FOUND, "not_found", "no route for this path"),
                );
            }
        };
        let token = if route.public {
            None
        } else {
            // The layer's validation: a DPoP proof against the original method
            // and the configured public URL plus the path the client sent (never
            // its Host), on every request; the certificate for bound tokens.
            let uri = parsed.clone().unwrap_or_else(|| Uri::from(pq.clone()));
            let validated = self
                .guard
                .validate_request_with(request.method, &uri, request.headers, request.certificate)
                .await;
            match validated {
                Ok(token) => Some(token),
                Err(e) => return refuse(Outcome::Rejected, self.refusal(&e, request), &e, route),
            }
        };
        if let (Some(t), Some(require)) = (&token, &route.requirements)
            && let Err(e) = require.check_at(t, self.guard.inner.clock().unix_seconds())
        {
            let outcome = if e.status() == StatusCode::UNAUTHORIZED {
                Outcome::Rejected
            } else {
                Outcome::Forbidden
            };
            return refuse(outcome, self.refusal(&e, request), &e, route);
        }
        let headers_to_set = match token.as_ref().map(|t| self.claims.values(t)) {
            None => Vec::new(),
            Some(Ok(claims)) => claims,
            Some(Err(e)) => {
                // A verified token the upstream would read differently: refused
                // as an invalid token rather than forwarded altered or without.
                tracing::warn!(error = %e, "refused: a claim cannot be forwarded as is");
                let e = AuthError::InvalidToken(TokenProblem::BadClaims(e.to_string()));
                return refuse(Outcome::Rejected, self.refusal(&e, request), &e, route);
            }
        };
        // Setting a header replaces every copy of it, so those names are not also
        // removed (Envoy applies `headers_to_remove` after the headers it sets).
        let mut headers_to_remove: Vec<HeaderName> = self
            .claims
            .untrusted(request.headers, self.rules.trust_forwarded)
            .into_iter()
            .filter(|name| !headers_to_set.iter().any(|(set, _)| set == name))
            .collect();
        if self.rules.strip_authorization && request.headers.contains_key(header::AUTHORIZATION) {
            headers_to_remove.push(header::AUTHORIZATION);
        }
        let dpop_nonce = token
            .as_ref()
            .and_then(|t| self.guard.inner.success_nonce(t));
        Decision::Allow(Allow {
            route_index: route.index,
            path,
            query: query.map(str::to_owned),
            token,
            route: route.name.clone(),
            headers_to_set,
            headers_to_remove,
            dpop_nonce,
        })
    }

    /// The guard's answer: on the scheme the client used (`DPoP` or `Bearer`),
    /// with the `DPoP` challenge when DPoP is accepted.
    fn refusal(&self, error: &AuthError, request: &CheckRequest<'_>) -> Response<Bytes> {
        self.guard.inner.answerer.responder.answer(
            error,
            request.headers,
            request.refusals == RefusalForm::Grpc,
        )
    }
}

/// The URI, path and query of an origin-form or absolute-form target.
fn split_target(target: &str) -> Option<Uri> {
    let uri: Uri = target.parse().ok()?;
    // `*` (OPTIONS *) and authority-form have no path to route.
    uri.path_and_query()
        .is_some_and(|pq| pq.path().starts_with('/'))
        .then_some(uri)
}

fn deny(outcome: Outcome, response: Response<Bytes>) -> Decision {
    Decision::Deny(Deny {
        response,
        outcome,
        reason: outcome.as_str(),
        route: None,
    })
}

/// A refusal on `route` because of `error`.
fn refuse(
    outcome: Outcome,
    response: Response<Bytes>,
    error: &AuthError,
    route: &Route,
) -> Decision {
    Decision::Deny(Deny {
        response,
        outcome,
        reason: error.reason(),
        route: Some(route.name.clone()),
    })
}

fn bad_request(description: &str) -> Response<Bytes> {
    own(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// A small JSON answer, `no-store`.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The decision's own small JSON answer (404, 405, 400 for a refused target).
pub(crate) fn own(status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
    json(
        status,
        &serde_json::json!({ "error": error, "error_description": description }),
    )
}

/// 405, with `Allow` listing the methods of the routes covering the path (RFC 9110
/// §15.5.6).
fn method_not_allowed(allowed: &[Method]) -> Response<Bytes> {
    let mut r = own(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "no route for this method on this path",
    );
    let list = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    // Methods are tokens, so this always succeeds; left out rather than panic.
    if let Ok(value) = HeaderValue::from_str(&list) {
        r.headers_mut().insert(header::ALLOW, value);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_path_and_query_in_both_forms() {
        let parts = |t| {
            split_target(t).map(|u| {
                let pq = u.path_and_query().unwrap();
                (pq.path().to_owned(), pq.query().map(str::to_owned))
            })
        };
        assert_eq!(
            parts("/orders/7?x=1&y"),
            Some(("/orders/7".to_owned(), Some("x=1&y".to_owned())))
        );
        assert_eq!(
            parts("http://api.example.com/a/b"),
            Some(("/a/b".to_owned(), None))
        );
        assert_eq!(split_target("*"), None);
        assert_eq!(split_target("/a b"), None);
        assert_eq!(split_target(""), None);
    }
}
