//! External authorization for the proxies platforms already run (feature
//! `ext-authz`): Envoy's gRPC `envoy.service.auth.v3.Authorization/Check` (also
//! Istio's `CUSTOM` action, Envoy Gateway, Cilium) and an HTTP check for nginx
//! `auth_request`, Caddy `forward_auth`, Traefik ForwardAuth and Envoy's HTTP mode.
//!
//! Both ask the same [`Decider`] as the gateway: the same routes, claim headers,
//! refusals and defaults as the layer. The check services are stateless; run as
//! many as the proxies need.
//!
//! ```no_run
//! use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ExtAuthzConfig::from_toml(r#"
//!     grpc_listen = "127.0.0.1:9001"
//!     http_listen = "127.0.0.1:9002"
//!     admin_listen = "127.0.0.1:9090"
//!     [[issuer]]
//!     issuer = "https://login.example.com"
//!     audiences = ["https://api.example.com"]
//!     [[route]]
//!     path = "/"
//!     [forward]
//!     claims_to_headers = { sub = "x-auth-sub" }
//! "#)?;
//! let service = ExtAuthz::from_config(config)?;
//! service.run(bearer_guard::gateway::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! The HTTP check is a tower service, so it mounts in an axum app of your own:
//!
//! ```no_run
//! # fn app(service: bearer_guard::ext_authz::ExtAuthz) {
//! let app: axum::Router = axum::Router::new().route_service("/check", service.http_service());
//! # }
//! ```
//!
//! **A denial is an answer.** Envoy's `failure_mode_allow` applies only when the
//! check itself fails (connection refused, timeout, an RPC error). Every decision
//! of this service, including the 503 with `Retry-After` when no keys could be
//! loaded, is a `CheckResponse` (or an HTTP answer) that Envoy passes to the
//! client, so `failure_mode_allow: true` never lets a request through that the
//! service refused; it only matters when the service cannot be reached.
//!
//! Metrics: `bearer_guard_ext_authz_checks_total{protocol, outcome}` (`grpc` or
//! `http`; `allowed` or the decision's outcome, plus `untrusted_peer`).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::Guard;
use crate::decision::config::{build_guard, from_toml, load};
use crate::decision::{ConfigError, Decider, HeaderRules, IssuerConfig, RouteConfig};

pub mod grpc;
pub mod http;
mod trusted;

pub use grpc::GrpcCheck;
pub use http::{HttpCheck, PeerAddr};
pub use trusted::TrustedProxies;

/// `ext-authz.toml`: the check listeners and the gateway's issuer, route and
/// forward sections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExtAuthzConfig {
    /// Envoy's gRPC `Authorization/Check` (h2c) listens here.
    #[serde(default)]
    pub grpc_listen: Option<SocketAddr>,
    /// The HTTP check listens here (HTTP/1.1 and h2c).
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// `/-/health`, `/-/ready`, `/-/metrics`.
    pub admin_listen: SocketAddr,
    /// The `realm` of `WWW-Authenticate` challenges.
    #[serde(default)]
    pub realm: Option<String>,
    /// Peers whose "original request" headers (`X-Original-*`, `X-Forwarded-*`)
    /// the HTTP check believes: addresses or CIDRs. Default: loopback only.
    #[serde(default)]
    pub trusted_proxies: Option<Vec<String>>,
    /// How long in-flight checks may take to finish on shutdown (default 30 s).
    #[serde(default)]
    pub shutdown_timeout_secs: Option<f64>,
    /// Allow plain-http discovery and JWKS URLs on non-loopback hosts.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// The trusted issuers (`[[issuer]]`, at least one).
    #[serde(rename = "issuer", default)]
    pub issuers: Vec<IssuerConfig>,
    /// The routes (`[[route]]`, at least one): first match wins.
    #[serde(rename = "route", default)]
    pub routes: Vec<RouteConfig>,
    /// What the upstream learns about the verified token.
    #[serde(default)]
    pub forward: CheckForwardConfig,
}

