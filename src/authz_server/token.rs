//! `POST /token`: client authentication and the three grants.

use headers::HeaderMapExt as _;
use headers::authorization::{Authorization, Basic};
use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::builder::ClientConfig;
use super::oauth::{
    ErrorCode, OAuthError, Params, grant_scope, is_pkce_value, no_store, parse_scope, random_token,
    secrets_equal,
};
use super::store::{Grant, IssuedAccess};
use super::{Shared, lock};

/// The grants this server implements.
enum GrantType {
    ClientCredentials,
    AuthorizationCode,
    RefreshToken,
}

impl GrantType {
    fn parse(value: &str) -> Result<Self, OAuthError> {
        match value {
            "client_credentials" => Ok(Self::ClientCredentials),
            "authorization_code" => Ok(Self::AuthorizationCode),
            "refresh_token" => Ok(Self::RefreshToken),
            _ => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "grant_type is not supported by this server",
            )),
        }
    }
}

pub(super) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable_body(&rejection),
    };
    let jkt = match dpop_key(&shared, &headers).await {
        Ok(jkt) => jkt,
        Err(response) => return response,
    };
    match respond(&shared, &headers, &body, jkt.as_deref()) {
        Ok(body) => (no_store(), Json(body)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The thumbprint of the key of the request's DPoP proof (RFC 9449 §5), if it
/// has one: the proof is checked as a resource server would (one header,
/// `dpop+jwt`, a public key that verifies it, `htm` POST, `htu` this endpoint,
/// `iat`, the nonce when demanded, never replayed), without `ath`. The proof is
/// recorded before the grant is checked: a proof is single-use either way.
async fn dpop_key(shared: &Shared, headers: &HeaderMap) -> Result<Option<String>, Response> {
    if !headers.contains_key("dpop") {
        return Ok(None);
    }
    let now = shared.now();
    let path = http::Uri::from_static(super::TOKEN_PATH);
    let checked = shared
        .dpop
        .check_proof(headers, &http::Method::POST, &path, now)
        .and_then(|proof| {
            shared.dpop.check_nonce(proof.nonce.as_deref(), now)?;
            Ok(proof)
        });
    let refusal = |error: crate::AuthError| {
        let code = match error {
            crate::AuthError::UseDpopNonce { .. } => ErrorCode::UseDpopNonce,
            _ => ErrorCode::InvalidDpopProof,
        };
        let mut response = OAuthError::new(code, error.description()).into_response();
        if let crate::AuthError::UseDpopNonce { nonce } = &error
            && let Ok(value) = http::HeaderValue::from_str(nonce)
        {
            response.headers_mut().insert("dpop-nonce", value);
        }
        response
    };
    let proof = checked.map_err(refusal)?;
    shared
        .dpop
        .record(&proof.jkt, &proof.jti, now)
        .await
        .map_err(refusal)?;
    Ok(Some(proof.jkt))
}

/// The answer to a form body that could not be read; 413 stays 413 (the
/// router adds `Connection: close`).
pub(super) fn unreadable_body(rejection: &BytesRejection) -> Response {
    let mut response =
        OAuthError::invalid_request("the request body could not be read").into_response();
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    }
    response
}

fn respond(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "body must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(body);
    params.reject_duplicates()?;
    let grant_type = GrantType::parse(params.require("grant_type")?)?;
    let client = authenticate(shared, headers, &params)?;
    match grant_type {
        GrantType::ClientCredentials => client_credentials(shared, client, &params, jkt),
        GrantType::AuthorizationCode => authorization_code(shared, client, &params, jkt),
        GrantType::RefreshToken => refresh_token(shared, client, &params, jkt),
    }
}

pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            essence
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn invalid_client(description: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClient, description)
}

