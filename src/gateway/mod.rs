//! A validating reverse proxy (feature `gateway`): every request is matched to a
//! route, its bearer token validated by a [`Guard`] and its scopes checked, then it
//! is forwarded to its route's upstream (or the global one) with the verified
//! claims in request headers.
//!
//! ```no_run
//! use bearer_guard::gateway::{Gateway, GatewayConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = GatewayConfig::from_toml(r#"
//!     listen = "127.0.0.1:8080"
//!     upstream = "http://127.0.0.1:9000"
//!     [[issuer]]
//!     issuer = "https://login.example.com"
//!     audiences = ["https://api.example.com"]
//!     [[route]]
//!     path = "/"
//! "#)?;
//! let gateway = Gateway::from_config(config)?;
//! let listener = tokio::net::TcpListener::bind(gateway.listen_addr()).await?;
//! gateway.serve(listener, bearer_guard::gateway::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! Per request, in order:
//! 1. `/-/health`, `/-/ready`, `/-/metrics` are answered by the gateway itself
//!    on `admin_listen`, and on `listen` only with `admin_on_listen`; a
//!    `/-/ready` probe while keys are missing retries the load, within the retry
//!    back-off;
//! 2. the path is normalised ([`path`]); a refused path is a 400; with
//!    `[resource_metadata]`, `GET`/`HEAD` on its well-known path (RFC 9728) is
//!    answered with the document, without a token and without forwarding;
//! 3. the first route whose prefix and methods match is chosen; when routes match
//!    the prefix but none the method, a 405 with `Allow` (before authentication,
//!    like the 404 when no route matches the prefix);
//! 4. unless the route is public, the token is validated (the guard's RFC 6750
//!    answer on failure) and the route's scopes checked (403 `insufficient_scope`);
//!    with `[dpop]`, a DPoP proof is checked on every request against `public_url`
//!    plus the path (never `Host`), and a certificate-bound token against the
//!    [`ClientCertificate`] a TLS listener put in the request's extensions;
//! 5. the claim headers are computed from the verified token; a claim the
//!    upstream would read differently (whitespace at either end, a control or
//!    non-ASCII character, `null`, an object, an array element holding the
//!    separator) refuses the request with 401
//!    `invalid_token` rather than forwarding an altered or missing header;
//! 6. hop-by-hop headers are removed, and every client header that must not reach
//!    the upstream (claim headers and reserved names also as look-alikes with `_`,
//!    route and method overrides, client-address headers unless `trust_forwarded`:
//!    see `forward.rs`); the claim headers and `X-Forwarded-For`/`-Proto`/`-Host`
//!    (`[forward] x_forwarded`) are set, and the request is sent to the route's
//!    upstream (`upstream.rs`: `http://`, `h2c://` or verified `https://`) with
//!    the normalised path and the original query, trailers both ways; a body over
//!    `max_body_bytes` is a 413, a refused connection a 502, no response headers
//!    within `upstream_timeout_secs` a 504, and a body that stalls past
//!    `upstream_body_timeout_secs` aborts the response.
//!
//! Connections are accepted within `[limits]` (`listener.rs`): `TCP_NODELAY`,
//! header read and idle timeouts, a connection limit, a header size limit; with
//! `[tls]` over TLS (`tls.rs`: reloaded certificates, client certificates put in
//! each request's extensions as a [`ClientCertificate`]).
//!
//! An allowed HTTP/1.1 `Upgrade` (WebSocket; `[forward] upgrade_protocols`) is
//! forwarded and, on the upstream's `101`, both connections are spliced
//! (`upgrade.rs`); an HTTP/2 WebSocket (extended CONNECT, RFC 8441) is sent on
//! as that HTTP/1.1 handshake and its stream spliced; any other `CONNECT` is
//! 501. A [`BoundGateway`]'s configuration can be swapped while it
//! serves ([`Reloader`], `reload.rs`; the binary reloads on `SIGHUP` and, with
//! `--watch`, on a file change).
//!
//! Each request gets an id, forwarded and returned as `x-request-id`, and one
//! access-log event (target `bearer_guard::access`; fields in `access.rs`).
//!
//! Metrics (through the `metrics` facade; the binary installs the Prometheus
//! recorder, built by [`prometheus_builder`]):
//! `bearer_guard_gateway_requests_total{outcome}` and the latency histogram
//! `bearer_guard_request_duration_seconds{outcome}`, besides the guard's own.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::decision::{Allow, CheckRequest, Decider, Decision, HeaderRules};
use crate::response::DPOP_NONCE;
use crate::sender::ClientCertificate;
use crate::{Guard, GuardBuilder};

mod access;
mod body;
pub mod config;
mod forward;
pub(crate) mod listener;
mod pool;
mod reload;
mod tls;
mod upgrade;
mod upstream;
/// The path normaliser (now shared with the ext-authz service).
pub use crate::decision::path;

pub use config::{
    ClientAuth, ConfigError, DpopConfig, ForwardConfig, GatewayConfig, IssuerConfig, LimitsConfig,
    RouteConfig, TlsConfig,
};

