//! The step-up round trip (RFC 9470) with the bundled authorization server: a
//! route that needs `acr` `mfa` or a recent login refuses the first token with
//! 401 `insufficient_user_authentication`; the client reruns `/authorize` with
//! the challenge's `acr_values` / `max_age`, the user signs in again (with the
//! one-time code), and the new token passes. Through the layer and the gateway.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard::authz_server::{AuthorizationServer, AuthorizationServerHandle, ClientConfig};
use bearer_guard::clock::{Clock, ManualClock};
use bearer_guard::{Guard, Issuer, Require};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};
use serde_json::Value;

const API: &str = "https://api.example.com";
const REDIRECT: &str = "http://127.0.0.1:3000/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const CODE: &str = "314159";

async fn server(clock: &ManualClock) -> AuthorizationServerHandle {
    AuthorizationServer::builder()
        .client(
            ClientConfig::public("spa")
                .redirect_uri(REDIRECT)
                .scopes(["orders:read"]),
        )
        .user("alice", "wonderland")
        .user_one_time_code("alice", CODE)
        .user("bob", "builder")
        .audience(API)
        // Longer than the tests' jumps in time: only the login ages.
        .access_token_lifetime(Duration::from_secs(3600))
        .clock(clock.clone())
        .start()
        .await
        .expect("server")
}

/// A browser: keeps cookies (the login session), follows no redirects.
struct Browser {
    http: reqwest::Client,
    server: String,
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).map(|i| i + marker.len()).expect(name);
    html[start..].split('"').next().expect("value").to_owned()
}

fn location(headers: &HeaderMap) -> reqwest::Url {
    reqwest::Url::parse(headers[LOCATION].to_str().unwrap()).unwrap()
}

/// What `/authorize` showed.
enum Page {
    Login(String),
    Consent(String),
}

impl Browser {
    fn new(server: &AuthorizationServerHandle) -> Self {
        Browser {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .build()
                .unwrap(),
            server: server.issuer().to_owned(),
        }
    }

    async fn open(&self, extra: &[(&str, &str)]) -> Page {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", "spa"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("scope", "orders:read"),
        ];
        params.extend_from_slice(extra);
        let url = reqwest::Url::parse_with_params(&format!("{}/authorize", self.server), &params)
            .unwrap();
        let response = self.http.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let page = response.text().await.unwrap();
        if page.contains("name=\"decision\"") {
            Page::Consent(page)
        } else {
            assert!(page.contains("name=\"password\""), "{page}");
            Page::Login(page)
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.server))
            .form(form)
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        (status, headers, r.text().await.unwrap())
    }

    async fn login(
        &self,
        page: &str,
        user: &str,
        password: &str,
        otp: Option<&str>,
    ) -> (StatusCode, String) {
        let (request, csrf) = (hidden(page, "request"), hidden(page, "csrf"));
        let mut form = vec![
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("username", user),
            ("password", password),
        ];
        form.extend(otp.map(|c| ("otp", c)));
        let (status, _, body) = self.post("/login", &form).await;
        (status, body)
    }

    /// Consents on `page` and redeems the code: the access token.
    async fn consent_and_redeem(&self, page: &str) -> String {
        let (request, csrf) = (hidden(page, "request"), hidden(page, "csrf"));
        let form = [
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("decision", "allow"),
        ];
        let (status, headers, _) = self.post("/consent", &form).await;
        assert_eq!(status, StatusCode::FOUND);
        let back = location(&headers);
        let code = back
            .query_pairs()
            .find(|(n, _)| n == "code")
            .expect("code")
            .1
            .into_owned();
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", "spa"),
            ("code", code.as_str()),
            ("code_verifier", VERIFIER),
            ("redirect_uri", REDIRECT),
        ];
        let (status, _, body) = self.post("/token", &form).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// The whole flow: open, sign in if asked, consent, redeem.
    async fn token(&self, extra: &[(&str, &str)], otp: Option<&str>) -> String {
        let consent = match self.open(extra).await {
            Page::Consent(page) => page,
            Page::Login(page) => {
                let (status, consent) = self.login(&page, "alice", "wonderland", otp).await;
                assert_eq!(status, StatusCode::OK, "{consent}");
                consent
            }
        };
        self.consent_and_redeem(&consent).await
    }
}

