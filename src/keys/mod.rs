//! The key store: ready-to-verify keys, indexed by `kid`.
//!
//! Every usable JWK is turned into an aws-lc-rs [`ParsedPublicKey`] once, when the
//! key set is fetched, so a request pays for the signature check and nothing else.
//! Unusable keys (`use=enc`, `key_ops` without `verify`, unknown `kty`, P-521,
//! malformed members) are skipped with a warning, and so are keys that would let
//! anyone forge tokens: RSA under 2048 bits, with an even modulus or an exponent
//! other than an odd 3..2^32; small-order or non-canonical Ed25519 keys; EC points
//! off the curve (aws-lc refuses those). A key that carries private members (`d`,
//! `p`, `q`, `dp`, `dq`, `qi`, `oth`, or `k` beside an asymmetric key) is skipped
//! and logged as an error: the issuer leaked its signing key. The rest of the set
//! still works.

pub(crate) mod discovery;
pub(crate) mod fetch;
pub(crate) mod store;

use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{
    self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm,
};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
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
    /// ES256 on P-256, ES384 on P-384, ES512 on P-521: the curve fixes the algorithm.
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

/// JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2,
/// §6.3.2, §6.4.1; RFC 8037 §2). Published in a JWKS, they are the issuer's
/// signing key for anyone to read.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// Refuses a JWK that carries private key material, naming the members (never
/// their values), and logs it as an error: the issuer has leaked its key.
fn refuse_private_members(value: &serde_json::Value) -> Result<(), Skip> {
    let Some(jwk) = value.as_object() else {
        return Ok(());
    };
    let asymmetric = jwk.get("kty").and_then(serde_json::Value::as_str) != Some("oct");
    let leaked: Vec<&str> = PRIVATE_MEMBERS
        .into_iter()
        .chain(asymmetric.then_some("k"))
        .filter(|m| jwk.contains_key(*m))
        .collect();
    if leaked.is_empty() {
        return Ok(());
    }
    let kid = jwk
        .get("kid")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    tracing::error!(
        kid = kid.as_deref(),
        members = ?leaked,
        "the JWKS publishes private key material: this key is compromised, skipping it"
    );
    Err((
        kid,
        format!("the JWK carries private key members {leaked:?}"),
    ))
}

/// `key_ops` (RFC 7517 §4.3), when present, must be an array of distinct strings
/// that includes `verify`.
fn check_key_ops(value: &serde_json::Value) -> Result<(), String> {
    let Some(ops) = value.get("key_ops") else {
        return Ok(());
    };
    let ops: Vec<&str> = ops
        .as_array()
        .and_then(|ops| ops.iter().map(serde_json::Value::as_str).collect())
        .ok_or("key_ops is not an array of strings")?;
    if ops.iter().enumerate().any(|(i, op)| ops[..i].contains(op)) {
        return Err(format!("key_ops {ops:?} repeats an operation"));
    }
    if !ops.contains(&"verify") {
        return Err(format!("key_ops {ops:?} does not include verify"));
    }
    Ok(())
}

/// One JWK turned into a key, under the same rules for a JWKS entry and a DPoP
/// proof's `jwk`: allowed `alg`, type and curve fit, RSA of 2048 bits or more.
pub(crate) fn verifying_key(
    value: serde_json::Value,
    algorithms: AlgorithmSet,
) -> Result<VerifyingKey, Skip> {
    refuse_private_members(&value)?;
    let issuer = value
        .get("issuer")
        .and_then(serde_json::Value::as_str)
        .map(Box::from);
    let key_ops = check_key_ops(&value);
    // Read `alg` from the JSON itself: jsonwebtoken's KeyAlgorithm has no ES512 and
    // would fold it into "unknown".
    let declared_alg = value.get("alg").map(|alg| alg.as_str().map(str::to_owned));
    let published = serde_json::to_vec(&value).map_err(|e| (None, e.to_string()))?;
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| (None, e.to_string()))?;
    let kid = jwk.common.key_id.clone();
    let skip = |why: String| (kid.clone(), why);

    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(other) => return Err(skip(format!("use is {other:?}, not sig"))),
    }
    key_ops.map_err(skip)?;
    let declared = match declared_alg {
        None => None,
        Some(alg) => Some(
            alg.as_deref()
                .and_then(|name| name.parse::<Algorithm>().ok())
                .filter(|a| !a.is_symmetric())
                .ok_or_else(|| {
                    let alg = alg.as_deref().unwrap_or("(not a string)");
                    skip(format!("alg {alg:?} is not a JWS algorithm we verify"))
                })?,
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
            check_rsa(n, e).map_err(skip)?;
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
                EllipticCurve::P521 => (Algorithm::ES512, &signature::ECDSA_P521_SHA512_FIXED, 66),
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
            check_ed25519(&x).map_err(skip)?;
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

/// The largest RSA public exponent accepted, in bits. Real keys use 65537; a
/// huge exponent only makes verification slow (aws-lc's own limit is 33 bits).
const MAX_RSA_EXPONENT_BITS: usize = 32;

/// An RSA key that cannot be a real one, or that makes forgery easy: `e = 1`
/// (every value is its own signature), an even or tiny exponent, a huge one, an
/// even modulus (no product of two odd primes), a modulus under 2048 bits.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
    let bits = bit_len(n);
    if bits < 2048 {
        return Err(format!("RSA modulus is {bits} bits, under 2048"));
    }
    if n.last().is_some_and(|&low| low & 1 == 0) {
        return Err("RSA modulus is even".into());
    }
    let e_bits = bit_len(e);
    if e_bits > MAX_RSA_EXPONENT_BITS {
        return Err(format!(
            "RSA exponent is {e_bits} bits, over {MAX_RSA_EXPONENT_BITS}"
        ));
    }
    // At most 4 bytes now, without leading zeros.
    let value = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if value < 3 || value % 2 == 0 {
        return Err(format!(
            "RSA exponent {value} is not an odd number of at least 3"
        ));
    }
    Ok(())
}

/// p = 2^255 - 19, little-endian.
const ED25519_P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// The y-coordinates (little-endian, sign bit of x cleared) of the 8 points of
/// order dividing 8: the identity (y = 1), the point of order 2 (y = p - 1), the
/// two of order 4 (y = 0) and the four of order 8 (two y values, each with both
/// signs of x). The list libsodium refuses in `ge25519_has_small_order`
/// (src/libsodium/crypto_core/ed25519/ref10/ed25519_ref10.c); its two entries for
/// y = p and y = p + 1 are non-canonical and refused before this list is read.
const ED25519_SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    {
        let mut p_minus_1 = ED25519_P;
        p_minus_1[0] = 0xec;
        p_minus_1
    },
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
];

