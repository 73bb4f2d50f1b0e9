//! DPoP (RFC 9449) at the resource server, end to end over HTTP: a guard with a
//! configured public origin in front of the orders API, tokens bound with
//! `cnf.jkt` by the bundled server's `mint`, proofs from `DpopKey`.

mod common;

use std::time::Duration;

use bearer_guard::authz_server::{AuthorizationServerHandle, DpopKey};
use bearer_guard::clock::{Clock, ManualClock};
use bearer_guard::sender::{
    Dpop, DpopMode, MemoryReplayStore, ReplayFuture, ReplayKey, ReplayStore, ReplayStoreError,
};
use bearer_guard::{Guard, Issuer};
use common::*;
use serde_json::{Value, json};

/// What clients call the API: never the address it listens on.
const ORIGIN: &str = "https://api.example.com";

struct World {
    clock: ManualClock,
    server: AuthorizationServerHandle,
    url: String,
    key: DpopKey,
}

async fn world(dpop: impl FnOnce(Dpop) -> Dpop) -> World {
    world_with(dpop, |g| g).await
}

async fn world_with(
    dpop: impl FnOnce(Dpop) -> Dpop,
    guard: impl FnOnce(bearer_guard::GuardBuilder) -> bearer_guard::GuardBuilder,
) -> World {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let guard = guard(guard_builder(&server, &clock).dpop(dpop(Dpop::new(ORIGIN))))
        .build()
        .expect("guard");
    let url = serve(orders_api(&guard)).await;
    World {
        clock,
        server,
        url,
        key: DpopKey::generate(),
    }
}

impl World {
    fn now(&self) -> u64 {
        self.clock.unix_seconds()
    }

    /// A token bound to `self.key`.
    fn bound_token(&self) -> String {
        self.token_bound_to(&self.key.thumbprint())
    }

    fn token_bound_to(&self, jkt: &str) -> String {
        token_with(
            &self.server,
            &self.clock,
            json!({}),
            json!({ "cnf": { "jkt": jkt } }),
        )
    }

    /// A valid proof for `GET {ORIGIN}/me` with `token`.
    fn proof(&self, token: &str) -> bearer_guard::authz_server::ProofBuilder<'_> {
        self.key
            .proof("GET", &format!("{ORIGIN}/me"))
            .access_token(token)
            .iat(self.now())
    }

    async fn get_me(&self, token: &str, proofs: &[String]) -> reqwest::Response {
        let mut request = http()
            .get(format!("{}/me", self.url))
            .header("authorization", format!("DPoP {token}"));
        for proof in proofs {
            request = request.header("dpop", proof);
        }
        request.send().await.expect("GET /me")
    }
}

fn challenges(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn refusal(r: reqwest::Response) -> (u16, Vec<String>, Value) {
    let status = r.status().as_u16();
    let www = challenges(&r);
    (status, www, r.json().await.expect("JSON error body"))
}

const ALGS: &str = r#"algs="RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA""#;

#[tokio::test]
async fn accepts_a_bound_token_with_a_valid_proof_and_reports_the_binding() {
    let w = world(|d| d).await;
    let token = w.bound_token();
    let r = w.get_me(&token, &[w.proof(&token).sign()]).await;
    assert_eq!(r.status(), 200);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["sub"], "alice");
}

#[tokio::test]
async fn the_binding_reaches_the_handler() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let guard = guard_builder(&server, &clock)
        .dpop(Dpop::new(ORIGIN))
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/binding",
            axum::routing::get(|t: bearer_guard::VerifiedToken| async move {
                format!("{:?}", t.binding())
            }),
        )
        .layer(guard.layer());
    let url = serve(app).await;
    let key = DpopKey::generate();
    let token = dpop_bound_token(&server, &clock, &key);
    let proof = key
        .proof("GET", &format!("{ORIGIN}/binding"))
        .access_token(&token)
        .iat(clock.unix_seconds())
        .sign();
    let body = http()
        .get(format!("{url}/binding"))
        .dpop(&token, proof)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, format!("Dpop {{ jkt: {:?} }}", key.thumbprint()));
    let plain = get_with(format!("{url}/binding"), &svc_token(&server).await).await;
    assert_eq!(plain.text().await.unwrap(), "Bearer");
}

