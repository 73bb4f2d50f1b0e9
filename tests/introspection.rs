//! Opaque access tokens through the layer, over HTTP, against the bundled
//! authorization server's `/introspect` and `/revoke` (RFC 7662, RFC 7009).

mod common;

use std::time::Duration;

use bearer_guard::authz_server::AuthorizationServerHandle;
use bearer_guard::clock::ManualClock;
use bearer_guard::error::TokenProblem;
use bearer_guard::{AuthError, BuildError, Guard, Introspection, Issuer};
use common::*;
use serde_json::json;

const RS_ID: &str = "orders-api";
const RS_SECRET: &str = "orders-api-secret";

/// A server issuing opaque tokens (with the resource server's own client), and
/// a guard introspecting them at its endpoint with `introspection`'s settings.
async fn opaque_world(
    introspection: impl FnOnce(Introspection) -> Introspection,
) -> (ManualClock, AuthorizationServerHandle, Guard) {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| {
        b.opaque_access_tokens()
            .client(bearer_guard::authz_server::ClientConfig::confidential(
                RS_ID, RS_SECRET,
            ))
    })
    .await;
    let endpoint = Introspection::new(server.introspection_endpoint(), RS_ID, RS_SECRET);
    let guard = Guard::builder()
        .issuer(
            Issuer::new(server.issuer())
                .jwks_uri(server.jwks_uri())
                .introspection(introspection(endpoint)),
        )
        .audience(API)
        .realm("orders")
        .clock(clock.clone())
        .build()
        .expect("guard");
    (clock, server, guard)
}

