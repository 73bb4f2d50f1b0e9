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
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
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

use crate::error::TokenProblem;
use crate::{Algorithm, AuthError, BuildError, Guard, GuardBuilder, Issuer};

pub mod config;
mod forward;
pub mod path;
mod route;

pub use config::{ConfigError, ForwardConfig, GatewayConfig, IssuerConfig, RouteConfig};

use forward::{Forwarding, strip_hop_by_hop};
use route::{Route, Selected};

/// The body of every gateway response: the upstream's, streamed, or the gateway's own.
pub type GatewayBody = BoxBody<Bytes, hyper::Error>;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured gateway. Cheap to clone; serve it on as many listeners as needed.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    guard: Guard,
    routes: Vec<Route>,
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
            .field("routes", &self.shared.routes.len())
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
        let guard = build_guard(&config, configure)?;
        if config.routes.is_empty() {
            return Err(ConfigError::at(
                "route",
                "no [[route]]: at least one is required (path = \"/\" for any valid token)",
            ));
        }
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| Route::from_config(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let forwarding = Forwarding::from_config(&config.forward)?;
        // The pool keeps upstream connections open between requests.
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Gateway {
            shared: Arc::new(Shared {
                guard,
                routes,
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
        &self.shared.guard
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
        let guard = self.shared.guard.clone();
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
                    let this = self.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.handle_logged(req, mode, peer).await) }
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
        if tokio::time::timeout(self.shared.shutdown_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout: in-flight requests abandoned");
        }
        Ok(())
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
            return self.admin(req.uri().path()).await;
        }
        if !mode.proxy {
            return count(
                "not_found",
                own(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
            );
        }
        let path = match path::normalize_path(req.uri().path()) {
            Ok(p) => p,
            Err(e) => {
                return count(
                    "bad_request",
                    own(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
                );
            }
        };
        // Like the 404, the 405 is answered before authentication: without a
        // matching route there are no requirements to check a token against, and
        // verifying a signature only to refuse the request anyway would be work
        // an anonymous client could make the gateway do. What the 405 tells such
        // a client (this path is routed, for these methods) is configuration,
        // which the 404/401 difference already shows for paths.
        let key = path::match_key(&path);
        let route = match route::select(&self.shared.routes, req.method(), &key) {
            Selected::Route(route) => route,
            Selected::MethodNotAllowed(allowed) => {
                return count("method_not_allowed", method_not_allowed(&allowed));
            }
            Selected::NotFound => {
                return count(
                    "not_found",
                    own(StatusCode::NOT_FOUND, "not_found", "no route for this path"),
                );
            }
        };
        let token = if route.public {
            None
        } else {
            match self.shared.guard.validate_headers(req.headers()).await {
                Ok(token) => Some(token),
                Err(e) => return count("rejected", self.refusal(&e, req.headers())),
            }
        };
        if let Some(t) = &token
            && let Some((_, required)) = route
                .requirements
                .iter()
                .find(|(require, _)| !require.is_satisfied_by(t))
        {
            let e = AuthError::InsufficientScope {
                required: required.clone(),
            };
            return count("forbidden", self.refusal(&e, req.headers()));
        }
        let claims = match token
            .as_ref()
            .map(|t| self.shared.forwarding.claim_headers(t))
        {
            None => Vec::new(),
            Some(Ok(claims)) => claims,
            Some(Err(e)) => {
                // A verified token the upstream would read differently: refused as
                // an invalid token (README, "What happens to a request").
                tracing::warn!(error = %e, "refused: a claim cannot be forwarded as is");
                let e = AuthError::InvalidToken(TokenProblem::BadClaims(e.to_string()));
                return count("rejected", self.refusal(&e, req.headers()));
            }
        };
        self.forward(req, &path, claims, peer.ip()).await
    }

    fn refusal(&self, error: &AuthError, request: &http::HeaderMap) -> Response<GatewayBody> {
        self.shared.guard.error_response(error, request).map(full)
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        path: &str,
        claims: Vec<(HeaderName, HeaderValue)>,
        peer: IpAddr,
    ) -> Response<GatewayBody> {
        let s = &self.shared;
        let (mut parts, body) = req.into_parts();
        let target = match parts.uri.query() {
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
        s.forwarding.remove_untrusted(headers);
        if s.forwarding.strip_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        for (name, value) in claims {
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

    async fn admin(&self, path: &str) -> Response<GatewayBody> {
        let guard = &self.shared.guard;
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
            "/-/metrics" => match &self.shared.metrics {
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
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy)]
struct Mode {
    proxy: bool,
    admin: bool,
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

fn seconds(key: &str, value: Option<f64>) -> Result<Duration, ConfigError> {
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

fn build_guard(
    config: &GatewayConfig,
    configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
) -> Result<Guard, ConfigError> {
    if config.issuers.is_empty() {
        return Err(ConfigError::at(
            "issuer",
            "no [[issuer]]: at least one is required",
        ));
    }
    let mut builder = Guard::builder();
    for (i, c) in config.issuers.iter().enumerate() {
        let mut issuer = Issuer::new(c.issuer.as_str());
        if let Some(uri) = &c.jwks_uri {
            issuer = issuer.jwks_uri(uri.as_str());
        }
        if c.audiences.is_empty() {
            return Err(ConfigError::at(
                format!("issuer[{i}].audiences"),
                "at least one audience is required (RFC 9068)",
            ));
        }
        for aud in &c.audiences {
            issuer = issuer.audience(aud.as_str());
        }
        if let Some(list) = &c.algorithms {
            let algs = list
                .iter()
                .enumerate()
                .map(|(j, a)| {
                    a.parse::<Algorithm>().map_err(|e| {
                        ConfigError::at(format!("issuer[{i}].algorithms[{j}]"), e.to_string())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            issuer = issuer.algorithms(algs);
        }
        builder = builder.issuer(issuer);
    }
    if let Some(realm) = &config.realm {
        builder = builder.realm(realm.as_str());
    }
    if config.allow_insecure_http {
        builder = builder.allow_insecure_http();
    }
    configure(builder)
        .build()
        .map_err(|e| ConfigError::at(build_error_key(&e, config), e.to_string()))
}

/// The configuration key a [`BuildError`] is about.
fn build_error_key(e: &BuildError, config: &GatewayConfig) -> String {
    let issuer = match e {
        BuildError::InvalidRealm => return "realm".to_owned(),
        BuildError::DuplicateIssuer(i)
        | BuildError::NoAudience(i)
        | BuildError::NoAlgorithms(i)
        | BuildError::SecretNeedsHmacAlgorithms(i) => i,
        BuildError::HmacWithJwks { issuer, .. }
        | BuildError::SecretTooShort { issuer, .. }
        | BuildError::InvalidUrl { issuer, .. }
        | BuildError::InvalidJwks { issuer, .. } => issuer,
        _ => return "issuer".to_owned(),
    };
    match config.issuers.iter().position(|c| &c.issuer == issuer) {
        Some(i) => format!("issuer[{i}]"),
        None => "issuer".to_owned(),
    }
}

fn full(bytes: Bytes) -> GatewayBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<GatewayBody> {
    let mut r = Response::new(full(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 405, with `Allow` listing the methods of the routes covering the path (RFC 9110
/// §15.5.6).
fn method_not_allowed(allowed: &[Method]) -> Response<GatewayBody> {
    let mut r = own(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "no route for this method on this path",
    );
    let list = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    // Methods are tokens, so this always succeeds; left out rather than panic.
    if let Ok(value) = HeaderValue::from_str(&list) {
        r.headers_mut().insert(header::ALLOW, value);
    }
    r
}

/// The gateway's own small JSON answer.
fn own(status: StatusCode, error: &str, description: &str) -> Response<GatewayBody> {
    json(
        status,
        &serde_json::json!({ "error": error, "error_description": description }),
    )
}

fn count(outcome: &'static str, response: Response<GatewayBody>) -> Response<GatewayBody> {
    metrics::counter!("bearer_guard_gateway_requests_total", "outcome" => outcome).increment(1);
    response
}
