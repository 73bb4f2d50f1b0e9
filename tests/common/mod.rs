//! Shared by the integration tests: an authorization server, a guard pointed at
//! it, and a small protected axum API, all on 127.0.0.1 with free ports.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bearer_guard::authz_server::{
    AuthorizationServer, AuthorizationServerBuilder, AuthorizationServerHandle, ClientConfig,
    SignWith,
};
use bearer_guard::clock::{Clock, ManualClock};
use bearer_guard::{Guard, GuardBuilder, Issuer, RequireScope, VerifiedToken};
use serde_json::{Value, json};

mod static_keys;
pub use static_keys::*;

#[cfg(feature = "ext-authz")]
pub mod checks;
#[cfg(feature = "redis")]
pub mod redis;

pub const API: &str = "https://api.example.com";
pub const OTHER_API: &str = "https://other.example.com";

/// An authorization server with a confidential client `svc`, a public client `spa`
/// and the user alice, on `clock`.
pub async fn authz_server(
    clock: &ManualClock,
    configure: impl FnOnce(AuthorizationServerBuilder) -> AuthorizationServerBuilder,
) -> AuthorizationServerHandle {
    let builder = AuthorizationServer::builder()
        .client(
            ClientConfig::confidential("svc", "svc-secret").scopes(["orders:read", "orders:write"]),
        )
        .client(ClientConfig::confidential("reader", "reader-secret").scopes(["orders:read"]))
        .client(
            ClientConfig::public("spa")
                .redirect_uri("http://127.0.0.1:3000/cb")
                .scopes(["orders:read"]),
        )
        .user("alice", "wonderland")
        .audience(API)
        .resource(OTHER_API)
        .clock(clock.clone());
    configure(builder)
        .start()
        .await
        .expect("authorization server starts")
}

/// A guard builder for `server`'s issuer and its JWKS, on `clock`.
pub fn guard_builder(server: &AuthorizationServerHandle, clock: &ManualClock) -> GuardBuilder {
    Guard::builder()
        .issuer(Issuer::new(server.issuer()).jwks_uri(server.jwks_uri()))
        .audience(API)
        .realm("orders")
        .clock(clock.clone())
}

/// `GET /orders` needs orders:read, `POST /orders` needs orders:write,
/// `GET /me` echoes the verified token.
pub fn orders_api(guard: &Guard) -> Router {
    Router::new()
        .route(
            "/orders",
            get(|| async { "orders" })
                .route_layer(RequireScope::any(["orders:read", "orders:admin"]))
                .merge(
                    axum::routing::post(|| async { "created" })
                        .route_layer(RequireScope::all(["orders:write"])),
                ),
        )
        .route(
            "/me",
            get(|t: VerifiedToken| async move {
                axum::Json(json!({
                    "iss": t.issuer(),
                    "sub": t.subject(),
                    "client_id": t.client_id(),
                    "scope": t.scopes().to_string(),
                    "kid": t.key_id(),
                    "alg": t.algorithm().map(|a| a.as_str()),
                }))
            }),
        )
        .layer(guard.layer())
}

/// Serves `app` on 127.0.0.1 and returns its base URL.
pub async fn serve(app: Router) -> String {
    format!("http://{}", spawn_app(app).await)
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The usual test world: a manual clock, the bundled server on it, and a guard
/// trusting that server.
pub async fn fixture() -> (ManualClock, AuthorizationServerHandle, Guard) {
    fixture_with(|g| g).await
}

/// [`fixture`] with the guard's builder adjusted by `configure`.
pub async fn fixture_with(
    configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
) -> (ManualClock, AuthorizationServerHandle, Guard) {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let guard = configure(guard_builder(&server, &clock))
        .build()
        .expect("guard");
    (clock, server, guard)
}

/// A client-credentials token for `svc` with scope `orders:read`.
pub async fn svc_token(server: &AuthorizationServerHandle) -> String {
    server
        .client_credentials_token("svc", &["orders:read"])
        .await
        .expect("svc gets a token")
}

/// The token problem of a refusal; panics (failing the test) on anything else.
pub fn problem(
    r: Result<VerifiedToken, bearer_guard::AuthError>,
) -> bearer_guard::error::TokenProblem {
    match r {
        Err(bearer_guard::AuthError::InvalidToken(p)) => p,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

/// `GET url` with a bearer token, answered with JSON.
pub async fn get_json_with(url: impl reqwest::IntoUrl, token: &str) -> Value {
    get_with(url, token)
        .await
        .json()
        .await
        .expect("a JSON body")
}

/// `GET url` with a bearer token.
pub async fn get_with(url: impl reqwest::IntoUrl, token: &str) -> reqwest::Response {
    http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("GET")
}

/// `POST url` with a bearer token.
pub async fn post_with(url: impl reqwest::IntoUrl, token: &str) -> reqwest::Response {
    http()
        .post(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("POST")
}

/// Standard RFC 9068 claims for `server`, valid for 5 minutes from `clock`.
pub fn claims(server: &AuthorizationServerHandle, clock: &ManualClock) -> Value {
    let now = clock.unix_seconds();
    json!({
        "iss": server.issuer(),
        "sub": "alice",
        "aud": API,
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": format!("jti-{now}"),
        "client_id": "svc",
        "scope": "orders:read",
    })
}

/// A token signed by the server's active key with these claim changes (a `null`
/// value removes the claim).
pub fn token_with(
    server: &AuthorizationServerHandle,
    clock: &ManualClock,
    header: Value,
    changes: Value,
) -> String {
    let mut c = claims(server, clock);
    if let (Some(map), Some(changes)) = (c.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    server.mint(header, c, SignWith::Active)
}

pub fn at(clock: &ManualClock, secs: u64) {
    clock.advance(Duration::from_secs(secs));
}

/// A token of `server` bound to `key` (`cnf.jkt`, RFC 9449 §6).
pub fn dpop_bound_token(
    server: &AuthorizationServerHandle,
    clock: &ManualClock,
    key: &bearer_guard::authz_server::DpopKey,
) -> String {
    token_with(
        server,
        clock,
        json!({}),
        json!({"cnf": {"jkt": key.thumbprint()}}),
    )
}

/// DPoP credentials on a request: `Authorization: DPoP <token>` and one proof.
pub trait DpopRequest {
    /// Adds the token with the DPoP scheme and the `DPoP` proof header.
    fn dpop(self, token: &str, proof: impl AsRef<str>) -> Self;
}

impl DpopRequest for reqwest::RequestBuilder {
    fn dpop(self, token: &str, proof: impl AsRef<str>) -> Self {
        self.header("authorization", format!("DPoP {token}"))
            .header("dpop", proof.as_ref())
    }
}
