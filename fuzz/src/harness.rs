//! What each fuzz target does with one input, and the properties it checks.
//!
//! Shared by the libFuzzer targets in `fuzz_targets/` and by the stable corpus
//! replay in `tests/fuzz_corpus.rs` (which includes this file by path), so both
//! run the very same code. Every function takes arbitrary bytes and panics only
//! when a property of the library fails.

use std::sync::OnceLock;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard::__fuzz;
use bearer_guard::clock::ManualClock;
use bearer_guard::{Algorithm, AuthError, Guard, Issuer, TypPolicy};
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};

/// The fixed time of the validation targets (2023-11-14T22:13:20Z).
pub const NOW: u64 = 1_700_000_000;
/// An issuer whose one key is a fixed Ed25519 key, from a static JWKS.
pub const ED_ISSUER: &str = "https://ed.example";
/// An issuer with a fixed HS256 shared secret.
pub const HS_ISSUER: &str = "https://hs.example";
pub const AUDIENCE: &str = "https://api.example";
// Fixed keys: Ed25519 and HMAC signatures are deterministic, so a valid token is
// the same bytes in every run and the fuzzer's corpus stays meaningful.
const ED_SEED: [u8; 32] = [7; 32];
const HS_SECRET: &[u8; 32] = b"bearer-guard fuzz fixture secret";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ed_key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&ED_SEED).expect("a 32-byte seed")
}

/// A guard over both fixed issuers; keys never fetched, so validation never waits.
pub fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| {
        use aws_lc_rs::signature::KeyPair as _;
        let x = b64(ed_key().public_key());
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"ed","alg":"EdDSA","x":"{x}"}}]}}"#
        );
        Guard::builder()
            .issuer(Issuer::new(ED_ISSUER).jwks_document(jwks))
            .issuer(
                Issuer::new(HS_ISSUER)
                    .shared_secret(HS_SECRET)
                    .algorithms([Algorithm::HS256]),
            )
            .audience(AUDIENCE)
            .realm("fuzz")
            .clock(ManualClock::at_unix(NOW))
            .build()
            .expect("the fixture guard builds")
    })
}

/// `header.payload.signature` over the given JSON texts, signed by the fixture key
/// of `issuer` (0: Ed25519, 1: HS256).
pub fn sign(issuer: u8, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = if issuer & 1 == 0 {
        ed_key().sign(input.as_bytes()).as_ref().to_vec()
    } else {
        let key = hmac::Key::new(hmac::HMAC_SHA256, HS_SECRET);
        hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
    };
    format!("{input}.{}", b64(signature))
}