pub use access::LATENCY_BUCKETS;
pub use reload::{Reloaded, Reloader};

use access::{Note, X_REQUEST_ID};
use body::{BoxError, UpstreamBody};
use forward::{Forwarding, strip_hop_by_hop};
use listener::ConnLimits;
use tls::TlsListener;
use upgrade::UpgradePolicy;
use upstream::Upstreams;

/// The body of every gateway response: the upstream's, streamed, or the gateway's
/// own. Its error aborts the response (the upstream failed or stalled).
pub type GatewayBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured gateway. Cheap to clone; serve it on as many listeners as needed.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    decider: Decider,
    /// What the guard was built from: a reload with the same keeps the guard.
    guard_config: GuardConfig,
    upgrades: UpgradePolicy,
    upstreams: Upstreams,
    /// `[tls]`: `listen` terminates TLS.
    tls: Option<TlsListener>,
    upstream_timeout: Duration,
    upstream_body_timeout: Duration,
    max_body_bytes: u64,
    shutdown_timeout: Duration,
    conn_limits: ConnLimits,
    forwarding: Forwarding,
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    admin_on_listen: bool,
    metrics: Option<PrometheusHandle>,
}

/// The configuration the guard is built from (`[[issuer]]`, `realm`,
/// `allow_insecure_http`, `[resource_metadata]`, named in its challenges, and
/// `[dpop]`: an unchanged one keeps its replay window).
#[derive(Debug, Clone, PartialEq)]
struct GuardConfig {
    issuers: Vec<IssuerConfig>,
    realm: Option<String>,
    allow_insecure_http: bool,
    resource_metadata: Option<crate::decision::config::ResourceMetadataConfig>,
    dpop: Option<crate::decision::config::DpopConfig>,
}

impl GuardConfig {
    fn of(config: &GatewayConfig) -> Self {
        GuardConfig {
            issuers: config.issuers.clone(),
            realm: config.realm.clone(),
            allow_insecure_http: config.allow_insecure_http,
            resource_metadata: config.resource_metadata.clone(),
            dpop: config.dpop.clone(),
        }
    }

    fn build(
        &self,
        configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
    ) -> Result<Guard, ConfigError> {
        crate::decision::config::build_guard(
            &self.issuers,
            self.dpop.as_ref(),
            self.realm.as_deref(),
            self.allow_insecure_http,
            crate::decision::config::ResourceMetadataConfig::apply(
                self.resource_metadata.as_ref(),
                configure,
            ),
        )
    }
}

/// The state every request reads: swapped whole by a reload.
type Live = Arc<ArcSwap<Shared>>;

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt_as("Gateway", f)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fmt_as("Shared", f)
    }
}