fn claims_of(token: &str) -> Value {
    let payload = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// A challenge's quoted parameter.
fn param(challenge: &str, name: &str) -> Option<String> {
    let start = challenge.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = challenge[start..].find('"')? + start;
    Some(challenge[start..end].to_owned())
}

/// The API: `/pay` needs an `mfa` login, `/recent` a login at most 300 s old.
async fn api(server: &AuthorizationServerHandle, clock: &ManualClock) -> String {
    let guard = Guard::builder()
        .issuer(Issuer::new(server.issuer()).jwks_uri(server.jwks_uri()))
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/pay",
            get(|| async { "paid" }).route_layer(Require::acr_in(["mfa"])),
        )
        .route(
            "/recent",
            get(|| async { "recent" }).route_layer(Require::max_age(Duration::from_secs(300))),
        )
        .layer(guard.layer());
    common::serve(app).await
}

async fn call(url: &str, token: &str) -> (StatusCode, String) {
    let r = common::http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status(), challenge)
}

#[tokio::test]
async fn tokens_carry_the_login_s_acr_and_auth_time_from_the_clock() {
    let clock = ManualClock::starting_now();
    let server = server(&clock).await;
    let login_time = clock.unix_seconds();
    let token = Browser::new(&server).token(&[], None).await;
    let claims = claims_of(&token);
    assert_eq!(claims["acr"], "pwd");
    assert_eq!(claims["auth_time"], login_time);
    // A later token from the same session keeps the login's time.
    clock.advance(Duration::from_secs(60));
    let browser = Browser::new(&server);
    browser.token(&[], None).await;
    clock.advance(Duration::from_secs(60));
    let again = browser.token(&[], None).await;
    assert_eq!(claims_of(&again)["auth_time"], login_time + 60);
    // The password plus the one-time code is an mfa login, even unasked.
    let mfa = Browser::new(&server).token(&[], Some(CODE)).await;
    assert_eq!(claims_of(&mfa)["acr"], "mfa");
    // Discovery lists the two login classes.
    let metadata: Value = common::http()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            server.issuer()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        metadata["acr_values_supported"],
        serde_json::json!(["pwd", "mfa"])
    );
}

