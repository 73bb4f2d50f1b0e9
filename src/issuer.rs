//! Which issuers are trusted, and where each one's keys come from.
//!
//! The token's (unverified) `iss` picks the issuer entry by exact, byte-for-byte
//! comparison: `https://a/` and `https://a` are different issuers. An `iss` that
//! matches no entry is refused before any key lookup or network fetch, so an
//! attacker can never make us fetch from a URL of their choosing. Each entry has
//! its own key store: a key from issuer A's JWKS never verifies a token of issuer B.

use std::sync::Arc;

use crate::jws::{Algorithm, AlgorithmSet};
use crate::keys::store::KeyStore;

/// One trusted issuer: its exact identifier, its key source, and optionally its own
/// audiences and algorithms (otherwise the guard's are used).
///
/// ```
/// use bearer_guard::{Algorithm, Issuer};
///
/// // Keys found through discovery (RFC 8414 / OpenID Connect).
/// let a = Issuer::new("https://login.example.com");
/// // Keys from an explicit JWKS URL, with this issuer's own audience and algorithms.
/// let b = Issuer::new("https://idp.partner.example")
///     .jwks_uri("https://idp.partner.example/keys")
///     .audience("https://api.example.com/partner")
///     .algorithms([Algorithm::ES256]);
/// # let _ = (a, b);
/// ```
#[derive(Debug, Clone)]
pub struct Issuer {
    pub(crate) issuer: String,
    pub(crate) keys: KeySourceSpec,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Option<Vec<Algorithm>>,
}

/// How an issuer's keys are obtained (as configured).
#[derive(Clone)]
pub(crate) enum KeySourceSpec {
    Discovery,
    JwksUri(String),
    JwksDocument(String),
    SharedSecret(Arc<[u8]>),
}

impl std::fmt::Debug for KeySourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySourceSpec::Discovery => f.write_str("Discovery"),
            KeySourceSpec::JwksUri(u) => f.debug_tuple("JwksUri").field(u).finish(),
            KeySourceSpec::JwksDocument(_) => f.write_str("JwksDocument(..)"),
            // Never print a secret.
            KeySourceSpec::SharedSecret(_) => f.write_str("SharedSecret(<redacted>)"),
        }
    }
}

impl Issuer {
    /// An issuer whose keys are found through its metadata document.
    pub fn new(issuer: impl Into<String>) -> Self {
        Issuer {
            issuer: issuer.into(),
            keys: KeySourceSpec::Discovery,
            audiences: Vec::new(),
            algorithms: None,
        }
    }

    /// Fetch the keys from this JWKS URL instead of discovering it.
    pub fn jwks_uri(mut self, uri: impl Into<String>) -> Self {
        self.keys = KeySourceSpec::JwksUri(uri.into());
        self
    }

    /// Use this fixed JWKS document (JSON text); nothing is ever fetched.
    pub fn jwks_document(mut self, json: impl Into<String>) -> Self {
        self.keys = KeySourceSpec::JwksDocument(json.into());
        self
    }

    /// Verify HS256/384/512 tokens with this shared secret (at least 32 bytes).
    /// Only HMAC algorithms may then be configured for the issuer, and the
    /// algorithms must be named explicitly.
    pub fn shared_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.keys = KeySourceSpec::SharedSecret(secret.as_ref().into());
        self
    }

    /// An audience accepted for this issuer's tokens (replaces the guard-wide list
    /// for this issuer). May be called more than once.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The algorithms accepted for this issuer (replaces the guard-wide list).
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algorithms.into_iter().collect());
        self
    }

    /// The issuer identifier.
    pub fn identifier(&self) -> &str {
        &self.issuer
    }
}

impl From<&str> for Issuer {
    fn from(issuer: &str) -> Self {
        Issuer::new(issuer)
    }
}

impl From<String> for Issuer {
    fn from(issuer: String) -> Self {
        Issuer::new(issuer)
    }
}

/// A configured, ready issuer.
pub(crate) struct IssuerEntry {
    pub issuer: Box<str>,
    pub audiences: Box<[String]>,
    pub algorithms: AlgorithmSet,
    pub store: Arc<KeyStore>,
}

/// The trusted issuers, looked up by exact `iss`.
pub(crate) struct IssuerPolicy {
    entries: Vec<IssuerEntry>,
}

impl IssuerPolicy {
    pub(crate) fn new(entries: Vec<IssuerEntry>) -> Self {
        IssuerPolicy { entries }
    }

    /// The entry for `iss`, compared byte for byte. A linear scan: deployments
    /// trust a handful of issuers, and this beats hashing at that size.
    pub(crate) fn find(&self, iss: &str) -> Option<(usize, &IssuerEntry)> {
        self.entries
            .iter()
            .enumerate()
            .find(|(_, e)| *e.issuer == *iss)
    }

    pub(crate) fn entries(&self) -> &[IssuerEntry] {
        &self.entries
    }

    pub(crate) fn identifiers(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.issuer.to_string()).collect()
    }
}
