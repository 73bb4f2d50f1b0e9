//! Entry points for the fuzz targets in `fuzz/` and their corpus replay test.
//!
//! Not part of the public API: compiled only with the internal `__fuzz` feature
//! and hidden from the docs. Each function is a thin call into the real, otherwise
//! crate-private, code path, so the fuzzers exercise exactly what requests do.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::HeaderMap;

use crate::jws::{Algorithm, TypPolicy};
use crate::{AuthError, Guard, VerifiedToken};

pub use crate::error::TokenProblem;
pub use crate::jws::CompactJws;

/// `token.rs`: the request's bearer token, as the layer finds it.
pub fn extract_token<'h>(
    headers: &'h HeaderMap,
    max_len: usize,
    cookie: Option<&str>,
) -> Result<&'h str, AuthError> {
    #[cfg(not(feature = "cookie"))]
    let _ = cookie;
    crate::token::TokenSource {
        max_len,
        #[cfg(feature = "cookie")]
        cookie: cookie.map(Box::from),
    }
    // Both schemes: the DPoP one is read by the same code.
    .extract_scheme(headers, true)
    .map(|(_, token)| token)
}

/// `jws.rs`: split, strict base64url, header rules.
pub fn parse_jws(token: &str, typ: TypPolicy) -> Result<CompactJws<'_>, TokenProblem> {
    crate::jws::parse(token, typ)
}

/// `keys/mod.rs`: a JWKS document to ready-to-verify keys; `Ok` is how many.
pub fn keys_from_jwks(
    json: &[u8],
    algorithms: &[Algorithm],
    max_keys: usize,
) -> Result<usize, String> {
    crate::keys::KeySet::from_jwks(json, algorithms.iter().copied().collect(), max_keys)
        .map(|set| set.len())
        .map_err(|e| e.to_string())
}

/// `discovery.rs`: a metadata document to the issuer's `jwks_uri`.
pub fn jwks_uri_from_metadata(
    body: &[u8],
    issuer: &str,
    allow_http: bool,
) -> Result<String, String> {
    crate::keys::discovery::jwks_uri_from_metadata(body, issuer, allow_http).map(String::from)
}

/// `validate.rs`: [`Guard::validate_at`], driven to completion without a runtime.
///
/// # Panics
///
/// If validation waits, which only a key source that fetches can make it do: give
/// the guard static key sets (`Issuer::jwks_document`, `Issuer::shared_secret`).
pub fn validate_at(guard: &Guard, token: &str, now: u64) -> Result<VerifiedToken, AuthError> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(guard.validate_at(token, now)).poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("validation waited: the fuzz guard must use static keys"),
    }
}

/// `sender/dpop.rs`: the request's `DPoP` proof checked against `method`, the
/// guard's public URL plus the path of `uri`, `access_token` (`ath`) and the
/// token's `jkt`, then recorded in the guard's replay store; driven to
/// completion without a runtime.
///
/// # Panics
///
/// If the guard has no DPoP settings, or its replay store waits (give it the
/// default in-memory store).
pub fn verify_dpop_proof(
    guard: &Guard,
    headers: &HeaderMap,
    method: &http::Method,
    uri: &http::Uri,
    access_token: &str,
    jkt: &str,
    now: u64,
) -> Result<(), AuthError> {
    let verifier = guard
        .inner
        .dpop
        .as_ref()
        .expect("the fuzz guard has DPoP settings");
    let target = crate::sender::ProofTarget {
        headers,
        method,
        uri,
        access_token,
        jkt,
        now,
    };
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(verifier.verify(&target)).poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("the DPoP check waited: the fuzz guard must use the memory store"),
    }
}
