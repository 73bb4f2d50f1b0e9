//! The bundled authorization server, exercised over real HTTP on 127.0.0.1.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard::authz_server::{
    AuthorizationServer, AuthorizationServerBuilder, AuthorizationServerHandle, ClientConfig,
    JwksBehavior, SignWith, SigningAlgorithm,
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
    let debug = format!("{server:?}");
    assert!(!debug.contains("wonderland") && !debug.contains("svc-secret"));
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
            SigningAlgorithm::Es512,
            json!({"kty": "EC", "alg": "ES512", "crv": "P-521"}),
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
            SigningAlgorithm::Es256 | SigningAlgorithm::Es512 => &["x", "y"],
            SigningAlgorithm::EdDsa => &["x"],
            other => panic!("no JWKS shape written for {other:?}"),
        };
        for member in coordinates {
            assert!(
                key[*member].as_str().is_some_and(|v| !v.is_empty()),
                "{member}"
            );
        }
        assert!(key.get("d").is_none(), "no private material");
        // and a token it signs verifies against it (jsonwebtoken has no ES512:
        // tests/es512.rs checks those tokens through the guard)
        let token = server
            .client_credentials_token("svc", &["orders:read"])
            .await
            .expect("token");
        if alg != SigningAlgorithm::Es512 {
            verify(&server, &token, API).await;
        }
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

// ---------------------------------------------------------------- authorization code + PKCE

/// RFC 7636 Appendix B test vector.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const STATE: &str = "xyz 123&=<>";

/// The `/authorize` URL for `spa`, with some parameters replaced (`Some`) or dropped (`None`).
fn authorize_url(
    server: &AuthorizationServerHandle,
    changes: &[(&str, Option<&str>)],
) -> reqwest::Url {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", "spa"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("scope", "orders:read"),
        ("state", STATE),
    ];
    for (name, value) in changes {
        params.retain(|(n, _)| n != name);
        if let Some(value) = value {
            params.push((name, value));
        }
    }
    reqwest::Url::parse_with_params(&server.authorization_endpoint(), &params).expect("url")
}

/// The value of a hidden form field in one of the server's pages.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).map(|i| i + marker.len()).expect(name);
    html[start..].split('"').next().expect("value").to_owned()
}

/// A browser: keeps cookies, does not follow redirects.
struct Browser {
    http: reqwest::Client,
    issuer: String,
}

impl Browser {
    fn new(server: &AuthorizationServerHandle) -> Self {
        Self {
            http: http(),
            issuer: server.issuer().to_owned(),
        }
    }

    async fn get(&self, url: reqwest::Url) -> (StatusCode, HeaderMap, String) {
        let response = self.http.get(url).send().await.expect("GET");
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.text().await.expect("text"))
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let url = format!("{}{path}", self.issuer);
        let response = self.http.post(url).form(form).send().await.expect("POST");
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.text().await.expect("text"))
    }

    /// Submits the login form on `page` with these credentials.
    async fn login(
        &self,
        page: &str,
        user: &str,
        password: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let (request, csrf) = (hidden(page, "request"), hidden(page, "csrf"));
        let form = [
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("username", user),
            ("password", password),
        ];
        self.post("/login", &form).await
    }

    /// Answers the consent form on `page`.
    async fn consent(&self, page: &str, decision: &str) -> (StatusCode, HeaderMap, String) {
        let (request, csrf) = (hidden(page, "request"), hidden(page, "csrf"));
        let form = [
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("decision", decision),
        ];
        self.post("/consent", &form).await
    }

    /// Login as alice and answer consent; returns the redirect back to the client.
    async fn authorize(&self, url: reqwest::Url, decision: &str) -> reqwest::Url {
        let (status, _, login_page) = self.get(url).await;
        assert_eq!(status, StatusCode::OK, "{login_page}");
        let (status, _, consent_page) = self.login(&login_page, "alice", "wonderland").await;
        assert_eq!(status, StatusCode::OK, "{consent_page}");
        let (status, headers, _) = self.consent(&consent_page, decision).await;
        assert_eq!(status, StatusCode::FOUND);
        location(&headers)
    }
}

fn location(headers: &HeaderMap) -> reqwest::Url {
    let location = headers[LOCATION].to_str().expect("ascii");
    reqwest::Url::parse(location).expect("absolute URL")
}

fn query(url: &reqwest::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// Exchanges `code` at `/token` as the public client `spa`.
async fn redeem(
    server: &AuthorizationServerHandle,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", "spa"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", redirect_uri),
    ];
    let (status, _, body) = token_request(server, None, &form).await;
    (status, body)
}

/// A fresh code for `spa`, obtained through the browser flow.
async fn code_for_spa(server: &AuthorizationServerHandle) -> String {
    let back = Browser::new(server)
        .authorize(authorize_url(server, &[]), "allow")
        .await;
    query(&back, "code").expect("code")
}

async fn refresh(
    server: &AuthorizationServerHandle,
    token: &str,
    scope: Option<&str>,
) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", "spa"),
        ("refresh_token", token),
    ];
    form.extend(scope.map(|s| ("scope", s)));
    let (status, _, body) = token_request(server, None, &form).await;
    (status, body)
}

/// The claims of a compact JWS, read without verifying it.
fn payload_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    let payload = URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&payload).expect("json")
}

fn jti_of(token: &str) -> String {
    payload_of(token)["jti"].as_str().expect("jti").to_owned()
}

