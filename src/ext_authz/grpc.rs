//! Envoy's `envoy.service.auth.v3.Authorization/Check` (the v3 API, protos from
//! the `envoy-types` crate, so no `protoc` is needed).
//!
//! What is read from `attributes.request.http`: `method`, `path` (Envoy's `path`
//! is the `:path`, query included) and `headers` (names lower-case, repeated
//! headers folded into one comma-separated value; the HTTP/2 pseudo-headers
//! `:method`, `:path`, `:authority` are skipped, the `method` and `path` fields
//! being the one source), or `header_map` when Envoy is told to send raw headers.
//! `host` and `scheme` are not used: routes match paths only (a DPoP proof's
//! `htu` is the configured `[dpop] public_url` plus the path). The `DPoP` proof
//! is the `dpop` header. The client's TLS certificate, for certificate-bound
//! tokens (RFC 8705), is `attributes.source.certificate` (URL-encoded PEM, as
//! Envoy sends it when the listener asks for client certificates); one that
//! does not decode is a 400.
//!
//! **Callers**: only peers in `grpc_allowed_peers` (default: `trusted_proxies`,
//! so loopback) are answered; a check from any other peer is denied with
//! `PERMISSION_DENIED` and HTTP 403, a denial like any other (not an RPC error,
//! so Envoy's `failure_mode_allow` cannot turn a misplaced caller into a pass).
//!
//! **Allowed**: `status` OK, an `OkHttpResponse` whose `headers` are the claim
//! headers (`OVERWRITE_IF_EXISTS_OR_ADD`, so a client's copy is replaced) and
//! whose `headers_to_remove` names every other client-sent header that folds to a
//! claim or forwarding header name (`X_Auth_Sub`, a claim header whose claim the
//! token lacks); and `dynamic_metadata` with the verified `iss`, `sub`,
//! `client_id`, `scope` (space-separated) and `aud` (a list), which Envoy files
//! under `envoy.filters.http.ext_authz` for RBAC and access logs. With DPoP
//! nonces on, `response_headers_to_add` carries the fresh `DPoP-Nonce` for the
//! client (RFC 9449 §8.2).
//!
//! **Refused**: a non-OK `status` (`UNAUTHENTICATED` for 400/401,
//! `PERMISSION_DENIED` for 403/405, `NOT_FOUND` for 404, `UNAVAILABLE` for 503)
//! and a `DeniedHttpResponse` with the exact HTTP status, the headers
//! (`WWW-Authenticate`, `Retry-After`, `Allow`, `Cache-Control`, `Content-Type`)
//! and the JSON body of the layer's answer (`WWW-Authenticate` with its
//! `Bearer` and `DPoP` challenges joined in one value, `DPoP-Nonce` when a
//! nonce is demanded). Envoy renders it for gRPC clients.
//! A denial is an answer: `failure_mode_allow` does not apply to it (see the
//! [module docs](super)).

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue as PbHeader, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest as PbCheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    attribute_context::HttpRequest as PbHttpRequest,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::{Core, PeerAddr, certificate, count};
use crate::VerifiedToken;
use crate::decision::{CheckRequest, Decision, own};
use crate::response::DPOP_NONCE;

/// The gRPC check service. Built by
/// [`ExtAuthz::grpc_service`](super::ExtAuthz::grpc_service); cheap to clone.
#[derive(Clone, Debug)]
pub struct GrpcCheck {
    core: Arc<Core>,
}

impl GrpcCheck {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        GrpcCheck { core }
    }

    /// Decides on one `CheckRequest`.
    pub async fn decide(&self, request: &PbCheckRequest) -> CheckResponse {
        let http = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let Some(http) = http else {
            count("grpc", "bad_request");
            return denied(bad_request(
                "the check request has no attributes.request.http",
            ));
        };
        let (method, headers) = match parse(http) {
            Ok(parsed) => parsed,
            Err(problem) => {
                count("grpc", "bad_request");
                return denied(bad_request(problem));
            }
        };
        let certificate = request
            .attributes
            .as_ref()
            .and_then(|a| a.source.as_ref())
            .map_or(Ok(None), |peer| {
                certificate::parse(peer.certificate.as_bytes())
            });
        let certificate = match certificate {
            Ok(certificate) => certificate,
            Err(problem) => {
                count("grpc", "bad_request");
                return denied(bad_request(problem));
            }
        };
        let check = CheckRequest::new(&method, &http.path, &headers)
            .http_answers()
            .client_certificate(certificate.as_ref());
        match self.core.decider.decide(&check).await {
            Decision::Allow(allow) => {
                count("grpc", "allowed");
                let headers = allow
                    .headers_to_set
                    .iter()
                    .map(|(name, value)| header_option(name, value))
                    .collect();
                let headers_to_remove = allow
                    .headers_to_remove
                    .iter()
                    .map(|n| n.as_str().to_owned())
                    .collect();
                let response_headers_to_add = allow
                    .dpop_nonce
                    .iter()
                    .map(|nonce| header_option(&DPOP_NONCE, nonce))
                    .collect();
                CheckResponse {
                    status: Some(RpcStatus {
                        code: tonic::Code::Ok as i32,
                        ..RpcStatus::default()
                    }),
                    dynamic_metadata: allow.token.as_ref().map(metadata),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers,
                        headers_to_remove,
                        response_headers_to_add,
                        ..OkHttpResponse::default()
                    })),
                }
            }
            Decision::Deny(deny) => {
                count("grpc", deny.outcome.as_str());
                denied(deny.response)
            }
        }
    }
}