async fn revoke(server: &AuthorizationServerHandle, token: &str) -> reqwest::StatusCode {
    http()
        .post(server.revocation_endpoint())
        .basic_auth(RS_ID, Some(RS_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .expect("POST /revoke")
        .status()
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_opaque_token_is_accepted_then_refused_once_revoked_and_the_cache_bound_passed() {
    let (clock, server, guard) = opaque_world(|i| i).await;
    let api = serve(orders_api(&guard)).await;
    let token = svc_token(&server).await;
    assert!(!token.contains('.'), "the server issues opaque tokens");

    let r = get_with(format!("{api}/orders"), &token).await;
    assert_eq!(r.status(), 200);
    let me = get_json_with(format!("{api}/me"), &token).await;
    assert_eq!(me["sub"], "svc");
    assert_eq!(me["iss"], server.issuer());
    assert_eq!(me["scope"], "orders:read");
    assert_eq!(me["alg"], serde_json::Value::Null);
    assert_eq!(server.introspection_count(), 1, "the answer is reused");

    assert_eq!(revoke(&server, &token).await, 200);
    // Within the cache's bound (60 s by default) the revocation is not seen yet.
    at(&clock, 59);
    assert_eq!(
        get_with(format!("{api}/orders"), &token).await.status(),
        200
    );
    assert_eq!(server.introspection_count(), 1);

    at(&clock, 1);
    let r = get_with(format!("{api}/orders"), &token).await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains(r#"error="invalid_token""#));
    assert!(challenge(&r).contains("token not active"));
    assert_eq!(server.introspection_count(), 2);
}

#[tokio::test]
async fn a_positive_answer_is_never_reused_past_the_tokens_exp() {
    let (clock, server, guard) = opaque_world(|i| i.max_ttl(Duration::from_secs(3600))).await;
    let token = svc_token(&server).await;
    assert!(guard.validate(&token).await.is_ok());
    // The server's tokens live 300 s; the guard's leeway is 60 s.
    at(&clock, 300);
    assert!(guard.validate(&token).await.is_err());
    assert_eq!(server.introspection_count(), 2, "exp ended the reuse");
}

#[tokio::test]
async fn an_inactive_answer_is_refused_as_invalid_token_and_remembered_briefly() {
    let (clock, server, guard) = opaque_world(|i| i).await;
    let api = serve(orders_api(&guard)).await;
    let r = get_with(format!("{api}/orders"), "never-issued-by-anyone").await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains(r#"error="invalid_token""#));
    assert_eq!(
        problem(guard.validate("never-issued-by-anyone").await),
        TokenProblem::Inactive
    );
    assert_eq!(server.introspection_count(), 1, "the refusal is reused");
    at(&clock, 10);
    assert_eq!(
        problem(guard.validate("never-issued-by-anyone").await),
        TokenProblem::Inactive
    );
    assert_eq!(server.introspection_count(), 2, "for 10 s by default");
}

#[tokio::test]
async fn concurrent_requests_for_one_token_share_one_introspection_call() {
    let (_clock, server, guard) = opaque_world(|i| i).await;
    let token = svc_token(&server).await;
    let all = futures_util::future::join_all((0..16).map(|_| guard.validate(&token))).await;
    assert!(all.iter().all(Result::is_ok));
    assert_eq!(server.introspection_count(), 1);
}

#[tokio::test]
async fn jws_shaped_tokens_never_reach_the_introspection_endpoint() {
    let (clock, server, guard) = opaque_world(|i| i).await;
    let jwt = token_with(&server, &clock, json!({}), json!({}));
    assert!(guard.validate(&jwt).await.is_ok());
    let forged = format!("{jwt}x");
    assert!(guard.validate(&forged).await.is_err());
    assert!(guard.validate("a.b.c").await.is_err());
    assert_eq!(server.introspection_count(), 0);
}

#[tokio::test]
async fn an_unreachable_introspection_endpoint_answers_503_with_retry_after() {
    let clock = ManualClock::starting_now();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let guard = Guard::builder()
        .issuer(
            Issuer::new("http://127.0.0.1:9").introspection(Introspection::new(
                format!("http://{closed}/introspect"),
                RS_ID,
                RS_SECRET,
            )),
        )
        .audience(API)
        .clock(clock)
        .build()
        .expect("guard");
    let api = serve(orders_api(&guard)).await;
    let r = get_with(format!("{api}/orders"), "some-opaque-token").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(!r.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn an_endpoint_refusing_our_credentials_is_503_not_a_verdict_on_the_token() {
    let (_clock, server, _guard) = opaque_world(|i| i).await;
    let guard = Guard::builder()
        .issuer(
            Issuer::new(server.issuer()).introspection(Introspection::new(
                server.introspection_endpoint(),
                RS_ID,
                "wrong-secret",
            )),
        )
        .audience(API)
        .build()
        .expect("guard");
    let token = svc_token(&server).await;
    assert!(matches!(
        guard.validate(&token).await,
        Err(AuthError::IntrospectionUnavailable { .. })
    ));
    // Failures are not remembered: the next request asks again.
    assert!(guard.validate(&token).await.is_err());
    assert_eq!(server.introspection_count(), 2);
}

#[tokio::test]
async fn an_answer_for_another_audience_is_refused() {
    let (_clock, server, _guard) = opaque_world(|i| i).await;
    let guard = Guard::builder()
        .issuer(
            Issuer::new(server.issuer()).introspection(Introspection::new(
                server.introspection_endpoint(),
                RS_ID,
                RS_SECRET,
            )),
        )
        .audience(OTHER_API)
        .build()
        .expect("guard");
    let token = svc_token(&server).await;
    assert!(matches!(
        problem(guard.validate(&token).await),
        TokenProblem::AudienceMismatch { .. }
    ));
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once_by_a_guard_that_never_saw_it() {
    let (_clock, server, guard) = opaque_world(|i| i).await;
    let token = svc_token(&server).await;
    assert_eq!(revoke(&server, &token).await, 200);
    assert_eq!(
        problem(guard.validate(&token).await),
        TokenProblem::Inactive
    );
    // RFC 7009 §2.2: revoking an unknown token is not an error.
    assert_eq!(revoke(&server, &token).await, 200);
}

#[test]
fn only_one_issuer_may_introspect() {
    let endpoint = || Introspection::new("https://a.example/introspect", RS_ID, RS_SECRET);
    let e = Guard::builder()
        .issuer(Issuer::new("https://a.example").introspection(endpoint()))
        .issuer(Issuer::new("https://b.example").introspection(endpoint()))
        .audience(API)
        .build()
        .err();
    assert!(matches!(e, Some(BuildError::InvalidLimit(_))));
    let e = Guard::builder()
        .issuer(
            Issuer::new("https://a.example").introspection(Introspection::new(
                "http://a.example/introspect",
                RS_ID,
                RS_SECRET,
            )),
        )
        .audience(API)
        .build()
        .err();
    assert!(
        matches!(e, Some(BuildError::InvalidUrl { .. })),
        "https only"
    );
}

#[tokio::test]
async fn an_unreadable_or_oversized_answer_is_503_not_a_verdict_on_the_token() {
    use axum::routing::post;
    let big = format!(r#"{{"active":false,"pad":"{}"}}"#, "x".repeat(600 * 1024));
    let broken = axum::Router::new()
        .route("/string-active", post(|| async { r#"{"active":"true"}"# }))
        .route("/array", post(|| async { "[]" }))
        .route(
            "/duplicate",
            post(|| async { r#"{"active":false,"active":true}"# }),
        )
        .route("/oversized", post(move || async move { big }))
        .route(
            "/server-error",
            post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "{}") }),
        );
    let base = serve(broken).await;
    for path in [
        "string-active",
        "array",
        "duplicate",
        "oversized",
        "server-error",
    ] {
        let guard = Guard::builder()
            .issuer(
                Issuer::new("http://127.0.0.1:9").introspection(Introspection::new(
                    format!("{base}/{path}"),
                    RS_ID,
                    RS_SECRET,
                )),
            )
            .audience(API)
            .build()
            .expect("guard");
        let api = serve(orders_api(&guard)).await;
        let r = get_with(format!("{api}/orders"), "some-opaque-token").await;
        assert_eq!(r.status(), 503, "{path}");
        assert!(r.headers().contains_key("retry-after"), "{path}");
    }
}

#[tokio::test]
async fn the_endpoint_can_come_from_the_issuer_s_discovery_document() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| {
        b.opaque_access_tokens()
            .client(bearer_guard::authz_server::ClientConfig::confidential(
                RS_ID, RS_SECRET,
            ))
    })
    .await;
    // No endpoint and no jwks_uri: both from the server's metadata.
    let guard = Guard::builder()
        .issuer(
            Issuer::new(server.issuer()).introspection(Introspection::discovered(RS_ID, RS_SECRET)),
        )
        .audience(API)
        .clock(clock.clone())
        .build()
        .expect("guard");
    let api = serve(orders_api(&guard)).await;
    let token = svc_token(&server).await;
    assert!(!token.contains('.'));
    let me = get_json_with(format!("{api}/me"), &token).await;
    assert_eq!(me["sub"], "svc");
    assert_eq!(server.introspection_count(), 1);
    // The discovered endpoint is kept: a second token costs one call, no lookup.
    let other = svc_token(&server).await;
    assert_eq!(
        get_with(format!("{api}/orders"), &other).await.status(),
        200
    );
    assert_eq!(server.introspection_count(), 2);
    assert_eq!(revoke(&server, &other).await, 200);
}

#[tokio::test]
async fn discovery_without_an_endpoint_or_for_another_issuer_is_503() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let introspect_hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits = introspect_hits.clone();
    let lookups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (l1, l2) = (lookups.clone(), lookups.clone());
    let (me, other) = (base.clone(), format!("{base}/other"));
    let app = axum::Router::new()
        // The document at the root has no introspection_endpoint ...
        .route(
            "/.well-known/openid-configuration",
            get(move || async move {
                l1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(json!({ "issuer": me }))
            }),
        )
        // ... and the one under /other names another issuer and an endpoint.
        .route(
            "/other/.well-known/openid-configuration",
            get(move || async move {
                l2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(json!({
                    "issuer": "https://someone-else.example",
                    "introspection_endpoint": format!("{other}/introspect"),
                }))
            }),
        )
        .route(
            "/other/introspect",
            axum::routing::post(move || async move {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(json!({ "active": true }))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    for (n, issuer) in [base.clone(), format!("{base}/other")]
        .into_iter()
        .enumerate()
    {
        let guard = Guard::builder()
            .issuer(
                Issuer::new(issuer.as_str())
                    .introspection(Introspection::discovered(RS_ID, RS_SECRET)),
            )
            .audience(API)
            .build()
            .expect("guard");
        let api = serve(orders_api(&guard)).await;
        let r = get_with(format!("{api}/orders"), "some-opaque-token").await;
        assert_eq!(r.status(), 503, "{issuer}");
        assert!(r.headers().contains_key("retry-after"), "{issuer}");
        // Within the retry interval the failure is answered without a fetch.
        let r = get_with(format!("{api}/orders"), "another-opaque-token").await;
        assert_eq!(r.status(), 503, "{issuer}");
        assert_eq!(
            lookups.load(std::sync::atomic::Ordering::SeqCst),
            n + 1,
            "{issuer}: one metadata fetch for both requests"
        );
    }
    assert_eq!(
        introspect_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a document for another issuer is never used"
    );
}
