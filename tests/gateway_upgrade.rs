//! WebSocket through the gateway, with a real WebSocket client and server
//! (tokio-tungstenite) on 127.0.0.1 port 0: the token is checked on the upgrade
//! request, a refused one never reaches the upstream nor gets an upgrade, an
//! accepted one is spliced both ways, counts as a connection and is closed by a
//! shutdown after its grace period.
#![cfg(feature = "gateway")]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bearer_guard::gateway::{Gateway, GatewayConfig};
use common::{AUDIENCE, TestKey, unix_now};
use futures_util::{SinkExt as _, StreamExt as _};
use http::HeaderMap;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Far longer than anything the gateway must do; a bound, not a pause.
const DEADLINE: Duration = Duration::from_secs(10);

/// A WebSocket echo server: greets each client with `welcome`, then echoes every
/// text and binary message. Records the headers of each handshake it accepted.
struct EchoServer {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<HeaderMap>>>,
    tcp_accepts: Arc<Mutex<usize>>,
}

async fn spawn_ws_echo() -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let tcp_accepts = Arc::new(Mutex::new(0));
    let (seen, accepts) = (handshakes.clone(), tcp_accepts.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            *accepts.lock().expect("lock") += 1;
            let seen = seen.clone();
            tokio::spawn(async move {
                // The error type is tungstenite's, not ours to shrink.
                #[allow(clippy::result_large_err)]
                let callback = |req: &http::Request<()>, resp| {
                    seen.lock().expect("lock").push(req.headers().clone());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                if ws.send(Message::text("welcome")).await.is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    EchoServer {
        addr,
        handshakes,
        tcp_accepts,
    }
}

struct Env {
    key: TestKey,
    issuer: String,
    upstream: EchoServer,
}

async fn env() -> Env {
    let key = TestKey::new("ws");
    let issuer = common::spawn_issuer(key.jwks()).await;
    Env {
        key,
        issuer,
        upstream: spawn_ws_echo().await,
    }
}

fn config(env: &Env, extra: &str, limits: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
{extra}
[[issuer]]
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]
[[route]]
path = "/ws"
scopes_all = ["chat"]
[forward]
claims_to_headers = {{ sub = "x-auth-sub" }}
[limits]
{limits}
"#,
        upstream = env.upstream.addr,
        issuer = env.issuer,
    )
}

type Served = tokio::task::JoinHandle<std::io::Result<()>>;

async fn start(toml: &str) -> (SocketAddr, oneshot::Sender<()>, Served) {
    let gateway =
        Gateway::from_config(GatewayConfig::from_toml(toml).expect("parse")).expect("valid config");
    let bound = gateway.bind().await.expect("bind");
    let addr = bound.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    (addr, stop, served)
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket to `ws://addr{path}` with `token`, if any.
async fn connect(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(Ws, http::Response<Option<Vec<u8>>>), WsError> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let stream = TcpStream::connect(addr).await.expect("connect");
    tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake within the deadline")
}

/// The next message, as text: over a TCP connection or an HTTP/2 stream.
async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let msg = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("a message within the deadline")
        .expect("open")
        .expect("a message");
    msg.into_text().expect("text").to_string()
}

#[tokio::test]
async fn a_refused_upgrade_is_401_without_upgrade_and_never_reaches_the_upstream() {
    let env = env().await;
    let (addr, _stop, _served) = start(&config(&env, "", "")).await;
    let wrong_scope = env.key.token(&env.issuer, unix_now(), "other");
    for (token, status) in [
        (None, 401),
        (Some("not.a.jwt"), 401),
        (Some(&*wrong_scope), 403),
    ] {
        match connect(addr, "/ws", token).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{token:?}");
                assert!(
                    response.headers().contains_key("www-authenticate"),
                    "{:?}",
                    response.headers()
                );
                assert!(!response.headers().contains_key("upgrade"));
            }
            Err(other) => panic!("{token:?}: {other}"),
            Ok(_) => panic!("{token:?}: upgraded without a valid token"),
        }
    }
    assert_eq!(*env.upstream.tcp_accepts.lock().expect("lock"), 0);
}

