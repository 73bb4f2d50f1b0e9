//! Configuring and starting the server.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::oneshot;

use super::csrf::FormKey;
use super::keys::{KeyRing, SigningAlgorithm, SigningKey};
use super::metadata::JwksBehavior;
use super::store::{DEFAULT_CAPACITY, Store};
use super::{AuthorizationServerHandle, AuthzServerError, Shared, router};
use crate::clock::{Clock, SharedClock, SystemClock};

/// A registered client.
///
/// `Debug` never shows the secret.
#[derive(Clone)]
pub struct ClientConfig {
    pub(super) id: String,
    pub(super) secret: Option<String>,
    redirect_uris: Vec<String>,
    scopes: Vec<String>,
    pub(super) claims: serde_json::Map<String, serde_json::Value>,
}

/// The claims the server sets itself, which extra claims may not replace.
pub(super) const SERVER_CLAIMS: [&str; 12] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "cnf",
    "acr",
    "auth_time",
];

/// Refuses extra claims that would replace one the server sets.
pub(super) fn check_extra_claims(
    owner: &str,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), AuthzServerError> {
    match claims.keys().find(|k| SERVER_CLAIMS.contains(&k.as_str())) {
        Some(name) => Err(AuthzServerError::Config(format!(
            "{owner}: the claim {name:?} is set by the server and cannot be added"
        ))),
        None => Ok(()),
    }
}

impl ClientConfig {
    /// A confidential client, which authenticates with `client_secret_basic` or
    /// `client_secret_post` and may use every grant.
    pub fn confidential(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: Some(secret.into()),
            redirect_uris: Vec::new(),
            scopes: Vec::new(),
            claims: serde_json::Map::new(),
        }
    }

    /// A public client (a SPA or native app): no secret, so it may only use the
    /// authorization-code grant (with PKCE) and refresh tokens.
    pub fn public(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            redirect_uris: Vec::new(),
            scopes: Vec::new(),
            claims: serde_json::Map::new(),
        }
    }

    /// Registers a redirect URI. May be called more than once.
    ///
    /// `/authorize` accepts exact string matches only, with one exception: a
    /// loopback redirect URI (`http://127.0.0.1…` or `http://[::1]…`) matches
    /// with any port, because a native app gets its port from the OS at run
    /// time (RFC 8252 §7.3, OAuth 2.1 §8.4.2). `localhost` gets no such
    /// exception (RFC 8252 §8.3: it may resolve to something else).
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    /// Adds scopes this client may be granted (the default when it asks for none).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Adds a claim to every access token issued to this client (every grant),
    /// e.g. `.claim("tenant", "acme")` or `.claim("roles", json!(["admin"]))`.
    /// The claims the server sets itself (`iss`, `sub`, `aud`, `exp`, `nbf`,
    /// `iat`, `jti`, `client_id`, `scope`, `cnf`, `acr`, `auth_time`) cannot be
    /// replaced: [`start`](AuthorizationServerBuilder::start) refuses them.
    ///
    /// ```
    /// use bearer_guard::authz_server::{AuthorizationServer, ClientConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = AuthorizationServer::builder()
    ///     .client(
    ///         ClientConfig::confidential("svc", "secret")
    ///             .scopes(["orders:read"])
    ///             .claim("tenant", "acme")
    ///             .claim("roles", serde_json::json!(["admin", "auditor"])),
    ///     )
    ///     .start()
    ///     .await?;
    /// let token = server.client_credentials_token("svc", &[]).await?;
    /// # assert_eq!(token.split('.').count(), 3);
    /// # Ok(()) }
    /// ```
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// The `client_id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this client has no secret.
    pub fn is_public(&self) -> bool {
        self.secret.is_none()
    }

    pub(super) fn allowed_scopes(&self) -> &[String] {
        &self.scopes
    }

    pub(super) fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|r| r == uri || same_loopback_uri_but_port(r, uri))
    }
}

