//! How a refusal is answered: the RFC 6750 / RFC 9449 challenges, the JSON body,
//! the gRPC trailers-only form, and the user's error hook. The error types and
//! their status, code and phrases are in [`error`](crate::error).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::clock::SharedClock;
use crate::error::{AuthError, ErrorCode};

impl AuthError {
    /// The default RFC 6750 response: status, `WWW-Authenticate`, a small JSON body.
    ///
    /// `realm` must already be a safe quoted-string value (the builder checks it).
    pub fn to_response(&self, realm: Option<&str>) -> Response<Bytes> {
        self.render(realm, None, false, None)
    }

    /// The response with the challenges of the accepted schemes: `Bearer` unless
    /// DPoP is required, `DPoP algs="…"` when DPoP is accepted (RFC 9449 §7.1).
    /// The error goes on the scheme the client used, and on `DPoP` for a
    /// proof or nonce problem.
    pub(crate) fn render(
        &self,
        realm: Option<&str>,
        dpop: Option<&DpopChallenge>,
        client_used_dpop: bool,
        resource_metadata: Option<&str>,
    ) -> Response<Bytes> {
        let dpop_error = matches!(
            self,
            AuthError::InvalidDpopProof(_) | AuthError::UseDpopNonce { .. }
        ) || (client_used_dpop && dpop.is_some());
        let bearer =
            dpop.is_none_or(|d| d.bearer_too) || (!dpop_error && self.error_code().is_some());
        let scope = match self {
            // Scope tokens are %x21 / %x23-5B / %x5D-7E (RFC 6749 §3.3), checked
            // when the route was configured, so they are safe inside quotes.
            AuthError::InsufficientScope { required } => Some(required.join(" ")),
            _ => None,
        };
        let (acr, max_age_text) = match self {
            // acr values pass the scope-token grammar when the route is built.
            AuthError::InsufficientUserAuthentication {
                acr_values,
                max_age,
            } => (
                acr_values.as_ref().map(|a| a.join(" ")),
                max_age.map(|m| m.to_string()),
            ),
            _ => (None, None),
        };
        let challenge = |scheme: &str, with_error: bool, algs: Option<&str>| {
            let mut c = Challenge::new(scheme);
            c.param("realm", realm);
            if let (true, Some(code)) = (with_error, self.error_code()) {
                c.param("error", Some(code.as_str()));
                c.param("error_description", Some(self.description()));
                c.param("scope", scope.as_deref());
                c.param("acr_values", acr.as_deref());
                c.param("max_age", max_age_text.as_deref());
            }
            c.param("algs", algs);
            // RFC 9728 §5.1; the builder checked the URL has no quote or backslash.
            c.param("resource_metadata", resource_metadata);
            c.0
        };

        let error = self.error_code().map_or(
            match self {
                AuthError::KeysUnavailable { .. }
                | AuthError::ReplayStoreUnavailable { .. }
                | AuthError::IntrospectionUnavailable { .. } => "temporarily_unavailable",
                _ => "unauthorized",
            },
            ErrorCode::as_str,
        );
        let mut response = json_response(self.status(), error, self.description());
        let headers = response.headers_mut();
        match self {
            AuthError::KeysUnavailable { retry_after, .. }
            | AuthError::ReplayStoreUnavailable { retry_after, .. }
            | AuthError::IntrospectionUnavailable { retry_after, .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
                return response;
            }
            AuthError::UseDpopNonce { nonce } => {
                if let Ok(value) = HeaderValue::from_str(nonce) {
                    headers.insert(DPOP_NONCE, value);
                }
            }
            _ => {}
        }
        let mut values = Vec::with_capacity(2);
        if bearer {
            values.push(challenge("Bearer", !dpop_error, None));
        }
        if let Some(dpop) = dpop {
            values.push(challenge("DPoP", dpop_error, Some(&dpop.algs)));
        }
        for value in values {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// The `DPoP-Nonce` response header (RFC 9449 §8.1).
pub(crate) const DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");

/// The `DPoP` challenge of a guard that accepts DPoP.
#[derive(Debug, Clone)]
pub(crate) struct DpopChallenge {
    /// The accepted proof algorithms, space-separated.
    pub algs: Arc<str>,
    /// Whether plain bearer tokens are accepted too (then both are challenged).
    pub bearer_too: bool,
}

/// One `WWW-Authenticate` challenge being written: `Scheme a="1", b="2"`.
struct Challenge(String);

impl Challenge {
    fn new(scheme: &str) -> Self {
        Challenge(scheme.to_owned())
    }

    /// Values are fixed phrases, checked realms, scope tokens or algorithm
    /// names: none contains a quote or backslash.
    fn param(&mut self, name: &str, value: Option<&str>) {
        let Some(value) = value else { return };
        self.0
            .push_str(if self.0.contains('=') { ", " } else { " " });
        self.0.push_str(name);
        self.0.push_str("=\"");
        self.0.push_str(value);
        self.0.push('"');
    }
}

/// Whether a request is gRPC: its refusal must then be a gRPC status, because a
/// gRPC client reads any non-gRPC HTTP answer as `INTERNAL`.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl AuthError {
    /// The gRPC status code for this error: `UNAUTHENTICATED` (16) for missing,
    /// malformed or invalid credentials, `PERMISSION_DENIED` (7) for a missing
    /// scope, `UNAVAILABLE` (14) when no keys could be loaded.
    pub fn grpc_status(&self) -> u8 {
        match self {
            AuthError::MissingToken
            | AuthError::InvalidRequest(_)
            | AuthError::InvalidToken(_)
            | AuthError::InsufficientUserAuthentication { .. } => 16,
            AuthError::InvalidDpopProof(_) | AuthError::UseDpopNonce { .. } => 16,
            AuthError::InsufficientScope { .. } | AuthError::RequirementNotMet { .. } => 7,
            AuthError::KeysUnavailable { .. }
            | AuthError::ReplayStoreUnavailable { .. }
            | AuthError::IntrospectionUnavailable { .. } => 14,
        }
    }

    /// The default answer to a gRPC request: a trailers-only response (HTTP 200,
    /// `content-type: application/grpc`, `grpc-status`, `grpc-message`), keeping
    /// the RFC 6750 `WWW-Authenticate` challenge.
    pub fn to_grpc_response(&self, realm: Option<&str>) -> Response<Bytes> {
        self.to_grpc_response_with(realm, None, false, None)
    }

    fn to_grpc_response_with(
        &self,
        realm: Option<&str>,
        dpop: Option<&DpopChallenge>,
        used_dpop: bool,
        resource_metadata: Option<&str>,
    ) -> Response<Bytes> {
        let (mut parts, _) = self
            .render(realm, dpop, used_dpop, resource_metadata)
            .into_parts();
        parts.status = StatusCode::OK;
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        parts.headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        // Descriptions are printable ASCII without '%': nothing to percent-encode.
        parts
            .headers
            .insert("grpc-message", HeaderValue::from_static(self.description()));
        Response::from_parts(parts, Bytes::new())
    }
}

/// The answer when a requirement or an extractor finds no guard in front of it: a
/// server misconfiguration (500, gRPC `INTERNAL`), never a pass and never a 401
/// that would blame the client.
pub(crate) fn misconfigured(grpc: bool) -> Response<Bytes> {
    if grpc {
        let mut r = Response::new(Bytes::new());
        let headers = r.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("grpc-status", HeaderValue::from_static("13"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("server misconfigured"),
        );
        return r;
    }
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "authentication is misconfigured on this server",
    )
}

/// The one JSON error body: `{"error": …, "error_description": …}`, not cacheable.
pub(crate) fn json_response(status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Replaces the whole error response (status, headers, body); see
/// [`GuardBuilder::error_handler`](crate::GuardBuilder::error_handler).
pub(crate) type ErrorHandler = Arc<dyn Fn(&Refusal<'_>) -> Response<Bytes> + Send + Sync>;

/// A refused request, as an [error hook](crate::GuardBuilder::error_handler)
/// sees it: why it was refused, the request's headers, the form its answer
/// should take, and the answer the guard would have sent.
///
/// ```
/// use bearer_guard::{Guard, Issuer};
///
/// # fn run(jwks: &str) -> Result<(), bearer_guard::BuildError> {
/// let guard = Guard::builder()
///     .issuer(Issuer::new("https://login.example.com").jwks_document(jwks))
///     .audience("https://api.example.com")
///     .error_handler(|refusal| {
///         // Keep the gRPC form (and the challenges, `DPoP-Nonce`, `Retry-After`)
///         // of the default answer; replace only the body of HTTP refusals.
///         let mut response = refusal.default_response();
///         if !refusal.is_grpc() {
///             let text = format!("refused: {}", refusal.error().description());
///             *response.body_mut() = text.into();
///             response.headers_mut().insert(
///                 http::header::CONTENT_TYPE,
///                 http::HeaderValue::from_static("text/plain"),
///             );
///         }
///         response
///     })
///     .build()?;
/// # let _ = guard; Ok(()) }
/// ```
#[derive(Clone, Copy)]
pub struct Refusal<'a> {
    error: &'a AuthError,
    headers: &'a http::HeaderMap,
    grpc: bool,
    used_dpop: bool,
    responder: &'a Responder,
}

impl<'a> Refusal<'a> {
    /// Why the request was refused.
    pub fn error(&self) -> &'a AuthError {
        self.error
    }

    /// The refused request's headers (for a check service: the proxied
    /// request's, as the proxy sent them).
    pub fn request_headers(&self) -> &'a http::HeaderMap {
        self.headers
    }

    /// Whether the answer is expected in gRPC form (a gRPC request to the layer,
    /// not a check service's answer to its proxy).
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// The answer the guard sends without a hook: RFC 6750 / RFC 9449
    /// challenges, `DPoP-Nonce`, `Retry-After`, the JSON body, or the gRPC
    /// trailers-only form.
    pub fn default_response(&self) -> Response<Bytes> {
        self.responder.render(self.error, self.grpc, self.used_dpop)
    }
}

impl fmt::Debug for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refusal")
            .field("error", self.error)
            .field("grpc", &self.grpc)
            .finish_non_exhaustive()
    }
}

