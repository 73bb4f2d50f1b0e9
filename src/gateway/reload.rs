//! Reloading a running gateway's configuration ([`Reloader`]; the binary reloads
//! on `SIGHUP`, and on a change of the file with `--watch`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{Gateway, GatewayConfig, Live, Shared};
use crate::GuardBuilder;
use crate::decision::ConfigError;

/// Swaps a serving gateway's configuration ([`BoundGateway::reloader`](super::BoundGateway::reloader)).
/// Cheap to clone; reloads from several tasks are applied one at a time.
///
/// A new configuration is checked completely, exactly as
/// [`Gateway::from_config`] checks one, and only then swapped in whole
/// (atomically: every request is answered by the old or the new one, never a
/// mix). Requests in flight finish on the configuration they started with. A
/// refused configuration changes nothing.
///
/// When `[[issuer]]`, `realm` and `allow_insecure_http` are unchanged, the running
/// [`Guard`](crate::Guard) is kept, with its key stores, its verified-token cache and its
/// refresh schedule: a reload that changes routes, claim headers or the upstream
/// fetches nothing. Otherwise a new guard is built and starts loading its keys.
///
/// Some settings belong to the listening sockets and keep their running values
/// until a restart (each change is logged as a warning and named in
/// [`Reloaded::needs_restart`]): `listen`, `admin_listen`, `shutdown_timeout_secs`
/// and the connection-level limits (`limits.header_read_timeout_secs`,
/// `idle_timeout_secs`, `max_connections`, `max_header_bytes`).
///
/// ```
/// use bearer_guard::gateway::{Gateway, GatewayConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let toml = |upstream: &str| format!(r#"
///     listen = "127.0.0.1:0"
///     upstream = "{upstream}"
///     [[issuer]]
///     issuer = "https://login.example.com"
///     audiences = ["https://api.example.com"]
///     [[route]]
///     path = "/"
/// "#);
/// let gateway = Gateway::from_config(GatewayConfig::from_toml(&toml("http://127.0.0.1:9000"))?)?;
/// let bound = gateway.bind().await?;
/// let reloader = bound.reloader();
///
/// // Same issuers: the guard, its keys and caches are kept.
/// let reloaded = reloader.reload(GatewayConfig::from_toml(&toml("http://127.0.0.1:9001"))?)?;
/// assert!(reloaded.guard_kept());
/// assert_eq!(reloader.current().listen_addr(), gateway.listen_addr());
///
/// // A configuration the gateway refuses changes nothing.
/// let error = reloader.reload(GatewayConfig::from_toml(&toml("ftp://x"))?).unwrap_err();
/// assert_eq!(error.key(), Some("upstream"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Reloader {
    live: Live,
    one_at_a_time: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("current", &self.current())
            .finish()
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    guard_kept: bool,
    needs_restart: Vec<&'static str>,
}

impl Reloaded {
    /// The running guard (its keys and caches) was kept: the issuers did not change.
    pub fn guard_kept(&self) -> bool {
        self.guard_kept
    }

    /// The changed settings that keep their running values until a restart.
    pub fn needs_restart(&self) -> &[&'static str] {
        &self.needs_restart
    }
}

impl Reloader {
    pub(super) fn new(live: Live) -> Reloader {
        Reloader {
            live,
            one_at_a_time: Arc::new(Mutex::new(())),
        }
    }

    /// The configuration requests are answered with now.
    pub fn current(&self) -> Gateway {
        Gateway {
            shared: self.live.load_full(),
        }
    }

    /// Checks `config` and swaps it in (see [`Reloader`]). When the
    /// issuers changed, the new guard is built like [`Gateway::from_config`]'s.
    pub fn reload(&self, config: GatewayConfig) -> Result<Reloaded, ConfigError> {
        self.reload_with(config, |builder| builder)
    }

    /// [`reload`](Self::reload), with a new guard's builder adjusted by
    /// `configure` (as [`Gateway::from_config_with`]); unused when the guard is kept.
    pub fn reload_with(
        &self,
        config: GatewayConfig,
        configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
    ) -> Result<Reloaded, ConfigError> {
        let _one = self
            .one_at_a_time
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.live.load_full();
        let mut guard_kept = false;
        let mut new = Gateway::assemble(config, |guard_config| {
            if *guard_config == old.guard_config {
                guard_kept = true;
                Ok(old.decider.guard().clone())
            } else {
                guard_config.build(configure)
            }
        })?;
        let needs_restart = keep_listener_settings(&mut new, &old);
        for key in &needs_restart {
            tracing::warn!(
                key,
                "changed on reload but applies only from the next start; the running value is kept"
            );
        }
        new.metrics = old.metrics.clone();
        if !guard_kept && tokio::runtime::Handle::try_current().is_ok() {
            super::load_keys_in_background(new.decider.guard());
        }
        self.live.store(Arc::new(new));
        tracing::info!(guard_kept, "configuration reloaded");
        Ok(Reloaded {
            guard_kept,
            needs_restart,
        })
    }
}

