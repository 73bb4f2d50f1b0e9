//! Compact JWS (RFC 7515 §7.1): split, strict base64url, header parsed once.
//!
//! Only what an access token needs is understood. Everything an attacker could use
//! to steer verification is refused or ignored here, before any key is looked up:
//! `alg: none` in every casing, a `crit` header (we implement no extension), the
//! unencoded-payload option `b64`, nested tokens (`cty: JWT`), JWE (five segments).
//! The key-carrying headers `jku`, `x5u`, `jwk` and `x5c` are never read: keys come
//! only from the issuer's configured key source.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::IgnoredAny;

pub(crate) use crate::algorithm::{Algorithm, AlgorithmSet};
use crate::error::TokenProblem;

/// Which `typ` header values are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TypPolicy {
    /// `at+jwt`, `application/at+jwt`, `JWT`, `application/jwt`, or no `typ` at all.
    #[default]
    Lenient,
    /// Only `at+jwt` / `application/at+jwt` (RFC 9068 §4): refuses ID tokens and
    /// other JWTs that happen to carry the right audience.
    StrictRfc9068,
}

impl TypPolicy {
    /// Media types are case-insensitive (RFC 7515 §4.1.9), and the `application/`
    /// prefix may be omitted.
    fn accepts(self, typ: Option<&str>) -> bool {
        let Some(typ) = typ else {
            return self == TypPolicy::Lenient;
        };
        let bare = strip_prefix_ignore_case(typ, "application/").unwrap_or(typ);
        if bare.eq_ignore_ascii_case("at+jwt") {
            return true;
        }
        self == TypPolicy::Lenient && bare.eq_ignore_ascii_case("jwt")
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The protected header members bearer-guard reads. Unknown members (including
/// `jku`, `x5u`, `jwk`, `x5c`) are skipped without being looked at.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default, deserialize_with = "present_string")]
    kid: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    typ: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    cty: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
    #[serde(default)]
    b64: Option<IgnoredAny>,
}

/// A header member that, when present, must be a string: `"kid": null` is not
/// "no kid" (serde's `Option` would read it so).
fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// The parts of the protected header that verification needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// The `alg` member.
    pub alg: Algorithm,
    /// The `kid` member, if any.
    pub kid: Option<String>,
    /// The `typ` member, if any.
    pub typ: Option<String>,
}

/// A compact JWS split into its parts, with header and payload decoded.
///
/// `pub` only so that the hidden `__fuzz` entry points can hand it out; the
/// module is private, so it is not reachable otherwise.
#[derive(Debug)]
#[cfg_attr(not(feature = "__fuzz"), allow(unreachable_pub))]
pub struct CompactJws<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a [u8],
    /// The protected header members verification needs.
    pub header: TokenHeader,
    /// The decoded payload: the claims' JSON text, not yet trusted.
    pub payload: Vec<u8>,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS, and applies every header rule that needs no key.
pub(crate) fn parse(token: &str, typ_policy: TypPolicy) -> Result<CompactJws<'_>, TokenProblem> {
    let (h, p, s) = split(token)?;

    let header_json = decode_segment(h, "header")?;
    // The whole header, skipped members included, must be UTF-8 (RFC 7515 §4).
    let header_json = std::str::from_utf8(&header_json)
        .map_err(|_| TokenProblem::BadHeader("the header is not UTF-8".to_owned()))?;
    let raw: RawHeader = crate::json::from_json_object(header_json)
        .map_err(|e| TokenProblem::BadHeader(e.to_string()))?;
    if raw.crit.is_some() {
        return Err(TokenProblem::CritHeader);
    }
    if raw.b64.is_some() {
        return Err(TokenProblem::Malformed(
            "the b64 header (unencoded payload) is not supported",
        ));
    }
    if let Some(cty) = &raw.cty {
        let bare = strip_prefix_ignore_case(cty, "application/").unwrap_or(cty);
        if bare.eq_ignore_ascii_case("jwt") {
            return Err(TokenProblem::Malformed(
                "nested JWTs (cty: JWT) are not accepted",
            ));
        }
    }
    let alg = match raw.alg.parse::<Algorithm>() {
        Ok(alg) => alg,
        Err(_) if raw.alg.eq_ignore_ascii_case("none") => return Err(TokenProblem::AlgNone),
        Err(_) => return Err(TokenProblem::AlgorithmNotAllowed(raw.alg)),
    };
    if !typ_policy.accepts(raw.typ.as_deref()) {
        return Err(TokenProblem::TypNotAccepted(raw.typ));
    }