impl Shared {
    fn fmt_as(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("upstream", &self.upstreams.default.authority)
            .field("tls", &self.tls.is_some())
            .field("decider", &self.decider)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Checks the configuration's meaning and builds the gateway (and its guard).
    /// Errors name the offending key. Nothing is fetched or bound yet.
    pub fn from_config(config: GatewayConfig) -> Result<Gateway, ConfigError> {
        Self::from_config_with(config, |builder| builder)
    }

    /// [`from_config`](Self::from_config), with the guard's builder adjusted by
    /// `configure` after the configuration was applied: an HTTP client with a
    /// private CA for the issuers, or a clock in tests.
    ///
    /// ```
    /// use bearer_guard::clock::ManualClock;
    /// use bearer_guard::gateway::{Gateway, GatewayConfig};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = GatewayConfig::from_toml(r#"
    ///     listen = "127.0.0.1:8080"
    ///     upstream = "http://127.0.0.1:9000"
    ///     [[issuer]]
    ///     issuer = "https://login.example.com"
    ///     audiences = ["https://api.example.com"]
    ///     [[route]]
    ///     path = "/"
    /// "#)?;
    /// let clock = ManualClock::starting_now();
    /// let gateway = Gateway::from_config_with(config, |b| b.clock(clock.clone()))?;
    /// assert!(!gateway.guard().ready());
    /// # Ok(()) }
    /// ```
    pub fn from_config_with(
        config: GatewayConfig,
        configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
    ) -> Result<Gateway, ConfigError> {
        let shared = Self::assemble(config, |guard_config| guard_config.build(configure))?;
        Ok(Gateway {
            shared: Arc::new(shared),
        })
    }

    /// Builds a gateway whose guard comes from `guard` (built, or a running
    /// gateway's kept on reload).
    fn assemble(
        config: GatewayConfig,
        guard: impl FnOnce(&GuardConfig) -> Result<Guard, ConfigError>,
    ) -> Result<Shared, ConfigError> {
        let upstreams = Upstreams::from_config(&config)?;
        let tls = config
            .tls
            .as_ref()
            .map(TlsListener::from_config)
            .transpose()?;
        let upstream_timeout = seconds("upstream_timeout_secs", config.upstream_timeout_secs)?;
        let shutdown_timeout = seconds("shutdown_timeout_secs", config.shutdown_timeout_secs)?;
        let limits = Limits::from_config(&config.limits)?;
        let guard_config = GuardConfig::of(&config);
        let guard = guard(&guard_config)?;
        let decider = Decider::from_config(
            guard,
            &config.routes,
            &config.forward.claims_to_headers,
            HeaderRules {
                strip_authorization: config.forward.strip_authorization,
                trust_forwarded: config.forward.trust_forwarded,
            },
        )?;
        let decider = match &config.forward.claims_separator {
            Some(separator) => decider.claims_separator(separator)?,
            None => decider,
        };
        let forwarding = Forwarding::from_config(&config.forward, tls.is_some())?;
        let upgrades = UpgradePolicy::from_config(&config.forward.upgrade_protocols)?;
        Ok(Shared {
            decider,
            guard_config,
            upgrades,
            upstreams,
            tls,
            upstream_timeout,
            upstream_body_timeout: limits.upstream_body_timeout,
            max_body_bytes: limits.max_body_bytes,
            shutdown_timeout,
            conn_limits: ConnLimits {
                extended_connect: true,
                ..limits.conn
            },
            forwarding,
            listen: config.listen,
            admin_listen: config.admin_listen,
            admin_on_listen: config.admin_on_listen,
            metrics: None,
        })
    }

    /// Serves `/-/metrics` from this Prometheus recorder handle. Without one,
    /// `/-/metrics` answers 404.
    ///
    /// Also gives every metric of the crate its `HELP` text
    /// ([`describe_metrics`](crate::metrics::describe_metrics)). Build the
    /// recorder with [`prometheus_builder`] for the latency histogram's buckets.
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        crate::metrics::describe_metrics();
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.metrics = Some(handle);
        } else {
            tracing::warn!("with_metrics called on a shared gateway; ignored");
        }
        self
    }

    /// The guard validating the tokens.
    pub fn guard(&self) -> &Guard {
        self.shared.decider.guard()
    }

    /// The configured `listen` address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// The configured `admin_listen` address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.admin_listen
    }

    /// Serves the proxy on `listener` until `shutdown` completes, then lets
    /// in-flight requests finish (bounded by `shutdown_timeout_secs`). Also starts
    /// loading the issuers' keys in the background, so `/-/ready` turns green early
    /// (unless a load failed less than the retry back-off ago).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.serve_live(self.live(), listener, shutdown).await
    }

    /// A fresh reloadable cell holding this gateway's state.
    fn live(&self) -> Live {
        Arc::new(ArcSwap::new(self.shared.clone()))
    }

    async fn serve_live(
        &self,
        live: Live,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        load_keys_in_background(live.load().decider.guard());
        // The certificate files are watched while `listen` is served; `[tls]`
        // is `listen`'s, kept across configuration reloads like the address.
        let watcher = self.shared.tls.as_ref().map(|tls| {
            tokio::spawn(TlsListener::watch(
                tls.certificate.clone(),
                tls.reload_interval,
            ))
        });
        let mode = Mode {
            proxy: true,
            admin: false,
        };
        let served = self.accept_loop(live, listener, shutdown, mode).await;
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        served
    }

    /// Whether `listen` terminates TLS (`[tls]`).
    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// Reads `[tls]`'s certificate and key files now (they are also read when
    /// they change, every `reload_interval_secs`). A valid pair is served to new
    /// connections from the next handshake on; an invalid one is refused with the
    /// key and the problem, and the old pair kept. For a reload on a signal.
    ///
    /// ```
    /// use bearer_guard::gateway::{Gateway, GatewayConfig};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = GatewayConfig::from_toml(r#"
    ///     listen = "127.0.0.1:8080"
    ///     upstream = "http://127.0.0.1:9000"
    ///     [[issuer]]
    ///     issuer = "https://login.example.com"
    ///     audiences = ["https://api.example.com"]
    ///     [[route]]
    ///     path = "/"
    /// "#)?;
    /// let gateway = Gateway::from_config(config)?;
    /// let error = gateway.reload_tls_certificate().unwrap_err();
    /// assert_eq!(error.key(), Some("tls"), "plain http: nothing to reload");
    /// # Ok(()) }
    /// ```
    pub fn reload_tls_certificate(&self) -> Result<(), ConfigError> {
        match &self.shared.tls {
            Some(tls) => tls.certificate.reload(),
            None => Err(ConfigError::at("tls", "no [tls]: listen serves plain http")),
        }
    }

    /// Serves only `/-/health`, `/-/ready` and `/-/metrics` on `listener` (for
    /// `admin_listen`) until `shutdown` completes.
    pub async fn serve_admin(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.serve_admin_live(self.live(), listener, shutdown).await
    }

    async fn serve_admin_live(
        &self,
        live: Live,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mode = Mode {
            proxy: false,
            admin: true,
        };
        self.accept_loop(live, listener, shutdown, mode).await
    }

    /// Binds `listen` (and `admin_listen`) and serves until `shutdown` completes.
    /// A bind failure names the address ([`bind`](Self::bind)).
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let bound = self
            .bind()
            .await
            .map_err(|e| io::Error::new(e.source.kind(), e.to_string()))?;
        bound.serve(shutdown).await
    }

    /// Binds `listen` and, when configured, `admin_listen`; nothing is served yet.
    ///
    /// ```
    /// use bearer_guard::gateway::{Gateway, GatewayConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = GatewayConfig::from_toml(r#"
    ///     listen = "127.0.0.1:0"
    ///     upstream = "http://127.0.0.1:9000"
    ///     [[issuer]]
    ///     issuer = "https://login.example.com"
    ///     audiences = ["https://api.example.com"]
    ///     [[route]]
    ///     path = "/"
    /// "#)?;
    /// let gateway = Gateway::from_config(config)?;
    /// let bound = gateway.bind().await?;
    /// assert_ne!(bound.local_addr().port(), 0, "the port the system chose");
    /// let taken = bound.local_addr().to_string();
    /// let config = GatewayConfig::from_toml(&format!(r#"
    ///     listen = "{taken}"
    ///     upstream = "http://127.0.0.1:9000"
    ///     [[issuer]]
    ///     issuer = "https://login.example.com"
    ///     audiences = ["https://api.example.com"]
    ///     [[route]]
    ///     path = "/"
    /// "#))?;
    /// let error = Gateway::from_config(config)?.bind().await.unwrap_err();
    /// assert!(error.to_string().starts_with(&format!("listen = {taken}: ")));
    /// # Ok(()) }
    /// ```
    pub async fn bind(&self) -> Result<BoundGateway, BindError> {
        let bind = |key: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { key, addr, source })
        };
        let listener = bind("listen", self.shared.listen).await?;
        let admin = match self.shared.admin_listen {
            Some(addr) => Some(bind("admin_listen", addr).await?),
            None => None,
        };
        let addr = |l: &TcpListener, configured| l.local_addr().unwrap_or(configured);
        Ok(BoundGateway {
            gateway: self.clone(),
            live: self.live(),
            addr: addr(&listener, self.shared.listen),
            admin_addr: admin
                .as_ref()
                .zip(self.shared.admin_listen)
                .map(|(l, configured)| addr(l, configured)),
            listener,
            admin,
        })
    }

    /// Serves `listener`; each request is answered by the state `live` holds
    /// when it arrives (so a reload never changes a request in flight).
    async fn accept_loop(
        &self,
        live: Live,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        mode: Mode,
    ) -> io::Result<()> {
        let handler = move |req, peer| {
            let this = Gateway {
                shared: live.load_full(),
            };
            let mode = Mode {
                admin: mode.admin || (mode.proxy && this.shared.admin_on_listen),
                ..mode
            };
            this.handle_logged(req, mode, peer)
        };
        let s = &self.shared;
        // `[tls]` is `listen`'s; `admin_listen` stays plain http.
        let tls = match mode.proxy {
            true => s.tls.as_ref().map(|t| t.acceptor.clone()),
            false => None,
        };
        listener::serve_connections_with(
            listener,
            shutdown,
            s.shutdown_timeout,
            &s.conn_limits,
            tls,
            handler,
        )
        .await
    }

    /// The request id (forwarded and returned as `x-request-id`), then one
    /// access-log line per request (`access.rs`): never a header value or a token.
    ///
    /// A combinator over [`handle`](Self::handle)'s future rather than an
    /// async fn: hyper moves each request's future into place, and an async
    /// fn would also hold a moved-from copy of the request.
    fn handle_logged(
        self,
        mut req: Request<Incoming>,
        mode: Mode,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<GatewayBody>> + Send + 'static {
        let started = std::time::Instant::now();
        let method = req.method().clone();
        // Copied only for the access log line, when it is on.
        let path = tracing::enabled!(target: "bearer_guard::access", tracing::Level::INFO)
            .then(|| req.uri().path().to_owned());
        let trusted = self.shared.forwarding.trust_forwarded();
        let request_id = access::request_id(req.headers(), trusted);
        req.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        self.handle(req, mode, peer).map(move |answer| {
            let path = path.as_deref().unwrap_or_default();
            Self::logged(answer, started, &method, path, peer, request_id)
        })
    }

    fn logged(
        answer: Answer,
        started: std::time::Instant,
        method: &http::Method,
        path: &str,
        peer: SocketAddr,
        request_id: HeaderValue,
    ) -> Response<GatewayBody> {
        let Answer { mut response, note } = answer;
        access::Line {
            request_id: &request_id,
            peer,
            method,
            path,
            status: response.status().as_u16(),
            note: &note,
            latency: started.elapsed(),
        }
        .emit();
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        response
    }

    /// One request from `peer` (the TCP peer, i.e. the client or a proxy in front).
    async fn handle(self, req: Request<Incoming>, mode: Mode, peer: SocketAddr) -> Answer {
        if mode.admin && req.uri().path().starts_with("/-/") {
            // Boxed: a readiness probe may load keys, a large future the
            // proxied requests should not carry.
            let response = Box::pin(admin(
                self.guard(),
                self.shared.metrics.as_ref(),
                req.uri().path(),
            ))
            .await;
            let note = Note {
                outcome: "admin",
                ..Note::default()
            };
            return Answer { response, note };
        }
        if !mode.proxy {
            return count(
                "not_found",
                own(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
            );
        }
        // A reverse proxy serves no CONNECT but an HTTP/2 WebSocket's
        // (`upgrade.rs`), decided as the GET of its HTTP/1.1 form.
        let connect_as = match req.method() == http::Method::CONNECT {
            false => None,
            true => match self.shared.upgrades.connect_method(&req) {
                Ok(method) => Some(method),
                Err(why) => {
                    return count(
                        "not_implemented",
                        own(StatusCode::NOT_IMPLEMENTED, "not_implemented", why),
                    );
                }
            },
        };
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        // Put there by a TLS listener that asks for client certificates.
        let certificate = req.extensions().get::<ClientCertificate>();
        let method = connect_as.as_ref().unwrap_or(req.method());
        let check = CheckRequest::new(method, target, req.headers())
            .client_certificate(certificate)
            .parsed_target(req.uri().path_and_query());
        match self.shared.decider.decide(&check).await {
            Decision::Allow(allow) => {
                let route = allow.route.clone();
                // Copied only when the access log is on.
                let who = tracing::enabled!(target: "bearer_guard::access", tracing::Level::INFO)
                    .then_some(allow.token.as_ref())
                    .flatten()
                    .map(|t| {
                        (
                            t.subject().map(str::to_owned),
                            t.client_id().map(str::to_owned),
                        )
                    });
                let mut answer = self.forward(req, allow, peer.ip()).await;
                answer.note.route = Some(route);
                (answer.note.sub, answer.note.client_id) = who.unwrap_or_default();
                answer
            }
            Decision::Deny(deny) => {
                let mut answer = count(deny.outcome.as_str(), deny.response.map(full));
                answer.note.reason = Some(deny.reason);
                answer.note.route = deny.route;
                answer
            }
        }
    }

    /// Forwards an allowed request. What is prepared before the upstream is
    /// asked (`prepare`) is done here, synchronously, so the future (moved
    /// into place on every request) holds only the outgoing request.
    fn forward(
        &self,
        req: Request<Incoming>,
        allow: Allow,
        peer: IpAddr,
    ) -> impl Future<Output = Answer> + Send + '_ {
        match self.prepare(req, allow, peer) {
            Ok(outgoing) => Either::Left(self.send(outgoing)),
            Err(answer) => Either::Right(std::future::ready(*answer)),
        }
    }

    /// The upstream request for an allowed request, or the gateway's answer.
    fn prepare(
        &self,
        req: Request<Incoming>,
        allow: Allow,
        peer: IpAddr,
    ) -> Result<Outgoing, Box<Answer>> {
        let s = &self.shared;
        let (mut parts, body) = req.into_parts();
        let client_version = parts.version;
        let upgrade = upgrade::take(&s.upgrades, &mut parts);
        let dpop_nonce = allow.dpop_nonce.clone();
        if body.size_hint().lower() > s.max_body_bytes {
            return Err(Box::new(count(
                "payload_too_large",
                too_large(client_version),
            )));
        }
        let upstream = s.upstreams.for_route(allow.route_index);
        if parts.method == http::Method::CONNECT
            || (upgrade.as_ref().is_some_and(upgrade::Pending::is_connect) && upstream.h2c)
        {
            // Not an HTTP/2 WebSocket that can be tunnelled (`upgrade.rs`).
            return Err(Box::new(count(
                "not_implemented",
                own(
                    StatusCode::NOT_IMPLEMENTED,
                    "not_implemented",
                    "this WebSocket cannot be tunnelled to its upstream",
                ),
            )));
        }
        // Joined by hand: `format!` is a few hundred instructions more.
        let query = allow.query.as_deref();
        let mut target = String::with_capacity(
            upstream.base.len() + allow.path.len() + query.map_or(0, |q| q.len() + 1),
        );
        target.push_str(&upstream.base);
        target.push_str(&allow.path);
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        // The pool sends origin-form (and sets Host); hyper-util's client
        // wants the absolute URI.
        let uri = PathAndQuery::try_from(target)
            .ok()
            .and_then(|pq| match upstream.pool {
                Some(_) => Some(Uri::from(pq)),
                None => {
                    let mut parts = http::uri::Parts::default();
                    parts.scheme = Some(upstream.scheme.clone());
                    parts.authority = Some(upstream.authority.clone());
                    parts.path_and_query = Some(pq);
                    Uri::from_parts(parts).ok()
                }
            });
        let Some(uri) = uri else {
            return Err(Box::new(count(
                "bad_request",
                own(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "invalid request target",
                ),
            )));
        };
        // What the client asked for: the target's authority (HTTP/2, or an
        // absolute-form target) or else its Host header; kept for X-Forwarded-Host.
        let host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(header::HOST).cloned());
        parts.uri = uri;
        // The pool picks the upstream's version (HTTP/1.1, or HTTP/2 for h2c://
        // and https:// by ALPN) whatever the client spoke.
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        // `TE: trailers` is hop-by-hop, but the gateway relays trailers both
        // ways, so it says so in its own name to upstreams that may speak
        // HTTP/2 (gRPC servers may require it; gRPC has no HTTP/1.1 form).
        let trailers = !upstream.plain_http1() && accepts_trailers(headers);
        strip_hop_by_hop(headers);
        if let Some(upgrade) = &upgrade {
            upgrade.restore_headers(headers);
        }
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        // The client sets Host from the upstream URI.
        headers.remove(header::HOST);
        for name in &allow.headers_to_remove {
            headers.remove(name);
        }
        for (name, value) in allow.headers_to_set {
            headers.insert(name, value);
        }
        s.forwarding.set_forwarded_headers(headers, peer, host);
        let body = Limited::new(
            body,
            usize::try_from(s.max_body_bytes).unwrap_or(usize::MAX),
        );
        Ok(Outgoing {
            request: Request::from_parts(parts, body),
            route_index: allow.route_index,
            upgrade,
            client_version,
            dpop_nonce,
        })
    }

    /// Sends a prepared request and relays the upstream's answer.
    /// The request future is made here, outside the returned one's state, so
    /// the request is held once (by it).
    fn send(&self, outgoing: Outgoing) -> impl Future<Output = Answer> + Send + '_ {
        let s = &self.shared;
        let Outgoing {
            request,
            route_index,
            upgrade,
            client_version,
            dpop_nonce,
        } = outgoing;
        let upstream = s.upstreams.for_route(route_index);
        // One clock read for the timeout and the pool.
        let now = tokio::time::Instant::now();
        let deadline = now + s.upstream_timeout;
        // Combinators, not an async block: awaiting a captured future would
        // keep a second copy of it in the state.
        let sent = match &upstream.pool {
            // The pool times the wait on the connection's own timer.
            Some(pool) => Either::Left(
                pool.send(request, now, deadline)
                    .map(|r| r.map(|r| r.map(|(r, c)| (r, Some(c))))),
            ),
            None => Either::Right(
                tokio::time::timeout_at(
                    deadline,
                    s.upstreams
                        .client(upstream)
                        .request(request)
                        .map(|r| r.map(|r| (r, None)).map_err(BoxError::from)),
                )
                .map(|r| r.map_err(|_| pool::TimedOut)),
            ),
        };
        sent.map(move |sent| self.relay(sent, upstream, upgrade, client_version, dpop_nonce))
    }

    /// The client's response to the upstream's answer (or its failure).
    fn relay(
        &self,
        sent: Answered,
        upstream: &upstream::Upstream,
        upgrade: Option<upgrade::Pending>,
        client_version: Version,
        dpop_nonce: Option<HeaderValue>,
    ) -> Answer {
        let s = &self.shared;
        match sent {
            Ok(Ok((response, _connection)))
                if response.status() == StatusCode::SWITCHING_PROTOCOLS =>
            {
                let refused = match upgrade.map(|u| u.splice(response)) {
                    Some(Ok(switched)) => return count("upgraded", switched.map(|()| empty())),
                    Some(Err(why)) => why,
                    None => "a 101 to a request that asked for no upgrade",
                };
                tracing::warn!(problem = refused, "upstream switched protocols; refused");
                count(
                    "bad_gateway",
                    own(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the upstream's protocol switch was refused",
                    ),
                )
            }
            // Would open the client's tunnel with nothing behind it.
            Ok(Ok((response, _connection)))
                if response.status().is_success()
                    && upgrade.as_ref().is_some_and(upgrade::Pending::is_connect) =>
            {
                tracing::warn!(
                    status = response.status().as_u16(),
                    "upstream answered a WebSocket handshake without switching protocols"
                );
                count(
                    "bad_gateway",
                    own(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the upstream did not switch protocols",
                    ),
                )
            }
            Ok(Ok((response, connection))) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // The client's connection is the gateway's: an HTTP/1.0 upstream
                // must not make it HTTP/1.0 (and so not reusable).
                parts.version = client_version;
                if let Some(nonce) = dpop_nonce {
                    parts.headers.insert(DPOP_NONCE, nonce);
                }
                let body = UpstreamBody::new(body, s.upstream_body_timeout, connection).boxed();
                count("forwarded", Response::from_parts(parts, body))
            }
            Ok(Err(e)) if caused_by::<LengthLimitError>(&*e) => {
                count("payload_too_large", too_large(client_version))
            }
            Ok(Err(e)) => {
                // The whole chain: a refused certificate is only in a source.
                tracing::warn!(
                    upstream = %upstream.authority,
                    error = %error_chain(&*e),
                    "upstream request failed"
                );
                count(
                    "bad_gateway",
                    own(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the upstream could not be reached",
                    ),
                )
            }
            Err(_) => count(
                "gateway_timeout",
                own(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway_timeout",
                    "the upstream did not answer in time",
                ),
            ),
        }
    }
}

