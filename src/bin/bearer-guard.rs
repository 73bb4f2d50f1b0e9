//! `bearer-guard`: thin entry point; see `bearer_guard::cli`.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use bearer_guard::cli::{Cli, Command, verify};
use bearer_guard::gateway::{Gateway, GatewayConfig, shutdown_signal};
use clap::Parser as _;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `verify` prints its verdict on stdout; keep stderr quiet unless asked.
    let quiet = matches!(cli.command, Command::Verify(_));
    init_logging(if quiet {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    });
    match cli.command {
        Command::Verify(args) => run_verify(args).await,
        Command::Gateway(args) => run_gateway(args).await,
        Command::ExtAuthz(args) => run_ext_authz(args).await,
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

async fn run_gateway(args: bearer_guard::cli::GatewayArgs) -> ExitCode {
    let config = match GatewayConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return usage(&e),
    };
    let gateway = match Gateway::from_config(config) {
        Ok(gateway) => gateway,
        Err(e) => return usage(&e.in_file(&args.config)),
    };
    // The process-wide recorder belongs to the binary, never to library code.
    let gateway = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => gateway.with_metrics(handle),
        Err(e) => {
            eprintln!("bearer-guard: metrics disabled: {e}");
            gateway
        }
    };
    eprintln!(
        "bearer-guard gateway: listening on {}{}",
        gateway.listen_addr(),
        gateway
            .admin_addr()
            .map(|a| format!(", admin endpoints on {a}"))
            .unwrap_or_default()
    );
    match gateway.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bearer-guard gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_ext_authz(args: bearer_guard::cli::GatewayArgs) -> ExitCode {
    use bearer_guard::ext_authz::{ExtAuthz, ExtAuthzConfig};
    let config = match ExtAuthzConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return usage(&e),
    };
    let service = match ExtAuthz::from_config(config) {
        Ok(service) => service,
        Err(e) => return usage(&e.in_file(&args.config)),
    };
    let service = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => service.with_metrics(handle),
        Err(e) => {
            eprintln!("bearer-guard: metrics disabled: {e}");
            service
        }
    };
    match service.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bearer-guard ext-authz: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at the level named by `BEARER_GUARD_LOG` (error, warn, info,
/// debug, trace; default `default`). Tokens never reach the logs: the library
/// records issuer, kid, subject and the reason, not the credentials.
fn init_logging(default: tracing::Level) {
    let level = std::env::var("BEARER_GUARD_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(default);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("bearer-guard: {e}");
    ExitCode::from(2)
}
