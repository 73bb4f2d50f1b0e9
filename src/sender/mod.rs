//! Sender-constrained tokens: DPoP (RFC 9449) and certificate-bound tokens
//! (RFC 8705 §3).
//!
//! A bound token names a key (`cnf.jkt`) or a client certificate
//! (`cnf["x5t#S256"]`); the guard accepts it only from a caller that proves it
//! holds that key or certificate. A bound token is never accepted as a plain
//! bearer token, whatever the configuration.
//!
//! DPoP is configured once with [`GuardBuilder::dpop`](crate::GuardBuilder::dpop):
//! the API's **public base URL** (what clients put in `htu`: the request's
//! `Host` is never used, the client controls it), the mode, and optionally
//! server nonces and a shared replay store. Each issuer may override the mode
//! with [`Issuer::dpop`](crate::Issuer::dpop).
//!
//! ```
//! use std::time::Duration;
//! use bearer_guard::{Guard, Issuer};
//! use bearer_guard::sender::{Dpop, DpopMode};
//!
//! # fn run(jwks: &str) -> Result<(), bearer_guard::BuildError> {
//! let guard = Guard::builder()
//!     .issuer(Issuer::new("https://login.example.com").jwks_document(jwks))
//!     .audience("https://api.example.com")
//!     .dpop(Dpop::new("https://api.example.com")   // htu = this + the request path
//!         .mode(DpopMode::Required)                 // plain bearer tokens refused
//!         .proof_max_age(Duration::from_secs(60)))
//!     .build()?;
//! # let _ = guard; Ok(()) }
//! ```
//!
//! Certificate-bound tokens need no configuration: the server's TLS stack
//! inserts a [`ClientCertificate`] into each request's extensions, and the guard
//! checks `cnf["x5t#S256"]` against it.

mod dpop;
mod mtls;
#[cfg(feature = "redis")]
mod redis;
mod replay;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Uri};

pub use dpop::jwk_thumbprint;
pub use mtls::{ClientCertificate, confirm_certificate};
#[cfg(feature = "redis")]
pub use redis::RedisReplayStore;
pub use replay::{MemoryReplayStore, ReplayFuture, ReplayKey, ReplayStore, ReplayStoreError};

pub(crate) use dpop::{DpopVerifier, Nonces, ProofTarget, normalize_htu};

use crate::claims::VerifiedToken;
use crate::error::{AuthError, BindingProblem, TokenProblem};
use crate::jws::Algorithm;
use crate::token::Scheme;

/// Whether an issuer's tokens may, or must, be DPoP-bound. In TOML
/// configurations: `"disabled"`, `"allowed"`, `"required"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpopMode {
    /// The `DPoP` scheme is refused (`invalid_token`); DPoP-bound tokens are
    /// refused too, since they can only be used with it.
    Disabled,
    /// Both: plain bearer tokens with `Bearer`, DPoP-bound tokens with `DPoP`
    /// and a proof. Both schemes are challenged.
    #[default]
    Allowed,
    /// Only DPoP-bound tokens with a proof; a plain bearer token is refused.
    Required,
}

/// DPoP settings of a guard (RFC 9449). See the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct Dpop {
    pub(crate) public_url: String,
    pub(crate) mode: DpopMode,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) max_age: Duration,
    pub(crate) leeway: Duration,
    pub(crate) max_proof_bytes: usize,
    pub(crate) nonce_secret: Option<Vec<u8>>,
    pub(crate) nonce_lifetime: Duration,
    pub(crate) replay: Option<Arc<dyn ReplayStore>>,
    pub(crate) fail_open: bool,
}

impl std::fmt::Debug for Dpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dpop")
            .field("public_url", &self.public_url)
            .field("mode", &self.mode)
            .field("algorithms", &self.algorithms)
            .field("max_age", &self.max_age)
            .field("nonces", &self.nonce_secret.is_some())
            .field("replay", &self.replay)
            .field("fail_open", &self.fail_open)
            .finish_non_exhaustive()
    }
}