#[tokio::test]
async fn authorization_code_flow_with_pkce_issues_tokens() {
    let server = start(&ManualClock::starting_now()).await;
    let browser = Browser::new(&server);
    let (status, headers, login_page) = browser.get(authorize_url(&server, &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[reqwest::header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|v| v.starts_with("text/html"))
    );
    assert!(login_page.contains("type=\"password\"") && !login_page.contains("<script"));

    let (status, headers, consent_page) = browser.login(&login_page, "alice", "wonderland").await;
    assert_eq!(status, StatusCode::OK);
    let cookie = headers[reqwest::header::SET_COOKIE]
        .to_str()
        .expect("cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(consent_page.contains("spa") && consent_page.contains("orders:read"));

    let (status, headers, _) = browser.consent(&consent_page, "allow").await;
    assert_eq!(status, StatusCode::FOUND);
    let back = location(&headers);
    assert!(back.as_str().starts_with(REDIRECT));
    assert_eq!(query(&back, "state").as_deref(), Some(STATE));
    assert_eq!(query(&back, "iss").as_deref(), Some(server.issuer()));
    let code = query(&back, "code").expect("code");

    let (status, body) = redeem(&server, &code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "orders:read");
    assert!(body["refresh_token"].is_string());
    let claims = verify(&server, body["access_token"].as_str().expect("token"), API)
        .await
        .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], "spa");
    assert_eq!(claims["scope"], "orders:read");
}

#[tokio::test]
async fn state_is_omitted_when_not_sent_and_redirect_query_is_kept() {
    let server = start(&ManualClock::starting_now()).await;
    let browser = Browser::new(&server);
    let url = authorize_url(
        &server,
        &[
            ("client_id", Some("web")),
            ("redirect_uri", Some("http://127.0.0.1:4000/cb?tenant=a")),
            ("state", None),
        ],
    );
    let back = browser.authorize(url, "allow").await;
    assert_eq!(query(&back, "tenant").as_deref(), Some("a"));
    assert_eq!(query(&back, "state"), None);
    assert!(query(&back, "code").is_some());
}

