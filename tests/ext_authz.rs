//! One decision, every front door: each row of one table (a request and the
//! answer it must get) is sent through the layer, the gateway, the HTTP check
//! (as Envoy's HTTP mode, Caddy/Traefik and nginx send it) and the gRPC check
//! (shaped as Envoy sends it), all on 127.0.0.1 port 0.
//!
//! Envoy cannot be installed here: the gRPC check is called by a tonic client on
//! the same protos, with what Envoy puts in `attributes.request.http` (the
//! HTTP/2 pseudo-headers folded into `headers`, `path` with its query,
//! `:authority` as host, lower-case names). Traefik neither: its requests are the
//! forward-auth rows (`X-Forwarded-Method`/`-Uri`/`-Host`/`-Proto`), which Caddy
//! also sends and `tests/proxies.rs` runs through a real Caddy.
#![cfg(feature = "ext-authz")]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::routing::{get, post};
use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
use bearer_guard::gateway::{Gateway, GatewayConfig};
use bearer_guard::{Guard, Issuer as GuardIssuer, RequireScope};
use bytes::Bytes;
use common::checks::{Checks, Issuer, sections, spawn_recorder, start_checks};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use http::{HeaderMap, Method};
use serde_json::Value;
use tokio::net::TcpListener;

/// Which token a row sends.
#[derive(Clone, Copy, Debug)]
enum Token {
    None,
    Read,
    Write,
    Expired,
    /// `Authorization: Bearer a b`: not a token68, so 400 `invalid_request`.
    Malformed,
}

struct Row {
    name: &'static str,
    method: Method,
    target: &'static str,
    token: Token,
    /// Extra client headers (spoofing attempts).
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    /// The exact `WWW-Authenticate`, when there is one.
    challenge: Option<&'static str>,
    /// The `Allow` of a 405.
    allow: Option<&'static str>,
    /// The layer (an axum app with the same requirements) serves this row too:
    /// routing answers (404, 405, a refused path) are the router's own there.
    layer: bool,
}

const SPOOF: &[(&str, &str)] = &[
    ("X-Auth-Sub", "admin"),
    ("x_auth_sub", "admin"),
    ("X_Auth_Scope", "orders:admin"),
    ("X-Original-URL", "/admin"),
    ("X-HTTP-Method-Override", "DELETE"),
];

