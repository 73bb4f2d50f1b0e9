//! Reloading a serving gateway ([`Reloader`]) in-process over 127.0.0.1 port 0:
//! a new configuration swaps in whole, a refused one changes nothing, requests
//! in flight finish on the old one, unchanged issuers keep their guard (no key
//! fetch), listener settings stay until a restart.
#![cfg(feature = "gateway")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::get;
use bearer_guard::gateway::{Gateway, GatewayConfig, Reloader};
use common::{AUDIENCE, TestKey, unix_now};
use tokio::sync::{Notify, mpsc, oneshot};

const DEADLINE: Duration = Duration::from_secs(10);

/// A JWKS server counting its fetches.
struct Jwks {
    url: String,
    fetches: Arc<AtomicUsize>,
}

async fn spawn_jwks(key: &TestKey) -> Jwks {
    let fetches = Arc::new(AtomicUsize::new(0));
    let (count, body) = (fetches.clone(), key.jwks());
    let app = axum::Router::new().route(
        "/jwks",
        get(move || {
            count.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let addr = common::spawn_app(app).await;
    Jwks {
        url: format!("http://{addr}/jwks"),
        fetches,
    }
}

/// An upstream answering its `name`; `/api/hold` reports its arrival on
/// `arrived`, then waits for `release`.
async fn spawn_upstream(
    name: &'static str,
    release: Arc<Notify>,
    arrived: Option<mpsc::UnboundedSender<()>>,
) -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/api/hold",
            get(move || {
                let (release, arrived) = (release.clone(), arrived.clone());
                async move {
                    if let Some(arrived) = arrived {
                        let _ = arrived.send(());
                    }
                    release.notified().await;
                    name
                }
            }),
        )
        .fallback(move || async move { name });
    common::spawn_app(app).await
}

const ISSUER: &str = "https://login.example.com";

fn config(upstream: SocketAddr, jwks: &str, route: &str, top: &str) -> GatewayConfig {
    GatewayConfig::from_toml(&format!(
        r#"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
{top}
[[issuer]]
issuer = "{ISSUER}"
jwks_uri = "{jwks}"
audiences = ["{AUDIENCE}"]
[[route]]
path = "/api"
{route}
"#
    ))
    .expect("parse")
}

struct Running {
    addr: SocketAddr,
    reloader: Reloader,
    _stop: oneshot::Sender<()>,
}

async fn start(config: GatewayConfig) -> Running {
    let gateway = Gateway::from_config(config).expect("valid");
    let bound = gateway.bind().await.expect("bind");
    let (addr, reloader) = (bound.local_addr(), bound.reloader());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        reloader,
        _stop: stop,
    }
}

