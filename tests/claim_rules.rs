//! Claim rules and step-up (RFC 9470) as route requirements, through the layer
//! over HTTP, with tokens signed by the bundled authorization server.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bearer_guard::Require;
use bearer_guard::clock::Clock as _;
use common::*;
use serde_json::json;

/// `/tenant`: tenant acme or globex; `/admin`: Keycloak realm role admin and
/// editor; `/support`: any of the roles support, admin; `/pay`: acr mfa and a
/// login at most 5 minutes old.
fn api(guard: &bearer_guard::Guard) -> Router {
    Router::new()
        .route(
            "/tenant",
            get(|| async { "ok" }).route_layer(Require::claim_in("tenant", ["acme", "globex"])),
        )
        .route(
            "/admin",
            get(|| async { "ok" }).route_layer(Require::claim_contains_all(
                "realm_access.roles",
                ["admin", "editor"],
            )),
        )
        .route(
            "/support",
            get(|| async { "ok" })
                .route_layer(Require::claim_contains_any("roles", ["support", "admin"])),
        )
        .route(
            "/pay",
            get(|| async { "ok" }).route_layer(
                Require::all(["orders:read"])
                    .and(Require::acr_in(["mfa", "hwk"]))
                    .and(Require::max_age(Duration::from_secs(300))),
            ),
        )
        .layer(guard.layer())
}

async fn status_and_challenge(url: String, token: &str) -> (u16, String, String) {
    let r = get_with(url, token).await;
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ASCII").to_owned())
        .unwrap_or_default();
    (
        r.status().as_u16(),
        challenge,
        r.text().await.expect("body"),
    )
}

#[tokio::test]
async fn claim_in_admits_listed_values_and_refuses_others_without_naming_them() {
    let (clock, server, guard) = fixture().await;
    let base = serve(api(&guard)).await;
    let acme = token_with(&server, &clock, json!({}), json!({ "tenant": "acme" }));
    assert_eq!(
        get_with(format!("{base}/tenant"), &acme).await.status(),
        200
    );

    for changes in [
        json!({ "tenant": "initech" }),
        json!({ "tenant": ["acme"] }),
        json!({}),
    ] {
        let token = token_with(&server, &clock, json!({}), changes);
        let (status, challenge, body) =
            status_and_challenge(format!("{base}/tenant"), &token).await;
        assert_eq!(status, 403);
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        for answer in [&challenge, &body] {
            assert!(
                !answer.contains("initech") && !answer.contains("acme"),
                "{answer}"
            );
        }
    }
}

#[tokio::test]
async fn claim_contains_all_follows_a_dotted_path_into_nested_objects() {
    let (clock, server, guard) = fixture().await;
    let base = serve(api(&guard)).await;
    let roles = |roles: serde_json::Value| {
        token_with(
            &server,
            &clock,
            json!({}),
            json!({ "realm_access": { "roles": roles } }),
        )
    };
    let both = roles(json!(["viewer", "editor", "admin"]));
    assert_eq!(get_with(format!("{base}/admin"), &both).await.status(), 200);
    let one = roles(json!(["admin"]));
    assert_eq!(get_with(format!("{base}/admin"), &one).await.status(), 403);
    let not_array = roles(json!("admin editor"));
    assert_eq!(
        get_with(format!("{base}/admin"), &not_array).await.status(),
        403
    );
}

#[tokio::test]
async fn claim_contains_any_needs_one_listed_element() {
    let (clock, server, guard) = fixture().await;
    let base = serve(api(&guard)).await;
    let with = |roles| token_with(&server, &clock, json!({}), json!({ "roles": roles }));
    let support = with(json!(["support"]));
    assert_eq!(
        get_with(format!("{base}/support"), &support).await.status(),
        200
    );
    let other = with(json!(["sales"]));
    assert_eq!(
        get_with(format!("{base}/support"), &other).await.status(),
        403
    );
}

#[tokio::test]
async fn step_up_refuses_a_weak_acr_with_401_and_acr_values() {
    let (clock, server, guard) = fixture().await;
    let base = serve(api(&guard)).await;
    let now = clock.unix_seconds();
    let weak = token_with(
        &server,
        &clock,
        json!({}),
        json!({ "acr": "pwd", "auth_time": now }),
    );
    let (status, challenge, _) = status_and_challenge(format!("{base}/pay"), &weak).await;
    assert_eq!(status, 401);
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(challenge.contains("acr_values=\"mfa hwk\""), "{challenge}");

    let strong = token_with(
        &server,
        &clock,
        json!({}),
        json!({ "acr": "mfa", "auth_time": now }),
    );
    assert_eq!(get_with(format!("{base}/pay"), &strong).await.status(), 200);
}

#[tokio::test]
async fn step_up_refuses_an_old_login_by_the_guards_clock_with_max_age() {
    let (clock, server, guard) = fixture().await;
    let base = serve(api(&guard)).await;
    let login = clock.unix_seconds();
    let token = token_with(
        &server,
        &clock,
        json!({}),
        json!({ "acr": "mfa", "auth_time": login }),
    );
    clock.advance(Duration::from_secs(300));
    assert_eq!(get_with(format!("{base}/pay"), &token).await.status(), 200);
    clock.advance(Duration::from_secs(1));
    let (status, challenge, _) = status_and_challenge(format!("{base}/pay"), &token).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("max_age=\"300\""), "{challenge}");

    let no_auth_time = token_with(&server, &clock, json!({}), json!({ "acr": "mfa" }));
    let (status, challenge, _) = status_and_challenge(format!("{base}/pay"), &no_auth_time).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("max_age=\"300\""), "{challenge}");
}

#[tokio::test]
async fn scope_is_checked_before_step_up() {
    let (clock, server, guard) = fixture().await;
    let base = serve(api(&guard)).await;
    let now = clock.unix_seconds();
    let token = token_with(
        &server,
        &clock,
        json!({}),
        json!({ "scope": "orders:write", "acr": "pwd", "auth_time": now }),
    );
    let (status, challenge, _) = status_and_challenge(format!("{base}/pay"), &token).await;
    assert_eq!(
        status, 403,
        "no step-up prompt for a token that lacks the scope"
    );
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
}

#[test]
fn acr_values_must_be_scope_like_tokens() {
    assert!(Require::try_acr_in(["mfa"]).is_ok());
    assert!(Require::try_acr_in(["a\"b"]).is_err());
    assert!(Require::try_acr_in(Vec::<String>::new()).is_err());
}

#[tokio::test]
async fn a_claim_name_with_dots_is_read_whole_before_as_a_path() {
    let (clock, server, guard) = fixture().await;
    let app = Router::new()
        .route(
            "/",
            get(|| async { "ok" }).route_layer(Require::claim_contains_any(
                "https://acme.example/roles",
                ["admin"],
            )),
        )
        .layer(guard.layer());
    let base = serve(app).await;
    let namespaced = token_with(
        &server,
        &clock,
        json!({}),
        json!({ "https://acme.example/roles": ["admin"] }),
    );
    assert_eq!(
        get_with(format!("{base}/"), &namespaced).await.status(),
        200
    );
    let other = token_with(&server, &clock, json!({}), json!({ "roles": ["admin"] }));
    assert_eq!(get_with(format!("{base}/"), &other).await.status(), 403);
}
