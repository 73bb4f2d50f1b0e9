//! The binary's logs: on stderr, filtered like `RUST_LOG`, as text or JSON.
//!
//! The filter is read from `BEARER_GUARD_LOG`, else `RUST_LOG`, else the
//! subcommand's default (`warn` for `verify`, whose verdict is on stdout; `info`
//! for the servers). It takes tracing-subscriber's `EnvFilter` directives: a
//! level (`debug`), or targets with levels (`bearer_guard=debug,hyper=warn`,
//! `bearer_guard::access=off` to silence the gateway's access log). A filter that
//! does not parse is a usage error (exit status 2), not silently ignored.
//!
//! `--log-format json` writes one JSON object per line: `timestamp`, `level`,
//! `target`, `message` and the event's fields at the top level (the gateway's
//! access log: `request_id`, `peer`, `route`, `status`, `outcome`...). Tokens
//! and secrets never reach the logs.

use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The filter of the environment (`BEARER_GUARD_LOG`, else `RUST_LOG`), or
/// `default` when neither is set. The error names the variable and the problem.
///
/// ```
/// use bearer_guard::cli::logging::filter_from;
///
/// let f = filter_from(Some(("RUST_LOG", "bearer_guard=debug,hyper=warn")), "info")?;
/// assert!(f.to_string().contains("bearer_guard=debug"));
/// assert!(filter_from(Some(("RUST_LOG", "bearer_guard=loud")), "info").is_err());
/// assert_eq!(filter_from(None, "warn")?.to_string(), "warn");
/// # Ok::<(), String>(())
/// ```
pub fn filter_from(set: Option<(&str, &str)>, default: &str) -> Result<EnvFilter, String> {
    let (name, directives) = set.unwrap_or(("the default filter", default));
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| format!("{name}={directives:?} is not a log filter: {e}"))
}

/// Installs the process's logger: stderr, `format`, the environment's filter or
/// `default`.
pub fn init(format: LogFormat, default: &str) -> Result<(), String> {
    let var = ["BEARER_GUARD_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().map(|value| (name, value)));
    let filter = filter_from(var.as_ref().map(|(n, v)| (*n, v.as_str())), default)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}
