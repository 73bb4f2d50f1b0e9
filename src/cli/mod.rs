//! The command line of the `bearer-guard` binary (feature `cli`).
//!
//! The binary only parses arguments and sets the exit status; the work is done
//! here and in [`gateway`](crate::gateway), so tests run it in-process.
//!
//! Exit status of every subcommand: 0 success, 1 token rejected (`verify`) or a
//! server failing after it started, 2 usage or configuration error (a listen
//! address that cannot be bound included).

use std::path::PathBuf;

pub mod authz;
pub mod logging;
pub mod verify;

pub use logging::LogFormat;

/// `bearer-guard`: OAuth 2.1 bearer-token tools.
#[derive(Debug, clap::Parser)]
#[command(name = "bearer-guard", version, about)]
pub struct Cli {
    /// How log lines on stderr are written: `text`, or `json` (one object per
    /// line). The filter comes from `BEARER_GUARD_LOG` or `RUST_LOG`
    /// (`bearer_guard=debug,hyper=warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate one access token and print its header and claims, or why it was
    /// rejected. Exit status: 0 valid, 1 rejected, 2 usage error.
    Verify(verify::VerifyArgs),
    /// Run the validating reverse proxy described by a TOML file.
    Gateway(GatewayArgs),
    /// Run the external authorization service for Envoy (gRPC and HTTP), nginx,
    /// Caddy and Traefik described by a TOML file.
    ExtAuthz(GatewayArgs),
    /// Run the bundled OAuth 2.1 authorization server for local development
    /// (both flows, discovery, JWKS). Plain HTTP, in memory: not for production.
    AuthzServer(authz::AuthzServerArgs),
}

/// The arguments of `bearer-guard gateway` and `bearer-guard ext-authz`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// The TOML configuration (`gateway.toml`, `ext-authz.toml`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}