/// The header and claims of the valid token of `issuer` (0 or 1).
pub fn valid_parts(issuer: u8) -> (String, String) {
    let (alg, kid, iss) = if issuer & 1 == 0 {
        ("EdDSA", r#","kid":"ed""#, ED_ISSUER)
    } else {
        ("HS256", "", HS_ISSUER)
    };
    let header = format!(r#"{{"alg":"{alg}"{kid},"typ":"at+jwt"}}"#);
    let claims = format!(
        r#"{{"iss":"{iss}","sub":"fuzz","aud":"{AUDIENCE}","exp":{},"nbf":{NOW},"iat":{NOW},"client_id":"svc","scope":"orders:read"}}"#,
        NOW + 300
    );
    (header, claims)
}

pub fn valid_token(issuer: u8) -> String {
    let (header, claims) = valid_parts(issuer);
    sign(issuer, header.as_bytes(), claims.as_bytes())
}

/// Every refusal must be a client error with an RFC 6750 answer, never a 5xx.
fn check_refusal(guard: &Guard, error: &AuthError) {
    let response = guard.error_response(error, &HeaderMap::new());
    assert!(
        response.status().is_client_error(),
        "{error:?} answered {}",
        response.status()
    );
}

/// Target `extract_token`: lines of `Authorization` values (or `Cookie` values,
/// after a `c:` prefix); the first byte picks the size cap and the cookie source.
pub fn extract_token(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let max_len = 1 + usize::from(first & 0x7f);
    let cookie = (first & 0x80 != 0).then_some("at");
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let (name, value) = match line.strip_prefix(b"c:") {
            Some(value) => (COOKIE, value),
            None => (AUTHORIZATION, line),
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    match __fuzz::extract_token(&headers, max_len, cookie) {
        Ok(token) => {
            assert!(!token.is_empty() && token.len() <= max_len, "{token:?}");
            let found = headers.values().any(|v| {
                v.as_bytes()
                    .windows(token.len())
                    .any(|w| w == token.as_bytes())
            });
            assert!(found, "the token {token:?} is not from the request");
        }
        Err(e) => check_refusal(guard(), &e),
    }
}

/// Target `jws_parse`: the first byte picks the typ policy, the rest is the token.
pub fn jws_parse(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(token) = std::str::from_utf8(rest) else {
        return;
    };
    let policy = if first & 1 == 0 {
        TypPolicy::Lenient
    } else {
        TypPolicy::StrictRfc9068
    };
    if let Ok(jws) = __fuzz::parse_jws(token, policy) {
        // Strict base64url has one encoding per value, so the parts re-encode to
        // exactly the token: nothing was skipped, trimmed or normalised.
        let rebuilt = format!(
            "{}.{}",
            std::str::from_utf8(jws.signing_input).expect("ASCII"),
            b64(&jws.signature)
        );
        assert_eq!(rebuilt, token);
        let (_, payload) = std::str::from_utf8(jws.signing_input)
            .expect("ASCII")
            .split_once('.')
            .expect("two segments in the signing input");
        assert_eq!(b64(&jws.payload), payload);
        assert!(!jws.signature.is_empty());
    }
}

fn validate(token: &str) {
    let guard = guard();
    match __fuzz::validate_at(guard, token, NOW) {
        Ok(verified) => {
            assert!([ED_ISSUER, HS_ISSUER].contains(&verified.issuer()));
            assert!(verified.audiences().iter().any(|a| a == AUDIENCE));
            assert!(verified.expires_at() + 60 > NOW);
        }
        Err(e) => check_refusal(guard, &e),
    }
}

/// Target `validate`: arbitrary bytes as a token, through every check.
pub fn validate_bytes(data: &[u8]) {
    validate(&String::from_utf8_lossy(data));
}

/// Target `validate_structured`: one segment of a valid token is replaced or
/// flipped, so the fuzzer spends its time past the parsers.
///
/// `data[0]`: which issuer's token (bit 0), which segment (bits 1-2), how (bits 3-4):
/// 0 decoded bytes replaced by the rest of `data`; 1 the same, then re-signed, so
/// fuzzed header or claims JSON meets the time, audience and key checks with a
/// good signature; 2 decoded bytes XOR-ed with the rest; 3 the segment's text
/// replaced verbatim.
pub fn validate_structured(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let issuer = first & 1;
    let which = usize::from((first >> 1) & 3) % 3;
    let (header, claims) = valid_parts(issuer);
    let token = valid_token(issuer);
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    match (first >> 3) & 3 {
        0 => segments[which] = b64(rest),
        1 => {
            let (h, p) = match which {
                0 => (rest, claims.as_bytes()),
                _ => (header.as_bytes(), rest),
            };
            segments = sign(issuer, h, p).split('.').map(str::to_owned).collect();
        }
        2 => {
            let mut decoded = URL_SAFE_NO_PAD.decode(&segments[which]).expect("valid");
            for (byte, flip) in decoded.iter_mut().zip(rest) {
                *byte ^= flip;
            }
            segments[which] = b64(decoded);
        }
        _ => segments[which] = String::from_utf8_lossy(rest).into_owned(),
    }
    validate(&segments.join("."));
}

/// Target `jwks`: a JWKS document with the default algorithms and key limit.
pub fn jwks(data: &[u8]) {
    if let Ok(count) = __fuzz::keys_from_jwks(data, &Algorithm::DEFAULT, 100) {
        assert!((1..=100).contains(&count), "{count} keys");
    }
}

/// Target `discovery`: a metadata document for a fixed issuer; bit 0 of the last
/// byte allows plain http.
pub fn discovery(data: &[u8]) {
    const ISSUER: &str = "https://idp.example/tenant";
    let allow_http = data.last().is_some_and(|b| b & 1 == 1);
    if let Ok(uri) = __fuzz::jwks_uri_from_metadata(data, ISSUER, allow_http) {
        assert!(
            uri.starts_with("https://") || uri.starts_with("http://"),
            "{uri}"
        );
    }
}

/// The gateway's path normaliser: an accepted path is canonical (absolute, no
/// `.`, `..` or empty segments) and normalising it again changes nothing.
#[cfg(feature = "gateway")]
pub fn gateway_path(data: &[u8]) {
    use bearer_guard::gateway::path::normalize_path;
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(normal) = normalize_path(path) {
        assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
        assert!(!normal.contains("//"), "{path:?} -> {normal:?}");
        let inner = normal.trim_end_matches('/');
        assert!(
            inner
                .split('/')
                .skip(1)
                .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{path:?} -> {normal:?}"
        );
        assert_eq!(
            normalize_path(&normal).as_deref(),
            Ok(normal.as_str()),
            "{path:?}"
        );
        // Nothing an upstream could cut, split or decode again.
        assert!(!normal.contains(';') && !normal.contains('\\'), "{path:?}");
        let upper = normal.to_ascii_uppercase();
        assert!(
            !upper.contains("%2F") && !upper.contains("%3B") && !upper.contains("%5C"),
            "{path:?} -> {normal:?}"
        );
        let key = bearer_guard::gateway::path::match_key(&normal);
        assert_eq!(
            key.split('/').count(),
            normal.split('/').count(),
            "{path:?}: decoding added a segment"
        );
    }
}

/// The public URL of the DPoP fixture guard: a proof's `htu` is this plus the path.
pub const DPOP_ORIGIN: &str = "https://api.example";
/// The access token the DPoP proofs are bound to (`ath`).
pub const DPOP_ACCESS_TOKEN: &str = "fuzz-access-token";
const DPOP_SEED: [u8; 32] = [9; 32];

fn dpop_key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&DPOP_SEED).expect("a 32-byte seed")
}

/// The public JWK of the proof key, as a proof header carries it.
pub fn dpop_jwk() -> String {
    use aws_lc_rs::signature::KeyPair as _;
    let x = b64(dpop_key().public_key());
    format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#)
}

/// The RFC 7638 thumbprint of the proof key: the token's `cnf.jkt`.
pub fn dpop_jkt() -> String {
    let jwk: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&dpop_jwk()).expect("the fixture JWK is JSON");
    bearer_guard::sender::jwk_thumbprint(&jwk).expect("the fixture JWK has a thumbprint")
}

