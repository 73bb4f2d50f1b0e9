//! When keys are (re)fetched.
//!
//! - **TTL** from the response's `Cache-Control: max-age` (or `Expires`), clamped
//!   to `[min_ttl, max_ttl]`; `default_ttl` when neither is sent.
//! - **Refresh-ahead**: once 80% of the TTL has passed, the next request starts one
//!   background refresh and goes on with the current keys; requests never wait.
//! - **Unknown `kid`**: one forced refresh, at most once per `kid_miss_cooldown`;
//!   every request that misses while it runs waits for that same fetch, and one
//!   that misses after it ended reads the keys it installed.
//! - **Last-known-good**: a failed refresh keeps the current keys, for up to
//!   `max_staleness` past their TTL. Failures are logged once per streak, and a new
//!   attempt waits `retry_interval` so a down issuer is not hammered.
//! - **No keys yet**: the request waits for the first fetch; if it fails, the answer
//!   is 503 with `Retry-After` (the token may well be valid).
//!
//! One fetch is in flight at a time per key source; it runs as its own task, so a
//! client that disconnects does not cancel it. The read path is an atomic load.

use crate::sync::lock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use reqwest::Url;

use super::discovery;
use super::fetch::{self, FetchLimits, Fetched};
use super::{KeySet, VerifyingKey};
use crate::clock::{SharedClock, saturating_millis};
use crate::error::AuthError;
use crate::jws::AlgorithmSet;

/// The refresh policy of a key store.
#[derive(Debug, Clone)]
pub(crate) struct RefreshPolicy {
    pub default_ttl: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub kid_miss_cooldown: Duration,
    pub max_staleness: Duration,
    pub retry_interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            default_ttl: Duration::from_secs(600),
            min_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(24 * 3600),
            kid_miss_cooldown: Duration::from_secs(30),
            max_staleness: Duration::from_secs(24 * 3600),
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// Where a store's keys come from.
pub(crate) enum KeySource {
    Jwks(Url),
    Discovery { issuer: String, allow_http: bool },
    Static(Arc<KeySet>),
}

/// A loaded key set and its timing, in milliseconds since the Unix epoch.
pub(crate) struct Loaded {
    pub keys: Arc<KeySet>,
    pub fetched_at: u64,
    pub refresh_at: u64,
    pub expires_at: u64,
}

type FetchResult = Result<Arc<Loaded>, Arc<str>>;
type SharedFetch = Shared<BoxFuture<'static, FetchResult>>;

const NEVER: u64 = u64::MAX;

/// What a key store has been doing, for health endpoints and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyStoreStatus {
    /// The issuer this store serves.
    pub issuer: String,
    /// The `kid`s of the usable keys (`None` for keys without one).
    pub kids: Vec<Option<String>>,
    /// When the current keys were fetched.
    pub fetched_at: Option<SystemTime>,
    /// When a background refresh will start.
    pub refresh_at: Option<SystemTime>,
    /// When the keys expire (they stay usable for `max_staleness` past this).
    pub expires_at: Option<SystemTime>,
    /// The error of the last failed attempt, if the last attempt failed.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Fetch attempts so far.
    pub fetches: u64,
}

impl KeyStoreStatus {
    /// Whether keys are loaded (fresh or last-known-good).
    pub fn ready(&self) -> bool {
        self.fetched_at.is_some()
    }
}

#[derive(Default)]
struct Health {
    last_error: Option<Arc<str>>,
    consecutive_failures: u32,
    fetches: u64,
}

/// What every key store of a guard shares: how to fetch, when, and the clock.
pub(crate) struct FetchContext {
    pub client: reqwest::Client,
    pub clock: SharedClock,
    pub policy: RefreshPolicy,
    pub limits: FetchLimits,
}

