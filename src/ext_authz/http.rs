//! The HTTP check: nginx `auth_request`, Caddy `forward_auth`, Traefik
//! ForwardAuth and Envoy's `ext_authz` HTTP mode ask "may this request pass?" with
//! a request of their own; the answer is 2xx (pass, with the claim headers) or the
//! refusal the client should get.
//!
//! Where the original method and URI come from, by the headers present:
//!
//! | proxy | method | URI (path and query) |
//! |---|---|---|
//! | nginx (as configured in `examples/proxies/nginx.conf`) | `X-Original-Method` | `X-Original-URI` |
//! | Caddy, Traefik | `X-Forwarded-Method` | `X-Forwarded-Uri` |
//! | Envoy HTTP mode (none of those headers) | the check request's own | the check request's own |
//!
//! Those headers are believed only from a [trusted proxy](super::TrustedProxies)
//! (loopback by default); from any other peer their presence is refused with 403,
//! so calling the check service directly with a forged `X-Forwarded-Uri` is never
//! a way past a route's requirements. Each must appear once; both conventions in
//! one request (a client adding `X-Original-URI` through Caddy) are a 400.
//! `X-Forwarded-Host` and `-Proto` are not used: routes match paths only.
//!
//! **DPoP** (RFC 9449): the proxy passes the client's `DPoP` header with the
//! check (nginx's `auth_request` subrequest, Caddy's `forward_auth` and
//! Traefik's ForwardAuth send the client's headers as they are); the proof is
//! checked against the original method and the configured `[dpop] public_url`
//! plus the original path.
//!
//! **Client certificates** (RFC 8705): with `client_cert_header` set, a trusted
//! proxy sends the client's TLS certificate in that header (URL-encoded PEM or
//! base64 DER: nginx `$ssl_client_escaped_cert`, Caddy
//! `{http.request.tls.client.certificate_der_base64}`, Traefik's
//! `X-Forwarded-Tls-Client-Cert`); empty means no certificate. From a peer
//! that is not a trusted proxy the header is refused with 403, as the
//! original-request headers are; one that does not decode, or is repeated, is
//! a 400.
//!
//! **Allowed**: 200, empty body, the claim headers (for `auth_request_set`,
//! `copy_headers`, `authResponseHeaders`, Envoy's `allowed_upstream_headers`), and
//! `x-envoy-auth-headers-to-remove` naming the client-sent claim-like headers
//! Envoy must remove, and with DPoP nonces on, the fresh `DPoP-Nonce` for the
//! client (nginx: `add_header DPoP-Nonce`; Envoy:
//! `allowed_client_headers_on_success`). For Caddy and Traefik every configured
//! claim header is in the answer, empty when the token has no such claim or the route is public
//! (Caddy 2.6 would otherwise copy its unresolved placeholder text). nginx, Caddy
//! and Traefik cannot remove request headers on the check's word: their
//! configurations overwrite or delete them (see `examples/proxies/`).
//!
//! **Refused**: the decision's response (status, `WWW-Authenticate`,
//! `Retry-After`, `Allow`, JSON body), which Caddy, Traefik and Envoy hand to the
//! client. nginx's `auth_request` passes only 401 and 403 on (any other status
//! becomes a 500, and the body is always dropped), so for an nginx request
//! (`X-Original-*`) a 400, 404, 405 or 503 is sent as **401**, every refusal
//! carries the true status in `X-Auth-Status` and the JSON body in `X-Auth-Body`,
//! and the nginx configuration's `error_page` location answers with them (the
//! `Bearer` and `DPoP` challenges joined in one `WWW-Authenticate` value, which
//! nginx before 1.23 would otherwise cut to the first; `DPoP-Nonce` as sent).
//! Without that location a client still gets a refusal (401), never a pass.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower_service::Service;

use super::{Core, certificate, count};
use crate::decision::{CheckRequest, Decision, own};
use crate::response::DPOP_NONCE;
use crate::sender::ClientCertificate;

/// The TCP peer of a check request, put in the request's extensions by the
/// server (the ext-authz listeners do; under axum, `ConnectInfo<SocketAddr>`
/// works too). Without either the peer counts as untrusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_AUTH_STATUS: HeaderName = HeaderName::from_static("x-auth-status");
const X_AUTH_BODY: HeaderName = HeaderName::from_static("x-auth-body");
const ENVOY_HEADERS_TO_REMOVE: HeaderName =
    HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// The HTTP check service (see the [module docs](self)). Built by
/// [`ExtAuthz::http_service`](super::ExtAuthz::http_service); cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpCheck {
    core: Arc<Core>,
}