/// Identifies and authenticates the client: `client_secret_basic`,
/// `client_secret_post`, or `none` (a public client sending only `client_id`).
pub(super) fn authenticate<'a>(
    shared: &'a Shared,
    headers: &HeaderMap,
    params: &Params,
) -> Result<&'a ClientConfig, OAuthError> {
    let body_id = params.get("client_id")?;
    let body_secret = params.get("client_secret")?;
    let (id, secret) = match (basic_credentials(headers)?, body_secret) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        (Some((id, secret)), None) => {
            if body_id.is_some_and(|body_id| body_id != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the HTTP Basic credentials",
                ));
            }
            (id, Some(secret))
        }
        (None, secret) => {
            let id = body_id.ok_or_else(|| invalid_client("client authentication is required"))?;
            (id.to_owned(), secret.map(str::to_owned))
        }
    };
    let failed = || invalid_client("client authentication failed");
    let client = shared.clients.get(&id).ok_or_else(failed)?;
    match (&client.secret, secret) {
        (Some(expected), Some(given)) if secrets_equal(expected, &given) => Ok(client),
        (None, None) => Ok(client),
        _ => Err(failed()),
    }
}

/// The `(client_id, client_secret)` of an `Authorization: Basic` header, each
/// form-urlencoded inside the base64 as RFC 6749 §2.3.1 requires.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let malformed = || invalid_client("malformed HTTP Basic credentials");
    let is_basic = value
        .as_bytes()
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"basic "));
    if !is_basic {
        return Err(invalid_client(
            "only HTTP Basic client authentication is supported",
        ));
    }
    // The headers crate decodes the base64 and splits at the first ':'.
    let basic = headers
        .typed_get::<Authorization<Basic>>()
        .ok_or_else(malformed)?;
    let (id, secret) = (basic.0.username(), basic.0.password());
    let form_decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| malformed())
    };
    Ok(Some((form_decode(id)?, form_decode(secret)?)))
}

fn client_credentials(
    shared: &Shared,
    client: &ClientConfig,
    params: &Params,
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    if client.is_public() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "public clients cannot use the client_credentials grant",
        ));
    }
    let requested = parse_scope(params.get("scope")?)?;
    let grant = Grant {
        client_id: client.id().to_owned(),
        subject: client.id().to_owned(),
        scope: grant_scope(requested, client.allowed_scopes())?,
        audiences: shared.audiences_for(&params.resources())?,
        dpop_jkt: None,
        authentication: None,
    };
    // Spent whether or not the rest succeeds; only the handle makes tickets.
    let extra = match params.get(super::CLAIMS_TICKET)? {
        None => None,
        Some(ticket) => match lock(&shared.claim_tickets).remove(ticket) {
            Some((owner, claims)) if owner == client.id() => Some(claims),
            _ => return Err(OAuthError::invalid_request("unknown claims ticket")),
        },
    };
    let access = shared.sign_access_token_with(&grant, jkt, extra.as_ref())?;
    Ok(shared.token_response(&grant, access.token, None, jkt.is_some()))
}

fn authorization_code(
    shared: &Shared,
    client: &ClientConfig,
    params: &Params,
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    let code = params.require("code")?;
    let redirect_uri = params.require("redirect_uri")?;
    let verifier = params.require("code_verifier")?;
    if !is_pkce_value(verifier) {
        return Err(OAuthError::invalid_request(
            "code_verifier must be 43 to 128 unreserved characters",
        ));
    }
    let now = shared.now();
    let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
    // One lock from check to commit: a refused request consumes nothing, and
    // two concurrent redemptions cannot both pass the check.
    let mut store = lock(&shared.store);
    let mut checked = store.check_code(
        code,
        client.id(),
        redirect_uri,
        &challenge,
        &params.resources(),
        now,
    )?;
    // A public client's refresh tokens are bound to the key it redeemed the
    // code with (RFC 9449 §5.8); a confidential client authenticates anyway.
    if let (true, Some(jkt)) = (client.is_public(), jkt) {
        checked.bind_dpop(jkt);
    }
    let grant = checked.grant.clone();
    let access = shared.sign_access_token(&grant, jkt)?;
    let refresh = store.complete_code(code, checked, access.issued, shared.refresh_expiry(), now);
    Ok(shared.token_response(&grant, access.token, Some(refresh), jkt.is_some()))
}