impl Dpop {
    /// DPoP for the API served at `public_url` (scheme, host, optional port and
    /// path prefix, as clients address it: `https://api.example.com` or
    /// `https://example.com/api`). A proof's `htu` must equal this plus the
    /// request's path. Defaults: [`DpopMode::Allowed`], the asymmetric algorithms
    /// of [`Algorithm::DEFAULT`], proofs up to 60 s old plus 15 s of clock skew
    /// either way, 8 KiB proofs, no nonces, a [`MemoryReplayStore`], fail closed.
    pub fn new(public_url: impl Into<String>) -> Self {
        Dpop {
            public_url: public_url.into(),
            mode: DpopMode::Allowed,
            algorithms: Algorithm::DEFAULT.to_vec(),
            max_age: Duration::from_secs(60),
            leeway: Duration::from_secs(15),
            max_proof_bytes: 8 * 1024,
            nonce_secret: None,
            nonce_lifetime: Duration::from_secs(300),
            replay: None,
            fail_open: false,
        }
    }

    /// The mode for issuers that do not set their own.
    pub fn mode(mut self, mode: DpopMode) -> Self {
        self.mode = mode;
        self
    }

    /// The accepted proof algorithms (asymmetric only; advertised in the
    /// challenge's `algs`).
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// How old a proof's `iat` may be (default 60 s; the leeway is added).
    pub fn proof_max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Clock skew tolerated on `iat`, in the past and the future (default 15 s).
    pub fn proof_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The largest proof accepted, in bytes, before decoding (default 8 KiB).
    pub fn max_proof_size(mut self, bytes: usize) -> Self {
        self.max_proof_bytes = bytes;
        self
    }

    /// Demands server nonces (RFC 9449 §8): a proof without a current nonce is
    /// answered `401 use_dpop_nonce` with a `DPoP-Nonce` header. Nonces are an
    /// HMAC of a time step under `secret` (at least 32 bytes): give every replica
    /// the same secret and each accepts the others' nonces, with no shared state.
    pub fn require_nonce(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.nonce_secret = Some(secret.as_ref().to_vec());
        self
    }

    /// How long one nonce step lasts (default 5 min); a nonce is accepted in its
    /// step and the next, and one step early.
    pub fn nonce_lifetime(mut self, lifetime: Duration) -> Self {
        self.nonce_lifetime = lifetime;
        self
    }

    /// Where seen proofs are remembered (default: a [`MemoryReplayStore`] for
    /// this process). Replicas share a window through a shared store, e.g.
    /// `RedisReplayStore` (feature `redis`).
    pub fn replay_store(mut self, store: impl ReplayStore) -> Self {
        self.replay = Some(Arc::new(store));
        self
    }

    /// When the replay store fails, accept the proof (logged at warn and counted
    /// in `bearer_guard_dpop_replay_store_failures_total`) instead of refusing
    /// the request with 503. A replayed proof is then accepted during the outage.
    pub fn fail_open_on_store_error(mut self) -> Self {
        self.fail_open = true;
        self
    }

    /// Checks the settings; `modes` are the issuers' modes in order.
    pub(crate) fn build(self, modes: Box<[DpopMode]>) -> Result<DpopVerifier, String> {
        let url = url::Url::parse(&self.public_url)
            .ok()
            .filter(|u| u.query().is_none() && u.fragment().is_none())
            .and_then(|u| normalize_htu(u.as_str()))
            .ok_or_else(|| {
                format!(
                    "the public URL {:?} is not an absolute http(s) URL without query or fragment",
                    self.public_url
                )
            })?;
        let algorithms: crate::jws::AlgorithmSet = self.algorithms.iter().copied().collect();
        if algorithms.is_empty() || algorithms.iter().any(Algorithm::is_symmetric) {
            return Err("DPoP algorithms must be asymmetric, and at least one".into());
        }
        if self.max_proof_bytes == 0 || self.nonce_lifetime.is_zero() {
            return Err("the proof size limit and nonce lifetime must be positive".into());
        }
        let nonces = match &self.nonce_secret {
            Some(secret) if secret.len() < 32 => {
                return Err("the DPoP nonce secret must be at least 32 bytes".into());
            }
            Some(secret) => Some(Nonces::new(secret, self.nonce_lifetime)),
            None => None,
        };
        let algs: Vec<&str> = algorithms.iter().map(Algorithm::as_str).collect();
        Ok(DpopVerifier {
            base: url.trim_end_matches('/').into(),
            algorithms,
            algs: algs.join(" ").into(),
            max_age: self.max_age.as_secs(),
            leeway: self.leeway.as_secs(),
            max_proof_bytes: self.max_proof_bytes,
            nonces,
            replay: self
                .replay
                .unwrap_or_else(|| Arc::new(MemoryReplayStore::default())),
            fail_open: self.fail_open,
            modes,
        })
    }
}

