//! Signing keys, the published JWKS, and compact JWS signing.
//!
//! Tokens are assembled here by hand from `serde_json` + base64url and signed with
//! `aws-lc-rs`, instead of through `jsonwebtoken::encode`, because
//! [`mint`](super::AuthorizationServerHandle::mint) must be able to put anything in
//! the header (`crit`, `jku`, a foreign `kid`, no `typ` at all), which
//! `jsonwebtoken`'s typed `Header` cannot express. Regular access tokens take the
//! same path so there is one signing code path; the tests verify its output with
//! `jsonwebtoken::decode`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::error::Unspecified;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{self, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair, RSA_PKCS1_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::oauth::random_base64url;
use crate::Algorithm;

/// A JWS algorithm the bundled server can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over a fresh 2048-bit RSA key.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-521 with SHA-512 (RFC 7518 §3.4).
    Es512,
    /// Ed25519 (`alg: "EdDSA"`, `crv: "Ed25519"`).
    EdDsa,
}

impl SigningAlgorithm {
    /// Every algorithm the bundled server can sign with.
    pub const ALL: [SigningAlgorithm; 4] = [
        SigningAlgorithm::Rs256,
        SigningAlgorithm::Es256,
        SigningAlgorithm::Es512,
        SigningAlgorithm::EdDsa,
    ];

    /// The JWS algorithm this signs with.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::Es512 => Algorithm::ES512,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }

    /// The JWS `alg` name (RFC 7518 / RFC 8037), from [`Algorithm`]'s one table.
    pub fn jws_name(self) -> &'static str {
        self.algorithm().as_str()
    }

    /// The signing algorithm for `alg`, if the bundled server can sign with it.
    pub fn from_algorithm(alg: Algorithm) -> Option<SigningAlgorithm> {
        Self::ALL.into_iter().find(|s| s.algorithm() == alg)
    }
}

/// Which key [`mint`](super::AuthorizationServerHandle::mint) signs with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignWith {
    /// The key currently signing access tokens.
    Active,
    /// A key this server generated earlier, published or not (e.g. one retired
    /// with [`retire_key`](super::AuthorizationServerHandle::retire_key)).
    Kid(String),
    /// A fresh key of this algorithm that is never published in `/jwks`, for
    /// "signed by a stranger" tests.
    Unpublished(SigningAlgorithm),
}