#[tokio::test]
async fn an_accepted_upgrade_is_spliced_both_ways() {
    let env = env().await;
    let (addr, _stop, _served) = start(&config(&env, "", "")).await;
    let token = env.key.token(&env.issuer, unix_now(), "chat");
    let (mut ws, response) = connect(addr, "/ws", Some(&token)).await.expect("upgraded");
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));
    // Upstream to client first (the greeting), then both ways.
    assert_eq!(next_text(&mut ws).await, "welcome");
    for text in ["hello", "second message", &"x".repeat(100_000)] {
        ws.send(Message::text(text)).await.expect("send");
        assert_eq!(next_text(&mut ws).await, text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    let echoed = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("message");
    assert_eq!(echoed.into_data().as_ref(), [0u8, 1, 2, 255]);
    ws.close(None).await.expect("close");

    let handshakes = env.upstream.handshakes.lock().expect("lock");
    let seen = handshakes.first().expect("the upstream saw the handshake");
    assert_eq!(
        seen["x-auth-sub"], "alice",
        "claim headers as for any request"
    );
    assert!(
        seen["upgrade"]
            .as_bytes()
            .eq_ignore_ascii_case(b"websocket")
    );
    assert!(seen.contains_key("sec-websocket-key"));
    assert_eq!(seen["x-request-id"], response.headers()["x-request-id"]);
}

#[tokio::test]
async fn without_an_allowed_protocol_the_upgrade_is_not_passed_on() {
    let env = env().await;
    let toml = config(&env, "", "").replace("[forward]\n", "[forward]\nupgrade_protocols = []\n");
    let (addr, _stop, _served) = start(&toml).await;
    let token = env.key.token(&env.issuer, unix_now(), "chat");
    // Forwarded as a plain request: the WebSocket server refuses a handshake
    // without `Upgrade`, and the client gets no 101.
    match connect(addr, "/ws", Some(&token)).await {
        Err(WsError::Http(response)) => assert_ne!(response.status(), 101),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("upgraded although no protocol is allowed"),
    }
    let handshakes = env.upstream.handshakes.lock().expect("lock");
    assert!(handshakes.is_empty(), "{handshakes:?}");
}

#[tokio::test]
async fn an_upgraded_connection_counts_under_max_connections() {
    let env = env().await;
    let (addr, _stop, _served) = start(&config(&env, "", "max_connections = 1")).await;
    let token = env.key.token(&env.issuer, unix_now(), "chat");
    let (mut ws, _) = connect(addr, "/ws", Some(&token)).await.expect("upgraded");
    assert_eq!(next_text(&mut ws).await, "welcome");
    // The only slot is the WebSocket's: another connection is closed at once.
    let mut other = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, other.read(&mut buf))
        .await
        .expect("closed within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The WebSocket itself is served on.
    ws.send(Message::text("still here")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "still here");
}

#[tokio::test]
async fn shutdown_closes_an_upgraded_connection_after_the_grace_period() {
    let env = env().await;
    let toml = config(&env, "shutdown_timeout_secs = 0.2", "");
    let (addr, stop, served) = start(&toml).await;
    let token = env.key.token(&env.issuer, unix_now(), "chat");
    let (mut ws, _) = connect(addr, "/ws", Some(&token)).await.expect("upgraded");
    assert_eq!(next_text(&mut ws).await, "welcome");
    let _ = stop.send(());
    // Closed by the gateway: the stream ends (or errors) instead of hanging.
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the upgraded connection outlived the shutdown"
    );
    let served = tokio::time::timeout(DEADLINE, served)
        .await
        .expect("serve returns")
        .expect("joined");
    assert!(served.is_ok(), "{served:?}");
}

// ---------------------------------------------------------------------------
// WebSocket over HTTP/2 (RFC 8441 extended CONNECT): hyper's HTTP/2 client (the
// h2 crate, as used by reqwest and tonic) sends the CONNECT, and tungstenite
// speaks WebSocket over the tunnelled stream it gets back.

type H2 = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An HTTP/2 connection (prior knowledge) to the gateway, once its SETTINGS
/// are in: a first request has been answered (a 401, no token).
async fn h2_client(addr: SocketAddr) -> H2 {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let first = h2_send(&mut send, http::Method::GET, addr, "/ws", None, None).await;
    assert_eq!(first.status(), 401);
    send
}

async fn h2_send(
    send: &mut H2,
    method: http::Method,
    addr: SocketAddr,
    path: &str,
    protocol: Option<&'static str>,
    token: Option<&str>,
) -> http::Response<hyper::body::Incoming> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("sec-websocket-version", "13");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut request = request.body(http_body_util::Empty::new()).expect("request");
    if let Some(protocol) = protocol {
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static(protocol));
    }
    tokio::time::timeout(DEADLINE, send.send_request(request))
        .await
        .expect("answered within the deadline")
        .expect("answered")
}

