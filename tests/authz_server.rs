//! The bundled authorization server, exercised over real HTTP on 127.0.0.1.

use std::time::Duration;

use bearer_guard::authz_server::{
    AuthorizationServer, AuthorizationServerBuilder, AuthorizationServerHandle, ClientConfig,
    JwksBehavior, SigningAlgorithm,
};
use bearer_guard::clock::{Clock, ManualClock};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, TokenData, Validation, decode, decode_header};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, HeaderMap, LOCATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};

const API: &str = "https://api.example.com";
const OTHER_API: &str = "https://other.example.com";
const REDIRECT: &str = "http://127.0.0.1:3000/cb";

async fn start_with(
    clock: &ManualClock,
    alg: SigningAlgorithm,
    configure: impl FnOnce(AuthorizationServerBuilder) -> AuthorizationServerBuilder,
) -> AuthorizationServerHandle {
    let builder = AuthorizationServer::builder()
        .client(
            ClientConfig::confidential("svc", "svc-secret").scopes(["orders:read", "orders:write"]),
        )
        .client(
            ClientConfig::public("spa")
                .redirect_uri(REDIRECT)
                .scopes(["orders:read", "profile"]),
        )
        .client(
            ClientConfig::confidential("web", "web secret&=")
                .redirect_uri("http://127.0.0.1:4000/cb?tenant=a")
                .scopes(["orders:read"]),
        )
        .user("alice", "wonderland")
        .audience(API)
        .resource(OTHER_API)
        .access_token_lifetime(Duration::from_secs(300))
        .signing_algorithm(alg)
        .clock(clock.clone());
    configure(builder).start().await.expect("server starts")
}

async fn start(clock: &ManualClock) -> AuthorizationServerHandle {
    start_with(clock, SigningAlgorithm::Rs256, |b| b).await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("client")
}

async fn get_json(url: &str) -> (StatusCode, HeaderMap, Value) {
    let response = http().get(url).send().await.expect("GET");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

async fn jwks(server: &AuthorizationServerHandle) -> JwkSet {
    let (status, _, body) = get_json(&server.jwks_uri()).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_value(body).expect("a JWK set")
}

/// Verifies `token` against the server's `/jwks` the way a resource server would.
async fn verify(server: &AuthorizationServerHandle, token: &str, aud: &str) -> TokenData<Value> {
    let header = decode_header(token).expect("header");
    let kid = header.kid.clone().expect("kid");
    let keys = jwks(server).await;
    let jwk = keys.find(&kid).expect("kid is published");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[server.issuer()]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
    decode(
        token,
        &DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("token verifies")
}

/// POSTs a form to `/token`, optionally with HTTP Basic client authentication.
async fn token_request(
    server: &AuthorizationServerHandle,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut request = http().post(server.token_endpoint()).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.expect("POST /token");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

/// A client-credentials request by `svc` (HTTP Basic) with `extra` parameters.
async fn svc_token(
    server: &AuthorizationServerHandle,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend_from_slice(extra);
    let (status, _, body) = token_request(server, Some(("svc", "svc-secret")), &form).await;
    (status, body)
}

#[track_caller]
fn assert_oauth_error(response: &(StatusCode, Value), status: StatusCode, error: &str) {
    assert_eq!(response.0, status, "{}", response.1);
    assert_eq!(error_of(&response.1), error, "{}", response.1);
}

// ---------------------------------------------------------------- discovery

#[tokio::test]
async fn publishes_rfc8414_and_openid_metadata() {
    let server = start(&ManualClock::starting_now()).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let (status, _, doc) = get_json(&format!("{}{path}", server.issuer())).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(doc["issuer"], server.issuer());
        assert!(!server.issuer().ends_with('/'));
        assert_eq!(
            doc["authorization_endpoint"],
            server.authorization_endpoint()
        );
        assert_eq!(doc["token_endpoint"], server.token_endpoint());
        assert_eq!(doc["jwks_uri"], server.jwks_uri());
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        assert_eq!(
            doc["grant_types_supported"],
            json!(["authorization_code", "client_credentials", "refresh_token"])
        );
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post", "none"])
        );
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            doc["scopes_supported"],
            json!(["orders:read", "orders:write", "profile"])
        );
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    }
    assert_eq!(server.issuer(), format!("http://{}", server.local_addr()));
}

// ---------------------------------------------------------------- jwks