/// The upstream's answer (and, from the gateway's pool, its connection), its
/// failure, or the timeout.
type Answered =
    Result<Result<(Response<Incoming>, Option<pool::Checkin>), BoxError>, pool::TimedOut>;

/// An allowed request, ready for its upstream.
struct Outgoing {
    request: Request<Limited<Incoming>>,
    route_index: usize,
    upgrade: Option<upgrade::Pending>,
    client_version: Version,
    dpop_nonce: Option<HeaderValue>,
}

/// Whether the client's `TE` header lists `trailers`.
fn accepts_trailers(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// `e` and its sources, joined by `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// Whether `e` or an error in its `source` chain is an `E`.
fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// 413 for a body over `max_body_bytes`. Over HTTP/1.1 the connection is closed:
/// the rest of the body was not read, so the next request cannot be found.
fn too_large(version: Version) -> Response<GatewayBody> {
    let mut response = own(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the gateway accepts",
    );
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `[limits]`, checked.
struct Limits {
    conn: ConnLimits,
    max_body_bytes: u64,
    upstream_body_timeout: Duration,
}

impl Limits {
    fn from_config(c: &LimitsConfig) -> Result<Limits, ConfigError> {
        let keys = listener::ConnKeys {
            header_read_timeout_secs: c.header_read_timeout_secs,
            idle_timeout_secs: c.idle_timeout_secs,
            max_connections: c.max_connections,
            max_header_bytes: c.max_header_bytes,
            ..listener::ConnKeys::default()
        };
        Ok(Limits {
            conn: ConnLimits::from_keys(keys, ConnLimits::default())?,
            max_body_bytes: c.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            upstream_body_timeout: seconds_or(
                "limits.upstream_body_timeout_secs",
                c.upstream_body_timeout_secs,
                Duration::from_secs(60),
            )?,
        })
    }
}

const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub(crate) const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// `/-/health`, `/-/ready` and `/-/metrics` for `guard` (also the ext-authz
/// service's admin listener).
pub(crate) async fn admin(
    guard: &Guard,
    metrics: Option<&PrometheusHandle>,
    path: &str,
) -> Response<GatewayBody> {
    match path {
        "/-/health" => {
            let mut r = Response::new(full(Bytes::from_static(b"ok\n")));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        "/-/ready" => {
            if !guard.ready() {
                // A probe while keys are missing is a load attempt (the issuer
                // may be back), but no more often than the key store's retry
                // back-off allows: anyone who can reach the probe could
                // otherwise make the gateway hammer a down issuer.
                let _ = guard.load_missing_keys().await;
            }
            let issuers: Vec<_> = guard
                .key_status()
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "issuer": k.issuer, "ready": k.ready(), "last_error": k.last_error,
                    })
                })
                .collect();
            let ready = guard.ready();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(
                status,
                &serde_json::json!({ "ready": ready, "issuers": issuers }),
            )
        }
        "/-/metrics" => match metrics {
            Some(handle) => {
                let mut r = Response::new(full(Bytes::from(handle.render())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            None => own(
                StatusCode::NOT_FOUND,
                "not_found",
                "metrics are not enabled",
            ),
        },
        _ => own(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

/// A listen address that could not be bound: the key, the address, the reason.
#[derive(Debug, thiserror::Error)]
#[error("{key} = {addr}: cannot listen: {source}")]
pub struct BindError {
    key: &'static str,
    addr: SocketAddr,
    #[source]
    source: io::Error,
}

impl BindError {
    #[cfg(feature = "ext-authz")]
    pub(crate) fn new(key: &'static str, addr: SocketAddr, source: io::Error) -> Self {
        BindError { key, addr, source }
    }

    /// The reason's kind (`AddrInUse`, `PermissionDenied`...).
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The address that could not be bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A gateway whose listeners are bound ([`Gateway::bind`]).
#[derive(Debug)]
pub struct BoundGateway {
    gateway: Gateway,
    live: Live,
    listener: TcpListener,
    admin: Option<TcpListener>,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
}

impl BoundGateway {
    /// The address the proxy listens on (the port chosen when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the admin endpoints listen on, with `admin_listen`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// A handle that swaps in a new configuration while this gateway serves
    /// (see [`Reloader`]).
    pub fn reloader(&self) -> Reloader {
        Reloader::new(self.live.clone())
    }

    /// Serves until `shutdown` completes (see [`Gateway::serve`]); each request
    /// is answered with the configuration current when it arrives
    /// ([`reloader`](Self::reloader)).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let shutdown = shutdown.shared();
        let g = &self.gateway;
        match self.admin {
            None => g.serve_live(self.live, self.listener, shutdown).await,
            Some(admin) => {
                let (a, b) = tokio::join!(
                    g.serve_live(self.live.clone(), self.listener, shutdown.clone()),
                    g.serve_admin_live(self.live, admin, shutdown)
                );
                a.and(b)
            }
        }
    }
}

/// Starts loading `guard`'s missing keys in a task of its own, so `/-/ready`
/// turns green early.
fn load_keys_in_background(guard: &Guard) {
    let guard = guard.clone();
    tokio::spawn(async move {
        if let Err(e) = guard.load_missing_keys().await {
            tracing::warn!(error = %e, "initial key load failed; retried on demand");
        }
    });
}

/// A recorder builder for [`Gateway::with_metrics`]: the Prometheus exporter's,
/// with the buckets of `bearer_guard_request_duration_seconds`
/// ([`LATENCY_BUCKETS`]), so it is rendered as a histogram.
///
/// ```
/// let recorder = bearer_guard::gateway::prometheus_builder().build_recorder();
/// let handle = recorder.handle();
/// # let _ = handle;
/// ```
pub fn prometheus_builder() -> metrics_exporter_prometheus::PrometheusBuilder {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(access::REQUEST_DURATION.to_owned()),
            LATENCY_BUCKETS,
        )
        // Only fails for an empty list, which LATENCY_BUCKETS is not.
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy)]
struct Mode {
    proxy: bool,
    admin: bool,
}

/// Accepts HTTP/1.1 and h2c connections on `listener` within the default
/// [`ConnLimits`] and answers each request with `handler(request, peer)` until
/// `shutdown` completes, then lets in-flight requests finish for up to `grace`
/// (the ext-authz HTTP and admin listeners).
#[cfg(feature = "ext-authz")]
pub(crate) async fn serve_connections<F, Fut, B>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    handler: F,
) -> io::Result<()>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = ConnLimits::default();
    listener::serve_connections_with(listener, shutdown, grace, &limits, None, handler).await
}

/// Completes on SIGTERM or SIGINT (Ctrl-C elsewhere than Unix).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A positive number of seconds (`key` names it in errors), 30 s when absent.
pub(crate) fn seconds(key: &str, value: Option<f64>) -> Result<Duration, ConfigError> {
    seconds_or(key, value, DEFAULT_TIMEOUT)
}

/// A positive number of seconds (`key` names it in errors), `default` when absent.
pub(crate) fn seconds_or(
    key: &str,
    value: Option<f64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(secs) if secs > 0.0 => Duration::try_from_secs_f64(secs)
            .map_err(|e| ConfigError::at(key, format!("{secs}: {e}"))),
        Some(secs) => Err(ConfigError::at(
            key,
            format!("{secs} is not a positive number of seconds"),
        )),
    }
}

