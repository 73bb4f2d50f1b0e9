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
//! **Protected-resource metadata** (`[resource_metadata]`, RFC 9728): every
//! challenge names it, and a check for its well-known path is answered with the
//! document as a refusal of status 200 (outcome `resource_metadata`). Envoy's gRPC
//! mode sends that `denied_response` to the client as is; nginx passes it on from
//! `@denied` when `X-Auth-Status` is 200 (`examples/proxies/nginx.conf`). For
//! Caddy, Traefik and Envoy's HTTP mode, where any 2xx from the check means
//! "forward upstream", route the well-known path to the HTTP check itself
//! (`examples/proxies/Caddyfile`), which answers a direct request for it.
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

use ::http::HeaderName;

use crate::Guard;
use crate::decision::config::{build_guard, from_toml, load};
use crate::decision::{ConfigError, Decider, DpopConfig, HeaderRules, IssuerConfig, RouteConfig};
use crate::gateway::BindError;
use crate::gateway::listener::{ConnKeys, ConnLimits};

mod certificate;
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
    /// Peers allowed to call the gRPC check: addresses or CIDRs. Default: the
    /// `trusted_proxies` list (so loopback only when that is not set). A check
    /// from any other peer is denied (`PERMISSION_DENIED`, HTTP 403).
    #[serde(default)]
    pub grpc_allowed_peers: Option<Vec<String>>,
    /// The request header in which a trusted proxy forwards the client's TLS
    /// certificate to the HTTP check, for certificate-bound tokens (RFC 8705):
    /// URL-encoded PEM (nginx `$ssl_client_escaped_cert`) or base64 DER (Caddy
    /// `{http.request.tls.client.certificate_der_base64}`, Traefik
    /// `X-Forwarded-Tls-Client-Cert`). Believed from `trusted_proxies` only.
    /// Default: none (the gRPC check reads `attributes.source.certificate`).
    #[serde(default)]
    pub client_cert_header: Option<String>,
    /// `[limits]` of the gRPC and HTTP check listeners.
    #[serde(default)]
    pub limits: CheckLimitsConfig,
    /// How long in-flight checks may take to finish on shutdown (default 30 s).
    #[serde(default)]
    pub shutdown_timeout_secs: Option<f64>,
    /// Allow plain-http discovery and JWKS URLs on non-loopback hosts.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// The trusted issuers (`[[issuer]]`, at least one).
    #[serde(rename = "issuer", default)]
    pub issuers: Vec<IssuerConfig>,
    /// `[dpop]`: DPoP-bound tokens (RFC 9449), off without it. The proxy must
    /// pass the client's `DPoP` header to the check (see the README).
    #[serde(default)]
    pub dpop: Option<DpopConfig>,
    /// The routes (`[[route]]`, at least one): first match wins.
    #[serde(rename = "route", default)]
    pub routes: Vec<RouteConfig>,
    /// What the upstream learns about the verified token.
    #[serde(default)]
    pub forward: CheckForwardConfig,
    /// `[resource_metadata]` (RFC 9728): named in every challenge, and answered
    /// by the checks (see the [module docs](self) for each proxy).
    #[serde(default)]
    pub resource_metadata: Option<crate::decision::config::ResourceMetadataConfig>,
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
    /// What joins the elements of an array claim in its header (default `,`).
    #[serde(default)]
    pub claims_separator: Option<String>,
    /// Have the proxy remove `Authorization` before the upstream (Envoy only:
    /// nginx, Caddy and Traefik are told in their own configuration).
    #[serde(default)]
    pub strip_authorization: bool,
}

