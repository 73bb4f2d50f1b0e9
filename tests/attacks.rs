//! Known JWT attack classes, one test each, through the layer over HTTP.
//!
//! Every forged request goes to a Guard-protected axum API on 127.0.0.1 and must
//! get the exact RFC 6750 answer: 400 `invalid_request` for a malformed request,
//! 401 `invalid_token` (with the rule's fixed `error_description`) for a token
//! problem, 403 for scope; never a 5xx, never a dropped connection (a panic in
//! the layer would show up as one). Where a forged token cannot be signed by the
//! bundled server (duplicate keys, numbers `serde_json::Value` cannot hold), the
//! pinned description proves the rule fires *before* the signature is checked.

mod common;

use std::time::Duration;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    ParsedPublicKey, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bearer_guard::GuardBuilder;
use bearer_guard::authz_server::{AuthorizationServerHandle, SignWith, SigningAlgorithm};
use bearer_guard::clock::{Clock, ManualClock};
use common::*;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use serde_json::{Value, json};

// ------------------------------------------------------------------ fixture

/// The bundled server, a guard pointed at it, and the orders API behind the layer.
struct Api {
    clock: ManualClock,
    server: AuthorizationServerHandle,
    base: String,
    http: reqwest::Client,
}

/// The status and the `error` / `error_description` of one answer.
#[derive(Debug, PartialEq)]
struct Answer {
    status: StatusCode,
    error: Option<String>,
    description: Option<String>,
}

// The fixed `error_description` phrases of the rules pinned below (error.rs).
const MALFORMED: &str = "token malformed";
const HEADER_INVALID: &str = "token header invalid";
const ALG_NOT_ALLOWED: &str = "token algorithm not allowed";
const CRIT: &str = "token uses unsupported critical extensions";
const TYP: &str = "token type not accepted";
const CLAIMS_INVALID: &str = "token claims invalid";
const ISSUER: &str = "token issuer not accepted";
const KEY_NOT_FOUND: &str = "token signing key not found";
const SIGNATURE: &str = "token signature invalid";
const AUDIENCE: &str = "token audience not accepted";
const TOO_LARGE: &str = "token too large";

impl Api {
    async fn start(alg: SigningAlgorithm) -> Api {
        Api::start_with(alg, |g| g).await
    }

    async fn start_with(
        alg: SigningAlgorithm,
        guard: impl FnOnce(GuardBuilder) -> GuardBuilder,
    ) -> Api {
        let clock = ManualClock::starting_now();
        let server = authz_server(&clock, |b| b.signing_algorithm(alg)).await;
        let guard = guard(guard_builder(&server, &clock)).build().unwrap();
        let base = serve(orders_api(&guard)).await;
        Api {
            clock,
            server,
            base,
            http: http(),
        }
    }

    /// A token signed by the active key: default header and claims with changes.
    fn token(&self, header: Value, claims: Value) -> String {
        token_with(&self.server, &self.clock, header, claims)
    }

    /// A genuine token: default header and claims, signed by the active key.
    fn genuine(&self) -> String {
        self.token(json!({}), json!({}))
    }

    /// `GET /orders` with this exact `Authorization` value (any bytes a header
    /// value may hold).
    async fn send(&self, authorization: &[u8]) -> Answer {
        let value = HeaderValue::from_bytes(authorization).expect("a sendable header value");
        let response = self
            .http
            .get(format!("{}/orders", self.base))
            .header(AUTHORIZATION, value)
            .send()
            .await
            .expect("an answer, not a dropped connection");
        answer(&response)
    }

    async fn send_token(&self, token: &str) -> Answer {
        self.send(format!("Bearer {token}").as_bytes()).await
    }

    async fn accepted(&self, token: &str) {
        let answer = self.send_token(token).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }

    /// 401 `invalid_token` with the description of the rule that must fire.
    async fn refused(&self, token: &str, description: &str) {
        let answer = self.send_token(token).await;
        assert_eq!(answer, invalid_token(description), "token {token:.80}");
    }

    /// 400 `invalid_request`: the credentials are not even a token68.
    async fn bad_request(&self, authorization: &[u8]) {
        let answer = self.send(authorization).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
        assert_eq!(answer.error.as_deref(), Some("invalid_request"));
    }

    /// The public JWKS, as an attacker sees it.
    async fn jwks(&self) -> String {
        let response = self.http.get(self.server.jwks_uri()).send().await.unwrap();
        response.text().await.unwrap()
    }
}

fn invalid_token(description: &str) -> Answer {
    Answer {
        status: StatusCode::UNAUTHORIZED,
        error: Some("invalid_token".into()),
        description: Some(description.into()),
    }
}

fn answer(response: &reqwest::Response) -> Answer {
    let status = response.status();
    assert!(!status.is_server_error(), "a client's mistake got {status}");
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Answer {
        status,
        error: challenge_param(&challenge, "error"),
        description: challenge_param(&challenge, "error_description"),
    }
}

/// One quoted parameter of a `WWW-Authenticate: Bearer` challenge.
fn challenge_param(challenge: &str, name: &str) -> Option<String> {
    let start = challenge.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = challenge[start..].find('"')?;
    Some(challenge[start..start + len].to_owned())
}