/// An Ed25519 public key must be canonical (y < p, RFC 8032 §5.1.3) and not of
/// small order: with a small-order key, one signature verifies for every message
/// (RFC 8032 §5.1.7's strict checks; libsodium's `ge25519_is_canonical` and
/// `ge25519_has_small_order`). Byte comparisons only, no curve arithmetic; a y
/// with no point on the curve is left to aws-lc, which then verifies nothing.
fn check_ed25519(x: &[u8]) -> Result<(), String> {
    let Ok(encoded) = <[u8; 32]>::try_from(x) else {
        return Err("Ed25519 x is not 32 bytes".into());
    };
    let mut y = encoded;
    y[31] &= 0x7f;
    // Little-endian: compare from the most significant byte down.
    if y.iter().rev().cmp(ED25519_P.iter().rev()).is_ge() {
        return Err("Ed25519 key is not canonically encoded (y >= p)".into());
    }
    if ED25519_SMALL_ORDER_Y.contains(&y) {
        return Err("Ed25519 key is a point of small order".into());
    }
    Ok(())
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

    /// The kids `from_jwks` keeps of these JWKs (a good RSA key is added, so the
    /// set is never empty).
    fn kept(jwks: Vec<serde_json::Value>) -> Vec<String> {
        let good = rsa_jwk("control", &RsaKeyPair::generate(KeySize::Rsa2048).unwrap());
        let keys = [jwks, vec![good]].concat();
        let doc = serde_json::json!({ "keys": keys });
        let set = KeySet::from_jwks(doc.to_string().as_bytes(), all(), 100).unwrap();
        set.kids()
            .flatten()
            .filter(|k| *k != "control")
            .map(str::to_owned)
            .collect()
    }

    fn okp(kid: &str, x: &[u8]) -> serde_json::Value {
        serde_json::json!({"kty":"OKP","crv":"Ed25519","kid":kid,"x":b64(x)})
    }

    fn ec(kid: &str, crv: &str, x: &[u8], y: &[u8]) -> serde_json::Value {
        serde_json::json!({"kty":"EC","crv":crv,"kid":kid,"x":b64(x),"y":b64(y)})
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn refuses_small_order_and_non_canonical_ed25519_keys() {
        let genuine = Ed25519KeyPair::generate().unwrap();
        let mut bad = Vec::new();
        for y in ED25519_SMALL_ORDER_Y {
            // Both signs of x: the sign bit is not part of y.
            let mut negative = y;
            negative[31] |= 0x80;
            bad.push(y);
            bad.push(negative);
        }
        // Every y >= p (p .. 2^255 - 1), with either sign bit: p and p + 1 are
        // the non-canonical spellings of the small-order y = 0 and y = 1.
        for low in 0xed..=0xff {
            let mut y = ED25519_P;
            y[0] = low;
            let mut negative = y;
            negative[31] |= 0x80;
            bad.push(y);
            bad.push(negative);
        }
        let mut jwks: Vec<_> = bad.iter().map(|x| okp("bad", x)).collect();
        jwks.push(okp("genuine", genuine.public_key().as_ref()));
        assert_eq!(kept(jwks), ["genuine"]);
        assert_eq!(bad.len(), 2 * 5 + 2 * 19);
    }

    #[test]
    fn refuses_ec_points_off_the_curve_at_infinity_or_out_of_range() {
        // Computed with Python: x = 5 is on P-256 with this y, x = 2 on P-384;
        // x + p is the same field element, out of range.
        let p256_y = hex("459243b9aa581806fe913bce99817ade11ca503c64d9a3c533415c083248fbcc");
        let p256_x_plus_p = hex("ffffffff00000001000000000000000000000001000000000000000000000004");
        let p384_y = hex(concat!(
            "8cdeadbbd04911a3c1931e26df3fa6439dca9c7eb286fbd4",
            "6fc319f0e2bb780232baf57825fc0c1912ada2fefe84024c"
        ));
        let p384_x_plus_p = hex(concat!(
            "ffffffffffffffffffffffffffffffffffffffffffffffff",
            "fffffffffffffffeffffffff000000000000000100000001"
        ));
        let p256_p = hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
        let mut five = [0u8; 32];
        five[31] = 5;
        let mut two = [0u8; 48];
        two[47] = 2;
        let jwks = vec![
            ec("p256", "P-256", &five, &p256_y),
            ec("p384", "P-384", &two, &p384_y),
            ec("x+p", "P-256", &p256_x_plus_p, &p256_y),
            ec("x+p", "P-384", &p384_x_plus_p, &p384_y),
            ec("x=p", "P-256", &p256_p, &p256_y),
            ec("y=p", "P-256", &five, &p256_p),
            ec("off-curve", "P-256", &five, &{
                let mut y = p256_y.clone();
                y[31] ^= 1;
                y
            }),
            ec("zero", "P-256", &[0; 32], &[0; 32]),
            ec("zero", "P-384", &[0; 48], &[0; 48]),
            ec("ones", "P-256", &[0xff; 32], &[0xff; 32]),
        ];
        assert_eq!(kept(jwks), ["p256", "p384"]);
    }

    #[test]
    fn refuses_rsa_exponents_and_moduli_that_make_forgery_easy() {
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let c = RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
        let with = |kid: &str, n: &[u8], e: &[u8]| serde_json::json!({"kty":"RSA","kid":kid,"n":b64(n),"e":b64(e)});
        let mut even_n = c.n.clone();
        *even_n.last_mut().unwrap() &= 0xfe;
        let jwks = vec![
            with("genuine", &c.n, &c.e),
            with("e=1", &c.n, &[1]),
            with("e=0", &c.n, &[0]),
            with("e=empty", &c.n, &[]),
            with("e=2", &c.n, &[2]),
            with("e=65536", &c.n, &[1, 0, 0]),
            with("e=2^32+1", &c.n, &[1, 0, 0, 0, 1]),
            with("e=huge", &c.n, &[0xff; 256]),
            with("n-even", &even_n, &c.e),
        ];
        assert_eq!(kept(jwks), ["genuine"]);
        assert!(check_rsa(&c.n, &[3]).is_ok());
        assert!(check_rsa(&c.n, &[1, 0, 1]).is_ok());
        assert!(check_rsa(&c.n, &[0xff, 0xff, 0xff, 0xff]).is_ok());
    }

    #[test]
    fn a_jwk_whose_key_ops_lack_verify_does_not_verify() {
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let with_ops = |kid: &str, ops: serde_json::Value| {
            let mut jwk = rsa_jwk(kid, &rsa);
            jwk["key_ops"] = ops;
            jwk
        };
        let jwks = vec![
            with_ops("verify", serde_json::json!(["verify"])),
            with_ops("sign+verify", serde_json::json!(["sign", "verify"])),
            with_ops("sign", serde_json::json!(["sign"])),
            with_ops("encrypt", serde_json::json!(["encrypt", "wrapKey"])),
            with_ops("empty", serde_json::json!([])),
            with_ops("string", serde_json::json!("verify")),
            with_ops("null", serde_json::Value::Null),
            with_ops("numbers", serde_json::json!([1])),
            with_ops("twice", serde_json::json!(["verify", "verify"])),
            with_ops("case", serde_json::json!(["Verify"])),
        ];
        assert_eq!(kept(jwks), ["verify", "sign+verify"]);
    }

    #[test]
    fn a_jwk_with_private_key_members_is_skipped() {
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let ed = Ed25519KeyPair::generate().unwrap();
        let with = |mut jwk: serde_json::Value, member: &str| {
            jwk[member] = b64(b"secret").into();
            jwk["kid"] = format!("leaks-{member}").into();
            jwk
        };
        let mut jwks: Vec<_> = ["d", "p", "q", "dp", "dq", "qi", "k"]
            .into_iter()
            .map(|m| with(rsa_jwk("", &rsa), m))
            .collect();
        jwks.push(with(rsa_jwk("", &rsa), "oth"));
        jwks.push(with(okp("", ed.public_key().as_ref()), "d"));
        jwks.push(with(okp("", ed.public_key().as_ref()), "k"));
        jwks.push(okp("public", ed.public_key().as_ref()));
        assert_eq!(kept(jwks), ["public"]);
    }

    #[test]
    fn bit_length_of_modulus() {
        assert_eq!(bit_len(&[0x01]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(bit_len(strip_leading_zeros(&[0, 0, 0xff])), 8);
    }
}
