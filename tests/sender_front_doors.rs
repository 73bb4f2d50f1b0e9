//! Sender-constrained tokens through the gateway and the ext-authz check
//! services: DPoP proofs (RFC 9449) and certificate-bound tokens (RFC 8705),
//! configured by the shared `[dpop]` section, with tokens minted by the bundled
//! authorization server and everything on 127.0.0.1 port 0.
//!
//! Envoy cannot be installed here: the gRPC check is called by a tonic client
//! with requests shaped as Envoy sends them (`attributes.request.http`, and the
//! client certificate in `attributes.source.certificate` as URL-encoded PEM).
#![cfg(all(feature = "ext-authz", feature = "redis"))]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bearer_guard::authz_server::{AuthorizationServerHandle, DpopKey};
use bearer_guard::clock::{Clock, ManualClock};
use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
use bearer_guard::gateway::{Gateway, GatewayConfig};
use bearer_guard::sender::ClientCertificate;
use common::checks::{send, spawn_recorder};
use common::*;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use http::Method;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What clients call the API: never the address the gateway listens on.
const ORIGIN: &str = "https://api.example.com";
const ALGS: &str = r#"algs="RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA""#;

/// The issuer and routes of every front door here: `/pay` needs a DPoP-bound
/// token, `/` any valid token.
fn sections(server: &AuthorizationServerHandle, dpop: &str) -> String {
    format!(
        r#"
realm = "orders"
[[issuer]]
issuer = "{issuer}"
jwks_uri = "{jwks}"
audiences = ["{API}"]

[dpop]
public_url = "{ORIGIN}"
{dpop}

[[route]]
path = "/pay"
dpop_bound = true
[[route]]
path = "/"

[forward]
claims_to_headers = {{ sub = "x-auth-sub" }}
"#,
        issuer = server.issuer(),
        jwks = server.jwks_uri(),
    )
}

struct World {
    clock: ManualClock,
    server: AuthorizationServerHandle,
    key: DpopKey,
}

async fn world() -> World {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    World {
        clock,
        server,
        key: DpopKey::generate(),
    }
}

impl World {
    fn bound_token(&self) -> String {
        dpop_bound_token(&self.server, &self.clock, &self.key)
    }

    fn plain_token(&self) -> String {
        token_with(&self.server, &self.clock, json!({}), json!({}))
    }

    fn cert_bound_token(&self, certificate: &ClientCertificate) -> String {
        let cnf = json!({"cnf": {"x5t#S256": certificate.x5t_s256()}});
        token_with(&self.server, &self.clock, json!({}), cnf)
    }

    /// A fresh proof for `method` `{ORIGIN}{path}` with `token`.
    fn proof(&self, method: &str, path: &str, token: &str) -> String {
        self.key
            .proof(method, &format!("{ORIGIN}{path}"))
            .access_token(token)
            .iat(self.clock.unix_seconds())
            .sign()
    }

    fn proof_with_nonce(&self, path: &str, token: &str, nonce: &str) -> String {
        self.key
            .proof("GET", &format!("{ORIGIN}{path}"))
            .access_token(token)
            .iat(self.clock.unix_seconds())
            .nonce(nonce)
            .sign()
    }
}

