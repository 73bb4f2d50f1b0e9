//! The real proxies: nginx (`auth_request`) and Caddy (`forward_auth`) run the
//! exact configurations of `examples/proxies/` on 127.0.0.1 (their ports
//! replaced), with the ext-authz HTTP check as their check service, in front of
//! an upstream that records what it received.
//!
//! nginx and Caddy must be installed (`.ci/run` installs both from Debian's
//! packages): a missing binary fails these tests with a message, never skips them.
#![cfg(feature = "ext-authz")]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::checks::{Checks, Issuer, send, spawn_recorder, start_checks_with};
use http::{HeaderMap, Method};
use serde_json::Value;
use tokio::process::{Child, Command};

/// The binary `name` from PATH or the sbin directories, or a failing test.
fn require(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: these tests run the real proxy \
                 (apt-get install -y nginx caddy, as .ci/run does)"
            )
        })
}

/// A port that was free a moment ago (the proxy binds it itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh directory for one proxy's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bearer-guard-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The example configuration with its placeholder addresses replaced.
fn config(
    file: &str,
    proxy: &str,
    proxy_addr: SocketAddr,
    checks: &Checks,
    upstream: SocketAddr,
) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/proxies")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("example config");
    for placeholder in [proxy, "127.0.0.1:9002", "127.0.0.1:9000"] {
        assert!(text.contains(placeholder), "{file} names {placeholder}");
    }
    text.replace(proxy, &proxy_addr.to_string())
        .replace("127.0.0.1:9002", &checks.http.to_string())
        .replace("127.0.0.1:9000", &upstream.to_string())
}

/// Waits until `addr` accepts connections (the proxy has started), or fails
/// with what the proxy printed.
async fn wait_listening(addr: SocketAddr, child: &mut Child, name: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                let _ = stderr.read_to_string(&mut err).await;
            }
            panic!("{name} exited with {status}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} did not listen on {addr} within 5 s");
}

/// A running proxy in front of the recorder, checked by the ext-authz service.
struct Proxy {
    addr: SocketAddr,
    issuer: Issuer,
    checks: Checks,
    _child: Child,
    name: &'static str,
}

/// The `[resource_metadata]` of the plain proxies' check service (RFC 9728).
const RESOURCE_METADATA: &str = "[resource_metadata]\nresource = \"https://api.example.com\"\nscopes_supported = [\"orders:read\"]\n";

async fn backing(tables: &str) -> (Issuer, Checks, SocketAddr) {
    let issuer = Issuer::start().await;
    // Only 127.0.0.1 is a proxy: the tests call the check from 127.0.0.2 to be
    // "anyone else" on the same machine.
    let checks = start_checks_with(&issuer.url, r#"trusted_proxies = ["127.0.0.1"]"#, tables).await;
    let upstream = spawn_recorder().await;
    (issuer, checks, upstream)
}

async fn nginx() -> Proxy {
    nginx_over(backing(RESOURCE_METADATA).await).await
}

async fn nginx_over((issuer, checks, upstream): (Issuer, Checks, SocketAddr)) -> Proxy {
    let bin = require("nginx");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let dir = scratch("nginx");
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        config("nginx.conf", "127.0.0.1:8080", addr, &checks, upstream),
    )
    .expect("write");
    let globals = format!(
        "daemon off; error_log stderr; pid {}/nginx.pid;",
        dir.display()
    );
    let mut child = Command::new(bin)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-g")
        .arg(globals)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts");
    wait_listening(addr, &mut child, "nginx").await;
    Proxy {
        addr,
        issuer,
        checks,
        _child: child,
        name: "nginx",
    }
}

async fn caddy() -> Proxy {
    caddy_over(backing(RESOURCE_METADATA).await).await
}

async fn caddy_over((issuer, checks, upstream): (Issuer, Checks, SocketAddr)) -> Proxy {
    let bin = require("caddy");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let dir = scratch("caddy");
    let file = dir.join("Caddyfile");
    std::fs::write(
        &file,
        config("Caddyfile", "127.0.0.1:8081", addr, &checks, upstream),
    )
    .expect("write");
    let mut child = Command::new(bin)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        // Caddy keeps its state under these: the scratch dir, not the user's.
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("caddy starts");
    wait_listening(addr, &mut child, "caddy").await;
    Proxy {
        addr,
        issuer,
        checks,
        _child: child,
        name: "caddy",
    }
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
    raw: bytes::Bytes,
}

