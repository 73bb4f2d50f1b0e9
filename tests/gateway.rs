//! The gateway in-process: a JWKS server, an echo upstream and the gateway, all on
//! 127.0.0.1 port 0. Requests go through a raw hyper client, which sends paths
//! verbatim (no client-side `..` resolution).
#![cfg(feature = "gateway")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::Request as AxumRequest;
use axum::routing::get;
use bearer_guard::gateway::{Gateway, GatewayConfig};
use bytes::Bytes;
use common::{AUDIENCE, TestKey, unix_now};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An upstream that echoes the path (with query) and headers it received, answers
/// with hop-by-hop headers of its own, and never answers under `/slow`.
async fn spawn_echo() -> SocketAddr {
    async fn echo(req: AxumRequest) -> axum::response::Response {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
            .collect();
        let body = json!({
            "path": req.uri().path_and_query().map(|p| p.as_str()),
            "method": req.method().as_str(),
            "headers": headers,
        });
        axum::response::Response::builder()
            .header("content-type", "application/json")
            .header("keep-alive", "timeout=5")
            .header("x-upstream", "echo")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap_or_default()
    }
    let app = axum::Router::new()
        .route("/slow", get(std::future::pending::<&'static str>))
        .fallback(echo);
    common::spawn_app(app).await
}

struct Env {
    key: TestKey,
    issuer: String,
    upstream: SocketAddr,
}

async fn env() -> Env {
    let key = TestKey::new("gw");
    let issuer = common::spawn_issuer(key.jwks()).await;
    let upstream = spawn_echo().await;
    Env {
        key,
        issuer,
        upstream,
    }
}

fn config(env: &Env, extra: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
realm = "orders-api"
upstream_timeout_secs = 0.3
{extra}

[[issuer]]
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]

[[route]]
path = "/health"
public = true
[[route]]
path = "/orders"
methods = ["POST"]
scopes_all = ["orders:write", "orders:audit"]
[[route]]
path = "/orders"
scopes_any = ["orders:read", "orders:admin"]
[[route]]
path = "/api"

[forward]
claims_to_headers = {{ sub = "x-auth-sub", client_id = "x-auth-client-id", scope = "x-auth-scope", tenant = "x-auth-tenant" }}
"#,
        upstream = env.upstream,
        issuer = env.issuer,
    )
}

/// One issuer at `https://login.example.com` with keys at `jwks_uri`, one route `/`.
fn minimal_config(upstream: SocketAddr, jwks_uri: &str, route_extra: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
[[issuer]]
issuer = "https://login.example.com"
jwks_uri = "{jwks_uri}"
audiences = ["{AUDIENCE}"]
[[route]]
path = "/"
{route_extra}
"#
    )
}

