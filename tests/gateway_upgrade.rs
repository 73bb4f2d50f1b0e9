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

async fn next_text(ws: &mut Ws) -> String {
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
