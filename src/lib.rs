//! # bearer-guard
//!
//! OAuth 2.1 resource-server token validation for tower, axum, hyper and tonic.
//!
//! Every request's bearer token is checked, in this order, before your handler
//! runs: size and shape, the **issuer** (an exact expected value, before any key
//! lookup), the **algorithm**, the **signature** against the issuer's published keys
//! (JWKS, fetched and cached), the **time** (`exp`, `nbf`, `iat`), the
//! **audience**, and per route the **scope**. Failures are answered per RFC 6750.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use bearer_guard::{Guard, RequireScope, VerifiedToken};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = Guard::builder()
//!     .issuer("https://login.example.com")      // discovery finds the jwks_uri
//!     .audience("https://api.example.com")
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/orders", get(|t: VerifiedToken| async move {
//!         format!("orders of {}", t.subject().unwrap_or("?"))
//!     }).route_layer(RequireScope::all(["orders:read"])))
//!     .layer(guard.layer());
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Features: `axum` (default: extractors), `authz-server` (the bundled OAuth 2.1
//! authorization server for tests and local development), `cookie` (tokens from a
//! cookie), `metrics` (counters through the `metrics` facade), `gateway` (the
//! validating reverse proxy and the route `decision` it shares), `ext-authz`
//! (the check services for Envoy, Istio, nginx, Caddy and Traefik), `redis` (a DPoP
//! replay store shared by replicas, `sender::RedisReplayStore`).
//!
//! ## Other crates' types in this API
//!
//! Only where a user hands one in or must read one, each a crate the user
//! already has when they need it:
//! - [`http`] (requests, responses, headers, methods, URIs) and [`bytes::Bytes`]
//!   (refusal bodies): the types every tower, hyper and axum service speaks;
//! - [`serde_json::Value`] and [`serde_json::Error`]: [`VerifiedToken::claim`]
//!   and [`VerifiedToken::claims`] answer with them (claims are JSON);
//! - [`reqwest::Client`]: [`GuardBuilder::http_client`] takes the client that
//!   fetches discovery documents and keys (proxies, roots, timeouts);
//! - `metrics_exporter_prometheus::PrometheusHandle` (features `gateway`,
//!   `ext-authz`): `with_metrics` shares the process's recorder;
//! - `tonic` and `envoy_types` (feature `ext-authz`): the gRPC check service is a
//!   tonic service of Envoy's `Authorization` API;
//! - `redis` (feature `redis`): none; the store takes a URL.
#![forbid(unsafe_code)]
#![deny(unreachable_pub)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
pub mod error;
pub mod resource_metadata;
pub mod sender;

mod algorithm;
mod builder;
mod cache;
mod claims;
mod guard;
mod introspect;
mod issuer;
mod json;
mod jws;
mod keys;
mod layer;
pub mod metrics;
mod require;
mod response;
mod scope;
mod sync;
mod token;
mod validate;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "authz-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "authz-server")))]
pub mod authz_server;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub mod decision;
#[cfg(feature = "ext-authz")]
#[cfg_attr(docsrs, doc(cfg(feature = "ext-authz")))]
pub mod ext_authz;
#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub mod gateway;

// Fuzzing entry points. Behind an internal feature rather than `cfg(fuzzing)`:
// the fuzz crate enables it by name, so it builds the same with cargo-fuzz, with
// hand-written sancov flags, and in the stable corpus-replay test; and ordinary
// users never compile it or see it in the API.
#[cfg(feature = "__fuzz")]
#[doc(hidden)]
pub mod __fuzz;

pub use algorithm::{Algorithm, UnknownAlgorithm};
pub use builder::{BuildError, GuardBuilder};
pub use cache::TokenCacheStats;
pub use claims::{Binding, Scopes, VerifiedToken};
pub use error::AuthError;
pub use guard::Guard;
pub use introspect::Introspection;
pub use issuer::Issuer;
pub use jws::{TokenHeader, TypPolicy};
pub use keys::store::KeyStoreStatus;
pub use layer::{GuardBody, GuardLayer, GuardService};
pub use require::{InvalidScope, Require, RequireScope, RequireScopeService, RequireService};
pub use resource_metadata::ResourceMetadata;
pub use response::Refusal;

// The README's examples compile and run as doctests, so they cannot rot.
#[cfg(all(doctest, feature = "authz-server"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
