//! For the ext-authz and proxy tests: one issuer (a static key), an upstream that
//! echoes what it received, and the check services on 127.0.0.1 port 0.

use std::net::SocketAddr;

use axum::extract::Request;
use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{AUDIENCE, TestKey, spawn_app, spawn_issuer, unix_now};

/// The issuer, route and forward sections every front door is configured with.
pub fn sections(issuer: &str) -> String {
    format!(
        r#"
realm = "orders-api"

[[issuer]]
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]

[[route]]
path = "/health"
public = true
[[route]]
path = "/orders"
methods = ["POST"]
scopes_all = ["orders:write"]
[[route]]
path = "/orders"
scopes_any = ["orders:read", "orders:admin"]
[[route]]
path = "/admin"
methods = ["GET"]
scopes_all = ["orders:admin"]

[forward]
claims_to_headers = {{ sub = "x-auth-sub", client_id = "x-auth-client-id", scope = "x-auth-scope" }}
"#
    )
}

/// An upstream answering every request with the method, target and headers it
/// received, as JSON.
pub async fn spawn_recorder() -> SocketAddr {
    async fn echo(req: Request) -> axum::Json<Value> {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        axum::Json(json!({
            "method": req.method().as_str(),
            "path": req.uri().path_and_query().map(|p| p.as_str()),
            "headers": headers,
        }))
    }
    spawn_app(axum::Router::new().fallback(echo)).await
}

/// A key, its issuer and tokens from it.
pub struct Issuer {
    pub key: TestKey,
    pub url: String,
}

impl Issuer {
    pub async fn start() -> Issuer {
        let key = TestKey::new("ext");
        let url = spawn_issuer(key.jwks()).await;
        Issuer { key, url }
    }

    /// A token for alice (client `cli-app`) with `scope`, valid for the next hour.
    pub fn token(&self, scope: &str) -> String {
        self.key.token(&self.url, unix_now(), scope)
    }

    /// A token whose `exp` passed an hour ago.
    pub fn expired(&self) -> String {
        self.key.token(&self.url, unix_now() - 7200, "orders:read")
    }
}

/// The ext-authz service on fresh ports; dropping it shuts it down.
pub struct Checks {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub service: ExtAuthz,
    _stop: oneshot::Sender<()>,
}

/// Starts the check services for `issuer` with `extra` top-level TOML.
pub async fn start_checks(issuer: &str, extra: &str) -> Checks {
    start_checks_with(issuer, extra, "").await
}

/// [`start_checks`] with `tables` (e.g. `[dpop]`) after the sections.
pub async fn start_checks_with(issuer: &str, extra: &str, tables: &str) -> Checks {
    let toml = format!(
        "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{extra}\n{}\n{tables}",
        sections(issuer)
    );
    let config = ExtAuthzConfig::from_toml(&toml).expect("parse");
    let service = ExtAuthz::from_config(config).expect("valid config");
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind") };
    let (grpc, http, admin) = (bind().await, bind().await, bind().await);
    let addrs = (
        grpc.local_addr().expect("addr"),
        http.local_addr().expect("addr"),
        admin.local_addr().expect("addr"),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let s = service.clone();
    tokio::spawn(async move {
        let stopped = futures_shared(stopped);
        let _ = tokio::join!(
            s.serve_grpc(grpc, stopped.clone()),
            s.serve_http(http, stopped.clone()),
            s.serve_admin(admin, stopped),
        );
    });
    Checks {
        grpc: addrs.0,
        http: addrs.1,
        admin: addrs.2,
        service,
        _stop: stop,
    }
}

/// A cloneable future completing when `stopped` fires or is dropped.
fn futures_shared(
    stopped: oneshot::Receiver<()>,
) -> impl std::future::Future<Output = ()> + Clone + Send + 'static {
    use futures_util::FutureExt as _;
    async move {
        let _ = stopped.await;
    }
    .boxed()
    .shared()
}

/// Sends one request with a raw hyper client, which sends the target verbatim
/// (no client-side `..` resolution): status, headers, body.
pub async fn send(
    method: http::Method,
    url: &str,
    headers: &[(String, String)],
) -> (u16, http::HeaderMap, bytes::Bytes) {
    use http_body_util::{BodyExt as _, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let response = client
        .request(req.body(Full::new(bytes::Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, body)
}
