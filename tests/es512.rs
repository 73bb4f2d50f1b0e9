//! ES512 (ECDSA on P-521 with SHA-512, RFC 7518 §3.4): a signature made outside
//! this crate, and the bundled authorization server signing with P-521, both
//! checked through the guard.

mod common;

use bearer_guard::Algorithm;
use bearer_guard::clock::ManualClock;
use bearer_guard::error::TokenProblem;
use bearer_guard::{AuthError, BuildError, Guard, Issuer};
use common::*;
use serde_json::json;

// Made with the OpenSSL 3.0 command line, not with this crate or aws-lc-rs:
//   openssl ecparam -name secp521r1 -genkey -noout -out key.pem
//   openssl ec -in key.pem -pubout -outform DER      (x, y: the last 132 bytes)
//   openssl dgst -sha512 -sign key.pem msg           (DER r, s -> 66-byte r || s)
// where msg is ES512_SIGNING_INPUT.
const ES512_X: &str =
    "AIskfz9cZadnIBj7Q4YZG3ii34taMFTE6eyEq8DcXB_3I3MUwKhExi-5Ltm38WhX6IC1UpevzlwR0RBCTDdChZUI";
const ES512_Y: &str =
    "AfcAl2-rNcIHPQDNX7_jezym0OXp9RZAC72Da0Z0JZag-L8PKqpCYJrxGIrVbu0yZ70AWOqIiqZGA1mP5GjcvWZC";
const ES512_SIGNING_INPUT: &str = concat!(
    "eyJhbGciOiJFUzUxMiIsInR5cCI6ImF0K2p3dCIsImtpZCI6Im9wZW5zc2wtcDUyMSJ9.",
    "eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwic3ViIjoiYWxpY2UiLCJhdWQiOiJodHRwczovL2FwaS5leGFtcGxlLmNvbSIsImlhdCI6MTczMjQ2MDAwMCwiZXhwIjoxNzMyNDYzNjAwLCJzY29wZSI6Im9yZGVyczpyZWFkIn0",
);
const ES512_SIGNATURE: &str = concat!(
    "AKjP0Z66_fv2lRZNfwPU7zYfVf-Cr6euOImhOTH_T2RCZIz7r6MB_zX5f4-UnniO8WeUlt8FxCw-8-lbHFg0r6B7",
    "AKv31LpAYt7OQvNo5w_NFePKI6ESron9t6X9B_-SYihkGqWa0t61wuhs8XsH2uq9TOM_pWPADZtScjEoHjOpY-n8",
);
/// The vector's `iat`.
const ES512_IAT: u64 = 1_732_460_000;

fn openssl_guard(
    jwk_alg: Option<&str>,
    algorithms: Option<&[Algorithm]>,
) -> Result<Guard, BuildError> {
    let mut jwk = json!({
        "kty": "EC", "crv": "P-521", "kid": "openssl-p521", "use": "sig",
        "x": ES512_X, "y": ES512_Y,
    });
    if let Some(alg) = jwk_alg {
        jwk["alg"] = alg.into();
    }
    let mut builder = Guard::builder()
        .issuer(
            Issuer::new("https://issuer.example")
                .jwks_document(json!({ "keys": [jwk] }).to_string()),
        )
        .audience(API)
        .clock(ManualClock::at_unix(ES512_IAT + 60));
    if let Some(algorithms) = algorithms {
        builder = builder.algorithms(algorithms.iter().copied());
    }
    builder.build()
}

fn openssl_token() -> String {
    format!("{ES512_SIGNING_INPUT}.{ES512_SIGNATURE}")
}

#[tokio::test]
async fn accepts_an_es512_signature_made_by_openssl() {
    for jwk_alg in [None, Some("ES512")] {
        let token = openssl_guard(jwk_alg, None)
            .expect("guard")
            .validate(&openssl_token())
            .await
            .expect("the OpenSSL ES512 token verifies");
        assert_eq!(token.algorithm(), Some(Algorithm::ES512));
        assert_eq!(token.subject(), Some("alice"));
    }
}

#[tokio::test]
async fn refuses_an_altered_es512_signature() {
    // One bit of r changed: AKjP... -> AKjQ...
    let altered = ES512_SIGNATURE.replacen("AKjP", "AKjQ", 1);
    assert_ne!(altered, ES512_SIGNATURE);
    let forged = format!("{ES512_SIGNING_INPUT}.{altered}");
    let r = openssl_guard(None, None)
        .expect("guard")
        .validate(&forged)
        .await;
    assert_eq!(
        r.err(),
        Some(AuthError::InvalidToken(TokenProblem::BadSignature))
    );
}

#[tokio::test]
async fn a_p521_key_is_unusable_when_the_guard_does_not_allow_es512() {
    // The static key set is checked at build time: its one key is skipped.
    let r = openssl_guard(None, Some(&[Algorithm::ES256, Algorithm::ES384]));
    assert!(
        matches!(&r, Err(BuildError::InvalidJwks { reason, .. }) if reason.contains("no usable")),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_p521_key_declared_for_another_alg_is_not_used() {
    // A P-521 JWK that says ES384 does not fit its curve: the key is skipped, so
    // the key set has no usable key at all.
    let r = openssl_guard(Some("ES384"), None);
    assert!(
        matches!(&r, Err(BuildError::InvalidJwks { reason, .. }) if reason.contains("no usable")),
        "{r:?}"
    );
}

#[tokio::test]
async fn the_bundled_server_signs_es512_tokens_the_layer_accepts_over_http() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| {
        b.signing_algorithm(bearer_guard::authz_server::SigningAlgorithm::Es512)
    })
    .await;
    let jwks: serde_json::Value = http()
        .get(server.jwks_uri())
        .send()
        .await
        .expect("GET /jwks")
        .json()
        .await
        .expect("JSON");
    assert_eq!(jwks["keys"][0]["crv"], "P-521");
    assert_eq!(jwks["keys"][0]["alg"], "ES512");

    let guard = guard_builder(&server, &clock).build().expect("guard");
    let api = serve(orders_api(&guard)).await;
    let me = get_json_with(format!("{api}/me"), &svc_token(&server).await).await;
    assert_eq!(me["alg"], "ES512");
    assert_eq!(me["client_id"], "svc");
}
