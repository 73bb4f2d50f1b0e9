//! `bearer-guard`: thin entry point; see `bearer_guard::cli`.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use bearer_guard::cli::{Cli, Command, verify};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(args) => run_verify(args).await,
        Command::Gateway(args) => run_gateway(args).await,
    }
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

async fn run_gateway(_args: bearer_guard::cli::GatewayArgs) -> ExitCode {
    ExitCode::from(2)
}

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("bearer-guard: {e}");
    ExitCode::from(2)
}