/// The keys of one key source, refreshed by policy.
pub(crate) struct KeyStore {
    label: Arc<str>,
    source: KeySource,
    context: Arc<FetchContext>,
    algorithms: AlgorithmSet,
    current: ArcSwapOption<Loaded>,
    inflight: Mutex<Option<SharedFetch>>,
    /// Whether `inflight` holds a fetch: a lock-free hint for the read path.
    fetching: AtomicBool,
    /// When the last unknown-`kid` refresh was started (`NEVER` before the first).
    last_forced: AtomicU64,
    /// After a failure, no new attempt (other than a forced one) before this.
    next_attempt: AtomicU64,
    discovered: Mutex<Option<Url>>,
    health: Mutex<Health>,
}

impl KeyStore {
    pub(crate) fn new(
        label: &str,
        source: KeySource,
        context: Arc<FetchContext>,
        algorithms: AlgorithmSet,
    ) -> Self {
        let current = match &source {
            KeySource::Static(keys) => Some(Arc::new(Loaded {
                keys: Arc::clone(keys),
                fetched_at: 0,
                refresh_at: NEVER,
                expires_at: NEVER,
            })),
            _ => None,
        };
        KeyStore {
            label: label.into(),
            source,
            context,
            algorithms,
            current: ArcSwapOption::new(current),
            inflight: Mutex::new(None),
            fetching: AtomicBool::new(false),
            last_forced: AtomicU64::new(NEVER),
            next_attempt: AtomicU64::new(0),
            discovered: Mutex::new(None),
            health: Mutex::new(Health::default()),
        }
    }