/// `[limits]` of `ext-authz.toml`, for both check listeners: each absent key
/// takes the default named on it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CheckLimitsConfig {
    /// A connection's first request head must arrive whole within this many
    /// seconds of the accept, each later HTTP/1.1 one within it of the previous
    /// response (default 10).
    #[serde(default)]
    pub header_read_timeout_secs: Option<f64>,
    /// A connection with no check in flight for this many seconds is closed
    /// (default 300: proxies keep their connections to the check service open).
    #[serde(default)]
    pub idle_timeout_secs: Option<f64>,
    /// Open connections at most, per listener (default 512).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// The largest request head in bytes (default 65536, 8192 to 1048576).
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    /// HTTP/2 streams (checks) in flight at once per connection (default 200).
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// HTTP/2 keepalive: a PING this often, the connection closed when its
    /// answer takes as long (default 60; 0 turns pings off).
    #[serde(default)]
    pub keepalive_secs: Option<f64>,
}

impl CheckLimitsConfig {
    fn conn_limits(&self) -> Result<ConnLimits, ConfigError> {
        // Proxies keep their connections to a check service open: a longer idle
        // timeout than an edge's, and HTTP/2 pings to notice a vanished proxy.
        let defaults = ConnLimits {
            idle_timeout: Duration::from_secs(300),
            keepalive: Some(Duration::from_secs(60)),
            ..ConnLimits::default()
        };
        let keys = ConnKeys {
            header_read_timeout_secs: self.header_read_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
            max_concurrent_streams: self.max_concurrent_streams,
            keepalive_secs: self.keepalive_secs,
        };
        ConnLimits::from_keys(keys, defaults)
    }
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
    /// Who may call the gRPC check.
    pub grpc_peers: TrustedProxies,
    /// Where a trusted proxy puts the client certificate for the HTTP check.
    pub cert_header: Option<HeaderName>,
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
    limits: ConnLimits,
}

impl ExtAuthz {
    /// Checks the configuration's meaning and builds the service (and its guard).
    /// Errors name the offending key. Nothing is fetched or bound yet.
    pub fn from_config(config: ExtAuthzConfig) -> Result<ExtAuthz, ConfigError> {
        Self::from_config_with(config, |builder| builder)
    }

