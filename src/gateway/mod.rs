//! A validating reverse proxy (feature `gateway`): every request is matched to a
//! route, its bearer token validated by a [`Guard`] and its scopes checked, then it
//! is forwarded to one upstream with the verified claims in request headers.
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
//!    (on `admin_listen` when configured, otherwise on `listen`); a `/-/ready`
//!    probe while keys are missing retries the load, within the retry back-off;
//! 2. the path is normalised ([`path`]); a refused path is a 400;
//! 3. the first route whose prefix and methods match is chosen; when routes match
//!    the prefix but none the method, a 405 with `Allow` (before authentication,
//!    like the 404 when no route matches the prefix);
//! 4. unless the route is public, the token is validated (the guard's RFC 6750
//!    answer on failure) and the route's scopes checked (403 `insufficient_scope`);
//! 5. the claim headers are computed from the verified token; a claim the
//!    upstream would read differently (whitespace at either end, a control or
//!    non-ASCII character, not a string) refuses the request with 401
//!    `invalid_token` rather than forwarding an altered or missing header;
//! 6. hop-by-hop headers are removed, and every client header that must not reach
//!    the upstream (claim headers and reserved names also as look-alikes with `_`,
//!    route and method overrides, client-address headers unless `trust_forwarded`:
//!    see `forward.rs`); the claim headers and `X-Forwarded-For`/`-Proto`/`-Host`
//!    (`[forward] x_forwarded`) are set, and the request is sent to the upstream
//!    with the normalised path and the original query; a refused connection is a
//!    502, no response headers within `upstream_timeout_secs` a 504.
//!
//! Metrics (through the `metrics` facade; the binary installs the Prometheus
//! recorder): `bearer_guard_gateway_requests_total{outcome}` besides the guard's own.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::decision::{Allow, CheckRequest, Decider, Decision, HeaderRules};
use crate::{Guard, GuardBuilder};

pub mod config;
mod forward;
/// The path normaliser (now shared with the ext-authz service).
pub use crate::decision::path;

pub use config::{ConfigError, ForwardConfig, GatewayConfig, IssuerConfig, RouteConfig};

use forward::{Forwarding, strip_hop_by_hop};

/// The body of every gateway response: the upstream's, streamed, or the gateway's own.
pub type GatewayBody = BoxBody<Bytes, hyper::Error>;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured gateway. Cheap to clone; serve it on as many listeners as needed.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    decider: Decider,
    upstream: Upstream,
    client: Client<HttpConnector, Incoming>,
    upstream_timeout: Duration,
    shutdown_timeout: Duration,
    forwarding: Forwarding,
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    metrics: Option<PrometheusHandle>,
}

struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The upstream URL's path without its trailing `/`, prepended to every path.
    base: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.shared.listen)
            .field("admin_listen", &self.shared.admin_listen)
            .field("upstream", &self.shared.upstream.authority)
            .field("decider", &self.shared.decider)
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
        let upstream = parse_upstream(&config.upstream)?;
        let upstream_timeout = seconds("upstream_timeout_secs", config.upstream_timeout_secs)?;
        let shutdown_timeout = seconds("shutdown_timeout_secs", config.shutdown_timeout_secs)?;
        let guard = crate::decision::config::build_guard(
            &config.issuers,
            config.realm.as_deref(),
            config.allow_insecure_http,
            configure,
        )?;
        let decider = Decider::from_config(
            guard,
            &config.routes,
            &config.forward.claims_to_headers,
            HeaderRules {
                strip_authorization: config.forward.strip_authorization,
                trust_forwarded: config.forward.trust_forwarded,
            },
        )?;
        let forwarding = Forwarding::from_config(&config.forward)?;
        // The pool keeps upstream connections open between requests.
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Gateway {
            shared: Arc::new(Shared {
                decider,
                upstream,
                client,
                upstream_timeout,
                shutdown_timeout,
                forwarding,
                listen: config.listen,
                admin_listen: config.admin_listen,
                metrics: None,
            }),
        })
    }

    /// Serves `/-/metrics` from this Prometheus recorder handle. Without one,
    /// `/-/metrics` answers 404.
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
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
        let guard = self.shared.decider.guard().clone();
        tokio::spawn(async move {
            if let Err(e) = guard.load_missing_keys().await {
                tracing::warn!(error = %e, "initial key load failed; retried on demand");
            }
        });
        let admin = self.shared.admin_listen.is_none();
        self.accept_loop(listener, shutdown, Mode { proxy: true, admin })
            .await
    }

    /// Serves only `/-/health`, `/-/ready` and `/-/metrics` on `listener` (for
    /// `admin_listen`) until `shutdown` completes.
    pub async fn serve_admin(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mode = Mode {
            proxy: false,
            admin: true,
        };
        self.accept_loop(listener, shutdown, mode).await
    }

    /// Binds `listen` (and `admin_listen`) and serves until `shutdown` completes.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let shutdown = shutdown.shared();
        let listener = TcpListener::bind(self.shared.listen).await?;
        tracing::info!(addr = %self.shared.listen, "gateway listening");
        match self.shared.admin_listen {
            None => self.serve(listener, shutdown).await,
            Some(addr) => {
                let admin = TcpListener::bind(addr).await?;
                tracing::info!(%addr, "admin endpoints listening");
                let (a, b) = tokio::join!(
                    self.serve(listener, shutdown.clone()),
                    self.serve_admin(admin, shutdown)
                );
                a.and(b)
            }
        }
    }

    async fn accept_loop(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        mode: Mode,
    ) -> io::Result<()> {
        let this = self.clone();
        let handler = move |req, peer| {
            let this = this.clone();
            async move { this.handle_logged(req, mode, peer).await }
        };
        serve_connections(listener, shutdown, self.shared.shutdown_timeout, handler).await
    }

    /// One access-log line per request: method, path as received (no query, which
    /// may carry secrets), status and time. Never a header or a token.
    async fn handle_logged(
        &self,
        req: Request<Incoming>,
        mode: Mode,
        peer: SocketAddr,
    ) -> Response<GatewayBody> {
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let response = self.handle(req, mode, peer).await;
        tracing::info!(
            %method,
            path,
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
        response
    }

    /// One request from `peer` (the TCP peer, i.e. the client or a proxy in front).
    async fn handle(
        &self,
        req: Request<Incoming>,
        mode: Mode,
        peer: SocketAddr,
    ) -> Response<GatewayBody> {
        if mode.admin && req.uri().path().starts_with("/-/") {
            return admin(self.guard(), self.shared.metrics.as_ref(), req.uri().path()).await;
        }
        if !mode.proxy {
            return count(
                "not_found",
                own(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
            );
        }
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let check = CheckRequest::new(req.method(), target, req.headers());
        match self.shared.decider.decide(&check).await {
            Decision::Allow(allow) => self.forward(req, allow, peer.ip()).await,
            Decision::Deny(deny) => count(deny.outcome.as_str(), deny.response.map(full)),
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        allow: Allow,
        peer: IpAddr,
    ) -> Response<GatewayBody> {
        let s = &self.shared;
        let (mut parts, body) = req.into_parts();
        let path = &allow.path;
        let target = match &allow.query {
            Some(q) => format!("{}{path}?{q}", s.upstream.base),
            None => format!("{}{path}", s.upstream.base),
        };
        let uri = Uri::builder()
            .scheme(s.upstream.scheme.clone())
            .authority(s.upstream.authority.clone())
            .path_and_query(target)
            .build();
        let Ok(uri) = uri else {
            return count(
                "bad_request",
                own(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "invalid request target",
                ),
            );
        };
        // What the client asked for: the target's authority (HTTP/2, or an
        // absolute-form target) or else its Host header; kept for X-Forwarded-Host.
        let host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(header::HOST).cloned());
        parts.uri = uri;
        // The pool speaks HTTP/1.1 to the upstream whatever the client spoke.
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        // The client sets Host from the upstream URI.
        headers.remove(header::HOST);
        for name in &allow.headers_to_remove {
            headers.remove(name);
        }
        for (name, value) in allow.headers_to_set {
            headers.insert(name, value);
        }
        s.forwarding.set_forwarded_headers(headers, peer, host);
        let sent = s.client.request(Request::from_parts(parts, body));
        match tokio::time::timeout(s.upstream_timeout, sent).await {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                count("forwarded", Response::from_parts(parts, body.boxed()))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
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

/// `/-/health`, `/-/ready` and `/-/metrics` for `guard` (also the ext-authz
/// service's admin listener).
pub(crate) async fn admin(
    guard: &Guard,
    metrics: Option<&PrometheusHandle>,
    path: &str,
) -> Response<GatewayBody> {
    match path {
        "/-/health" => own(StatusCode::OK, "ok", "alive"),
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

/// Which endpoints a listener serves.
#[derive(Clone, Copy)]
struct Mode {
    proxy: bool,
    admin: bool,
}

/// Accepts HTTP/1.1 and h2c connections on `listener` and answers each request
/// with `handler(request, peer)` until `shutdown` completes, then lets in-flight
/// requests finish for up to `grace`.
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
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let handler = handler.clone();
                let service = hyper::service::service_fn(move |req| {
                    let response = handler(req, peer);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout: in-flight requests abandoned");
    }
    Ok(())
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

fn parse_upstream(text: &str) -> Result<Upstream, ConfigError> {
    let bad = |problem: String| ConfigError::at("upstream", problem);
    let uri: Uri = text
        .parse()
        .map_err(|e| bad(format!("{text:?} is not a URL: {e}")))?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(bad(format!(
            "{text:?}: only http:// upstreams are supported (terminate TLS in front of the upstream's network)"
        )));
    }
    let Some(authority) = uri.authority().cloned() else {
        return Err(bad(format!("{text:?} has no host")));
    };
    if uri.query().is_some() {
        return Err(bad(format!(
            "{text:?}: an upstream URL cannot have a query"
        )));
    }
    Ok(Upstream {
        scheme: Scheme::HTTP,
        authority,
        base: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// A positive number of seconds (`key` names it in errors), 30 s when absent.
pub(crate) fn seconds(key: &str, value: Option<f64>) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(DEFAULT_TIMEOUT),
        Some(secs) if secs > 0.0 => Duration::try_from_secs_f64(secs)
            .map_err(|e| ConfigError::at(key, format!("{secs}: {e}"))),
        Some(secs) => Err(ConfigError::at(
            key,
            format!("{secs} is not a positive number of seconds"),
        )),
    }
}

pub(crate) fn full(bytes: Bytes) -> GatewayBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<GatewayBody> {
    crate::decision::json(status, body).map(full)
}

/// The gateway's own small JSON answer.
fn own(status: StatusCode, error: &str, description: &str) -> Response<GatewayBody> {
    crate::decision::own(status, error, description).map(full)
}

fn count(outcome: &'static str, response: Response<GatewayBody>) -> Response<GatewayBody> {
    metrics::counter!("bearer_guard_gateway_requests_total", "outcome" => outcome).increment(1);
    response
}