pub(crate) fn full(bytes: Bytes) -> GatewayBody {
    Full::new(bytes)
        .map_err(|never| -> BoxError { match never {} })
        .boxed()
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<GatewayBody> {
    crate::decision::json(status, body).map(full)
}

/// The gateway's own small JSON answer.
fn own(status: StatusCode, error: &str, description: &str) -> Response<GatewayBody> {
    crate::decision::own(status, error, description).map(full)
}

fn empty() -> GatewayBody {
    full(Bytes::new())
}

/// Counts the request under `outcome`, which the access log line also names.
fn count(outcome: &'static str, response: Response<GatewayBody>) -> Answer {
    static FORWARDED: crate::metrics::Hot<metrics::Counter> = crate::metrics::Hot::new();
    crate::metrics::with_handle(
        (outcome == "forwarded").then_some(&FORWARDED),
        || metrics::counter!("bearer_guard_gateway_requests_total", "outcome" => outcome),
        |c| c.increment(1),
    );
    let note = Note {
        outcome,
        ..Note::default()
    };
    Answer { response, note }
}

/// A response to the client, and what its access log line says about it
/// (returned beside it, not put in its extensions: that is an allocation
/// and a hash-map insert per request).
struct Answer {
    response: Response<GatewayBody>,
    note: Note,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, F: Future>(_: impl Fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn request_futures_stay_small() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mode = Mode {
            proxy: true,
            admin: false,
        };
        let whole =
            future_size(move |(g, r): (Gateway, Request<Incoming>)| g.handle_logged(r, mode, peer));
        let handle =
            future_size(move |(g, r): (Gateway, Request<Incoming>)| g.handle(r, mode, peer));
        let decide = future_size(move |(d, r): (Decider, CheckRequest<'static>)| async move {
            d.decide(&r).await
        });
        let forward = future_size(
            move |(g, r, a): (Gateway, Request<Incoming>, Allow)| async move {
                g.forward(r, a, peer.ip()).await
            },
        );
        // hyper moves each request's future into its connection's slot, and
        // each future is moved into its caller's when first awaited: every
        // byte is copied per request, several times. The slow paths (a key
        // fetch, a replay-store call, a readiness probe, a new upstream
        // connection) are boxed, and combinators stand where an async block
        // would hold a second copy of what it awaits (4.5 KB before, here).
        // The bounds are for debug builds, where futures are largest.
        let sizes = format!("whole {whole}, handle {handle}, decide {decide}, forward {forward}");
        assert!(decide <= 1024, "{sizes}");
        assert!(forward <= 1536, "{sizes}");
        assert!(whole <= 2304, "{sizes}");
    }
}