#[tokio::test]
async fn jwks_describes_each_algorithms_public_key() {
    let clock = ManualClock::starting_now();
    for (alg, expected) in [
        (
            SigningAlgorithm::Rs256,
            json!({"kty": "RSA", "alg": "RS256", "e": "AQAB"}),
        ),
        (
            SigningAlgorithm::Es256,
            json!({"kty": "EC", "alg": "ES256", "crv": "P-256"}),
        ),
        (
            SigningAlgorithm::EdDsa,
            json!({"kty": "OKP", "alg": "EdDSA", "crv": "Ed25519"}),
        ),
    ] {
        let server = start_with(&clock, alg, |b| b).await;
        let (status, headers, body) = get_json(&server.jwks_uri()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CACHE_CONTROL], "public, max-age=600");
        let keys = body["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1);
        let key = &keys[0];
        assert_eq!(key["kid"], server.active_kid());
        assert_eq!(key["use"], "sig");
        for (member, value) in expected.as_object().expect("object") {
            assert_eq!(&key[member], value, "{alg:?} {member}");
        }
        let coordinates: &[&str] = match alg {
            SigningAlgorithm::Rs256 => &["n"],
            SigningAlgorithm::Es256 => &["x", "y"],
            SigningAlgorithm::EdDsa => &["x"],
        };
        for member in coordinates {
            assert!(
                key[*member].as_str().is_some_and(|v| !v.is_empty()),
                "{member}"
            );
        }
        assert!(key.get("d").is_none(), "no private material");
        // and a token it signs verifies against it
        let token = server
            .client_credentials_token("svc", &["orders:read"])
            .await
            .expect("token");
        verify(&server, &token, API).await;
    }
}

#[tokio::test]
async fn jwks_cache_control_is_configurable_or_absent() {
    let clock = ManualClock::starting_now();
    let server = start_with(&clock, SigningAlgorithm::EdDsa, |b| {
        b.jwks_max_age(Duration::from_secs(42))
    })
    .await;
    let (_, headers, _) = get_json(&server.jwks_uri()).await;
    assert_eq!(headers[CACHE_CONTROL], "public, max-age=42");

    let server = start_with(&clock, SigningAlgorithm::EdDsa, |b| {
        b.without_jwks_cache_control()
    })
    .await;
    let (_, headers, _) = get_json(&server.jwks_uri()).await;
    assert!(headers.get(CACHE_CONTROL).is_none());
}

#[tokio::test]
async fn jwks_behaviors_and_fetch_count() {
    let server = start_with(&ManualClock::starting_now(), SigningAlgorithm::EdDsa, |b| b).await;
    let client = http();
    let get = |client: &reqwest::Client| client.get(server.jwks_uri()).send();

    server.set_jwks_behavior(JwksBehavior::Status(503));
    assert_eq!(
        get(&client).await.expect("GET").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    server.set_jwks_behavior(JwksBehavior::Garbage("{not json".into()));
    let response = get(&client).await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "{not json");

    server.set_jwks_behavior(JwksBehavior::EmptySet);
    let body: Value = get(&client).await.expect("GET").json().await.expect("json");
    assert_eq!(body, json!({"keys": []}));

    server.set_jwks_behavior(JwksBehavior::Oversized(100_000));
    let body = get(&client)
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert!(body.len() >= 100_000);
    let body: Value = serde_json::from_slice(&body).expect("still valid JSON");
    assert_eq!(body["keys"][0]["kid"], server.active_kid());

    server.set_jwks_behavior(JwksBehavior::RedirectTo("http://evil.example/jwks".into()));
    let response = get(&client).await.expect("GET");
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[LOCATION], "http://evil.example/jwks");

    server.set_jwks_behavior(JwksBehavior::Delay(Duration::from_secs(30)));
    let slow = client
        .get(server.jwks_uri())
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(slow.is_err_and(|e| e.is_timeout()));

    server.set_jwks_behavior(JwksBehavior::Normal);
    let set: JwkSet = get(&client).await.expect("GET").json().await.expect("json");
    assert_eq!(set.keys.len(), 1);

    assert_eq!(server.jwks_fetch_count(), 7);
}

#[tokio::test]
async fn jwks_delay_returns_keys_after_waiting() {
    let server = start_with(&ManualClock::starting_now(), SigningAlgorithm::EdDsa, |b| b).await;
    server.set_jwks_behavior(JwksBehavior::Delay(Duration::from_millis(20)));
    assert_eq!(jwks(&server).await.keys.len(), 1);
}

// ---------------------------------------------------------------- client credentials

#[tokio::test]
async fn client_credentials_with_basic_auth_issues_an_rfc9068_token() {
    let clock = ManualClock::starting_now();
    let server = start(&clock).await;
    let (status, headers, body) = token_request(
        &server,
        Some(("svc", "svc-secret")),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "orders:read"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "orders:read");
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for client_credentials"
    );

    let token = body["access_token"].as_str().expect("access_token");
    let data = verify(&server, token, API).await;
    assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(data.header.alg, Algorithm::RS256);
    assert_eq!(
        data.header.kid.as_deref(),
        Some(server.active_kid().as_str())
    );
    let claims = data.claims;
    let now = clock.unix_seconds();
    assert_eq!(claims["iss"], server.issuer());
    assert_eq!(claims["sub"], "svc");
    assert_eq!(claims["client_id"], "svc");
    assert_eq!(claims["aud"], API);
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["nbf"], now);
    assert_eq!(claims["exp"], now + 300);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
}

