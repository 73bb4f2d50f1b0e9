//! What the server publishes: RFC 8414 metadata and the JWKS, which can be told
//! to misbehave for cache and fetch tests.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AUTHORIZE_PATH, INTROSPECT_PATH, JWKS_PATH, REVOKE_PATH, Shared, TOKEN_PATH, lock};

/// How `GET /jwks` answers; set with
/// [`set_jwks_behavior`](super::AuthorizationServerHandle::set_jwks_behavior).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JwksBehavior {
    /// The published keys, with the configured `Cache-Control`.
    #[default]
    Normal,
    /// This status with an empty body (an invalid status code becomes 500).
    Status(u16),
    /// This body verbatim, as `200` with `Content-Type: application/json`.
    Garbage(String),
    /// The normal answer after this real (tokio) delay, to test fetch timeouts;
    /// it does not use the injected clock, which governs only token time.
    Delay(Duration),
    /// `{"keys": []}`.
    EmptySet,
    /// A valid JWKS padded with an extra member to at least this many bytes, so
    /// only a size cap can reject it.
    Oversized(usize),
    /// `302 Found` to this URL.
    RedirectTo(String),
}

/// `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`.
pub(super) async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "issuer": shared.issuer,
        "authorization_endpoint": shared.endpoint(AUTHORIZE_PATH),
        "token_endpoint": shared.endpoint(TOKEN_PATH),
        "jwks_uri": shared.endpoint(JWKS_PATH),
        "introspection_endpoint": shared.endpoint(INTROSPECT_PATH),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint": shared.endpoint(REVOKE_PATH),
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": shared.scopes_supported(),
        "authorization_response_iss_parameter_supported": true,
        // Login classes: password alone, or password and one-time code.
        "acr_values_supported": ["pwd", "mfa"],
        "dpop_signing_alg_values_supported": shared.dpop.algs.split(' ').collect::<Vec<_>>(),
    }))
}

/// `GET /jwks`.
pub(super) async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let behavior = lock(&shared.jwks_behavior).clone();
    match behavior {
        JwksBehavior::Normal => key_set(&shared, published_keys(&shared)),
        JwksBehavior::Delay(delay) => {
            tokio::time::sleep(delay).await;
            key_set(&shared, published_keys(&shared))
        }
        JwksBehavior::EmptySet => key_set(&shared, json!({ "keys": [] })),
        JwksBehavior::Oversized(size) => {
            let mut body = published_keys(&shared);
            if let Some(members) = body.as_object_mut() {
                members.insert("padding".into(), "x".repeat(size).into());
            }
            key_set(&shared, body)
        }
        JwksBehavior::Status(code) => StatusCode::from_u16(code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        JwksBehavior::Garbage(body) => {
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        JwksBehavior::RedirectTo(location) => match HeaderValue::try_from(location) {
            Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
    }
}

fn published_keys(shared: &Shared) -> Value {
    let keys = lock(&shared.keys).published(shared.now());
    let keys: Vec<Value> = keys.iter().map(|k| k.public_jwk()).collect();
    json!({ "keys": keys })
}

fn key_set(shared: &Shared, body: Value) -> Response {
    let mut response = Json(body).into_response();
    if let Some(max_age) = shared.jwks_max_age {
        let value = format!("public, max-age={}", max_age.as_secs());
        if let Ok(value) = HeaderValue::try_from(value) {
            response.headers_mut().insert(header::CACHE_CONTROL, value);
        }
    }
    response
}