/// `[forward]` of `ext-authz.toml`: the gateway's, less what the proxy does
/// itself (`X-Forwarded-*`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CheckForwardConfig {
    /// Claim name -> request header, as in `gateway.toml`.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Have the proxy remove `Authorization` before the upstream (Envoy only:
    /// nginx, Caddy and Traefik are told in their own configuration).
    #[serde(default)]
    pub strip_authorization: bool,
}

impl ExtAuthzConfig {
    /// Parses a configuration (shape only; see [`ExtAuthz::from_config`]).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        from_toml(text)
    }

    /// Reads and parses a configuration file; errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        load(path.as_ref())
    }
}

/// The decision and the proxies it believes: what both check services share.
#[derive(Debug)]
pub(crate) struct Core {
    pub decider: Decider,
    pub trusted: TrustedProxies,
}

/// A configured ext-authz service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ExtAuthz {
    core: Arc<Core>,
    listeners: Listeners,
    metrics: Option<PrometheusHandle>,
}

#[derive(Clone, Debug)]
struct Listeners {
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    shutdown_timeout: Duration,
}

impl ExtAuthz {
    /// Checks the configuration's meaning and builds the service (and its guard).
    /// Errors name the offending key. Nothing is fetched or bound yet.
    pub fn from_config(config: ExtAuthzConfig) -> Result<ExtAuthz, ConfigError> {
        if config.grpc_listen.is_none() && config.http_listen.is_none() {
            return Err(ConfigError::at(
                "grpc_listen",
                "neither grpc_listen nor http_listen is set: nothing would be served",
            ));
        }
        if let Some(i) = config.routes.iter().position(|r| r.upstream.is_some()) {
            return Err(ConfigError::at(
                format!("route[{i}].upstream"),
                "a gateway key: the ext-authz service forwards nothing, the proxy asking it chooses the upstream",
            ));
        }
        let shutdown_timeout =
            crate::gateway::seconds("shutdown_timeout_secs", config.shutdown_timeout_secs)?;
        let trusted = match &config.trusted_proxies {
            Some(list) => TrustedProxies::parse(list)?,
            None => TrustedProxies::loopback(),
        };
        let guard = build_guard(
            &config.issuers,
            config.realm.as_deref(),
            config.allow_insecure_http,
            |builder| builder,
        )?;
        // The proxy sets Forwarded/X-Forwarded-* itself: its values are kept.
        let rules = HeaderRules {
            strip_authorization: config.forward.strip_authorization,
            trust_forwarded: true,
        };
        let decider = Decider::from_config(
            guard,
            &config.routes,
            &config.forward.claims_to_headers,
            rules,
        )?;
        let mut service = ExtAuthz::new(decider, trusted);
        service.listeners = Listeners {
            grpc: config.grpc_listen,
            http: config.http_listen,
            admin: Some(config.admin_listen),
            shutdown_timeout,
        };
        Ok(service)
    }

    /// A service over `decider`, believing original-request headers from
    /// `trusted` peers, to mount in your own servers ([`grpc_service`](Self::grpc_service),
    /// [`http_service`](Self::http_service)); [`run`](Self::run) binds nothing for it.
    pub fn new(decider: Decider, trusted: TrustedProxies) -> ExtAuthz {
        ExtAuthz {
            core: Arc::new(Core { decider, trusted }),
            listeners: Listeners {
                grpc: None,
                http: None,
                admin: None,
                shutdown_timeout: Duration::from_secs(30),
            },
            metrics: None,
        }
    }

    /// Serves `/-/metrics` from this Prometheus recorder handle.
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The guard validating the tokens.
    pub fn guard(&self) -> &Guard {
        self.core.decider.guard()
    }

