//! Opaque access tokens, `POST /introspect` (RFC 7662) and `POST /revoke`
//! (RFC 7009). Both endpoints require an authenticated confidential client.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::oauth::{ErrorCode, OAuthError, Params, no_store, random_token};
use super::token::{authenticate, is_form, unreadable_body};
use super::{Shared, lock};

/// What the server remembers of an opaque access token it issued.
pub(super) struct OpaqueRecord {
    /// The introspection members (iss, sub, aud, exp, iat, nbf, jti, client_id, scope).
    claims: Value,
    expires_at: u64,
}

/// The opaque access tokens issued and not yet revoked, by token text.
/// Bounded like the other state tables: expired entries leave first, then
/// the one expiring soonest.
pub(super) struct OpaqueTokens {
    tokens: HashMap<String, OpaqueRecord>,
    capacity: usize,
}

impl OpaqueTokens {
    pub(super) fn new(capacity: usize) -> Self {
        OpaqueTokens {
            tokens: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Issues a fresh opaque token standing for `claims`.
    pub(super) fn issue(&mut self, claims: Value, expires_at: u64, now: u64) -> String {
        if self.tokens.len() >= self.capacity {
            self.tokens.retain(|_, r| r.expires_at > now);
        }
        if self.tokens.len() >= self.capacity
            && let Some(oldest) = self
                .tokens
                .iter()
                .min_by_key(|(_, r)| r.expires_at)
                .map(|(t, _)| t.clone())
        {
            self.tokens.remove(&oldest);
        }
        let token = random_token();
        self.tokens
            .insert(token.clone(), OpaqueRecord { claims, expires_at });
        token
    }

    fn active(&self, token: &str, now: u64) -> Option<&Value> {
        self.tokens
            .get(token)
            .filter(|r| now < r.expires_at)
            .map(|r| &r.claims)
    }

    fn revoke(&mut self, token: &str) -> bool {
        self.tokens.remove(token).is_some()
    }
}

/// Reads the form and authenticates the (confidential) client calling.
fn checked_form(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "body must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(body);
    params.reject_duplicates()?;
    let client = authenticate(shared, headers, &params)?;
    if client.is_public() {
        return Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "public clients cannot call this endpoint",
        ));
    }
    params.require("token")?;
    Ok(params)
}

/// Answers a request to `/introspect` or `/revoke` with `answer`, once its
/// form is read and its client authenticated.
fn with_form(
    shared: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    answer: impl FnOnce(&str) -> Response,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable_body(&rejection),
    };
    match checked_form(shared, headers, &body) {
        Ok(params) => answer(params.require("token").unwrap_or_default()),
        Err(error) => error.into_response(),
    }
}

/// `POST /introspect`: `{"active": true, ...claims}` for a live opaque token
/// this server issued, `{"active": false}` for anything else (RFC 7662 §2.2).
pub(super) async fn introspect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    shared.introspections.fetch_add(1, Ordering::SeqCst);
    with_form(&shared, &headers, body, |token| {
        introspection(&shared, token)
    })
}

fn introspection(shared: &Shared, token: &str) -> Response {
    let now = shared.now();
    let answer = match lock(&shared.opaque).active(token, now) {
        Some(claims) => {
            let mut answer = claims.clone();
            if let Some(members) = answer.as_object_mut() {
                members.insert("active".into(), true.into());
                members.insert("token_type".into(), "Bearer".into());
            }
            answer
        }
        None => json!({ "active": false }),
    };
    (no_store(), Json(answer)).into_response()
}

/// `POST /revoke`: an opaque access token is forgotten at once; an unknown
/// token also gets 200 (RFC 7009 §2.2). JWT access tokens cannot be revoked
/// here (`unsupported_token_type`): they stay valid until `exp`.
pub(super) async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    with_form(&shared, &headers, body, |token| revocation(&shared, token))
}

fn revocation(shared: &Shared, token: &str) -> Response {
    if token.split('.').count() == 3 {
        return OAuthError::new(
            ErrorCode::UnsupportedTokenType,
            "JWT access tokens cannot be revoked; they expire",
        )
        .into_response();
    }
    let revoked = lock(&shared.opaque).revoke(token);
    tracing::debug!(revoked, "revocation request");
    (no_store(), StatusCode::OK).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opaque_token_is_active_until_exp_and_gone_once_revoked() {
        let mut table = OpaqueTokens::new(10);
        let token = table.issue(json!({"sub": "a"}), 100, 0);
        assert!(table.active(&token, 99).is_some());
        assert!(table.active(&token, 100).is_none());
        assert!(table.revoke(&token));
        assert!(table.active(&token, 50).is_none());
        assert!(!table.revoke(&token));
    }

    #[test]
    fn a_full_table_drops_the_expired_then_the_soonest_expiring() {
        let mut table = OpaqueTokens::new(2);
        let first = table.issue(json!({}), 10, 0);
        let second = table.issue(json!({}), 20, 0);
        let third = table.issue(json!({}), 30, 0);
        assert!(table.active(&first, 5).is_none());
        assert!(table.active(&second, 5).is_some());
        assert!(table.active(&third, 5).is_some());
        assert_eq!(table.tokens.len(), 2);
    }
}