/// A guard accepting DPoP for `DPOP_ORIGIN` on the fixed clock, with the
/// default in-memory replay store (never waits).
pub fn dpop_guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| {
        use aws_lc_rs::signature::KeyPair as _;
        let x = b64(ed_key().public_key());
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"ed","alg":"EdDSA","x":"{x}"}}]}}"#
        );
        Guard::builder()
            .issuer(Issuer::new(ED_ISSUER).jwks_document(jwks))
            .audience(AUDIENCE)
            .clock(ManualClock::at_unix(NOW))
            .dpop(bearer_guard::sender::Dpop::new(DPOP_ORIGIN))
            .build()
            .expect("the DPoP fixture guard builds")
    })
}

/// The header and claims of a valid proof for `GET {DPOP_ORIGIN}/orders` with
/// this `jti`.
pub fn dpop_parts(jti: &str) -> (String, String) {
    let header = format!(r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{}}}"#, dpop_jwk());
    let ath = b64(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        DPOP_ACCESS_TOKEN.as_bytes(),
    ));
    let jti = serde_json::Value::from(jti);
    let claims = format!(
        r#"{{"jti":{jti},"htm":"GET","htu":"{DPOP_ORIGIN}/orders","iat":{NOW},"ath":"{ath}"}}"#
    );
    (header, claims)
}

/// A proof over these header and claims JSON texts, signed by the proof key.
pub fn dpop_sign(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = dpop_key().sign(input.as_bytes());
    format!("{input}.{}", b64(signature.as_ref()))
}

/// Target `dpop_proof`: byte 0 picks what the rest is: (0) the `DPoP` header
/// value itself, (1) the proof header JSON, (2) the proof claims JSON, both
/// re-signed by the proof key so they get past the signature, (3) the `jti`
/// of an otherwise valid proof. Checked: a refusal is a 4xx (or the 503 of a
/// full replay store), never a panic; an accepted proof is refused as a replay
/// the second time.
pub fn dpop_proof(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let proof = match mode % 4 {
        0 => rest.to_vec(),
        1 => {
            let (_, claims) = dpop_parts("fuzz-jti-header");
            dpop_sign(rest, claims.as_bytes()).into_bytes()
        }
        2 => {
            let (header, _) = dpop_parts("");
            dpop_sign(header.as_bytes(), rest).into_bytes()
        }
        _ => {
            let jti = String::from_utf8_lossy(rest);
            let (header, claims) = dpop_parts(&jti);
            dpop_sign(header.as_bytes(), claims.as_bytes()).into_bytes()
        }
    };
    // What HTTP cannot carry never reaches the guard.
    let Ok(value) = HeaderValue::from_bytes(&proof) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("dpop", value);
    let guard = dpop_guard();
    let method = http::Method::GET;
    let uri = http::Uri::from_static("/orders?page=2");
    let jkt = dpop_jkt();
    let verify =
        || __fuzz::verify_dpop_proof(guard, &headers, &method, &uri, DPOP_ACCESS_TOKEN, &jkt, NOW);
    match verify() {
        Ok(()) => {
            let again = verify();
            assert!(again.is_err(), "an accepted proof was accepted twice");
        }
        Err(error) => {
            let response = guard.error_response(&error, &HeaderMap::new());
            let full = matches!(error, AuthError::ReplayStoreUnavailable { .. });
            assert!(
                response.status().is_client_error() || full,
                "{error:?} answered {}",
                response.status()
            );
        }
    }
}
