//! The gateway's transport with real clients on 127.0.0.1: TLS termination
//! (curl with `--http2` and `--http1.1`, a rustls client reading the served
//! certificate), client certificates, certificate reload, https and h2c
//! upstreams with trailers, and an upstream per route. Certificates come from an
//! rcgen CA written to a temporary directory.
#![cfg(feature = "gateway")]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard::gateway::{Gateway, GatewayConfig};
use bytes::Bytes;
use common::{AUDIENCE, TestKey, unix_now};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A temporary directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "bearer-guard-gateway-tls-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and certificates it signs.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        Pki { ca }
    }

    /// A certificate for `localhost` and `127.0.0.1` (servers) or a client name.
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &self.ca).expect("signed");
        Leaf {
            cert_pem: pem("CERTIFICATE", cert.der()),
            key_pem: pem("PRIVATE KEY", &key.serialize_der()),
            der: cert.der().clone(),
        }
    }

    fn server(&self) -> Leaf {
        self.leaf(&["localhost", "127.0.0.1"])
    }

    fn ca_pem(&self) -> String {
        pem("CERTIFICATE", self.ca.der())
    }
}

/// PEM armour for `der` (rcgen is built without its `pem` feature).
fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn sha256(der: &[u8]) -> Vec<u8> {
    digest(&SHA256, der).as_ref().to_vec()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// An upstream answering every request with JSON: its `name`, the path, the
/// HTTP version and headers it received and the request's trailers; its response
/// ends with the trailers `x-upstream-trailer: <name>` and `grpc-status: 0`.
async fn echo(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<EchoBody>, Infallible> {
    {
        {
            let (parts, body) = req.into_parts();
            let collected = body.collect().await.ok();
            let trailers: serde_json::Map<String, Value> = collected
                .as_ref()
                .and_then(|c| c.trailers())
                .map(|t| {
                    t.iter()
                        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
                        .collect()
                })
                .unwrap_or_default();
            let headers: serde_json::Map<String, Value> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
                .collect();
            let answer = json!({
                "name": name,
                "path": parts.uri.path_and_query().map(|p| p.as_str()),
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "trailers": trailers,
            });
            let mut end = HeaderMap::new();
            end.insert("x-upstream-trailer", HeaderValue::from_static(name));
            end.insert("grpc-status", HeaderValue::from_static("0"));
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from(answer.to_string()))),
                Ok(Frame::trailers(end)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
            let response = Response::builder()
                .header("content-type", "application/json")
                .header("trailer", "x-upstream-trailer, grpc-status")
                .body(body)
                .expect("response");
            Ok(response)
        }
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serves `echo(name)` on 127.0.0.1 (HTTP/1.1 and h2c, or TLS with `tls`).
async fn spawn_upstream(name: &'static str, tls: Option<&Leaf>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tls.map(|leaf| {
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone()], key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| echo(name, req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match acceptor {
                    None => builder.serve_connection(TokioIo::new(tcp), service).await,
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        builder.serve_connection(TokioIo::new(tls), service).await
                    }
                };
            });
        }
    });
    addr
}

use rustls::pki_types::pem::PemObject as _;

struct Env {
    key: TestKey,
    issuer: String,
    pki: Pki,
    dir: Dir,
}

impl Env {
    async fn new() -> Env {
        let key = TestKey::new("tls");
        let issuer = common::spawn_issuer(key.jwks()).await;
        let pki = Pki::new();
        let dir = Dir::new();
        dir.write("ca.pem", &pki.ca_pem());
        Env {
            key,
            issuer,
            pki,
            dir,
        }
    }

    fn token(&self) -> String {
        self.key.token(&self.issuer, unix_now(), "orders:read")
    }

    /// Writes `leaf` as the gateway's certificate files.
    fn install(&self, leaf: &Leaf) {
        self.dir.write("gw.pem", &leaf.cert_pem);
        self.dir.write("gw.key", &leaf.key_pem);
    }

