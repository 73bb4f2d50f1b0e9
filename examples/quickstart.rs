//! The whole job in one run, on 127.0.0.1, with nothing to install:
//!
//! 1. the bundled OAuth 2.1 authorization server starts in-process;
//! 2. an axum API protected by bearer-guard starts beside it;
//! 3. a machine client gets a token with Client Credentials and calls the API;
//! 4. a "browser" goes through Authorization Code + PKCE (login page, consent
//!    page, redirect with a code) and the app calls the API with the user's token;
//! 5. the API refuses a token lacking a scope, no token, a forged and an expired one;
//! 6. a DPoP-bound token (RFC 9449) is accepted with a proof by its key, and the
//!    same token without that key (replayed as a bearer token, or with a proof by
//!    another key) is refused.
//!
//! Run it with `cargo run --example quickstart`. It exits by itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard::authz_server::{
    AuthorizationServer, ClientConfig, DpopKey, SignWith, SigningAlgorithm,
};
use bearer_guard::sender::Dpop;
use bearer_guard::{Guard, RequireScope, VerifiedToken};
use serde_json::{Value, json};

const API_AUDIENCE: &str = "https://orders.example.com";
const CALLBACK: &str = "http://127.0.0.1:3000/callback";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The authorization server: one machine client, one browser app, one user.
    let idp = AuthorizationServer::builder()
        .client(ClientConfig::confidential("reporting-job", "s3cret").scopes(["orders:read"]))
        .client(
            ClientConfig::public("orders-web")
                .redirect_uri(CALLBACK)
                .scopes(["orders:read", "orders:write"]),
        )
        .user("alice", "wonderland")
        .audience(API_AUDIENCE)
        .signing_algorithm(SigningAlgorithm::Es256)
        .start()
        .await?;

    // 2. The API: it trusts that issuer (keys found by discovery) for its audience,
    // and accepts DPoP-bound tokens as well as bearer tokens; DPoP proofs name the
    // API's public URL (here its loopback address).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    let guard = Guard::builder()
        .issuer(idp.issuer())
        .audience(API_AUDIENCE)
        .realm("orders-api")
        .dpop(Dpop::new(&api))
        .build()?;
    let app = Router::new()
        .route(
            "/orders",
            get(|| async { Json(json!(["order-1", "order-2"])) })
                .route_layer(RequireScope::all(["orders:read"]))
                .merge(
                    axum::routing::post(|| async { "created order-3" })
                        .route_layer(RequireScope::all(["orders:write"])),
                ),
        )
        .route(
            "/me",
            get(|t: VerifiedToken| async move {
                Json(json!({"sub": t.subject(), "client_id": t.client_id(), "scope": t.scopes().to_string()}))
            }),
        )
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!("bearer-guard quickstart\n");
    println!(
        "  authorization server  {}  (bundled, in-process)",
        idp.issuer()
    );
    println!(
        "  protected API         {api}  (GET /orders needs orders:read, POST /orders needs orders:write)\n"
    );

    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true) // the "browser" keeps the login session
        .build()?;

    // 3. Client Credentials: a machine client, no user involved.
    println!("1. Client Credentials (a machine client)");
    let body: Value = http
        .post(idp.token_endpoint())
        .basic_auth("reporting-job", Some("s3cret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "orders:read"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let machine_token = body["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_owned();
    step(
        "POST /token grant_type=client_credentials (client reporting-job)",
        &format!(
            "access token, scope \"{}\", expires in {} s",
            body["scope"].as_str().unwrap_or_default(),
            body["expires_in"]
        ),
    );
    call(
        &http,
        "GET ",
        &api,
        "/orders",
        Some(&machine_token),
        "with that token",
    )
    .await?;
    call(
        &http,
        "POST",
        &api,
        "/orders",
        Some(&machine_token),
        "with that token",
    )
    .await?;

    // 4. Authorization Code + PKCE: the user signs in on the server's own pages.
    println!("\n2. Authorization Code + PKCE (a user in a browser)");
    let verifier = URL_SAFE_NO_PAD.encode(aws_lc_rs_random::<32>()?);
    let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
    let authorize = reqwest::Url::parse_with_params(
        &idp.authorization_endpoint(),
        &[
            ("response_type", "code"),
            ("client_id", "orders-web"),
            ("redirect_uri", CALLBACK),
            ("scope", "orders:read"),
            ("state", "af0ifjsldkj"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )?;
    let response = http.get(authorize).send().await?;
    let status = response.status().as_u16();
    let login_page = response.text().await?;
    let has_form = login_page.contains("type=\"password\"");
    step(
        "GET  /authorize (response_type=code, code_challenge, S256)",
        &format!("{status}, the server's login page (password form: {has_form})"),
    );
    let response = http
        .post(format!("{}/login", idp.issuer()))
        .form(&[
            ("request", hidden(&login_page, "request")?),
            ("csrf", hidden(&login_page, "csrf")?),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .await?;
    let status = response.status().as_u16();
    let consent_page = response.text().await?;
    let lists_scope = consent_page.contains("orders:read");
    step(
        "POST /login as alice",
        &format!("{status}, consent page (lists orders:read: {lists_scope})"),
    );
    let redirect = http
        .post(format!("{}/consent", idp.issuer()))
        .form(&[
            ("request", hidden(&consent_page, "request")?),
            ("csrf", hidden(&consent_page, "csrf")?),
            ("decision", "allow"),
        ])
        .send()
        .await?;
    let location = redirect.headers().get("location").ok_or("no redirect")?;
    let back = reqwest::Url::parse(location.to_str()?)?;
    let param = |name: &str| {
        back.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .ok_or(format!("no {name} in the redirect"))
    };
    let code = param("code")?;
    step(
        "POST /consent allow",
        &format!(
            "{} to {}{} with code, state={}, iss={}",
            redirect.status().as_u16(),
            back.origin().ascii_serialization(),
            back.path(),
            param("state")?,
            param("iss")?
        ),
    );
    let body: Value = http
        .post(idp.token_endpoint())
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "orders-web"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let user_token = body["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_owned();
    step(
        "POST /token grant_type=authorization_code + code_verifier",
        &format!(
            "access token, scope \"{}\", refresh token: {}",
            body["scope"].as_str().unwrap_or_default(),
            body["refresh_token"].is_string()
        ),
    );
    call(
        &http,
        "GET ",
        &api,
        "/me",
        Some(&user_token),
        "with alice's token",
    )
    .await?;

    // 5. What the API refuses.
    println!("\n3. What the API refuses");
    call(&http, "GET ", &api, "/orders", None, "without a token").await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = |exp: u64| {
        json!({"iss": idp.issuer(), "sub": "mallory", "aud": API_AUDIENCE, "exp": exp,
               "iat": now, "scope": "orders:read orders:write", "client_id": "orders-web"})
    };
    let forged = idp.mint(
        json!({"kid": idp.active_kid()}),
        claims(now + 300),
        SignWith::Unpublished(SigningAlgorithm::Es256),
    );
    call(
        &http,
        "GET ",
        &api,
        "/orders",
        Some(&forged),
        "with a forged signature",
    )
    .await?;
    let expired = idp.mint(json!({}), claims(now - 600), SignWith::Active);
    call(
        &http,
        "GET ",
        &api,
        "/orders",
        Some(&expired),
        "with an expired token",
    )
    .await?;

    // 6. A sender-constrained token: useless without its key.
    println!("\n4. A DPoP-bound token (RFC 9449: the token only works with its key)");
    let key = DpopKey::generate();
    let bound = idp
        .dpop_client_credentials_token("reporting-job", &["orders:read"], &key)
        .await?;
    step(
        "POST /token with a DPoP proof (client reporting-job)",
        &format!("token bound to key {}", key.thumbprint()),
    );
    let url = format!("{api}/orders");
    let proof = key.proof("GET", &url).access_token(&bound).sign();
    let response = http
        .get(&url)
        .header("authorization", format!("DPoP {bound}"))
        .header("dpop", proof)
        .send()
        .await?;
    report(
        response,
        "GET  /orders with the token and a proof by its key",
    )
    .await?;
    call(
        &http,
        "GET ",
        &api,
        "/orders",
        Some(&bound),
        "with the same token as a bearer token",
    )
    .await?;
    let thief = DpopKey::generate();
    let response = http
        .get(&url)
        .header("authorization", format!("DPoP {bound}"))
        .header("dpop", thief.proof("GET", &url).access_token(&bound).sign())
        .send()
        .await?;
    report(
        response,
        "GET  /orders with the token and a proof by another key",
    )
    .await?;

    idp.shutdown().await;
    println!("\nDone: every call above went over real HTTP on 127.0.0.1.");
    Ok(())
}

/// One API call, printed as: what was sent, then status and why.
async fn call(
    http: &reqwest::Client,
    method: &str,
    api: &str,
    path: &str,
    token: Option<&str>,
    what: &str,
) -> Result<(), reqwest::Error> {
    let mut request = match method.trim() {
        "POST" => http.post(format!("{api}{path}")),
        _ => http.get(format!("{api}{path}")),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.timeout(Duration::from_secs(10)).send().await?;
    report(response, &format!("{method} {path} {what}")).await
}

/// Prints an answer: status, and the challenge or the body.
async fn report(response: reqwest::Response, what: &str) -> Result<(), reqwest::Error> {
    let status = response.status();
    // With DPoP on, both schemes are challenged: show the one with the error.
    let challenges: Vec<&str> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let challenge = challenges
        .iter()
        .find(|c| c.contains("error="))
        .or(challenges.first())
        .map(|c| (*c).to_owned());
    let body = response.text().await?;
    let verdict = if status.is_success() {
        "accepted"
    } else {
        "refused"
    };
    let detail = match challenge {
        Some(c) => format!("WWW-Authenticate: {c}"),
        None => body,
    };
    step(what, &format!("{} {verdict}  {detail}", status.as_u16()));
    Ok(())
}

fn step(what: &str, outcome: &str) {
    println!("   {what:<62} -> {outcome}");
}

/// The value of a hidden form field on one of the server's pages.
fn hidden<'a>(html: &'a str, name: &str) -> Result<&'a str, String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).ok_or(format!("no {name} field"))? + marker.len();
    html[start..]
        .split('"')
        .next()
        .ok_or(format!("no {name} value"))
}

fn aws_lc_rs_random<const N: usize>() -> Result<[u8; N], aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes)?;
    Ok(bytes)
}
