//! Writes one gRPC-framed `envoy.service.auth.v3.CheckRequest` to standard output,
//! shaped as Envoy sends it (`GET $CHECK_PATH` with `authorization: Bearer $TOKEN`),
//! for `benches/ext_authz_load.sh` to replay with h2load:
//!
//! ```sh
//! TOKEN=... cargo run --features ext-authz --example envoy_check_body > check.bin
//! h2load -n 100000 -c 4 -m 16 -d check.bin -H 'content-type: application/grpc' \
//!     -H 'te: trailers' http://127.0.0.1:9001/envoy.service.auth.v3.Authorization/Check
//! ```

use std::collections::HashMap;
use std::io::Write as _;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use prost::Message as _;

fn main() -> std::io::Result<()> {
    let token = std::env::var("TOKEN").unwrap_or_default();
    let path = std::env::var("CHECK_PATH").unwrap_or_else(|_| "/orders".to_owned());
    let mut headers = HashMap::new();
    headers.insert(":method".to_owned(), "GET".to_owned());
    headers.insert(":path".to_owned(), path.clone());
    headers.insert(":authority".to_owned(), "api.example.com".to_owned());
    headers.insert("authorization".to_owned(), format!("Bearer {token}"));
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path,
                    host: "api.example.com".to_owned(),
                    headers,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    };
    let message = request.encode_to_vec();
    // gRPC's length-prefixed message: no compression, 4-byte big-endian length.
    let len = u32::try_from(message.len()).map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&[0])?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&message)?;
    out.flush()
}
