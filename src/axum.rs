//! axum extractors (feature `axum`, on by default).
//!
//! - [`VerifiedToken`] itself, and `Option<VerifiedToken>`;
//! - [`Claims<T>`]: the verified claims deserialized into the application's type.
//!
//! Both read what [`GuardLayer`](crate::GuardLayer) left in the request's
//! extensions. Their rejections answer like the layer does (same realm, same
//! error hook): 401 when no verified token is present (the layer is missing, which
//! is logged as an error), 401 `invalid_token` when the claims do not fit `T`.
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
use crate::error::{AuthError, Responder, TokenProblem, is_grpc};
use crate::layer::GuardHandle;

/// The verified claims, deserialized into `T`.
#[derive(Debug, Clone)]
pub struct Claims<T>(pub T);

/// Why an extractor could not produce its value.
#[derive(Debug)]
pub struct ClaimsRejection {
    error: AuthError,
    responder: Responder,
    grpc: bool,
}

impl ClaimsRejection {
    /// The underlying error.
    pub fn error(&self) -> &AuthError {
        &self.error
    }
}

impl IntoResponse for ClaimsRejection {
    fn into_response(self) -> Response {
        self.responder
            .respond(&self.error, self.grpc)
            .map(axum::body::Body::from)
    }
}

fn responder(parts: &Parts) -> Responder {
    parts
        .extensions
        .get::<GuardHandle>()
        .map(|h| h.0.inner.responder.clone())
        .unwrap_or_default()
}

fn verified(parts: &Parts) -> Result<VerifiedToken, ClaimsRejection> {
    match parts.extensions.get::<VerifiedToken>() {
        Some(token) => Ok(token.clone()),
        None => {
            tracing::error!("no verified token in the request: is the Guard layer applied?");
            Err(ClaimsRejection {
                error: AuthError::MissingToken,
                responder: Responder::default(),
                grpc: is_grpc(&parts.headers),
            })
        }
    }
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
            tracing::debug!(error = %e, "verified claims do not fit the handler's type");
            ClaimsRejection {
                error: AuthError::InvalidToken(TokenProblem::BadClaims(e.to_string())),
                responder: responder(parts),
                grpc: is_grpc(&parts.headers),
            }
        })
    }
}
