//! The key store: ready-to-verify keys, indexed by `kid`.
//!
//! Every usable JWK is turned into an aws-lc-rs [`ParsedPublicKey`] once, when the
//! key set is fetched, so a request pays for the signature check and nothing else.
//! Unusable keys (`use=enc`, unknown `kty`, RSA under 2048 bits, P-521, malformed
//! members) are skipped with a warning; the rest of the set still works.

pub(crate) mod fetch;
pub(crate) mod store;

use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{
    self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm,
};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use serde::Deserialize;

use crate::error::TokenProblem;
use crate::jws::{Algorithm, AlgorithmSet, decode_b64url};

/// How many keys a token without `kid` may be tried against: bounds the CPU an
/// attacker can spend per request on an issuer that publishes many keys.
const MAX_KIDLESS_CANDIDATES: usize = 4;

/// A key ready to verify signatures.
pub(crate) struct VerifyingKey {
    kid: Option<Box<str>>,
    /// The JWK's `issuer` member (Entra ID publishes one): binds the key to tokens
    /// of that issuer only.
    issuer: Option<Box<str>>,
    /// The JWK as it was published (re-serialized, so white space does not
    /// matter): two fetches that publish the same JWK keep the same
    /// `Arc<VerifyingKey>`, so tokens it verified stay cached across refreshes.
    /// Empty for keys that did not come from a JWKS.
    jwk: Box<[u8]>,
    material: Material,
}

enum Material {
    /// One parsed key per RSA algorithm the key may be used with.
    Rsa(Vec<(Algorithm, ParsedPublicKey)>),
    /// ES256 on P-256, ES384 on P-384: the curve fixes the algorithm.
    Ec(Algorithm, ParsedPublicKey),
    Ed25519(ParsedPublicKey),
    Hmac(Vec<(Algorithm, hmac::Key)>),
}

impl VerifyingKey {
    pub(crate) fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub(crate) fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    fn fits(&self, alg: Algorithm) -> bool {
        match &self.material {
            Material::Rsa(keys) => keys.iter().any(|(a, _)| *a == alg),
            Material::Ec(a, _) => *a == alg,
            Material::Ed25519(_) => alg == Algorithm::EdDSA,
            Material::Hmac(keys) => keys.iter().any(|(a, _)| *a == alg),
        }
    }

    fn describe(&self) -> String {
        match &self.material {
            Material::Rsa(keys) => {
                let algs: Vec<_> = keys.iter().map(|(a, _)| a.as_str()).collect();
                format!("RSA ({})", algs.join(", "))
            }
            Material::Ec(a, _) => format!("EC ({a})"),
            Material::Ed25519(_) => "OKP Ed25519 (EdDSA)".to_owned(),
            Material::Hmac(_) => "a shared secret".to_owned(),
        }
    }

    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), TokenProblem> {
        let ok = match &self.material {
            Material::Rsa(keys) => keys
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, k)| k.verify_sig(message, sig).is_ok()),
            Material::Ec(a, k) => (*a == alg).then(|| k.verify_sig(message, sig).is_ok()),
            Material::Ed25519(k) => {
                (alg == Algorithm::EdDSA).then(|| k.verify_sig(message, sig).is_ok())
            }
            Material::Hmac(keys) => keys
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, k)| hmac::verify(k, message, sig).is_ok()),
        };
        match ok {
            Some(true) => Ok(()),
            Some(false) => Err(TokenProblem::BadSignature),
            None => Err(TokenProblem::KeyAlgorithmMismatch {
                kid: self.kid.as_deref().map(str::to_owned),
                key: self.describe(),
                alg,
            }),
        }
    }
}