/// Which convention told us the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Convention {
    Nginx,
    ForwardAuth,
    Direct,
}

impl HttpCheck {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        HttpCheck { core }
    }

    /// Decides on one check request. The future holds the request's head
    /// once (the body is never read: nginx and Caddy send none), so it is
    /// small to move into place, as hyper does per request.
    pub(crate) fn check<B>(
        self,
        req: Request<B>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send + 'static {
        let (parts, _) = req.into_parts();
        async move {
            let (response, outcome) = self.answer(&parts).await;
            count("http", outcome);
            response.map(Full::new)
        }
    }

    async fn answer(&self, req: &Parts) -> (Response<Bytes>, &'static str) {
        let headers = &req.headers;
        let nginx = headers.contains_key(X_ORIGINAL_URI) || headers.contains_key(X_ORIGINAL_METHOD);
        let forward =
            headers.contains_key(X_FORWARDED_URI) || headers.contains_key(X_FORWARDED_METHOD);
        let convention = match (nginx, forward) {
            (true, _) => Convention::Nginx,
            (false, true) => Convention::ForwardAuth,
            (false, false) => Convention::Direct,
        };
        let cert_header = self
            .core
            .cert_header
            .as_ref()
            .filter(|name| headers.contains_key(*name));
        if (convention != Convention::Direct || cert_header.is_some()) && !self.peer_trusted(req) {
            let refusal = own(
                StatusCode::FORBIDDEN,
                "forbidden",
                "original-request headers are accepted from trusted proxies only",
            );
            return (refusal, "untrusted_peer");
        }
        if nginx && forward {
            let refusal = bad_request("both X-Original-* and X-Forwarded-Method/-Uri sent");
            return (for_proxy(convention, refusal), "bad_request");
        }
        let original = match convention {
            Convention::Nginx => original(headers, X_ORIGINAL_METHOD, X_ORIGINAL_URI),
            Convention::ForwardAuth => original(headers, X_FORWARDED_METHOD, X_FORWARDED_URI),
            Convention::Direct => Ok((
                req.method.clone(),
                req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            )),
        };
        let (method, target) = match original {
            Ok(found) => found,
            Err(problem) => return (for_proxy(convention, bad_request(problem)), "bad_request"),
        };
        let certificate = match cert_header.map(|name| forwarded_certificate(headers, name)) {
            None => None,
            Some(Ok(certificate)) => certificate,
            Some(Err(problem)) => {
                return (for_proxy(convention, bad_request(problem)), "bad_request");
            }
        };
        let request = CheckRequest::new(&method, target, headers)
            .http_answers()
            .client_certificate(certificate.as_ref());
        match self.core.decider.decide(&request).await {
            Decision::Allow(allow) => {
                let mut r = Response::new(Bytes::new());
                let h = r.headers_mut();
                for (name, value) in allow.headers_to_set {
                    h.insert(name, value);
                }
                if convention == Convention::ForwardAuth {
                    // Caddy 2.6 copies a header missing from this answer as its
                    // literal placeholder (`{http.reverse_proxy.header.X-Auth-Sub}`):
                    // name every claim header, empty when there is no such claim.
                    for name in self.core.decider.claim_headers() {
                        if !h.contains_key(name) {
                            h.insert(name.clone(), HeaderValue::from_static(""));
                        }
                    }
                }
                let remove = allow
                    .headers_to_remove
                    .iter()
                    .map(HeaderName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(value) = HeaderValue::from_str(&remove)
                    && !remove.is_empty()
                {
                    h.insert(ENVOY_HEADERS_TO_REMOVE, value);
                }
                if let Some(nonce) = allow.dpop_nonce {
                    h.insert(DPOP_NONCE, nonce);
                }
                (r, "allowed")
            }
            Decision::Deny(deny) => (for_proxy(convention, deny.response), deny.outcome.as_str()),
        }
    }

    fn peer_trusted(&self, req: &Parts) -> bool {
        let peer = req.extensions.get::<PeerAddr>().map(|p| p.0);
        #[cfg(feature = "axum")]
        let peer = peer.or_else(|| {
            req.extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        });
        peer.is_some_and(|p| self.core.trusted.contains(p.ip()))
    }
}

