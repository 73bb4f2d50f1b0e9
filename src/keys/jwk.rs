//! One JWK turned into a [`VerifyingKey`], under the same rules for a JWKS entry
//! and a DPoP proof's `jwk`.

use aws_lc_rs::signature::{
    self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm,
};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};

use super::key::{Material, VerifyingKey};
use crate::jws::{Algorithm, AlgorithmSet, decode_b64url};

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
pub(super) const MAX_RSA_EXPONENT_BITS: usize = 32;

/// An RSA key that cannot be a real one, or that makes forgery easy: `e = 1`
/// (every value is its own signature), an even or tiny exponent, a huge one, an
/// even modulus (no product of two odd primes), a modulus under 2048 bits.
pub(super) fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
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
pub(super) const ED25519_P: [u8; 32] = {
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
pub(super) const ED25519_SMALL_ORDER_Y: [[u8; 32]; 5] = [
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
pub(super) fn check_ed25519(x: &[u8]) -> Result<(), String> {
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

pub(super) fn check_fits(
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

pub(super) fn rsa_params(alg: Algorithm) -> &'static RsaParameters {
    match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        _ => &signature::RSA_PSS_2048_8192_SHA512,
    }
}

pub(super) fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

pub(super) fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// A key that is not usable: its `kid`, and why.
pub(crate) type Skip = (Option<String>, String);

/// JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2,
/// §6.3.2, §6.4.1; RFC 8037 §2). Published in a JWKS, they are the issuer's
/// signing key for anyone to read.
pub(super) const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// Refuses a JWK that carries private key material, naming the members (never
/// their values), and logs it as an error: the issuer has leaked its key.
pub(super) fn refuse_private_members(value: &serde_json::Value) -> Result<(), Skip> {
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
pub(super) fn check_key_ops(value: &serde_json::Value) -> Result<(), String> {
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
