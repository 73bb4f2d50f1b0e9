//! The library API a handler author uses: optional authentication, public routes beside
//! protected ones, predicate requirements, `AuthError` as a response, and the
//! extractors' answers when the guard is missing. All over HTTP on 127.0.0.1 against
//! the bundled authorization server.

mod common;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bearer_guard::axum::Claims;
use bearer_guard::{AuthError, Guard, Require, VerifiedToken};
use common::*;
use serde_json::json;

async fn anonymous_get(url: &str) -> reqwest::Response {
    http().get(url).send().await.expect("GET")
}

fn challenge(r: &reqwest::Response) -> &str {
    r.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `/` greets anyone, `/orders` needs orders:read, under one optional guard.
fn optional_app(guard: &Guard) -> Router {
    Router::new()
        .route(
            "/",
            get(|t: Option<VerifiedToken>| async move {
                match t {
                    Some(t) => format!("hello {}", t.subject().unwrap_or("?")),
                    None => "hello stranger".to_owned(),
                }
            }),
        )
        .route(
            "/orders",
            get(|| async { "orders" }).route_layer(Require::all(["orders:read"])),
        )
        .route(
            "/me",
            get(|t: VerifiedToken| async move { t.issuer().to_owned() }),
        )
        .layer(guard.layer().optional())
}

#[tokio::test]
async fn optional_guard_passes_anonymous_requests_without_a_token() {
    let (_clock, server, guard) = fixture().await;
    let url = serve(optional_app(&guard)).await;
    let r = anonymous_get(&url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello stranger");

    let token = svc_token(&server).await;
    let r = get_with(&url, &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello svc");
}

#[tokio::test]
async fn optional_guard_still_refuses_bad_credentials() {
    let (clock, server, guard) = fixture().await;
    let url = serve(optional_app(&guard)).await;
    let expired = token_with(&server, &clock, json!({}), json!({"exp": 1_000}));
    for bad in [expired.as_str(), "not.a.jwt", "e30.e30.x"] {
        let r = get_with(&url, bad).await;
        assert_eq!(r.status(), 401, "{bad}");
        assert!(challenge(&r).contains("error=\"invalid_token\""), "{bad}");
    }
    // Malformed credentials are still the client's 400, not an anonymous pass.
    let r = http()
        .get(&url)
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn optional_guard_answers_requirements_and_token_extractors_with_the_challenge() {
    let (_clock, _server, guard) = fixture().await;
    let url = serve(optional_app(&guard)).await;
    for path in ["/orders", "/me"] {
        let r = anonymous_get(&format!("{url}{path}")).await;
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(challenge(&r), "Bearer realm=\"orders\"", "{path}");
    }
}

#[tokio::test]
async fn public_routes_merged_beside_a_guarded_router_need_no_token() {
    let (_clock, server, guard) = fixture().await;
    let protected = Router::new()
        .route("/orders", get(|| async { "orders" }))
        .layer(guard.layer());
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(protected);
    let url = serve(app).await;
    assert_eq!(anonymous_get(&format!("{url}/health")).await.status(), 200);
    assert_eq!(anonymous_get(&format!("{url}/orders")).await.status(), 401);
    let token = svc_token(&server).await;
    assert_eq!(
        get_with(format!("{url}/orders"), &token).await.status(),
        200
    );
}

#[tokio::test]
async fn predicate_requirement_refuses_with_403_naming_no_claim_value() {
    let (_clock, server, guard) = fixture().await;
    let app = Router::new()
        .route(
            "/reports",
            get(|| async { "reports" }).route_layer(Require::all(["orders:read"]).and(
                Require::predicate("client reader", |t| t.client_id() == Some("reader")),
            )),
        )
        .layer(guard.layer());
    let url = serve(app).await;

    let reader = server
        .client_credentials_token("reader", &["orders:read"])
        .await
        .unwrap();
    assert_eq!(
        get_with(format!("{url}/reports"), &reader).await.status(),
        200
    );

    let svc = svc_token(&server).await;
    let r = get_with(format!("{url}/reports"), &svc).await;
    assert_eq!(r.status(), 403);
    let c = challenge(&r).to_owned();
    assert!(c.contains("error=\"insufficient_scope\""), "{c}");
    assert!(
        c.contains("token does not meet the route's requirements"),
        "{c}"
    );
    assert!(
        !c.contains("svc") && !c.contains("reader") && !c.contains("scope=\""),
        "{c}"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
}

#[tokio::test]
async fn scopes_are_checked_before_a_later_predicate() {
    let (_clock, server, guard) = fixture().await;
    let app = Router::new()
        .route(
            "/w",
            get(|| async { "w" }).route_layer(
                Require::all(["orders:write"]).and(Require::predicate("never", |_| false)),
            ),
        )
        .layer(guard.layer());
    let url = serve(app).await;
    let r = get_with(format!("{url}/w"), &svc_token(&server).await).await;
    assert_eq!(r.status(), 403);
    assert!(challenge(&r).contains("scope=\"orders:write\""));
}

#[tokio::test]
async fn auth_error_is_a_response_for_handlers_that_validate_themselves() {
    let (clock, server, guard) = fixture().await;
    // A handler that validates a token from the body (e.g. a token-exchange front).
    let app = Router::new()
        .route(
            "/relay",
            axum::routing::post(|State(guard): State<Guard>, body: String| async move {
                let token = guard.validate(body.trim()).await?;
                Ok::<_, AuthError>(token.subject().unwrap_or_default().to_owned())
            }),
        )
        .with_state(guard);
    let url = serve(app).await;
    let good = svc_token(&server).await;
    let r = http()
        .post(format!("{url}/relay"))
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "svc");

    let expired = token_with(&server, &clock, json!({}), json!({"exp": 1_000}));
    let r = http()
        .post(format!("{url}/relay"))
        .body(expired)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        "Bearer error=\"invalid_token\", error_description=\"token expired\""
    );
}

#[tokio::test]
async fn extractors_and_requirements_without_a_guard_are_a_500_not_a_401() {
    let app = Router::new()
        .route(
            "/me",
            get(|t: VerifiedToken| async move { t.issuer().to_owned() }),
        )
        .route(
            "/claims",
            get(|Claims(c): Claims<serde_json::Value>| async move { c.to_string() }),
        )
        .route(
            "/scoped",
            get(|| async { "never" }).route_layer(Require::all(["a"])),
        );
    let url = serve(app).await;
    for path in ["/me", "/claims", "/scoped"] {
        let r = anonymous_get(&format!("{url}{path}")).await;
        assert_eq!(r.status(), 500, "{path}");
        assert!(r.headers().get("www-authenticate").is_none(), "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "server_error", "{path}");
    }
    // The optional extractor is simply empty.
    let app = Router::new().route(
        "/",
        get(|t: Option<VerifiedToken>| async move { format!("{}", t.is_some()) }),
    );
    let url = serve(app).await;
    assert_eq!(anonymous_get(&url).await.text().await.unwrap(), "false");
}

#[tokio::test]
async fn claims_that_do_not_fit_the_handlers_type_still_get_401() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct NeedsTenant {
        tenant: String,
    }
    let (_clock, server, guard) = fixture().await;
    let app = Router::new()
        .route(
            "/t",
            get(|Claims(c): Claims<NeedsTenant>| async move { c.tenant }),
        )
        .layer(guard.layer());
    let url = serve(app).await;
    let r = get_with(format!("{url}/t"), &svc_token(&server).await).await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn verified_token_gives_the_access_token_for_relaying() {
    let (_clock, server, guard) = fixture().await;
    let app = Router::new()
        .route(
            "/relay",
            get(|t: VerifiedToken| async move { t.access_token().to_owned() }),
        )
        .layer(guard.layer());
    let url = serve(app).await;
    let token = svc_token(&server).await;
    // Twice: the second is answered by the verified-token cache.
    for _ in 0..3 {
        let r = get_with(format!("{url}/relay"), &token).await;
        assert_eq!(r.text().await.unwrap(), token);
    }
}
