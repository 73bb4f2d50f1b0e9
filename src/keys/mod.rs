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
mod jwk;
mod key;
mod set;
pub(crate) mod store;

pub(crate) use jwk::verifying_key;
pub(crate) use key::VerifyingKey;
pub(crate) use set::KeySet;

#[cfg(test)]
pub(crate) mod tests {
    use super::jwk::*;
    use super::set::*;
    use crate::error::TokenProblem;
    use crate::jws::Algorithm::*;
    use crate::jws::{Algorithm, AlgorithmSet};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use aws_lc_rs::signature::RsaPublicKeyComponents;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
    use aws_lc_rs::{hmac, signature};
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
