//! Where allowed requests go: the global `upstream` or their route's, over
//! HTTP/1.1 (`http://`), HTTP/2 with prior knowledge (`h2c://`), or TLS
//! (`https://`, HTTP/2 or HTTP/1.1 as ALPN agrees).
//!
//! `https://` upstreams are verified against the system's roots and
//! `upstream_ca_file`, with the URL's host as SNI and as the name the
//! certificate must carry, unless `danger_accept_invalid_upstream_certificate`.

use std::sync::Arc;

use http::Uri;
use http::uri::{Authority, Scheme};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::{ConfigError, GatewayConfig};
use super::pool::Http1Pool;
use super::tls::{provider, read_roots};

/// One upstream URL, checked.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The URL's path without its trailing `/`, prepended to every path.
    pub base: String,
    /// `h2c://`: HTTP/2 without TLS, by prior knowledge.
    pub h2c: bool,
    /// `http://`: its kept-alive HTTP/1.1 connections (the others go through
    /// hyper-util's client, [`Upstreams::client`]).
    pub pool: Option<Arc<Http1Pool>>,
}

impl Upstream {
    /// `http://`: always HTTP/1.1.
    pub(super) fn plain_http1(&self) -> bool {
        !self.h2c && self.scheme == Scheme::HTTP
    }

    /// Parses `text` (the value of `key`).
    pub(super) fn parse(key: &str, text: &str) -> Result<Upstream, ConfigError> {
        let bad = |problem: String| ConfigError::at(key, problem);
        let uri: Uri = text
            .parse()
            .map_err(|e| bad(format!("{text:?} is not a URL: {e}")))?;
        let (scheme, h2c) = match uri.scheme_str() {
            Some("http") => (Scheme::HTTP, false),
            Some("https") => (Scheme::HTTPS, false),
            Some("h2c") => (Scheme::HTTP, true),
            _ => {
                return Err(bad(format!(
                    "{text:?}: the upstream must be an http://, h2c:// or https:// URL"
                )));
            }
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err(bad(format!("{text:?} has no host")));
        };
        if authority.as_str().contains('@') {
            return Err(bad(format!(
                "{text:?}: an upstream URL cannot carry credentials"
            )));
        }
        if uri.query().is_some() {
            return Err(bad(format!(
                "{text:?}: an upstream URL cannot have a query"
            )));
        }
        // Plain HTTP/1.1 goes through the gateway's own pool (`pool.rs`).
        let pool = (scheme == Scheme::HTTP && !h2c).then(|| Http1Pool::new(authority.clone()));
        Ok(Upstream {
            scheme,
            authority,
            base: uri.path().trim_end_matches('/').to_owned(),
            h2c,
            pool,
        })
    }
}

/// The connection pools: one speaking HTTP/1.1 (and HTTP/2 to `https://`
/// upstreams choosing it by ALPN), one HTTP/2 only (`h2c://`).
pub(crate) struct Clients {
    pub http1: Client<HttpsConnector<HttpConnector>, Limited<Incoming>>,
    pub h2c: Client<HttpsConnector<HttpConnector>, Limited<Incoming>>,
}

/// The upstreams of a gateway configuration: the global one, and each route's.
pub(crate) struct Upstreams {
    pub default: Upstream,
    /// By route index; `None`: the default.
    pub routes: Vec<Option<Upstream>>,
    pub clients: Clients,
}

impl Upstreams {
    pub(super) fn from_config(c: &GatewayConfig) -> Result<Upstreams, ConfigError> {
        let default = Upstream::parse("upstream", &c.upstream)?;
        let routes = c
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.upstream
                    .as_deref()
                    .map(|u| Upstream::parse(&format!("route[{i}].upstream"), u))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let any_https = std::iter::once(&default)
            .chain(routes.iter().flatten())
            .any(|u| u.scheme == Scheme::HTTPS);
        let tls = client_tls(c, any_https)?;
        let connector = |tls: ClientConfig| {
            let mut http = HttpConnector::new();
            // A request body's last small write is not held back by Nagle.
            http.set_nodelay(true);
            // The scheme decides: hyper-rustls connects https, passes http on.
            http.enforce_http(false);
            HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_all_versions()
                .wrap_connector(http)
        };
        let executor = TokioExecutor::new();
        Ok(Upstreams {
            default,
            routes,
            clients: Clients {
                http1: Client::builder(executor.clone()).build(connector(tls.clone())),
                h2c: Client::builder(executor)
                    .http2_only(true)
                    .build(connector(tls)),
            },
        })
    }

    /// The upstream of route `index`.
    pub(super) fn for_route(&self, index: usize) -> &Upstream {
        self.routes
            .get(index)
            .and_then(Option::as_ref)
            .unwrap_or(&self.default)
    }

    pub(super) fn client(
        &self,
        upstream: &Upstream,
    ) -> &Client<HttpsConnector<HttpConnector>, Limited<Incoming>> {
        if upstream.h2c {
            &self.clients.h2c
        } else {
            &self.clients.http1
        }
    }
}

/// The TLS client configuration for `https://` upstreams.
fn client_tls(c: &GatewayConfig, any_https: bool) -> Result<ClientConfig, ConfigError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::at("upstream", e.to_string()))?;
    if c.danger_accept_invalid_upstream_certificate {
        tracing::warn!(
            "danger_accept_invalid_upstream_certificate = true: https upstreams are NOT \
             authenticated; anyone on the network path can impersonate them"
        );
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    if let Some(file) = &c.upstream_ca_file {
        roots = read_roots("upstream_ca_file", file)?;
    }
    if any_https {
        // Read only when needed: a few milliseconds and a warning per bad file.
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system root certificate could not be read");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if roots.is_empty() {
            return Err(ConfigError::at(
                "upstream_ca_file",
                "an https:// upstream, but no trusted roots: the system has none \
                 and upstream_ca_file is not set",
            ));
        }
        tracing::debug!(system_roots = added, "roots for https upstreams");
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `danger_accept_invalid_upstream_certificate`: any certificate, but the
/// handshake's signature is still checked with the key it carries.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        let u = Upstream::parse("upstream", "http://127.0.0.1:9000/base/").expect("http");
        assert_eq!(
            (u.scheme, u.h2c, u.base.as_str()),
            (Scheme::HTTP, false, "/base")
        );
        let u = Upstream::parse("upstream", "h2c://127.0.0.1:50051").expect("h2c");
        assert_eq!((u.scheme, u.h2c, u.base.as_str()), (Scheme::HTTP, true, ""));
        let u = Upstream::parse("upstream", "https://api.internal").expect("https");
        assert_eq!(u.scheme, Scheme::HTTPS);
        assert_eq!(u.authority.as_str(), "api.internal");
    }

    #[test]
    fn refuses_what_is_not_an_upstream() {
        for (text, why) in [
            ("ftp://host", "http://, h2c:// or https://"),
            ("127.0.0.1:9000", "http://, h2c:// or https://"),
            ("http:///path", "not a URL"),
            ("http://host/?q=1", "query"),
            ("http://user:pw@host", "credentials"),
        ] {
            let e = Upstream::parse("route[1].upstream", text).expect_err(text);
            assert_eq!(e.key(), Some("route[1].upstream"));
            assert!(e.problem().contains(why), "{text}: {e}");
        }
    }
}