#[tokio::test]
async fn a_bound_token_sent_as_bearer_is_refused_and_both_schemes_are_challenged() {
    let w = world(|d| d).await;
    let r = get_with(format!("{}/me", w.url), &w.bound_token()).await;
    let (status, www, body) = refusal(r).await;
    assert_eq!(status, 401);
    assert_eq!(
        www,
        [
            r#"Bearer realm="orders", error="invalid_token", error_description="DPoP-bound token sent as a bearer token""#.to_owned(),
            format!(r#"DPoP realm="orders", {ALGS}"#),
        ]
    );
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn a_bound_token_is_refused_by_a_guard_without_dpop() {
    let (clock, server, guard) = fixture().await;
    let url = serve(orders_api(&guard)).await;
    let key = DpopKey::generate();
    let token = dpop_bound_token(&server, &clock, &key);
    let r = get_with(format!("{url}/me"), &token).await;
    let (status, www, _) = refusal(r).await;
    assert_eq!(status, 401);
    assert_eq!(
        www,
        [
            r#"Bearer realm="orders", error="invalid_token", error_description="DPoP-bound token sent as a bearer token""#
        ]
    );
    // And the DPoP scheme is not one it speaks: no credentials, no error code.
    let proof = key
        .proof("GET", &format!("{ORIGIN}/me"))
        .access_token(&token)
        .sign();
    let r = http()
        .get(format!("{url}/me"))
        .dpop(&token, proof)
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(r).await.1, [r#"Bearer realm="orders""#]);
}

#[tokio::test]
async fn a_plain_bearer_token_passes_where_dpop_is_allowed() {
    let w = world(|d| d).await;
    let r = get_with(format!("{}/me", w.url), &svc_token(&w.server).await).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_plain_bearer_token_is_refused_where_dpop_is_required() {
    let w = world(|d| d.mode(DpopMode::Required)).await;
    let r = get_with(format!("{}/me", w.url), &svc_token(&w.server).await).await;
    let (status, www, _) = refusal(r).await;
    assert_eq!(status, 401);
    // Only the DPoP scheme is offered, and the error is on it... but the client
    // used Bearer, so the Bearer challenge carries the error.
    assert_eq!(
        www,
        [
            r#"Bearer realm="orders", error="invalid_token", error_description="DPoP-bound token required""#.to_owned(),
            format!(r#"DPoP realm="orders", {ALGS}"#),
        ]
    );
    // No credentials at all: only DPoP is challenged.
    let r = http().get(format!("{}/me", w.url)).send().await.unwrap();
    assert_eq!(
        refusal(r).await.1,
        [format!(r#"DPoP realm="orders", {ALGS}"#)]
    );
}

#[tokio::test]
async fn issuers_override_the_guard_mode() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let guard = Guard::builder()
        .issuer(
            Issuer::new(server.issuer())
                .jwks_uri(server.jwks_uri())
                .dpop(DpopMode::Required),
        )
        .audience(API)
        .clock(clock.clone())
        .dpop(Dpop::new(ORIGIN))
        .build()
        .unwrap();
    let url = serve(orders_api(&guard)).await;
    let r = get_with(format!("{url}/me"), &svc_token(&server).await).await;
    assert_eq!(r.status(), 401);
    let e = Guard::builder()
        .issuer(
            Issuer::new(server.issuer())
                .jwks_uri(server.jwks_uri())
                .dpop(DpopMode::Allowed),
        )
        .audience(API)
        .build()
        .err();
    assert!(
        matches!(e, Some(bearer_guard::BuildError::InvalidDpop(_))),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_dpop_scheme_with_an_unbound_token_is_refused() {
    let w = world(|d| d).await;
    let token = svc_token(&w.server).await;
    let (status, www, _) = refusal(w.get_me(&token, &[w.proof(&token).sign()]).await).await;
    assert_eq!(status, 401);
    assert_eq!(
        www,
        [
            r#"Bearer realm="orders""#.to_owned(),
            format!(
                r#"DPoP realm="orders", error="invalid_token", error_description="token is not DPoP-bound", {ALGS}"#
            ),
        ]
    );
}

#[tokio::test]
async fn each_broken_proof_rule_is_refused_on_its_own() {
    let w = world(|d| d).await;
    let token = w.bound_token();
    let other = DpopKey::generate();
    let now = w.now();
    let mut private_jwk = w.key.public_jwk();
    private_jwk.insert("d".into(), "AAAA".into());
    let me = format!("{ORIGIN}/me");
    let cases: Vec<(&str, Vec<String>, &str, &str)> = vec![
        (
            "no proof",
            vec![],
            "invalid_dpop_proof",
            "DPoP proof required",
        ),
        (
            "two proofs",
            vec![w.proof(&token).sign(), w.proof(&token).sign()],
            "invalid_dpop_proof",
            "more than one DPoP proof",
        ),
        (
            "not a JWS",
            vec!["abc".into()],
            "invalid_dpop_proof",
            "DPoP proof malformed",
        ),
        (
            "typ JWT",
            vec![w.proof(&token).header("typ", "JWT").sign()],
            "invalid_dpop_proof",
            "DPoP proof type invalid",
        ),
        (
            "alg none",
            vec![w.proof(&token).header("alg", "none").sign()],
            "invalid_dpop_proof",
            "DPoP proof algorithm not allowed",
        ),
        (
            "alg HS256",
            vec![w.proof(&token).header("alg", "HS256").sign()],
            "invalid_dpop_proof",
            "DPoP proof algorithm not allowed",
        ),
        (
            "no jwk",
            vec![w.proof(&token).header("jwk", Value::Null).sign()],
            "invalid_dpop_proof",
            "DPoP proof malformed",
        ),
        (
            "jwk with a private member",
            vec![
                w.proof(&token)
                    .header("jwk", Value::Object(private_jwk))
                    .sign(),
            ],
            "invalid_dpop_proof",
            "DPoP proof key not acceptable",
        ),
        (
            "jwk of a symmetric key",
            vec![
                w.proof(&token)
                    .header("jwk", json!({"kty": "oct", "k": "c2VjcmV0"}))
                    .sign(),
            ],
            "invalid_dpop_proof",
            "DPoP proof key not acceptable",
        ),
        (
            "jwk of another curve than alg",
            vec![w.proof(&token).header("alg", "ES384").sign()],
            "invalid_dpop_proof",
            "DPoP proof key not acceptable",
        ),
        (
            "signed by another key than its jwk",
            vec![
                other
                    .proof("GET", &me)
                    .access_token(&token)
                    .iat(now)
                    .header("jwk", Value::Object(w.key.public_jwk()))
                    .sign(),
            ],
            "invalid_dpop_proof",
            "DPoP proof signature invalid",
        ),
        (
            "htm POST",
            vec![w.proof(&token).claim("htm", "POST").sign()],
            "invalid_dpop_proof",
            "DPoP proof method mismatch",
        ),
        (
            "htu of another path",
            vec![
                w.proof(&token)
                    .claim("htu", format!("{ORIGIN}/orders"))
                    .sign(),
            ],
            "invalid_dpop_proof",
            "DPoP proof URI mismatch",
        ),
        (
            "htu of the listening address",
            vec![w.proof(&token).claim("htu", format!("{}/me", w.url)).sign()],
            "invalid_dpop_proof",
            "DPoP proof URI mismatch",
        ),
        (
            "no iat",
            vec![w.proof(&token).claim("iat", Value::Null).sign()],
            "invalid_dpop_proof",
            "DPoP proof malformed",
        ),
        (
            "iat as a string",
            vec![w.proof(&token).claim("iat", now.to_string()).sign()],
            "invalid_dpop_proof",
            "DPoP proof malformed",
        ),
        (
            "no jti",
            vec![w.proof(&token).claim("jti", Value::Null).sign()],
            "invalid_dpop_proof",
            "DPoP proof malformed",
        ),
        (
            "no ath",
            vec![w.proof(&token).claim("ath", Value::Null).sign()],
            "invalid_dpop_proof",
            "DPoP proof access token hash mismatch",
        ),
        (
            "ath of another token",
            vec![w.proof(&token).access_token("another.token.x").sign()],
            "invalid_dpop_proof",
            "DPoP proof access token hash mismatch",
        ),
        (
            "a valid proof by a key the token is not bound to",
            vec![other.proof("GET", &me).access_token(&token).iat(now).sign()],
            "invalid_token",
            "DPoP key binding mismatch",
        ),
    ];
    for (case, proofs, error, description) in cases {
        let (status, www, body) = refusal(w.get_me(&token, &proofs).await).await;
        assert_eq!(status, 401, "{case}");
        assert_eq!(
            www[1],
            format!(
                r#"DPoP realm="orders", error="{error}", error_description="{description}", {ALGS}"#
            ),
            "{case}"
        );
        assert_eq!(body["error"], error, "{case}");
    }
    // None of them used up the proof's key or token: a correct proof still works.
    assert_eq!(
        w.get_me(&token, &[w.proof(&token).sign()]).await.status(),
        200
    );
}

#[tokio::test]
async fn a_replayed_proof_is_refused_within_the_window() {
    let w = world(|d| d).await;
    let token = w.bound_token();
    let proof = w.proof(&token).sign();
    assert_eq!(
        w.get_me(&token, std::slice::from_ref(&proof))
            .await
            .status(),
        200
    );
    let (status, www, _) = refusal(w.get_me(&token, std::slice::from_ref(&proof)).await).await;
    assert_eq!(status, 401);
    assert!(
        www[1].contains(r#"error_description="DPoP proof replayed""#),
        "{www:?}"
    );
    // At the window's end the proof is refused for its age, not let through.
    at(&w.clock, 76);
    let (_, www, _) = refusal(w.get_me(&token, &[proof]).await).await;
    assert!(
        www[1].contains("DPoP proof expired or issued in the future"),
        "{www:?}"
    );
}

#[tokio::test]
async fn htu_comes_from_the_configured_origin_even_when_host_lies() {
    let w = world(|d| d).await;
    let token = w.bound_token();
    // The proof names the configured origin; the request's Host names another.
    let r = http()
        .get(format!("{}/me", w.url))
        .header("host", "evil.example")
        .dpop(&token, w.proof(&token).sign())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A proof for the Host the client claims is refused, whatever Host says.
    let lying = w
        .key
        .proof("GET", "https://evil.example/me")
        .access_token(&token)
        .iat(w.now())
        .sign();
    let r = http()
        .get(format!("{}/me", w.url))
        .header("host", "evil.example")
        .dpop(&token, lying)
        .send()
        .await
        .unwrap();
    let (status, www, _) = refusal(r).await;
    assert_eq!(status, 401);
    assert!(www[1].contains("DPoP proof URI mismatch"));
}

#[tokio::test]
async fn htu_is_compared_after_normalisation_without_query() {
    let w = world(|d| d).await;
    let token = w.bound_token();
    for htu in [
        "HTTPS://API.EXAMPLE.COM:443/me",
        "https://api.example.com/./x/../%6De",
        "https://api.example.com/me?page=2#top",
    ] {
        let proof = w.proof(&token).claim("htu", htu).sign();
        let r = http()
            .get(format!("{}/me?page=1", w.url))
            .dpop(&token, proof)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{htu}");
    }
}

#[tokio::test]
async fn a_public_url_with_a_path_prefix_is_part_of_htu() {
    let w = world_with(|_| Dpop::new("https://example.com/api/"), |g| g).await;
    let token = w.bound_token();
    let proof = w
        .key
        .proof("GET", "https://example.com/api/me")
        .access_token(&token)
        .iat(w.now())
        .sign();
    assert_eq!(w.get_me(&token, &[proof]).await.status(), 200);
}

#[tokio::test]
async fn iat_is_accepted_up_to_the_window_edges_and_not_a_second_beyond() {
    let w = world(|d| {
        d.proof_max_age(Duration::from_secs(60))
            .proof_leeway(Duration::from_secs(15))
    })
    .await;
    let token = w.bound_token();
    let now = w.now();
    for (iat, ok) in [
        (now - 75, true),
        (now - 76, false),
        (now + 15, true),
        (now + 16, false),
    ] {
        let proof = w.proof(&token).iat(iat).sign();
        let status = w.get_me(&token, &[proof]).await.status();
        assert_eq!(status == 200, ok, "iat now{:+}", iat as i64 - now as i64);
    }
}

#[tokio::test]
async fn a_nonce_is_demanded_and_every_replica_accepts_every_others() {
    let secret = [42u8; 32];
    let w = world(|d| d.require_nonce(secret)).await;
    let token = w.bound_token();
    let r = w.get_me(&token, &[w.proof(&token).sign()]).await;
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let (status, www, body) = refusal(r).await;
    assert_eq!(status, 401);
    assert_eq!(
        www[1],
        format!(
            r#"DPoP realm="orders", error="use_dpop_nonce", error_description="a DPoP nonce is required", {ALGS}"#
        )
    );
    assert_eq!(body["error"], "use_dpop_nonce");
    let ok = w
        .get_me(&token, &[w.proof(&token).nonce(&nonce).sign()])
        .await;
    assert_eq!(ok.status(), 200);
    // Successful DPoP answers carry the current nonce (RFC 9449 §8.2).
    assert_eq!(ok.headers()["dpop-nonce"], nonce.as_str());

    // A second replica with the same secret and no shared state.
    let replica = guard_builder(&w.server, &w.clock)
        .dpop(Dpop::new(ORIGIN).require_nonce(secret))
        .build()
        .unwrap();
    let replica_url = serve(orders_api(&replica)).await;
    let r = http()
        .get(format!("{replica_url}/me"))
        .dpop(&token, w.proof(&token).nonce(&nonce).sign())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A forged or expired nonce gets a fresh one.
    let forged = w
        .get_me(&token, &[w.proof(&token).nonce("AAAA").sign()])
        .await;
    assert_eq!(forged.status(), 401);
    at(&w.clock, 601);
    let token = w.bound_token();
    let expired = w
        .get_me(&token, &[w.proof(&token).iat(w.now()).nonce(&nonce).sign()])
        .await;
    assert_eq!(expired.status(), 401);
    assert_ne!(expired.headers()["dpop-nonce"], nonce.as_str());
}

/// A replay store that is down: the one mock in this file, standing in for an
/// unreachable Redis (tests/dpop_redis.rs stops a real one).
#[derive(Debug)]
struct DownStore;

impl ReplayStore for DownStore {
    fn first_use<'a>(&'a self, _: &'a ReplayKey, _: u64, _: Duration) -> ReplayFuture<'a> {
        Box::pin(async { Err(ReplayStoreError::Unavailable("connection refused".into())) })
    }
}

#[tokio::test]
async fn a_failing_replay_store_fails_closed_with_503_unless_told_to_fail_open() {
    let w = world(|d| d.replay_store(DownStore)).await;
    let token = w.bound_token();
    let r = w.get_me(&token, &[w.proof(&token).sign()]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.headers().get("www-authenticate").is_none());

    let open = world(|d| d.replay_store(DownStore).fail_open_on_store_error()).await;
    let token = open.bound_token();
    assert_eq!(
        open.get_me(&token, &[open.proof(&token).sign()])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_full_memory_store_refuses_new_proofs_but_not_plain_tokens() {
    let w = world(|d| d.replay_store(MemoryReplayStore::new(1))).await;
    let token = w.bound_token();
    assert_eq!(
        w.get_me(&token, &[w.proof(&token).sign()]).await.status(),
        200
    );
    assert_eq!(
        w.get_me(&token, &[w.proof(&token).sign()]).await.status(),
        503
    );
    let plain = get_with(format!("{}/me", w.url), &svc_token(&w.server).await).await;
    assert_eq!(plain.status(), 200);
    at(&w.clock, 120);
    let token = w.bound_token();
    assert_eq!(
        w.get_me(&token, &[w.proof(&token).sign()]).await.status(),
        200
    );
}

#[tokio::test]
async fn an_unsupported_confirmation_method_is_refused() {
    let w = world(|d| d).await;
    let token = token_with(
        &w.server,
        &w.clock,
        json!({}),
        json!({"cnf": {"kid": "k1"}}),
    );
    let (status, www, _) = refusal(get_with(format!("{}/me", w.url), &token).await).await;
    assert_eq!(status, 401);
    assert!(
        www[0].contains("token confirmation method not supported"),
        "{www:?}"
    );
}

#[tokio::test]
async fn insufficient_scope_goes_on_the_dpop_challenge_for_a_dpop_request() {
    let w = world(|d| d).await;
    let token = w.bound_token();
    let proof = w
        .key
        .proof("POST", &format!("{ORIGIN}/orders"))
        .access_token(&token)
        .iat(w.now())
        .sign();
    let r = http()
        .post(format!("{}/orders", w.url))
        .dpop(&token, proof)
        .send()
        .await
        .unwrap();
    let (status, www, _) = refusal(r).await;
    assert_eq!(status, 403);
    assert_eq!(
        www[1],
        format!(
            r#"DPoP realm="orders", error="insufficient_scope", error_description="token lacks a required scope", scope="orders:write", {ALGS}"#
        )
    );
}

// ------------------------------------------- the bundled authorization server

#[tokio::test]
async fn the_token_endpoint_binds_a_client_credentials_token_to_the_proof_key() {
    let w = world(|d| d).await;
    let token = w
        .server
        .dpop_client_credentials_token("svc", &["orders:read"], &w.key)
        .await
        .unwrap();
    // Accepted with a proof by that key, refused without one.
    assert_eq!(
        w.get_me(&token, &[w.proof(&token).sign()]).await.status(),
        200
    );
    let (status, _, _) = refusal(get_with(format!("{}/me", w.url), &token).await).await;
    assert_eq!(status, 401);
    // The response names the token type.
    let proof = w
        .key
        .proof("POST", &w.server.token_endpoint())
        .iat(w.now())
        .sign();
    let body: Value = http()
        .post(w.server.token_endpoint())
        .basic_auth("svc", Some("svc-secret"))
        .header("dpop", proof)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["token_type"], "DPoP");
}

#[tokio::test]
async fn the_token_endpoint_refuses_bad_and_replayed_proofs_with_invalid_dpop_proof() {
    let w = world(|d| d).await;
    let endpoint = w.server.token_endpoint();
    let post = |proof: String| {
        http()
            .post(w.server.token_endpoint())
            .basic_auth("svc", Some("svc-secret"))
            .header("dpop", proof)
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let good = w.key.proof("POST", &endpoint).iat(w.now()).sign();
    assert_eq!(post(good.clone()).await.unwrap().status(), 200);
    for (case, proof) in [
        ("replayed", good),
        ("htm GET", w.key.proof("GET", &endpoint).iat(w.now()).sign()),
        (
            "htu of the API",
            w.key
                .proof("POST", &format!("{ORIGIN}/token"))
                .iat(w.now())
                .sign(),
        ),
        (
            "old",
            w.key.proof("POST", &endpoint).iat(w.now() - 600).sign(),
        ),
    ] {
        let r = post(proof).await.unwrap();
        assert_eq!(r.status(), 400, "{case}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_dpop_proof", "{case}");
    }
}

#[tokio::test]
async fn the_token_endpoint_can_demand_a_nonce() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b.require_dpop_nonce()).await;
    let key = DpopKey::generate();
    let proof = key
        .proof("POST", &server.token_endpoint())
        .iat(clock.unix_seconds())
        .sign();
    let r = http()
        .post(server.token_endpoint())
        .basic_auth("svc", Some("svc-secret"))
        .header("dpop", proof)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().contains_key("dpop-nonce"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce");
    // The handle's helper retries with the nonce.
    let token = server
        .dpop_client_credentials_token("svc", &[], &key)
        .await
        .unwrap();
    assert_eq!(token.split('.').count(), 3);
}

#[tokio::test]
async fn metadata_advertises_the_dpop_algorithms() {
    let w = world(|d| d).await;
    let meta: Value = http()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            w.server.issuer()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        json!([
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
            "EdDSA"
        ])
    );
}

#[tokio::test]
async fn a_route_can_require_dpop_where_the_guard_allows_bearer() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let guard = guard_builder(&server, &clock)
        .dpop(Dpop::new(ORIGIN))
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/pay",
            axum::routing::post(|| async { "paid" })
                .route_layer(bearer_guard::Require::dpop_bound()),
        )
        .route("/me", axum::routing::get(|| async { "me" }))
        .layer(guard.layer());
    let url = serve(app).await;
    let plain = svc_token(&server).await;
    assert_eq!(get_with(format!("{url}/me"), &plain).await.status(), 200);
    let (status, www, _) = refusal(post_with(format!("{url}/pay"), &plain).await).await;
    assert_eq!(status, 401);
    assert_eq!(
        www,
        [
            r#"Bearer realm="orders", error="invalid_token", error_description="DPoP-bound token required""#.to_owned(),
            format!(r#"DPoP realm="orders", {ALGS}"#),
        ]
    );
    let key = DpopKey::generate();
    let token = dpop_bound_token(&server, &clock, &key);
    let proof = key
        .proof("POST", &format!("{ORIGIN}/pay"))
        .access_token(&token)
        .iat(clock.unix_seconds())
        .sign();
    let r = http()
        .post(format!("{url}/pay"))
        .dpop(&token, proof)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