    let payload = decode_segment(p, "payload")?;
    let signature = decode_segment(s, "signature")?;
    Ok(CompactJws {
        signing_input: &token.as_bytes()[..h.len() + 1 + p.len()],
        header: TokenHeader {
            alg,
            kid: raw.kid,
            typ: raw.typ,
        },
        payload,
        signature,
    })
}

/// The three segments of a compact JWS (header, payload, signature), still
/// encoded; five segments (JWE) and an empty signature are refused.
pub(crate) fn split(token: &str) -> Result<(&str, &str, &str), TokenProblem> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenProblem::Malformed(
            "not a compact JWS: expected three segments",
        ));
    };
    match parts.count() {
        0 => {}
        2 => {
            return Err(TokenProblem::Malformed(
                "JWE (encrypted) tokens are not supported",
            ));
        }
        _ => {
            return Err(TokenProblem::Malformed(
                "not a compact JWS: expected three segments",
            ));
        }
    }
    if s.is_empty() {
        return Err(TokenProblem::Malformed("the signature segment is empty"));
    }
    Ok((h, p, s))
}

/// Strict base64url: the URL-safe alphabet only, no padding, no whitespace, no
/// non-zero trailing bits (so each token has exactly one encoding).
fn decode_segment(segment: &str, which: &'static str) -> Result<Vec<u8>, TokenProblem> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenProblem::BadBase64(which))
}