#[tokio::test]
async fn signed_in_browser_goes_straight_to_consent() {
    let server = start(&ManualClock::starting_now()).await;
    let browser = Browser::new(&server);
    browser
        .authorize(authorize_url(&server, &[]), "allow")
        .await;
    let (status, _, page) = browser.get(authorize_url(&server, &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("name=\"decision\""), "{page}");
    let (status, headers, _) = browser.consent(&page, "allow").await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(query(&location(&headers), "code").is_some());
}

#[tokio::test]
async fn wrong_code_verifier_is_invalid_grant() {
    let server = start(&ManualClock::starting_now()).await;
    let code = code_for_spa(&server).await;
    let wrong = "x".repeat(43);
    let response = redeem(&server, &code, &wrong, REDIRECT).await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn mismatched_redirect_uri_at_token_is_invalid_grant() {
    let server = start(&ManualClock::starting_now()).await;
    let code = code_for_spa(&server).await;
    let response = redeem(&server, &code, VERIFIER, "http://127.0.0.1:3000/other").await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn reused_code_fails_and_revokes_what_the_first_redemption_issued() {
    let server = start(&ManualClock::starting_now()).await;
    let code = code_for_spa(&server).await;
    let (status, first) = redeem(&server, &code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::OK);
    let response = redeem(&server, &code, VERIFIER, REDIRECT).await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_grant");

    assert!(server.is_revoked(&jti_of(first["access_token"].as_str().expect("token"))));
    let response = refresh(
        &server,
        first["refresh_token"].as_str().expect("refresh"),
        None,
    )
    .await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn code_expires_after_sixty_seconds_on_the_injected_clock() {
    let clock = ManualClock::starting_now();
    let server = start(&clock).await;
    let code = code_for_spa(&server).await;
    clock.advance(Duration::from_secs(61));
    let response = redeem(&server, &code, VERIFIER, REDIRECT).await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn confidential_clients_must_authenticate_to_redeem_a_code() {
    let server = start(&ManualClock::starting_now()).await;
    let redirect = "http://127.0.0.1:4000/cb?tenant=a";
    let url = authorize_url(
        &server,
        &[("client_id", Some("web")), ("redirect_uri", Some(redirect))],
    );
    let back = Browser::new(&server).authorize(url, "allow").await;
    let code = query(&back, "code").expect("code");
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", "web"),
        ("code", code.as_str()),
        ("code_verifier", VERIFIER),
        ("redirect_uri", redirect),
    ];
    let (status, _, body) = token_request(&server, None, &form).await;
    assert_oauth_error(&(status, body), StatusCode::UNAUTHORIZED, "invalid_client");
    form.push(("client_secret", "web secret&="));
    let (status, _, body) = token_request(&server, None, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Errors reported back to the client carry `error`, `state` and `iss`.
#[tokio::test]
async fn authorize_request_errors_redirect_to_the_client() {
    let server = start(&ManualClock::starting_now()).await;
    let browser = Browser::new(&server);
    for (changes, error) in [
        (
            vec![("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (vec![("code_challenge_method", None)], "invalid_request"),
        (vec![("code_challenge", None)], "invalid_request"),
        (
            vec![("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (vec![("scope", Some("orders:write"))], "invalid_scope"),
        (
            vec![("resource", Some("https://evil.example"))],
            "invalid_target",
        ),
    ] {
        let (status, headers, _) = browser.get(authorize_url(&server, &changes)).await;
        assert_eq!(status, StatusCode::FOUND, "{changes:?}");
        let back = location(&headers);
        assert!(back.as_str().starts_with(REDIRECT));
        assert_eq!(query(&back, "error").as_deref(), Some(error), "{changes:?}");
        assert!(query(&back, "error_description").is_some());
        assert_eq!(query(&back, "state").as_deref(), Some(STATE));
        assert_eq!(query(&back, "iss").as_deref(), Some(server.issuer()));
    }
}

/// Until client and redirect URI are known to match, nothing is redirected.
#[tokio::test]
async fn unknown_client_or_redirect_uri_shows_an_error_page() {
    let server = start(&ManualClock::starting_now()).await;
    let browser = Browser::new(&server);
    for changes in [
        vec![("client_id", Some("ghost<script>"))],
        vec![("client_id", None)],
        vec![("redirect_uri", Some("https://evil.example/cb"))],
        vec![("redirect_uri", Some("http://127.0.0.1:3000/cb/"))],
        vec![("redirect_uri", None)],
    ] {
        let (status, headers, page) = browser.get(authorize_url(&server, &changes)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{changes:?}");
        assert!(headers.get(LOCATION).is_none());
        assert!(!page.contains("<script>"), "echoed values are escaped");
    }
}

#[tokio::test]
async fn denying_consent_redirects_with_access_denied() {
    let server = start(&ManualClock::starting_now()).await;
    let back = Browser::new(&server)
        .authorize(authorize_url(&server, &[]), "deny")
        .await;
    assert_eq!(query(&back, "error").as_deref(), Some("access_denied"));
    assert_eq!(query(&back, "state").as_deref(), Some(STATE));
    assert_eq!(query(&back, "iss").as_deref(), Some(server.issuer()));
    assert_eq!(query(&back, "code"), None);
}

#[tokio::test]
async fn wrong_password_shows_the_login_page_again() {
    let server = start(&ManualClock::starting_now()).await;
    let browser = Browser::new(&server);
    let (_, _, page) = browser.get(authorize_url(&server, &[])).await;
    let (status, headers, again) = browser.login(&page, "alice", "nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get(LOCATION).is_none() && headers.get(reqwest::header::SET_COOKIE).is_none());
    assert!(again.contains("Wrong username or password") && again.contains("type=\"password\""));
    // and the same form still works
    let (status, _, consent) = browser.login(&again, "alice", "wonderland").await;
    assert_eq!(status, StatusCode::OK);
    assert!(consent.contains("name=\"decision\""));
}

#[tokio::test]
async fn forms_without_their_csrf_token_are_refused() {
    let server = start(&ManualClock::starting_now()).await;
    let browser = Browser::new(&server);
    let (_, _, page) = browser.get(authorize_url(&server, &[])).await;
    let request = hidden(&page, "request");
    let login = [
        ("request", request.as_str()),
        ("username", "alice"),
        ("password", "wonderland"),
    ];
    let (status, headers, _) = browser.post("/login", &login).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(headers.get(reqwest::header::SET_COOKIE).is_none());

    let (_, _, consent) = browser.login(&page, "alice", "wonderland").await;
    let request = hidden(&consent, "request");
    for form in [
        vec![("request", request.as_str()), ("decision", "allow")],
        vec![
            ("request", request.as_str()),
            ("decision", "allow"),
            ("csrf", "forged"),
        ],
    ] {
        let (status, headers, _) = browser.post("/consent", &form).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN,
            "{status}"
        );
        assert!(headers.get(LOCATION).is_none());
    }
    // a different browser (no session cookie) cannot answer either
    let (status, headers, _) = Browser::new(&server).consent(&consent, "allow").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(LOCATION).is_none());
}

/// RFC 6749 §10.12: browser B posting the login form browser A was shown
/// (the attacker's own form, in the victim's browser) is refused, whether B
/// has a browser cookie of its own or none; A's own post still signs in.
#[tokio::test]
async fn login_form_values_are_refused_in_another_browser() {
    let server = start(&ManualClock::starting_now()).await;
    let a = Browser::new(&server);
    let (_, _, page) = a.get(authorize_url(&server, &[])).await;

    let fresh = Browser::new(&server);
    let visited = Browser::new(&server);
    visited.get(authorize_url(&server, &[])).await;
    for b in [&fresh, &visited] {
        let (status, headers, body) = b.login(&page, "alice", "wonderland").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            headers.get(reqwest::header::SET_COOKIE).is_none(),
            "no session"
        );
        assert!(!body.contains("name=\"decision\""), "not signed in: {body}");
    }

    let (status, _, consent) = a.login(&page, "alice", "wonderland").await;
    assert_eq!(status, StatusCode::OK);
    assert!(consent.contains("name=\"decision\""));
}

/// The browser cookie that CSRF tokens are bound to comes with the login page.
#[tokio::test]
async fn login_page_sets_an_http_only_same_site_browser_cookie() {
    let server = start(&ManualClock::starting_now()).await;
    let browser = Browser::new(&server);
    let (status, headers, _) = browser.get(authorize_url(&server, &[])).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = headers[reqwest::header::SET_COOKIE]
        .to_str()
        .expect("cookie");
    assert!(cookie.starts_with("bearer_guard_browser="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "the issuer is plain http");
    // A browser that already has one keeps it.
    let (_, headers, _) = browser.get(authorize_url(&server, &[])).await;
    assert!(headers.get(reqwest::header::SET_COOKIE).is_none());
}

/// A consent token answers only the request it was shown with, in its browser:
/// neither another pending request of the same signed-in browser, nor the same
/// request from another browser.
#[tokio::test]
async fn consent_token_answers_only_its_own_request_in_its_own_browser() {
    let server = start(&ManualClock::starting_now()).await;
    let browser = Browser::new(&server);
    browser
        .authorize(authorize_url(&server, &[]), "allow")
        .await;
    let (_, _, first) = browser.get(authorize_url(&server, &[])).await;
    let (_, _, second) = browser.get(authorize_url(&server, &[])).await;
    let form = [
        ("request", hidden(&second, "request")),
        ("csrf", hidden(&first, "csrf")),
        ("decision", "allow".to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, headers, _) = browser.post("/consent", &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(LOCATION).is_none());

    let (status, headers, _) = Browser::new(&server).consent(&second, "allow").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(LOCATION).is_none());

    let (status, headers, _) = browser.consent(&second, "allow").await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(query(&location(&headers), "code").is_some());
}

// ---------------------------------------------------------------- refresh tokens

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let server = start(&ManualClock::starting_now()).await;
    let code = code_for_spa(&server).await;
    let (_, first) = redeem(&server, &code, VERIFIER, REDIRECT).await;
    let r1 = first["refresh_token"].as_str().expect("refresh").to_owned();

    let (status, second) = refresh(&server, &r1, None).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let r2 = second["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(r1, r2);
    let access = second["access_token"].as_str().expect("token");
    assert_eq!(verify(&server, access, API).await.claims["sub"], "alice");

    let response = refresh(&server, &r1, None).await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_grant");
    let response = refresh(&server, &r2, None).await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(server.is_revoked(&jti_of(access)));
}

#[tokio::test]
async fn refresh_may_narrow_scope_but_never_widen_it() {
    let server = start(&ManualClock::starting_now()).await;
    let url = authorize_url(&server, &[("scope", Some("orders:read profile"))]);
    let back = Browser::new(&server).authorize(url, "allow").await;
    let (_, first) = redeem(
        &server,
        &query(&back, "code").expect("code"),
        VERIFIER,
        REDIRECT,
    )
    .await;
    assert_eq!(first["scope"], "orders:read profile");

    let (status, narrowed) = refresh(
        &server,
        first["refresh_token"].as_str().expect("r"),
        Some("profile"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{narrowed}");
    assert_eq!(narrowed["scope"], "profile");
    // the family keeps its original scope
    let r2 = narrowed["refresh_token"].as_str().expect("r2");
    let response = refresh(&server, r2, Some("orders:read orders:write")).await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_scope");
    let (status, again) = refresh(&server, r2, Some("orders:read profile")).await;
    assert_eq!(status, StatusCode::OK, "{again}");
}

/// A `/token` request refused for any reason leaves the code redeemable:
/// the corrected retry is not treated as a replay.
#[tokio::test]
async fn refused_code_exchange_consumes_nothing() {
    let server = start(&ManualClock::starting_now()).await;
    let code = code_for_spa(&server).await;
    let good = [
        ("grant_type", "authorization_code"),
        ("client_id", "spa"),
        ("code", code.as_str()),
        ("code_verifier", VERIFIER),
        ("redirect_uri", REDIRECT),
    ];
    let wrong_verifier = "x".repeat(43);
    for (name, value, error) in [
        ("resource", "https://evil.example", "invalid_target"),
        ("resource", OTHER_API, "invalid_target"),
        ("code_verifier", wrong_verifier.as_str(), "invalid_grant"),
        ("code_verifier", "short", "invalid_request"),
        (
            "redirect_uri",
            "http://127.0.0.1:3000/other",
            "invalid_grant",
        ),
        ("client_id", "web", "invalid_client"),
    ] {
        let mut form: Vec<(&str, &str)> =
            good.iter().filter(|(n, _)| *n != name).copied().collect();
        form.push((name, value));
        let (status, _, body) = token_request(&server, None, &form).await;
        assert_ne!(status, StatusCode::OK, "{name}={value}");
        assert_eq!(error_of(&body), error, "{name}={value}: {body}");
    }
    let (status, _, body) = token_request(&server, None, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().expect("token");
    assert!(!server.is_revoked(&jti_of(access)));
    // and the family it started is intact
    let (status, body) = refresh(&server, body["refresh_token"].as_str().expect("rt"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Concurrent redemptions of one code: exactly one succeeds, and because the
/// others are replays, what it issued is revoked (check and redeem are one step).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_of_one_code_issue_exactly_once() {
    let server = start(&ManualClock::starting_now()).await;
    let code = code_for_spa(&server).await;
    let attempts = (0..8).map(|_| redeem(&server, &code, VERIFIER, REDIRECT));
    let results = futures_util::future::join_all(attempts).await;
    let issued: Vec<&Value> = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(issued.len(), 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_oauth_error(
            &(*status, body.clone()),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        );
    }
    let access = issued[0]["access_token"].as_str().expect("token");
    assert!(server.is_revoked(&jti_of(access)));
}

/// A refused refresh request neither rotates nor revokes: the same refresh
/// token still works afterwards, and the family's tokens stay valid.
#[tokio::test]
async fn refused_refresh_request_rotates_and_revokes_nothing() {
    let server = start(&ManualClock::starting_now()).await;
    let code = code_for_spa(&server).await;
    let (_, first) = redeem(&server, &code, VERIFIER, REDIRECT).await;
    let r1 = first["refresh_token"].as_str().expect("refresh");
    let access = first["access_token"].as_str().expect("token");
    for (extra, error) in [
        (("scope", "orders:read orders:write"), "invalid_scope"),
        (("resource", "https://evil.example"), "invalid_target"),
        (("resource", OTHER_API), "invalid_target"),
        (("scope", "\"quoted\""), "invalid_scope"),
    ] {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", r1),
            extra,
        ];
        let (status, _, body) = token_request(&server, None, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra:?}: {body}");
        assert_eq!(error_of(&body), error, "{extra:?}");
    }
    let (status, _, body) = token_request(
        &server,
        Some(("web", "web secret&=")),
        &[("grant_type", "refresh_token"), ("refresh_token", r1)],
    )
    .await;
    assert_oauth_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_grant");

    assert!(!server.is_revoked(&jti_of(access)));
    let (status, second) = refresh(&server, r1, None).await;
    assert_eq!(status, StatusCode::OK, "{second}");
}

// ---------------------------------------------------------------- RFC conformance

/// RFC 8252 §7.3: a loopback redirect URI matches with any port, so a native
/// app can use whatever port the OS gave it; nothing else may differ, and
/// `localhost` gets no such exception.
#[tokio::test]
async fn loopback_redirect_uri_matches_with_any_port() {
    let server = start_with(&ManualClock::starting_now(), SigningAlgorithm::EdDsa, |b| {
        b.client(
            ClientConfig::public("native")
                .redirect_uri("http://[::1]/cb")
                .redirect_uri("http://localhost:3000/cb")
                .scopes(["orders:read"]),
        )
    })
    .await;
    for (client, redirect) in [
        ("spa", "http://127.0.0.1:49152/cb"),
        ("spa", "http://127.0.0.1/cb"),
        ("native", "http://[::1]:61000/cb"),
    ] {
        let url = authorize_url(
            &server,
            &[
                ("client_id", Some(client)),
                ("redirect_uri", Some(redirect)),
            ],
        );
        let back = Browser::new(&server).authorize(url, "allow").await;
        assert!(back.as_str().starts_with(redirect), "{back}");
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", client),
            ("code", &query(&back, "code").expect("code")),
            ("code_verifier", VERIFIER),
            ("redirect_uri", redirect),
        ];
        let (status, _, body) = token_request(&server, None, &form).await;
        assert_eq!(status, StatusCode::OK, "{redirect}: {body}");
    }
    let browser = Browser::new(&server);
    for (client, redirect) in [
        ("spa", "http://127.0.0.1:49152/cb/"),
        ("spa", "http://127.0.0.1:49152/other"),
        ("spa", "http://[::1]:3000/cb"),
        ("spa", "http://127.0.0.1:1@evil.example/cb"),
        ("native", "http://localhost:3001/cb"),
    ] {
        let url = authorize_url(
            &server,
            &[
                ("client_id", Some(client)),
                ("redirect_uri", Some(redirect)),
            ],
        );
        let (status, headers, _) = browser.get(url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{redirect}");
        assert!(headers.get(LOCATION).is_none());
    }
}

/// RFC 8707 §2: `resource` may be repeated; each must be registered, and the
/// token's `aud` is then the array. At the token endpoint (code or refresh) a
/// subset narrows the token; the refresh-token family keeps them all.
#[tokio::test]
async fn repeated_resource_parameters_give_an_audience_array() {
    let server = start(&ManualClock::starting_now()).await;
    let (status, body) = svc_token(&server, &[("resource", API), ("resource", OTHER_API)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(
        verify(&server, token, OTHER_API).await.claims["aud"],
        json!([API, OTHER_API])
    );
    let response = svc_token(
        &server,
        &[("resource", API), ("resource", "https://evil.example")],
    )
    .await;
    assert_oauth_error(&response, StatusCode::BAD_REQUEST, "invalid_target");

    let url = authorize_url(&server, &[("resource", Some(API))]);
    let mut url_both = url.clone();
    url_both
        .query_pairs_mut()
        .append_pair("resource", OTHER_API);
    let back = Browser::new(&server).authorize(url_both, "allow").await;
    let code = query(&back, "code").expect("code");
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", "spa"),
        ("code", code.as_str()),
        ("code_verifier", VERIFIER),
        ("redirect_uri", REDIRECT),
        ("resource", OTHER_API),
    ];
    let (status, _, first) = token_request(&server, None, &form).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let token = first["access_token"].as_str().expect("token");
    assert_eq!(payload_of(token)["aud"], OTHER_API, "narrowed");

    let (status, second) =
        refresh(&server, first["refresh_token"].as_str().expect("rt"), None).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let token = second["access_token"].as_str().expect("token");
    assert_eq!(
        payload_of(token)["aud"],
        json!([API, OTHER_API]),
        "the family keeps both"
    );
}

/// RFC 6749 §5.1: every token endpoint answer, success or error, carries
/// `Cache-Control: no-store` and `Pragma: no-cache`.
#[tokio::test]
async fn token_responses_carry_pragma_no_cache() {
    let server = start(&ManualClock::starting_now()).await;
    let client = http();
    let big = "a".repeat(100 * 1024);
    let requests = [
        client
            .post(server.token_endpoint())
            .basic_auth("svc", Some("svc-secret"))
            .form(&[("grant_type", "client_credentials")]),
        client
            .post(server.token_endpoint())
            .basic_auth("svc", Some("nope"))
            .form(&[("grant_type", "client_credentials")]),
        client
            .post(server.token_endpoint())
            .form(&[("grant_type", "password")]),
        client
            .post(server.token_endpoint())
            .form(&[("x", big.as_str())]),
        client.get(server.token_endpoint()),
    ];
    let mut statuses = Vec::new();
    for request in requests {
        let response = request.send().await.expect("response");
        statuses.push(response.status().as_u16());
        assert_eq!(
            response.headers()[CACHE_CONTROL],
            "no-store",
            "{}",
            response.status()
        );
        assert_eq!(
            response.headers()[reqwest::header::PRAGMA],
            "no-cache",
            "{}",
            response.status()
        );
    }
    assert_eq!(statuses, [200, 401, 400, 413, 405]);
}

/// An oversized form gets 413 with `Connection: close`, at `/token` (an OAuth
/// error) and on the pages' forms, rather than a connection reset mid-body.
#[tokio::test]
async fn oversized_request_body_is_413_with_connection_close() {
    let server = start(&ManualClock::starting_now()).await;
    let big = "a".repeat(100 * 1024);
    for path in ["/token", "/login", "/consent"] {
        let response = http()
            .post(format!("{}{path}", server.issuer()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("padding", big.as_str()),
            ])
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(
            response.headers()[reqwest::header::CONNECTION],
            "close",
            "{path}"
        );
        if path == "/token" {
            let body: Value = response.json().await.expect("json error");
            assert_eq!(error_of(&body), "invalid_request");
        }
    }
    // a normal-sized request still works
    let (status, _) = svc_token(&server, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

// ---------------------------------------------------------------- bounded state

/// Anyone can create pending requests with a GET: a full table evicts the
/// oldest, so a flood pushes out old requests but never stops new sign-ins,
/// and memory stays bounded.
#[tokio::test]
async fn pending_requests_are_bounded_and_a_flood_evicts_the_oldest() {
    let server = start_with(&ManualClock::starting_now(), SigningAlgorithm::EdDsa, |b| {
        b.max_state_entries(3)
    })
    .await;
    let victim = Browser::new(&server);
    let (_, _, old_page) = victim.get(authorize_url(&server, &[])).await;
    let flooder = Browser::new(&server);
    for _ in 0..10 {
        let (status, _, _) = flooder.get(authorize_url(&server, &[])).await;
        assert_eq!(status, StatusCode::OK, "never refused");
    }
    let state = server.stored_state();
    assert_eq!(state.pending_authorizations, 3);
    assert_eq!(state.evicted, 8);
    let (status, _, body) = victim.login(&old_page, "alice", "wonderland").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown or has expired"), "{body}");
    // a sign-in started now goes through
    let back = victim.authorize(authorize_url(&server, &[]), "allow").await;
    assert!(query(&back, "code").is_some());
}

/// Pending requests, sessions, codes, refresh tokens, families and revoked ids
/// all leave the server's memory when they expire on the injected clock.
#[tokio::test]
async fn expired_state_is_pruned_on_the_injected_clock() {
    let clock = ManualClock::starting_now();
    let server = start_with(&clock, SigningAlgorithm::EdDsa, |b| {
        b.refresh_token_lifetime(Duration::from_secs(7200))
    })
    .await;
    let browser = Browser::new(&server);
    browser.get(authorize_url(&server, &[])).await;
    let code = code_for_spa(&server).await;
    let (_, first) = redeem(&server, &code, VERIFIER, REDIRECT).await;
    let (status, _) = redeem(&server, &code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "replay revokes the family");
    let state = server.stored_state();
    assert_eq!(
        (state.pending_authorizations, state.sessions, state.codes),
        (1, 1, 1)
    );
    assert_eq!(
        (
            state.refresh_tokens,
            state.families,
            state.revoked_access_tokens
        ),
        (1, 1, 1)
    );
    let jti = jti_of(first["access_token"].as_str().expect("token"));

    clock.advance(Duration::from_secs(60)); // codes
    let state = server.stored_state();
    assert_eq!((state.codes, state.pending_authorizations), (0, 1));
    assert!(server.is_revoked(&jti), "until 5 min past its exp");
    clock.advance(Duration::from_secs(540)); // pending requests; revoked ids (exp + 300 s)
    let state = server.stored_state();
    assert_eq!(
        (state.pending_authorizations, state.revoked_access_tokens),
        (0, 0)
    );
    assert!(!server.is_revoked(&jti));
    assert_eq!(state.sessions, 1);
    clock.advance(Duration::from_secs(3000)); // sessions
    let state = server.stored_state();
    assert_eq!((state.sessions, state.families), (0, 1));
    clock.advance(Duration::from_secs(3600)); // refresh tokens and their families
    let state = server.stored_state();
    assert_eq!((state.refresh_tokens, state.families), (0, 0));
    assert_eq!(state.evicted, 0);
}

// ---------------------------------------------------------------- keys

#[tokio::test]
async fn rotated_key_signs_and_the_old_one_stays_published_for_the_grace_period() {
    let clock = ManualClock::starting_now();
    let server = start_with(&clock, SigningAlgorithm::Rs256, |b| {
        b.key_grace_period(Duration::from_secs(120))
    })
    .await;
    let old = server.active_kid();
    let old_token = server
        .client_credentials_token("svc", &[])
        .await
        .expect("token");

    let new = server.rotate_signing_key(SigningAlgorithm::Es256);
    assert_ne!(old, new);
    assert_eq!(server.active_kid(), new);
    let token = server
        .client_credentials_token("svc", &[])
        .await
        .expect("token");
    let data = verify(&server, &token, API).await;
    assert_eq!(data.header.kid.as_deref(), Some(new.as_str()));
    assert_eq!(data.header.alg, Algorithm::ES256);
    verify(&server, &old_token, API).await;
    assert_eq!(server.published_kids(), vec![old.clone(), new.clone()]);

    clock.advance(Duration::from_secs(119));
    assert!(jwks(&server).await.find(&old).is_some());
    clock.advance(Duration::from_secs(1));
    assert!(jwks(&server).await.find(&old).is_none());
    assert_eq!(server.published_kids(), vec![new.clone()]);

    assert!(server.retire_key(&new));
    assert!(jwks(&server).await.keys.is_empty());
    assert!(!server.retire_key(&new));
}

#[tokio::test]
async fn mint_merges_header_overrides_and_can_sign_with_unpublished_keys() {
    let server = start_with(&ManualClock::starting_now(), SigningAlgorithm::EdDsa, |b| b).await;
    let claims = json!({"iss": server.issuer(), "sub": "x", "aud": API, "exp": "soon"});
    let token = server.mint(
        json!({"crit": ["exp"], "jku": "https://evil.example/jwks", "typ": "JWT"}),
        claims.clone(),
        SignWith::Active,
    );
    let header = decode_header(&token).expect("header");
    assert_eq!(header.crit, Some(vec!["exp".to_owned()]));
    assert_eq!(header.jku.as_deref(), Some("https://evil.example/jwks"));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid.as_deref(), Some(server.active_kid().as_str()));
    assert_eq!(payload_of(&token), claims, "verbatim");

    let stranger = server.mint(
        json!({}),
        claims.clone(),
        SignWith::Unpublished(SigningAlgorithm::Rs256),
    );
    let header = decode_header(&stranger).expect("header");
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid");
    assert!(jwks(&server).await.find(&kid).is_none());
    assert!(!server.published_kids().contains(&kid));

    let old = server.active_kid();
    server.rotate_signing_key(SigningAlgorithm::EdDsa);
    let by_old = server.mint(json!({}), json!({}), SignWith::Kid(old.clone()));
    assert_eq!(decode_header(&by_old).expect("header").kid, Some(old));
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let server = start_with(&ManualClock::starting_now(), SigningAlgorithm::EdDsa, |b| b).await;
    let jwks_uri = server.jwks_uri();
    server.shutdown().await;
    assert!(http().get(jwks_uri).send().await.is_err());
}

// ------------------------------------------- both flows against a protected API

mod common;

/// A Guard-protected orders API that trusts `server`, on the server's clock.
async fn protected_api(server: &AuthorizationServerHandle, clock: &ManualClock) -> String {
    let guard = common::guard_builder(server, clock).build().expect("guard");
    common::serve(common::orders_api(&guard)).await
}

#[tokio::test]
async fn client_credentials_token_calls_the_protected_api() {
    let clock = ManualClock::starting_now();
    let server = start(&clock).await;
    let api = protected_api(&server, &clock).await;

    let (status, body) = svc_token(&server, &[("scope", "orders:read")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().expect("token");
    let me: Value = common::get_json_with(format!("{api}/me"), token).await;
    assert_eq!(me["sub"], "svc");
    assert_eq!(me["client_id"], "svc");
    assert_eq!(me["iss"], server.issuer());
    let orders = common::get_with(format!("{api}/orders"), token).await;
    assert_eq!(orders.status(), StatusCode::OK);
    // orders:read only: creating is refused with the scope it needs.
    let create = common::post_with(format!("{api}/orders"), token).await;
    assert_eq!(create.status(), StatusCode::FORBIDDEN);
    assert!(
        create.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains(r#"scope="orders:write""#)
    );

    // A token for another resource is refused by this API.
    let (_, body) = svc_token(&server, &[("resource", OTHER_API)]).await;
    let other = body["access_token"].as_str().expect("token");
    let r = common::get_with(format!("{api}/orders"), other).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains("token audience not accepted")
    );
}

#[tokio::test]
async fn authorization_code_token_calls_the_protected_api_until_it_expires() {
    let clock = ManualClock::starting_now();
    let server = start(&clock).await;
    let api = protected_api(&server, &clock).await;

    let code = code_for_spa(&server).await;
    let (status, body) = redeem(&server, &code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().expect("token");
    let me: Value = common::get_json_with(format!("{api}/me"), token).await;
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["client_id"], "spa");
    assert_eq!(me["scope"], "orders:read");

    clock.advance(Duration::from_secs(300 + 60)); // lifetime + leeway
    let r = common::get_with(format!("{api}/me"), token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains("token expired")
    );

    // The refresh token gets a fresh access token the API accepts again.
    let (status, body) = refresh(&server, body["refresh_token"].as_str().expect("rt"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = body["access_token"].as_str().expect("token");
    let r = common::get_with(format!("{api}/orders"), fresh).await;
    assert_eq!(r.status(), StatusCode::OK);
}

// ---------------------------------------------------------------- DPoP

/// POSTs a form to `/token` with a DPoP proof header.
async fn dpop_token_request(
    server: &AuthorizationServerHandle,
    form: &[(&str, &str)],
    proof: String,
) -> (StatusCode, Value) {
    let response = http()
        .post(server.token_endpoint())
        .header("dpop", proof)
        .form(form)
        .send()
        .await
        .expect("POST /token");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn authorization_code_and_refresh_with_dpop_issue_dpop_bound_tokens() {
    use bearer_guard::authz_server::DpopKey;
    let clock = ManualClock::starting_now();
    let server = start(&clock).await;
    let key = DpopKey::generate();
    let proof = || {
        key.proof("POST", &server.token_endpoint())
            .iat(clock.unix_seconds())
            .sign()
    };
    let code = code_for_spa(&server).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", "spa"),
        ("code", code.as_str()),
        ("code_verifier", VERIFIER),
        ("redirect_uri", REDIRECT),
    ];
    let (status, body) = dpop_token_request(&server, &form, proof()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(payload_of(access)["cnf"]["jkt"], key.thumbprint());

    let refresh_token = body["refresh_token"].as_str().unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", "spa"),
        ("refresh_token", refresh_token),
    ];
    // A public client's refresh token is bound to its key (RFC 9449 §5.8):
    // refused without a proof and with another key, and not spent by either.
    let (status, _, body) = token_request(&server, None, &form).await;
    assert_oauth_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_grant");
    let thief = DpopKey::generate();
    let stolen = thief
        .proof("POST", &server.token_endpoint())
        .iat(clock.unix_seconds())
        .sign();
    let refused = dpop_token_request(&server, &form, stolen).await;
    assert_oauth_error(&refused, StatusCode::BAD_REQUEST, "invalid_grant");
    let (status, body) = dpop_token_request(&server, &form, proof()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    assert_eq!(
        payload_of(body["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.thumbprint()
    );
}

// ------------------------------------------------------------ extra claims

#[tokio::test]
async fn registered_extra_claims_go_into_every_token_of_that_client() {
    let server = start_with(&ManualClock::starting_now(), SigningAlgorithm::Rs256, |b| {
        b.client(
            ClientConfig::confidential("tenant-svc", "t-secret")
                .scopes(["orders:read"])
                .claim("tenant", "acme")
                .claim("roles", json!(["admin", "auditor"]))
                .claim("realm_access", json!({"roles": ["ops"]})),
        )
    })
    .await;
    let token = server
        .client_credentials_token("tenant-svc", &["orders:read"])
        .await
        .expect("token");
    let claims = verify(&server, &token, API).await.claims;
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["roles"], json!(["admin", "auditor"]));
    assert_eq!(claims["realm_access"]["roles"], json!(["ops"]));
    assert_eq!(claims["sub"], "tenant-svc", "the server's own claims stay");
    // Other clients get none of them.
    let other = server
        .client_credentials_token("svc", &["orders:read"])
        .await
        .expect("token");
    assert!(payload_of(&other).get("tenant").is_none());
}

#[tokio::test]
async fn registered_extra_claims_may_not_replace_the_server_s_own() {
    for name in [
        "sub",
        "iss",
        "aud",
        "exp",
        "scope",
        "client_id",
        "cnf",
        "acr",
    ] {
        let start = AuthorizationServer::builder()
            .client(ClientConfig::confidential("c", "s").claim(name, "x"))
            .start()
            .await;
        match start {
            Err(bearer_guard::authz_server::AuthzServerError::Config(m)) => {
                assert!(m.contains(name), "{m}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn per_call_extra_claims_ride_a_single_use_ticket_of_the_handle() {
    let server = start_with(&ManualClock::starting_now(), SigningAlgorithm::Rs256, |b| {
        b.client(
            ClientConfig::confidential("tenant-svc", "t-secret")
                .scopes(["orders:read"])
                .claim("tenant", "acme"),
        )
    })
    .await;
    let token = server
        .client_credentials_token_with(
            "tenant-svc",
            &["orders:read"],
            json!({"tenant": "globex", "amr": ["pwd", "otp"]}),
        )
        .await
        .expect("token");
    let claims = verify(&server, &token, API).await.claims;
    assert_eq!(claims["tenant"], "globex", "the call's claims win");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));

    // The server's own claims cannot be set per call either.
    for bad in [
        json!({"sub": "root"}),
        json!({"scope": "admin"}),
        json!("text"),
    ] {
        let r = server
            .client_credentials_token_with("tenant-svc", &[], bad.clone())
            .await;
        assert!(
            matches!(
                r,
                Err(bearer_guard::authz_server::AuthzServerError::Config(_))
            ),
            "{bad}: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_client_cannot_add_claims_over_the_wire() {
    let server = start(&ManualClock::starting_now()).await;
    // A made-up ticket is refused, and nothing else in the form adds claims.
    let r = svc_token(
        &server,
        &[
            ("bearer_guard_claims_ticket", "guessed"),
            ("tenant", "acme"),
        ],
    )
    .await;
    assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, body) = svc_token(&server, &[("tenant", "acme"), ("claims", "{\"a\":1}")]).await;
    assert_eq!(status, StatusCode::OK);
    let claims = payload_of(body["access_token"].as_str().expect("token"));
    assert!(claims.get("tenant").is_none() && claims.get("a").is_none());
}