/// What answering a request after the guard's layer needs of the guard that
/// checked its token: how it refuses and its clock. Every
/// [`VerifiedToken`](crate::VerifiedToken) the guard admits carries it (one
/// `Arc` shared by the guard and its tokens), so a route's requirement and
/// the extractors answer as that guard would, with no second request
/// extension.
pub(crate) struct Answerer {
    pub responder: Responder,
    pub clock: SharedClock,
}

/// How the layers answer a refused request: the realm and an optional hook.
#[derive(Clone, Default)]
pub(crate) struct Responder {
    pub realm: Option<Arc<str>>,
    pub handler: Option<ErrorHandler>,
    /// Set when the guard accepts DPoP (an `Arc`: rejections carry a responder).
    pub dpop: Option<Arc<DpopChallenge>>,
    /// The RFC 9728 metadata URL, named in every challenge.
    pub resource_metadata: Option<Arc<str>>,
}

static NO_HEADERS: std::sync::LazyLock<http::HeaderMap> =
    std::sync::LazyLock::new(http::HeaderMap::new);

impl Responder {
    /// The answer without a request at hand: the user's hook (which sees no
    /// request headers), else RFC 6750, in gRPC form when `grpc`.
    pub(crate) fn respond(&self, error: &AuthError, grpc: bool) -> Response<Bytes> {
        self.answer(error, &NO_HEADERS, grpc)
    }