/// Strict base64url decoding for JWK members, shared with the key store.
pub(crate) fn decode_b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(r#"{"iss":"x"}"#), b64("sig"))
    }

    #[test]
    fn parses_a_well_formed_token_once() {
        let t = token(r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#);
        let jws = parse(&t, TypPolicy::Lenient).unwrap();
        assert_eq!(jws.header.alg, Algorithm::RS256);
        assert_eq!(jws.header.kid.as_deref(), Some("k1"));
        assert_eq!(jws.payload, br#"{"iss":"x"}"#);
        assert_eq!(jws.signature, b"sig");
        assert_eq!(jws.signing_input, t.rsplit_once('.').unwrap().0.as_bytes());
    }

    #[test]
    fn rejects_alg_none_in_every_casing() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#));
            assert_eq!(
                parse(&t, TypPolicy::Lenient).unwrap_err(),
                TokenProblem::AlgNone
            );
        }
    }

    #[test]
    fn rejects_unknown_algorithm_names() {
        let t = token(r#"{"alg":"rs256"}"#);
        assert!(matches!(
            parse(&t, TypPolicy::Lenient),
            Err(TokenProblem::AlgorithmNotAllowed(a)) if a == "rs256"
        ));
    }

    #[test]
    fn rejects_crit_header() {
        let t = token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#);
        assert_eq!(
            parse(&t, TypPolicy::Lenient).unwrap_err(),
            TokenProblem::CritHeader
        );
    }

    #[test]
    fn rejects_b64_header() {
        let t = token(r#"{"alg":"RS256","b64":false}"#);
        assert!(matches!(
            parse(&t, TypPolicy::Lenient),
            Err(TokenProblem::Malformed(_))
        ));
    }

    #[test]
    fn rejects_nested_jwt() {
        let t = token(r#"{"alg":"RS256","cty":"JWT"}"#);
        assert!(matches!(
            parse(&t, TypPolicy::Lenient),
            Err(TokenProblem::Malformed(_))
        ));
    }

    #[test]
    fn ignores_key_carrying_headers() {
        let t = token(
            r#"{"alg":"RS256","jku":"https://evil/jwks","x5u":"https://evil/c","jwk":{"kty":"oct","k":"AA"},"x5c":["AA"]}"#,
        );
        assert!(parse(&t, TypPolicy::Lenient).is_ok());
    }

    #[test]
    fn rejects_duplicate_header_members() {
        let t = token(r#"{"alg":"RS256","alg":"HS256"}"#);
        assert!(matches!(
            parse(&t, TypPolicy::Lenient),
            Err(TokenProblem::BadHeader(_))
        ));
    }

    #[test]
    fn rejects_invalid_utf8_anywhere_in_the_header() {
        let good = br#"{"alg":"RS256","kid":"k1","x-unread":"ok"}"#;
        let segment = |header: &[u8]| {
            let t = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                b64("{}"),
                b64("s")
            );
            parse(&t, TypPolicy::Lenient).map(|_| ())
        };
        assert!(segment(good).is_ok());
        // A lone continuation byte, an overlong '/', a surrogate, a truncated
        // sequence: in a member that is read, in one that is skipped, in a key.
        for bad in [&b"\x80"[..], b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"] {
            for at in [
                r#"{"alg":"RS256","x-unread":"@"}"#,
                r#"{"alg":"RS256","x-unread":["@", 1]}"#,
                r#"{"alg":"RS256","@":1}"#,
                r#"{"alg":"RS256","kid":"@"}"#,
            ] {
                let (before, after) = at.split_once('@').unwrap();
                let header = [before.as_bytes(), bad, after.as_bytes()].concat();
                assert!(
                    matches!(segment(&header), Err(TokenProblem::BadHeader(_))),
                    "{header:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_a_header_that_is_not_an_object() {
        let t = token(r#"["RS256"]"#);
        let r = parse(&t, TypPolicy::Lenient);
        assert!(matches!(r, Err(TokenProblem::BadHeader(_))), "{r:?}");
    }

    #[test]
    fn rejects_non_string_kid() {
        for kid in ["123", "null", "[\"a\"]", "{}", "true"] {
            let t = token(&format!(r#"{{"alg":"RS256","kid":{kid}}}"#));
            assert!(parse(&t, TypPolicy::Lenient).is_err(), "kid {kid}");
        }
    }

    #[test]
    fn rejects_jwe_and_wrong_segment_counts() {
        for t in ["a.b", "a", "a.b.c.d", "a.b.c.d.e", "", "..", "a.b."] {
            assert!(
                matches!(
                    parse(t, TypPolicy::Lenient),
                    Err(TokenProblem::Malformed(_))
                ),
                "{t}"
            );
        }
    }

    #[test]
    fn rejects_padding_standard_alphabet_and_whitespace() {
        let good = token(r#"{"alg":"RS256"}"#);
        let (h, rest) = good.split_once('.').unwrap();
        for bad_h in [
            format!("{h}="),
            format!("{h} "),
            h.replace('e', "+"),
            format!(" {h}"),
        ] {
            let t = format!("{bad_h}.{rest}");
            assert!(parse(&t, TypPolicy::Lenient).is_err(), "{t}");
        }
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        // "QQ" decodes to "A"; "QR" has non-zero trailing bits and must not.
        let t = format!("{}.QR.{}", b64(r#"{"alg":"RS256"}"#), b64("s"));
        assert_eq!(
            parse(&t, TypPolicy::Lenient).unwrap_err(),
            TokenProblem::BadBase64("payload")
        );
    }

    #[test]
    fn typ_policy_lenient_and_strict() {
        let cases = [
            (None, true, false),
            (Some("at+jwt"), true, true),
            (Some("application/at+JWT"), true, true),
            (Some("JWT"), true, false),
            (Some("jwt"), true, false),
            (Some("id_token+jwt"), false, false),
            (Some("dpop+jwt"), false, false),
        ];
        for (typ, lenient, strict) in cases {
            assert_eq!(TypPolicy::Lenient.accepts(typ), lenient, "{typ:?}");
            assert_eq!(TypPolicy::StrictRfc9068.accepts(typ), strict, "{typ:?}");
        }
    }
}