// ------------------------------------------------------------ token surgery

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(segment: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .expect("a segment of a minted token")
}

/// The three segments of a compact JWS.
fn segments(token: &str) -> [String; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    [parts[0].into(), parts[1].into(), parts[2].into()]
}

/// A token whose payload is this raw JSON text under `signed`'s header and
/// signature: for claims no `serde_json::Value` can carry.
fn with_raw_payload(signed: &str, payload: &str) -> String {
    let [h, _, s] = segments(signed);
    format!("{h}.{}.{s}", b64(payload))
}

/// A token whose header is this raw JSON text over `signed`'s payload and signature.
fn with_raw_header(signed: &str, header: &str) -> String {
    let [_, p, s] = segments(signed);
    format!("{}.{p}.{s}", b64(header))
}

fn with_signature(signed: &str, signature: &[u8]) -> String {
    let [h, p, _] = segments(signed);
    format!("{h}.{p}.{}", b64(signature))
}

/// `{h}.{p}` signed with HMAC under `secret`.
fn hmac_signed(alg: hmac::Algorithm, header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let tag = hmac::sign(&hmac::Key::new(alg, secret), input.as_bytes());
    format!("{input}.{}", b64(tag))
}

fn pem(der: &[u8]) -> String {
    let body: Vec<String> = STANDARD
        .encode(der)
        .as_bytes()
        .chunks(64)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        body.join("\n")
    )
}

/// Every form in which an attacker may have the server's public key, for HMAC
/// key confusion: SPKI DER and PEM (with and without trailing newline), the JWK
/// text, the whole JWKS text, the raw key bytes (modulus or EC point) and their
/// base64url text.
fn public_key_encodings(jwks: &str) -> Vec<Vec<u8>> {
    let doc: Value = serde_json::from_str(jwks).unwrap();
    let jwk = &doc["keys"][0];
    let member = |m: &str| unb64(jwk[m].as_str().unwrap());
    let (der, raw, raw_text) = match jwk["kty"].as_str().unwrap() {
        "RSA" => {
            let components = RsaPublicKeyComponents {
                n: member("n"),
                e: member("e"),
            };
            let der: PublicKeyX509Der = components.as_der().unwrap();
            (der.as_ref().to_vec(), member("n"), jwk["n"].to_string())
        }
        "EC" => {
            let point = [&[0x04][..], &member("x"), &member("y")].concat();
            let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).unwrap();
            let der: PublicKeyX509Der = key.as_der().unwrap();
            (der.as_ref().to_vec(), point, jwk["x"].to_string())
        }
        other => panic!("unexpected kty {other}"),
    };
    let pem = pem(&der);
    vec![
        der,
        pem.clone().into_bytes(),
        pem.trim_end().as_bytes().to_vec(),
        jwk.to_string().into_bytes(),
        jwks.as_bytes().to_vec(),
        raw,
        raw_text.trim_matches('"').as_bytes().to_vec(),
    ]
}