    /// The configured gRPC, HTTP and admin addresses.
    pub fn listen_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>) {
        let l = &self.listeners;
        (l.grpc, l.http, l.admin)
    }

    /// Envoy's `Authorization` gRPC service, for a tonic server.
    pub fn grpc_service(
        &self,
    ) -> envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer<
        GrpcCheck,
    > {
        envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer::new(
            GrpcCheck::new(self.core.clone()),
        )
    }

    /// The HTTP check, a tower service.
    pub fn http_service(&self) -> HttpCheck {
        HttpCheck::new(self.core.clone())
    }

    /// Serves the gRPC check (h2c) on `listener` until `shutdown` completes.
    pub async fn serve_grpc(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let signal = shutdown.shared();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = tonic::transport::Server::builder()
            .add_service(self.grpc_service())
            .serve_with_incoming_shutdown(incoming, signal.clone());
        let grace = self.listeners.shutdown_timeout;
        tokio::select! {
            result = served => result.map_err(io::Error::other),
            () = async { signal.await; tokio::time::sleep(grace).await } => {
                tracing::warn!("shutdown timeout: in-flight checks abandoned");
                Ok(())
            }
        }
    }

    /// Serves the HTTP check on `listener` until `shutdown` completes.
    pub async fn serve_http(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let check = self.http_service();
        let handler = move |mut req: ::http::Request<hyper::body::Incoming>, peer: SocketAddr| {
            req.extensions_mut().insert(PeerAddr(peer));
            let check = check.clone();
            async move { check.check(req).await }
        };
        crate::gateway::serve_connections(
            listener,
            shutdown,
            self.listeners.shutdown_timeout,
            handler,
        )
        .await
    }

    /// Serves `/-/health`, `/-/ready` and `/-/metrics` on `listener`.
    pub async fn serve_admin(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let this = self.clone();
        let handler = move |req: ::http::Request<hyper::body::Incoming>, _peer: SocketAddr| {
            let this = this.clone();
            async move {
                crate::gateway::admin(this.guard(), this.metrics.as_ref(), req.uri().path()).await
            }
        };
        crate::gateway::serve_connections(
            listener,
            shutdown,
            self.listeners.shutdown_timeout,
            handler,
        )
        .await
    }

    /// Binds the configured listeners and serves until `shutdown` completes. Also
    /// starts loading the issuers' keys, so `/-/ready` turns green early.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let shutdown = shutdown.shared();
        let bind = |addr: Option<SocketAddr>| async move {
            match addr {
                Some(addr) => TcpListener::bind(addr).await.map(Some),
                None => Ok(None),
            }
        };
        let l = &self.listeners;
        let (grpc, http, admin) = (
            bind(l.grpc).await?,
            bind(l.http).await?,
            bind(l.admin).await?,
        );
        let addr = |l: &Option<TcpListener>| {
            l.as_ref()
                .and_then(|l| l.local_addr().ok())
                .map_or_else(|| "-".to_owned(), |a| a.to_string())
        };
        tracing::info!(
            grpc = addr(&grpc),
            http = addr(&http),
            admin = addr(&admin),
            "ext-authz listening"
        );
        let guard = self.guard().clone();
        tokio::spawn(async move {
            if let Err(e) = guard.prefetch().await {
                tracing::warn!(error = %e, "initial key load failed; retried on demand");
            }
        });
        let grpc = serve_on(grpc, |l| self.serve_grpc(l, shutdown.clone()));
        let http = serve_on(http, |l| self.serve_http(l, shutdown.clone()));
        let admin = serve_on(admin, |l| self.serve_admin(l, shutdown.clone()));
        let (a, b, c) = tokio::join!(grpc, http, admin);
        a.and(b).and(c)
    }
}

/// Serves `listener` with `serve`, or nothing when there is none.
async fn serve_on<F: Future<Output = io::Result<()>>>(
    listener: Option<TcpListener>,
    serve: impl FnOnce(TcpListener) -> F,
) -> io::Result<()> {
    match listener {
        Some(listener) => serve(listener).await,
        None => Ok(()),
    }
}

/// Counts one check: `allowed`, a decision's outcome, or `untrusted_peer`.
pub(crate) fn count(protocol: &'static str, outcome: &'static str) {
    metrics::counter!("bearer_guard_ext_authz_checks_total", "protocol" => protocol, "outcome" => outcome)
        .increment(1);
}
