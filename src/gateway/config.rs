//! The gateway's TOML configuration, and its errors: the file, the key, the problem.
//!
//! Parsing (`toml` + serde, unknown keys refused) checks the shape; the meaning
//! (URLs, algorithms, scopes, header names) is checked by
//! [`Gateway::from_config`](super::Gateway::from_config), which names the key of
//! anything it refuses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::decision::config::{
    ConfigError, DpopConfig, IssuerConfig, ResourceMetadataConfig, RouteConfig,
};

/// The whole gateway configuration (one TOML file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Where the proxy listens, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The upstream accepted requests go to, unless their route names its own:
    /// `http://host:port[/base]` (HTTP/1.1), `h2c://host:port[/base]` (HTTP/2
    /// without TLS, e.g. a gRPC server) or `https://host[:port][/base]` (TLS,
    /// the certificate verified for `host`; HTTP/2 when the upstream offers it by
    /// ALPN, else HTTP/1.1).
    pub upstream: String,
    /// A PEM file of CA certificates trusted for `https://` upstreams, besides
    /// the system's roots.
    #[serde(default)]
    pub upstream_ca_file: Option<PathBuf>,
    /// Accept any certificate from `https://` upstreams (default `false`): no
    /// chain, name or expiry check, only the handshake's signature. The
    /// connection is encrypted but not authenticated, so anyone on the path can
    /// impersonate the upstream. For a self-signed upstream in development;
    /// logged at warn on start. Prefer `upstream_ca_file`.
    #[serde(default)]
    pub danger_accept_invalid_upstream_certificate: bool,
    /// `[tls]`: terminate TLS on `listen` (default: plain http).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The `realm` of `WWW-Authenticate` challenges.
    #[serde(default)]
    pub realm: Option<String>,
    /// Serve `/-/health`, `/-/ready`, `/-/metrics` here. Without it (and without
    /// `admin_on_listen`) the gateway serves no admin endpoints.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Also serve the admin endpoints on `listen` (default `false`): `/-/ready`
    /// shows issuer URLs and key-load errors, `/-/metrics` the traffic, to
    /// whoever can reach the public listener.
    #[serde(default)]
    pub admin_on_listen: bool,
    /// How long to wait for the upstream's response headers (default 30 s).
    #[serde(default)]
    pub upstream_timeout_secs: Option<f64>,
    /// How long in-flight requests may take to finish on shutdown (default 30 s).
    #[serde(default)]
    pub shutdown_timeout_secs: Option<f64>,
    /// Allow plain-http discovery and JWKS URLs on non-loopback hosts.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// The trusted issuers (`[[issuer]]`, at least one).
    #[serde(rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    /// `[dpop]`: DPoP-bound tokens (RFC 9449), off without it.
    #[serde(default)]
    pub dpop: Option<DpopConfig>,
    /// The routes (`[[route]]`, at least one): first match wins.
    #[serde(rename = "route", default)]
    pub routes: Vec<RouteConfig>,
    /// What is forwarded to the upstream besides the request.
    #[serde(default)]
    pub forward: ForwardConfig,
    /// `[limits]`: timeouts and sizes that keep slow or greedy clients from
    /// holding the gateway.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[resource_metadata]` (RFC 9728): served on `listen` without a token.
    #[serde(default)]
    pub resource_metadata: Option<ResourceMetadataConfig>,
}

/// `[tls]`: the certificate `listen` serves, and client certificates.
///
/// TLS 1.2 and 1.3 (rustls, aws-lc-rs); ALPN offers `h2` and `http/1.1`.
/// The certificate files are watched: when either changes, both are read again
/// and, if they make a valid pair, new handshakes use them (connections already
/// open keep theirs); a bad pair is logged at error and the old one kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// The certificate chain, PEM: the leaf first, then its intermediates.
    pub cert_file: PathBuf,
    /// The private key of the leaf, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
    /// How often the certificate files are checked for changes, in seconds
    /// (default 5).
    #[serde(default)]
    pub reload_interval_secs: Option<f64>,
    /// A PEM file of the CAs whose client certificates are accepted. With it,
    /// the handshake asks for a client certificate; the verified leaf reaches
    /// the request as a [`ClientCertificate`](crate::sender::ClientCertificate)
    /// extension, for certificate-bound tokens (RFC 8705). Read at start.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `"required"` (default; a client without a valid
    /// certificate fails the handshake) or `"optional"` (a client may send
    /// none, but one it sends must verify).
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// `[tls] client_auth`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ClientAuth {
    /// Every client must present a certificate that verifies.
    #[default]
    Required,
    /// A client may present none; one that is presented must verify.
    Optional,
}