    fn now(&self) -> u64 {
        self.context
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, saturating_millis)
    }

    /// The current keys when they may be used without waiting (loaded, and not
    /// older than the staleness limit), starting a background refresh when one is
    /// due. `None` when a request would have to wait for a fetch.
    pub(crate) fn keys_now(self: &Arc<Self>) -> Option<Arc<Loaded>> {
        self.keys_at(self.now())
    }

    /// [`keys_now`](Self::keys_now) at `now` (milliseconds since the epoch),
    /// read from the guard's clock (the store's) by the caller.
    pub(crate) fn keys_at(self: &Arc<Self>, now: u64) -> Option<Arc<Loaded>> {
        let loaded = self.current.load_full()?;
        let stale_limit = loaded
            .expires_at
            .saturating_add(saturating_millis(self.context.policy.max_staleness));
        if now >= stale_limit {
            return None;
        }
        // Refresh-ahead: fire and forget; this request keeps the current keys.
        // Two atomic loads keep the many requests that arrive while a fetch
        // runs, or during the retry back-off, off the mutex.
        if now >= loaded.refresh_at
            && !self.fetching.load(Ordering::Acquire)
            && now >= self.next_attempt.load(Ordering::Acquire)
        {
            drop(self.start_or_join(true));
        }
        Some(loaded)
    }

    /// The keys to verify with now. Waits only when there are none (or they are
    /// older than the staleness limit); otherwise may start a background refresh.
    pub(crate) async fn keys(self: &Arc<Self>) -> Result<Arc<Loaded>, AuthError> {
        if let Some(loaded) = self.keys_now() {
            return Ok(loaded);
        }
        match self.start_or_join(true) {
            Some(fetch) => fetch.await.map_err(|e| self.unavailable(&e)),
            None => Err(self.unavailable(
                lock(&self.health)
                    .last_error
                    .as_deref()
                    .unwrap_or("keys are not loaded"),
            )),
        }
    }

    /// Called when the token's `kid` is not in the current keys: refreshes at most
    /// once per cooldown, shared with every other miss in the meantime. Otherwise
    /// the keys as they are now, which a fetch that ended since the caller read
    /// them may have changed. `None` when a refresh ran and failed (or there are
    /// no keys).
    ///
    /// The cooldown is checked, the fetch started and published under the
    /// in-flight lock, so a concurrent miss either joins that fetch or sees the
    /// keys it installed; never "no fetch yet" in between.
    pub(crate) async fn keys_after_kid_miss(self: &Arc<Self>) -> Option<Arc<Loaded>> {
        if matches!(self.source, KeySource::Static(_)) {
            return None;
        }
        let fetch = {
            let mut slot = lock(&self.inflight);
            match slot.as_ref() {
                Some(fetch) => Some(fetch.clone()),
                None => {
                    let now = self.now();
                    let last = self.last_forced.load(Ordering::Acquire);
                    let cooldown = saturating_millis(self.context.policy.kid_miss_cooldown);
                    if last == NEVER || now.saturating_sub(last) >= cooldown {
                        self.last_forced.store(now, Ordering::Release);
                        Some(self.spawn_fetch(&mut slot))
                    } else {
                        None
                    }
                }
            }
        };
        match fetch {
            Some(fetch) => fetch.await.ok(),
            None => self.current.load_full(),
        }
    }

    /// Fetches now, whatever the policy says (for `Guard::prefetch`).
    pub(crate) async fn load(self: &Arc<Self>) -> Result<Arc<Loaded>, AuthError> {
        if let Some(loaded) = self.current.load_full()
            && matches!(self.source, KeySource::Static(_))
        {
            return Ok(loaded);
        }
        match self.start_or_join(false) {
            Some(fetch) => fetch.await.map_err(|e| self.unavailable(&e)),
            None => Err(self.unavailable("keys are not loaded")),
        }
    }

    fn unavailable(&self, reason: &str) -> AuthError {
        let now = self.now();
        let next = self.next_attempt.load(Ordering::Acquire);
        let retry_after = if next > now {
            Duration::from_millis(next - now)
        } else {
            self.context.policy.retry_interval
        };
        AuthError::KeysUnavailable {
            issuer: self.label.to_string(),
            reason: reason.to_owned(),
            retry_after: retry_after.max(Duration::from_secs(1)),
        }
    }

    /// The in-flight fetch, or a new one. With `respect_backoff`, no new fetch starts
    /// within `retry_interval` of a failure.
    fn start_or_join(self: &Arc<Self>, respect_backoff: bool) -> Option<SharedFetch> {
        if let KeySource::Static(_) = self.source {
            let loaded = self.current.load_full()?;
            return Some(futures_util::future::ready(Ok(loaded)).boxed().shared());
        }
        let mut slot = lock(&self.inflight);
        if let Some(fetch) = slot.as_ref() {
            return Some(fetch.clone());
        }
        if respect_backoff && self.now() < self.next_attempt.load(Ordering::Acquire) {
            return None;
        }
        Some(self.spawn_fetch(&mut slot))
    }

    /// Starts a fetch and publishes it in `slot`, the held in-flight lock.
    fn spawn_fetch(
        self: &Arc<Self>,
        slot: &mut MutexGuard<'_, Option<SharedFetch>>,
    ) -> SharedFetch {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.fetch_and_install().await });
        let fetch = task
            .map(|joined| {
                joined.unwrap_or_else(|e| Err(format!("key fetch task failed: {e}").into()))
            })
            .boxed()
            .shared();
        **slot = Some(fetch.clone());
        self.fetching.store(true, Ordering::Release);
        fetch
    }

    async fn fetch_and_install(&self) -> FetchResult {
        let result = self.fetch_keys().await;
        let now = self.now();
        let outcome = {
            let mut health = lock(&self.health);
            health.fetches += 1;
            match result {
                Ok((mut keys, ttl)) => {
                    if let Some(previous) = self.current.load().as_deref() {
                        keys.keep_unchanged(&previous.keys);
                    }
                    let ttl = saturating_millis(ttl);
                    let loaded = Arc::new(Loaded {
                        keys: Arc::new(keys),
                        fetched_at: now,
                        refresh_at: now.saturating_add(ttl - ttl / 5),
                        expires_at: now.saturating_add(ttl),
                    });
                    let previous = self.current.swap(Some(Arc::clone(&loaded)));
                    log_changes(&self.label, previous.as_deref(), &loaded);
                    if health.consecutive_failures > 0 {
                        tracing::info!(
                            issuer = %self.label,
                            failures = health.consecutive_failures,
                            "JWKS fetch recovered"
                        );
                    }
                    health.consecutive_failures = 0;
                    health.last_error = None;
                    self.next_attempt.store(0, Ordering::Release);
                    crate::metrics::jwks_fetch(&self.label, true, loaded.keys.len());
                    Ok(loaded)
                }
                Err(error) => {
                    let has_keys = self.current.load().is_some();
                    if health.consecutive_failures == 0 {
                        tracing::warn!(
                            issuer = %self.label,
                            %error,
                            keeping_last_known_good = has_keys,
                            "JWKS fetch failed"
                        );
                    } else {
                        tracing::debug!(issuer = %self.label, %error, "JWKS fetch failed again");
                    }
                    health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                    health.last_error = Some(Arc::clone(&error));
                    self.next_attempt.store(
                        now.saturating_add(saturating_millis(self.context.policy.retry_interval)),
                        Ordering::Release,
                    );
                    *lock(&self.discovered) = None;
                    crate::metrics::jwks_fetch(&self.label, false, 0);
                    Err(error)
                }
            }
        };
        let mut slot = lock(&self.inflight);
        *slot = None;
        self.fetching.store(false, Ordering::Release);
        drop(slot);
        outcome
    }

    async fn fetch_keys(&self) -> Result<(KeySet, Duration), Arc<str>> {
        let url = match &self.source {
            KeySource::Jwks(url) => url.clone(),
            KeySource::Discovery { issuer, allow_http } => {
                let known = lock(&self.discovered).clone();
                match known {
                    Some(url) => url,
                    None => {
                        let url = discovery::discover(
                            &self.context.client,
                            issuer,
                            &self.context.limits,
                            *allow_http,
                        )
                        .await?;
                        *lock(&self.discovered) = Some(url.clone());
                        url
                    }
                }
            }
            KeySource::Static(_) => return Err("static key sets are never fetched".into()),
        };
        let fetched = fetch::get(&self.context.client, &url, &self.context.limits)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let keys = KeySet::from_jwks(&fetched.body, self.algorithms, self.context.limits.max_keys)
            .map_err(|e| format!("GET {url}: {e}"))?;
        Ok((keys, self.ttl(&fetched)))
    }

    fn ttl(&self, fetched: &Fetched) -> Duration {
        let p = &self.context.policy;
        let advertised = fetched.max_age.or_else(|| {
            fetched.expires.map(|e| {
                e.duration_since(self.context.clock.now())
                    .unwrap_or_default()
            })
        });
        advertised
            .unwrap_or(p.default_ttl)
            .clamp(p.min_ttl, p.max_ttl.max(p.min_ttl))
    }

    pub(crate) fn status(&self) -> KeyStoreStatus {
        let at = |ms: u64| (ms != NEVER).then(|| UNIX_EPOCH + Duration::from_millis(ms));
        let loaded = self.current.load_full();
        let health = lock(&self.health);
        KeyStoreStatus {
            issuer: self.label.to_string(),
            kids: loaded.as_ref().map_or_else(Vec::new, |l| {
                l.keys.kids().map(|k| k.map(str::to_owned)).collect()
            }),
            fetched_at: loaded
                .as_ref()
                .map(|l| UNIX_EPOCH + Duration::from_millis(l.fetched_at)),
            refresh_at: loaded.as_ref().and_then(|l| at(l.refresh_at)),
            expires_at: loaded.as_ref().and_then(|l| at(l.expires_at)),
            last_error: health.last_error.as_deref().map(str::to_owned),
            consecutive_failures: health.consecutive_failures,
            fetches: health.fetches,
        }
    }
}

