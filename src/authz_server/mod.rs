//! A minimal but honest OAuth 2.1 authorization server that runs in-process.
//!
//! It exists so integration tests, examples and local development have a real
//! issuer to talk to over HTTP: RFC 8414 discovery, a JWKS with key rotation,
//! the client-credentials grant, the authorization-code grant with PKCE (S256)
//! behind a plain HTML login and consent page, and rotating refresh tokens.
//! Access tokens are RFC 9068 JWTs signed with RS256, ES256, ES512 or EdDSA.
//!
//! Time comes from an injectable [`Clock`](crate::clock::Clock), so tests expire codes and
//! rotate keys with a [`ManualClock`](crate::clock::ManualClock) instead of sleeping.
//! The handle also offers knobs for negative tests: [`mint`] signs arbitrary
//! tokens and [`set_jwks_behavior`] makes `/jwks` misbehave.
//!
//! It is not meant to face the internet: it serves plain HTTP, keeps everything in
//! memory, and its users and clients are fixed at start. It is strict all the
//! same: login and consent forms are bound to the browser (CSRF), a refused
//! `/token` request consumes nothing, and every table of its state is bounded
//! by count and age ([`max_state_entries`]).
//!
//! ```
//! use std::time::Duration;
//! use bearer_guard::authz_server::{AuthorizationServer, ClientConfig, SigningAlgorithm};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = AuthorizationServer::builder()
//!     .client(ClientConfig::confidential("svc", "svc-secret").scopes(["orders:read"]))
//!     .audience("https://api.example.com")
//!     .access_token_lifetime(Duration::from_secs(300))
//!     .signing_algorithm(SigningAlgorithm::Es256)
//!     .start()
//!     .await?;
//!
//! // A real POST to the server's own token endpoint.
//! let token = server.client_credentials_token("svc", &["orders:read"]).await?;
//! assert_eq!(token.split('.').count(), 3);
//! assert!(server.jwks_uri().starts_with(server.issuer()));
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`mint`]: AuthorizationServerHandle::mint
//! [`max_state_entries`]: AuthorizationServerBuilder::max_state_entries
//! [`set_jwks_behavior`]: AuthorizationServerHandle::set_jwks_behavior

mod authorize;
mod builder;
mod csrf;
mod dpop;
mod introspect;
mod keys;
mod metadata;
mod oauth;
mod pages;
mod store;
mod table;
mod token;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) use crate::sync::lock;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;

pub use builder::{AuthorizationServerBuilder, ClientConfig, IntoSharedClock};
pub use dpop::{DpopKey, ProofBuilder};
pub use keys::{SignWith, SigningAlgorithm};
pub use metadata::JwksBehavior;
pub use store::StoredState;

use csrf::FormKey;
use keys::{KeyRing, SigningKey};
use oauth::{ErrorCode, OAuthError};
use store::Store;

const AUTHORIZE_PATH: &str = "/authorize";
const TOKEN_PATH: &str = "/token";
const JWKS_PATH: &str = "/jwks";
const LOGIN_PATH: &str = "/login";
const CONSENT_PATH: &str = "/consent";
const INTROSPECT_PATH: &str = "/introspect";
const REVOKE_PATH: &str = "/revoke";
/// The largest form body `/token`, `/login` and `/consent` read; a larger one
/// gets `413` with `Connection: close`.
const MAX_FORM_BODY: usize = 64 * 1024;
/// The `/token` parameter naming a handle-made ticket of extra claims.
const CLAIMS_TICKET: &str = "bearer_guard_claims_ticket";
/// At most this many tickets are outstanding (each lives for one request).
const MAX_CLAIM_TICKETS: usize = 1024;

/// Entry point: `AuthorizationServer::builder()`.
#[derive(Debug)]
pub struct AuthorizationServer;

impl AuthorizationServer {
    /// A builder with no clients or users, RS256 keys, 5-minute access tokens,
    /// the system clock, and `127.0.0.1:0` (a free port).
    pub fn builder() -> AuthorizationServerBuilder {
        AuthorizationServerBuilder::default()
    }
}

/// Why the server could not start or a convenience call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzServerError {
    /// The listening socket could not be bound.
    #[error("could not bind {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The builder was given something unusable (e.g. a redirect URI that is not a URL).
    #[error("invalid authorization server configuration: {0}")]
    Config(String),
    /// The crypto library could not generate a signing key.
    #[error("signing key generation failed")]
    KeyGeneration,
    /// The HTTP call to the server's own endpoint failed.
    #[error("request to the authorization server failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The token endpoint answered with an OAuth error.
    #[error("token endpoint refused the request ({status}): {error}")]
    TokenEndpoint {
        /// The HTTP status.
        status: u16,
        /// The OAuth `error` code, or a summary when the body was not an OAuth error.
        error: String,
        /// The `error_description`, if any.
        description: Option<String>,
        /// The `DPoP-Nonce` the server sent, if any.
        nonce: Option<String>,
    },
}