fn table() -> Vec<Row> {
    let row = |name, method, target, token, status, challenge| Row {
        name,
        method,
        target,
        token,
        headers: &[],
        status,
        challenge,
        allow: None,
        layer: true,
    };
    vec![
        row(
            "valid token passes",
            Method::GET,
            "/orders/7?page=2",
            Token::Read,
            200,
            None,
        ),
        Row {
            headers: SPOOF,
            ..row(
                "client claim headers are replaced",
                Method::GET,
                "/orders",
                Token::Read,
                200,
                None,
            )
        },
        Row {
            headers: SPOOF,
            ..row(
                "public route, spoofed claim headers removed",
                Method::GET,
                "/health",
                Token::None,
                200,
                None,
            )
        },
        row(
            "no token is 401 without error code",
            Method::GET,
            "/orders",
            Token::None,
            401,
            Some(r#"Bearer realm="orders-api""#),
        ),
        row(
            "expired token is 401 invalid_token",
            Method::GET,
            "/orders",
            Token::Expired,
            401,
            Some(
                r#"Bearer realm="orders-api", error="invalid_token", error_description="token expired""#,
            ),
        ),
        row(
            "malformed credentials are 400 invalid_request",
            Method::GET,
            "/orders",
            Token::Malformed,
            400,
            Some(
                r#"Bearer realm="orders-api", error="invalid_request", error_description="malformed bearer token""#,
            ),
        ),
        row(
            "missing scope is 403 insufficient_scope",
            Method::POST,
            "/orders",
            Token::Read,
            403,
            Some(
                r#"Bearer realm="orders-api", error="insufficient_scope", error_description="token lacks a required scope", scope="orders:write""#,
            ),
        ),
        row(
            "write scope may POST",
            Method::POST,
            "/orders",
            Token::Write,
            200,
            None,
        ),
        Row {
            layer: false,
            ..row(
                "unknown route is 404",
                Method::GET,
                "/nope",
                Token::Read,
                404,
                None,
            )
        },
        Row {
            layer: false,
            allow: Some("GET"),
            ..row(
                "wrong method is 405 with Allow",
                Method::DELETE,
                "/admin",
                Token::Read,
                405,
                None,
            )
        },
        Row {
            layer: false,
            ..row(
                "path above the root is 400",
                Method::GET,
                "/orders/%2e%2e/%2e%2e/admin",
                Token::Read,
                400,
                None,
            )
        },
    ]
}

/// What one front door answered, reduced to what the table compares.
#[derive(Debug)]
struct Seen {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    /// Allowed only: the claim headers the upstream gets.
    claims: Vec<(String, String)>,
    /// Allowed only: the client-sent names the proxy must remove.
    removed: Vec<String>,
}

struct World {
    issuer: Issuer,
    checks: Checks,
    gateway: SocketAddr,
    layer: SocketAddr,
}

fn auth(world: &World, token: Token) -> Option<String> {
    match token {
        Token::None => None,
        Token::Read => Some(format!("Bearer {}", world.issuer.token("orders:read"))),
        Token::Write => Some(format!("Bearer {}", world.issuer.token("orders:write"))),
        Token::Expired => Some(format!("Bearer {}", world.issuer.expired())),
        Token::Malformed => Some("Bearer a b".to_owned()),
    }
}

async fn world() -> World {
    let issuer = Issuer::start().await;
    let checks = start_checks(&issuer.url, "").await;
    let upstream = spawn_recorder().await;
    let gw_toml = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\n{}",
        sections(&issuer.url)
    );
    let gateway = Gateway::from_config(GatewayConfig::from_toml(&gw_toml).expect("parse"))
        .expect("gateway config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gw_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { gateway.serve(listener, std::future::pending()).await });

    // The layer with the same requirements as the route table.
    let guard = Guard::builder()
        .issuer(GuardIssuer::new(issuer.url.as_str()))
        .audience(common::AUDIENCE)
        .realm("orders-api")
        .build()
        .expect("guard");
    let ok = || async { "ok" };
    let protected = axum::Router::new()
        .route(
            "/orders",
            get(ok)
                .route_layer(RequireScope::any(["orders:read", "orders:admin"]))
                .merge(post(ok).route_layer(RequireScope::all(["orders:write"]))),
        )
        .route(
            "/orders/{id}",
            get(ok).route_layer(RequireScope::any(["orders:read", "orders:admin"])),
        )
        .layer(guard.layer());
    let app = axum::Router::new()
        .route("/health", get(ok))
        .merge(protected);
    let layer = common::spawn_app(app).await;
    World {
        issuer,
        checks,
        gateway: gw_addr,
        layer,
    }
}

async fn send(
    _world: &World,
    method: Method,
    url: String,
    headers: &[(String, String)],
) -> (u16, HeaderMap, Bytes) {
    common::checks::send(method, &url, headers).await
}

fn client_headers(world: &World, row: &Row) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = row
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(a) = auth(world, row.token) {
        h.push(("authorization".to_owned(), a));
    }
    h
}

const CLAIMS: [&str; 3] = ["x-auth-sub", "x-auth-client-id", "x-auth-scope"];

