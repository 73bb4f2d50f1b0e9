//! Opaque access tokens: OAuth 2.0 Token Introspection (RFC 7662).
//!
//! A token that is not shaped like a compact JWS names no issuer, so at most one
//! configured issuer may have an introspection endpoint (checked at build time).
//! Trying several in turn would hand every issuer's tokens to every other
//! issuer's endpoint (a bearer token is usable by whoever receives it), and
//! would let any one of them vouch for tokens it never issued.
//!
//! This module makes the call (client_secret_basic, the key store's timeout and
//! body limit, https unless loopback), shares one call among concurrent requests
//! for the same token, and remembers answers; `validate.rs` decides what an
//! answer means and builds the [`VerifiedToken`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use reqwest::Url;
use tokio::sync::OnceCell;

use crate::claims::VerifiedToken;
use crate::error::{AuthError, TokenProblem};
use crate::keys::fetch::FetchLimits;

/// Default bound on how long an `active: true` answer is reused (see
/// [`Introspection::max_ttl`]).
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(60);
/// Default reuse of a refusal (`active: false`, or an answer we refuse).
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Default bound on the number of remembered answers.
const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// How soon a client is told to retry when the endpoint failed.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// An issuer's introspection endpoint and the credentials this resource server
/// authenticates to it with (`client_secret_basic`, RFC 6749 §2.3.1).
///
/// ```
/// use std::time::Duration;
/// use bearer_guard::{Guard, Introspection, Issuer};
///
/// let guard = Guard::builder()
///     .issuer(Issuer::new("https://login.example.com").introspection(
///         Introspection::new("https://login.example.com/introspect", "orders-api", "s3cret")
///             .max_ttl(Duration::from_secs(30)),
///     ))
///     .audience("https://api.example.com")
///     .build();
/// assert!(guard.is_ok());
/// ```
#[derive(Clone)]
pub struct Introspection {
    /// `None`: the `introspection_endpoint` of the issuer's metadata.
    pub(crate) endpoint: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) max_ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) max_entries: u64,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("max_ttl", &self.max_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .finish_non_exhaustive()
    }
}