    /// The answer to a request with these headers: gRPC or not, and which
    /// scheme its `Authorization` header used.
    pub(crate) fn respond_to(
        &self,
        error: &AuthError,
        request: &http::HeaderMap,
    ) -> Response<Bytes> {
        self.answer(error, request, is_grpc(request))
    }

    /// [`respond_to`](Self::respond_to) with the form chosen by the caller (a
    /// check service answers its proxy in HTTP form whatever the request).
    pub(crate) fn answer(
        &self,
        error: &AuthError,
        request: &http::HeaderMap,
        grpc: bool,
    ) -> Response<Bytes> {
        let used_dpop = request.get(http::header::AUTHORIZATION).is_some_and(|v| {
            v.as_bytes()
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"dpop "))
        });
        match &self.handler {
            Some(handler) => handler(&Refusal {
                error,
                headers: request,
                grpc,
                used_dpop,
                responder: self,
            }),
            None => self.render(error, grpc, used_dpop),
        }
    }

    /// The default answer (no hook).
    fn render(&self, error: &AuthError, grpc: bool, used_dpop: bool) -> Response<Bytes> {
        let realm = self.realm.as_deref();
        let metadata = self.resource_metadata.as_deref();
        if grpc {
            error.to_grpc_response_with(realm, self.dpop.as_deref(), used_dpop, metadata)
        } else {
            error.render(realm, self.dpop.as_deref(), used_dpop, metadata)
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("realm", &self.realm)
            .field("handler", &self.handler.as_ref().map(|_| "custom"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{RequestProblem, TokenProblem};
    use std::time::Duration;

    fn www(r: &Response<Bytes>) -> &str {
        r.headers()[WWW_AUTHENTICATE].to_str().unwrap()
    }

    #[test]
    fn missing_token_gets_401_without_error_code() {
        let r = AuthError::MissingToken.to_response(Some("orders"));
        assert_eq!(r.status(), 401);
        assert_eq!(www(&r), r#"Bearer realm="orders""#);
        let r = AuthError::MissingToken.to_response(None);
        assert_eq!(www(&r), "Bearer");
    }

    #[test]
    fn every_challenge_names_the_resource_metadata_last() {
        let responder = Responder {
            realm: Some("api".into()),
            dpop: Some(Arc::new(DpopChallenge {
                algs: "ES256".into(),
                bearer_too: true,
            })),
            resource_metadata: Some(
                "https://a.example/.well-known/oauth-protected-resource".into(),
            ),
            ..Responder::default()
        };
        let r = responder.respond(&AuthError::MissingToken, false);
        let all: Vec<&str> = r
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            all,
            [
                r#"Bearer realm="api", resource_metadata="https://a.example/.well-known/oauth-protected-resource""#,
                r#"DPoP realm="api", algs="ES256", resource_metadata="https://a.example/.well-known/oauth-protected-resource""#,
            ]
        );
        let r = responder.respond(
            &AuthError::InsufficientScope {
                required: vec!["a".into()].into(),
            },
            true,
        );
        assert_eq!(r.headers()["grpc-status"], "7");
        assert!(www(&r).ends_with(
            r#"scope="a", resource_metadata="https://a.example/.well-known/oauth-protected-resource""#
        ));
        // No metadata configured: no parameter.
        assert_eq!(www(&AuthError::MissingToken.to_response(None)), "Bearer");
    }

    #[test]
    fn malformed_request_gets_400_invalid_request() {
        let r = AuthError::InvalidRequest(RequestProblem::MultipleAuthorizationHeaders)
            .to_response(None);
        assert_eq!(r.status(), 400);
        assert_eq!(
            www(&r),
            r#"Bearer error="invalid_request", error_description="more than one Authorization header""#
        );
    }

    #[test]
    fn expired_token_gets_401_invalid_token_with_safe_description() {
        let e = AuthError::InvalidToken(TokenProblem::Expired {
            exp: 1_732_460_000,
            now: 1_732_460_312,
            leeway: 60,
        });
        let r = e.to_response(Some("api"));
        assert_eq!(r.status(), 401);
        assert_eq!(
            www(&r),
            r#"Bearer realm="api", error="invalid_token", error_description="token expired""#
        );
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(
            e.to_string(),
            "invalid token: exp 1732460000 is 312 s before now 1732460312 (leeway 60 s)"
        );
    }

    #[test]
    fn insufficient_scope_gets_403_with_scope() {
        let e = AuthError::InsufficientScope {
            required: vec!["orders:write".to_owned(), "orders:admin".to_owned()].into(),
        };
        let r = e.to_response(None);
        assert_eq!(r.status(), 403);
        assert_eq!(
            www(&r),
            r#"Bearer error="insufficient_scope", error_description="token lacks a required scope", scope="orders:write orders:admin""#
        );
    }

    #[test]
    fn keys_unavailable_gets_503_with_retry_after_and_no_challenge() {
        let e = AuthError::KeysUnavailable {
            issuer: "https://a".into(),
            reason: "connection refused".into(),
            retry_after: Duration::from_secs(30),
        };
        let r = e.to_response(Some("api"));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "30");
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn grpc_requests_get_a_grpc_status() {
        let mut grpc = http::HeaderMap::new();
        grpc.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        let responder = Responder::default();
        let r = responder.respond(&AuthError::MissingToken, is_grpc(&grpc));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "16");
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
        assert!(r.body().is_empty());
        let scope = AuthError::InsufficientScope {
            required: vec!["a".to_owned()].into(),
        };
        assert_eq!(
            responder.respond(&scope, is_grpc(&grpc)).headers()["grpc-status"],
            "7"
        );
        let plain = responder.respond(&scope, is_grpc(&http::HeaderMap::new()));
        assert_eq!(plain.status(), 403);
    }

    #[test]
    fn descriptions_never_echo_token_values() {
        let e = TokenProblem::IssuerNotAllowed {
            iss: "https://evil\"".into(),
            allowed: vec!["https://a".into()],
        };
        assert_eq!(e.description(), "token issuer not accepted");
        let r = AuthError::InvalidToken(e).to_response(None);
        assert!(!www(&r).contains("evil"));
    }

    #[test]
    fn error_hook_sees_the_request_and_can_keep_the_default_answer() {
        let hook: ErrorHandler = Arc::new(|refusal: &Refusal<'_>| {
            let mut r = refusal.default_response();
            r.headers_mut().insert(
                "x-grpc-seen",
                HeaderValue::from_static(if refusal.is_grpc() { "yes" } else { "no" }),
            );
            if let Some(agent) = refusal.request_headers().get("user-agent") {
                r.headers_mut().insert("x-agent", agent.clone());
            }
            r
        });
        let responder = Responder {
            realm: Some("api".into()),
            handler: Some(hook),
            dpop: Some(Arc::new(DpopChallenge {
                algs: "ES256".into(),
                bearer_too: true,
            })),
            resource_metadata: None,
        };
        // The nonce, the challenges and the realm survive a hook that builds on
        // the default answer (RFC 9449 §8: the client needs the nonce to retry).
        let mut request = http::HeaderMap::new();
        request.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("DPoP x"),
        );
        request.insert("user-agent", HeaderValue::from_static("probe/1"));
        let nonce = AuthError::UseDpopNonce {
            nonce: "n-1".into(),
        };
        let r = responder.respond_to(&nonce, &request);
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[DPOP_NONCE], "n-1");
        assert_eq!(r.headers()["x-agent"], "probe/1");
        assert_eq!(r.headers()["x-grpc-seen"], "no");
        let challenges: Vec<_> = r.headers().get_all(WWW_AUTHENTICATE).iter().collect();
        assert!(
            challenges
                .iter()
                .any(|c| c.to_str().unwrap().starts_with("DPoP ")
                    && c.to_str().unwrap().contains(r#"error="use_dpop_nonce""#)),
            "{challenges:?}"
        );
        // A gRPC request: the hook is told, and the default is the gRPC form.
        request.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let r = responder.respond_to(&AuthError::MissingToken, &request);
        assert_eq!(r.headers()["x-grpc-seen"], "yes");
        assert_eq!(r.headers()["grpc-status"], "16");
        // A check service's answer to its proxy is HTTP whatever the request.
        let r = responder.answer(&AuthError::MissingToken, &request, false);
        assert_eq!(r.headers()["x-grpc-seen"], "no");
        assert_eq!(r.status(), 401);
    }
}