async fn get_body(addr: SocketAddr, path: &str, token: &str) -> (u16, String) {
    let response = common::http()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_reload_swaps_routes_and_upstream_and_keeps_the_keys() {
    let key = TestKey::new("r1");
    let jwks = spawn_jwks(&key).await;
    let release = Arc::new(Notify::new());
    let (a, b) = (
        spawn_upstream("A", release.clone(), None).await,
        spawn_upstream("B", release.clone(), None).await,
    );
    let gw = start(config(a, &jwks.url, "", "")).await;
    let token = key.token(ISSUER, unix_now(), "read");
    assert_eq!(get_body(gw.addr, "/api/x", &token).await, (200, "A".into()));
    let fetched = jwks.fetches.load(Ordering::SeqCst);
    assert!(fetched >= 1);

    let reloaded = gw
        .reloader
        .reload(config(b, &jwks.url, r#"scopes_all = ["write"]"#, ""))
        .expect("reloaded");
    assert!(reloaded.guard_kept());
    assert!(reloaded.needs_restart().is_empty());
    assert!(gw.reloader.current().guard().ready(), "keys kept");
    // The new route table: the token lacks `write` now.
    assert_eq!(get_body(gw.addr, "/api/x", &token).await.0, 403);
    let writer = key.token(ISSUER, unix_now(), "write");
    assert_eq!(
        get_body(gw.addr, "/api/x", &writer).await,
        (200, "B".into())
    );
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        fetched,
        "no key fetch: the guard and its key store were kept"
    );
}

#[tokio::test]
async fn changed_issuers_get_a_new_guard() {
    let key = TestKey::new("r2");
    let (old, new) = (spawn_jwks(&key).await, spawn_jwks(&key).await);
    let up = spawn_upstream("A", Arc::new(Notify::new()), None).await;
    let gw = start(config(up, &old.url, "", "")).await;
    let token = key.token(ISSUER, unix_now(), "read");
    assert_eq!(get_body(gw.addr, "/api", &token).await.0, 200);

    let reloaded = gw
        .reloader
        .reload(config(up, &new.url, "", ""))
        .expect("reloaded");
    assert!(!reloaded.guard_kept());
    assert_eq!(get_body(gw.addr, "/api", &token).await.0, 200);
    assert!(
        new.fetches.load(Ordering::SeqCst) >= 1,
        "the new issuer's keys"
    );
}

#[tokio::test]
async fn a_refused_configuration_changes_nothing() {
    let key = TestKey::new("r3");
    let jwks = spawn_jwks(&key).await;
    let up = spawn_upstream("A", Arc::new(Notify::new()), None).await;
    let gw = start(config(up, &jwks.url, "", "")).await;
    let token = key.token(ISSUER, unix_now(), "read");
    let bad = [
        config(up, &jwks.url, r#"scopes_all = ["bad scope"]"#, ""),
        config(up, &jwks.url, "", "upstream_timeout_secs = -1"),
        config(up, "ftp://keys", "", ""),
    ];
    for config in bad {
        let error = gw.reloader.reload(config).expect_err("refused");
        assert!(error.key().is_some(), "{error}");
        assert_eq!(get_body(gw.addr, "/api", &token).await, (200, "A".into()));
    }
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_old_configuration() {
    let key = TestKey::new("r4");
    let jwks = spawn_jwks(&key).await;
    let release = Arc::new(Notify::new());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let a = spawn_upstream("A", release.clone(), Some(arrived_tx)).await;
    let b = spawn_upstream("B", Arc::new(Notify::new()), None).await;
    let gw = start(config(a, &jwks.url, "", "")).await;
    let token = key.token(ISSUER, unix_now(), "read");
    let (addr, held_token) = (gw.addr, token.clone());
    let held = tokio::spawn(async move { get_body(addr, "/api/hold", &held_token).await });
    // The old upstream has the request before the reload.
    tokio::time::timeout(DEADLINE, arrived.recv())
        .await
        .expect("arrived in time")
        .expect("arrived");
    gw.reloader
        .reload(config(b, &jwks.url, "", ""))
        .expect("reloaded");
    assert_eq!(get_body(gw.addr, "/api", &token).await, (200, "B".into()));
    release.notify_one();
    let answered = tokio::time::timeout(DEADLINE, held)
        .await
        .expect("answered in time")
        .expect("joined");
    assert_eq!(answered, (200, "A".into()));
}

#[tokio::test]
async fn listener_settings_are_kept_until_a_restart() {
    let key = TestKey::new("r5");
    let jwks = spawn_jwks(&key).await;
    let up = spawn_upstream("A", Arc::new(Notify::new()), None).await;
    let gw = start(config(up, &jwks.url, "", "")).await;
    let top = "admin_listen = \"127.0.0.1:0\"\n[limits]\nmax_connections = 3";
    let mut moved = config(up, &jwks.url, "", top);
    moved.listen = "127.0.0.1:1".parse().expect("addr");
    let reloaded = gw.reloader.reload(moved).expect("reloaded");
    assert_eq!(
        reloaded.needs_restart(),
        ["listen", "admin_listen", "limits.max_connections"]
    );
    assert_eq!(
        gw.reloader.current().listen_addr().port(),
        0,
        "the configured one kept"
    );
    assert_eq!(gw.reloader.current().admin_addr(), None);
    let token = key.token(ISSUER, unix_now(), "read");
    assert_eq!(get_body(gw.addr, "/api", &token).await.0, 200);
}
