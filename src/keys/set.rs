//! A key source's usable keys: a JWKS document parsed, checked and indexed, or a
//! shared secret.

use std::sync::Arc;

use aws_lc_rs::hmac;
use serde::Deserialize;

use super::jwk::verifying_key;
use super::key::{Material, VerifyingKey};
use crate::error::TokenProblem;
use crate::jws::{Algorithm, AlgorithmSet};

/// How many keys a token without `kid` may be tried against: bounds the CPU an
/// attacker can spend per request on an issuer that publishes many keys.
pub(super) const MAX_KIDLESS_CANDIDATES: usize = 4;

/// The usable keys of one key source.
#[derive(Default)]
pub(crate) struct KeySet {
    pub(super) keys: Vec<Arc<VerifyingKey>>,
}

/// Why a whole JWKS document was refused (single bad keys are only skipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwksError {
    #[error("the JWKS is not a JSON object with a \"keys\" array: {0}")]
    NotJwks(String),
    #[error("the JWKS has {count} keys, more than the limit of {max}")]
    TooManyKeys { count: usize, max: usize },
    #[error("the JWKS has no usable signing key ({skipped} skipped)")]
    NoUsableKeys { skipped: usize },
}

#[derive(Deserialize)]
pub(super) struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys usable with `algorithms`.
    pub(crate) fn from_jwks(
        json: &[u8],
        algorithms: AlgorithmSet,
        max_keys: usize,
    ) -> Result<KeySet, JwksError> {
        let doc: JwksDocument =
            serde_json::from_slice(json).map_err(|e| JwksError::NotJwks(e.to_string()))?;
        if doc.keys.len() > max_keys {
            return Err(JwksError::TooManyKeys {
                count: doc.keys.len(),
                max: max_keys,
            });
        }
        let mut keys = Vec::with_capacity(doc.keys.len());
        let mut skipped = 0;
        for value in doc.keys {
            match verifying_key(value, algorithms) {
                Ok(key) => keys.push(Arc::new(key)),
                Err((kid, why)) => {
                    skipped += 1;
                    tracing::warn!(kid = kid.as_deref(), reason = %why, "skipping unusable JWK");
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys { skipped });
        }
        Ok(KeySet { keys })
    }

    /// A key set holding one shared secret, for HS* issuers configured explicitly.
    pub(crate) fn from_secret(secret: &[u8], algorithms: AlgorithmSet) -> KeySet {
        let keys = algorithms
            .iter()
            .filter_map(|alg| {
                let h = match alg {
                    Algorithm::HS256 => hmac::HMAC_SHA256,
                    Algorithm::HS384 => hmac::HMAC_SHA384,
                    Algorithm::HS512 => hmac::HMAC_SHA512,
                    _ => return None,
                };
                Some((alg, hmac::Key::new(h, secret)))
            })
            .collect();
        KeySet {
            keys: vec![Arc::new(VerifyingKey {
                kid: None,
                issuer: None,
                jwk: Box::default(),
                material: Material::Hmac(keys),
            })],
        }
    }

    /// Takes over the keys of `previous` that are published unchanged (the same
    /// JWK, byte for byte once re-serialized), so `contains` still finds them: a
    /// refresh that republishes a key does not outdate what that key verified.
    pub(crate) fn keep_unchanged(&mut self, previous: &KeySet) {
        for key in &mut self.keys {
            if key.jwk.is_empty() {
                continue;
            }
            if let Some(same) = previous.keys.iter().find(|p| p.jwk == key.jwk) {
                *key = Arc::clone(same);
            }
        }
    }

    /// Whether `key` (that very key, not an equal one) is in this set.
    pub(crate) fn contains(&self, key: &Arc<VerifyingKey>) -> bool {
        self.keys.iter().any(|k| Arc::ptr_eq(k, key))
    }

    /// The keys of `self` that `previous` does not hold (by identity, so after
    /// `keep_unchanged` a republished key is not new).
    pub(crate) fn not_in<'a>(
        &'a self,
        previous: &'a KeySet,
    ) -> impl Iterator<Item = &'a VerifyingKey> {
        self.keys
            .iter()
            .filter(|k| !previous.contains(k))
            .map(|k| &**k)
    }

    pub(crate) fn kids(&self) -> impl Iterator<Item = Option<&str>> {
        self.keys.iter().map(|k| k.kid())
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    #[cfg(test)]
    pub(crate) fn first(&self) -> Option<&Arc<VerifyingKey>> {
        self.keys.first()
    }

    /// Verifies `sig` over `message` with the key the header designates and returns
    /// that key. With a `kid`, only keys with that `kid`; without, at most
    /// [`MAX_KIDLESS_CANDIDATES`] keys that fit the algorithm.
    pub(crate) fn verify(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        message: &[u8],
        sig: &[u8],
    ) -> Result<&Arc<VerifyingKey>, TokenProblem> {
        let mut last = None;
        let mut tried = 0;
        for key in &self.keys {
            match kid {
                Some(kid) if key.kid() != Some(kid) => continue,
                Some(_) => {}
                None if !key.fits(alg) => continue,
                None if tried == MAX_KIDLESS_CANDIDATES => break,
                None => {}
            }
            tried += 1;
            match key.verify(alg, message, sig) {
                Ok(()) => return Ok(key),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| match kid {
            Some(kid) => TokenProblem::UnknownKid {
                kid: kid.to_owned(),
            },
            None => TokenProblem::NoMatchingKey(alg),
        }))
    }
}