#[tokio::test]
async fn client_credentials_with_post_auth_defaults_to_all_allowed_scopes() {
    let server = start(&ManualClock::starting_now()).await;
    let (status, _, body) = token_request(
        &server,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "svc-secret"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "orders:read orders:write");
}

#[tokio::test]
async fn basic_credentials_are_form_urlencoded_inside_base64() {
    let server = start(&ManualClock::starting_now()).await;
    // "web secret&=" form-urlencoded, per RFC 6749 §2.3.1
    let (status, _, body) = token_request(
        &server,
        Some(("web", "web+secret%26%3D")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn wrong_secret_is_401_invalid_client_with_a_basic_challenge() {
    let server = start(&ManualClock::starting_now()).await;
    for (basic, form) in [
        (
            Some(("svc", "nope")),
            vec![("grant_type", "client_credentials")],
        ),
        (
            Some(("ghost", "x")),
            vec![("grant_type", "client_credentials")],
        ),
        (
            None,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "svc"),
                ("client_secret", "nope"),
            ],
        ),
        // a confidential client must authenticate
        (
            None,
            vec![("grant_type", "client_credentials"), ("client_id", "svc")],
        ),
        (None, vec![("grant_type", "client_credentials")]),
    ] {
        let (status, headers, body) = token_request(&server, basic, &form).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{form:?}");
        assert_eq!(error_of(&body), "invalid_client");
        assert!(
            headers[WWW_AUTHENTICATE]
                .to_str()
                .is_ok_and(|v| v.starts_with("Basic realm=")),
        );
        assert!(!body.to_string().contains("nope"), "never echo a secret");
    }
}

#[tokio::test]
async fn both_basic_and_post_authentication_is_invalid_request() {
    let server = start(&ManualClock::starting_now()).await;
    let response = svc_token(&server, &[("client_secret", "svc-secret")]).await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn public_clients_cannot_use_client_credentials() {
    let server = start(&ManualClock::starting_now()).await;
    let (status, _, body) = token_request(
        &server,
        None,
        &[("grant_type", "client_credentials"), ("client_id", "spa")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&body), "unauthorized_client");
}

#[tokio::test]
async fn scope_outside_the_clients_allowance_is_invalid_scope() {
    let server = start(&ManualClock::starting_now()).await;
    let response = svc_token(&server, &[("scope", "orders:read admin")]).await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_scope");
}

#[tokio::test]
async fn resource_selects_a_registered_audience() {
    let server = start(&ManualClock::starting_now()).await;
    let (status, body) = svc_token(&server, &[("resource", OTHER_API)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().expect("token");
    let claims = verify(&server, token, OTHER_API).await.claims;
    assert_eq!(claims["aud"], OTHER_API);

    let response = svc_token(&server, &[("resource", "https://evil.example")]).await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_target");
}

#[tokio::test]
async fn unknown_grant_type_is_unsupported_grant_type() {
    let server = start(&ManualClock::starting_now()).await;
    let form = [("grant_type", "password"), ("username", "alice")];
    let (status, _, body) = token_request(&server, Some(("svc", "svc-secret")), &form).await;
    assert_oauth_error(
        &(status, body),
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    );
}

#[tokio::test]
async fn malformed_or_repeated_parameters_are_400_invalid_request() {
    let server = start(&ManualClock::starting_now()).await;
    let client = http();
    for (content_type, body) in [
        ("application/x-www-form-urlencoded", &b"\xff\xfe%%%&&=="[..]),
        ("application/x-www-form-urlencoded", b""),
        (
            "application/json",
            br#"{"grant_type":"client_credentials"}"#,
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&grant_type=client_credentials",
        ),
    ] {
        let response = client
            .post(server.token_endpoint())
            .basic_auth("svc", Some("svc-secret"))
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.expect("json error");
        assert_eq!(error_of(&body), "invalid_request");
        assert!(body["error_description"].is_string());
    }
}

#[tokio::test]
async fn client_credentials_token_helper_reports_oauth_errors() {
    let server = start(&ManualClock::starting_now()).await;
    let error = server
        .client_credentials_token("svc", &["admin"])
        .await
        .expect_err("scope not allowed");
    assert!(error.to_string().contains("invalid_scope"), "{error}");
}
