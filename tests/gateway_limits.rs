//! The gateway's `[limits]`, admin placement, bind errors and response version,
//! over 127.0.0.1 port 0 with raw TCP clients (a slowloris must send bytes no
//! HTTP client would) and hyper's own HTTP/1.1 and HTTP/2 clients. The timeouts
//! are short real ones configured per test; waits for the gateway to act are
//! bounded by a generous deadline, never a sleep for ordering.
#![cfg(feature = "gateway")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use bearer_guard::gateway::{Gateway, GatewayConfig};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

/// Far longer than any configured limit: the gateway must have acted by then.
const DEADLINE: Duration = Duration::from_secs(10);

/// A public route `/` to `upstream`, with `top` keys and a `[limits]` table.
fn config(upstream: SocketAddr, top: &str, limits: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
{top}
[[issuer]]
issuer = "https://login.example.com"
jwks_uri = "http://127.0.0.1:1/jwks"
audiences = ["https://api.example.com"]
[[route]]
path = "/"
public = true
[limits]
{limits}
"#
    )
}

type Served = tokio::task::JoinHandle<std::io::Result<()>>;

async fn start(toml: &str) -> (SocketAddr, oneshot::Sender<()>, Served) {
    let gateway =
        Gateway::from_config(GatewayConfig::from_toml(toml).expect("parse")).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        gateway
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    (addr, stop, served)
}

/// An upstream: `/hold` answers when `release` is notified (reporting arrival on
/// `arrived`), `/upload` counts and sizes the body it read, anything else `up`.
struct Upstream {
    addr: SocketAddr,
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
    uploads: Arc<AtomicUsize>,
}

async fn upstream() -> Upstream {
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let uploads = Arc::new(AtomicUsize::new(0));
    let (gate, count) = (release.clone(), uploads.clone());
    let app = axum::Router::new()
        .route(
            "/hold",
            get(move || {
                let (arrived_tx, gate) = (arrived_tx.clone(), gate.clone());
                async move {
                    let _ = arrived_tx.send(());
                    gate.notified().await;
                    "released"
                }
            }),
        )
        .route(
            "/upload",
            post(move |body: Bytes| {
                count.fetch_add(1, Ordering::SeqCst);
                async move { body.len().to_string() }
            }),
        )
        .route(
            "/trickle",
            get(|| async {
                // Six pieces 100 ms apart: a body that takes longer than the
                // idle timeout of the test that asks for it.
                let pieces = futures_util::stream::unfold(0u8, |n| async move {
                    if n == 6 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from_static(b"piece ")),
                        n + 1,
                    ))
                });
                axum::body::Body::from_stream(pieces)
            }),
        )
        .fallback(|| async { "up" });
    Upstream {
        addr: common::spawn_app(app).await,
        arrived,
        release,
        uploads,
    }
}

/// Reads until the peer closes (EOF or reset); what was read, or `None` if the
/// connection was still open at the deadline.
async fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| all)
}

/// One request over a fresh HTTP/1.1 connection: status and body.
async fn fetch(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let response = client
        .get(format!("http://{addr}{path}").parse().expect("uri"))
        .await
        .expect("response");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body");
    (
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    )
}

/// Sends one more header line every 100 ms (trickling does not extend the
/// timeout) until a write fails: the gateway closed the connection, which it
/// must do by [`DEADLINE`] and not before `timeout` after `since`.
async fn trickle_until_closed(slow: &mut TcpStream, since: Instant, timeout: Duration) {
    let trickle = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
        }
    };
    assert!(
        tokio::time::timeout(DEADLINE, trickle).await.is_ok(),
        "still connected after {DEADLINE:?}"
    );
    assert!(since.elapsed() >= timeout, "not before the timeout");
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_after_the_header_timeout_while_others_are_answered() {
    let up = upstream().await;
    let (addr, _stop, _served) = start(&config(
        up.addr,
        "",
        "header_read_timeout_secs = 0.5\nidle_timeout_secs = 30",
    ))
    .await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n")
        .await
        .expect("write");
    // Others are answered at once while the slow head is open.
    assert_eq!(fetch(addr, "/").await, (StatusCode::OK, "up".to_owned()));
    trickle_until_closed(&mut slow, started, Duration::from_millis(500)).await;
    assert_eq!(fetch(addr, "/").await.0, StatusCode::OK, "still answering");
}