/// How the token reached the guard, and what the request offers to prove
/// possession.
pub(crate) struct Presentation<'a> {
    pub scheme: Scheme,
    /// Method, URI and headers, for a DPoP proof (absent for a bare token).
    pub request: Option<(&'a Method, &'a Uri, &'a HeaderMap)>,
    pub certificate: Option<&'a ClientCertificate>,
}

impl<'a> Presentation<'a> {
    /// A token on its own: as a bearer token, with nothing to prove possession.
    pub(crate) fn bearer() -> Self {
        Presentation {
            scheme: Scheme::Bearer,
            request: None,
            certificate: None,
        }
    }
}

/// The binding rules, after the token itself was verified: a DPoP-bound token
/// only with the `DPoP` scheme and a valid proof, a certificate-bound token only
/// with its certificate, a plain token only where DPoP is not required.
pub(crate) async fn confirm(
    dpop: Option<&DpopVerifier>,
    token: &VerifiedToken,
    raw: &str,
    presented: &Presentation<'_>,
    now: u64,
) -> Result<(), AuthError> {
    let Some(jkt) = binding_rules(dpop, token, presented.scheme, presented.certificate)? else {
        return Ok(());
    };
    let (Some(verifier), Some((method, uri, headers))) = (dpop, presented.request) else {
        return Err(AuthError::InvalidToken(TokenProblem::Binding(
            BindingProblem::DpopNotAccepted,
        )));
    };
    let target = ProofTarget {
        headers,
        method,
        uri,
        access_token: raw,
        jkt,
        now,
    };
    verifier.verify(&target).await
}

/// [`confirm`] for a token sent with the `Bearer` scheme: nothing to wait for.
pub(crate) fn bearer_binding(
    dpop: Option<&DpopVerifier>,
    token: &VerifiedToken,
    certificate: Option<&ClientCertificate>,
) -> Result<(), AuthError> {
    binding_rules(dpop, token, Scheme::Bearer, certificate).map(|_| ())
}

/// Every rule but the proof itself; `Some(jkt)` when a DPoP proof by that key
/// must still be checked.
fn binding_rules<'t>(
    dpop: Option<&DpopVerifier>,
    token: &'t VerifiedToken,
    scheme: Scheme,
    certificate: Option<&ClientCertificate>,
) -> Result<Option<&'t str>, AuthError> {
    let refuse = |p| Err(AuthError::InvalidToken(TokenProblem::Binding(p)));
    let cnf = token.registered().cnf.as_ref();
    if let Some(cnf) = cnf
        && !cnf.other.is_empty()
    {
        let names: Vec<&str> = cnf.other.keys().map(String::as_str).collect();
        return refuse(BindingProblem::UnsupportedConfirmation(names.join(", ")));
    }
    let mode = dpop
        .and_then(|d| d.modes.get(token.issuer_index()).copied())
        .unwrap_or(DpopMode::Disabled);
    let jkt = cnf.and_then(|c| c.jkt.as_deref());
    let prove = match (scheme, jkt) {
        (Scheme::Dpop, _) if mode == DpopMode::Disabled => {
            return refuse(BindingProblem::DpopNotAccepted);
        }
        (Scheme::Dpop, None) => return refuse(BindingProblem::NotDpopBound),
        (Scheme::Dpop, Some(jkt)) => Some(jkt),
        (Scheme::Bearer, Some(_)) => return refuse(BindingProblem::DpopBoundAsBearer),
        (Scheme::Bearer, None) if mode == DpopMode::Required => {
            return refuse(BindingProblem::DpopRequired);
        }
        (Scheme::Bearer, None) => None,
    };
    confirm_certificate(token, certificate)?;
    Ok(prove)
}

/// The `DPoP-Nonce` to send with a successful DPoP-authenticated response when
/// nonces are demanded (RFC 9449 §8.2): the current one, so clients move to the
/// next step before their nonce expires.
pub(crate) fn success_nonce(
    verifier: Option<&DpopVerifier>,
    clock: &crate::clock::SharedClock,
    token: &VerifiedToken,
) -> Option<http::HeaderValue> {
    let nonces = verifier?.nonces.as_ref()?;
    if !matches!(
        token.binding(),
        crate::Binding::Dpop { .. } | crate::Binding::DpopAndCertificate { .. }
    ) {
        return None;
    }
    http::HeaderValue::from_str(&nonces.current(clock.unix_seconds())).ok()
}