/// The usable keys of one key source.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
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
struct JwksDocument {
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

/// A key that is not usable: its `kid`, and why.
pub(crate) type Skip = (Option<String>, String);

/// One JWK turned into a key, under the same rules for a JWKS entry and a DPoP
/// proof's `jwk`: allowed `alg`, type and curve fit, RSA of 2048 bits or more.
pub(crate) fn verifying_key(
    value: serde_json::Value,
    algorithms: AlgorithmSet,
) -> Result<VerifyingKey, Skip> {
    let issuer = value
        .get("issuer")
        .and_then(serde_json::Value::as_str)
        .map(Box::from);
    let published = serde_json::to_vec(&value).map_err(|e| (None, e.to_string()))?;
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| (None, e.to_string()))?;
    let kid = jwk.common.key_id.clone();
    let skip = |why: String| (kid.clone(), why);

    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(other) => return Err(skip(format!("use is {other:?}, not sig"))),
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(
            jwk_alg(alg)
                .ok_or_else(|| skip(format!("alg {alg:?} is not a JWS algorithm we verify")))?,
        ),
    };
    if let Some(alg) = declared
        && !algorithms.contains(alg)
    {
        return Err(skip(format!("alg {alg} is not allowed")));
    }

    let material = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = decode_b64url(&rsa.n).ok_or_else(|| skip("n is not base64url".into()))?;
            let e = decode_b64url(&rsa.e).ok_or_else(|| skip("e is not base64url".into()))?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            let bits = bit_len(n);
            if bits < 2048 {
                return Err(skip(format!("RSA modulus is {bits} bits, under 2048")));
            }
            let components = RsaPublicKeyComponents { n, e };
            let mut parsed = Vec::new();
            for alg in algorithms.iter().filter(|a| a.is_rsa()) {
                if declared.is_some_and(|d| d != alg) {
                    continue;
                }
                let key = components
                    .to_parsed_public_key(rsa_params(alg))
                    .map_err(|e| skip(format!("RSA key rejected: {e}")))?;
                parsed.push((alg, key));
            }
            if parsed.is_empty() {
                return Err(skip("no allowed RSA algorithm".into()));
            }
            Material::Rsa(parsed)
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (alg, verify_alg, len): (_, &'static dyn VerificationAlgorithm, _) = match ec.curve
            {
                EllipticCurve::P256 => (Algorithm::ES256, &signature::ECDSA_P256_SHA256_FIXED, 32),
                EllipticCurve::P384 => (Algorithm::ES384, &signature::ECDSA_P384_SHA384_FIXED, 48),
                ref other => return Err(skip(format!("EC curve {other:?} is not supported"))),
            };
            check_fits(declared, alg, algorithms).map_err(skip)?;
            let x = decode_b64url(&ec.x).filter(|x| x.len() == len);
            let y = decode_b64url(&ec.y).filter(|y| y.len() == len);
            let (Some(x), Some(y)) = (x, y) else {
                return Err(skip(format!("EC x/y are not {len}-byte base64url")));
            };
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = ParsedPublicKey::new(verify_alg, point)
                .map_err(|e| skip(format!("EC point rejected: {e}")))?;
            Material::Ec(alg, key)
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            check_fits(declared, Algorithm::EdDSA, algorithms).map_err(skip)?;
            let x = decode_b64url(&okp.x)
                .filter(|x| x.len() == 32)
                .ok_or_else(|| skip("Ed25519 x is not 32-byte base64url".into()))?;
            let key = ParsedPublicKey::new(&signature::ED25519, x)
                .map_err(|e| skip(format!("Ed25519 key rejected: {e}")))?;
            Material::Ed25519(key)
        }
        AlgorithmParameters::OctetKey(_) => {
            // A symmetric key in a JWKS would let anyone who can read it mint tokens.
            return Err(skip(
                "symmetric (oct) keys are never taken from a JWKS".into(),
            ));
        }
        _ => return Err(skip("unsupported key type".into())),
    };
    Ok(VerifyingKey {
        kid: kid.map(Box::from),
        issuer,
        jwk: published.into(),
        material,
    })
}

