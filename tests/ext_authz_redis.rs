//! The scaling story of the check service: stateless ext-authz replicas behind
//! the proxies, the DPoP replay window shared in a real Redis
//! (`[dpop] replay_store = "redis://..."`). Two `ExtAuthz` services in this
//! process, each with its own guard, caches and Redis connection: a proof
//! accepted by one is a replay at the other, and with Redis stopped both
//! refuse fresh proofs with 503 (fail closed).
//!
//! A missing `redis-server` fails the test; it is not skipped (`.ci/run`
//! installs it: `apt-get install redis-server`).
#![cfg(all(feature = "ext-authz", feature = "redis"))]

mod common;

use bearer_guard::authz_server::{AuthorizationServerHandle, DpopKey};
use bearer_guard::clock::{Clock, ManualClock};
use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
use common::checks::send;
use common::redis::RedisServer;
use common::*;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http::Method;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const ORIGIN: &str = "https://api.example.com";

/// One replica: both check listeners on fresh ports.
struct Replica {
    grpc: String,
    http: String,
    _stop: oneshot::Sender<()>,
}

async fn replica(server: &AuthorizationServerHandle, clock: &ManualClock, redis: &str) -> Replica {
    let toml = format!(
        r#"
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[[issuer]]
issuer = "{issuer}"
jwks_uri = "{jwks}"
audiences = ["{API}"]
[dpop]
public_url = "{ORIGIN}"
mode = "required"
replay_store = "{redis}"
[[route]]
path = "/"
"#,
        issuer = server.issuer(),
        jwks = server.jwks_uri(),
    );
    let config = ExtAuthzConfig::from_toml(&toml).expect("parse");
    let clock = clock.clone();
    let service = ExtAuthz::from_config_with(config, |b| b.clock(clock)).expect("valid config");
    use futures_util::FutureExt as _;
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (g, h) = (
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
    Replica {
        grpc: format!("http://{g}"),
        http: format!("http://{h}/check"),
        _stop: stop,
    }
}

impl Replica {
    /// The gRPC check's HTTP status for `GET /me` with these credentials.
    async fn grpc(&self, token: &str, proof: &str) -> u16 {
        let headers = [
            ("authorization".to_owned(), format!("DPoP {token}")),
            ("dpop".to_owned(), proof.to_owned()),
            (":method".to_owned(), "GET".to_owned()),
            (":path".to_owned(), "/me".to_owned()),
        ]
        .into_iter()
        .collect();
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: "/me".into(),
                        headers,
                        ..HttpRequest::default()
                    }),
                    ..Request::default()
                }),
                ..AttributeContext::default()
            }),
        };
        let mut client = AuthorizationClient::connect(self.grpc.clone())
            .await
            .expect("connect");
        let response = client.check(request).await.expect("check").into_inner();
        match response.http_response {
            Some(HttpResponse::OkResponse(_)) => 200,
            Some(HttpResponse::DeniedResponse(d)) => d.status.map_or(0, |s| s.code as u16),
            other => panic!("{other:?}"),
        }
    }

    /// The HTTP check's status for `GET /me`, as Caddy or Traefik ask.
    async fn http(&self, token: &str, proof: &str) -> (u16, http::HeaderMap) {
        let headers = [
            ("authorization".to_owned(), format!("DPoP {token}")),
            ("dpop".to_owned(), proof.to_owned()),
            ("x-forwarded-method".to_owned(), "GET".to_owned()),
            ("x-forwarded-uri".to_owned(), "/me".to_owned()),
        ];
        let (status, headers, _) = send(Method::GET, &self.http, &headers).await;
        (status, headers)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_replay_window_in_redis_and_fail_closed_without_it() {
    let mut redis = RedisServer::start().await;
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let a = replica(&server, &clock, &redis.url).await;
    let b = replica(&server, &clock, &redis.url).await;

    let key = DpopKey::generate();
    let token = dpop_bound_token(&server, &clock, &key);
    let proof = || {
        key.proof("GET", &format!("{ORIGIN}/me"))
            .access_token(&token)
            .iat(clock.unix_seconds())
            .sign()
    };

    // A proof used at A (gRPC) is a replay at B, on either of B's doors.
    let first = proof();
    assert_eq!(a.grpc(&token, &first).await, 200);
    assert_eq!(b.grpc(&token, &first).await, 401, "B accepted A's proof");
    assert_eq!(b.http(&token, &first).await.0, 401);
    // And the other way round, starting at B's HTTP check.
    let second = proof();
    assert_eq!(b.http(&token, &second).await.0, 200);
    assert_eq!(a.http(&token, &second).await.0, 401, "A accepted B's proof");
    assert_eq!(a.grpc(&token, &second).await, 401);

    // Redis stops: fresh, valid proofs are refused with 503 by both replicas,
    // with Retry-After on the HTTP check.
    redis.stop();
    assert_eq!(a.grpc(&token, &proof()).await, 503);
    let (status, headers) = b.http(&token, &proof()).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"), "{headers:?}");
}
