//! axum extractors (feature `axum`, on by default).
//!
//! - [`VerifiedToken`] itself, and `Option<VerifiedToken>`;
//! - [`Claims<T>`]: the verified claims deserialized into the application's type.
//!
//! Both read what [`GuardLayer`](crate::GuardLayer) left in the request's
//! extensions. Their rejections answer like the layer does (same realm, same
//! error hook):
//! - 401 `invalid_token` when the claims do not fit `T` (the serde error is logged
//!   at warn: it is usually the handler's type that is wrong, not the token);
//! - 401 with the challenge when an [optional](crate::GuardLayer::optional) guard let
//!   a request without credentials through and the handler needs a token
//!   (`Option<VerifiedToken>` is `None` then);
//! - 500 when no guard layer ran at all: a server misconfiguration, logged as an
//!   error, never a pass and never blamed on the client.
//!
//! [`AuthError`] is a response too, so a handler can validate a token it found
//! elsewhere with `guard.validate(token).await?` (the default RFC 6750 answer,
//! without the guard's realm or error hook).
//!
//! ```
//! use axum::{Router, routing::get};
//! use bearer_guard::{Guard, axum::Claims};
//!
//! #[derive(serde::Deserialize)]
//! struct OrderClaims { sub: String, tenant: String }
//!
//! async fn list_orders(Claims(c): Claims<OrderClaims>) -> String {
//!     format!("orders of {} in {}", c.sub, c.tenant)
//! }
//!
//! # fn app(guard: Guard) -> Router {
//! Router::new().route("/orders", get(list_orders)).layer(guard.layer())
//! # }
//! ```

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::claims::VerifiedToken;
use crate::error::{AuthError, TokenProblem};
use crate::layer::Anonymous;
use crate::response::{Responder, is_grpc, misconfigured};

/// The verified claims, deserialized into `T`.
#[derive(Debug, Clone)]
pub struct Claims<T>(pub T);

/// Why an extractor could not produce its value.
#[derive(Debug)]
pub struct ClaimsRejection {
    kind: RejectionKind,
    grpc: bool,
}

#[derive(Debug)]
enum RejectionKind {
    /// The answer is rendered when the rejection is made, while the request's
    /// headers are at hand for the error hook.
    Refused {
        error: AuthError,
        response: Box<http::Response<bytes::Bytes>>,
    },
    /// No guard layer ran: the server, not the client, is at fault.
    Misconfigured,
}

impl ClaimsRejection {
    /// The client's error, or `None` when the server is misconfigured (no guard
    /// layer in front of the extractor).
    pub fn error(&self) -> Option<&AuthError> {
        match &self.kind {
            RejectionKind::Refused { error, .. } => Some(error),
            RejectionKind::Misconfigured => None,
        }
    }
}

impl IntoResponse for ClaimsRejection {
    fn into_response(self) -> Response {
        match self.kind {
            RejectionKind::Refused { response, .. } => *response,
            RejectionKind::Misconfigured => misconfigured(self.grpc),
        }
        .map(axum::body::Body::from)
    }
}

/// The default RFC 6750 answer, so `guard.validate(token).await?` works in a
/// handler. It has no realm and skips the guard's error hook: for those, answer
/// with [`Guard::error_response`](crate::Guard::error_response).
///
/// ```
/// use axum::{extract::State, response::IntoResponse};
/// use bearer_guard::{AuthError, Guard};
///
/// async fn relay(State(guard): State<Guard>, body: String) -> Result<String, AuthError> {
///     let token = guard.validate(body.trim()).await?;
///     Ok(format!("token of {}", token.subject().unwrap_or("?")))
/// }
/// ```
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        Responder::default()
            .respond(&self, false)
            .map(axum::body::Body::from)
    }
}

/// A refusal answered as the guard in front answers (realm, error hook).
fn refused(parts: &Parts, error: AuthError) -> RejectionKind {
    let answerer = match parts.extensions.get::<VerifiedToken>() {
        Some(token) => token.answerer(),
        None => parts.extensions.get::<Anonymous>().map(|a| &a.0),
    };
    let response = match answerer {
        Some(answerer) => answerer.responder.respond_to(&error, &parts.headers),
        None => Responder::default().respond_to(&error, &parts.headers),
    };
    RejectionKind::Refused {
        error,
        response: Box::new(response),
    }
}

fn verified(parts: &Parts) -> Result<VerifiedToken, ClaimsRejection> {
    if let Some(token) = parts.extensions.get::<VerifiedToken>() {
        return Ok(token.clone());
    }
    let grpc = is_grpc(&parts.headers);
    let kind = match parts.extensions.get::<Anonymous>() {
        // An optional guard saw no credentials: the client must send some.
        Some(_) => refused(parts, AuthError::MissingToken),
        None => {
            tracing::error!("no verified token in the request: is the Guard layer applied?");
            RejectionKind::Misconfigured
        }
    };
    Err(ClaimsRejection { kind, grpc })
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedToken {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        verified(parts)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for VerifiedToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<VerifiedToken>().cloned())
    }
}

impl<S, T> FromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let token = verified(parts)?;
        token.claims::<T>().map(Claims).map_err(|e| {
            // Loud: a verified token that does not fit is most often a handler type
            // that asks for a claim the issuer does not send.
            tracing::warn!(
                error = %e,
                claims = std::any::type_name::<T>(),
                sub = token.subject(),
                "verified claims do not fit the handler's type"
            );
            ClaimsRejection {
                kind: refused(
                    parts,
                    AuthError::InvalidToken(TokenProblem::BadClaims(e.to_string())),
                ),
                grpc: is_grpc(&parts.headers),
            }
        })
    }
}

/// A router serving the guard's protected-resource metadata (RFC 9728) at its
/// well-known path, for apps that put the guard on some routes only
/// (`route_layer`); under `.layer(guard.layer())` the layer answers it already.
/// Empty when the guard has no [`ResourceMetadata`](crate::ResourceMetadata).
///
/// ```
/// use axum::{Router, routing::post};
/// use bearer_guard::{Guard, Issuer, ResourceMetadata};
///
/// # fn app() -> Result<Router, bearer_guard::BuildError> {
/// let guard = Guard::builder()
///     .issuer(Issuer::new("https://login.example.com").jwks_uri("https://login.example.com/jwks"))
///     .audience("https://api.example.com/mcp")
///     .resource_metadata(ResourceMetadata::new("https://api.example.com/mcp"))
///     .build()?;
/// let app = Router::new()
///     .route("/mcp", post(|| async { "ok" }).route_layer(guard.layer()))
///     .merge(bearer_guard::axum::resource_metadata_router(&guard));
/// # Ok(app) }
/// # app().unwrap();
/// ```
pub fn resource_metadata_router<S>(guard: &crate::Guard) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let Some(metadata) = guard.resource_metadata().cloned() else {
        return axum::Router::new();
    };
    let path = metadata.path().to_owned();
    axum::Router::new().route(
        &path,
        axum::routing::any(move |method: http::Method, uri: http::Uri| {
            let metadata = metadata.clone();
            async move {
                metadata
                    .respond(&method, uri.path())
                    .map(|r| r.map(axum::body::Body::from))
                    .unwrap_or_else(|| http::StatusCode::NOT_FOUND.into_response())
            }
        }),
    )
}