impl Introspection {
    /// The endpoint URL (https unless loopback or `allow_insecure_http`) and the
    /// resource server's client credentials there.
    pub fn new(
        endpoint: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Introspection {
            endpoint: Some(endpoint.into()),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            max_ttl: DEFAULT_MAX_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// Like [`new`](Self::new), with the endpoint taken from the issuer's
    /// metadata document (`introspection_endpoint`, RFC 8414 / OpenID Connect
    /// discovery, the document's `issuer` checked as for `jwks_uri`). It is
    /// fetched on the first opaque token and kept; a failed fetch answers 503
    /// and is retried at most every 5 seconds.
    ///
    /// ```
    /// use bearer_guard::{Guard, Introspection, Issuer};
    ///
    /// let guard = Guard::builder()
    ///     .issuer(Issuer::new("https://login.example.com")
    ///         .introspection(Introspection::discovered("orders-api", "s3cret")))
    ///     .audience("https://api.example.com")
    ///     .build();
    /// assert!(guard.is_ok());
    /// ```
    pub fn discovered(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Introspection {
            endpoint: None,
            ..Introspection::new("", client_id, client_secret)
        }
    }

    /// How long an `active: true` answer is reused at most (it is never reused
    /// past the token's `exp`). Default 60 s. This is the revocation bound: a
    /// token revoked at the issuer keeps working here for up to this long, so
    /// it is short; a longer one saves introspection calls at that price.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// How long a refusal (`active: false`, or an answer that fails the checks)
    /// is reused. Default 10 s: long enough that a client retrying a dead
    /// token does not make one call per request, short enough that a token
    /// that becomes valid (an `nbf` passing) is not refused for long.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// At most this many answers are remembered (default 10,000).
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries;
        self
    }
}

/// The SHA-256 of a token: what the answer cache and the in-flight table are
/// keyed by, so neither holds token text.
pub(crate) type TokenKey = [u8; 32];

/// A remembered verdict and until when (on the guard's clock) it may be reused.
#[derive(Clone)]
struct Remembered {
    verdict: Result<VerifiedToken, TokenProblem>,
    until: Duration,
}

/// What one call to the endpoint produced, shared by every concurrent waiter.
pub(crate) type CallOutcome = Result<Arc<str>, AuthError>;

/// A configured, ready introspection endpoint.
pub(crate) struct Introspector {
    pub issuer_index: usize,
    issuer: Box<str>,
    endpoint: EndpointSource,
    client_id: String,
    client_secret: String,
    client: reqwest::Client,
    limits: FetchLimits,
    pub max_ttl: Duration,
    pub negative_ttl: Duration,
    answers: moka::sync::Cache<TokenKey, Remembered>,
    in_flight: Mutex<HashMap<TokenKey, Arc<OnceCell<CallOutcome>>>>,
}

/// Where the endpoint comes from.
pub(crate) enum EndpointSource {
    Configured(Url),
    /// From the issuer's metadata, once; `failed` (real time) spaces out retries.
    Discovered {
        allow_http: bool,
        found: OnceCell<Url>,
        failed: Mutex<Option<(tokio::time::Instant, String)>>,
    },
}

impl EndpointSource {
    pub(crate) fn discovered(allow_http: bool) -> Self {
        EndpointSource::Discovered {
            allow_http,
            found: OnceCell::new(),
            failed: Mutex::new(None),
        }
    }
}

impl Introspector {
    pub(crate) fn new(
        issuer_index: usize,
        issuer: &str,
        endpoint: EndpointSource,
        config: &Introspection,
        client: reqwest::Client,
        limits: FetchLimits,
    ) -> Self {
        // moka's own (real-time) expiry only bounds memory; reuse is decided on
        // the guard's clock by `Remembered::until`.
        let answers = moka::sync::Cache::builder()
            .max_capacity(config.max_entries)
            .time_to_live(config.max_ttl.max(config.negative_ttl))
            .build();
        Introspector {
            issuer_index,
            issuer: issuer.into(),
            endpoint,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client,
            limits,
            max_ttl: config.max_ttl,
            negative_ttl: config.negative_ttl,
            answers,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn key(token: &str) -> TokenKey {
        let mut key = [0; 32];
        key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        key
    }

    /// A remembered verdict still reusable at `now`.
    pub(crate) fn remembered(
        &self,
        key: &TokenKey,
        now: Duration,
    ) -> Option<Result<VerifiedToken, TokenProblem>> {
        let hit = self.answers.get(key)?;
        if now >= hit.until {
            self.answers.invalidate(key);
            return None;
        }
        Some(hit.verdict)
    }

    pub(crate) fn remember(
        &self,
        key: TokenKey,
        verdict: Result<VerifiedToken, TokenProblem>,
        until: Duration,
    ) {
        self.answers.insert(key, Remembered { verdict, until });
    }

    /// The endpoint's answer (the JSON text) for `token`; concurrent callers
    /// for one token share one call.
    pub(crate) async fn call(&self, key: TokenKey, token: &str) -> CallOutcome {
        let waiter = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Waiter {
                in_flight: &self.in_flight,
                key,
                cell: Arc::clone(in_flight.entry(key).or_default()),
            }
        };
        // A caller that goes away mid-call leaves the call to the next waiter.
        waiter.cell.get_or_init(|| self.post(token)).await.clone()
    }

    async fn post(&self, token: &str) -> CallOutcome {
        let unavailable = |reason: String| AuthError::IntrospectionUnavailable {
            issuer: self.issuer.to_string(),
            reason,
            retry_after: RETRY_AFTER,
        };
        match tokio::time::timeout(self.limits.timeout, self.post_inner(token)).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(reason)) => {
                tracing::warn!(issuer = %self.issuer, %reason, "token introspection failed");
                Err(unavailable(reason))
            }
            Err(_) => {
                tracing::warn!(issuer = %self.issuer, "token introspection timed out");
                Err(unavailable(format!(
                    "timed out after {:?}",
                    self.limits.timeout
                )))
            }
        }
    }

    /// The endpoint: configured, or discovered on first use. A failure is
    /// remembered for [`RETRY_AFTER`], so a flood of opaque tokens during an
    /// outage makes one metadata fetch per interval, not one per request.
    async fn endpoint(&self) -> Result<Url, String> {
        let (allow_http, found, failed) = match &self.endpoint {
            EndpointSource::Configured(url) => return Ok(url.clone()),
            EndpointSource::Discovered {
                allow_http,
                found,
                failed,
            } => (*allow_http, found, failed),
        };
        let recent_failure = || {
            failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .filter(|(at, _)| at.elapsed() < RETRY_AFTER)
                .map(|(_, reason)| reason.clone())
        };
        // Checked again inside: callers queued behind a failed fetch do not
        // each fetch in turn.
        found
            .get_or_try_init(|| async {
                if let Some(reason) = recent_failure() {
                    return Err(reason);
                }
                let result = crate::keys::discovery::discover_endpoint(
                    &self.client,
                    &self.issuer,
                    crate::keys::discovery::Endpoint::Introspection,
                    &self.limits,
                    allow_http,
                )
                .await;
                if let Err(reason) = &result {
                    *failed.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((tokio::time::Instant::now(), reason.clone()));
                }
                result
            })
            .await
            .cloned()
    }