fn claims_in(headers: &HeaderMap) -> Vec<(String, String)> {
    CLAIMS
        .iter()
        .filter_map(|n| {
            // Empty: "no such claim" (the forward-auth answer names them all).
            headers.get(*n).filter(|v| !v.is_empty()).map(|v| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
        })
        .collect()
}

async fn through_gateway(world: &World, row: &Row) -> Seen {
    let url = format!("http://{}{}", world.gateway, row.target);
    let (status, headers, body) =
        send(world, row.method.clone(), url, &client_headers(world, row)).await;
    let mut seen = Seen {
        status,
        headers,
        body,
        claims: vec![],
        removed: vec![],
    };
    if status == 200 {
        let echo: Value = serde_json::from_slice(&seen.body).expect("echo");
        let mut upstream = HeaderMap::new();
        for (k, v) in echo["headers"].as_object().expect("headers") {
            let name = http::HeaderName::from_bytes(k.as_bytes()).expect("name");
            upstream.insert(name, v.as_str().unwrap_or_default().parse().expect("value"));
        }
        seen.claims = claims_in(&upstream);
        // What the upstream did not get of what the client sent.
        seen.removed = row
            .headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .filter(|k| !upstream.contains_key(k.as_str()))
            .collect();
    }
    seen
}

/// How a proxy tells the HTTP check the original request.
#[derive(Clone, Copy, Debug)]
enum Convention {
    /// Envoy's HTTP mode: the check request is the original, path and all.
    Envoy,
    /// Caddy and Traefik.
    ForwardAuth,
    /// nginx, as `examples/proxies/nginx.conf` configures it.
    Nginx,
}

async fn through_http_check(world: &World, row: &Row, convention: Convention) -> Seen {
    let mut headers = client_headers(world, row);
    let url = match convention {
        Convention::Envoy => format!("http://{}{}", world.checks.http, row.target),
        Convention::ForwardAuth => {
            for (k, v) in [
                ("x-forwarded-method", row.method.as_str()),
                ("x-forwarded-uri", row.target),
                ("x-forwarded-host", "api.example.com"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-for", "192.0.2.7"),
            ] {
                headers.push((k.to_owned(), v.to_owned()));
            }
            format!("http://{}/check", world.checks.http)
        }
        Convention::Nginx => {
            headers.push(("x-original-method".to_owned(), row.method.to_string()));
            headers.push(("x-original-uri".to_owned(), row.target.to_owned()));
            format!("http://{}/check", world.checks.http)
        }
    };
    let method = match convention {
        Convention::Envoy => row.method.clone(),
        // Caddy and Traefik check with the original method; nginx's subrequest
        // is a GET for every method.
        Convention::ForwardAuth => row.method.clone(),
        Convention::Nginx => Method::GET,
    };
    let (status, headers, body) = send(world, method, url, &headers).await;
    let removed = headers
        .get("x-envoy-auth-headers-to-remove")
        .map(|v| {
            v.to_str()
                .expect("ascii")
                .split(", ")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let claims = if (200..300).contains(&status) {
        claims_in(&headers)
    } else {
        vec![]
    };
    Seen {
        status,
        headers,
        body,
        claims,
        removed,
    }
}

/// The request as Envoy's ext_authz filter puts it in `attributes.request.http`.
fn envoy_request(world: &World, row: &Row) -> CheckRequest {
    envoy_check(&row.method, row.target, client_headers(world, row))
}

/// `method target` with `client` headers, as Envoy's ext_authz filter puts it
/// in `attributes.request.http`: lower-case names, the HTTP/2 pseudo-headers
/// folded in, `path` with the query.
fn envoy_check(method: &Method, target: &str, client: Vec<(String, String)>) -> CheckRequest {
    let mut headers: HashMap<String, String> = HashMap::new();
    for (k, v) in client {
        headers.insert(k.to_ascii_lowercase(), v);
    }
    headers.insert(":method".to_owned(), method.to_string());
    headers.insert(":path".to_owned(), target.to_owned());
    headers.insert(":authority".to_owned(), "api.example.com".to_owned());
    headers.insert(":scheme".to_owned(), "https".to_owned());
    let query = target.split_once('?').map_or("", |(_, q)| q);
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "1".to_owned(),
                    method: method.to_string(),
                    headers,
                    path: target.to_owned(),
                    host: "api.example.com".to_owned(),
                    scheme: "https".to_owned(),
                    query: query.to_owned(),
                    protocol: "HTTP/2".to_owned(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

async fn grpc_check(addr: SocketAddr, request: CheckRequest) -> CheckResponse {
    let mut client = AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    client.check(request).await.expect("check").into_inner()
}

async fn through_grpc(world: &World, row: &Row) -> Seen {
    let response = grpc_check(world.checks.grpc, envoy_request(world, row)).await;
    let code = response.status.as_ref().map_or(-1, |s| s.code);
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(code, 0, "{}: an allowed check has status OK", row.name);
            let claims = ok
                .headers
                .iter()
                .map(|h| {
                    assert_eq!(h.append_action, 2, "OVERWRITE_IF_EXISTS_OR_ADD");
                    let h = h.header.as_ref().expect("header");
                    (h.key.clone(), h.value.clone())
                })
                .collect();
            Seen {
                status: 200,
                headers: HeaderMap::new(),
                body: Bytes::new(),
                claims,
                removed: ok.headers_to_remove,
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_ne!(code, 0, "{}: a denial has a non-OK status", row.name);
            let mut headers = HeaderMap::new();
            for h in &denied.headers {
                let h = h.header.as_ref().expect("header");
                let name = http::HeaderName::from_bytes(h.key.as_bytes()).expect("name");
                headers.insert(name, h.value.parse().expect("value"));
            }
            Seen {
                status: denied.status.map_or(0, |s| s.code as u16),
                headers,
                body: Bytes::from(denied.body),
                claims: vec![],
                removed: vec![],
            }
        }
        other => panic!("{}: {other:?}", row.name),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().expect("ascii"))
}

/// The row's expectations, and that `seen` equals the gateway's answer.
fn check_row(row: &Row, door: &str, seen: &Seen, gateway: &Seen) {
    let ctx = format!("{} via {door}", row.name);
    assert_eq!(seen.status, row.status, "{ctx}");
    assert_eq!(
        header(&seen.headers, "www-authenticate"),
        row.challenge,
        "{ctx}"
    );
    assert_eq!(header(&seen.headers, "allow"), row.allow, "{ctx}");
    if row.status != 200 {
        assert_eq!(seen.body, gateway.body, "{ctx}: the same JSON body");
        assert_eq!(
            header(&seen.headers, "cache-control"),
            Some("no-store"),
            "{ctx}"
        );
    } else {
        let (mut got, mut want) = (seen.claims.clone(), gateway.claims.clone());
        got.sort();
        want.sort();
        assert_eq!(got, want, "{ctx}: the same claim headers");
    }
}

/// The client-sent header names of `row` that are not set by name from the
/// token (`claims`), so must be removed (lower-case, in the row's order).
fn replaced_elsewhere(row: &Row, claims: &[(String, String)]) -> Vec<String> {
    row.headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| !claims.iter().any(|(n, _)| n == k))
        .collect()
}

#[tokio::test]
async fn every_front_door_gives_the_layers_decision() {
    let world = world().await;
    for row in table() {
        let gateway = through_gateway(&world, &row).await;
        check_row(&row, "gateway", &gateway, &gateway);
        if row.status == 200 {
            let expected_claims: Vec<(String, String)> = match row.token {
                Token::None => vec![],
                Token::Read | Token::Write => vec![
                    ("x-auth-sub".to_owned(), "alice".to_owned()),
                    ("x-auth-client-id".to_owned(), "cli-app".to_owned()),
                    (
                        "x-auth-scope".to_owned(),
                        if matches!(row.token, Token::Read) {
                            "orders:read"
                        } else {
                            "orders:write"
                        }
                        .to_owned(),
                    ),
                ],
                _ => unreachable!("refused tokens are not allowed rows"),
            };
            assert_eq!(gateway.claims, expected_claims, "{}", row.name);
            assert_eq!(
                gateway.removed,
                replaced_elsewhere(&row, &gateway.claims),
                "{}: no client copy reaches the upstream",
                row.name
            );
        }
        if row.layer {
            let url = format!("http://{}{}", world.layer, row.target);
            let (status, headers, body) = send(
                &world,
                row.method.clone(),
                url,
                &client_headers(&world, &row),
            )
            .await;
            let layer = Seen {
                status,
                headers,
                body,
                claims: gateway.claims.clone(),
                removed: vec![],
            };
            check_row(&row, "layer", &layer, &gateway);
        }
        for convention in [Convention::Envoy, Convention::ForwardAuth] {
            let seen = through_http_check(&world, &row, convention).await;
            check_row(
                &row,
                &format!("http check ({convention:?})"),
                &seen,
                &gateway,
            );
            if matches!(convention, Convention::ForwardAuth) && row.status == 200 {
                for name in CLAIMS {
                    assert!(
                        seen.headers.contains_key(name),
                        "{}: Caddy and Traefik copy {name}, so it is always answered",
                        row.name
                    );
                }
            }
        }
        let nginx = through_http_check(&world, &row, Convention::Nginx).await;
        if row.status == 200 {
            check_row(&row, "http check (nginx)", &nginx, &gateway);
        } else {
            // nginx's auth_request passes only 401 and 403: the true answer rides
            // in X-Auth-Status and X-Auth-Body for the error_page location.
            let expected = if row.status == 403 { 403 } else { 401 };
            assert_eq!(nginx.status, expected, "{} via nginx", row.name);
            assert_eq!(
                header(&nginx.headers, "x-auth-status"),
                Some(row.status.to_string().as_str())
            );
            assert_eq!(
                header(&nginx.headers, "x-auth-body").map(str::as_bytes),
                Some(&gateway.body[..])
            );
            assert_eq!(
                header(&nginx.headers, "www-authenticate"),
                row.challenge,
                "{} via nginx",
                row.name
            );
            assert_eq!(
                header(&nginx.headers, "allow"),
                row.allow,
                "{} via nginx",
                row.name
            );
        }
        let grpc = through_grpc(&world, &row).await;
        check_row(&row, "grpc", &grpc, &gateway);
        if row.status == 200 {
            // Envoy overwrites the exact names it sets; every other spelling of a
            // claim header is named for removal.
            let mut expected = replaced_elsewhere(&row, &grpc.claims);
            expected.sort();
            let mut removed = grpc.removed.clone();
            removed.sort();
            assert_eq!(removed, expected, "{} via grpc", row.name);
            let mut envoy_http = through_http_check(&world, &row, Convention::Envoy)
                .await
                .removed;
            envoy_http.sort();
            assert_eq!(envoy_http, expected, "{} via envoy http", row.name);
        }
    }
}

#[tokio::test]
async fn grpc_check_puts_the_verified_claims_in_dynamic_metadata() {
    let world = world().await;
    let rows = table();
    let response = grpc_check(world.checks.grpc, envoy_request(&world, &rows[0])).await;
    let meta = response.dynamic_metadata.expect("metadata").fields;
    let text = |k: &str| match meta.get(k).and_then(|v| v.kind.clone()) {
        Some(Kind::StringValue(s)) => s,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("iss"), world.issuer.url);
    assert_eq!(text("sub"), "alice");
    assert_eq!(text("client_id"), "cli-app");
    assert_eq!(text("scope"), "orders:read");
    match meta.get("aud").and_then(|v| v.kind.clone()) {
        Some(Kind::ListValue(list)) => {
            assert_eq!(list.values.len(), 1);
            assert_eq!(
                list.values[0].kind,
                Some(Kind::StringValue(common::AUDIENCE.to_owned()))
            );
        }
        other => panic!("aud: {other:?}"),
    }
    let public = grpc_check(world.checks.grpc, envoy_request(&world, &rows[2])).await;
    assert!(
        public.dynamic_metadata.is_none(),
        "a public route verified nothing"
    );
}

#[tokio::test]
async fn original_request_headers_from_an_untrusted_peer_are_refused() {
    let issuer = Issuer::start().await;
    // Loopback is not among the trusted proxies here, so this test is the
    // "anyone else" that reaches the check service directly.
    let checks = start_checks(&issuer.url, r#"trusted_proxies = ["10.0.0.0/8"]"#).await;
    let client = common::http();
    let url = format!("http://{}/check", checks.http);
    let write = issuer.token("orders:read");
    for forged in [
        [
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/health"),
        ],
        [("x-original-method", "GET"), ("x-original-uri", "/health")],
        [
            ("x-forwarded-uri", "/orders"),
            ("x-forwarded-proto", "https"),
        ],
    ] {
        let mut req = client.post(&url).bearer_auth(&write);
        for (k, v) in forged {
            req = req.header(k, v);
        }
        let r = req.send().await.expect("check");
        assert_eq!(r.status(), 403, "{forged:?}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"], "forbidden");
    }
    // Envoy's HTTP mode carries no such header: the request itself is decided.
    let direct = client
        .get(format!("http://{}/orders", checks.http))
        .bearer_auth(&write);
    assert_eq!(direct.send().await.expect("check").status(), 200);
}

#[tokio::test]
async fn both_proxy_conventions_in_one_request_are_refused() {
    let issuer = Issuer::start().await;
    let checks = start_checks(&issuer.url, "").await;
    // A client adding X-Original-URI through Caddy (which sets X-Forwarded-Uri).
    let r = common::http()
        .get(format!("http://{}/check", checks.http))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/orders")
        .header("x-original-uri", "/health")
        .header("x-original-method", "GET")
        .send()
        .await
        .expect("check");
    // Read as nginx's convention, so the 400 comes as 401 + X-Auth-Status.
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-auth-status"], "400");
    let one_twice = common::http()
        .get(format!("http://{}/check", checks.http))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/health")
        .header("x-forwarded-uri", "/orders")
        .send()
        .await
        .expect("check");
    assert_eq!(one_twice.status(), 400, "a repeated original URI");
}

#[tokio::test]
async fn no_loadable_keys_is_a_503_denial_with_retry_after() {
    // An issuer whose discovery nobody answers.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let checks = start_checks(&dead, "").await;
    let key = common::TestKey::new("k");
    let token = key.token(&dead, common::unix_now(), "orders:read");

    let r = common::http()
        .get(format!("http://{}/orders", checks.http))
        .bearer_auth(&token)
        .send()
        .await
        .expect("check");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        !r.headers().contains_key("www-authenticate"),
        "the token may be fine"
    );

    let auth = vec![("authorization".to_owned(), format!("Bearer {token}"))];
    let request = envoy_check(&Method::GET, "/orders", auth);
    let response = grpc_check(checks.grpc, request).await;
    // A CheckResponse, not an RPC error: Envoy answers the client with it and
    // does not apply failure_mode_allow.
    assert_eq!(
        response.status.map(|s| s.code),
        Some(tonic::Code::Unavailable as i32)
    );
    match response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(d.status.map(|s| s.code), Some(503));
            assert!(
                d.headers
                    .iter()
                    .any(|h| h.header.as_ref().is_some_and(|h| h.key == "retry-after"))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn grpc_check_without_http_attributes_is_a_400_denial() {
    let issuer = Issuer::start().await;
    let checks = start_checks(&issuer.url, "").await;
    let response = grpc_check(checks.grpc, CheckRequest::default()).await;
    match response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => assert_eq!(d.status.map(|s| s.code), Some(400)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn admin_listener_serves_health_ready_and_metrics() {
    let issuer = Issuer::start().await;
    let checks = start_checks(&issuer.url, "").await;
    let client = common::http();
    let health = client
        .get(format!("http://{}/-/health", checks.admin))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://{}/-/ready", checks.admin))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200, "a probe loads the keys");
    assert!(checks.service.guard().ready());
    let metrics = client
        .get(format!("http://{}/-/metrics", checks.admin))
        .send()
        .await
        .expect("metrics");
    assert_eq!(
        metrics.status(),
        404,
        "no recorder installed in this process"
    );
}

#[test]
fn configuration_errors_name_the_key() {
    let issuer = "[[issuer]]\nissuer = \"https://login.example.com\"\naudiences = [\"a\"]\n[[route]]\npath = \"/\"\n";
    let cases = [
        ("admin_listen = \"127.0.0.1:0\"\n", Some("grpc_listen")),
        (
            "http_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"10.0.0.1/8\"]\n",
            Some("trusted_proxies[0]"),
        ),
        (
            "http_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout_secs = 0\n",
            Some("shutdown_timeout_secs"),
        ),
    ];
    for (top, key) in cases {
        let config = ExtAuthzConfig::from_toml(&format!("{top}{issuer}")).expect("shape");
        let e = ExtAuthz::from_config(config).expect_err(top);
        assert_eq!(e.key(), key, "{e}");
    }
    let unknown = ExtAuthzConfig::from_toml(&format!(
        "http_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{issuer}[forward]\ntrust_forwarded = true\n"
    ))
    .expect_err("the proxy sets X-Forwarded-*");
    assert!(unknown.to_string().contains("trust_forwarded"), "{unknown}");
    let scope = ExtAuthzConfig::from_toml(&format!(
        "http_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{issuer}scopes_all = [\"a b\"]\n"
    ))
    .expect("shape");
    let e = ExtAuthz::from_config(scope).expect_err("scope");
    assert_eq!(e.key(), Some("route[0].scopes_all[0]"));
}

#[tokio::test]
async fn grpc_check_reads_raw_header_maps_too() {
    use envoy_types::pb::envoy::config::core::v3::{
        HeaderMap as PbHeaderMap, HeaderValue as PbHeader,
    };
    let issuer = Issuer::start().await;
    let checks = start_checks(&issuer.url, "").await;
    let raw = |key: &str, value: &str| PbHeader {
        key: key.to_owned(),
        raw_value: value.as_bytes().to_vec(),
        ..PbHeader::default()
    };
    // Envoy with `encode_raw_headers: true`: `header_map`, raw bytes, `headers` empty.
    let mut request = envoy_check(&Method::GET, "/orders", vec![]);
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers.clear();
        http.header_map = Some(PbHeaderMap {
            headers: vec![
                raw(":method", "GET"),
                raw(":path", "/orders"),
                raw(
                    "authorization",
                    &format!("Bearer {}", issuer.token("orders:read")),
                ),
                raw("x_auth_sub", "admin"),
            ],
        });
    }
    let response = grpc_check(checks.grpc, request).await;
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert!(ok.headers.iter().any(|h| {
                h.header
                    .as_ref()
                    .is_some_and(|h| h.key == "x-auth-sub" && h.value == "alice")
            }));
            assert_eq!(ok.headers_to_remove, ["x_auth_sub"]);
        }
        other => panic!("{other:?}"),
    }
}
