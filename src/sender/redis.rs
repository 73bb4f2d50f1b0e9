//! A replay store shared by every replica: Redis, `SET key 1 NX PX ttl`.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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
    connection: ConnectionManager,
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
        let unavailable = |e: redis::RedisError| ReplayStoreError::Unavailable(e.to_string());
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection =
            tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| ReplayStoreError::Unavailable("connecting timed out".into()))?
                .map_err(unavailable)?;
        Ok(RedisReplayStore {
            connection,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            timeout,
        })
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
        let mut connection = self.connection.clone();
        let name = self.key(key);
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        Box::pin(async move {
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