    /// [`from_config`](Self::from_config), the guard's builder adjusted by
    /// `configure` last (an HTTP client, a clock in tests).
    ///
    /// ```
    /// use bearer_guard::clock::ManualClock;
    /// use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = ExtAuthzConfig::from_toml(r#"
    ///     grpc_listen = "127.0.0.1:9001"
    ///     admin_listen = "127.0.0.1:9090"
    ///     [[issuer]]
    ///     issuer = "https://login.example.com"
    ///     audiences = ["https://api.example.com"]
    ///     [[route]]
    ///     path = "/"
    /// "#)?;
    /// let clock = ManualClock::starting_now();
    /// let service = ExtAuthz::from_config_with(config, |b| b.clock(clock.clone()))?;
    /// assert!(!service.guard().ready());
    /// # Ok(()) }
    /// ```
    pub fn from_config_with(
        config: ExtAuthzConfig,
        configure: impl FnOnce(crate::GuardBuilder) -> crate::GuardBuilder,
    ) -> Result<ExtAuthz, ConfigError> {
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
        let grpc_peers = match &config.grpc_allowed_peers {
            Some(list) => TrustedProxies::parse(list)
                .map_err(|e| e.renamed("trusted_proxies", "grpc_allowed_peers"))?,
            None => trusted.clone(),
        };
        let cert_header = match &config.client_cert_header {
            None => None,
            Some(name) => Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::at(
                    "client_cert_header",
                    format!("{name:?} is not a header name"),
                )
            })?),
        };
        let limits = config.limits.conn_limits()?;
        let guard = build_guard(
            &config.issuers,
            config.dpop.as_ref(),
            config.realm.as_deref(),
            config.allow_insecure_http,
            crate::decision::config::ResourceMetadataConfig::apply(
                config.resource_metadata.as_ref(),
                configure,
            ),
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
        let decider = match &config.forward.claims_separator {
            Some(separator) => decider.claims_separator(separator)?,
            None => decider,
        };
        let mut service = ExtAuthz::new(decider, trusted).grpc_allowed_peers(grpc_peers);
        if let Some(name) = cert_header {
            service = service.client_cert_header(name);
        }
        service.listeners = Listeners {
            grpc: config.grpc_listen,
            http: config.http_listen,
            admin: Some(config.admin_listen),
            shutdown_timeout,
            limits,
        };
        Ok(service)
    }

    /// A service over `decider`, believing original-request headers from
    /// `trusted` peers, to mount in your own servers ([`grpc_service`](Self::grpc_service),
    /// [`http_service`](Self::http_service)); [`run`](Self::run) binds nothing for it.
    /// The gRPC check is then accepted from `trusted` peers too
    /// ([`grpc_allowed_peers`](Self::grpc_allowed_peers) to change it).
    pub fn new(decider: Decider, trusted: TrustedProxies) -> ExtAuthz {
        ExtAuthz {
            core: Arc::new(Core {
                decider,
                grpc_peers: trusted.clone(),
                trusted,
                cert_header: None,
            }),
            listeners: Listeners {
                grpc: None,
                http: None,
                admin: None,
                shutdown_timeout: Duration::from_secs(30),
                limits: CheckLimitsConfig::default()
                    .conn_limits()
                    .unwrap_or_default(),
            },
            metrics: None,
        }
    }

    /// The peers that may call the gRPC check (`grpc_allowed_peers`); a check
    /// from any other is denied with `PERMISSION_DENIED` and HTTP 403. The peer
    /// is the [`PeerAddr`] extension, or else tonic's `remote_addr`; a check
    /// without either is denied. Call before cloning the service.
    ///
    /// ```
    /// use bearer_guard::decision::Decider;
    /// use bearer_guard::ext_authz::{ExtAuthz, TrustedProxies};
    /// # fn run(decider: Decider) -> Result<(), Box<dyn std::error::Error>> {
    /// let envoys = TrustedProxies::parse(&["10.8.0.0/16".to_owned()])?;
    /// let service = ExtAuthz::new(decider, TrustedProxies::loopback()).grpc_allowed_peers(envoys);
    /// # let _ = service; Ok(()) }
    /// ```
    pub fn grpc_allowed_peers(mut self, peers: TrustedProxies) -> Self {
        match Arc::get_mut(&mut self.core) {
            Some(core) => core.grpc_peers = peers,
            None => tracing::warn!("grpc_allowed_peers called on a shared service; ignored"),
        }
        self
    }

    /// The request header in which a trusted proxy forwards the client's TLS
    /// certificate to the HTTP check (`client_cert_header`; see
    /// [`http`]). Call before cloning the service.
    pub fn client_cert_header(mut self, name: HeaderName) -> Self {
        match Arc::get_mut(&mut self.core) {
            Some(core) => core.cert_header = Some(name),
            None => tracing::warn!("client_cert_header called on a shared service; ignored"),
        }
        self
    }

    /// Serves `/-/metrics` from this Prometheus recorder handle.
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        crate::metrics::describe_metrics();
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

    /// Serves the gRPC check (h2c) on `listener` until `shutdown` completes,
    /// within `[limits]` (connections, header read and idle timeouts, header
    /// list size, concurrent streams, keepalive), like the HTTP check.
    pub async fn serve_grpc(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let service = self.grpc_service();
        let handler = move |req: ::http::Request<hyper::body::Incoming>, peer: SocketAddr| {
            let mut service = service.clone();
            let mut req = req.map(tonic::body::Body::new);
            req.extensions_mut().insert(PeerAddr(peer));
            async move {
                use tower_service::Service as _;
                match service.call(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        };
        crate::gateway::listener::serve_connections_with(
            listener,
            shutdown,
            self.listeners.shutdown_timeout,
            &self.listeners.limits,
            None,
            handler,
        )
        .await
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
            check.clone().check(req)
        };
        crate::gateway::listener::serve_connections_with(
            listener,
            shutdown,
            self.listeners.shutdown_timeout,
            &self.listeners.limits,
            None,
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
    /// starts loading the issuers' keys, so `/-/ready` turns green early. A bind
    /// failure names the key and the address ([`bind`](Self::bind)).
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let bound = self
            .bind()
            .await
            .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
        bound.serve(shutdown).await
    }

    /// Binds `grpc_listen`, `http_listen` and `admin_listen` (those configured);
    /// nothing is served yet. An error names the key and the address.
    ///
    /// ```
    /// use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let toml = |http: &str| format!(r#"
    ///     http_listen = "{http}"
    ///     admin_listen = "127.0.0.1:0"
    ///     [[issuer]]
    ///     issuer = "https://login.example.com"
    ///     audiences = ["https://api.example.com"]
    ///     [[route]]
    ///     path = "/"
    /// "#);
    /// let service = ExtAuthz::from_config(ExtAuthzConfig::from_toml(&toml("127.0.0.1:0"))?)?;
    /// let bound = service.bind().await?;
    /// let taken = bound.http_addr().expect("configured").to_string();
    /// let again = ExtAuthz::from_config(ExtAuthzConfig::from_toml(&toml(&taken))?)?;
    /// let error = again.bind().await.unwrap_err();
    /// assert!(error.to_string().starts_with(&format!("http_listen = {taken}: ")));
    /// # Ok(()) }
    /// ```
    pub async fn bind(&self) -> Result<BoundExtAuthz, BindError> {
        let bind = |key: &'static str, addr: Option<SocketAddr>| async move {
            match addr {
                Some(addr) => TcpListener::bind(addr)
                    .await
                    .map(Some)
                    .map_err(|source| BindError::new(key, addr, source)),
                None => Ok(None),
            }
        };
        let l = &self.listeners;
        Ok(BoundExtAuthz {
            service: self.clone(),
            grpc: bind("grpc_listen", l.grpc).await?,
            http: bind("http_listen", l.http).await?,
            admin: bind("admin_listen", l.admin).await?,
        })
    }
}

