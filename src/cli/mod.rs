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
    /// Threads serving requests (default: `TOKIO_WORKER_THREADS`, else one per
    /// core). With 1, a single-threaded runtime: no work stealing, cheaper per
    /// request, for one core or one process per core.
    #[arg(long, global = true, value_name = "N")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The runtime the subcommand runs on: `--worker-threads`, else
    /// `TOKIO_WORKER_THREADS`, else one thread per core; a single-threaded
    /// runtime for one thread. A malformed `TOKIO_WORKER_THREADS` is an error.
    ///
    /// ```
    /// use bearer_guard::cli::Cli;
    /// use clap::Parser as _;
    ///
    /// let cli = Cli::parse_from(["bearer-guard", "--worker-threads", "1", "authz-server"]);
    /// let runtime = cli.runtime().expect("a runtime");
    /// let flavor = runtime.block_on(async { tokio::runtime::Handle::current().runtime_flavor() });
    /// assert_eq!(flavor, tokio::runtime::RuntimeFlavor::CurrentThread);
    /// ```
    pub fn runtime(&self) -> Result<tokio::runtime::Runtime, String> {
        let threads = match self.worker_threads {
            Some(n) => Some(n.get()),
            None => match std::env::var("TOKIO_WORKER_THREADS") {
                Ok(text) => Some(
                    text.trim()
                        .parse::<std::num::NonZeroUsize>()
                        .map_err(|e| format!("TOKIO_WORKER_THREADS={text:?}: {e}"))?
                        .get(),
                ),
                Err(_) => None,
            },
        };
        let mut builder = match threads {
            Some(1) => tokio::runtime::Builder::new_current_thread(),
            Some(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
            None => tokio::runtime::Builder::new_multi_thread(),
        };
        builder
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
    }
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
    ExtAuthz(ExtAuthzArgs),
    /// Run the bundled OAuth 2.1 authorization server for local development
    /// (both flows, discovery, JWKS). Plain HTTP, in memory: not for production.
    AuthzServer(authz::AuthzServerArgs),
}

/// The arguments of `bearer-guard gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// The TOML configuration (`gateway.toml`). `SIGHUP` reloads it.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Also reload the configuration when the file changes, checked every
    /// SECONDS (default 2; fractions allowed). A change is read once the file
    /// has stayed the same for one check.
    #[arg(
        long,
        value_name = "SECONDS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = watch_interval
    )]
    pub watch: Option<std::time::Duration>,
}

/// The arguments of `bearer-guard ext-authz`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtAuthzArgs {
    /// The TOML configuration (`ext-authz.toml`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// `--watch`'s interval: a positive, finite number of seconds, checked as the
/// configuration's `*_secs` keys are.
fn watch_interval(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    crate::gateway::seconds_or("--watch", Some(secs), std::time::Duration::ZERO)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;

    fn watch(args: &[&str]) -> Result<Option<Duration>, clap::Error> {
        let argv = ["bearer-guard", "gateway", "--config", "g.toml"];
        let cli = Cli::try_parse_from(argv.iter().chain(args))?;
        match cli.command {
            Command::Gateway(args) => Ok(args.watch),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn watch_takes_an_optional_positive_interval() {
        assert_eq!(watch(&[]).expect("parses"), None);
        assert_eq!(
            watch(&["--watch"]).expect("parses"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watch(&["--watch=0.25"]).expect("parses"),
            Some(Duration::from_millis(250))
        );
        for bad in [
            "--watch=0",
            "--watch=-1",
            "--watch=NaN",
            "--watch=inf",
            "--watch=soon",
        ] {
            assert!(watch(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn ext_authz_has_no_watch() {
        let argv = ["bearer-guard", "ext-authz", "--config", "e.toml", "--watch"];
        assert!(Cli::try_parse_from(argv).is_err());
    }
}