#[tokio::test]
async fn a_later_head_sent_slowly_is_cut_off_after_the_header_timeout() {
    let up = upstream().await;
    let (addr, _stop, _served) = start(&config(
        up.addr,
        "",
        "header_read_timeout_secs = 0.5\nidle_timeout_secs = 30",
    ))
    .await;
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    // The whole first response ("up", two bytes of body).
    let mut read = Vec::new();
    let mut buf = [0u8; 1024];
    while !read.ends_with(b"\r\n\r\nup") {
        let n = slow.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed after the first response");
        read.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n")
        .await
        .expect("write");
    trickle_until_closed(&mut slow, answered, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_response_whose_body_outlasts_the_idle_timeout_keeps_its_connection_alive() {
    let up = upstream().await;
    let (addr, _stop, _served) = start(&config(
        up.addr,
        "",
        "header_read_timeout_secs = 60\nidle_timeout_secs = 0.3",
    ))
    .await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let get = |path: &str| {
        Request::get(path)
            .header("host", "gw")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let response = sender
        .send_request(get("/trickle"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], &b"piece ".repeat(6)[..]);
    // The request was in flight while its body was sent, so the connection
    // was never idle: a second request goes out on it.
    sender.ready().await.expect("the connection is still open");
    let response = sender
        .send_request(get("/"))
        .await
        .expect("second response");
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    // And once it is idle, it is closed.
    drop(sender);
    let ended = tokio::time::timeout(DEADLINE, conn).await;
    assert!(ended.is_ok(), "still open when idle");
}

#[tokio::test]
async fn connections_that_send_no_request_are_closed_after_the_header_timeout() {
    let up = upstream().await;
    let (addr, _stop, _served) = start(&config(
        up.addr,
        "",
        "header_read_timeout_secs = 0.3\nidle_timeout_secs = 30",
    ))
    .await;
    // Nothing at all; fewer bytes than HTTP/2's preface (the protocol is not
    // known yet); the HTTP/2 preface and nothing more.
    for sent in [&b""[..], b"GET /", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(sent).await.expect("write");
        assert!(
            read_until_closed(&mut stream).await.is_some(),
            "open after {sent:?}"
        );
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_over_http1_and_http2() {
    let up = upstream().await;
    let (addr, _stop, _served) = start(&config(
        up.addr,
        "",
        // The header timeout far beyond the deadline: only the idle one acts.
        "header_read_timeout_secs = 60\nidle_timeout_secs = 0.3",
    ))
    .await;
    let mut h1 = TcpStream::connect(addr).await.expect("connect");
    h1.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    let read = read_until_closed(&mut h1).await.expect("closed when idle");
    assert!(read.starts_with(b"HTTP/1.1 200 OK\r\n"), "{read:?}");

    // HTTP/2: the connection task ends once the gateway closed it.
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let request = Request::get(format!("http://{addr}/"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    drop(response);
    let ended = tokio::time::timeout(DEADLINE, conn).await;
    assert!(ended.is_ok(), "HTTP/2 connection still open when idle");
}

#[tokio::test]
async fn at_the_connection_limit_new_connections_are_refused_while_open_ones_finish() {
    let mut up = upstream().await;
    let (addr, _stop, _served) = start(&config(up.addr, "", "max_connections = 1")).await;
    let mut held = TcpStream::connect(addr).await.expect("connect");
    held.write_all(b"GET /hold HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    up.arrived
        .recv()
        .await
        .expect("the request reached the upstream");

    let mut refused = TcpStream::connect(addr).await.expect("the kernel accepts");
    let _ = refused
        .write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut refused)
        .await
        .expect("closed at once");
    assert!(answer.is_empty(), "no answer beyond the limit: {answer:?}");

    up.release.notify_one();
    let read = read_until_closed(&mut held)
        .await
        .expect("answered, then closed");
    let read = String::from_utf8_lossy(&read);
    assert!(read.starts_with("HTTP/1.1 200 OK\r\n"), "{read}");
    assert!(read.ends_with("released"), "{read}");

    // The slot is freed as the held connection's task ends, just after it
    // closed: a few tries bridge that, not an ordering.
    for attempt in 0.. {
        let mut next = TcpStream::connect(addr).await.expect("connect");
        let _ = next
            .write_all(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            .await;
        let read = read_until_closed(&mut next).await.expect("closed");
        if read.starts_with(b"HTTP/1.1 200 OK\r\n") {
            break;
        }
        assert!(attempt < 50, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_graceful_shutdown_is_not_held_by_half_sent_request_heads() {
    let up = upstream().await;
    let (addr, stop, served) = start(&config(
        up.addr,
        "shutdown_timeout_secs = 60",
        "header_read_timeout_secs = 60\nidle_timeout_secs = 60",
    ))
    .await;
    // A first head half sent, and a second one after an answered request.
    let mut first = TcpStream::connect(addr).await.expect("connect");
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n")
        .await
        .expect("write");
    let mut second = TcpStream::connect(addr).await.expect("connect");
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = second.read(&mut buf).await.expect("first answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    second
        .write_all(b"GET / HTTP/1.1\r\nHost:")
        .await
        .expect("write");

    let started = Instant::now();
    let _ = stop.send(());
    let finished = tokio::time::timeout(DEADLINE, served).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "serve returned within {DEADLINE:?}, not after the 60 s shutdown timeout"
    );
    assert!(started.elapsed() < DEADLINE);
    assert!(read_until_closed(&mut first).await.is_some());
    assert!(read_until_closed(&mut second).await.is_some());
}

#[tokio::test]
async fn request_heads_over_max_header_bytes_are_431() {
    let up = upstream().await;
    let (addr, _stop, _served) = start(&config(up.addr, "", "max_header_bytes = 8192")).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    stream.write_all(big.as_bytes()).await.expect("write");
    let read = read_until_closed(&mut stream).await.expect("closed");
    assert!(
        read.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&read)
    );
    // Within the limit, the same request is forwarded.
    let mut ok = TcpStream::connect(addr).await.expect("connect");
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(7_000)
    );
    ok.write_all(fits.as_bytes()).await.expect("write");
    let read = read_until_closed(&mut ok).await.expect("closed");
    assert!(read.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

async fn post_upload(addr: SocketAddr, body: Full<Bytes>, chunked: bool) -> http::Response<Bytes> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>(
    );
    let body = if chunked {
        // No length known in advance: sent chunked.
        let data = body.collect().await.expect("bytes").to_bytes();
        let frames = futures_util::stream::iter(
            data.chunks(256)
                .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
                .collect::<Vec<_>>(),
        );
        StreamBody::new(frames).boxed()
    } else {
        body.boxed()
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/upload"))
        .body(body)
        .expect("request");
    let response = client.request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    http::Response::from_parts(parts, bytes)
}

#[tokio::test]
async fn request_bodies_over_max_body_bytes_are_413_and_never_forwarded_whole() {
    let up = upstream().await;
    let (addr, _stop, _served) = start(&config(up.addr, "", "max_body_bytes = 1000")).await;
    let fits = post_upload(addr, Full::new(Bytes::from(vec![b'a'; 1000])), false).await;
    assert_eq!(fits.status(), StatusCode::OK);
    assert_eq!(fits.body(), "1000");
    assert_eq!(up.uploads.load(Ordering::SeqCst), 1);

    let declared = post_upload(addr, Full::new(Bytes::from(vec![b'a'; 1001])), false).await;
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(declared.headers()["connection"], "close");
    assert_eq!(
        up.uploads.load(Ordering::SeqCst),
        1,
        "refused before forwarding"
    );

    let chunked = post_upload(addr, Full::new(Bytes::from(vec![b'a'; 5000])), true).await;
    assert_eq!(chunked.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        up.uploads.load(Ordering::SeqCst),
        1,
        "the upstream never read a whole body"
    );
    let small_chunked = post_upload(addr, Full::new(Bytes::from(vec![b'a'; 900])), true).await;
    assert_eq!(small_chunked.status(), StatusCode::OK);
    assert_eq!(small_chunked.body(), "900");
}

/// A raw upstream answering every connection with `answer(request_count)`, then
/// doing what `after` says: keep the connection open (stall) or close it.
async fn raw_upstream(answer: &'static [u8], stall: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer).await;
                if stall {
                    std::future::pending::<()>().await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stalled_upstream_body_is_aborted_after_the_upstream_body_timeout() {
    let upstream = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", true).await;
    let (addr, _stop, _served) =
        start(&config(upstream, "", "upstream_body_timeout_secs = 0.3")).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let response = client
        .get(format!("http://{addr}/").parse().expect("uri"))
        .await
        .expect("headers arrive");
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(DEADLINE, response.into_body().collect()).await;
    assert!(
        matches!(body, Ok(Err(_))),
        "the body ends in an error, not as if complete"
    );
}

#[tokio::test]
async fn an_http_1_0_upstream_does_not_downgrade_the_client_connection() {
    let upstream = raw_upstream(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let (addr, _stop, _served) = start(&config(upstream, "", "")).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    for _ in 0..2 {
        sender.ready().await.expect("the connection is reusable");
        let request = Request::get("/")
            .header("host", "gw")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.version(), Version::HTTP_11);
        assert!(response.headers().get("connection").is_none());
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), "ok");
    }
}

#[tokio::test]
async fn admin_endpoints_are_on_the_public_listener_only_when_configured() {
    let up = upstream().await;
    let (addr, _stop, _served) = start(&config(up.addr, "", "")).await;
    assert_eq!(
        fetch(addr, "/-/health").await,
        (StatusCode::OK, "up".to_owned()),
        "an ordinary path, forwarded"
    );
    let (addr, _stop, _served) = start(&config(up.addr, "admin_on_listen = true", "")).await;
    assert_eq!(
        fetch(addr, "/-/health").await,
        (StatusCode::OK, "ok\n".to_owned()),
        "a plain body, not an error-shaped one"
    );
}

#[test]
fn limits_out_of_range_are_refused_naming_the_key() {
    let upstream: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    for (limits, key) in [
        ("max_connections = 0", "limits.max_connections"),
        ("max_header_bytes = 100", "limits.max_header_bytes"),
        (
            "header_read_timeout_secs = 0",
            "limits.header_read_timeout_secs",
        ),
        ("idle_timeout_secs = -1", "limits.idle_timeout_secs"),
        (
            "upstream_body_timeout_secs = 0",
            "limits.upstream_body_timeout_secs",
        ),
    ] {
        let config = GatewayConfig::from_toml(&config(upstream, "", limits)).expect("parse");
        let error = Gateway::from_config(config).expect_err(limits);
        assert_eq!(error.key(), Some(key), "{error}");
    }
    let unknown = GatewayConfig::from_toml(&config(upstream, "", "max_bodies = 1"));
    assert!(unknown.is_err(), "unknown [limits] keys are refused");
}

/// A taken `listen` address: exit status 2, the address named, nothing claims
/// to be listening.
#[cfg(feature = "cli")]
#[test]
fn binary_bind_failure_names_the_address_and_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let path = std::env::temp_dir().join(format!("bearer-guard-bind-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        config("127.0.0.1:9".parse().expect("addr"), "", "")
            .replace("127.0.0.1:0", &addr.to_string()),
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
        .args(["gateway", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("listen = {addr}: cannot listen: ")),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}