fn bad_request(description: &str) -> Response<Bytes> {
    own(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// The original method and target from a proxy's two headers, each sent once.
fn original(
    headers: &HeaderMap,
    method: HeaderName,
    uri: HeaderName,
) -> Result<(Method, &str), &'static str> {
    let single = |name: &HeaderName| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok().filter(|v| !v.is_empty()),
            _ => None,
        }
    };
    let m = single(&method).ok_or("the original method header is missing, repeated or empty")?;
    let m = Method::from_bytes(m.as_bytes()).map_err(|_| "the original method is not a method")?;
    let target = single(&uri).ok_or("the original URI header is missing, repeated or empty")?;
    Ok((m, target))
}

/// The certificate in the proxy's one `name` header (empty: none).
fn forwarded_certificate(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Option<ClientCertificate>, &'static str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => certificate::parse(value.as_bytes()),
        _ => Err("the client certificate header is repeated"),
    }
}

/// A refusal in the form the proxy passes on (see the module docs for nginx).
fn for_proxy(convention: Convention, response: Response<Bytes>) -> Response<Bytes> {
    if convention != Convention::Nginx {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert(X_AUTH_STATUS, HeaderValue::from(parts.status.as_u16()));
    // `$upstream_http_www_authenticate` is the first header of that name before
    // nginx 1.23: the `Bearer` and `DPoP` challenges go in one value (RFC 9110
    // §11.6.1 allows a comma-separated list).
    let challenges: Vec<&[u8]> = parts
        .headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if challenges.len() > 1
        && let Ok(joined) = HeaderValue::from_bytes(&challenges.join(&b", "[..]))
    {
        parts.headers.insert(http::header::WWW_AUTHENTICATE, joined);
    }
    if let Ok(value) = HeaderValue::from_bytes(&body) {
        parts.headers.insert(X_AUTH_BODY, value);
    }
    if !matches!(
        parts.status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        parts.status = StatusCode::UNAUTHORIZED;
    }
    Response::from_parts(parts, body)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<B> Service<Request<B>> for HttpCheck
where
    B: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(self.clone().check(req).map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn original_request_headers_must_appear_once_and_parse() {
        let ok = headers(&[("x-original-method", "POST"), ("x-original-uri", "/a?b")]);
        let (m, t) = original(&ok, X_ORIGINAL_METHOD, X_ORIGINAL_URI).expect("ok");
        assert_eq!((m, t), (Method::POST, "/a?b"));
        for bad in [
            headers(&[("x-original-uri", "/a")]),
            headers(&[("x-original-method", "GET")]),
            headers(&[("x-original-method", "GET"), ("x-original-uri", "")]),
            headers(&[("x-original-method", "G ET"), ("x-original-uri", "/")]),
            headers(&[
                ("x-original-method", "GET"),
                ("x-original-uri", "/a"),
                ("x-original-uri", "/b"),
            ]),
        ] {
            assert!(
                original(&bad, X_ORIGINAL_METHOD, X_ORIGINAL_URI).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nginx_gets_every_refusal_as_401_or_403_with_the_true_status() {
        for (status, sent) in [
            (400, 401),
            (401, 401),
            (403, 403),
            (404, 401),
            (405, 401),
            (503, 401),
        ] {
            let mut r = own(StatusCode::from_u16(status).expect("status"), "e", "d");
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            let body = r.body().clone();
            let nginx = for_proxy(Convention::Nginx, r.clone());
            assert_eq!(nginx.status(), sent);
            assert_eq!(nginx.headers()[X_AUTH_STATUS], status.to_string().as_str());
            assert_eq!(nginx.headers()[X_AUTH_BODY].as_bytes(), &body[..]);
            assert_eq!(nginx.headers()["www-authenticate"], "Bearer");
            let caddy = for_proxy(Convention::ForwardAuth, r);
            assert_eq!(caddy.status(), status);
            assert!(caddy.headers().get(X_AUTH_STATUS).is_none());
        }
    }

    #[test]
    fn nginx_gets_both_challenges_in_one_value_and_others_keep_two() {
        let mut r = own(StatusCode::UNAUTHORIZED, "e", "d");
        let www = http::header::WWW_AUTHENTICATE;
        r.headers_mut()
            .append(&www, HeaderValue::from_static("Bearer realm=\"a\""));
        r.headers_mut().append(
            &www,
            HeaderValue::from_static("DPoP realm=\"a\", error=\"invalid_dpop_proof\""),
        );
        let nginx = for_proxy(Convention::Nginx, r.clone());
        let values: Vec<_> = nginx.headers().get_all(&www).iter().collect();
        assert_eq!(
            values,
            [r#"Bearer realm="a", DPoP realm="a", error="invalid_dpop_proof""#]
        );
        let caddy = for_proxy(Convention::ForwardAuth, r);
        assert_eq!(caddy.headers().get_all(&www).iter().count(), 2);
    }
}