impl Proxy {
    async fn request(
        &self,
        method: Method,
        target: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut headers: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(t) = token {
            headers.push(("authorization".to_owned(), format!("Bearer {t}")));
        }
        let (status, headers, raw) =
            send(method, &format!("http://{}{target}", self.addr), &headers).await;
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            raw,
        }
    }

    fn www<'a>(&self, a: &'a Answer) -> &'a str {
        a.headers
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii"))
            .unwrap_or_else(|| panic!("{}: no WWW-Authenticate in {:?}", self.name, a.headers))
    }
}

/// What the upstream recorded of a claim header (any spelling the client used).
fn upstream_header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.body["headers"][name].as_str()
}

const SPOOF: &[(&str, &str)] = &[
    ("X-AUTH-SUB", "admin"),
    ("x_auth_sub", "admin"),
    ("X_Auth_Scope", "orders:admin"),
    ("x-auth-client-id", "evil"),
    ("X-Original-URL", "/admin"),
    ("X-HTTP-Method-Override", "DELETE"),
];

/// Route and method overrides: the upstream must not see them either.
const OVERRIDES: [&str; 2] = ["x-original-url", "x-http-method-override"];

/// No client-sent copy of a claim header reached the upstream.
fn assert_no_spoof(p: &Proxy, a: &Answer) {
    let headers = a.body["headers"].as_object().expect("recorded headers");
    for (name, value) in headers {
        let folded = name.replace('_', "-");
        if folded.starts_with("x-auth-") {
            assert_ne!(value, "admin", "{}: {name} reached the upstream", p.name);
            assert_ne!(value, "evil", "{}: {name} reached the upstream", p.name);
            assert_ne!(
                value, "orders:admin",
                "{}: {name} reached the upstream",
                p.name
            );
        }
        assert!(
            !name.contains('_'),
            "{}: {name} reached the upstream",
            p.name
        );
        assert!(
            !OVERRIDES.contains(&name.as_str()),
            "{}: {name} reached the upstream",
            p.name
        );
    }
}

async fn valid_token_reaches_the_upstream_with_verified_claims(p: &Proxy) {
    let token = p.issuer.token("orders:read");
    let a = p
        .request(Method::GET, "/orders/7?page=2", Some(&token), SPOOF)
        .await;
    assert_eq!(a.status, 200, "{}: {:?}", p.name, a.body);
    assert_eq!(a.body["path"], "/orders/7?page=2", "{}", p.name);
    assert_eq!(
        upstream_header(&a, "x-auth-sub"),
        Some("alice"),
        "{}",
        p.name
    );
    assert_eq!(
        upstream_header(&a, "x-auth-client-id"),
        Some("cli-app"),
        "{}",
        p.name
    );
    assert_eq!(
        upstream_header(&a, "x-auth-scope"),
        Some("orders:read"),
        "{}",
        p.name
    );
    assert_no_spoof(p, &a);
}

async fn public_route_never_passes_client_claim_headers(p: &Proxy) {
    let a = p.request(Method::GET, "/health", None, SPOOF).await;
    assert_eq!(a.status, 200, "{}: {:?}", p.name, a.body);
    assert_no_spoof(p, &a);
    for name in ["x-auth-sub", "x-auth-scope", "x-auth-client-id"] {
        assert!(
            upstream_header(&a, name).is_none_or(str::is_empty),
            "{}: {name} on a public route: {:?}",
            p.name,
            upstream_header(&a, name)
        );
    }
}

/// The `resource_metadata` parameter every challenge ends with (RFC 9728 §5.1).
const METADATA: &str =
    r#"resource_metadata="https://api.example.com/.well-known/oauth-protected-resource""#;