enum KeyMaterial {
    Rsa(rsa::KeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// One private key with its `kid`.
pub(crate) struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    material: KeyMaterial,
}

impl fmt::Debug for SigningKey {
    // Never print private material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key with a random `kid`.
    pub(crate) fn generate(alg: SigningAlgorithm) -> Result<Self, Unspecified> {
        let material = match alg {
            SigningAlgorithm::Rs256 => KeyMaterial::Rsa(rsa::KeyPair::generate(KeySize::Rsa2048)?),
            SigningAlgorithm::Es256 => {
                KeyMaterial::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)?)
            }
            SigningAlgorithm::Es512 => {
                KeyMaterial::Ec(EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING)?)
            }
            SigningAlgorithm::EdDsa => KeyMaterial::Ed(Ed25519KeyPair::generate()?),
        };
        Ok(Self {
            kid: random_base64url::<12>(),
            alg,
            material,
        })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK (RFC 7517), with `kid`, `alg` and `use: "sig"`.
    pub(crate) fn public_jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match &self.material {
            KeyMaterial::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            KeyMaterial::Ec(pair) => {
                // The uncompressed SEC1 point: 0x04 || x || y, each coordinate 32
                // bytes on P-256 and 66 on P-521.
                let point = pair.public_key().as_ref();
                let coordinates = point.get(1..).unwrap_or_default();
                let (x, y) = coordinates.split_at(coordinates.len() / 2);
                let crv = if self.alg == SigningAlgorithm::Es512 {
                    "P-521"
                } else {
                    "P-256"
                };
                json!({ "kty": "EC", "crv": crv, "x": b64(x), "y": b64(y) })
            }
            KeyMaterial::Ed(pair) => {
                json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref()) })
            }
        };
        if let Some(members) = jwk.as_object_mut() {
            members.insert("kid".into(), self.kid.clone().into());
            members.insert("alg".into(), self.alg.jws_name().into());
            members.insert("use".into(), "sig".into());
        }
        jwk
    }

    /// The default access-token header for this key (RFC 9068 §2.1).
    fn header(&self) -> Map<String, Value> {
        let mut header = Map::new();
        header.insert("alg".into(), self.alg.jws_name().into());
        header.insert("kid".into(), self.kid.clone().into());
        header.insert("typ".into(), "at+jwt".into());
        header
    }

    /// A compact JWS of `claims` under this key's default header with `overrides`
    /// merged in: a member set to `null` in `overrides` is removed.
    pub(crate) fn sign_jwt(
        &self,
        overrides: &Value,
        claims: &Value,
    ) -> Result<String, Unspecified> {
        let mut header = self.header();
        if let Value::Object(overrides) = overrides {
            for (name, value) in overrides {
                if value.is_null() {
                    header.remove(name);
                } else {
                    header.insert(name.clone(), value.clone());
                }
            }
        }
        let header = serde_json::to_vec(&header).map_err(|_| Unspecified)?;
        let claims = serde_json::to_vec(claims).map_err(|_| Unspecified)?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Unspecified> {
        let rng = SystemRandom::new();
        match &self.material {
            KeyMaterial::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)?;
                Ok(signature)
            }
            // The FIXED encoding is r || s, exactly what JWS wants (RFC 7518 §3.4).
            KeyMaterial::Ec(pair) => Ok(pair.sign(&rng, message)?.as_ref().to_vec()),
            KeyMaterial::Ed(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

/// Every key this server made, which one signs, and which ones `/jwks` shows.
#[derive(Debug)]
pub(crate) struct KeyRing {
    active: Arc<SigningKey>,
    /// Published kids in order, with the unix second they stop being published.
    published: Vec<(String, Option<u64>)>,
    all: HashMap<String, Arc<SigningKey>>,
}

impl KeyRing {
    pub(crate) fn new(first: SigningKey) -> Self {
        let first = Arc::new(first);
        Self {
            published: vec![(first.kid.clone(), None)],
            all: HashMap::from([(first.kid.clone(), first.clone())]),
            active: first,
        }
    }

    pub(crate) fn active(&self) -> Arc<SigningKey> {
        self.active.clone()
    }

    pub(crate) fn get(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.all.get(kid).cloned()
    }

    /// Makes `next` the active key; the old one stays published until `retire_at`.
    pub(crate) fn rotate(&mut self, next: SigningKey, retire_at: u64) -> String {
        let previous = self.active.kid.clone();
        for (kid, until) in &mut self.published {
            if *kid == previous {
                *until = Some(retire_at);
            }
        }
        let next = Arc::new(next);
        self.published.push((next.kid.clone(), None));
        self.all.insert(next.kid.clone(), next.clone());
        self.active = next;
        self.active.kid.clone()
    }

    /// Stops publishing `kid` at once; `false` if it was not published.
    pub(crate) fn retire(&mut self, kid: &str) -> bool {
        let before = self.published.len();
        self.published.retain(|(k, _)| k != kid);
        before != self.published.len()
    }

    /// The keys `/jwks` shows at `now` (unix seconds).
    pub(crate) fn published(&self, now: u64) -> Vec<Arc<SigningKey>> {
        self.published
            .iter()
            .filter(|(_, until)| until.is_none_or(|until| now < until))
            .filter_map(|(kid, _)| self.get(kid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    fn verify(alg: SigningAlgorithm, expected: Algorithm) {
        let key = SigningKey::generate(alg).expect("keygen");
        let claims = json!({ "sub": "x", "exp": 4_000_000_000u64 });
        let token = key.sign_jwt(&Value::Null, &claims).expect("sign");
        let jwk: Jwk = serde_json::from_value(key.public_jwk()).expect("jwk");
        let decoding = DecodingKey::from_jwk(&jwk).expect("decoding key");
        let mut validation = Validation::new(expected);
        validation.validate_aud = false;
        let data = decode::<Value>(&token, &decoding, &validation).expect("verifies");
        assert_eq!(data.claims, claims);
        assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
    }

    #[test]
    fn rs256_tokens_verify_against_the_published_jwk() {
        verify(SigningAlgorithm::Rs256, Algorithm::RS256);
    }

    #[test]
    fn es256_tokens_verify_against_the_published_jwk() {
        verify(SigningAlgorithm::Es256, Algorithm::ES256);
    }

    #[test]
    fn es512_tokens_verify_against_the_published_p521_jwk() {
        // jsonwebtoken has no ES512: verify with aws-lc-rs from the JWK's x and y.
        use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED, UnparsedPublicKey};
        let key = SigningKey::generate(SigningAlgorithm::Es512).expect("keygen");
        let token = key
            .sign_jwt(&Value::Null, &json!({ "sub": "x" }))
            .expect("sign");
        let jwk = key.public_jwk();
        assert_eq!(jwk["crv"], "P-521");
        assert_eq!(jwk["alg"], "ES512");
        let coordinate = |name: &str| {
            URL_SAFE_NO_PAD
                .decode(jwk[name].as_str().expect("coordinate"))
                .expect("base64url")
        };
        let (x, y) = (coordinate("x"), coordinate("y"));
        assert_eq!((x.len(), y.len()), (66, 66));
        let point = [&[4u8][..], &x, &y].concat();
        let (input, signature) = token.rsplit_once('.').expect("compact JWS");
        let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
        assert_eq!(signature.len(), 132, "r || s, 66 bytes each");
        UnparsedPublicKey::new(&ECDSA_P521_SHA512_FIXED, point)
            .verify(input.as_bytes(), &signature)
            .expect("verifies");
    }

    #[test]
    fn eddsa_tokens_verify_against_the_published_jwk() {
        verify(SigningAlgorithm::EdDsa, Algorithm::EdDSA);
    }

    #[test]
    fn header_overrides_replace_add_and_remove_members() {
        let key = SigningKey::generate(SigningAlgorithm::EdDsa).expect("keygen");
        let overrides = json!({ "typ": null, "kid": "other", "crit": ["exp"] });
        let token = key.sign_jwt(&overrides, &json!({})).expect("sign");
        let header = decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some("other"));
        assert_eq!(header.typ, None);
        assert_eq!(header.crit, Some(vec!["exp".to_owned()]));
    }

    #[test]
    fn rotated_key_stays_published_until_its_retirement() {
        let first = SigningKey::generate(SigningAlgorithm::EdDsa).expect("keygen");
        let first_kid = first.kid().to_owned();
        let mut ring = KeyRing::new(first);
        let second = ring.rotate(
            SigningKey::generate(SigningAlgorithm::EdDsa).expect("keygen"),
            100,
        );
        let kids = |ring: &KeyRing, now| -> Vec<String> {
            ring.published(now)
                .iter()
                .map(|k| k.kid().to_owned())
                .collect()
        };
        assert_eq!(kids(&ring, 99), vec![first_kid.clone(), second.clone()]);
        assert_eq!(kids(&ring, 100), vec![second.clone()]);
        assert!(ring.get(&first_kid).is_some(), "still usable for mint");
        assert!(ring.retire(&second));
        assert!(kids(&ring, 0).iter().all(|k| *k != second));
    }
}
