//! [`Guard`]: the validator of one API, with every method it has. Building one is
//! in [`builder`](crate::GuardBuilder); the ordered checks in `validate.rs`; the
//! tower layer in `layer.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use crate::builder::GuardBuilder;
use crate::cache::{TokenCache, TokenCacheStats};
use crate::claims::VerifiedToken;
use crate::clock::SharedClock;
use crate::error::AuthError;
use crate::issuer::IssuerPolicy;
use crate::jws::TypPolicy;
use crate::keys::store::KeyStoreStatus;
use crate::layer::GuardLayer;
use crate::response::Answerer;
use crate::sender::{ClientCertificate, Presentation};
use crate::token::{Scheme, TokenSource};
use crate::validate::{CacheUse, Early, now, traced};

/// Validates bearer tokens for one API. Cheap to clone (an `Arc` inside); share
/// one guard between every layer, route and task.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use bearer_guard::Guard;
///
/// let guard = Guard::builder()
///     .issuer("https://login.example.com")   // keys found by discovery
///     .audience("https://api.example.com")
///     .build()?;
/// guard.prefetch().await?;                     // optional: load keys before serving
/// let token = guard.validate("eyJhbGciOi...").await?;
/// println!("hello {}", token.subject().unwrap_or("?"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Guard {
    pub(crate) inner: Arc<GuardInner>,
}

pub(crate) struct GuardInner {
    pub issuers: IssuerPolicy,
    pub cache: Option<TokenCache>,
    pub leeway: Duration,
    pub typ: TypPolicy,
    pub tokens: TokenSource,
    /// The responder and the guard's clock, shared with every token admitted.
    pub answerer: Arc<Answerer>,
    pub dpop: Option<crate::sender::DpopVerifier>,
    /// The one issuer that accepts opaque tokens, if any.
    pub introspection: Option<crate::introspect::Introspector>,
    /// The RFC 9728 document, when configured.
    pub resource_metadata: Option<crate::resource_metadata::PublishedMetadata>,
}

impl GuardInner {
    /// The guard's clock (kept with the responder: tokens carry both).
    pub(crate) fn clock(&self) -> &SharedClock {
        &self.answerer.clock
    }

