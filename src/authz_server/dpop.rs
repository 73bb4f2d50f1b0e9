//! A DPoP client key for tests and examples: signs proofs (RFC 9449 §4.2) with
//! a fresh ES256 key, and can break any rule on purpose.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::keys::{SigningAlgorithm, SigningKey};
use super::oauth::random_token;

/// A client's DPoP key pair (ES256, P-256), generated fresh.
///
/// ```
/// use bearer_guard::authz_server::DpopKey;
///
/// let key = DpopKey::generate();
/// let proof = key
///     .proof("GET", "https://api.example.com/orders")
///     .access_token("eyJ...")
///     .iat(1_700_000_000)
///     .sign();
/// assert_eq!(proof.split('.').count(), 3);
/// assert_eq!(key.thumbprint().len(), 43);
/// ```
pub struct DpopKey {
    key: SigningKey,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("thumbprint", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

impl DpopKey {
    /// A fresh P-256 key.
    ///
    /// # Panics
    ///
    /// If the system random number generator fails.
    pub fn generate() -> Self {
        let key = SigningKey::generate(SigningAlgorithm::Es256)
            .unwrap_or_else(|_| panic!("ES256 key generation failed"));
        DpopKey { key }
    }

    /// The public key as a JWK: `kty`, `crv`, `x`, `y`, nothing else.
    pub fn public_jwk(&self) -> Map<String, Value> {
        let mut jwk = match self.key.public_jwk() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        jwk.retain(|name, _| matches!(name.as_str(), "kty" | "crv" | "x" | "y"));
        jwk
    }

    /// The RFC 7638 thumbprint of the key: what a bound token's `cnf.jkt` holds.
    pub fn thumbprint(&self) -> String {
        crate::sender::jwk_thumbprint(&self.public_jwk()).unwrap_or_default()
    }

    /// A proof for `method` and `url` (its query and fragment are left out of
    /// `htu`), with a random `jti` and `iat` = now unless set.
    pub fn proof(&self, method: &str, url: &str) -> ProofBuilder<'_> {
        let htu = match url.find(['?', '#']) {
            Some(end) => &url[..end],
            None => url,
        };
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ProofBuilder {
            key: self,
            header: json!({ "typ": "dpop+jwt", "kid": null, "jwk": self.public_jwk() }),
            claims: json!({ "jti": random_token(), "htm": method, "htu": htu, "iat": iat }),
        }
    }
}

/// A proof being built; [`sign`](Self::sign) returns the compact JWS.
#[derive(Debug)]
#[must_use]
pub struct ProofBuilder<'k> {
    key: &'k DpopKey,
    header: Value,
    claims: Value,
}

impl ProofBuilder<'_> {
    /// Binds the proof to this access token (`ath`, required at resource servers).
    pub fn access_token(self, token: &str) -> Self {
        let ath = URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes()));
        self.claim("ath", ath)
    }

    /// The server's nonce.
    pub fn nonce(self, nonce: &str) -> Self {
        self.claim("nonce", nonce)
    }

    /// `iat`, in Unix seconds.
    pub fn iat(self, iat: u64) -> Self {
        self.claim("iat", iat)
    }

    /// `jti`.
    pub fn jti(self, jti: &str) -> Self {
        self.claim("jti", jti)
    }

    /// Sets any claim; `null` removes it.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        set(&mut self.claims, name, value.into());
        self
    }

    /// Sets any header member (`null` removes it): for proofs that break a rule.
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        set(&mut self.header, name, value.into());
        self
    }

    /// The compact JWS, signed with the key (whatever the header now says).
    ///
    /// # Panics
    ///
    /// If the crypto library fails to sign.
    pub fn sign(self) -> String {
        self.key
            .key
            .sign_jwt(&self.header, &self.claims)
            .unwrap_or_else(|_| panic!("DPoP proof signing failed"))
    }
}

fn set(object: &mut Value, name: &str, value: Value) {
    if let Value::Object(members) = object {
        if value.is_null() {
            members.remove(name);
        } else {
            members.insert(name.to_owned(), value);
        }
    }
}