/// An HTTP/2 WebSocket's extended CONNECT.
async fn h2_websocket(
    send: &mut H2,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> http::Response<hyper::body::Incoming> {
    let connect = http::Method::CONNECT;
    h2_send(send, connect, addr, path, Some("websocket"), token).await
}

type TunnelWs =
    tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// The WebSocket of an extended CONNECT's `200`.
async fn tunnel(response: http::Response<hyper::body::Incoming>) -> TunnelWs {
    let upgraded = tokio::time::timeout(DEADLINE, hyper::upgrade::on(response))
        .await
        .expect("in time")
        .expect("the stream is tunnelled");
    tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await
}

#[tokio::test]
async fn an_http2_websocket_is_tunnelled_as_its_http11_handshake() {
    let env = env().await;
    let (addr, _stop, _served) = start(&config(&env, "", "")).await;
    let token = env.key.token(&env.issuer, unix_now(), "chat");
    // A `:protocol` is a stream error unless the server sent
    // SETTINGS_ENABLE_CONNECT_PROTOCOL: its 200 shows the gateway did.
    let mut h2 = h2_client(addr).await;
    let response = h2_websocket(&mut h2, addr, "/ws", Some(&token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let headers = response.headers().clone();
    assert!(headers.contains_key("x-request-id"));
    for hop in ["sec-websocket-accept", "upgrade", "connection"] {
        assert!(!headers.contains_key(hop), "{hop}: {headers:?}");
    }
    let mut ws = tunnel(response).await;
    assert_eq!(next_text(&mut ws).await, "welcome");
    for text in ["hello", &"y".repeat(100_000)] {
        ws.send(Message::text(text)).await.expect("send");
        assert_eq!(next_text(&mut ws).await, text);
    }
    // The connection still carries other requests beside the open WebSocket.
    let beside = h2_send(&mut h2, http::Method::GET, addr, "/ws", None, None).await;
    assert_eq!(beside.status(), 401);
    ws.send(Message::text("after")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "after");
    ws.close(None).await.expect("close");

    // The upstream got a real HTTP/1.1 handshake (tungstenite checked it), with
    // the claim headers of any request.
    let handshakes = env.upstream.handshakes.lock().expect("lock");
    let seen = handshakes.first().expect("the upstream saw the handshake");
    assert_eq!(seen["x-auth-sub"], "alice");
    assert!(
        seen["upgrade"]
            .as_bytes()
            .eq_ignore_ascii_case(b"websocket")
    );
    assert_eq!(seen["sec-websocket-version"], "13");
    assert_eq!(seen["x-request-id"], headers["x-request-id"]);
}

#[tokio::test]
async fn a_refused_http2_websocket_gets_its_401_and_never_reaches_the_upstream() {
    let env = env().await;
    let (addr, _stop, _served) = start(&config(&env, "", "")).await;
    let wrong_scope = env.key.token(&env.issuer, unix_now(), "other");
    let mut h2 = h2_client(addr).await;
    for (token, status) in [(None, 401), (Some(&*wrong_scope), 403)] {
        let response = h2_websocket(&mut h2, addr, "/ws", token).await;
        assert_eq!(response.status().as_u16(), status, "{token:?}");
        assert!(response.headers().contains_key("www-authenticate"));
        assert!(hyper::upgrade::on(response).await.is_err(), "no tunnel");
    }
    assert_eq!(*env.upstream.tcp_accepts.lock().expect("lock"), 0);
}

#[tokio::test]
async fn other_connect_requests_are_501_and_never_forwarded() {
    let env = env().await;
    let token = env.key.token(&env.issuer, unix_now(), "chat");
    let (addr, _stop, _served) = start(&config(&env, "", "")).await;
    let mut h2 = h2_client(addr).await;
    for protocol in [None, Some("connect-udp")] {
        let response = h2_send(
            &mut h2,
            http::Method::CONNECT,
            addr,
            "/ws",
            protocol,
            Some(&token),
        )
        .await;
        assert_eq!(response.status(), 501, "{protocol:?}");
    }
    // A forward-proxy CONNECT over HTTP/1.1.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut raw,
        format!(
            "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nAuthorization: Bearer {token}\r\n\r\n",
            env.upstream.addr
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut head = [0u8; 12];
    tokio::time::timeout(DEADLINE, raw.read_exact(&mut head))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 501");

    // With WebSocket not listed, an HTTP/2 one is 501 too.
    let toml = config(&env, "", "").replace("[forward]\n", "[forward]\nupgrade_protocols = []\n");
    let (off, _stop_off, _served_off) = start(&toml).await;
    let mut h2 = h2_client(off).await;
    let response = h2_websocket(&mut h2, off, "/ws", Some(&token)).await;
    assert_eq!(response.status(), 501);
    assert_eq!(*env.upstream.tcp_accepts.lock().expect("lock"), 0);
}

/// An upstream that answers every request with `head` (then closes).
async fn spawn_fixed_answer(head: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await;
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_does_not_complete_the_handshake_is_502() {
    let env = env().await;
    let plain = spawn_fixed_answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain").await;
    let wrong = spawn_fixed_answer(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .await;
    let routes = format!(
        "[[route]]\npath = \"/plain\"\nupstream = \"http://{plain}\"\nscopes_all = [\"chat\"]\n\
         [[route]]\npath = \"/wrong\"\nupstream = \"http://{wrong}\"\nscopes_all = [\"chat\"]\n"
    );
    let toml = config(&env, "", "").replace("[forward]\n", &format!("{routes}[forward]\n"));
    let (addr, _stop, _served) = start(&toml).await;
    let token = env.key.token(&env.issuer, unix_now(), "chat");
    let mut h2 = h2_client(addr).await;
    // A 200 that is no switch, and a 101 with another key's accept (RFC 6455's
    // example): neither opens the client's tunnel.
    for path in ["/plain", "/wrong"] {
        let response = h2_websocket(&mut h2, addr, path, Some(&token)).await;
        assert_eq!(response.status(), 502, "{path}");
        assert!(
            hyper::upgrade::on(response).await.is_err(),
            "{path}: no tunnel"
        );
    }
}