/// All 2^4 casings of "none".
fn every_casing_of_none() -> Vec<String> {
    (0..16u8)
        .map(|mask| {
            "none"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask & (1 << i) != 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect()
}

// --- ECDSA signature encodings (test-only: the crate itself never parses DER) ---

/// P-256's group order n.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// A DER INTEGER of an unsigned big-endian value. Test-only, hand-rolled, and just
/// enough for two 32-byte scalars: short-form lengths, minimal encoding.
fn der_integer(value: &[u8]) -> Vec<u8> {
    let first = value
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(value.len() - 1);
    let mut body = value[first..].to_vec();
    if body[0] & 0x80 != 0 {
        body.insert(0, 0); // keep it positive
    }
    [&[0x02, body.len() as u8][..], &body].concat()
}

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` of a JWS r || s signature.
fn der_ecdsa_signature(fixed: &[u8]) -> Vec<u8> {
    let (r, s) = fixed.split_at(fixed.len() / 2);
    let body = [der_integer(r), der_integer(s)].concat();
    [&[0x30, body.len() as u8][..], &body].concat()
}

/// r || s with one half replaced.
fn ecdsa_with(fixed: &[u8], r: Option<&[u8]>, s: Option<&[u8]>) -> Vec<u8> {
    let (r0, s0) = fixed.split_at(32);
    [r.unwrap_or(r0), s.unwrap_or(s0)].concat()
}

// ------------------------------------------------------------------- tests

#[tokio::test]
async fn accepts_the_untampered_token_and_answers_403_for_missing_scope() {
    // The control for every test below: the same fixture accepts a genuine token.
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let token = api.genuine();
    api.accepted(&token).await;
    let response = api
        .http
        .post(format!("{}/orders", api.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let answer = answer(&response);
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.error.as_deref(), Some("insufficient_scope"));
}

#[tokio::test]
async fn rejects_alg_none_in_every_casing_with_and_without_signature() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let genuine = api.genuine();
    let [_, payload, signature] = segments(&genuine);
    for alg in every_casing_of_none() {
        let header = b64(json!({"alg": alg, "typ": "at+jwt"}).to_string());
        // A signature of the right length or a junk one: the alg is refused first.
        for sig in [signature.as_str(), "AAAA"] {
            api.refused(&format!("{header}.{payload}.{sig}"), ALG_NOT_ALLOWED)
                .await;
        }
        // The classic unsecured JWS: empty signature, with and without the dot.
        api.refused(&format!("{header}.{payload}."), MALFORMED)
            .await;
        api.refused(&format!("{header}.{payload}"), MALFORMED).await;
    }
    assert_eq!(
        api.server.jwks_fetch_count(),
        0,
        "nothing fetched for alg none"
    );
}

#[tokio::test]
async fn rejects_hmac_keyed_with_the_public_key_in_every_encoding() {
    for server_alg in [SigningAlgorithm::Rs256, SigningAlgorithm::Es256] {
        let api = Api::start(server_alg).await;
        let jwks = api.jwks().await;
        let claims = claims(&api.server, &api.clock);
        for (name, hmac_alg) in [
            ("HS256", hmac::HMAC_SHA256),
            ("HS384", hmac::HMAC_SHA384),
            ("HS512", hmac::HMAC_SHA512),
        ] {
            let header = json!({"alg": name, "kid": api.server.active_kid(), "typ": "at+jwt"});
            for secret in public_key_encodings(&jwks) {
                let forged = hmac_signed(hmac_alg, &header, &claims, &secret);
                api.refused(&forged, ALG_NOT_ALLOWED).await;
            }
        }
    }
}

#[tokio::test]
async fn ignores_embedded_jwk_jku_x5u_x5c_and_never_fetches_from_them() {
    let api = Api::start(SigningAlgorithm::Es256).await;
    let decoy = authz_server(&api.clock, |b| b).await;
    // The attacker's own key, published nowhere but in the token itself.
    let rng = SystemRandom::new();
    let attacker = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = attacker.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let spki = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).unwrap();
    let spki: PublicKeyX509Der = spki.as_der().unwrap();
    let embedded = [
        json!({"jwk": jwk}),
        json!({"jku": decoy.jwks_uri()}),
        json!({"x5u": decoy.jwks_uri()}),
        json!({"x5c": [STANDARD.encode(spki.as_ref())]}),
        json!({"jwk": jwk, "jku": decoy.jwks_uri(), "x5u": decoy.jwks_uri()}),
    ];
    let claims = claims(&api.server, &api.clock);
    for extra in embedded {
        let mut header = json!({"alg": "ES256", "kid": api.server.active_kid(), "typ": "at+jwt"});
        header
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let signature = attacker.sign(&rng, input.as_bytes()).unwrap();
        let forged = format!("{input}.{}", b64(signature.as_ref()));
        api.refused(&forged, SIGNATURE).await;
        // Ignored, not refused: the same headers on a genuine token change nothing.
        api.accepted(&api.token(extra, json!({}))).await;
    }
    assert_eq!(
        decoy.jwks_fetch_count(),
        0,
        "a token chose where keys come from"
    );
}

#[tokio::test]
async fn rejects_kid_tricks_as_unknown_keys() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let long = "k".repeat(10 * 1024);
    for kid in [
        "../../dev/null",
        "/dev/null",
        "../../../../../../etc/passwd",
        "' OR '1'='1",
        "x'; DROP TABLE keys; --",
        "",
        long.as_str(),
    ] {
        api.refused(&api.token(json!({"kid": kid}), json!({})), KEY_NOT_FOUND)
            .await;
    }
    // A kid that is not a string is a malformed header, not a lookup.
    for kid in [
        json!(1),
        json!(1.5),
        json!({"kid": "x"}),
        json!(["a"]),
        json!(true),
    ] {
        api.refused(&api.token(json!({"kid": kid}), json!({})), HEADER_INVALID)
            .await;
    }
    // `"kid": null` is not "no kid": the header is refused before any key is
    // looked up (`mint` cannot sign a literal null, so it rides on another
    // header's signature, which is never reached).
    let genuine = api.genuine();
    let null_kid = with_raw_header(&genuine, r#"{"alg":"RS256","kid":null,"typ":"at+jwt"}"#);
    api.refused(&null_kid, HEADER_INVALID).await;
}

#[tokio::test]
async fn rejects_crit_and_unencoded_payload_headers() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    for crit in [json!(["b64"]), json!(["exp"]), json!([]), json!("b64")] {
        let token = api.token(json!({"crit": crit, "b64": false}), json!({}));
        api.refused(&token, CRIT).await;
    }
    // b64=false without crit (RFC 7797 requires crit, but do not rely on it).
    for b64 in [json!(false), json!(true)] {
        api.refused(&api.token(json!({"b64": b64}), json!({})), MALFORMED)
            .await;
    }
}

#[tokio::test]
async fn rejects_jwe_five_segment_tokens() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let header = b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
    api.refused(&format!("{header}.AAAA.AAAA.AAAA.AAAA"), MALFORMED)
        .await;
    // A JWE that wraps a genuine JWS does not become acceptable either.
    let genuine = api.genuine();
    api.refused(&format!("{genuine}.AAAA.AAAA"), MALFORMED)
        .await;
}

#[tokio::test]
async fn rejects_nested_jwt_cty() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let inner = api.genuine();
    for cty in ["JWT", "jwt", "application/jwt", "APPLICATION/JWT"] {
        // The outer token is genuinely signed and its payload is a genuine token.
        let outer = api
            .server
            .mint(json!({"cty": cty}), json!(inner), SignWith::Active);
        api.refused(&outer, MALFORMED).await;
        api.refused(&api.token(json!({"cty": cty}), json!({})), MALFORMED)
            .await;
    }
}

#[tokio::test]
async fn rejects_stripped_or_swapped_signatures() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let genuine = api.genuine();
    let [h, p, _] = segments(&genuine);
    api.refused(&format!("{h}.{p}."), MALFORMED).await;
    api.refused(&format!("{h}.{p}"), MALFORMED).await;
    api.refused(&format!("{h}.{p}.."), MALFORMED).await;
    // A genuine signature of another token.
    let other = api.token(json!({}), json!({"sub": "mallory"}));
    let [_, _, other_sig] = segments(&other);
    api.refused(&format!("{h}.{p}.{other_sig}"), SIGNATURE)
        .await;
}

#[tokio::test]
async fn rejects_a_bit_flip_anywhere_in_any_segment() {
    let api = Api::start(SigningAlgorithm::Es256).await;
    let genuine = api.genuine();
    let parts = segments(&genuine);
    for which in 0..3 {
        let decoded = unb64(&parts[which]);
        for i in 0..decoded.len() {
            let mut flipped = decoded.clone();
            flipped[i] ^= 1 << (i % 8);
            let mut forged = parts.clone();
            forged[which] = b64(&flipped);
            let answer = api.send_token(&forged.join(".")).await;
            // Which rule fires depends on the byte (JSON, alg, signature); that it
            // is a 401 invalid_token never does.
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "segment {which} byte {i}"
            );
            assert_eq!(answer.error.as_deref(), Some("invalid_token"));
        }
    }
}

#[tokio::test]
async fn rejects_every_truncation_of_a_token() {
    let api = Api::start(SigningAlgorithm::Es256).await;
    let genuine = api.genuine();
    api.bad_request(b"Bearer ").await; // truncated to nothing: empty credentials
    for len in 1..genuine.len() {
        let answer = api.send_token(&genuine[..len]).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "length {len}");
        assert_eq!(answer.error.as_deref(), Some("invalid_token"));
    }
}

#[tokio::test]
async fn rejects_der_encoded_ecdsa_signatures() {
    let api = Api::start(SigningAlgorithm::Es256).await;
    let genuine = api.genuine();
    api.accepted(&genuine).await;
    let [_, _, s] = segments(&genuine);
    // The same (r, s) as ASN.1 DER, as OpenSSL-based signers produce: JWS allows
    // only the fixed r || s form (RFC 7518 §3.4).
    let der = der_ecdsa_signature(&unb64(&s));
    api.refused(&with_signature(&genuine, &der), SIGNATURE)
        .await;
}

#[tokio::test]
async fn rejects_out_of_range_ecdsa_scalars() {
    let api = Api::start(SigningAlgorithm::Es256).await;
    let genuine = api.genuine();
    let [_, _, s] = segments(&genuine);
    let fixed = unb64(&s);
    let zero = [0u8; 32];
    let max = [0xffu8; 32];
    let mut n_plus_1 = P256_N;
    n_plus_1[31] += 1;
    let mut out_of_range = Vec::new();
    for bad in [&zero, &P256_N, &n_plus_1, &max] {
        out_of_range.push(ecdsa_with(&fixed, Some(bad), None));
        out_of_range.push(ecdsa_with(&fixed, None, Some(bad)));
        out_of_range.push(ecdsa_with(&fixed, Some(bad), Some(bad)));
    }
    // Too short and too long for P-256.
    out_of_range.push(fixed[..63].to_vec());
    out_of_range.push([&fixed[..], &[0]].concat());
    for sig in out_of_range {
        api.refused(&with_signature(&genuine, &sig), SIGNATURE)
            .await;
    }
}

#[tokio::test]
async fn rejects_padding_and_the_standard_base64_alphabet() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let genuine = api.genuine();
    let [h, p, s] = segments(&genuine);
    // '=' may only end a token68: inside it, the request itself is malformed.
    api.bad_request(format!("Bearer {h}=.{p}.{s}").as_bytes())
        .await;
    api.bad_request(format!("Bearer {h}.{p}==.{s}").as_bytes())
        .await;
    // At the end it is a token68, but not strict base64url.
    api.refused(&format!("{h}.{p}.{s}="), MALFORMED).await;
    api.refused(&format!("{h}.{p}.{s}=="), MALFORMED).await;
    // '+' and '/' are token68 characters, but not base64url ones.
    let standard = STANDARD_NO_PAD.encode(unb64(&s));
    assert_ne!(
        standard, s,
        "a 256-byte signature has a '-' or '_' somewhere"
    );
    api.refused(&format!("{h}.{p}.{standard}"), MALFORMED).await;
    let padded = STANDARD.encode(unb64(&s));
    api.refused(&format!("{h}.{p}.{padded}"), MALFORMED).await;
}

#[tokio::test]
async fn tolerates_spaces_around_and_refuses_whitespace_inside() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let genuine = api.genuine();
    let [h, p, s] = segments(&genuine);
    // Optional whitespace around the credentials is HTTP syntax, not the token.
    for framed in [
        format!("Bearer   {genuine}"),
        format!("Bearer {genuine}   "),
        format!("Bearer {genuine}\t"),
    ] {
        let answer = api.send(framed.as_bytes()).await;
        assert_eq!(answer.status, StatusCode::OK, "{framed:?}");
    }
    for inside in [
        format!("Bearer {h}. {p}.{s}"),
        format!("Bearer {h}.{p}\t.{s}"),
        format!("Bearer {h}.{p}.{s} x"),
        format!("Bearer {h}.{p}%20.{s}"),
        format!("Bearer {h}.{p}\u{a0}.{s}"),
    ] {
        api.bad_request(inside.as_bytes()).await;
    }
    // A tab instead of the space after the scheme is not Bearer credentials at
    // all (RFC 7235: 1*SP): 401 without an error code.
    let answer = api.send(format!("Bearer\t{genuine}").as_bytes()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.error, None);
}

#[tokio::test]
async fn rejects_duplicate_json_members_in_header_and_claims() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let genuine = api.genuine();
    let kid = api.server.active_kid();
    for header in [
        format!(r#"{{"alg":"RS256","alg":"none","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"none","alg":"RS256","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"RS256","kid":"{kid}","kid":"other"}}"#),
    ] {
        api.refused(&with_raw_header(&genuine, &header), HEADER_INVALID)
            .await;
    }
    let mut claims = claims(&api.server, &api.clock);
    claims.as_object_mut().unwrap().remove("iss");
    let rest = claims.to_string();
    let rest = rest.trim_start_matches('{');
    let iss = api.server.issuer();
    for payload in [
        format!(r#"{{"iss":"{iss}","iss":"https://evil.example",{rest}"#),
        format!(r#"{{"iss":"https://evil.example","iss":"{iss}",{rest}"#),
        format!(r#"{{"iss":"{iss}","exp":1,{rest}"#),
    ] {
        api.refused(&with_raw_payload(&genuine, &payload), CLAIMS_INVALID)
            .await;
    }
}

#[tokio::test]
async fn rejects_numeric_dates_that_are_not_plain_numbers_in_range() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let exp = api.clock.unix_seconds() + 300;
    // Signed: whatever a JSON value can express.
    for bad in [
        json!(exp.to_string()),
        json!("NaN"),
        json!("Infinity"),
        json!("-Infinity"),
        json!("1e400"),
        json!(-1),
        json!(-1.5),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e20),
        json!(253_402_300_800u64), // 10000-01-01T00:00:00Z
        json!(true),
        json!([exp]),
        json!({"exp": exp}),
    ] {
        for claim in ["exp", "nbf", "iat"] {
            let token = api.token(json!({}), json!({ claim: bad.clone() }));
            api.refused(&token, CLAIMS_INVALID).await;
        }
    }
    // Raw: numbers no `Value` holds, and JSON's missing NaN.
    let genuine = api.genuine();
    let iss = api.server.issuer();
    for raw in [
        "1e400",
        "-1e400",
        "NaN",
        "184467440737095516160",
        "0x7fffffff",
        "+1",
        "01",
    ] {
        let payload = format!(r#"{{"iss":"{iss}","aud":"{API}","exp":{raw}}}"#);
        api.refused(&with_raw_payload(&genuine, &payload), CLAIMS_INVALID)
            .await;
    }
    // Fractional dates are legal NumericDates (RFC 7519 §2).
    let fractional = api.token(json!({}), json!({"exp": exp as f64 + 0.5}));
    api.accepted(&fractional).await;
    // The last representable second is accepted (and cannot overflow).
    let year_9999 = api.token(json!({}), json!({"exp": 253_402_300_799u64}));
    api.accepted(&year_9999).await;
}

#[tokio::test]
async fn rejects_deeply_nested_json_without_exhausting_the_stack() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let genuine = api.genuine();
    let iss = api.server.issuer();
    // Unknown members are skipped by serde_json without recursion, so nesting far
    // deeper than its 128-level limit parses and the token fails at the signature.
    for depth in [200, 2_000] {
        for open_close in [["[", "]"], ["{\"\":", "}"]] {
            let nested = format!(
                "{}0{}",
                open_close[0].repeat(depth),
                open_close[1].repeat(depth)
            );
            let payload = format!(r#"{{"iss":"{iss}","aud":"{API}","x":{nested}}}"#);
            api.refused(&with_raw_payload(&genuine, &payload), SIGNATURE)
                .await;
            let header = format!(r#"{{"alg":"RS256","x":{nested}}}"#);
            api.refused(&with_raw_header(&genuine, &header), SIGNATURE)
                .await;
        }
    }
    // In a member that is read, the nesting is a type error at the first level.
    let nested = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let payload = format!(r#"{{"iss":"{iss}","aud":{nested}}}"#);
    api.refused(&with_raw_payload(&genuine, &payload), CLAIMS_INVALID)
        .await;
}

#[tokio::test]
async fn rejects_oversized_tokens_without_decoding_or_hanging() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let genuine = api.genuine();
    let [h, p, s] = segments(&genuine);
    // Just over the 16 KiB cap, and far over it: 401 before any decoding.
    for size in [16 * 1024 + 1, 256 * 1024] {
        let padding = "A".repeat(size - genuine.len());
        let token = format!("{h}.{p}{padding}.{s}");
        assert_eq!(token.len(), size);
        api.refused(&token, TOO_LARGE).await;
    }
    // A megabyte header is beyond what hyper buffers for a request head (about
    // 400 KB): hyper answers 431 itself, before the layer runs, and stops reading.
    // The timeout is a bound on "not buffered forever", not an ordering device.
    let megabyte = format!("{h}.{p}{}.{s}", "A".repeat(1024 * 1024));
    let answer = tokio::time::timeout(Duration::from_secs(30), api.send_token(&megabyte))
        .await
        .expect("a megabyte header is answered, not buffered forever");
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[tokio::test]
async fn rejects_issuer_near_misses() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    let iss = api.server.issuer().to_owned();
    let (scheme, rest) = iss.split_once("://").unwrap();
    for near in [
        format!("{iss}/"),
        iss.to_uppercase(),
        format!("{}://{}", scheme.to_uppercase(), rest),
        format!("https://{rest}"),
        format!("{iss}/tenant"),
        format!("{iss}.evil.example"),
        iss[..iss.len() - 1].to_owned(),
        format!(" {iss}"),
        format!("{iss} "),
        format!("{iss}\u{0}"),
        format!("{iss}#"),
        format!("{iss}?"),
    ] {
        api.refused(&api.token(json!({}), json!({"iss": near})), ISSUER)
            .await;
    }
    // Not a string at all: the claims are malformed.
    for not_string in [json!([iss]), json!({"iss": iss}), json!(1)] {
        let token = api.token(json!({}), json!({"iss": not_string}));
        api.refused(&token, CLAIMS_INVALID).await;
    }
}

#[tokio::test]
async fn rejects_audience_near_misses() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    for near in [
        json!(format!("{API}/")),
        json!(API.to_uppercase()),
        json!("https://api.example.co"),
        json!(format!("{API}.evil.example")),
        json!(format!("{API}/orders")),
        json!("api.example.com"),
        json!(format!("http{}", API.trim_start_matches("https"))),
        json!([format!("{API}/"), OTHER_API]),
        json!([]),
        json!(""),
    ] {
        api.refused(&api.token(json!({}), json!({"aud": near})), AUDIENCE)
            .await;
    }
}

#[tokio::test]
async fn strict_rfc9068_refuses_every_typ_but_at_jwt() {
    let api = Api::start_with(SigningAlgorithm::Rs256, GuardBuilder::strict_rfc9068).await;
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("application/jwt"),
        json!("at+jwt "),
        json!("at+jws"),
        json!("application/at+jwt; charset=utf-8"),
        json!("x-at+jwt"),
        json!(""),
        Value::Null, // removes typ
    ] {
        api.refused(&api.token(json!({"typ": typ}), json!({})), TYP)
            .await;
    }
    for typ in [json!(1), json!(["at+jwt"])] {
        api.refused(&api.token(json!({"typ": typ}), json!({})), HEADER_INVALID)
            .await;
    }
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        api.accepted(&api.token(json!({"typ": typ}), json!({})))
            .await;
    }
}

#[tokio::test]
async fn rejects_an_id_token_used_as_an_access_token() {
    // An OpenID Connect ID token of the same issuer: typ JWT, aud = the client id.
    let id_token_header = json!({"typ": "JWT"});
    let id_token_claims =
        json!({"aud": "spa", "nonce": "n-0S6_WzA2Mj", "at_hash": "77QmUPtjPfzWtF2AnpK9RQ"});
    let lenient = Api::start(SigningAlgorithm::Rs256).await;
    let token = lenient.token(id_token_header.clone(), id_token_claims.clone());
    lenient.refused(&token, AUDIENCE).await;
    // Under RFC 9068's typ rule it is refused for its type first.
    let strict = Api::start_with(SigningAlgorithm::Rs256, GuardBuilder::strict_rfc9068).await;
    let token = strict.token(id_token_header, id_token_claims);
    strict.refused(&token, TYP).await;
}

// ------------------------------------------------- a hostile or broken JWKS

/// An orders API whose guard trusts an issuer publishing exactly `jwks`.
async fn api_trusting(jwks: &Value) -> (String, String) {
    let issuer = spawn_issuer(jwks.to_string()).await;
    let guard = bearer_guard::Guard::builder()
        .issuer(issuer.as_str())
        .audience(API)
        .clock(ManualClock::starting_now())
        .build()
        .unwrap();
    (serve(orders_api(&guard)).await, issuer)
}

async fn answer_to(base: &str, token: &str) -> Answer {
    let response = http()
        .get(format!("{base}/orders"))
        .bearer_auth(token)
        .send()
        .await
        .expect("an answer");
    answer(&response)
}

/// `header.claims` signed by `sign` over the signing input.
fn signed_by(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(signature))
}

/// PKCS#1 v1.5 "signature" of `input` with SHA-256 under a key whose e = 1:
/// the encoded message itself (RFC 8017 §9.2).
fn rsa_e1_forgery(input: &[u8], modulus_len: usize) -> Vec<u8> {
    const SHA256_DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input);
    let tail = [&SHA256_DIGEST_INFO[..], hash.as_ref()].concat();
    let mut em = vec![0xff; modulus_len];
    em[0] = 0x00;
    em[1] = 0x01;
    em[modulus_len - tail.len() - 1] = 0x00;
    em[modulus_len - tail.len()..].copy_from_slice(&tail);
    em
}

#[tokio::test]
async fn a_jwks_cannot_publish_keys_that_forge_or_leak() {
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};

    let control = TestKey::new("control");
    let misused = TestKey::new("key-ops-sign");
    let leaked = TestKey::new("leaks-d");
    let okp =
        |kid: &str, x: &[u8]| json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(x)});
    let public_x = |jwks: String| -> Vec<u8> {
        let doc: Value = serde_json::from_str(&jwks).unwrap();
        unb64(doc["keys"][0]["x"].as_str().unwrap())
    };
    // y = 1 (the identity), canonically and as y = p + 1.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut identity_p_plus_1 = [0xffu8; 32];
    identity_p_plus_1[0] = 0xee;
    identity_p_plus_1[31] = 0x7f;
    let order_8 = unb64("JuiVj8KyJ7BFw_SJ8u-Y8NXfrAXTxjM5sTgCiG1T_AU");
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let n =
        RsaPublicKeyComponents::<Vec<u8>>::from(aws_lc_rs::signature::KeyPair::public_key(&rsa)).n;
    let mut even_n = n.clone();
    *even_n.last_mut().unwrap() &= 0xfe;

    let mut with_ops = okp("key-ops-sign", &public_x(misused.jwks()));
    with_ops["key_ops"] = json!(["sign"]);
    let mut with_d = okp("leaks-d", &public_x(leaked.jwks()));
    with_d["d"] = json!(b64([7u8; 32]));
    let jwks = json!({"keys": [
        okp("control", &public_x(control.jwks())),
        okp("ed-identity", &identity),
        okp("ed-identity-non-canonical", &identity_p_plus_1),
        okp("ed-order-8", &order_8),
        {"kty": "RSA", "kid": "rsa-e1", "n": b64(&n), "e": b64([1])},
        {"kty": "RSA", "kid": "rsa-e2", "n": b64(&n), "e": b64([2])},
        {"kty": "RSA", "kid": "rsa-even-n", "n": b64(&even_n), "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "kid": "ec-zero", "x": b64([0; 32]), "y": b64([0; 32])},
        with_ops,
        with_d,
    ]});
    let (base, iss) = api_trusting(&jwks).await;
    let claims = json!({
        "iss": iss, "sub": "mallory", "aud": API, "scope": "orders:read",
        "iat": unix_now(), "exp": unix_now() + 300,
    });
    let header = |alg: &str, kid: &str| json!({"alg": alg, "kid": kid, "typ": "at+jwt"});

    let ok = answer_to(&base, &control.sign(&claims)).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");

    // With a small-order key, R = identity and s = 0 verify every message.
    let small_order_signature = |_: &[u8]| [&identity[..], &[0u8; 32]].concat();
    let mut forged = Vec::new();
    for kid in ["ed-identity", "ed-identity-non-canonical", "ed-order-8"] {
        forged.push(signed_by(
            &header("EdDSA", kid),
            &claims,
            small_order_signature,
        ));
    }
    forged.push(signed_by(&header("RS256", "rsa-e1"), &claims, |input| {
        rsa_e1_forgery(input, n.len())
    }));
    for kid in ["rsa-e2", "rsa-even-n"] {
        forged.push(signed_by(&header("RS256", kid), &claims, |_| {
            vec![1; n.len()]
        }));
    }
    forged.push(signed_by(&header("ES256", "ec-zero"), &claims, |_| {
        vec![1; 64]
    }));
    // Genuine signatures, by keys the JWKS must not be trusted with.
    forged.push(misused.sign(&claims));
    forged.push(leaked.sign(&claims));
    for token in forged {
        assert_eq!(
            answer_to(&base, &token).await,
            invalid_token(KEY_NOT_FOUND),
            "token {token:.120}"
        );
    }
}

// ------------------------------------------------------- strict token text

#[tokio::test]
async fn rejects_a_signed_header_with_invalid_utf8_in_a_member_we_skip() {
    use aws_lc_rs::signature::Ed25519KeyPair;

    let key = Ed25519KeyPair::generate().unwrap();
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64(key.public_key().as_ref()),
    }]});
    let (base, iss) = api_trusting(&jwks).await;
    let claims = json!({
        "iss": iss, "sub": "alice", "aud": API, "scope": "orders:read",
        "iat": unix_now(), "exp": unix_now() + 300,
    });
    // Signed for real, so only the UTF-8 rule can refuse them.
    let sign = |header: &[u8], payload: &[u8]| {
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature = key.sign(input.as_bytes());
        format!("{input}.{}", b64(signature))
    };
    let payload = claims.to_string();
    let good_header = br#"{"alg":"EdDSA","kid":"k","x-vendor":"ok"}"#;
    let ok = answer_to(&base, &sign(good_header, payload.as_bytes())).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");

    // A lone continuation byte, an overlong '/', an encoded surrogate, a
    // truncated sequence; in a skipped member's value, in its name, in an array.
    for bad in [&b"\x80"[..], b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"] {
        for template in [
            r#"{"alg":"EdDSA","kid":"k","x-vendor":"@"}"#,
            r#"{"alg":"EdDSA","kid":"k","@":1}"#,
            r#"{"alg":"EdDSA","kid":"k","x-vendor":["@"]}"#,
        ] {
            let (before, after) = template.split_once('@').unwrap();
            let header = [before.as_bytes(), bad, after.as_bytes()].concat();
            let token = sign(&header, payload.as_bytes());
            assert_eq!(
                answer_to(&base, &token).await,
                invalid_token(HEADER_INVALID),
                "{header:?}"
            );
            // The same bytes in a claim nobody reads.
            let text = claims.to_string();
            let (open, _) = text.split_at(text.len() - 1);
            let payload = [open.as_bytes(), br#","x-vendor":""#, bad, b"\"}"].concat();
            let token = sign(good_header, &payload);
            assert_eq!(
                answer_to(&base, &token).await,
                invalid_token(CLAIMS_INVALID),
                "{payload:?}"
            );
        }
    }
}

#[tokio::test]
async fn null_or_mistyped_nbf_and_iat_are_refused_like_exp() {
    let api = Api::start(SigningAlgorithm::Rs256).await;
    for claim in ["exp", "nbf", "iat"] {
        for bad in [
            Value::Null,
            json!(""),
            json!("0"),
            json!(false),
            json!([]),
            json!({}),
            json!(-1),
            json!(1e300),
        ] {
            let mut c = claims(&api.server, &api.clock);
            c[claim] = bad.clone();
            let token = api.server.mint(json!({}), c, SignWith::Active);
            api.refused(&token, CLAIMS_INVALID).await;
        }
    }
}

#[tokio::test]
async fn fractional_numeric_dates_are_compared_without_flooring() {
    let api = Api::start_with(SigningAlgorithm::Rs256, |g| g.leeway(Duration::ZERO)).await;
    // A whole second, so the half below is exactly half a second away.
    let now = api.clock.unix_seconds();
    api.clock.set_unix(now);
    let half_past = now as f64 + 0.5;
    let token = |claim: &str| {
        let mut c = claims(&api.server, &api.clock);
        c[claim] = json!(half_past);
        if claim != "exp" {
            c["exp"] = json!(now + 300);
        }
        api.server.mint(json!({}), c, SignWith::Active)
    };
    // exp = now + 0.5: valid now; nbf = now + 0.5, iat = now + 0.5: not yet.
    let exp = token("exp");
    api.accepted(&exp).await;
    api.refused(&token("nbf"), "token not yet valid").await;
    api.refused(&token("iat"), "token issued in the future")
        .await;
    // Half a second later the exp has passed, nbf and iat have come.
    api.clock.advance(Duration::from_millis(500));
    api.refused(&exp, "token expired").await;
    api.accepted(&token("nbf")).await;
    api.accepted(&token("iat")).await;
}

// ------------------------------------------------ the verified-token cache

#[tokio::test]
async fn a_cached_token_still_passes_the_tenant_filter_on_every_request() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    let denied: Arc<Mutex<HashSet<String>>> = Arc::default();
    let deny_list = Arc::clone(&denied);
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let template = bearer_guard::Issuer::tenant_template(format!("{}/{{tenant}}", server.issuer()))
        .jwks_uri(server.jwks_uri())
        .tenant_filter(move |tenant| !deny_list.lock().unwrap().contains(tenant));
    let guard = bearer_guard::Guard::builder()
        .issuer(template)
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    let base = serve(orders_api(&guard)).await;
    let mut c = claims(&server, &clock);
    c["iss"] = json!(format!("{}/acme", server.issuer()));
    let token = server.mint(json!({}), c, SignWith::Active);

    // Verified twice (the second admits it to the cache), then answered from it.
    for _ in 0..3 {
        let ok = answer_to(&base, &token).await;
        assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    }
    let stats = guard.token_cache_stats().unwrap();
    assert!(
        stats.hits >= 1,
        "the token was answered from the cache: {stats:?}"
    );

    // The deny list changes, the token and keys do not: refused at once.
    denied.lock().unwrap().insert("acme".into());
    assert_eq!(answer_to(&base, &token).await, invalid_token(ISSUER));
    denied.lock().unwrap().clear();
    let ok = answer_to(&base, &token).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
}