    /// A gateway configuration: `upstream`, `[tls]` with `tls_extra`, `extra` at
    /// the top, routes `/public` (public), `/b` (with `route_b` added) and `/`.
    fn config(
        &self,
        upstream: &str,
        extra: &str,
        tls_extra: Option<&str>,
        route_b: &str,
    ) -> String {
        let tls = match tls_extra {
            None => String::new(),
            Some(more) => format!(
                "[tls]\ncert_file = {:?}\nkey_file = {:?}\n{more}\n",
                self.dir.path("gw.pem"),
                self.dir.path("gw.key")
            ),
        };
        format!(
            r#"
listen = "127.0.0.1:0"
upstream = "{upstream}"
upstream_timeout_secs = 5
{extra}

{tls}
[[issuer]]
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]

[[route]]
path = "/public"
public = true
[[route]]
path = "/b"
{route_b}
[[route]]
path = "/"

[forward]
claims_to_headers = {{ sub = "x-auth-sub" }}
"#,
            issuer = self.issuer,
        )
    }
}

/// A running gateway; dropping it shuts it down.
struct Running {
    addr: SocketAddr,
    gateway: Gateway,
    _stop: oneshot::Sender<()>,
}

async fn start(toml: &str) -> Running {
    let config = GatewayConfig::from_toml(toml).expect("parse");
    let gateway = Gateway::from_config(config).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = gateway.clone();
    tokio::spawn(async move {
        serving
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    Running {
        addr,
        gateway,
        _stop: stop,
    }
}

/// What curl got: its exit code, the body and the HTTP version it spoke.
struct Curl {
    code: i32,
    body: String,
    version: String,
    stderr: String,
}

impl Curl {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?} (stderr {:?})", self.body, self.stderr))
    }
}