/// A gateway in front of the recorder with `dpop` lines in `[dpop]`.
async fn gateway(w: &World, dpop: &str) -> (String, oneshot::Sender<()>) {
    let upstream = spawn_recorder().await;
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\n{}",
        sections(&w.server, dpop)
    );
    let config = GatewayConfig::from_toml(&toml).expect("parse");
    let clock = w.clock.clone();
    let gateway = Gateway::from_config_with(config, |b| b.clock(clock)).expect("valid config");
    let bound = gateway.bind().await.expect("bind");
    let url = format!("http://{}", bound.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

fn dpop_headers(token: &str, proof: &str) -> Vec<(String, String)> {
    vec![
        ("authorization".into(), format!("DPoP {token}")),
        ("dpop".into(), proof.to_owned()),
    ]
}

fn challenges(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

fn json_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("JSON body")
}

#[tokio::test]
async fn gateway_accepts_a_dpop_bound_token_with_its_proof_and_refuses_a_replay() {
    let w = world().await;
    let (url, _stop) = gateway(&w, "").await;
    let token = w.bound_token();
    let proof = w.proof("GET", "/pay/7", &token);
    let (status, _, body) = send(
        Method::GET,
        &format!("{url}/pay/7"),
        &dpop_headers(&token, &proof),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = json_body(&body);
    assert_eq!(seen["headers"]["x-auth-sub"], "alice");
    assert_eq!(seen["path"], "/pay/7");

    // The same proof again: a replay, refused on the DPoP challenge.
    let (status, headers, body) = send(
        Method::GET,
        &format!("{url}/pay/7"),
        &dpop_headers(&token, &proof),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(json_body(&body)["error"], "invalid_dpop_proof");
    assert_eq!(
        challenges(&headers),
        [
            r#"Bearer realm="orders""#.to_owned(),
            format!(
                r#"DPoP realm="orders", error="invalid_dpop_proof", error_description="DPoP proof replayed", {ALGS}"#
            ),
        ]
    );

    // A proof for another method, or no proof at all.
    let post = w.proof("POST", "/pay/7", &token);
    let (status, _, body) = send(
        Method::GET,
        &format!("{url}/pay/7"),
        &dpop_headers(&token, &post),
    )
    .await;
    assert_eq!(
        (status, json_body(&body)["error"].clone()),
        (401, json!("invalid_dpop_proof"))
    );
    let only_token = [("authorization".to_owned(), format!("DPoP {token}"))];
    let (status, _, body) = send(Method::GET, &format!("{url}/pay/7"), &only_token).await;
    assert_eq!(
        (status, json_body(&body)["error"].clone()),
        (401, json!("invalid_dpop_proof"))
    );
}

#[tokio::test]
async fn gateway_checks_the_proof_on_every_request_of_a_cached_token() {
    let w = world().await;
    let (url, _stop) = gateway(&w, "").await;
    let token = w.bound_token();
    for _ in 0..3 {
        let proof = w.proof("GET", "/anything", &token);
        let (status, _, _) = send(
            Method::GET,
            &format!("{url}/anything"),
            &dpop_headers(&token, &proof),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _, _) = send(
            Method::GET,
            &format!("{url}/anything"),
            &dpop_headers(&token, &proof),
        )
        .await;
        assert_eq!(status, 401, "a cached token does not skip the replay check");
    }
    // The bound token as a plain bearer token (RFC 9449 §7.2).
    let (status, _, body) = send(
        Method::GET,
        &format!("{url}/anything"),
        &[("authorization".into(), format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(
        (status, json_body(&body)["error"].clone()),
        (401, json!("invalid_token"))
    );
}

#[tokio::test]
async fn gateway_builds_htu_from_the_public_url_whatever_host_says() {
    let w = world().await;
    let (url, _stop) = gateway(&w, "").await;
    let token = w.bound_token();
    // The client lies in Host; the proof names the public URL: accepted.
    let mut headers = dpop_headers(&token, &w.proof("GET", "/pay", &token));
    headers.push(("host".into(), "evil.example".into()));
    let (status, _, _) = send(Method::GET, &format!("{url}/pay"), &headers).await;
    assert_eq!(status, 200);
    // A proof made for the Host the client sent: refused.
    let evil = w
        .key
        .proof("GET", "http://evil.example/pay")
        .access_token(&token)
        .iat(w.clock.unix_seconds())
        .sign();
    let mut headers = dpop_headers(&token, &evil);
    headers.push(("host".into(), "evil.example".into()));
    let (status, _, body) = send(Method::GET, &format!("{url}/pay"), &headers).await;
    assert_eq!(status, 401);
    assert_eq!(json_body(&body)["error"], "invalid_dpop_proof");
    // A proof for the listener's own address: refused too.
    let direct = w
        .key
        .proof("GET", &format!("{url}/pay"))
        .access_token(&token)
        .iat(w.clock.unix_seconds())
        .sign();
    let (status, _, _) = send(
        Method::GET,
        &format!("{url}/pay"),
        &dpop_headers(&token, &direct),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn gateway_route_dpop_bound_refuses_plain_bearer_tokens() {
    let w = world().await;
    let (url, _stop) = gateway(&w, "").await;
    let bearer = [(
        "authorization".to_owned(),
        format!("Bearer {}", w.plain_token()),
    )];
    let (status, _, _) = send(Method::GET, &format!("{url}/orders"), &bearer).await;
    assert_eq!(status, 200, "other routes take plain bearer tokens");
    let (status, headers, body) = send(Method::GET, &format!("{url}/pay"), &bearer).await;
    assert_eq!(status, 401);
    assert_eq!(json_body(&body)["error"], "invalid_token");
    let www = challenges(&headers);
    assert_eq!(www.len(), 2, "{www:?}");
    assert!(
        www[0].starts_with(r#"Bearer realm="orders", error="invalid_token""#),
        "{www:?}"
    );
    assert_eq!(www[1], format!(r#"DPoP realm="orders", {ALGS}"#));
}

#[tokio::test]
async fn gateway_refuses_a_certificate_bound_token_without_a_certificate() {
    // The gateway listens on plain http here: no connection has a certificate.
    let w = world().await;
    let (url, _stop) = gateway(&w, "").await;
    let certificate = ClientCertificate::from_der(b"any certificate");
    let token = w.cert_bound_token(&certificate);
    let (status, _, body) = send(
        Method::GET,
        &format!("{url}/orders"),
        &[("authorization".into(), format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(json_body(&body)["error"], "invalid_token");
}

#[tokio::test]
async fn gateway_demands_nonces_and_sends_the_next_one_on_success() {
    let w = world().await;
    let secret = tempdir().join("nonce.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-gateway\n").expect("write");
    let dpop = format!("nonce_secret_file = {:?}", secret.display().to_string());
    let (url, _stop) = gateway(&w, &dpop).await;
    let token = w.bound_token();
    let (status, headers, body) = send(
        Method::GET,
        &format!("{url}/pay"),
        &dpop_headers(&token, &w.proof("GET", "/pay", &token)),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(json_body(&body)["error"], "use_dpop_nonce");
    let nonce = headers["dpop-nonce"].to_str().expect("ascii").to_owned();
    assert!(challenges(&headers)[1].contains(r#"error="use_dpop_nonce""#));

    let proof = w.proof_with_nonce("/pay", &token, &nonce);
    let (status, headers, _) = send(
        Method::GET,
        &format!("{url}/pay"),
        &dpop_headers(&token, &proof),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers.contains_key("dpop-nonce"),
        "the next nonce on success (RFC 9449 §8.2)"
    );
}

/// The check services with `extra` top-level TOML and `dpop` lines in `[dpop]`.
struct Checks {
    grpc: SocketAddr,
    http: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn checks(w: &World, extra: &str, dpop: &str) -> Checks {
    let toml = format!(
        "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{extra}\n{}",
        sections(&w.server, dpop)
    );
    let config = ExtAuthzConfig::from_toml(&toml).expect("parse");
    let clock = w.clock.clone();
    let service = ExtAuthz::from_config_with(config, |b| b.clock(clock)).expect("valid config");
    serve_checks(service).await
}

async fn serve_checks(service: ExtAuthz) -> Checks {
    use futures_util::FutureExt as _;
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addrs = (
        grpc.local_addr().expect("addr"),
        http.local_addr().expect("addr"),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    }
    .boxed()
    .shared();
    tokio::spawn(async move {
        let _ = tokio::join!(
            service.serve_grpc(grpc, stopped.clone()),
            service.serve_http(http, stopped),
        );
    });
    Checks {
        grpc: addrs.0,
        http: addrs.1,
        _stop: stop,
    }
}

/// A check as Envoy sends it: lower-case headers, pseudo-headers folded in.
fn envoy_check(
    method: &str,
    path: &str,
    client: &[(String, String)],
    certificate: &str,
) -> CheckRequest {
    let mut headers: std::collections::HashMap<String, String> = client
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    headers.insert(":method".into(), method.into());
    headers.insert(":path".into(), path.into());
    headers.insert(":authority".into(), "evil.example".into());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                certificate: certificate.to_owned(),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "evil.example".into(),
                    headers,
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

/// The denial's HTTP status and headers (name -> values), or 200 and the
/// headers for the client of an allowed check.
fn grpc_answer(response: &CheckResponse) -> (u16, Vec<(String, String)>, String) {
    let pairs = |options: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        options
            .iter()
            .map(|o| {
                let h = o.header.as_ref().expect("header");
                (h.key.clone(), h.value.clone())
            })
            .collect::<Vec<_>>()
    };
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            (200, pairs(&ok.response_headers_to_add), String::new())
        }
        Some(HttpResponse::DeniedResponse(denied)) => (
            denied.status.map_or(0, |s| s.code as u16),
            pairs(&denied.headers),
            denied.body.clone(),
        ),
        other => panic!("{other:?}"),
    }
}

fn value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut found = headers.iter().filter(|(k, _)| k == name);
    let first = found.next().map(|(_, v)| v.as_str());
    assert!(found.next().is_none(), "{name} appears once");
    first
}

#[tokio::test]
async fn grpc_check_verifies_the_proof_against_the_original_method_and_path() {
    let w = world().await;
    let c = checks(&w, "", "").await;
    let token = w.bound_token();
    let proof = w.proof("POST", "/pay/7", &token);
    let client = dpop_headers(&token, &proof);
    let ok = grpc_check(c.grpc, envoy_check("POST", "/pay/7?x=1", &client, "")).await;
    assert_eq!(ok.status.as_ref().map(|s| s.code), Some(0));
    assert_eq!(grpc_answer(&ok).0, 200);

    // Replayed: both challenges in one header value, since Envoy's denied
    // headers replace each other by name.
    let denied = grpc_check(c.grpc, envoy_check("POST", "/pay/7", &client, "")).await;
    let (status, headers, body) = grpc_answer(&denied);
    assert_eq!(status, 401);
    assert_eq!(json_body(body.as_bytes())["error"], "invalid_dpop_proof");
    let www = value(&headers, "www-authenticate").expect("challenge");
    assert!(
        www.starts_with(
            r#"Bearer realm="orders", DPoP realm="orders", error="invalid_dpop_proof""#
        ),
        "{www}"
    );
    assert_eq!(
        denied.status.map(|s| s.code),
        Some(tonic::Code::Unauthenticated as i32)
    );

    // The same proof for another method is refused.
    let other = w.proof("POST", "/pay/8", &token);
    let wrong_method = grpc_check(
        c.grpc,
        envoy_check("GET", "/pay/8", &dpop_headers(&token, &other), ""),
    )
    .await;
    assert_eq!(grpc_answer(&wrong_method).0, 401);
}

#[tokio::test]
async fn grpc_check_takes_the_certificate_from_the_source_peer() {
    let w = world().await;
    let c = checks(&w, "", "").await;
    let mine = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()]).expect("cert");
    let theirs =
        rcgen::generate_simple_self_signed(vec!["other.example".to_owned()]).expect("cert");
    let certificate = ClientCertificate::from_der(mine.cert.der());
    let token = w.cert_bound_token(&certificate);
    let bearer = [("authorization".to_owned(), format!("Bearer {token}"))];
    let encoded = |pem: &str| utf8_percent_encode(pem, NON_ALPHANUMERIC).to_string();

    let ok = grpc_check(
        c.grpc,
        envoy_check("GET", "/orders", &bearer, &encoded(&pem(mine.cert.der()))),
    )
    .await;
    assert_eq!(grpc_answer(&ok).0, 200);
    for (certificate, status, error) in [
        (String::new(), 401, "invalid_token"),
        (encoded(&pem(theirs.cert.der())), 401, "invalid_token"),
        (
            "%2D%2D%2D%2D%2DBEGIN%20CERTIFICATE%2D%2D%2D%2D%2D%0A%zz".to_owned(),
            400,
            "invalid_request",
        ),
        (
            encoded("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
            400,
            "invalid_request",
        ),
    ] {
        let r = grpc_check(c.grpc, envoy_check("GET", "/orders", &bearer, &certificate)).await;
        let (got, _, body) = grpc_answer(&r);
        assert_eq!(
            (got, json_body(body.as_bytes())["error"].clone()),
            (status, json!(error)),
            "{certificate}"
        );
    }
}

#[tokio::test]
async fn grpc_check_sends_the_next_nonce_on_success() {
    let w = world().await;
    let dir = tempdir();
    let secret = dir.join("nonce.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-grpc\n").expect("write");
    let c = checks(
        &w,
        "",
        &format!("nonce_secret_file = {:?}", secret.display().to_string()),
    )
    .await;
    let token = w.bound_token();
    let first = grpc_check(
        c.grpc,
        envoy_check(
            "GET",
            "/pay",
            &dpop_headers(&token, &w.proof("GET", "/pay", &token)),
            "",
        ),
    )
    .await;
    let (status, headers, body) = grpc_answer(&first);
    assert_eq!(
        (status, json_body(body.as_bytes())["error"].clone()),
        (401, json!("use_dpop_nonce"))
    );
    let nonce = value(&headers, "dpop-nonce")
        .expect("DPoP-Nonce")
        .to_owned();
    let proof = w.proof_with_nonce("/pay", &token, &nonce);
    let ok = grpc_check(
        c.grpc,
        envoy_check("GET", "/pay", &dpop_headers(&token, &proof), ""),
    )
    .await;
    let (status, to_client, _) = grpc_answer(&ok);
    assert_eq!(status, 200);
    assert!(value(&to_client, "dpop-nonce").is_some(), "{to_client:?}");
}

/// A certificate as PEM, 64 base64 characters a line (rcgen's `pem` feature is off).
fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bearer-guard-sender-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

#[tokio::test]
async fn http_check_reads_dpop_and_the_certificate_header_of_a_trusted_proxy() {
    let w = world().await;
    let c = checks(&w, r#"client_cert_header = "x-client-cert""#, "").await;
    let url = format!("http://{}/check", c.http);
    let token = w.bound_token();
    // Caddy/Traefik: X-Forwarded-Method/-Uri, the client's DPoP header as is.
    let mut headers = dpop_headers(&token, &w.proof("PUT", "/pay/1", &token));
    headers.push(("x-forwarded-method".into(), "PUT".into()));
    headers.push(("x-forwarded-uri".into(), "/pay/1?q=2".into()));
    let (status, answer, _) = send(Method::GET, &url, &headers).await;
    assert_eq!(status, 200);
    assert_eq!(answer["x-auth-sub"], "alice");
    // nginx: X-Original-*, and a replay refused as 401 with the challenge.
    let mut replay = dpop_headers(&token, &headers[1].1);
    replay.push(("x-original-method".into(), "PUT".into()));
    replay.push(("x-original-uri".into(), "/pay/1".into()));
    let (status, answer, _) = send(Method::GET, &url, &replay).await;
    assert_eq!(status, 401);
    assert_eq!(answer["x-auth-status"], "401");
    assert!(
        challenges(&answer)
            .iter()
            .any(|c| c.contains(r#"error="invalid_dpop_proof""#))
    );

    // A certificate-bound token with the proxy's certificate header (Caddy's
    // base64 DER, nginx's URL-encoded PEM).
    let mine = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()]).expect("cert");
    let token = w.cert_bound_token(&ClientCertificate::from_der(mine.cert.der()));
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(mine.cert.der())
    };
    let pem = utf8_percent_encode(&pem(mine.cert.der()), NON_ALPHANUMERIC).to_string();
    for (certificate, expected) in [
        (Some(b64.as_str()), 200),
        (Some(pem.as_str()), 200),
        (Some(""), 401),
        (None, 401),
        (Some("%%%"), 400),
    ] {
        let mut headers = vec![
            ("authorization".to_owned(), format!("Bearer {token}")),
            ("x-forwarded-method".into(), "GET".into()),
            ("x-forwarded-uri".into(), "/orders".into()),
        ];
        if let Some(certificate) = certificate {
            headers.push(("x-client-cert".into(), certificate.to_owned()));
        }
        let (status, _, _) = send(Method::GET, &url, &headers).await;
        assert_eq!(status, expected, "{certificate:?}");
    }
}

#[tokio::test]
async fn http_check_refuses_a_certificate_header_from_an_untrusted_peer() {
    let w = world().await;
    // Loopback is not a trusted proxy here.
    let extra = "client_cert_header = \"x-client-cert\"\ntrusted_proxies = [\"10.0.0.0/8\"]\ngrpc_allowed_peers = [\"127.0.0.1\"]";
    let c = checks(&w, extra, "").await;
    let mine = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()]).expect("cert");
    let token = w.cert_bound_token(&ClientCertificate::from_der(mine.cert.der()));
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(mine.cert.der())
    };
    // Envoy's HTTP mode (the check request is the original one) with a forged header.
    let headers = [
        ("authorization".to_owned(), format!("Bearer {token}")),
        ("x-client-cert".into(), b64),
    ];
    let (status, _, body) = send(Method::GET, &format!("http://{}/orders", c.http), &headers).await;
    assert_eq!(status, 403);
    assert_eq!(json_body(&body)["error"], "forbidden");
}

#[tokio::test]
async fn grpc_check_from_a_peer_not_allowed_is_denied() {
    let w = world().await;
    let c = checks(&w, "grpc_allowed_peers = [\"10.0.0.0/8\"]", "").await;
    let bearer = [(
        "authorization".to_owned(),
        format!("Bearer {}", w.plain_token()),
    )];
    let r = grpc_check(c.grpc, envoy_check("GET", "/orders", &bearer, "")).await;
    assert_eq!(
        r.status.as_ref().map(|s| s.code),
        Some(tonic::Code::PermissionDenied as i32)
    );
    let (status, _, body) = grpc_answer(&r);
    assert_eq!(
        (status, json_body(body.as_bytes())["error"].clone()),
        (403, json!("forbidden"))
    );

    // The default (loopback) lets the same check through.
    let c = checks(&w, "", "").await;
    let r = grpc_check(c.grpc, envoy_check("GET", "/orders", &bearer, "")).await;
    assert_eq!(grpc_answer(&r).0, 200);
}

#[tokio::test]
async fn grpc_listener_enforces_its_limits() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = world().await;
    // `[limits]` is a table, so it goes after the sections' top-level keys.
    let limited = |limits: &str| {
        let toml = format!(
            "grpc_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}\n[limits]\n{limits}\n",
            sections(&w.server, "")
        );
        let config = ExtAuthzConfig::from_toml(&toml).expect("parse");
        let clock = w.clock.clone();
        ExtAuthz::from_config_with(config, |b| b.clock(clock)).expect("valid config")
    };
    let c = serve_checks(limited(
        "header_read_timeout_secs = 0.2\nmax_header_bytes = 8192",
    ))
    .await;

    // A connection that never sends a request is closed after the header
    // read timeout (the read returns end of file instead of hanging).
    let mut silent = tokio::net::TcpStream::connect(c.grpc)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("closed by the server within the timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // A check whose headers exceed max_header_bytes is refused by HTTP/2.
    let bearer = [(
        "authorization".to_owned(),
        format!("Bearer {}", w.plain_token()),
    )];
    let ok = grpc_check(c.grpc, envoy_check("GET", "/orders", &bearer, "")).await;
    assert_eq!(grpc_answer(&ok).0, 200);
    let mut client = AuthorizationClient::connect(format!("http://{}", c.grpc))
        .await
        .expect("connect");
    let mut big = tonic::Request::new(envoy_check("GET", "/orders", &bearer, ""));
    big.metadata_mut()
        .insert("x-padding", "a".repeat(16 * 1024).parse().expect("ascii"));
    assert!(
        client.check(big).await.is_err(),
        "an oversized header list is refused"
    );

    // Beyond max_connections a connection is closed at once: no SETTINGS
    // frame answers its HTTP/2 preface, while the held one is served.
    let c = serve_checks(limited("max_connections = 1")).await;
    let mut held = AuthorizationClient::connect(format!("http://{}", c.grpc))
        .await
        .expect("connect");
    let check = || envoy_check("GET", "/orders", &bearer, "");
    assert!(held.check(check()).await.is_ok());
    let mut second = tokio::net::TcpStream::connect(c.grpc)
        .await
        .expect("the kernel accepts");
    let _ = second.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let read = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("closed by the server");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "answered beyond the limit: {read:?}"
    );
    assert!(
        held.check(check()).await.is_ok(),
        "the held connection is served on"
    );
}

#[test]
fn dpop_configuration_errors_name_the_key() {
    let base = |dpop: &str, route: &str, issuer: &str| {
        format!(
            r#"
grpc_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[[issuer]]
issuer = "https://login.example.com"
jwks_uri = "https://login.example.com/jwks"
audiences = ["{API}"]
{issuer}
{dpop}
[[route]]
path = "/"
{route}
"#
        )
    };
    let error = |toml: String| {
        let config = ExtAuthzConfig::from_toml(&toml).map_err(|e| e.to_string());
        match config {
            Err(e) => e,
            Ok(config) => ExtAuthz::from_config(config)
                .expect_err("refused")
                .to_string(),
        }
    };
    for (toml, expected) in [
        (
            base("[dpop]\nmode = \"required\"", "", ""),
            "dpop.public_url: required",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nmode = \"sometimes\"",
                "",
                "",
            ),
            "unknown variant `sometimes`",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nnonce_secret = \"x\"",
                "",
                "",
            ),
            "unknown field `nonce_secret`",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nalgorithms = [\"HS256\"]",
                "",
                "",
            ),
            "dpop.algorithms[0]: HS256 is symmetric",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nalgorithms = [\"XX1\"]",
                "",
                "",
            ),
            "dpop.algorithms[0]",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nreplay_store = \"memcached://x\"",
                "",
                "",
            ),
            "dpop.replay_store",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nreplay_store = \"redis://127.0.0.1/\"\nreplay_capacity = 5",
                "",
                "",
            ),
            "dpop.replay_capacity",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nnonce_secret_env = \"BEARER_GUARD_TEST_UNSET_VARIABLE\"",
                "",
                "",
            ),
            "dpop.nonce_secret_env: the environment variable BEARER_GUARD_TEST_UNSET_VARIABLE is not set",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nnonce_secret_file = \"/nonexistent/secret\"",
                "",
                "",
            ),
            "dpop.nonce_secret_file: cannot read /nonexistent/secret",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nnonce_secret_file = \"/x\"\nnonce_secret_env = \"Y\"",
                "",
                "",
            ),
            "dpop.nonce_secret_file: set nonce_secret_file or nonce_secret_env, not both",
        ),
        (
            base(
                "[dpop]\npublic_url = \"https://a\"\nnonce_lifetime_secs = 60",
                "",
                "",
            ),
            "dpop.nonce_lifetime_secs: nonces are off",
        ),
        (base("[dpop]\npublic_url = \"not a url\"", "", ""), "dpop: "),
        (
            base("", "dpop_bound = true", ""),
            "route[0].dpop_bound: DPoP-bound tokens are accepted only with a [dpop] section",
        ),
        (
            base("", "", "dpop = \"required\""),
            "issuer[0].dpop: DPoP needs a [dpop] section",
        ),
        (
            base("", "public = true\ndpop_bound = true", ""),
            "route[0].public",
        ),
    ] {
        let got = error(toml);
        assert!(got.contains(expected), "expected {expected:?} in {got:?}");
    }
    // Top-level keys are checked too (before any table).
    let toml = format!(
        "grpc_allowed_peers = [\"10.0.0.1/8\"]\nclient_cert_header = \"a b\"\n{}",
        base("", "", "")
    );
    assert!(error(toml).contains("grpc_allowed_peers[0]"));
    let toml = format!("client_cert_header = \"a b\"\n{}", base("", "", ""));
    assert!(error(toml).contains("client_cert_header"));
    let secret = tempdir().join("short.secret");
    std::fs::write(&secret, "short\n").expect("write");
    let toml = base(
        &format!(
            "[dpop]\npublic_url = \"https://a\"\nnonce_secret_file = {:?}",
            secret.display().to_string()
        ),
        "",
        "",
    );
    assert!(error(toml).contains("dpop.nonce_secret_file: the nonce secret is 5 bytes"));
}

/// The decision the gateway makes for each request, with the certificate a TLS
/// listener would put in the request's extensions (the gateway itself listens
/// on plain http until it terminates TLS; the decision is the same code).
#[tokio::test]
async fn the_decision_checks_certificate_bound_tokens_against_the_given_certificate() {
    use bearer_guard::decision::{CheckRequest, Decider, Decision};
    use bearer_guard::gateway::RouteConfig;
    let w = world().await;
    let guard = guard_builder(&w.server, &w.clock).build().expect("guard");
    let routes: Vec<RouteConfig> = toml::from_str::<toml::Table>("[[route]]\npath = \"/\"")
        .expect("toml")["route"]
        .clone()
        .try_into()
        .expect("routes");
    let decider = Decider::from_config(guard, &routes, &Default::default(), Default::default())
        .expect("decider");
    let mine = ClientCertificate::from_der(b"the client's certificate");
    let theirs = ClientCertificate::from_der(b"another certificate");
    let token = w.cert_bound_token(&mine);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("value"),
    );
    for (certificate, allowed) in [(Some(&mine), true), (Some(&theirs), false), (None, false)] {
        // Twice: the second answer comes from the token cache.
        for _ in 0..2 {
            let request = CheckRequest::new(&Method::GET, "/orders", &headers)
                .client_certificate(certificate);
            match decider.decide(&request).await {
                Decision::Allow(allow) => {
                    assert!(allowed, "{certificate:?} allowed");
                    assert!(allow.dpop_nonce.is_none());
                }
                Decision::Deny(deny) => {
                    assert!(!allowed, "{certificate:?} refused");
                    assert_eq!(deny.response.status(), 401);
                    let www = deny.response.headers()["www-authenticate"]
                        .to_str()
                        .expect("ascii");
                    assert!(www.contains(r#"error="invalid_token""#), "{www}");
                }
            }
        }
    }
}

#[test]
fn a_full_dpop_section_is_accepted() {
    let secret = tempdir().join("nonce.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef0123\n").expect("write");
    let toml = format!(
        r#"
grpc_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
grpc_allowed_peers = ["10.0.0.0/8", "::1"]
client_cert_header = "x-client-cert"
[[issuer]]
issuer = "https://login.example.com"
jwks_uri = "https://login.example.com/jwks"
audiences = ["{API}"]
dpop = "required"
[[issuer]]
issuer = "https://legacy.example.com"
jwks_uri = "https://legacy.example.com/jwks"
audiences = ["{API}"]
dpop = "disabled"
[dpop]
public_url = "https://api.example.com/v1"
mode = "allowed"
algorithms = ["ES256", "EdDSA"]
proof_max_age_secs = 30
proof_leeway_secs = 5
max_proof_bytes = 4096
nonce_secret_file = {secret:?}
nonce_lifetime_secs = 120
replay_store = "redis://127.0.0.1:1/"
replay_key_prefix = "orders:"
fail_open_on_store_error = true
[[route]]
path = "/pay"
dpop_bound = true
[[route]]
path = "/"
[limits]
header_read_timeout_secs = 5
idle_timeout_secs = 120
max_connections = 64
max_header_bytes = 16384
max_concurrent_streams = 50
keepalive_secs = 0
"#,
        secret = secret.display().to_string()
    );
    let config = ExtAuthzConfig::from_toml(&toml).expect("parse");
    // Redis is not contacted before the first proof.
    ExtAuthz::from_config(config).expect("valid");
}