/// The client a ticket was made for, and its claims.
type ClaimTicket = (String, serde_json::Map<String, Value>);

/// State shared by every request handler and the handle. Deliberately not
/// `Debug`: it holds user passwords and client secrets.
struct Shared {
    /// Checks DPoP proofs at `/token` (`htu` is the token endpoint).
    dpop: crate::sender::DpopVerifier,
    issuer: String,
    clients: HashMap<String, ClientConfig>,
    users: HashMap<String, String>,
    /// Each user's one-time code, for `mfa` logins.
    second_factors: HashMap<String, String>,
    /// Extra claims for one client-credentials request of the handle's own
    /// (`client_credentials_token_with`): ticket -> (client, claims). Only the
    /// handle creates tickets, so a client cannot add claims over the wire.
    claim_tickets: Mutex<HashMap<String, ClaimTicket>>,
    default_audience: String,
    audiences: Vec<String>,
    access_token_lifetime: Duration,
    refresh_token_lifetime: Duration,
    key_grace_period: Duration,
    jwks_max_age: Option<Duration>,
    clock: SharedClock,
    keys: Mutex<KeyRing>,
    store: Mutex<Store>,
    /// Signs the login and consent forms' CSRF tokens.
    form_key: FormKey,
    jwks_behavior: Mutex<JwksBehavior>,
    jwks_fetches: AtomicUsize,
    /// Access tokens are random strings, known only through `/introspect`.
    opaque_access_tokens: bool,
    opaque: Mutex<introspect::OpaqueTokens>,
    introspections: AtomicUsize,
}

impl Shared {
    fn now(&self) -> u64 {
        self.clock.unix_seconds()
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The audiences for RFC 8707 `resource` parameters: the default when there
    /// are none, and only ever registered ones.
    fn audiences_for(&self, resources: &[String]) -> Result<Vec<String>, OAuthError> {
        if resources.is_empty() {
            return Ok(vec![self.default_audience.clone()]);
        }
        if resources.iter().any(|r| !self.audiences.contains(r)) {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "resource is not registered with this server",
            ));
        }
        Ok(resources.to_vec())
    }

    /// Cookies get `Secure` when the issuer is https.
    fn secure_cookies(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    /// Every scope some client may be granted, sorted, for discovery.
    fn scopes_supported(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .clients
            .values()
            .flat_map(|c| c.allowed_scopes().iter().cloned())
            .collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::discovery),
        )
        .route(
            "/.well-known/openid-configuration",
            get(metadata::discovery),
        )
        .route(JWKS_PATH, get(metadata::jwks))
        .route(
            TOKEN_PATH,
            post(token::token).layer(map_response(never_cached)),
        )
        .route(
            INTROSPECT_PATH,
            post(introspect::introspect).layer(map_response(never_cached)),
        )
        .route(REVOKE_PATH, post(introspect::revoke))
        .route(AUTHORIZE_PATH, get(authorize::authorize))
        .route(LOGIN_PATH, post(authorize::login))
        .route(CONSENT_PATH, post(authorize::consent))
        .layer(DefaultBodyLimit::max(MAX_FORM_BODY))
        .layer(map_response(close_after_413))
        .with_state(shared)
}

/// Every `/token` answer, whoever produced it, is `no-store` (RFC 6749 §5.1).
async fn never_cached(mut response: Response) -> Response {
    for (name, value) in oauth::no_store() {
        response.headers_mut().insert(name, value);
    }
    response
}