async fn refusals_reach_the_client_with_their_challenge(p: &Proxy) {
    let none = p.request(Method::GET, "/orders", None, &[]).await;
    assert_eq!(none.status, 401, "{}", p.name);
    assert_eq!(
        p.www(&none),
        format!(r#"Bearer realm="orders-api", {METADATA}"#),
        "{}",
        p.name
    );
    assert_eq!(none.body["error"], "unauthorized", "{}", p.name);

    let expired = p
        .request(Method::GET, "/orders", Some(&p.issuer.expired()), &[])
        .await;
    assert_eq!(expired.status, 401, "{}", p.name);
    assert_eq!(
        p.www(&expired),
        format!(
            r#"Bearer realm="orders-api", error="invalid_token", error_description="token expired", {METADATA}"#
        ),
        "{}",
        p.name
    );
    let forged = p
        .request(
            Method::GET,
            "/orders",
            Some("eyJhbGciOiJub25lIn0.e30."),
            &[],
        )
        .await;
    assert_eq!(forged.status, 401, "{}", p.name);
    assert!(
        p.www(&forged).contains(r#"error="invalid_token""#),
        "{}",
        p.name
    );

    let malformed = p
        .request(
            Method::GET,
            "/orders",
            None,
            &[("authorization", "Bearer a b")],
        )
        .await;
    assert_eq!(malformed.status, 400, "{}", p.name);
    assert!(
        p.www(&malformed).contains(r#"error="invalid_request""#),
        "{}",
        p.name
    );

    let read = p.issuer.token("orders:read");
    let scope = p.request(Method::POST, "/orders", Some(&read), &[]).await;
    assert_eq!(scope.status, 403, "{}", p.name);
    assert_eq!(
        p.www(&scope),
        format!(
            r#"Bearer realm="orders-api", error="insufficient_scope", error_description="token lacks a required scope", scope="orders:write", {METADATA}"#
        ),
        "{}",
        p.name
    );
    assert_eq!(scope.body["error"], "insufficient_scope", "{}", p.name);
    assert_eq!(scope.headers["cache-control"], "no-store", "{}", p.name);
}

async fn unknown_route_and_wrong_method_answer_as_the_gateway(p: &Proxy) {
    let token = p.issuer.token("orders:read");
    let unknown = p.request(Method::GET, "/nope", Some(&token), &[]).await;
    assert_eq!(unknown.status, 404, "{}", p.name);
    assert_eq!(
        unknown.body["error"], "not_found",
        "{}: {:?}",
        p.name, unknown.raw
    );
    let method = p.request(Method::DELETE, "/admin", Some(&token), &[]).await;
    assert_eq!(method.status, 405, "{}", p.name);
    assert_eq!(method.headers["allow"], "GET", "{}", p.name);
    assert_eq!(method.body["error"], "method_not_allowed", "{}", p.name);
}

async fn forged_original_uri_from_a_non_proxy_is_refused(p: &Proxy) {
    // 127.0.0.2 is loopback too, but not a configured proxy.
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let token = p.issuer.token("orders:read");
    let r = client
        .get(format!("http://{}/check", p.checks.http))
        .bearer_auth(&token)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/health")
        .send()
        .await
        .expect("direct check");
    assert_eq!(r.status(), 403, "{}", p.name);
    let r = client
        .get(format!("http://{}/check", p.checks.http))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/health")
        .send()
        .await
        .expect("direct check");
    assert_eq!(r.status(), 403, "{}", p.name);
}

/// RFC 9728: the metadata is public, answered by the check service through
/// each proxy's configuration, and never reaches the upstream.
async fn resource_metadata_is_served_without_a_token(p: &Proxy) {
    let a = p
        .request(
            Method::GET,
            "/.well-known/oauth-protected-resource",
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, 200, "{}: {:?}", p.name, a.raw);
    assert_eq!(a.body["resource"], "https://api.example.com", "{}", p.name);
    assert_eq!(
        a.body["authorization_servers"][0], p.issuer.url,
        "{}",
        p.name
    );
    assert!(
        a.body.get("headers").is_none(),
        "{}: not the upstream",
        p.name
    );
}

async fn run_all(p: Proxy) {
    valid_token_reaches_the_upstream_with_verified_claims(&p).await;
    public_route_never_passes_client_claim_headers(&p).await;
    refusals_reach_the_client_with_their_challenge(&p).await;
    unknown_route_and_wrong_method_answer_as_the_gateway(&p).await;
    forged_original_uri_from_a_non_proxy_is_refused(&p).await;
    resource_metadata_is_served_without_a_token(&p).await;
}

#[tokio::test]
async fn nginx_auth_request_enforces_the_route_table() {
    run_all(nginx().await).await;
}

#[tokio::test]
async fn caddy_forward_auth_enforces_the_route_table() {
    run_all(caddy().await).await;
}

/// What clients call the API behind the proxies, for DPoP's `htu`.
const ORIGIN: &str = "https://api.example.com";

/// The check service with DPoP and nonces on (`[dpop]`).
async fn dpop_backing() -> (Issuer, Checks, SocketAddr) {
    let secret = scratch("dpop-secret").join("nonce.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-proxies\n").expect("write");
    let tables = format!(
        "[dpop]\npublic_url = \"{ORIGIN}\"\nnonce_secret_file = {:?}\n",
        secret.display().to_string()
    );
    backing(&tables).await
}

fn challenges(a: &Answer) -> String {
    a.headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A DPoP-bound token through the proxy: the nonce challenge with both schemes
/// and `DPoP-Nonce` reach the client, the retry with the nonce passes (with the
/// next nonce when the proxy passes response headers on success), a replay is
/// refused on the `DPoP` challenge.
async fn dpop_through(p: &Proxy, nonce_on_success: bool) {
    use bearer_guard::authz_server::DpopKey;
    let key = DpopKey::generate();
    let now = common::unix_now();
    let token = p.issuer.key.sign(&serde_json::json!({
        "iss": p.issuer.url, "sub": "alice", "aud": common::AUDIENCE, "client_id": "cli-app",
        "iat": now, "exp": now + 3600, "scope": "orders:read", "cnf": { "jkt": key.thumbprint() },
    }));
    let proof = |nonce: Option<&str>| {
        let proof = key
            .proof("GET", &format!("{ORIGIN}/orders/7"))
            .access_token(&token)
            .iat(common::unix_now());
        match nonce {
            Some(n) => proof.nonce(n).sign(),
            None => proof.sign(),
        }
    };
    let dpop = |proof: String| {
        vec![
            ("authorization".to_owned(), format!("DPoP {token}")),
            ("dpop".to_owned(), proof),
        ]
    };
    let url = format!("http://{}/orders/7", p.addr);

    let (status, headers, raw) = send(Method::GET, &url, &dpop(proof(None))).await;
    let a = Answer {
        status,
        headers,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
    };
    assert_eq!(a.status, 401, "{}: {:?}", p.name, a.raw);
    assert_eq!(a.body["error"], "use_dpop_nonce", "{}", p.name);
    let www = challenges(&a);
    assert!(
        www.starts_with(r#"Bearer realm="orders-api""#),
        "{}: {www}",
        p.name
    );
    assert!(
        www.contains(r#"DPoP realm="orders-api", error="use_dpop_nonce""#),
        "{}: {www}",
        p.name
    );
    assert!(www.contains(r#"algs=""#), "{}: {www}", p.name);
    let nonce = a
        .headers
        .get("dpop-nonce")
        .unwrap_or_else(|| panic!("{}: no DPoP-Nonce", p.name));
    let nonce = nonce.to_str().expect("ascii").to_owned();

    let with_nonce = proof(Some(&nonce));
    let (status, headers, raw) = send(Method::GET, &url, &dpop(with_nonce.clone())).await;
    assert_eq!(status, 200, "{}: {raw:?}", p.name);
    let seen: Value = serde_json::from_slice(&raw).expect("the upstream's echo");
    assert_eq!(seen["headers"]["x-auth-sub"], "alice", "{}", p.name);
    if nonce_on_success {
        assert!(
            headers.contains_key("dpop-nonce"),
            "{}: {headers:?}",
            p.name
        );
    }

    let (status, headers, raw) = send(Method::GET, &url, &dpop(with_nonce)).await;
    let a = Answer {
        status,
        headers,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
    };
    assert_eq!(a.status, 401, "{}", p.name);
    assert_eq!(a.body["error"], "invalid_dpop_proof", "{}", p.name);
    assert!(
        challenges(&a).contains(r#"error="invalid_dpop_proof""#),
        "{}",
        p.name
    );
}

#[tokio::test]
async fn nginx_passes_dpop_challenges_and_nonces() {
    dpop_through(&nginx_over(dpop_backing().await).await, true).await;
}

#[tokio::test]
async fn caddy_passes_dpop_challenges_and_nonces() {
    // forward_auth copies a passing check's headers into the request, not the
    // response: the next nonce reaches Caddy clients on their next refusal.
    dpop_through(&caddy_over(dpop_backing().await).await, false).await;
}

#[test]
fn the_readme_shows_the_tested_proxy_configurations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    for file in ["nginx.conf", "Caddyfile"] {
        let text = std::fs::read_to_string(root.join("examples/proxies").join(file)).expect(file);
        assert!(
            readme.contains(text.trim_end()),
            "README.md must show examples/proxies/{file} verbatim"
        );
    }
}