#[tonic::async_trait]
impl Authorization for GrpcCheck {
    async fn check(
        &self,
        request: tonic::Request<PbCheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0)
            .or_else(|| request.remote_addr());
        if !peer.is_some_and(|p| self.core.grpc_peers.contains(p.ip())) {
            tracing::warn!(peer = ?peer, "gRPC check from a peer not in grpc_allowed_peers");
            count("grpc", "untrusted_peer");
            let refusal = own(
                StatusCode::FORBIDDEN,
                "forbidden",
                "checks are accepted from the configured proxies only",
            );
            return Ok(tonic::Response::new(denied(refusal)));
        }
        Ok(tonic::Response::new(self.decide(request.get_ref()).await))
    }
}

fn bad_request(description: &str) -> Response<bytes::Bytes> {
    own(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// The method and the headers (pseudo-headers left out) of Envoy's request.
fn parse(http: &PbHttpRequest) -> Result<(Method, HeaderMap), &'static str> {
    let method = Method::from_bytes(http.method.as_bytes())
        .map_err(|_| "attributes.request.http.method is not a method")?;
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &[u8]| -> Result<(), &'static str> {
        if name.starts_with(':') {
            return Ok(());
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "invalid header name")?;
        let value = HeaderValue::from_bytes(value).map_err(|_| "invalid header value")?;
        headers.append(name, value);
        Ok(())
    };
    match &http.header_map {
        Some(map) if http.headers.is_empty() => {
            for h in &map.headers {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value
                };
                add(&h.key, value)?;
            }
        }
        _ => {
            for (name, value) in &http.headers {
                add(name, value.as_bytes())?;
            }
        }
    }
    Ok((method, headers))
}

fn header_option(name: &HeaderName, value: &HeaderValue) -> HeaderValueOption {
    let (value, raw_value) = match value.to_str() {
        Ok(text) => (text.to_owned(), Vec::new()),
        Err(_) => (String::new(), value.as_bytes().to_vec()),
    };
    HeaderValueOption {
        header: Some(PbHeader {
            key: name.as_str().to_owned(),
            value,
            raw_value,
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

/// The refusal as Envoy's `DeniedHttpResponse`, with a non-OK status.
fn denied(response: Response<bytes::Bytes>) -> CheckResponse {
    let status = response.status();
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::NOT_FOUND => tonic::Code::NotFound,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        _ => tonic::Code::PermissionDenied,
    };
    // One option per name, repeated values joined (RFC 9110 §5.3): Envoy's
    // denied-response headers replace each other by name, so a second
    // `WWW-Authenticate` (the `DPoP` challenge beside `Bearer`) would win alone.
    let headers = response
        .headers()
        .keys()
        .filter_map(|name| {
            let values: Vec<&[u8]> = response
                .headers()
                .get_all(name)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            let joined = HeaderValue::from_bytes(&values.join(&b", "[..])).ok()?;
            Some(header_option(name, &joined))
        })
        .collect();
    CheckResponse {
        status: Some(RpcStatus {
            code: code as i32,
            message: status.canonical_reason().unwrap_or_default().to_owned(),
            ..RpcStatus::default()
        }),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            // envoy.type.v3.StatusCode's values are the HTTP status codes.
            status: Some(HttpStatus {
                code: i32::from(status.as_u16()),
            }),
            headers,
            body: String::from_utf8_lossy(response.body()).into_owned(),
        })),
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// The verified claims for Envoy's RBAC and access logs.
fn metadata(token: &VerifiedToken) -> Struct {
    let mut fields = std::collections::HashMap::new();
    fields.insert("iss".to_owned(), string(token.issuer()));
    if let Some(sub) = token.subject() {
        fields.insert("sub".to_owned(), string(sub));
    }
    if let Some(client_id) = token.client_id() {
        fields.insert("client_id".to_owned(), string(client_id));
    }
    fields.insert("scope".to_owned(), string(&token.scopes().to_string()));
    let aud = token.audiences().iter().map(|a| string(a)).collect();
    fields.insert(
        "aud".to_owned(),
        Value {
            kind: Some(Kind::ListValue(ListValue { values: aud })),
        },
    );
    Struct { fields }
}