    /// The `DPoP-Nonce` for a successful response to `token` (RFC 9449 §8.2),
    /// when this guard demands nonces and the token is DPoP-bound.
    pub(crate) fn success_nonce(&self, token: &VerifiedToken) -> Option<http::HeaderValue> {
        crate::sender::success_nonce(self.dpop.as_ref(), self.clock(), token)
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("issuers", &self.inner.issuers.len())
            .field("leeway", &self.inner.leeway)
            .field("typ", &self.inner.typ)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Starts a builder with the defaults of DESIGN.md: asymmetric algorithms only,
    /// 60 s leeway, lenient `typ`, 16 KiB tokens, JWKS TTL 10 min within
    /// [5 min, 24 h], 30 s unknown-`kid` cooldown, 24 h last-known-good, and a
    /// 32 MiB verified-token cache.
    pub fn builder() -> GuardBuilder {
        GuardBuilder::default()
    }

    /// Loads the keys of every issuer now, e.g. before a readiness probe says yes.
    /// Fails with [`AuthError::KeysUnavailable`] naming the first issuer that failed.
    pub async fn prefetch(&self) -> Result<(), AuthError> {
        for entry in self.inner.issuers.entries() {
            entry.store.load().await?;
        }
        Ok(())
    }

    /// Loads the keys of every issuer that has none (or only too stale ones),
    /// unless its retry back-off after a failure is still running: unlike
    /// [`prefetch`](Self::prefetch), a caller cannot make the guard fetch more often
    /// than `retry_interval` (the gateway's `/-/ready` probes and start-up).
    #[cfg(feature = "gateway")]
    pub(crate) async fn load_missing_keys(&self) -> Result<(), AuthError> {
        for entry in self.inner.issuers.entries() {
            entry.store.keys().await?;
        }
        Ok(())
    }

    /// The state of each issuer's key store, in configuration order.
    pub fn key_status(&self) -> Vec<KeyStoreStatus> {
        self.inner
            .issuers
            .entries()
            .iter()
            .map(|e| e.store.status())
            .collect()
    }

    /// What the verified-token cache has done so far (`None` when it is off).
    /// Runs the cache's pending housekeeping first, so `entries` is current.
    pub fn token_cache_stats(&self) -> Option<TokenCacheStats> {
        self.inner.cache.as_ref().map(TokenCache::stats)
    }

    /// Whether keys are loaded for every issuer.
    pub fn ready(&self) -> bool {
        self.key_status().iter().all(KeyStoreStatus::ready)
    }

    /// The protected-resource metadata (RFC 9728) this guard publishes, when
    /// configured with [`GuardBuilder::resource_metadata`]: its URL, its path
    /// and the document. See [`resource_metadata`](crate::resource_metadata).
    pub fn resource_metadata(&self) -> Option<&crate::resource_metadata::PublishedMetadata> {
        self.inner.resource_metadata.as_ref()
    }

    /// The response the layers send for `error` to a request with these headers
    /// (realm and error hook applied; a gRPC status for gRPC requests).
    pub fn error_response(
        &self,
        error: &AuthError,
        request: &http::HeaderMap,
    ) -> http::Response<Bytes> {
        self.inner.answerer.responder.respond_to(error, request)
    }

    /// The tower layer that validates every request with this guard.
    pub fn layer(&self) -> GuardLayer {
        GuardLayer::new(self.clone())
    }

    /// Validates a bearer token (the credentials, without `Bearer `). A
    /// sender-constrained token (`cnf`) is refused: it needs its proof, which only
    /// [`validate_request`](Self::validate_request) can see.
    pub async fn validate(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let bearer = Presentation::bearer();
        traced(
            &self.inner,
            token,
            now(&self.inner),
            CacheUse::LookupAndInsert,
            &bearer,
        )
        .await
    }

    /// Validates the bearer token of a request's headers (`Bearer` only, no
    /// DPoP, no client certificate).
    pub async fn validate_headers(&self, headers: &HeaderMap) -> Result<VerifiedToken, AuthError> {
        match crate::validate::early(&self.inner, headers, None, false) {
            Early::Done(result) => result,
            Early::Verify(scheme, token) => self.verify_request(scheme, token, None, None).await,
        }
    }

    /// Validates a request as the layer does: the `Bearer` or (with
    /// [`GuardBuilder::dpop`](crate::GuardBuilder::dpop)) `DPoP` credentials, the
    /// DPoP proof against `method` and the path of `uri`, and a certificate-bound
    /// token against the [`ClientCertificate`] in `extensions`. For services that
    /// see requests in other shapes (an external-authorization check, a proxy):
    /// pass the original method and URI.
    pub async fn validate_request(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<VerifiedToken, AuthError> {
        let certificate = extensions.get::<ClientCertificate>();
        self.validate_request_with(method, uri, headers, certificate)
            .await
    }

    /// [`validate_request`](Self::validate_request) with the connection's
    /// certificate given directly (a check service learns it from its proxy):
    /// cache hits for bearer tokens answered without waiting, and a DPoP proof
    /// checked on every request, cached token or not.
    pub(crate) async fn validate_request_with(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        certificate: Option<&ClientCertificate>,
    ) -> Result<VerifiedToken, AuthError> {
        match self.validate_request_early(headers, certificate) {
            Early::Done(result) => result,
            Early::Verify(scheme, token) => {
                let request = Some((method, uri, headers));
                // Boxed: the verification's future (a key fetch, a replay-store
                // call) is kilobytes, and inline it would make every caller's
                // future as large, moved on every request, cache hit or not.
                Box::pin(self.verify_request(scheme, token, request, certificate)).await
            }
        }
    }

    /// Validates `token` as if the time were `now` (Unix seconds): answers "was
    /// this token valid then?" for recorded tokens (`bearer-guard verify --now`).
    /// The verified-token cache is neither read nor filled.
    pub async fn validate_at(&self, token: &str, now: u64) -> Result<VerifiedToken, AuthError> {
        let at = Duration::from_secs(now);
        traced(
            &self.inner,
            token,
            at,
            CacheUse::Off,
            &Presentation::bearer(),
        )
        .await
    }

    /// What can be answered without waiting: credentials that extraction refuses,
    /// and bearer tokens the cache answers (keys loaded, the verifying key still
    /// published), binding rules included. A DPoP request always needs
    /// [`Guard::verify_request`]: its proof is checked against the replay store.
    pub(crate) fn validate_request_early<'h>(
        &self,
        headers: &'h HeaderMap,
        certificate: Option<&ClientCertificate>,
    ) -> Early<'h> {
        crate::validate::early(&self.inner, headers, certificate, self.inner.dpop.is_some())
    }

    /// The full verification of what [`Guard::validate_request_early`] did not
    /// answer: a bearer token the cache missed (inserted when admitted), or a
    /// DPoP request (the token from the cache when it is there, and the proof).
    /// `request` is needed for DPoP only.
    pub(crate) async fn verify_request(
        &self,
        scheme: Scheme,
        token: &str,
        request: Option<(&http::Method, &http::Uri, &HeaderMap)>,
        certificate: Option<&ClientCertificate>,
    ) -> Result<VerifiedToken, AuthError> {
        let cache_use = match scheme {
            Scheme::Bearer => CacheUse::InsertOnly,
            Scheme::Dpop => CacheUse::LookupAndInsert,
        };
        let presented = Presentation {
            scheme,
            request,
            certificate,
        };
        traced(&self.inner, token, now(&self.inner), cache_use, &presented).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Guard>();
    }
}