/// curl against `https://localhost:<port><path>` trusting the test CA.
async fn curl(env: &Env, port: u16, path: &str, token: Option<&str>, args: &[&str]) -> Curl {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "--cacert",
        &env.dir.path("ca.pem"),
    ])
    .arg("--resolve")
    .arg(format!("localhost:{port}:127.0.0.1"))
    .args(["-w", "\n%{http_version}"])
    .args(args);
    if let Some(token) = token {
        cmd.arg("-H").arg(format!("authorization: Bearer {token}"));
    }
    cmd.arg(format!("https://localhost:{port}{path}"));
    let out = cmd.output().await.expect("curl runs (is curl installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        code: out.status.code().unwrap_or(-1),
        body: body.to_owned(),
        version: version.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn curl_speaks_http2_and_http11_over_tls_as_alpn_chose() {
    let env = Env::new().await;
    env.install(&env.pki.server());
    let upstream = spawn_upstream("a", None).await;
    let gw = start(&env.config(&format!("http://{upstream}"), "", Some(""), "")).await;
    assert!(gw.gateway.is_tls());
    let port = gw.addr.port();
    let token = env.token();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let r = curl(&env, port, "/orders?x=1", Some(&token), &[flag]).await;
        assert_eq!(r.code, 0, "{flag}: {}", r.stderr);
        assert_eq!(r.version, version, "{flag}: the client's version");
        let body = r.json();
        assert_eq!(body["path"], "/orders?x=1");
        assert_eq!(
            body["version"], "HTTP/1.1",
            "http:// upstreams speak HTTP/1.1"
        );
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
        assert_eq!(body["headers"]["x-auth-sub"], "alice");
    }
    // TLS 1.2 is served too.
    let r = curl(
        &env,
        port,
        "/public",
        None,
        &["--tlsv1.2", "--tls-max", "1.2"],
    )
    .await;
    assert_eq!(r.code, 0, "TLS 1.2: {}", r.stderr);
    // Refusals over TLS carry their challenge as usual.
    let r = curl(&env, port, "/orders", None, &["--http2", "-i"]).await;
    assert!(r.body.starts_with("HTTP/2 401"), "{}", r.body);
    assert!(r.body.contains("www-authenticate: Bearer"), "{}", r.body);
    // Plain http on the TLS port gets no answer.
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    tcp.write_all(b"GET /public HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "no plain-http answer");
}

#[tokio::test]
async fn a_required_client_certificate_is_checked_in_the_handshake() {
    let env = Env::new().await;
    env.install(&env.pki.server());
    let client = env.pki.leaf(&["client-a"]);
    let cert = env.dir.write("client.pem", &client.cert_pem);
    let key = env.dir.write("client.key", &client.key_pem);
    let ca = env.dir.path("ca.pem");
    let upstream = spawn_upstream("a", None).await;
    let tls = format!("client_ca_file = {ca:?}\nclient_auth = \"required\"");
    let gw = start(&env.config(&format!("http://{upstream}"), "", Some(&tls), "")).await;
    let port = gw.addr.port();

    let without = curl(&env, port, "/public", None, &["--http2"]).await;
    assert_ne!(
        without.code, 0,
        "refused without a certificate: {}",
        without.body
    );
    // A certificate from another CA is refused too.
    let stranger = Pki::new().leaf(&["client-a"]);
    let s_cert = env.dir.write("stranger.pem", &stranger.cert_pem);
    let s_key = env.dir.write("stranger.key", &stranger.key_pem);
    let r = curl(
        &env,
        port,
        "/public",
        None,
        &["--cert", &s_cert, "--key", &s_key],
    )
    .await;
    assert_ne!(r.code, 0, "an unknown CA's certificate: {}", r.body);

    for flag in ["--http2", "--http1.1"] {
        let r = curl(
            &env,
            port,
            "/public",
            None,
            &[flag, "--cert", &cert, "--key", &key],
        )
        .await;
        assert_eq!(r.code, 0, "{flag}: {}", r.stderr);
        assert_eq!(r.json()["name"], "a");
    }
}

#[tokio::test]
async fn an_optional_client_certificate_may_be_left_out() {
    let env = Env::new().await;
    env.install(&env.pki.server());
    let client = env.pki.leaf(&["client-a"]);
    let cert = env.dir.write("client.pem", &client.cert_pem);
    let key = env.dir.write("client.key", &client.key_pem);
    let ca = env.dir.path("ca.pem");
    let upstream = spawn_upstream("a", None).await;
    let tls = format!("client_ca_file = {ca:?}\nclient_auth = \"optional\"");
    let gw = start(&env.config(&format!("http://{upstream}"), "", Some(&tls), "")).await;
    let port = gw.addr.port();
    let token = env.token();

    let r = curl(&env, port, "/orders", Some(&token), &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["headers"]["x-auth-sub"], "alice");
    let r = curl(
        &env,
        port,
        "/orders",
        Some(&token),
        &["--cert", &cert, "--key", &key],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["headers"]["x-auth-sub"], "alice");
    // Optional is not unchecked: a certificate that does not verify is refused.
    let stranger = Pki::new().leaf(&["client-a"]);
    let s_cert = env.dir.write("stranger.pem", &stranger.cert_pem);
    let s_key = env.dir.write("stranger.key", &stranger.key_pem);
    let r = curl(
        &env,
        port,
        "/orders",
        Some(&token),
        &["--cert", &s_cert, "--key", &s_key],
    )
    .await;
    assert_ne!(r.code, 0, "{}", r.body);
}

/// The bound-token path (RFC 8705 §3) through the gateway: the listener puts the
/// client's certificate in the request's extensions (shown by the listener's own
/// unit test, `tls::tests::the_client_certificate_reaches_every_request`), and
/// the shared `Decider` checks `cnf["x5t#S256"]` against it.
#[tokio::test]
async fn a_certificate_bound_token_is_accepted_with_its_certificate_only() {
    let env = Env::new().await;
    env.install(&env.pki.server());
    let mine = env.pki.leaf(&["client-a"]);
    let other = env.pki.leaf(&["client-b"]);
    let ca = env.dir.path("ca.pem");
    let upstream = spawn_upstream("a", None).await;
    let tls = format!("client_ca_file = {ca:?}\nclient_auth = \"optional\"");
    let gw = start(&env.config(&format!("http://{upstream}"), "", Some(&tls), "")).await;
    let port = gw.addr.port();
    let now = unix_now();
    let bound = env.key.sign(&json!({
        "iss": env.issuer, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 600,
        "cnf": { "x5t#S256": URL_SAFE_NO_PAD.encode(sha256(&mine.der)) },
    }));
    let files = |leaf: &Leaf, name: &str| {
        (
            env.dir.write(&format!("{name}.pem"), &leaf.cert_pem),
            env.dir.write(&format!("{name}.key"), &leaf.key_pem),
        )
    };
    let (cert, key) = files(&mine, "mine");
    let r = curl(
        &env,
        port,
        "/orders",
        Some(&bound),
        &["--cert", &cert, "--key", &key],
    )
    .await;
    assert_eq!(r.json()["headers"]["x-auth-sub"], "alice", "{}", r.body);
    let (cert, key) = files(&other, "other");
    let r = curl(
        &env,
        port,
        "/orders",
        Some(&bound),
        &["-i", "--cert", &cert, "--key", &key],
    )
    .await;
    assert!(r.body.contains("401"), "{}", r.body);
    let r = curl(&env, port, "/orders", Some(&bound), &["-i"]).await;
    assert!(r.body.contains("401"), "{}", r.body);
}

/// The leaf certificate a new TLS connection to the gateway is served.
async fn served_leaf(env: &Env, addr: SocketAddr) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(env.pki.ca_pem().as_bytes()).expect("ca"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let leaf = tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec();
    sha256(&leaf)
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections() {
    let env = Env::new().await;
    let first = env.pki.server();
    env.install(&first);
    let upstream = spawn_upstream("a", None).await;
    let tls = "reload_interval_secs = 0.05";
    let gw = start(&env.config(&format!("http://{upstream}"), "", Some(tls), "")).await;
    assert_eq!(served_leaf(&env, gw.addr).await, sha256(&first.der));

    // Explicitly (as on a signal).
    let second = env.pki.server();
    env.install(&second);
    gw.gateway.reload_tls_certificate().expect("valid pair");
    assert_eq!(served_leaf(&env, gw.addr).await, sha256(&second.der));

    // A broken file is refused; the served pair stays.
    env.dir
        .write("gw.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    let e = gw
        .gateway
        .reload_tls_certificate()
        .expect_err("broken chain");
    assert_eq!(e.key(), Some("tls.cert_file"), "{e}");
    assert_eq!(served_leaf(&env, gw.addr).await, sha256(&second.der));

    // By the file watcher: polled, bounded, until the new leaf is served.
    let third = env.pki.server();
    env.install(&third);
    let want = sha256(&third.der);
    let mut seen = Vec::new();
    for _ in 0..400 {
        seen = served_leaf(&env, gw.addr).await;
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen, want, "the watcher picked up the new files");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_cut_off() {
    let env = Env::new().await;
    env.install(&env.pki.server());
    let upstream = spawn_upstream("a", None).await;
    let extra = "[limits]\nheader_read_timeout_secs = 0.3";
    // `[limits]` must follow the top-level keys: put it after [tls].
    let toml = env.config(
        &format!("http://{upstream}"),
        "",
        Some(&format!("\n{extra}")),
        "",
    );
    let gw = start(&toml).await;
    let mut silent = TcpStream::connect(gw.addr).await.expect("connect");
    let mut partial = TcpStream::connect(gw.addr).await.expect("connect");
    // The start of a TLS record header, then nothing.
    partial.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    // Others are served meanwhile.
    let r = curl(&env, gw.addr.port(), "/public", None, &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    for (who, stream) in [("silent", &mut silent), ("partial", &mut partial)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{who}: still open after 10 s"));
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{who}: closed, got {read:?}"
        );
    }
}

#[tokio::test]
async fn https_upstreams_are_verified() {
    let env = Env::new().await;
    env.install(&env.pki.server());
    let upstream_leaf = env.pki.server();
    let upstream = spawn_upstream("secure", Some(&upstream_leaf)).await;
    let url = format!("https://127.0.0.1:{}", upstream.port());
    let ca = env.dir.path("ca.pem");
    let token = env.token();

    // Trusted through upstream_ca_file: HTTP/2 by ALPN.
    let gw = start(&env.config(&url, &format!("upstream_ca_file = {ca:?}"), None, "")).await;
    let r = plain_get(gw.addr, "/orders", &token).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let body: Value = serde_json::from_str(&r.1).expect("json");
    assert_eq!(body["name"], "secure");
    assert_eq!(body["version"], "HTTP/2.0", "ALPN chose h2");
    assert_eq!(body["headers"]["x-auth-sub"], "alice");

    // A CA the gateway does not trust: 502.
    let other = Dir::new();
    let other_ca = other.write("ca.pem", &Pki::new().ca_pem());
    let gw = start(&env.config(&url, &format!("upstream_ca_file = {other_ca:?}"), None, "")).await;
    let r = plain_get(gw.addr, "/orders", &token).await;
    assert_eq!(r.0, 502, "{}", r.1);
    assert!(r.1.contains("bad_gateway"), "{}", r.1);

    // The danger switch: any certificate.
    let gw = start(&env.config(
        &url,
        "danger_accept_invalid_upstream_certificate = true",
        None,
        "",
    ))
    .await;
    let r = plain_get(gw.addr, "/orders", &token).await;
    assert_eq!(r.0, 200, "{}", r.1);
}

/// GET over plain HTTP/1.1 with a bearer token: status and body.
async fn plain_get(addr: SocketAddr, path: &str, token: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = client.request(req).await.expect("response");
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn trailers_pass_both_ways_through_an_h2c_upstream() {
    let env = Env::new().await;
    let upstream = spawn_upstream("grpc", None).await;
    let gw = start(&env.config(&format!("h2c://{upstream}"), "", None, "")).await;
    // An HTTP/2 client (prior knowledge), as gRPC clients are.
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<StreamBody<
            futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
        >>();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", HeaderValue::from_static("sum=7"));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01x"))),
        Ok(Frame::trailers(trailers)),
    ];
    let req = Request::post(format!("http://{}/pkg.Service/Method", gw.addr))
        .header("authorization", format!("Bearer {}", env.token()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .expect("request");
    let r = client.request(req).await.expect("response");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.version(),
        http::Version::HTTP_2,
        "the gateway's own version"
    );
    let collected = r.into_body().collect().await.expect("body");
    let end = collected.trailers().cloned().expect("response trailers");
    assert_eq!(end["grpc-status"], "0");
    assert_eq!(end["x-upstream-trailer"], "grpc");
    let body: Value = serde_json::from_slice(&collected.to_bytes()).expect("json");
    assert_eq!(body["version"], "HTTP/2.0", "h2c to the upstream");
    assert_eq!(
        body["trailers"]["x-client-trailer"], "sum=7",
        "request trailers"
    );
    assert_eq!(body["headers"]["te"], "trailers");
    assert_eq!(body["headers"]["x-auth-sub"], "alice");

    // An HTTP/1.1 client of the same HTTP/2 upstream: answered in HTTP/1.1,
    // the trailers in the chunked body (it said `TE: trailers`).
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{}/pkg.Service/Method", gw.addr))
        .header("authorization", format!("Bearer {}", env.token()))
        .header("te", "trailers")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = client.request(req).await.expect("response");
    assert_eq!(r.version(), http::Version::HTTP_11, "the client's version");
    let collected = r.into_body().collect().await.expect("body");
    let end = collected
        .trailers()
        .cloned()
        .expect("trailers over HTTP/1.1");
    assert_eq!(end["grpc-status"], "0");
    let body: Value = serde_json::from_slice(&collected.to_bytes()).expect("json");
    assert_eq!(body["version"], "HTTP/2.0");
}

#[tokio::test]
async fn each_route_goes_to_its_upstream() {
    let env = Env::new().await;
    let a = spawn_upstream("a", None).await;
    let b = spawn_upstream("b", None).await;
    let route_b = format!("upstream = \"http://{b}/base/\"");
    let gw = start(&env.config(&format!("http://{a}"), "", None, &route_b)).await;
    let token = env.token();
    for (path, name, seen) in [
        ("/b/x?q=1", "b", "/base/b/x?q=1"),
        ("/b", "b", "/base/b"),
        ("/bx", "a", "/bx"),
        ("/orders", "a", "/orders"),
    ] {
        let (status, body) = plain_get(gw.addr, path, &token).await;
        assert_eq!(status, 200, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["name"], name, "{path}");
        assert_eq!(body["path"], seen, "{path}");
    }
}

#[test]
fn upstream_keys_are_checked_with_their_names() {
    let env_free = |upstream: &str, extra: &str, route: &str| {
        format!(
            r#"
listen = "127.0.0.1:0"
upstream = "{upstream}"
{extra}
[[issuer]]
issuer = "https://login.example.com"
audiences = ["{AUDIENCE}"]
[[route]]
path = "/"
{route}
"#
        )
    };
    let refused = |toml: String| {
        Gateway::from_config(GatewayConfig::from_toml(&toml).expect("parse")).expect_err("refused")
    };
    let e = refused(env_free("ftp://x", "", ""));
    assert_eq!(e.key(), Some("upstream"), "{e}");
    let e = refused(env_free("http://x", "", "upstream = \"gopher://y\""));
    assert_eq!(e.key(), Some("route[0].upstream"), "{e}");
    let e = refused(env_free(
        "https://x",
        "upstream_ca_file = \"/nonexistent/ca.pem\"",
        "",
    ));
    assert_eq!(e.key(), Some("upstream_ca_file"), "{e}");
    let e = refused(env_free(
        "http://x",
        "[tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"",
        "",
    ));
    assert_eq!(e.key(), Some("tls.cert_file"), "{e}");
    let e = GatewayConfig::from_toml(&env_free(
        "http://x",
        "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_auth = \"sometimes\"",
        "",
    ))
    .expect_err("unknown client_auth");
    assert!(e.to_string().contains("sometimes"), "{e}");
}

#[cfg(feature = "ext-authz")]
#[test]
fn ext_authz_refuses_a_route_upstream() {
    use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
    let config = ExtAuthzConfig::from_toml(&format!(
        r#"
http_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[[issuer]]
issuer = "https://login.example.com"
audiences = ["{AUDIENCE}"]
[[route]]
path = "/"
upstream = "http://127.0.0.1:9000"
"#
    ))
    .expect("parse");
    let e = ExtAuthz::from_config(config).expect_err("refused");
    assert_eq!(e.key(), Some("route[0].upstream"), "{e}");
    assert!(e.problem().contains("gateway"), "{e}");
}

/// gRPC messages as raw bytes: no protobuf needed to exercise the transport.
mod grpc {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;

    use bytes::{Buf as _, BufMut as _, Bytes};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::{Request, Response, Status};

    #[derive(Clone, Default)]
    pub struct RawCodec;

    impl Codec for RawCodec {
        type Encode = Bytes;
        type Decode = Bytes;
        type Encoder = RawCodec;
        type Decoder = RawCodec;
        fn encoder(&mut self) -> RawCodec {
            RawCodec
        }
        fn decoder(&mut self) -> RawCodec {
            RawCodec
        }
    }

    impl Encoder for RawCodec {
        type Item = Bytes;
        type Error = Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put(item);
            Ok(())
        }
    }

    impl Decoder for RawCodec {
        type Item = Bytes;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining())))
        }
    }

    /// `/test.Orders/Get`: `7` is found, anything else is `NotFound`.
    #[derive(Clone)]
    pub struct Orders;

    impl tonic::server::NamedService for Orders {
        const NAME: &'static str = "test.Orders";
    }

    type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

    impl tower::Service<http::Request<tonic::body::Body>> for Orders {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Result<Self::Response, Infallible>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move {
                let handler = tower::service_fn(|r: Request<Bytes>| async move {
                    match r.into_inner().as_ref() {
                        b"7" => Ok(Response::new(Bytes::from_static(b"order 7"))),
                        _ => Err(Status::not_found("no such order")),
                    }
                });
                Ok(tonic::server::Grpc::new(RawCodec).unary(handler, req).await)
            })
        }
    }

    pub async fn get(url: &str, token: Option<&str>, id: &'static [u8]) -> Result<Bytes, Status> {
        let channel = tonic::transport::Channel::from_shared(url.to_owned())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let mut request = Request::new(Bytes::from_static(id));
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("ascii");
            request.metadata_mut().insert("authorization", value);
        }
        let path = http::uri::PathAndQuery::from_static("/test.Orders/Get");
        grpc.unary(request, path, RawCodec)
            .await
            .map(Response::into_inner)
    }
}