fn refresh_token(
    shared: &Shared,
    client: &ClientConfig,
    params: &Params,
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    let token = params.require("refresh_token")?;
    let requested = parse_scope(params.get("scope")?)?;
    let now = shared.now();
    let mut store = lock(&shared.store);
    let checked = store.check_refresh(token, client.id(), requested, &params.resources(), now)?;
    if let Some(bound) = &checked.grant.dpop_jkt
        && jkt != Some(bound.as_str())
    {
        // Refused before anything is spent: the token stays usable with its key.
        return Err(OAuthError::invalid_grant(
            "the refresh token is bound to another DPoP key",
        ));
    }
    let grant = checked.grant.clone();
    let access = shared.sign_access_token(&grant, jkt)?;
    let refresh =
        store.complete_refresh(token, checked, access.issued, shared.refresh_expiry(), now);
    Ok(shared.token_response(&grant, access.token, Some(refresh), jkt.is_some()))
}

/// A signed access token and what the store remembers of it.
struct SignedAccess {
    token: String,
    issued: IssuedAccess,
}

impl Shared {
    /// Signs an RFC 9068 access token for `grant`. `aud` is one string, or an
    /// array when the grant names several resources (RFC 8707 §2).
    /// With `jkt` the token is DPoP-bound to that key (`cnf.jkt`, RFC 9449 §6).
    fn sign_access_token(
        &self,
        grant: &Grant,
        jkt: Option<&str>,
    ) -> Result<SignedAccess, OAuthError> {
        self.sign_access_token_with(grant, jkt, None)
    }

    /// [`sign_access_token`](Self::sign_access_token) with the client's extra
    /// claims, then `extra` over them; neither may replace the server's own.
    fn sign_access_token_with(
        &self,
        grant: &Grant,
        jkt: Option<&str>,
        extra: Option<&serde_json::Map<String, Value>>,
    ) -> Result<SignedAccess, OAuthError> {
        let now = self.now();
        let jti = random_token();
        let expires_at = now.saturating_add(self.access_token_lifetime.as_secs());
        let aud = match grant.audiences.as_slice() {
            [one] => json!(one),
            several => json!(several),
        };
        let mut claims = json!({
            "iss": self.issuer,
            "sub": grant.subject,
            "aud": aud,
            "exp": expires_at,
            "iat": now,
            "nbf": now,
            "jti": jti,
            "client_id": grant.client_id,
            "scope": grant.scope.join(" "),
        });
        if let Some(members) = claims.as_object_mut() {
            // Checked at start and per call, but the rule is enforced here too.
            let registered = self.clients.get(&grant.client_id).map(|c| &c.claims);
            for (name, value) in registered.into_iter().chain(extra).flatten() {
                if !super::builder::SERVER_CLAIMS.contains(&name.as_str()) {
                    members.insert(name.clone(), value.clone());
                }
            }
            if let Some(jkt) = jkt {
                members.insert("cnf".into(), json!({ "jkt": jkt }));
            }
            if let Some(login) = &grant.authentication {
                members.insert("acr".into(), login.acr.clone().into());
                members.insert("auth_time".into(), login.auth_time.into());
            }
        }
        let token = if self.opaque_access_tokens {
            lock(&self.opaque).issue(claims, expires_at, now)
        } else {
            let key = lock(&self.keys).active();
            key.sign_jwt(&Value::Null, &claims)
                .map_err(|_| OAuthError::new(ErrorCode::ServerError, "signing failed"))?
        };
        Ok(SignedAccess {
            token,
            issued: IssuedAccess { jti, expires_at },
        })
    }

    /// When a refresh token issued now expires.
    fn refresh_expiry(&self) -> u64 {
        self.now()
            .saturating_add(self.refresh_token_lifetime.as_secs())
    }

    fn token_response(
        &self,
        grant: &Grant,
        access_token: String,
        refresh: Option<String>,
        dpop: bool,
    ) -> Value {
        let mut body = json!({
            "access_token": access_token,
            "token_type": if dpop { "DPoP" } else { "Bearer" },
            "expires_in": self.access_token_lifetime.as_secs(),
            "scope": grant.scope.join(" "),
        });
        if let (Some(refresh), Some(members)) = (refresh, body.as_object_mut()) {
            members.insert("refresh_token".into(), refresh.into());
        }
        body
    }
}