/// The client may still be sending the body we refused, so the connection
/// cannot carry another request: say so rather than reset it unannounced.
async fn close_after_413(mut response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A running server. Dropping it stops the server; [`shutdown`](Self::shutdown)
/// does so gracefully and waits.
pub struct AuthorizationServerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl AuthorizationServerHandle {
    /// The issuer identifier, `http://IP:PORT` without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The token endpoint URL.
    pub fn token_endpoint(&self) -> String {
        self.shared.endpoint(TOKEN_PATH)
    }

    /// The authorization endpoint URL.
    pub fn authorization_endpoint(&self) -> String {
        self.shared.endpoint(AUTHORIZE_PATH)
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        self.shared.endpoint(JWKS_PATH)
    }

    /// The token introspection endpoint URL (RFC 7662).
    pub fn introspection_endpoint(&self) -> String {
        self.shared.endpoint(INTROSPECT_PATH)
    }

    /// The token revocation endpoint URL (RFC 7009).
    pub fn revocation_endpoint(&self) -> String {
        self.shared.endpoint(REVOKE_PATH)
    }

    /// How many `POST /introspect` requests the server has received.
    pub fn introspection_count(&self) -> usize {
        self.shared.introspections.load(Ordering::SeqCst)
    }

    /// Obtains an access token for `client_id` with the client-credentials grant,
    /// through a real HTTP request to this server's token endpoint (using the
    /// client's configured secret), so examples exercise the same path as clients.
    pub async fn client_credentials_token(
        &self,
        client_id: &str,
        scopes: &[&str],
    ) -> Result<String, AuthzServerError> {
        self.request_client_credentials(client_id, scopes, None, None)
            .await
    }

    /// [`client_credentials_token`](Self::client_credentials_token) with extra
    /// claims in this one token (`claims`, a JSON object), over the same real
    /// HTTP request. They go over a single-use ticket only this handle can
    /// create, so no client can add claims through `/token` by itself. The
    /// server's own claims (see [`ClientConfig::claim`]) cannot be replaced;
    /// these take precedence over the client's registered extra claims.
    ///
    /// ```
    /// use bearer_guard::authz_server::{AuthorizationServer, ClientConfig};
    /// use serde_json::json;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = AuthorizationServer::builder()
    ///     .client(ClientConfig::confidential("svc", "secret").scopes(["orders:read"]))
    ///     .start()
    ///     .await?;
    /// let token = server
    ///     .client_credentials_token_with("svc", &["orders:read"], json!({"tenant": "acme"}))
    ///     .await?;
    /// # assert_eq!(token.split('.').count(), 3);
    /// // The server's own claims are refused.
    /// assert!(server.client_credentials_token_with("svc", &[], json!({"sub": "root"})).await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn client_credentials_token_with(
        &self,
        client_id: &str,
        scopes: &[&str],
        claims: Value,
    ) -> Result<String, AuthzServerError> {
        let Value::Object(claims) = claims else {
            return Err(AuthzServerError::Config(
                "extra claims must be a JSON object".to_owned(),
            ));
        };
        builder::check_extra_claims("extra claims", &claims)?;
        let ticket = oauth::random_token();
        {
            let mut tickets = lock(&self.shared.claim_tickets);
            // Tickets are spent at once; only a call cancelled mid-flight leaves one.
            if tickets.len() >= MAX_CLAIM_TICKETS {
                tickets.clear();
            }
            tickets.insert(ticket.clone(), (client_id.to_owned(), claims));
        }
        let result = self
            .request_client_credentials(client_id, scopes, None, Some(&ticket))
            .await;
        lock(&self.shared.claim_tickets).remove(&ticket);
        result
    }

    async fn request_client_credentials(
        &self,
        client_id: &str,
        scopes: &[&str],
        dpop: Option<String>,
        claims_ticket: Option<&str>,
    ) -> Result<String, AuthzServerError> {
        let secret = self
            .shared
            .clients
            .get(client_id)
            .and_then(|c| c.secret.clone())
            .unwrap_or_default();
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.join(" "));
        }
        if let Some(ticket) = claims_ticket {
            form.append_pair(CLAIMS_TICKET, ticket);
        }
        // RFC 6749 §2.3.1: id and secret are form-encoded before going into Basic.
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let mut request = self.http.post(self.token_endpoint());
        if let Some(proof) = dpop {
            request = request.header("dpop", proof);
        }
        let response = request
            .basic_auth(encode(client_id), Some(encode(&secret)))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form.finish())
            .send()
            .await?;
        let status = response.status();
        let nonce = response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = serde_json::from_slice(&response.bytes().await?).unwrap_or_default();
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        match text("access_token") {
            Some(token) if status.is_success() => Ok(token),
            _ => Err(AuthzServerError::TokenEndpoint {
                status: status.as_u16(),
                error: text("error").unwrap_or_else(|| "unexpected response".to_owned()),
                description: text("error_description"),
                nonce,
            }),
        }
    }

    /// [`client_credentials_token`](Self::client_credentials_token) with a DPoP
    /// proof by `key`: the token is bound to it (`cnf.jkt`, `token_type: DPoP`).
    /// When the server demands a nonce, the call retries once with it.
    pub async fn dpop_client_credentials_token(
        &self,
        client_id: &str,
        scopes: &[&str],
        key: &DpopKey,
    ) -> Result<String, AuthzServerError> {
        let mut nonce: Option<String> = None;
        loop {
            let mut proof = key
                .proof("POST", &self.token_endpoint())
                .iat(self.shared.now());
            if let Some(n) = &nonce {
                proof = proof.nonce(n);
            }
            match self
                .request_client_credentials(client_id, scopes, Some(proof.sign()), None)
                .await
            {
                Err(AuthzServerError::TokenEndpoint {
                    error,
                    nonce: Some(n),
                    ..
                }) if error == "use_dpop_nonce" && nonce.is_none() => {
                    nonce = Some(n);
                }
                other => return other,
            }
        }
    }

    /// Generates a key of `alg`, makes it the signing key, and returns its `kid`.
    ///
    /// The previous key stays in `/jwks` for the builder's
    /// [`key_grace_period`](AuthorizationServerBuilder::key_grace_period),
    /// measured on the injected clock, so tokens it signed keep verifying.
    ///
    /// # Panics
    ///
    /// If the crypto library cannot generate a key (a broken system RNG).
    pub fn rotate_signing_key(&self, alg: SigningAlgorithm) -> String {
        let next = generate_key(alg);
        let grace = self.shared.key_grace_period.as_secs();
        let retire_at = self.shared.now().saturating_add(grace);
        lock(&self.shared.keys).rotate(next, retire_at)
    }

    /// Removes `kid` from `/jwks` immediately; returns whether it was published.
    /// Retiring the active key leaves it signing but unpublished.
    pub fn retire_key(&self, kid: &str) -> bool {
        lock(&self.shared.keys).retire(kid)
    }

    /// The `kid` of the key signing access tokens.
    pub fn active_kid(&self) -> String {
        lock(&self.shared.keys).active().kid().to_owned()
    }

    /// The `kid`s `/jwks` currently serves, oldest first.
    pub fn published_kids(&self) -> Vec<String> {
        let now = self.shared.now();
        let keys = lock(&self.shared.keys).published(now);
        keys.iter().map(|k| k.kid().to_owned()).collect()
    }

    /// Signs an arbitrary token, for negative tests.
    ///
    /// The header is `{alg, kid, typ: "at+jwt"}` of the chosen key with
    /// `header_overrides` (a JSON object) merged over it: any member may be set
    /// (`crit`, `jku`, another `kid` or `typ`, even a lying `alg`), and a member
    /// set to `null` is removed. `claims` are used verbatim.
    ///
    /// # Panics
    ///
    /// If `SignWith::Kid` names a key this server never generated, or if the
    /// crypto library fails.
    pub fn mint(&self, header_overrides: Value, claims: Value, key: SignWith) -> String {
        let key = match key {
            SignWith::Active => lock(&self.shared.keys).active(),
            SignWith::Kid(kid) => lock(&self.shared.keys)
                .get(&kid)
                .unwrap_or_else(|| panic!("mint: no key with kid {kid:?} was ever generated")),
            SignWith::Unpublished(alg) => Arc::new(generate_key(alg)),
        };
        key.sign_jwt(&header_overrides, &claims)
            .unwrap_or_else(|_| panic!("mint: signing failed"))
    }

    /// Changes how `/jwks` answers from the next request on.
    pub fn set_jwks_behavior(&self, behavior: JwksBehavior) {
        *lock(&self.shared.jwks_behavior) = behavior;
    }

    /// How many `GET /jwks` requests the server has received, whatever it answered.
    pub fn jwks_fetch_count(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Whether the access token with this `jti` was revoked (because its
    /// authorization code or refresh token was replayed).
    ///
    /// A revoked id is remembered until five minutes after the token's `exp`.
    pub fn is_revoked(&self, jti: &str) -> bool {
        lock(&self.shared.store).is_revoked(jti, self.shared.now())
    }

    /// How many entries the server's state tables hold now (expired entries
    /// are not counted). Each table is bounded by
    /// [`max_state_entries`](AuthorizationServerBuilder::max_state_entries).
    pub fn stored_state(&self) -> StoredState {
        lock(&self.shared.store).stored_state(self.shared.now())
    }

    /// Stops accepting connections, lets in-flight requests finish, and waits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for AuthorizationServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationServerHandle")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

impl Drop for AuthorizationServerHandle {
    fn drop(&mut self) {
        // Dropping the sender wakes the graceful-shutdown future.
        self.stop.take();
    }
}

/// Generates a key, treating failure as fatal: only a broken system RNG fails.
fn generate_key(alg: SigningAlgorithm) -> SigningKey {
    SigningKey::generate(alg).unwrap_or_else(|_| panic!("{alg:?} key generation failed"))
}