/// A running gateway; dropping it triggers the graceful shutdown.
struct Running {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(toml: &str) -> Running {
    let gateway =
        Gateway::from_config(GatewayConfig::from_toml(toml).expect("parse")).expect("valid config");
    let (addr, stop, _server) = spawn_gateway(gateway).await;
    Running { addr, _stop: stop }
}

type Served = tokio::task::JoinHandle<std::io::Result<()>>;

/// Serves `gateway` on a fresh port until the returned sender fires (or drops).
async fn spawn_gateway(gateway: Gateway) -> (SocketAddr, oneshot::Sender<()>, Served) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        gateway
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    (addr, stop, server)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(addr: SocketAddr, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client
        .request(req.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn get_path(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send(addr, Method::GET, path, &headers).await
}

#[tokio::test]
async fn public_route_needs_no_token() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let a = get_path(gw.addr, "/health/deep?x=1", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["path"], "/health/deep?x=1");
}

#[tokio::test]
async fn missing_token_is_401_with_challenge() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let a = get_path(gw.addr, "/orders", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.headers["www-authenticate"], "Bearer realm=\"orders-api\"");
    let bad = get_path(gw.addr, "/orders", Some("not.a.token")).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let challenge = bad.headers["www-authenticate"].to_str().unwrap_or_default();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn route_scopes_all_of_and_any_of() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let reader = env.key.token(&env.issuer, unix_now(), "orders:read");
    let admin = env.key.token(&env.issuer, unix_now(), "orders:admin");
    let writer = env
        .key
        .token(&env.issuer, unix_now(), "orders:write orders:audit");
    let half = env.key.token(&env.issuer, unix_now(), "orders:write");

    assert_eq!(
        get_path(gw.addr, "/orders/7", Some(&reader)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_path(gw.addr, "/orders", Some(&admin)).await.status,
        StatusCode::OK
    );
    let denied = get_path(gw.addr, "/orders", Some(&writer)).await;
    assert_eq!(
        denied.status,
        StatusCode::FORBIDDEN,
        "GET needs read or admin"
    );
    let challenge = denied.headers["www-authenticate"]
        .to_str()
        .unwrap_or_default();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    assert!(
        challenge.contains("scope=\"orders:read orders:admin\""),
        "{challenge}"
    );

    let post = |t: String| async move {
        let auth = format!("Bearer {t}");
        send(
            gw.addr,
            Method::POST,
            "/orders",
            &[("authorization", &auth)],
        )
        .await
    };
    assert_eq!(post(writer.clone()).await.status, StatusCode::OK);
    assert_eq!(post(half).await.status, StatusCode::FORBIDDEN, "all of");
    assert_eq!(post(reader).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn claim_headers_reach_upstream_and_cannot_be_spoofed() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let token = env.key.token(&env.issuer, unix_now(), "b a");
    let auth = format!("Bearer {token}");
    let a = send(
        gw.addr,
        Method::GET,
        "/api/me",
        &[
            ("authorization", &auth),
            ("x-auth-sub", "mallory"),
            ("X-Auth-Client-Id", "evil"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let h = &a.body["headers"];
    assert_eq!(h["x-auth-sub"], "alice");
    assert_eq!(h["x-auth-client-id"], "cli-app");
    assert_eq!(h["x-auth-scope"], "a b");
    assert_eq!(h["x-auth-tenant"], "acme", "custom string claim");
    assert_eq!(h["authorization"], auth.as_str(), "kept unless stripped");

    // On a public route no claims are set, and spoofed ones are still removed.
    let public = send(
        gw.addr,
        Method::GET,
        "/health",
        &[("x-auth-sub", "mallory")],
    )
    .await;
    assert!(
        public.body["headers"].get("x-auth-sub").is_none(),
        "{:?}",
        public.body
    );
}

#[tokio::test]
async fn x_forwarded_headers_are_the_gateways_own() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let spoof = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "admin.internal"),
        ("forwarded", "for=203.0.113.9;proto=https"),
    ];
    let a = send(gw.addr, Method::GET, "/health", &spoof).await;
    assert_eq!(a.status, StatusCode::OK);
    let h = &a.body["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "the peer, not the claim");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string().as_str());
    assert!(h.get("forwarded").is_none(), "{h}");

    // Behind a trusted proxy its values are kept and the peer appended.
    let trusted = config(&env, "").replace("[forward]\n", "[forward]\ntrust_forwarded = true\n");
    let gw = start(&trusted).await;
    let a = send(gw.addr, Method::GET, "/health", &spoof).await;
    let h = &a.body["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "admin.internal");
    assert_eq!(h["forwarded"], "for=203.0.113.9;proto=https");

    // Off (and untrusted): nothing of the client's, nothing of ours.
    let off = config(&env, "").replace("[forward]\n", "[forward]\nx_forwarded = false\n");
    let gw = start(&off).await;
    let a = send(gw.addr, Method::GET, "/health", &spoof).await;
    let h = a.body["headers"].as_object().cloned().unwrap_or_default();
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
    ] {
        assert!(!h.contains_key(name), "{name}: {h:?}");
    }
}

#[tokio::test]
async fn strip_authorization_removes_the_token() {
    let env = env().await;
    let toml = config(&env, "").replace("[forward]\n", "[forward]\nstrip_authorization = true\n");
    let gw = start(&toml).await;
    let token = env.key.token(&env.issuer, unix_now(), "");
    let a = get_path(gw.addr, "/api", Some(&token)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body["headers"].get("authorization").is_none());
}

#[tokio::test]
async fn path_traversal_is_normalised_or_refused() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    // `/health/../api` would reach a protected route through a public one.
    let a = get_path(gw.addr, "/health/../api/secret", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "matched as /api/secret");
    let a = get_path(gw.addr, "/health/%2E%2E/api", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = get_path(gw.addr, "/health//./x/../y?q=%2e%2e", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["path"], "/health/y?q=%2e%2e", "query kept verbatim");
    for bad in [
        "/%2e%2e/api",
        "/..",
        "/health%2fx",
        "/health/%00",
        "/health/%zz",
    ] {
        assert_eq!(
            get_path(gw.addr, bad, None).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn unmatched_paths_are_404_and_never_forwarded() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let token = env.key.token(&env.issuer, unix_now(), "orders:read");
    let a = get_path(gw.addr, "/ordersX", Some(&token)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["error"], "not_found");
    assert!(a.headers.get("x-upstream").is_none());
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let a = send(
        gw.addr,
        Method::GET,
        "/health",
        &[
            ("connection", "x-private-hop"),
            ("x-private-hop", "1"),
            ("keep-alive", "timeout=9"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-end-to-end", "yes"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let h = a.body["headers"].as_object().cloned().unwrap_or_default();
    for hop in [
        "x-private-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert!(!h.contains_key(hop), "{hop} forwarded: {h:?}");
    }
    assert_eq!(h["x-end-to-end"], "yes");
    assert!(
        a.headers.get("keep-alive").is_none(),
        "response keep-alive removed"
    );
    assert_eq!(a.headers["x-upstream"], "echo");
}

#[tokio::test]
async fn method_mismatch_is_405_with_allow_before_authentication() {
    let env = env().await;
    // Only POST and PUT reach /orders; GET on /health only.
    let toml = config(&env, "")
        .replace(
            "path = \"/orders\"\nscopes_any",
            "path = \"/orders\"\nmethods = [\"put\", \"POST\"]\nscopes_any",
        )
        .replace(
            "path = \"/health\"\n",
            "path = \"/health\"\nmethods = [\"GET\"]\n",
        );
    let gw = start(&toml).await;
    let token = env.key.token(&env.issuer, unix_now(), "orders:read");
    for t in [None, Some(token.as_str())] {
        let a = get_path(gw.addr, "/orders/7", t).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "token: {t:?}");
        assert_eq!(
            a.headers["allow"], "POST, PUT",
            "deduplicated, config order"
        );
        assert_eq!(a.body["error"], "method_not_allowed");
        assert!(a.headers.get("www-authenticate").is_none());
        assert!(a.headers.get("x-upstream").is_none(), "never forwarded");
    }
    let a = send(gw.addr, Method::DELETE, "/health", &[]).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.headers["allow"], "GET");
    // A path no route covers stays a 404; a matching method still goes through.
    let a = send(gw.addr, Method::DELETE, "/nowhere", &[]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get_path(gw.addr, "/health", None).await.status,
        StatusCode::OK
    );
    let auth = format!("Bearer {token}");
    let put = send(
        gw.addr,
        Method::PUT,
        "/orders/7",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.body["method"], "PUT");
}

#[tokio::test]
async fn upstream_down_is_502() {
    let mut env = env().await;
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    env.upstream = closed.local_addr().expect("addr");
    drop(closed);
    let gw = start(&config(&env, "")).await;
    let a = get_path(gw.addr, "/health", None).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.body["error"], "bad_gateway");
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let env = env().await;
    let toml = config(&env, "").replace(
        "[[route]]\npath = \"/health\"",
        "[[route]]\npath = \"/slow\"\npublic = true\n[[route]]\npath = \"/health\"",
    );
    let gw = start(&toml).await;
    let a = get_path(gw.addr, "/slow", None).await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    // On a kept-alive upstream connection too (it waits on that connection's
    // timer), and the gateway goes on answering.
    for _ in 0..2 {
        assert_eq!(
            get_path(gw.addr, "/health", None).await.status,
            StatusCode::OK
        );
        let a = get_path(gw.addr, "/slow", None).await;
        assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    }
}

#[tokio::test]
async fn readiness_follows_key_loading() {
    // A JWKS endpoint that fails until the test says otherwise.
    let key = TestKey::new("ready");
    let up = Arc::new(AtomicBool::new(false));
    let jwks = key.jwks();
    let flag = up.clone();
    let jwks_server = common::spawn_app(axum::Router::new().route(
        "/jwks",
        get(move || {
            let (flag, jwks) = (flag.clone(), jwks.clone());
            async move {
                if flag.load(Ordering::SeqCst) {
                    (StatusCode::OK, jwks)
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, String::new())
                }
            }
        }),
    ))
    .await;
    let upstream = spawn_echo().await;
    // The admin endpoints on the public listener only because it says so.
    let toml = format!(
        "admin_on_listen = true\n{}",
        minimal_config(upstream, &format!("http://{jwks_server}/jwks"), "")
    );
    let clock = bearer_guard::clock::ManualClock::starting_now();
    let c = clock.clone();
    let gateway = Gateway::from_config_with(GatewayConfig::from_toml(&toml).expect("parse"), |b| {
        b.clock(c)
    })
    .expect("config");
    let (addr, _stop, _served) = spawn_gateway(gateway).await;
    assert_eq!(
        get_path(addr, "/-/health", None).await.status,
        StatusCode::OK
    );
    let not_ready = get_path(addr, "/-/ready", None).await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready.body["ready"], false);
    up.store(true, Ordering::SeqCst);
    // The next probe after the retry back-off loads the keys.
    clock.advance(Duration::from_secs(5));
    let ready = get_path(addr, "/-/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);
    let token = key.token("https://login.example.com", common::unix_now(), "");
    assert_eq!(
        get_path(addr, "/x", Some(&token)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_listener_serves_health_ready_and_metrics() {
    let env = env().await;
    let toml = config(&env, "admin_listen = \"127.0.0.1:0\"");
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let gateway = Gateway::from_config(GatewayConfig::from_toml(&toml).expect("parse"))
        .expect("config")
        .with_metrics(handle);
    let main = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (main_addr, admin_addr) = (
        main.local_addr().expect("a"),
        admin.local_addr().expect("a"),
    );
    let g = gateway.clone();
    tokio::spawn(async move { g.serve(main, std::future::pending()).await });
    tokio::spawn(async move { gateway.serve_admin(admin, std::future::pending()).await });

    assert_eq!(
        get_path(admin_addr, "/-/health", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_path(admin_addr, "/-/ready", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_path(admin_addr, "/health", None).await.status,
        StatusCode::NOT_FOUND
    );
    // With admin_listen, `/-/...` on the main listener is an ordinary path, and no
    // route of this configuration covers it.
    assert_eq!(
        get_path(main_addr, "/-/health", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_path(main_addr, "/health", None).await.status,
        StatusCode::OK
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .get(
            format!("http://{admin_addr}/-/metrics")
                .parse()
                .expect("uri"),
        )
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("bearer_guard_gateway_requests_total"),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_serve_returns() {
    let env = env().await;
    let gateway = Gateway::from_config(GatewayConfig::from_toml(&config(&env, "")).expect("p"))
        .expect("config");
    let (addr, stop, server) = spawn_gateway(gateway).await;
    assert_eq!(get_path(addr, "/health", None).await.status, StatusCode::OK);
    let _ = stop.send(());
    let finished = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "serve returns after shutdown"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    // An upstream that reports each arrival and answers only when released.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let upstream = common::spawn_app(axum::Router::new().route(
        "/hold",
        get(move || {
            let (arrived_tx, gate) = (arrived_tx.clone(), gate.clone());
            async move {
                let _ = arrived_tx.send(());
                gate.notified().await;
                "done"
            }
        }),
    ))
    .await;
    let toml = minimal_config(upstream, "http://127.0.0.1:1/jwks", "public = true");
    let gateway =
        Gateway::from_config(GatewayConfig::from_toml(&toml).expect("parse")).expect("config");
    let (addr, stop, server) = spawn_gateway(gateway).await;
    let request = tokio::spawn(async move { get_path(addr, "/hold", None).await.status });
    arrived
        .recv()
        .await
        .expect("the request reached the upstream");
    let _ = stop.send(());
    release.notify_one();
    assert_eq!(request.await.expect("request task"), StatusCode::OK);
    let finished = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "serve returns after draining"
    );
}

/// The binary refuses a bad configuration with exit status 2, naming file and key.
#[cfg(feature = "cli")]
#[test]
fn binary_reports_config_errors_with_exit_status_2() {
    let path = std::env::temp_dir().join(format!("bearer-guard-gw-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:1\"\n\
         [[issuer]]\nissuer = \"https://x.example\"\naudiences = [\"a\"]\n",
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
        .args(["gateway", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: route: ", path.display())),
        "{stderr}"
    );
}

#[test]
fn config_errors_name_the_key() {
    let base = r#"
listen = "127.0.0.1:0"
upstream = "http://127.0.0.1:1"
[[issuer]]
issuer = "https://login.example.com"
audiences = ["a"]
[[route]]
path = "/"
"#;
    let err = |toml: &str| match GatewayConfig::from_toml(toml).and_then(Gateway::from_config) {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e) => e,
    };
    let unknown = err(&format!("{base}\nbogus = 1\n"));
    assert!(unknown.to_string().contains("bogus"), "{unknown}");
    let e = err(&base.replace("path = \"/\"", "path = \"/\"\nscopes_any = [\"a b\"]"));
    assert_eq!(e.key(), Some("route[0].scopes_any[0]"));
    let e = err(&base.replace(
        "audiences = [\"a\"]",
        "audiences = [\"a\"]\nalgorithms = [\"HS999\"]",
    ));
    assert_eq!(e.key(), Some("issuer[0].algorithms[0]"));
    let e = err(&base.replace("http://127.0.0.1:1", "ftp://x"));
    assert_eq!(e.key(), Some("upstream"));
    let e = err(&base.replace("https://login.example.com", "http://idp.example.com"));
    assert_eq!(e.key(), Some("issuer[0]"), "{e}");
    let e = err(&base.replace("[[route]]\npath = \"/\"\n", ""));
    assert_eq!(e.key(), Some("route"));
    let e = err(&base.replace("audiences = [\"a\"]", ""));
    assert_eq!(e.key(), Some("issuer[0].audiences"));
    let in_file = e.in_file("gw.toml").to_string();
    assert!(
        in_file.starts_with("gw.toml: issuer[0].audiences: "),
        "{in_file}"
    );
}

/// The header names the upstream received, as WSGI/CGI would read them: lower
/// case, `_` as `-`.
fn received_normalised(a: &Answer) -> Vec<(String, String)> {
    a.body["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase().replace('_', "-"),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn claim_header_look_alikes_never_reach_the_upstream_on_any_route() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let token = env.key.token(&env.issuer, unix_now(), "orders:read");
    let auth = format!("Bearer {token}");
    let spoof = [
        ("x_auth_sub", "mallory"),
        ("X_Auth_Sub", "mallory2"),
        ("x-auth_client-id", "evil"),
        ("x_auth_scope", "orders:admin"),
        ("x_forwarded_for", "203.0.113.9"),
        ("x_forwarded_host", "admin.internal"),
        ("content_length", "0"),
    ];
    for (path, with_token) in [("/api/me", true), ("/health", false)] {
        let mut headers = spoof.to_vec();
        if with_token {
            headers.push(("authorization", &auth));
        }
        let a = send(gw.addr, Method::GET, path, &headers).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        let got = received_normalised(&a);
        let values = |name: &str| -> Vec<&str> {
            got.iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        if with_token {
            assert_eq!(values("x-auth-sub"), ["alice"], "{path}: {got:?}");
            assert_eq!(values("x-auth-client-id"), ["cli-app"], "{path}");
            assert_eq!(values("x-auth-scope"), ["orders:read"], "{path}");
        } else {
            for claim in ["x-auth-sub", "x-auth-client-id", "x-auth-scope"] {
                assert!(values(claim).is_empty(), "{path}: {claim} in {got:?}");
            }
        }
        assert_eq!(values("x-forwarded-for"), ["127.0.0.1"], "{path}: {got:?}");
        assert_eq!(values("x-forwarded-host"), [gw.addr.to_string().as_str()]);
        assert!(
            a.body["headers"].get("content_length").is_none(),
            "{path}: {got:?}"
        );
    }
}

#[tokio::test]
async fn path_parameters_and_hidden_encodings_are_refused_never_forwarded() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    for bad in [
        "/health/..;/api/secret",
        "/health;jsessionid=1",
        "/health/%3B/x",
        "/health/x%3b/../../api",
        "/health/%252e%252e/api",
        "/health/%25%32%65%25%32%65/api",
        "/health/%C0%AE%C0%AE/api",
        "/health/%FF",
        "/health/%C2%85",
    ] {
        let a = get_path(gw.addr, bad, None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(a.body["error"], "invalid_request", "{bad}");
        assert!(a.headers.get("x-upstream").is_none(), "{bad} forwarded");
    }
    // A `%` that starts no encoding, and `;` in the query, are data.
    let a = get_path(gw.addr, "/health/100%25?a=1;b=2", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["path"], "/health/100%25?a=1;b=2");
}

#[tokio::test]
async fn encoded_and_raw_spellings_of_a_path_take_the_same_route() {
    let env = env().await;
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
[[issuer]]
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]
[[route]]
path = "/caf%C3%A9"
scopes_all = ["cafe:admin"]
[[route]]
path = "/v1/things:batch"
scopes_all = ["things:admin"]
[[route]]
path = "/"
public = true
"#,
        upstream = env.upstream,
        issuer = env.issuer,
    );
    let gw = start(&toml).await;
    for path in [
        "/caf%C3%A9/menu",
        "/caf\u{e9}/menu",
        "/caf%c3%a9",
        "/v1/things:batch",
        "/v1/things%3Abatch",
        "/v1/things%3abatch/x",
    ] {
        let a = get_path(gw.addr, path, None).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{path}: took the public route"
        );
        assert!(a.headers.get("x-upstream").is_none(), "{path}");
    }
    assert_eq!(
        get_path(gw.addr, "/cafe", None).await.status,
        StatusCode::OK,
        "another path stays public"
    );
}

#[tokio::test]
async fn claim_values_the_upstream_would_read_differently_refuse_the_request() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let now = unix_now();
    let token_with = |claim: &str, value: Value| {
        let mut claims = json!({
            "iss": env.issuer, "sub": "alice", "aud": AUDIENCE, "client_id": "cli-app",
            "iat": now, "exp": now + 3600, "scope": "orders:read", "tenant": "acme",
        });
        claims[claim] = value;
        env.key.sign(&claims)
    };
    let refused = [
        ("sub", json!(" alice")),
        ("sub", json!("alice ")),
        ("sub", json!("alice\t")),
        ("sub", json!("ali\u{1b}[31mce")),
        ("sub", json!("alice\r\nx-admin: 1")),
        ("sub", json!("jos\u{e9}")),
        ("sub", json!("\u{202e}ecila")),
        ("sub", json!("")),
        ("client_id", json!("cli\u{0}app")),
        ("tenant", json!(null)),
        ("tenant", json!({"name": "acme"})),
        ("tenant", json!(["acme,globex", "initech"])),
        ("tenant", json!(["acme", ["globex"]])),
        ("tenant", json!(["acme", " globex"])),
        ("scp", json!(["orders:read", "orders:admin x"])),
        ("scp", json!(["orders:read", "a\"b"])),
    ];
    for (claim, value) in refused {
        let token = token_with(claim, value.clone());
        let a = get_path(gw.addr, "/api/me", Some(&token)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{claim}: {value}");
        let challenge = a.headers["www-authenticate"].to_str().unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{claim}: {challenge}"
        );
        assert!(a.headers.get("x-upstream").is_none(), "{claim}: {value}");
    }
    // Inner spaces and any printable ASCII are carried unchanged.
    let token = token_with("sub", json!("Alice Smith <a@x.example>"));
    let a = get_path(gw.addr, "/api/me", Some(&token)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["headers"]["x-auth-sub"], "Alice Smith <a@x.example>");
    // Numbers and booleans as their JSON text, arrays joined with `,`.
    for (value, header) in [
        (json!(42), "42"),
        (json!(true), "true"),
        (json!(["acme"]), "acme"),
        (json!(["acme", "globex", 7]), "acme,globex,7"),
    ] {
        let a = get_path(
            gw.addr,
            "/api/me",
            Some(&token_with("tenant", value.clone())),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{value}");
        assert_eq!(a.body["headers"]["x-auth-tenant"], header, "{value}");
    }
    // An absent claim sends no header; the request goes through.
    let mut claims = json!({
        "iss": env.issuer, "aud": AUDIENCE, "iat": now, "exp": now + 3600,
    });
    claims["scope"] = json!("orders:read");
    let a = get_path(gw.addr, "/api/me", Some(&env.key.sign(&claims))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body["headers"].get("x-auth-sub").is_none());
    assert!(a.body["headers"].get("x-auth-tenant").is_none());
}

/// Every route, method and client-address override of the default removal list.
const OVERRIDES: [(&str, &str); 22] = [
    ("x-original-url", "/admin"),
    ("x-rewrite-url", "/admin"),
    ("x-original-uri", "/admin"),
    ("x-forwarded-uri", "/admin"),
    ("x-forwarded-path", "/admin"),
    ("x-forwarded-prefix", "/admin"),
    ("x-envoy-original-path", "/admin"),
    ("x-http-method-override", "DELETE"),
    ("x-http-method", "DELETE"),
    ("x-method-override", "DELETE"),
    ("x-original-method", "DELETE"),
    ("x-forwarded-method", "DELETE"),
    ("x-forwarded-port", "443"),
    ("x-forwarded-server", "admin.internal"),
    ("x-forwarded-ssl", "on"),
    ("x-real-ip", "10.0.0.1"),
    ("x-client-ip", "10.0.0.1"),
    ("true-client-ip", "10.0.0.1"),
    ("x-cluster-client-ip", "10.0.0.1"),
    ("cf-connecting-ip", "10.0.0.1"),
    ("fastly-client-ip", "10.0.0.1"),
    ("x_original_url", "/admin"),
];

#[tokio::test]
async fn route_method_and_address_overrides_are_removed_by_default() {
    let env = env().await;
    let gw = start(&config(&env, "")).await;
    let token = env.key.token(&env.issuer, unix_now(), "");
    let auth = format!("Bearer {token}");
    let mut with_token = OVERRIDES.to_vec();
    with_token.push(("authorization", &auth));
    for (path, headers) in [("/health", OVERRIDES.to_vec()), ("/api", with_token)] {
        let a = send(gw.addr, Method::GET, path, &headers).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        let got = received_normalised(&a);
        for (name, _) in OVERRIDES {
            let name = name.replace('_', "-");
            assert!(
                got.iter().all(|(k, _)| *k != name),
                "{path}: {name} forwarded: {got:?}"
            );
        }
        assert_eq!(a.body["method"], "GET");
    }

    // Behind a trusted proxy its address headers are kept; overrides never are.
    let trusted = config(&env, "").replace("[forward]\n", "[forward]\ntrust_forwarded = true\n");
    let gw = start(&trusted).await;
    let a = send(gw.addr, Method::GET, "/health", &OVERRIDES).await;
    let h = &a.body["headers"];
    assert_eq!(h["x-real-ip"], "10.0.0.1");
    assert_eq!(h["x-forwarded-port"], "443");
    for name in [
        "x-original-url",
        "x-forwarded-uri",
        "x-http-method-override",
        "x_original_url",
    ] {
        assert!(h.get(name).is_none(), "{name}: {h}");
    }
}

#[tokio::test]
async fn readiness_probes_retry_the_key_load_only_after_the_back_off() {
    use bearer_guard::authz_server::{AuthorizationServer, JwksBehavior};
    use bearer_guard::clock::ManualClock;

    let clock = ManualClock::starting_now();
    let idp = AuthorizationServer::builder()
        .audience(AUDIENCE)
        .clock(clock.clone())
        .start()
        .await
        .expect("authorization server");
    idp.set_jwks_behavior(JwksBehavior::Status(503));
    let toml = minimal_config(spawn_echo().await, idp.jwks_uri().as_ref(), "public = true")
        .replace("https://login.example.com", idp.issuer().as_ref());
    let toml = format!("admin_on_listen = true\n{toml}");
    let c = clock.clone();
    let gateway = Gateway::from_config_with(GatewayConfig::from_toml(&toml).expect("parse"), |b| {
        b.clock(c)
    })
    .expect("config");
    assert!(gateway.guard().prefetch().await.is_err());
    assert_eq!(idp.jwks_fetch_count(), 1);
    let (addr, _stop, _served) = spawn_gateway(gateway).await;
    let probe = || async move { get_path(addr, "/-/ready", None).await.status };

    for _ in 0..20 {
        assert_eq!(probe().await, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(idp.jwks_fetch_count(), 1, "probes within the 5 s back-off");
    clock.advance(Duration::from_millis(4_900));
    assert_eq!(probe().await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(idp.jwks_fetch_count(), 1, "still within the back-off");

    clock.advance(Duration::from_millis(100));
    for _ in 0..10 {
        assert_eq!(probe().await, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(idp.jwks_fetch_count(), 2, "one retry per back-off period");

    idp.set_jwks_behavior(JwksBehavior::Normal);
    assert_eq!(
        probe().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not yet retried"
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(probe().await, StatusCode::OK);
    for _ in 0..10 {
        assert_eq!(probe().await, StatusCode::OK);
    }
    assert_eq!(idp.jwks_fetch_count(), 3, "ready probes fetch nothing");
}

#[tokio::test]
async fn route_claim_rules_and_step_up_from_the_toml() {
    let env = env().await;
    let toml = config(&env, "").replace(
        "[[route]]\npath = \"/api\"\n",
        r#"[[route]]
path = "/api/admin"
claims = { tenant = ["acme"] }
claims_contain_all = { "realm_access.roles" = ["admin"] }
[[route]]
path = "/api/pay"
acr_values = ["mfa"]
max_age = 300
[[route]]
path = "/api"
"#,
    );
    let gw = start(&toml).await;
    let now = unix_now();
    let token = |extra: Value| {
        let mut claims = json!({
            "iss": env.issuer, "sub": "alice", "aud": AUDIENCE, "client_id": "cli-app",
            "iat": now, "exp": now + 3600, "scope": "orders:read", "tenant": "acme",
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            claims[k] = v.clone();
        }
        env.key.sign(&claims)
    };
    let admin = token(json!({ "realm_access": { "roles": ["admin"] } }));
    assert_eq!(
        get_path(gw.addr, "/api/admin", Some(&admin)).await.status,
        StatusCode::OK
    );
    let globex = token(json!({ "tenant": "globex", "realm_access": { "roles": ["admin"] } }));
    let refused = get_path(gw.addr, "/api/admin", Some(&globex)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let challenge = refused.headers["www-authenticate"]
        .to_str()
        .unwrap_or_default();
    assert!(
        challenge.contains("insufficient_scope") && !challenge.contains("globex"),
        "{challenge}"
    );
    let no_role = token(json!({ "realm_access": { "roles": ["viewer"] } }));
    assert_eq!(
        get_path(gw.addr, "/api/admin", Some(&no_role)).await.status,
        StatusCode::FORBIDDEN
    );

    let weak = token(json!({ "acr": "pwd", "auth_time": now }));
    let step_up = get_path(gw.addr, "/api/pay", Some(&weak)).await;
    assert_eq!(step_up.status, StatusCode::UNAUTHORIZED);
    let challenge = step_up.headers["www-authenticate"]
        .to_str()
        .unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(challenge.contains("acr_values=\"mfa\""), "{challenge}");
    let stale = token(json!({ "acr": "mfa", "auth_time": now - 3600 }));
    let challenge = get_path(gw.addr, "/api/pay", Some(&stale)).await.headers["www-authenticate"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.contains("max_age=\"300\""), "{challenge}");
    let fresh = token(json!({ "acr": "mfa", "auth_time": now }));
    assert_eq!(
        get_path(gw.addr, "/api/pay", Some(&fresh)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn nested_array_claims_go_joined_with_the_configured_separator() {
    let env = env().await;
    let toml = config(&env, "").replace(
        r#"tenant = "x-auth-tenant" }"#,
        "tenant = \"x-auth-tenant\", \"realm_access.roles\" = \"x-auth-roles\" }\nclaims_separator = \"; \"",
    );
    assert!(toml.contains("claims_separator"), "{toml}");
    let gw = start(&toml).await;
    let now = unix_now();
    let token = |roles: Value| {
        env.key.sign(&json!({
            "iss": env.issuer, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 3600,
            "scope": "orders:read", "tenant": ["acme", "globex"], "realm_access": { "roles": roles },
        }))
    };
    let a = get_path(gw.addr, "/api/me", Some(&token(json!(["admin", "ops"])))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["headers"]["x-auth-roles"], "admin; ops");
    assert_eq!(a.body["headers"]["x-auth-tenant"], "acme; globex");
    // An element holding the separator would split differently upstream.
    let a = get_path(gw.addr, "/api/me", Some(&token(json!(["admin; root"])))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // An empty separator is refused, naming the key.
    let bad = config(&env, "").replace(
        r#"tenant = "x-auth-tenant" }"#,
        "tenant = \"x-auth-tenant\" }\nclaims_separator = \"\"",
    );
    let e = Gateway::from_config(GatewayConfig::from_toml(&bad).expect("parse")).unwrap_err();
    assert_eq!(e.key(), Some("forward.claims_separator"), "{e}");
}

/// Several MiB both ways through a kept-alive connection at each end: the
/// request body reaches the upstream whole, the upstream's streamed answer (in
/// chunks of uneven sizes) reaches the client whole, byte for byte, and the same
/// client connection then carries another request.
#[tokio::test]
async fn large_bodies_are_relayed_whole_both_ways() {
    // A pattern that a dropped, repeated or reordered chunk would not reproduce.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
            .collect()
    }
    const UP: usize = 3 << 20;
    const DOWN: usize = 5 << 20;
    async fn upstream(req: AxumRequest) -> axum::response::Response {
        let received = req.into_body().collect().await.map(|b| b.to_bytes());
        let intact = received.is_ok_and(|b| b.as_ref() == pattern(UP).as_slice());
        let data = Bytes::from(pattern(DOWN));
        let mut chunks = Vec::new();
        let (mut at, mut size) = (0, 1);
        while at < data.len() {
            let end = (at + size).min(data.len());
            chunks.push(Ok::<_, std::io::Error>(data.slice(at..end)));
            at = end;
            size = size * 7 % 200_003 + 1;
        }
        axum::response::Response::builder()
            .header("x-upload-intact", intact.to_string())
            .body(axum::body::Body::from_stream(futures_util::stream::iter(
                chunks,
            )))
            .unwrap_or_default()
    }
    let up = common::spawn_app(axum::Router::new().fallback(upstream)).await;
    let toml = minimal_config(up, "http://127.0.0.1:9/unused", "public = true");
    let gw = start(&toml).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for round in 0..2 {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{}/blob", gw.addr))
            .body(Full::new(Bytes::from(pattern(UP))))
            .expect("request");
        let response = client.request(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK, "round {round}");
        assert_eq!(
            response.headers()["x-upload-intact"],
            "true",
            "round {round}"
        );
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body.len(), DOWN, "round {round}");
        assert!(
            body.as_ref() == pattern(DOWN).as_slice(),
            "round {round}: bytes differ"
        );
    }
}