/// Whether `requested` is the loopback redirect URI `registered` with another
/// (or no) port: everything else, byte for byte, must be the same.
fn same_loopback_uri_but_port(registered: &str, requested: &str) -> bool {
    const LOOPBACK: [&str; 2] = ["http://127.0.0.1", "http://[::1]"];
    let Some(prefix) = LOOPBACK.iter().find(|p| registered.starts_with(*p)) else {
        return false;
    };
    // The URL parser confirms both really are loopback URLs (no userinfo
    // trick like `http://127.0.0.1:1@evil.example/`) with a valid port.
    let is_loopback = |uri: &str| {
        url::Url::parse(uri).is_ok_and(|u| {
            u.scheme() == "http" && u.host().is_some_and(|h| h.to_string() == prefix[7..])
        })
    };
    let strip_port = |uri: &str| -> Option<String> {
        let rest = uri.strip_prefix(*prefix)?;
        let rest = match rest.strip_prefix(':') {
            Some(port) => port.trim_start_matches(|c: char| c.is_ascii_digit()),
            None => rest,
        };
        Some(rest.to_owned())
    };
    is_loopback(registered)
        && is_loopback(requested)
        && strip_port(registered).is_some_and(|r| strip_port(requested) == Some(r))
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("redirect_uris", &self.redirect_uris)
            .field("scopes", &self.scopes)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Anything [`AuthorizationServerBuilder::clock`] accepts: a [`Clock`] or an
/// already shared [`SharedClock`].
pub trait IntoSharedClock {
    /// Wraps `self` for sharing.
    fn into_shared_clock(self) -> SharedClock;
}

impl<C: Clock> IntoSharedClock for C {
    fn into_shared_clock(self) -> SharedClock {
        Arc::new(self)
    }
}

impl IntoSharedClock for SharedClock {
    fn into_shared_clock(self) -> SharedClock {
        self
    }
}

/// Configures an authorization server; [`start`](Self::start) runs it.
pub struct AuthorizationServerBuilder {
    clients: Vec<ClientConfig>,
    users: HashMap<String, String>,
    second_factors: HashMap<String, String>,
    default_audience: Option<String>,
    resources: Vec<String>,
    access_token_lifetime: Duration,
    refresh_token_lifetime: Duration,
    signing_algorithm: SigningAlgorithm,
    key_grace_period: Duration,
    jwks_max_age: Option<Duration>,
    clock: SharedClock,
    bind: SocketAddr,
    dpop_nonce: bool,
    max_state_entries: usize,
    opaque_access_tokens: bool,
}

impl fmt::Debug for AuthorizationServerBuilder {
    // Users' passwords stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationServerBuilder")
            .field("clients", &self.clients)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl Default for AuthorizationServerBuilder {
    fn default() -> Self {
        Self {
            clients: Vec::new(),
            users: HashMap::new(),
            second_factors: HashMap::new(),
            default_audience: None,
            resources: Vec::new(),
            access_token_lifetime: Duration::from_secs(300),
            refresh_token_lifetime: Duration::from_secs(24 * 3600),
            signing_algorithm: SigningAlgorithm::Rs256,
            key_grace_period: Duration::from_secs(600),
            jwks_max_age: Some(Duration::from_secs(600)),
            clock: Arc::new(SystemClock),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            dpop_nonce: false,
            max_state_entries: DEFAULT_CAPACITY,
            opaque_access_tokens: false,
        }
    }
}

impl AuthorizationServerBuilder {
    /// Registers a client; a later client with the same id replaces it.
    pub fn client(mut self, client: ClientConfig) -> Self {
        self.clients.push(client);
        self
    }

    /// Registers a user who can log in on the login page.
    pub fn user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.insert(username.into(), password.into());
        self
    }

    /// Gives `username` a second factor: a fixed one-time code, a stand-in for
    /// TOTP. A login that also enters it has `acr` `mfa`; one with the password
    /// alone has `pwd`. When `/authorize` asks for `acr_values=mfa` (a step-up,
    /// RFC 9470), the login page asks for the code and refuses a login without it.
    /// `start` refuses a code for a user that does not exist.
    pub fn user_one_time_code(
        mut self,
        username: impl Into<String>,
        code: impl Into<String>,
    ) -> Self {
        self.second_factors.insert(username.into(), code.into());
        self
    }

    /// The `aud` of tokens whose request names no `resource`.
    ///
    /// Without it, the first [`resource`](Self::resource) is the default, and
    /// without any, the issuer itself.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.default_audience = Some(audience.into());
        self
    }

    /// Registers another audience a client can pick with an RFC 8707 `resource`
    /// parameter; unregistered resources are refused with `invalid_target`.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// How long access tokens live (`exp - iat`). Default 5 minutes.
    pub fn access_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_token_lifetime = lifetime;
        self
    }

    /// How long an unused refresh token lives. Default 24 hours.
    pub fn refresh_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.refresh_token_lifetime = lifetime;
        self
    }

    /// The algorithm of the first signing key. Default RS256.
    pub fn signing_algorithm(mut self, alg: SigningAlgorithm) -> Self {
        self.signing_algorithm = alg;
        self
    }

    /// How long a rotated-out key stays in `/jwks`. Default 10 minutes.
    pub fn key_grace_period(mut self, grace: Duration) -> Self {
        self.key_grace_period = grace;
        self
    }

    /// The `Cache-Control: max-age` sent with `/jwks`. Default 600 s.
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.jwks_max_age = Some(max_age);
        self
    }

    /// Sends `/jwks` without any `Cache-Control` header, to test a cache's default TTL.
    pub fn without_jwks_cache_control(mut self) -> Self {
        self.jwks_max_age = None;
        self
    }

    /// Where all time comes from (token times, code and refresh-token expiry,
    /// key grace period). Default: the system clock.
    pub fn clock(mut self, clock: impl IntoSharedClock) -> Self {
        self.clock = clock.into_shared_clock();
        self
    }

    /// The address to listen on. Default `127.0.0.1:0` (any free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Demands a server nonce in DPoP proofs at `/token` (RFC 9449 §8): a proof
    /// without the current one is answered `400 use_dpop_nonce` with a
    /// `DPoP-Nonce` header.
    pub fn require_dpop_nonce(mut self) -> Self {
        self.dpop_nonce = true;
        self
    }

    /// Bounds each table of the server's state: pending `/authorize` requests,
    /// sessions, codes, refresh tokens, refresh-token families and revoked
    /// access-token ids. Default 10,000 each (at least 1).
    ///
    /// Entries also leave when they expire (a pending request after 10 min, a
    /// session after 1 h, a code after 60 s, a refresh token and its family at
    /// the refresh-token lifetime, a revoked id 5 min after the token's `exp`).
    /// A full table evicts its oldest entry: anyone can create a pending
    /// request with a GET, and evicting the oldest keeps the server taking new
    /// sign-ins during such a flood, where refusing new ones would lock every
    /// user out until the flood's entries expire. A user whose pending request
    /// was pushed out sees "unknown or expired" and starts again;
    /// [`stored_state`](AuthorizationServerHandle::stored_state) counts
    /// evictions.
    ///
    /// ```
    /// use bearer_guard::authz_server::AuthorizationServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = AuthorizationServer::builder().max_state_entries(1_000).start().await?;
    /// let state = server.stored_state();
    /// assert_eq!((state.pending_authorizations, state.evicted), (0, 0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_state_entries(mut self, entries: usize) -> Self {
        self.max_state_entries = entries;
        self
    }

    /// Issues opaque access tokens (random strings) instead of JWTs: a resource
    /// server learns what they stand for only from `POST /introspect`
    /// (RFC 7662), and `POST /revoke` (RFC 7009) ends one at once.
    ///
    /// ```
    /// use bearer_guard::authz_server::{AuthorizationServer, ClientConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let idp = AuthorizationServer::builder()
    ///     .client(ClientConfig::confidential("svc", "secret").scopes(["orders:read"]))
    ///     .opaque_access_tokens()
    ///     .start()
    ///     .await?;
    /// let token = idp.client_credentials_token("svc", &["orders:read"]).await?;
    /// assert!(!token.contains('.'));
    /// # Ok(()) }
    /// ```
    pub fn opaque_access_tokens(mut self) -> Self {
        self.opaque_access_tokens = true;
        self
    }

    /// Binds the socket, generates the first key and serves in a background task.
    pub async fn start(self) -> Result<AuthorizationServerHandle, AuthzServerError> {
        self.check_redirect_uris()?;
        for client in &self.clients {
            check_extra_claims(&format!("client {:?}", client.id), &client.claims)?;
        }
        if let Some(user) = self
            .second_factors
            .keys()
            .find(|u| !self.users.contains_key(*u))
        {
            return Err(AuthzServerError::Config(format!(
                "one-time code for {user:?}, who is not a user"
            )));
        }
        let bind_error = |source| AuthzServerError::Bind {
            addr: self.bind,
            source,
        };
        let listener = tokio::net::TcpListener::bind(self.bind)
            .await
            .map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let issuer = format!("http://{local_addr}");
        let first_key = SigningKey::generate(self.signing_algorithm)
            .map_err(|_| AuthzServerError::KeyGeneration)?;
        let default_audience = self
            .default_audience
            .or_else(|| self.resources.first().cloned())
            .unwrap_or_else(|| issuer.clone());
        let mut audiences = self.resources;
        audiences.push(default_audience.clone());
        let mut dpop = crate::sender::Dpop::new(&issuer);
        if self.dpop_nonce {
            dpop = dpop.require_nonce(super::oauth::random_token());
        }
        let dpop = dpop
            .build(Box::default())
            .map_err(AuthzServerError::Config)?;
        let shared = Arc::new(Shared {
            dpop,
            issuer,
            clients: self
                .clients
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect(),
            users: self.users,
            second_factors: self.second_factors,
            claim_tickets: Mutex::new(HashMap::new()),
            default_audience,
            audiences,
            access_token_lifetime: self.access_token_lifetime,
            refresh_token_lifetime: self.refresh_token_lifetime,
            key_grace_period: self.key_grace_period,
            jwks_max_age: self.jwks_max_age,
            clock: self.clock,
            keys: Mutex::new(KeyRing::new(first_key)),
            store: Mutex::new(Store::new(self.max_state_entries)),
            form_key: FormKey::generate().map_err(|_| AuthzServerError::KeyGeneration)?,
            jwks_behavior: Mutex::new(JwksBehavior::Normal),
            jwks_fetches: AtomicUsize::new(0),
            opaque_access_tokens: self.opaque_access_tokens,
            opaque: Mutex::new(super::introspect::OpaqueTokens::new(self.max_state_entries)),
            introspections: AtomicUsize::new(0),
        });
        // Our own calls go straight to the loopback socket, never via a proxy.
        let http = reqwest::Client::builder().no_proxy().build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "bundled authorization server stopped with an error");
            }
        });
        Ok(AuthorizationServerHandle {
            shared,
            local_addr,
            http,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Redirect URIs must be absolute URLs without a fragment (RFC 6749 §3.1.2).
    fn check_redirect_uris(&self) -> Result<(), AuthzServerError> {
        for client in &self.clients {
            for uri in &client.redirect_uris {
                let parsed = url::Url::parse(uri).map_err(|e| {
                    AuthzServerError::Config(format!(
                        "client {:?}: redirect URI {uri:?} is not a URL: {e}",
                        client.id
                    ))
                })?;
                if parsed.fragment().is_some() {
                    return Err(AuthzServerError::Config(format!(
                        "client {:?}: redirect URI {uri:?} has a fragment",
                        client.id
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn clock_accepts_a_clock_or_a_shared_clock() {
        let manual = ManualClock::at_unix(5);
        let builder = AuthorizationServerBuilder::default().clock(manual.clone());
        manual.advance(Duration::from_secs(1));
        assert_eq!(builder.clock.unix_seconds(), 6, "clones share time");
        let shared: SharedClock = Arc::new(ManualClock::at_unix(7));
        let builder = builder.clock(shared);
        assert_eq!(builder.clock.unix_seconds(), 7);
    }

    #[test]
    fn debug_output_hides_secrets_and_passwords() {
        let builder = AuthorizationServerBuilder::default()
            .client(ClientConfig::confidential("svc", "s3cret"))
            .user("alice", "wonderland");
        let text = format!("{builder:?}");
        assert!(text.contains("svc") && text.contains("alice"));
        assert!(!text.contains("s3cret") && !text.contains("wonderland"));
    }

    #[test]
    fn loopback_redirect_uris_match_with_any_port_and_nothing_else_differing() {
        for (registered, requested) in [
            ("http://127.0.0.1:3000/cb", "http://127.0.0.1:51234/cb"),
            ("http://127.0.0.1/cb?x=1", "http://127.0.0.1:8080/cb?x=1"),
            ("http://[::1]:3000/cb", "http://[::1]/cb"),
        ] {
            assert!(
                same_loopback_uri_but_port(registered, requested),
                "{requested}"
            );
        }
        for (registered, requested) in [
            ("http://127.0.0.1:3000/cb", "http://127.0.0.1:3000/cb/"),
            (
                "http://127.0.0.1:3000/cb",
                "http://127.0.0.1:1@evil.example/cb",
            ),
            (
                "http://127.0.0.1:3000/cb",
                "http://127.0.0.1.evil.example/cb",
            ),
            ("http://127.0.0.1:3000/cb", "http://127.0.0.1:99999/cb"),
            ("http://127.0.0.1:3000/cb", "http://127.0.0.1:4000x/cb"),
            ("http://127.0.0.1:3000/cb", "http://[::1]:3000/cb"),
            ("http://127.0.0.1:3000/cb", "https://127.0.0.1:3000/cb"),
            ("http://localhost:3000/cb", "http://localhost:4000/cb"),
            ("https://app.example/cb", "https://app.example:444/cb"),
        ] {
            assert!(
                !same_loopback_uri_but_port(registered, requested),
                "{requested}"
            );
        }
    }

    #[tokio::test]
    async fn redirect_uris_must_be_urls_without_fragments() {
        for uri in ["not a url", "http://127.0.0.1/cb#frag"] {
            let start = AuthorizationServerBuilder::default()
                .client(ClientConfig::public("spa").redirect_uri(uri))
                .start()
                .await;
            assert!(matches!(start, Err(AuthzServerError::Config(_))), "{uri}");
        }
    }
}
