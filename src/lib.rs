//! bearer-guard: OAuth 2.1 resource-server token validation.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;

#[cfg(feature = "authz-server")]
pub mod authz_server;
