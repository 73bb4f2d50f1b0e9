//! A replay store shared by every replica: Redis, `SET key 1 NX PX ttl`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::replay::{ReplayFuture, ReplayKey, ReplayStore, ReplayStoreError};

/// The DPoP replay window in Redis (feature `redis`), shared by all replicas
/// that use the same server: a proof seen by one is refused by every other.
///
/// Each proof is one `SET <prefix><sha256 hex> 1 NX PX <window>`: atomic, and
/// Redis expires the entry with the window. The connection is multiplexed and
/// reconnects by itself. A call that gets no answer within the timeout (default
/// 500 ms) fails, and the guard answers 503 unless told to fail open
/// ([`Dpop::fail_open_on_store_error`](super::Dpop::fail_open_on_store_error)).
///
/// ```no_run
/// use bearer_guard::sender::{Dpop, RedisReplayStore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisReplayStore::connect("redis://replay.internal:6379/").await?;
/// let dpop = Dpop::new("https://api.example.com").replay_store(store);
/// # let _ = dpop; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisReplayStore {
    client: redis::Client,
    /// Connected once, by `connect` or by the first proof of a `lazy` store;
    /// the connection manager reconnects by itself from then on.
    connection: Arc<OnceCell<ConnectionManager>>,
    prefix: String,
    timeout: Duration,
}

impl RedisReplayStore {
    /// The key prefix by default.
    pub const DEFAULT_PREFIX: &'static str = "bearer-guard:dpop:";

    /// Connects to the Redis server at `url` (`redis://host:port/db`, or
    /// `rediss://` with a TLS-enabled build of the `redis` crate) with a 500 ms
    /// timeout. Fails when the server cannot be reached now; later outages are
    /// answered per request.
    pub async fn connect(url: &str) -> Result<Self, ReplayStoreError> {
        Self::connect_with_timeout(url, Duration::from_millis(500)).await
    }

    /// [`connect`](Self::connect) with another timeout for connecting and for
    /// each answer.
    pub async fn connect_with_timeout(
        url: &str,
        timeout: Duration,
    ) -> Result<Self, ReplayStoreError> {
        let store = Self::lazy_with_timeout(url, timeout)?;
        store.connection().await?;
        Ok(store)
    }

    /// A store for the Redis server at `url` that connects on its first proof,
    /// not now (for configurations built before a runtime runs, and services
    /// that must start while Redis is down: each proof is then answered 503
    /// until Redis is back). Fails only for a URL that is not a Redis URL.
    ///
    /// ```
    /// use bearer_guard::sender::RedisReplayStore;
    ///
    /// assert!(RedisReplayStore::lazy("redis://127.0.0.1:6379/").is_ok());
    /// assert!(RedisReplayStore::lazy("http://127.0.0.1:6379/").is_err());
    /// ```
    pub fn lazy(url: &str) -> Result<Self, ReplayStoreError> {
        Self::lazy_with_timeout(url, Duration::from_millis(500))
    }

    /// [`lazy`](Self::lazy) with another timeout for connecting and for each
    /// answer.
    pub fn lazy_with_timeout(url: &str, timeout: Duration) -> Result<Self, ReplayStoreError> {
        let client =
            redis::Client::open(url).map_err(|e| ReplayStoreError::Unavailable(e.to_string()))?;
        Ok(RedisReplayStore {
            client,
            connection: Arc::new(OnceCell::new()),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            timeout,
        })
    }

    /// The connection, made now if there is none yet (concurrent callers share
    /// one attempt; a failed attempt is retried by the next caller).
    async fn connection(&self) -> Result<ConnectionManager, ReplayStoreError> {
        let connect = || async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1);
            let manager = ConnectionManager::new_with_config(self.client.clone(), config);
            tokio::time::timeout(self.timeout, manager)
                .await
                .map_err(|_| ReplayStoreError::Unavailable("connecting timed out".into()))?
                .map_err(|e| ReplayStoreError::Unavailable(e.to_string()))
        };
        self.connection.get_or_try_init(connect).await.cloned()
    }

    /// Another key prefix, e.g. per API when several share one Redis.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, key: &ReplayKey) -> String {
        let mut name = String::with_capacity(self.prefix.len() + 64);
        name.push_str(&self.prefix);
        for b in key.as_bytes() {
            name.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            name.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        name
    }
}

impl fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: not printed.
        f.debug_struct("RedisReplayStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ReplayStore for RedisReplayStore {
    fn first_use<'a>(&'a self, key: &'a ReplayKey, _now: u64, ttl: Duration) -> ReplayFuture<'a> {
        let name = self.key(key);
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let mut command = redis::cmd("SET");
            command.arg(name).arg(1).arg("NX").arg("PX").arg(millis);
            let set = command.query_async::<Option<String>>(&mut connection);
            match tokio::time::timeout(self.timeout, set).await {
                Ok(Ok(answer)) => Ok(answer.is_some()),
                Ok(Err(e)) => Err(ReplayStoreError::Unavailable(e.to_string())),
                Err(_) => Err(ReplayStoreError::Unavailable(
                    "Redis did not answer in time".into(),
                )),
            }
        })
    }
}