/// An [`ExtAuthz`] whose listeners are bound ([`ExtAuthz::bind`]).
#[derive(Debug)]
pub struct BoundExtAuthz {
    service: ExtAuthz,
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
    admin: Option<TcpListener>,
}

impl BoundExtAuthz {
    /// The address of the gRPC check (the port chosen when configured as 0).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of the HTTP check.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of the admin endpoints.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes (see [`ExtAuthz::run`]).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let shutdown = shutdown.shared();
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        tracing::info!(
            grpc = addr(self.grpc_addr()),
            http = addr(self.http_addr()),
            admin = addr(self.admin_addr()),
            "ext-authz listening"
        );
        let this = &self.service;
        let guard = this.guard().clone();
        tokio::spawn(async move {
            if let Err(e) = guard.prefetch().await {
                tracing::warn!(error = %e, "initial key load failed; retried on demand");
            }
        });
        let grpc = serve_on(self.grpc, |l| this.serve_grpc(l, shutdown.clone()));
        let http = serve_on(self.http, |l| this.serve_http(l, shutdown.clone()));
        let admin = serve_on(self.admin, |l| this.serve_admin(l, shutdown.clone()));
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
    static ALLOWED_HTTP: crate::metrics::Hot<metrics::Counter> = crate::metrics::Hot::new();
    static ALLOWED_GRPC: crate::metrics::Hot<metrics::Counter> = crate::metrics::Hot::new();
    let hot = match (protocol, outcome) {
        ("http", "allowed") => Some(&ALLOWED_HTTP),
        ("grpc", "allowed") => Some(&ALLOWED_GRPC),
        _ => None,
    };
    crate::metrics::with_handle(
        hot,
        || metrics::counter!("bearer_guard_ext_authz_checks_total", "protocol" => protocol, "outcome" => outcome),
        |c| c.increment(1),
    );
}