#[tokio::test]
async fn a_tonic_service_behind_the_gateway_keeps_its_statuses() {
    let env = Env::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(grpc::Orders)
            .serve_with_incoming(incoming),
    );
    let gw = start(&env.config(&format!("h2c://{upstream}"), "", None, "")).await;
    let url = format!("http://{}", gw.addr);
    let token = env.token();

    // tonic takes a response without a `grpc-status` trailer for an error: the
    // success's trailers came through.
    let found = grpc::get(&url, Some(&token), b"7").await.expect("found");
    assert_eq!(found, "order 7");
    // The upstream's error status and message (a trailers-only response).
    let e = grpc::get(&url, Some(&token), b"8")
        .await
        .expect_err("missing");
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(e.message(), "no such order");
    // The gateway's own refusal, in gRPC form.
    let e = grpc::get(&url, None, b"7").await.expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

/// A WebSocket echo server (tungstenite) on 127.0.0.1.
async fn spawn_ws_echo() -> SocketAddr {
    use futures_util::{SinkExt as _, StreamExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_websocket_over_http2_is_tunnelled_through_the_tls_listener() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let env = Env::new().await;
    env.install(&env.pki.server());
    let upstream = spawn_ws_echo().await;
    let gw = start(&env.config(&format!("http://{upstream}"), "", Some(""), "")).await;

    // What a browser does: TLS with ALPN h2, then RFC 8441's extended CONNECT.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(env.pki.ca_pem().as_bytes()).expect("ca"))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let connect = |token: Option<String>| {
        let mut request = Request::builder()
            .method(http::Method::CONNECT)
            .uri("https://localhost/chat")
            .header("sec-websocket-version", "13");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut request = request
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        request
    };
    let refused = send.send_request(connect(None)).await.expect("answered");
    assert_eq!(refused.status(), 401);
    let response = send
        .send_request(connect(Some(env.token())))
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    let upgraded = hyper::upgrade::on(response).await.expect("tunnelled");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    ws.send(Message::text("over TLS and HTTP/2"))
        .await
        .expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("a message");
    assert_eq!(
        echoed.into_text().expect("text").as_str(),
        "over TLS and HTTP/2"
    );
}
