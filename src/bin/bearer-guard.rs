//! `bearer-guard`: thin entry point; see `bearer_guard::cli`.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use bearer_guard::cli::{Cli, Command, LogFormat, logging, verify};
use bearer_guard::gateway::{Gateway, GatewayConfig, prometheus_builder, shutdown_signal};
use clap::Parser as _;

/// mimalloc: the proxies allocate per request (headers, bodies, futures), and
/// the system allocator's free lists cost more per call (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.runtime() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => usage(&e),
    }
}

async fn run(cli: Cli) -> ExitCode {
    // `verify` prints its verdict on stdout; keep stderr quiet unless asked.
    let quiet = matches!(cli.command, Command::Verify(_));
    if let Err(e) = logging::init(cli.log_format, if quiet { "warn" } else { "info" }) {
        return usage(&e);
    }
    match cli.command {
        Command::Verify(args) => run_verify(args).await,
        Command::Gateway(args) => run_gateway(args, cli.log_format).await,
        Command::ExtAuthz(args) => run_ext_authz(args, cli.log_format).await,
        Command::AuthzServer(args) => run_authz_server(args).await,
    }
}

async fn run_authz_server(args: bearer_guard::cli::authz::AuthzServerArgs) -> ExitCode {
    use bearer_guard::cli::authz::AuthzConfig;
    let config = match &args.config {
        Some(path) => match AuthzConfig::load(path) {
            Ok(config) => config,
            Err(e) => return usage(&e),
        },
        None => AuthzConfig::demo(),
    };
    let builder = match config.builder(args.listen) {
        Ok(builder) => builder,
        Err(e) => {
            let file = args.config.as_ref().map(|p| format!("{}: ", p.display()));
            return usage(&format!("{}{e}", file.unwrap_or_default()));
        }
    };
    let server = match builder.start().await {
        Ok(server) => server,
        Err(e) => return usage(&e),
    };
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", config.banner(&server));
    let _ = out.flush();
    drop(out);
    shutdown_signal().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

async fn run_verify(args: verify::VerifyArgs) -> ExitCode {
    let token = match args.read_token(std::io::stdin().lock()) {
        Ok(token) => token,
        Err(e) => return usage(&e),
    };
    match verify::verify(&args, &token).await {
        Ok(verdict) => {
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) must not turn a verdict into a panic.
            let _ = writeln!(out, "{}", verdict.render(&token, args.json));
            ExitCode::from(verdict.exit_code())
        }
        Err(e) => usage(&e),
    }
}

async fn run_gateway(args: bearer_guard::cli::GatewayArgs, format: LogFormat) -> ExitCode {
    let config = match GatewayConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return usage(&e),
    };
    let gateway = match Gateway::from_config(config) {
        Ok(gateway) => gateway,
        Err(e) => return usage(&e.in_file(&args.config)),
    };
    // The process-wide recorder belongs to the binary, never to library code.
    let gateway = match prometheus_builder().install_recorder() {
        Ok(handle) => gateway.with_metrics(handle),
        Err(e) => {
            eprintln!("bearer-guard: metrics disabled: {e}");
            gateway
        }
    };
    let bound = match gateway.bind().await {
        Ok(bound) => bound,
        Err(e) => return usage(&e.to_string()),
    };
    // Before "listening": a SIGHUP from then on reloads, never kills.
    #[cfg(unix)]
    match bound.reloader().on_hangup(args.config.clone()) {
        Ok(reloading) => drop(tokio::spawn(reloading)),
        Err(e) => eprintln!("bearer-guard gateway: no reload on SIGHUP: {e}"),
    }
    if let Some(interval) = args.watch {
        drop(tokio::spawn(
            bound
                .reloader()
                .on_file_change(args.config.clone(), interval),
        ));
    }
    // Only once bound, with the addresses actually bound (a port 0 is resolved).
    announce(
        format,
        &format!(
            "bearer-guard gateway: listening on {}{}",
            bound.local_addr(),
            bound
                .admin_addr()
                .map(|a| format!(", admin endpoints on {a}"))
                .unwrap_or_default()
        ),
    );
    match bound.serve(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bearer-guard gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_ext_authz(args: bearer_guard::cli::ExtAuthzArgs, format: LogFormat) -> ExitCode {
    use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
    let config = match ExtAuthzConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return usage(&e),
    };
    let service = match ExtAuthz::from_config(config) {
        Ok(service) => service,
        Err(e) => return usage(&e.in_file(&args.config)),
    };
    let service = match prometheus_builder().install_recorder() {
        Ok(handle) => service.with_metrics(handle),
        Err(e) => {
            eprintln!("bearer-guard: metrics disabled: {e}");
            service
        }
    };
    let bound = match service.bind().await {
        Ok(bound) => bound,
        Err(e) => return usage(&e.to_string()),
    };
    // No reload here (yet): a SIGHUP meant as one must not stop the service.
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => drop(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::warn!(
                    "SIGHUP ignored: ext-authz does not reload; restart it to apply a new configuration"
                );
            }
        })),
        Err(e) => eprintln!("bearer-guard ext-authz: SIGHUP not handled: {e}"),
    }
    let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string());
    let listening: Vec<String> = [
        addr(bound.grpc_addr()).map(|a| format!("gRPC check on {a}")),
        addr(bound.http_addr()).map(|a| format!("HTTP check on {a}")),
        addr(bound.admin_addr()).map(|a| format!("admin endpoints on {a}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    // Only once bound, with the addresses actually bound.
    announce(
        format,
        &format!(
            "bearer-guard ext-authz: listening: {}",
            listening.join(", ")
        ),
    );
    match bound.serve(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bearer-guard ext-authz: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The "listening" line on stderr: plain text, or a log event in JSON mode so
/// every line a log collector reads is JSON.
fn announce(format: LogFormat, line: &str) {
    match format {
        LogFormat::Json => tracing::info!(target: "bearer_guard::cli", "{line}"),
        _ => eprintln!("{line}"),
    }
}

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("bearer-guard: {e}");
    ExitCode::from(2)
}