fn check_fits(
    declared: Option<Algorithm>,
    alg: Algorithm,
    allowed: AlgorithmSet,
) -> Result<(), String> {
    if declared.is_some_and(|d| d != alg) {
        return Err(format!(
            "declared alg {declared:?} does not fit the key type ({alg})"
        ));
    }
    if !allowed.contains(alg) {
        return Err(format!("alg {alg} is not allowed"));
    }
    Ok(())
}

fn jwk_alg(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn rsa_params(alg: Algorithm) -> &'static RsaParameters {
    match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        _ => &signature::RSA_PSS_2048_8192_SHA512,
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::jws::Algorithm::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn all() -> AlgorithmSet {
        Algorithm::DEFAULT.into_iter().collect()
    }

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    pub(crate) fn rsa_jwk(kid: &str, key: &RsaKeyPair) -> serde_json::Value {
        let pk = key.public_key();
        let c = RsaPublicKeyComponents::<Vec<u8>>::from(pk);
        serde_json::json!({"kty":"RSA","kid":kid,"n":b64(&c.n),"e":b64(&c.e)})
    }

    #[test]
    fn a_republished_key_stays_the_same_key_a_changed_one_does_not() {
        let a = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let b = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let first = serde_json::json!({"keys": [rsa_jwk("a", &a), rsa_jwk("b", &b)]});
        let old = KeySet::from_jwks(first.to_string().as_bytes(), all(), 10).unwrap();

        // Same keys, other member order and white space, plus a new key: "a" and
        // "b" are taken over, "c" is new.
        let c = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let jwk_a = rsa_jwk("a", &a);
        let reordered = format!(
            r#"{{ "keys": [ {{"e": {}, "n": {}, "kid": "a", "kty": "RSA"}}, {}, {} ] }}"#,
            jwk_a["e"],
            jwk_a["n"],
            rsa_jwk("b", &b),
            rsa_jwk("c", &c)
        );
        let mut new = KeySet::from_jwks(reordered.as_bytes(), all(), 10).unwrap();
        new.keep_unchanged(&old);
        assert!(old.keys.iter().all(|k| new.contains(k)));
        let added: Vec<_> = new.not_in(&old).map(|k| k.kid()).collect();
        assert_eq!(added, [Some("c")]);

        // "b" republished with other material under the same kid, or with a
        // changed member: not the same key.
        let changed = serde_json::json!({"keys": [
            rsa_jwk("a", &c),
            {"kty": "RSA", "kid": "b", "use": "sig", "n": rsa_jwk("b", &b)["n"], "e": "AQAB"},
        ]});
        let mut new = KeySet::from_jwks(changed.to_string().as_bytes(), all(), 10).unwrap();
        new.keep_unchanged(&old);
        assert!(old.keys.iter().all(|k| !new.contains(k)));
    }

    #[test]
    fn keys_of_a_shared_secret_are_never_taken_over() {
        let algs = [HS256].into_iter().collect();
        let old = KeySet::from_secret(b"0123456789abcdef0123456789abcdef", algs);
        let mut new = KeySet::from_secret(b"0123456789abcdef0123456789abcdef", algs);
        new.keep_unchanged(&old);
        assert!(!new.contains(old.first().unwrap()));
    }

    #[test]
    fn skips_unusable_jwk_keeps_the_rest() {
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let mut good = rsa_jwk("good", &rsa);
        let doc = serde_json::json!({"keys": [
            {"kty":"RSA","kid":"enc","use":"enc","n":good["n"],"e":good["e"]},
            {"kty":"RSA","kid":"small","n":b64(&[0xff; 128]),"e":"AQAB"},
            {"kty":"oct","kid":"secret","k":"c2VjcmV0"},
            {"kty":"XYZ","kid":"weird"},
            {"kty":"EC","kid":"bad-point","crv":"P-256","x":b64(&[1;32]),"y":b64(&[2;32])},
            {"kty":"EC","kid":"p521","crv":"P-521","x":b64(&[1;66]),"y":b64(&[2;66])},
            {"kty":"RSA","kid":"not-b64","n":"!!","e":"AQAB"},
            {"kty":"RSA","kid":"enc-alg","alg":"RSA-OAEP","n":good["n"],"e":good["e"]},
            "not an object",
            good.take(),
        ]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes(), all(), 100).unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), [Some("good")]);
    }

    #[test]
    fn refuses_a_set_with_no_usable_key_or_too_many() {
        let doc = r#"{"keys":[{"kty":"oct","k":"AA"}]}"#;
        assert_eq!(
            KeySet::from_jwks(doc.as_bytes(), all(), 100).err(),
            Some(JwksError::NoUsableKeys { skipped: 1 })
        );
        let many = format!(r#"{{"keys":[{}]}}"#, vec!["{}"; 101].join(","));
        assert!(matches!(
            KeySet::from_jwks(many.as_bytes(), all(), 100),
            Err(JwksError::TooManyKeys {
                count: 101,
                max: 100
            })
        ));
        assert!(matches!(
            KeySet::from_jwks(b"[]", all(), 100),
            Err(JwksError::NotJwks(_))
        ));
    }

    #[test]
    fn verifies_rs256_es256_and_eddsa_and_enforces_key_alg_agreement() {
        let rng = SystemRandom::new();
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let ed = Ed25519KeyPair::generate().unwrap();
        let ec_point = ec.public_key().as_ref().to_vec();
        let mut rsa_jwk = rsa_jwk("r", &rsa);
        rsa_jwk["alg"] = "RS256".into();
        let doc = serde_json::json!({"keys":[
            rsa_jwk,
            {"kty":"EC","kid":"e","crv":"P-256","x":b64(&ec_point[1..33]),"y":b64(&ec_point[33..])},
            {"kty":"OKP","kid":"d","crv":"Ed25519","x":b64(ed.public_key().as_ref())},
        ]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes(), all(), 100).unwrap();
        let msg = b"header.payload";

        let mut rsa_sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut rsa_sig)
            .unwrap();
        assert!(set.verify(Some("r"), RS256, msg, &rsa_sig).is_ok());
        assert_eq!(
            set.verify(Some("r"), RS256, b"other", &rsa_sig).err(),
            Some(TokenProblem::BadSignature)
        );
        // The JWK says RS256: the same key must not verify PS256 or RS512.
        assert!(matches!(
            set.verify(Some("r"), PS256, msg, &rsa_sig),
            Err(TokenProblem::KeyAlgorithmMismatch { .. })
        ));

        let ec_sig = ec.sign(&rng, msg).unwrap();
        assert!(set.verify(Some("e"), ES256, msg, ec_sig.as_ref()).is_ok());
        assert!(matches!(
            set.verify(Some("e"), ES384, msg, ec_sig.as_ref()),
            Err(TokenProblem::KeyAlgorithmMismatch { .. })
        ));

        let ed_sig = ed.sign(msg);
        assert!(set.verify(Some("d"), EdDSA, msg, ed_sig.as_ref()).is_ok());
        assert!(set.verify(None, EdDSA, msg, ed_sig.as_ref()).is_ok());
        assert_eq!(
            set.verify(Some("nope"), EdDSA, msg, ed_sig.as_ref()).err(),
            Some(TokenProblem::UnknownKid { kid: "nope".into() })
        );
        assert_eq!(
            set.verify(None, ES384, msg, ed_sig.as_ref()).err(),
            Some(TokenProblem::NoMatchingKey(ES384))
        );
    }

    #[test]
    fn hmac_keys_verify_only_their_algorithms() {
        let secret = [7u8; 32];
        let set = KeySet::from_secret(&secret, [HS256].into_iter().collect());
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let tag = hmac::sign(&key, b"m");
        assert!(set.verify(None, HS256, b"m", tag.as_ref()).is_ok());
        assert!(set.verify(None, HS384, b"m", tag.as_ref()).is_err());
    }

    #[test]
    fn bit_length_of_modulus() {
        assert_eq!(bit_len(&[0x01]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(bit_len(strip_leading_zeros(&[0, 0, 0xff])), 8);
    }
}