/// `[limits]`: each absent key takes the default named on it (an edge proxy's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// A request head must arrive whole within this many seconds: the first one
    /// from the accept, each later HTTP/1.1 one from the previous response
    /// (default 10). Slow clients (slowloris) are disconnected.
    #[serde(default)]
    pub header_read_timeout_secs: Option<f64>,
    /// A connection with no request in flight for this many seconds is closed
    /// (default 60; HTTP/1.1 connections also by `header_read_timeout_secs`).
    #[serde(default)]
    pub idle_timeout_secs: Option<f64>,
    /// Open client connections at most, per listener (default 512, below the
    /// common 1024 file-descriptor limit with room for upstream connections);
    /// a connection beyond it is closed as soon as accepted, the others are
    /// served on. Raise it together with the process's descriptor limit.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// The largest request head in bytes: the HTTP/1.1 request line and headers,
    /// the HTTP/2 header list (default 65536, at least 8192). Larger: 431.
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    /// The largest request body in bytes (default 10485760, 10 MiB): a larger
    /// `Content-Length` is answered 413 before anything is forwarded; a body that
    /// grows past it is cut off and answered 413 if the upstream has not answered.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Once the upstream's response headers arrived, the longest wait for its
    /// next piece of body in seconds (default 60, like nginx's
    /// `proxy_read_timeout`); past it the client's response is aborted.
    #[serde(default)]
    pub upstream_body_timeout_secs: Option<f64>,
}

/// `[forward]`: what the upstream learns about the verified token and the client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ForwardConfig {
    /// Claim name -> request header. `scope` is the space-joined scopes; other
    /// names are looked up in the claims: an exact name, else a dotted path into
    /// nested objects (`"realm_access.roles" = "x-roles"`, the key quoted).
    /// Strings go as they are, numbers and booleans as their JSON text, arrays
    /// of those joined with `claims_separator`. Incoming headers with these names
    /// (also spelt with `_` for `-`, in any case) are always removed, so a client
    /// cannot set them. An object, an array holding anything else or an element
    /// containing the separator, or a value that is not printable ASCII without
    /// a space at either end, refuses the request (401 `invalid_token`) instead
    /// of being altered or left out.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// What joins the elements of an array claim in its header (default `,`).
    #[serde(default)]
    pub claims_separator: Option<String>,
    /// Remove `Authorization` before forwarding.
    #[serde(default)]
    pub strip_authorization: bool,
    /// Tell the upstream who the client is (default `true`): `X-Forwarded-For` is
    /// set to the peer's IP address, `X-Forwarded-Proto` to `https` with `[tls]`,
    /// else `http`, and `X-Forwarded-Host` to the `Host` the client
    /// asked for. On by default because without it the upstream only ever sees
    /// the gateway's address, and the values cannot be spoofed while
    /// `trust_forwarded` is off.
    #[serde(default = "yes")]
    pub x_forwarded: bool,
    /// The peer is a trusted proxy (default `false`). Off, the client's
    /// `Forwarded`, every `X-Forwarded-*` and the client-IP headers (`X-Real-IP`,
    /// `True-Client-IP`...) are always removed, so the upstream never mistakes a
    /// client's claim for the gateway's. On, they are kept under their exact names:
    /// the peer's address is appended to the `X-Forwarded-For` list and the
    /// proxy's `-Proto` and `-Host` take precedence. Route and method overrides
    /// (`X-Original-URL`, `X-HTTP-Method-Override`...) are removed either way.
    /// Only turn it on when nothing but that proxy can reach `listen`.
    #[serde(default)]
    pub trust_forwarded: bool,
    /// The protocols a client may upgrade its connection to through the gateway
    /// (HTTP/1.1 `Upgrade`, after its token was accepted; default
    /// `["websocket"]`; `[]` passes no upgrade on). `h2c` and `http` are refused:
    /// requests on such an upgraded connection would not be checked.
    #[serde(default = "websocket")]
    pub upgrade_protocols: Vec<String>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            claims_to_headers: BTreeMap::new(),
            claims_separator: None,
            strip_authorization: false,
            x_forwarded: true,
            trust_forwarded: false,
            upgrade_protocols: websocket(),
        }
    }
}

fn yes() -> bool {
    true
}

fn websocket() -> Vec<String> {
    vec!["websocket".to_owned()]
}

impl GatewayConfig {
    /// Parses a configuration (shape only; see [`Gateway::from_config`](super::Gateway::from_config)).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        crate::decision::config::from_toml(text)
    }

    /// Reads and parses a configuration file; errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        crate::decision::config::load(path.as_ref())
    }
}