impl Reloader {
    /// Reloads `path` on every `SIGHUP` (Unix): the returned future, to spawn,
    /// runs until the process ends. The signal handler is installed before this
    /// returns, so from then on a `SIGHUP` never terminates the process. A file
    /// that cannot be read, parsed or accepted is logged (error, with the file,
    /// the key and the problem) and the running configuration kept.
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    pub fn on_hangup(
        self,
        path: std::path::PathBuf,
    ) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        Ok(async move {
            while hangups.recv().await.is_some() {
                tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
                self.reload_file(&path);
            }
        })
    }

    /// Reloads `path` whenever it changes: the returned future, to spawn, checks
    /// the file's modification time and size every `interval` (at least 1 ms)
    /// until dropped. A change is applied once the file has stayed the same for
    /// one whole interval, so a file caught half-written is not read; an editor's
    /// atomic rename and a Kubernetes ConfigMap's symlink swap are changes like
    /// any other. The file as it is when this is called counts as applied. A file
    /// that cannot be read, parsed or accepted is logged as
    /// [`on_hangup`](Self::on_hangup) logs it, once per change, and the running
    /// configuration kept; a removed file is such a file.
    ///
    /// ```no_run
    /// # async fn run(bound: bearer_guard::gateway::BoundGateway) {
    /// use std::time::Duration;
    /// let watching = bound.reloader().on_file_change("gateway.toml".into(), Duration::from_secs(2));
    /// tokio::spawn(watching);
    /// # }
    /// ```
    pub fn on_file_change(
        self,
        path: std::path::PathBuf,
        interval: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut settle = Settle::new(file_stamp(&path));
        let interval = interval.max(Duration::from_millis(1));
        async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if settle.observe(file_stamp(&path)) {
                    tracing::info!(file = %path.display(), "file changed: reloading the configuration");
                    self.reload_file(&path);
                }
            }
        }
    }

    /// Loads `path` and swaps it in; a refusal is logged, never returned.
    fn reload_file(&self, path: &Path) {
        let reloaded = GatewayConfig::load(path)
            .and_then(|config| self.reload(config).map_err(|e| e.in_file(path)));
        if let Err(e) = reloaded {
            tracing::error!(error = %e, "reload refused; the running configuration is kept");
        }
    }
}

/// What a file watcher compares: the modification time and size, `None` when
/// the file's metadata cannot be read (removed, no permission).
pub(super) type FileStamp = Option<(Option<SystemTime>, u64)>;

/// The stamp of `path` now (its target, for a symbolic link).
pub(super) fn file_stamp(path: &Path) -> FileStamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

/// When a watched file's change is read: once the new stamp has been seen at
/// two checks in a row (a writer that takes longer than one interval keeps
/// changing it). Each change is read once, whether it is then accepted or not.
#[derive(Debug)]
struct Settle {
    applied: FileStamp,
    pending: Option<FileStamp>,
}

impl Settle {
    fn new(applied: FileStamp) -> Settle {
        Settle {
            applied,
            pending: None,
        }
    }

    /// The stamp seen at this check; `true`: read the file now.
    fn observe(&mut self, now: FileStamp) -> bool {
        if now == self.applied {
            self.pending = None;
            return false;
        }
        if self.pending == Some(now) {
            self.applied = now;
            self.pending = None;
            return true;
        }
        self.pending = Some(now);
        false
    }
}

/// Puts the running listener settings into `new`; returns the keys that differed.
fn keep_listener_settings(new: &mut Shared, old: &Shared) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.listen != old.listen {
        changed.push("listen");
    }
    if new.admin_listen != old.admin_listen {
        changed.push("admin_listen");
    }
    if new.shutdown_timeout != old.shutdown_timeout {
        changed.push("shutdown_timeout_secs");
    }
    let (n, o) = (&new.conn_limits, &old.conn_limits);
    if n.header_read_timeout != o.header_read_timeout {
        changed.push("limits.header_read_timeout_secs");
    }
    if n.idle_timeout != o.idle_timeout {
        changed.push("limits.idle_timeout_secs");
    }
    if n.max_connections != o.max_connections {
        changed.push("limits.max_connections");
    }
    if n.max_header_bytes != o.max_header_bytes {
        changed.push("limits.max_header_bytes");
    }
    new.listen = old.listen;
    new.admin_listen = old.admin_listen;
    new.shutdown_timeout = old.shutdown_timeout;
    new.conn_limits = old.conn_limits.clone();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, len: u64) -> FileStamp {
        Some((
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
            len,
        ))
    }

    #[test]
    fn a_change_is_read_once_it_has_held_for_a_check() {
        let mut settle = Settle::new(at(1, 10));
        assert!(!settle.observe(at(1, 10)), "unchanged");
        assert!(!settle.observe(at(2, 4)), "seen once: maybe half-written");
        assert!(!settle.observe(at(2, 9)), "still growing");
        assert!(settle.observe(at(2, 9)), "held for a check");
        assert!(!settle.observe(at(2, 9)), "read once");
        assert!(!settle.observe(at(2, 9)));
    }

    #[test]
    fn a_change_undone_before_it_settled_is_not_read() {
        let mut settle = Settle::new(at(1, 10));
        assert!(!settle.observe(at(2, 10)));
        assert!(!settle.observe(at(1, 10)), "back to the applied file");
        assert!(!settle.observe(at(1, 10)));
    }

    #[test]
    fn a_removed_file_is_read_once_and_its_return_again() {
        let mut settle = Settle::new(at(1, 10));
        assert!(!settle.observe(None));
        assert!(settle.observe(None), "refused once, when read");
        assert!(!settle.observe(None), "not again while it stays away");
        assert!(!settle.observe(at(3, 10)));
        assert!(settle.observe(at(3, 10)), "back: read");
    }

    #[test]
    fn the_stamp_follows_the_file() {
        let dir = std::env::temp_dir().join(format!("bg-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("gateway.toml");
        assert_eq!(file_stamp(&path), None, "absent");
        std::fs::write(&path, "a = 1").expect("write");
        let first = file_stamp(&path);
        assert_eq!(first.map(|s| s.1), Some(5));
        std::fs::write(&path, "a = 12").expect("write");
        assert_ne!(file_stamp(&path), first, "size changed");
        let _ = std::fs::remove_dir_all(dir);
    }
}