fn log_changes(label: &str, previous: Option<&Loaded>, now: &Loaded) {
    fn kids<'a>(keys: impl Iterator<Item = &'a VerifyingKey>) -> Vec<&'a str> {
        keys.map(|k| k.kid().unwrap_or("<no kid>")).collect()
    }
    match previous {
        None => {
            let kids: Vec<_> = now.keys.kids().map(|k| k.unwrap_or("<no kid>")).collect();
            tracing::info!(issuer = label, ?kids, "JWKS loaded");
        }
        Some(prev) => {
            // By identity: a key republished unchanged is neither; a key whose
            // material changed under the same kid is both.
            let added = kids(now.keys.not_in(&prev.keys));
            let removed = kids(prev.keys.not_in(&now.keys));
            if added.is_empty() && removed.is_empty() {
                tracing::debug!(issuer = label, "JWKS refreshed, unchanged");
            } else {
                tracing::info!(issuer = label, ?added, ?removed, "JWKS keys changed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn store(clock: &ManualClock) -> KeyStore {
        let context = FetchContext {
            client: reqwest::Client::new(),
            clock: Arc::new(clock.clone()),
            policy: RefreshPolicy::default(),
            limits: FetchLimits::default(),
        };
        KeyStore::new(
            "https://a",
            KeySource::Jwks(Url::parse("https://a/jwks").expect("url")),
            Arc::new(context),
            AlgorithmSet::default(),
        )
    }

    fn fetched(max_age: Option<u64>, expires: Option<SystemTime>) -> Fetched {
        Fetched {
            body: Vec::new(),
            max_age: max_age.map(Duration::from_secs),
            expires,
        }
    }

    /// The state the race of issue #10 point 8 left a request in: another
    /// request has won the cooldown, and its fetch has not published itself yet
    /// or has already installed new keys and left the slot. The request must
    /// read the keys installed, not answer "unknown kid" from the ones it had.
    #[tokio::test]
    async fn a_kid_miss_that_finds_no_fetch_to_join_reads_the_keys_installed_meanwhile() {
        let clock = ManualClock::at_unix(1_700_000_000);
        let s = Arc::new(store(&clock));
        let algorithms = [crate::jws::Algorithm::HS256].into_iter().collect();
        let installed = Arc::new(Loaded {
            keys: Arc::new(KeySet::from_secret(&[7; 32], algorithms)),
            fetched_at: s.now(),
            refresh_at: NEVER,
            expires_at: NEVER,
        });
        s.current.store(Some(Arc::clone(&installed)));
        s.last_forced.store(s.now(), Ordering::Release);
        let seen = s
            .keys_after_kid_miss()
            .await
            .expect("the keys the other request's fetch installed");
        assert!(Arc::ptr_eq(&seen, &installed));
        assert!(
            lock(&s.inflight).is_none(),
            "no second fetch within the cooldown"
        );
    }

    #[test]
    fn ttl_from_max_age_then_expires_then_default_clamped() {
        let clock = ManualClock::at_unix(1_700_000_000);
        let s = store(&clock);
        let in_an_hour = clock.now() + Duration::from_secs(3600);
        assert_eq!(
            s.ttl(&fetched(Some(900), Some(in_an_hour))),
            Duration::from_secs(900)
        );
        assert_eq!(
            s.ttl(&fetched(None, Some(in_an_hour))),
            Duration::from_secs(3600)
        );
        assert_eq!(s.ttl(&fetched(None, None)), Duration::from_secs(600));
        // no-store/no-cache (max-age 0) and an Expires in the past: the minimum.
        assert_eq!(s.ttl(&fetched(Some(0), None)), Duration::from_secs(300));
        let past = clock.now() - Duration::from_secs(10);
        assert_eq!(s.ttl(&fetched(None, Some(past))), Duration::from_secs(300));
        assert_eq!(
            s.ttl(&fetched(Some(10 * 86_400), None)),
            Duration::from_secs(86_400)
        );
    }
}