#[tokio::test]
async fn acr_step_up_round_trip_through_the_layer() {
    let clock = ManualClock::starting_now();
    let server = server(&clock).await;
    let api = api(&server, &clock).await;
    let browser = Browser::new(&server);

    let first = browser.token(&[], None).await;
    let (status, challenge) = call(&format!("{api}/pay"), &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        param(&challenge, "error").as_deref(),
        Some("insufficient_user_authentication")
    );
    let acr_values = param(&challenge, "acr_values").expect("acr_values");
    assert_eq!(acr_values, "mfa");

    // The signed-in browser is asked to sign in again, now with the code.
    let Page::Login(page) = browser.open(&[("acr_values", &acr_values)]).await else {
        panic!("a pwd session does not satisfy acr_values=mfa");
    };
    assert!(page.contains("name=\"otp\""), "{page}");
    let (status, refused) = browser.login(&page, "alice", "wonderland", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no code, no mfa login");
    assert!(refused.contains("one-time code"), "{refused}");
    let (status, refused) = browser
        .login(&refused, "alice", "wonderland", Some("000000"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong code");
    let (status, consent) = browser
        .login(&refused, "alice", "wonderland", Some(CODE))
        .await;
    assert_eq!(status, StatusCode::OK, "{consent}");
    let stepped_up = browser.consent_and_redeem(&consent).await;
    assert_eq!(claims_of(&stepped_up)["acr"], "mfa");
    let (status, _) = call(&format!("{api}/pay"), &stepped_up).await;
    assert_eq!(status, StatusCode::OK);

    // The mfa session now satisfies acr_values=mfa without another login.
    assert!(matches!(
        browser.open(&[("acr_values", "mfa")]).await,
        Page::Consent(_)
    ));
}

#[tokio::test]
async fn a_user_without_a_second_factor_cannot_complete_an_mfa_login() {
    let clock = ManualClock::starting_now();
    let server = server(&clock).await;
    let browser = Browser::new(&server);
    let Page::Login(page) = browser.open(&[("acr_values", "mfa")]).await else {
        panic!("login expected");
    };
    let (status, _) = browser.login(&page, "bob", "builder", Some(CODE)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn max_age_step_up_round_trip_through_the_layer() {
    let clock = ManualClock::starting_now();
    let server = server(&clock).await;
    let api = api(&server, &clock).await;
    let browser = Browser::new(&server);
    let first = browser.token(&[], None).await;
    let (status, _) = call(&format!("{api}/recent"), &first).await;
    assert_eq!(status, StatusCode::OK, "a fresh login passes");

    // Ten minutes later the login is too old for the route.
    clock.advance(Duration::from_secs(600));
    let later = browser.token(&[], None).await;
    assert_eq!(
        claims_of(&later)["auth_time"],
        claims_of(&first)["auth_time"]
    );
    let (status, challenge) = call(&format!("{api}/recent"), &later).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        param(&challenge, "error").as_deref(),
        Some("insufficient_user_authentication")
    );
    let max_age = param(&challenge, "max_age").expect("max_age");
    assert_eq!(max_age, "300");

    // With max_age the session is too old: the login page, despite the cookie.
    let Page::Login(page) = browser.open(&[("max_age", &max_age)]).await else {
        panic!("a session older than max_age must not be reused");
    };
    let (status, consent) = browser.login(&page, "alice", "wonderland", None).await;
    assert_eq!(status, StatusCode::OK);
    let fresh = browser.consent_and_redeem(&consent).await;
    assert_eq!(claims_of(&fresh)["auth_time"], clock.unix_seconds());
    let (status, _) = call(&format!("{api}/recent"), &fresh).await;
    assert_eq!(status, StatusCode::OK);

    // A fresh session satisfies the same max_age without a login.
    assert!(matches!(
        browser.open(&[("max_age", "300")]).await,
        Page::Consent(_)
    ));
}

#[tokio::test]
async fn max_age_zero_always_asks_for_a_login() {
    let clock = ManualClock::starting_now();
    let server = server(&clock).await;
    let browser = Browser::new(&server);
    browser.token(&[], None).await;
    // Same second, live session: still the login page.
    assert!(matches!(
        browser.open(&[("max_age", "0")]).await,
        Page::Login(_)
    ));
    assert!(matches!(browser.open(&[]).await, Page::Consent(_)));
}

#[tokio::test]
async fn malformed_max_age_goes_back_to_the_client_as_invalid_request() {
    let clock = ManualClock::starting_now();
    let server = server(&clock).await;
    let browser = Browser::new(&server);
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", "spa"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    // (An empty max_age counts as absent, RFC 6749 §3.1.)
    for bad in ["-1", "ten", "1.5", "+5"] {
        params.retain(|(n, _)| *n != "max_age");
        params.push(("max_age", bad));
        let url =
            reqwest::Url::parse_with_params(&server.authorization_endpoint(), &params).unwrap();
        let r = browser.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{bad}");
        let back = location(r.headers());
        let error = back.query_pairs().find(|(n, _)| n == "error").unwrap().1;
        assert_eq!(error, "invalid_request", "{bad}");
    }
}

#[cfg(feature = "gateway")]
#[tokio::test]
async fn acr_step_up_round_trip_through_the_gateway_route_table() {
    use bearer_guard::gateway::{Gateway, GatewayConfig};
    let clock = ManualClock::starting_now();
    let server = server(&clock).await;
    let upstream = common::spawn_app(Router::new().fallback(|| async { "upstream" })).await;
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
[[issuer]]
issuer = "{issuer}"
jwks_uri = "{jwks}"
audiences = ["{API}"]
[[route]]
path = "/pay"
acr_values = ["mfa"]
max_age = 300
"#,
        issuer = server.issuer(),
        jwks = server.jwks_uri(),
    );
    let gateway = Gateway::from_config_with(GatewayConfig::from_toml(&toml).unwrap(), |b| {
        b.clock(clock.clone())
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/pay", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        gateway
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });

    let browser = Browser::new(&server);
    let first = browser.token(&[], None).await;
    let (status, challenge) = call(&url, &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A fresh pwd login fails acr only: the challenge names what failed.
    let acr_values = param(&challenge, "acr_values").expect("acr_values");
    assert_eq!(param(&challenge, "max_age"), None);
    let max_age = "300";
    let stepped_up = browser
        .token(
            &[("acr_values", &acr_values), ("max_age", max_age)],
            Some(CODE),
        )
        .await;
    let (status, _) = call(&url, &stepped_up).await;
    assert_eq!(status, StatusCode::OK);

    // Ten minutes on, the mfa login is too old: max_age makes it sign in again.
    clock.advance(Duration::from_secs(600));
    let (status, challenge) = call(&url, &stepped_up).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(param(&challenge, "max_age").as_deref(), Some("300"));
    let Page::Login(_) = browser
        .open(&[("acr_values", &acr_values), ("max_age", max_age)])
        .await
    else {
        panic!("an mfa session older than max_age must not be reused");
    };
}