    async fn post_inner(&self, token: &str) -> Result<Arc<str>, String> {
        let endpoint = self.endpoint().await?;
        // RFC 6749 §2.3.1: id and secret are form-encoded before going into Basic.
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let mut response = self
            .client
            .post(endpoint)
            .basic_auth(encode(&self.client_id), Some(encode(&self.client_secret)))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            // reqwest's message names the URL and the cause; the token is in
            // the body, never in the URL.
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status {}", status.as_u16()));
        }
        let max = self.limits.max_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(format!("the response is larger than {max} bytes"));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if bytes.len() + chunk.len() > max {
                return Err(format!("the response is larger than {max} bytes"));
            }
            bytes.extend_from_slice(&chunk);
        }
        String::from_utf8(bytes)
            .map(Into::into)
            .map_err(|_| "the response is not UTF-8".to_owned())
    }

    /// An answer that is not a JSON object with a boolean `active`: the
    /// endpoint is broken, not the token (503, like an unreadable JWKS).
    pub(crate) fn garbage(&self, what: &str) -> AuthError {
        tracing::warn!(issuer = %self.issuer, what, "unreadable introspection response");
        AuthError::IntrospectionUnavailable {
            issuer: self.issuer.to_string(),
            reason: format!("unreadable introspection response: {what}"),
            retry_after: RETRY_AFTER,
        }
    }
}

/// One caller's share of an in-flight call. The last one to leave, finished
/// or cancelled, removes the call from the table, so requests that give up
/// (a client disconnecting) leave nothing behind.
struct Waiter<'a> {
    in_flight: &'a Mutex<HashMap<TokenKey, Arc<OnceCell<CallOutcome>>>>,
    key: TokenKey,
    cell: Arc<OnceCell<CallOutcome>>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Callers clone the cell under this lock: the table's and ours are the
        // last two references exactly when no one else waits.
        if in_flight
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
            && Arc::strong_count(&self.cell) <= 2
        {
            in_flight.remove(&self.key);
        }
    }
}

/// Whether `token` is not shaped like a compact JWS (three segments) or JWE
/// (five): those are always validated as JWTs (and a JWE refused), so a
/// JWS-shaped token never reaches introspection.
pub(crate) fn is_opaque(token: &str) -> bool {
    let dots = token.bytes().filter(|&b| b == b'.').count();
    dots != 2 && dots != 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jws_and_jwe_shaped_tokens_are_never_opaque() {
        assert!(is_opaque("2YotnFZFEjr1zCsicMWpAA"));
        assert!(is_opaque("a.b"));
        assert!(is_opaque("a.b.c.d"));
        assert!(!is_opaque("a.b.c"));
        assert!(!is_opaque(".."));
        assert!(!is_opaque("a.b.c.d.e"));
    }

    #[test]
    fn the_cache_key_is_a_digest_not_the_token() {
        let key = Introspector::key("opaque-token");
        assert_ne!(&key[..12], b"opaque-token");
        assert_eq!(key, Introspector::key("opaque-token"));
        assert_ne!(key, Introspector::key("opaque-tokeN"));
    }

    #[tokio::test]
    async fn a_call_nobody_waits_for_any_more_leaves_the_table() {
        use futures_util::FutureExt as _;
        // Accepts connections (the backlog) but never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}/introspect", silent.local_addr().unwrap());
        let config = Introspection::new(endpoint, "rs", "secret");
        let intro = Introspector::new(
            0,
            "http://127.0.0.1",
            EndpointSource::Configured(Url::parse(config.endpoint.as_deref().unwrap()).unwrap()),
            &config,
            reqwest::Client::new(),
            FetchLimits::default(),
        );
        let key = Introspector::key("opaque");
        let call = intro.call(key, "opaque");
        let mut call = Box::pin(call);
        // Polled once (the call starts), then dropped as a disconnecting client would.
        assert!(call.as_mut().now_or_never().is_none());
        assert_eq!(intro.in_flight.lock().unwrap().len(), 1);
        drop(call);
        assert!(intro.in_flight.lock().unwrap().is_empty());
        // A finished call leaves nothing either (the listener closed: refused).
        drop(silent);
        let _ = intro.call(key, "opaque").await;
        assert!(intro.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let c = Introspection::new("https://a/introspect", "rs", "very-secret");
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
