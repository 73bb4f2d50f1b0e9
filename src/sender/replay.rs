//! The `jti` replay window of DPoP proofs: the one piece of state a resource
//! server keeps, behind a trait so that replicas can share it.
//!
//! [`MemoryReplayStore`] (the default) serves one process. The `redis` feature
//! adds [`RedisReplayStore`](super::RedisReplayStore), one window for every replica
//! behind a load balancer.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};

/// What a [`ReplayStore`] remembers of a proof: the SHA-256 of its key
/// thumbprint and `jti`. Neither is stored in the clear, and a client cannot
/// collide with another client's proofs by choosing its `jti`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey([u8; 32]);

impl ReplayKey {
    /// The key of the proof with this key thumbprint (`jkt`) and `jti`.
    pub fn new(jkt: &str, jti: &str) -> Self {
        // The thumbprint is base64url, so "." cannot occur in it: unambiguous.
        let mut input = Vec::with_capacity(jkt.len() + 1 + jti.len());
        input.extend_from_slice(jkt.as_bytes());
        input.push(b'.');
        input.extend_from_slice(jti.as_bytes());
        let mut key = [0; 32];
        key.copy_from_slice(digest(&SHA256, &input).as_ref());
        ReplayKey(key)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ReplayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ReplayKey({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Why a [`ReplayStore`] could not answer. The guard then refuses the request
/// with 503 (fail closed) unless told to fail open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayStoreError {
    /// The store holds as many live proofs as it may; nothing is evicted early,
    /// because an evicted `jti` could be replayed.
    #[error("the replay store is full ({0} live proofs)")]
    Full(usize),
    /// The store could not be reached or answered garbage.
    #[error("the replay store is unavailable: {0}")]
    Unavailable(String),
}

/// The future of [`ReplayStore::first_use`].
pub type ReplayFuture<'a> =
    Pin<Box<dyn Future<Output = Result<bool, ReplayStoreError>> + Send + 'a>>;

/// Remembers DPoP proofs for the length of the acceptance window.
///
/// Implementations must be atomic: of two concurrent calls with the same key
/// (on any replica sharing the store) exactly one answers `true`.
pub trait ReplayStore: Send + Sync + fmt::Debug + 'static {
    /// Records `key` for `ttl` from `now` (Unix seconds, the guard's clock):
    /// `Ok(true)` the first time, `Ok(false)` when it is already recorded.
    fn first_use<'a>(&'a self, key: &'a ReplayKey, now: u64, ttl: Duration) -> ReplayFuture<'a>;
}

/// The default replay store: in memory, for one process, bounded by count.
///
/// Entries expire with the window. When `capacity` live proofs are recorded,
/// new proofs are refused (503) rather than older ones evicted: eviction would
/// reopen the window for the evicted proofs. Only a proof that passed every
/// other check (signature, `htm`/`htu`/`iat`/`ath`, and the key binding of a
/// valid access token) is recorded, so filling the store takes a valid token
/// of a trusted issuer and one signed proof per entry. Each entry costs about
/// 60 bytes, so the default 1,000,000 entries is ~60 MiB at most, and a window
/// of 75 s sustains ~13,000 DPoP requests a second.
pub struct MemoryReplayStore {
    capacity: usize,
    state: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Key (16 bytes of the hash suffice: 2^64 proofs before a likely collision)
    /// to the unix second it expires at.
    live: HashMap<[u8; 16], u64>,
    /// Insertion order, for expiry from the front.
    order: VecDeque<(u64, [u8; 16])>,
}

impl MemoryReplayStore {
    /// The default capacity: 1,000,000 live proofs.
    pub const DEFAULT_CAPACITY: usize = 1_000_000;

    /// A store that holds at most `capacity` live proofs.
    pub fn new(capacity: usize) -> Self {
        MemoryReplayStore {
            capacity,
            state: Mutex::new(Window::default()),
        }
    }

    /// How many proofs are recorded and not yet expired (as of the last call).
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether no proof is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, key: &ReplayKey, now: u64, ttl: Duration) -> Result<bool, ReplayStoreError> {
        let mut short = [0; 16];
        short.copy_from_slice(&key.0[..16]);
        let expires = now.saturating_add(ttl.as_secs().max(1));
        let mut w = self.lock();
        while let Some(&(at, k)) = w.order.front() {
            if at > now {
                break;
            }
            w.order.pop_front();
            if w.live.get(&k) == Some(&at) {
                w.live.remove(&k);
            }
        }
        if w.live.get(&short).is_some_and(|&at| at > now) {
            return Ok(false);
        }
        if w.live.len() >= self.capacity {
            return Err(ReplayStoreError::Full(w.live.len()));
        }
        w.live.insert(short, expires);
        w.order.push_back((expires, short));
        Ok(true)
    }
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        MemoryReplayStore::new(Self::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayStore")
            .field("capacity", &self.capacity)
            .field("live", &self.len())
            .finish()
    }
}

impl ReplayStore for MemoryReplayStore {
    fn first_use<'a>(&'a self, key: &'a ReplayKey, now: u64, ttl: Duration) -> ReplayFuture<'a> {
        let answer = self.record(key, now, ttl);
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(store: &MemoryReplayStore, jti: &str, now: u64) -> Result<bool, ReplayStoreError> {
        store.record(&ReplayKey::new("jkt", jti), now, Duration::from_secs(60))
    }

    #[test]
    fn a_proof_is_new_once_within_its_window() {
        let store = MemoryReplayStore::new(10);
        assert_eq!(first(&store, "a", 1000), Ok(true));
        assert_eq!(first(&store, "a", 1059), Ok(false));
        assert_eq!(first(&store, "b", 1059), Ok(true));
        // After the window the entry is gone (the proof's iat is refused by then).
        assert_eq!(first(&store, "a", 1060), Ok(true));
    }

    #[test]
    fn the_same_jti_under_another_key_is_another_proof() {
        let store = MemoryReplayStore::new(10);
        let ttl = Duration::from_secs(60);
        assert_eq!(store.record(&ReplayKey::new("k1", "j"), 0, ttl), Ok(true));
        assert_eq!(store.record(&ReplayKey::new("k2", "j"), 0, ttl), Ok(true));
    }

    #[test]
    fn a_full_store_refuses_new_proofs_and_frees_expired_ones() {
        let store = MemoryReplayStore::new(2);
        assert_eq!(first(&store, "a", 0), Ok(true));
        assert_eq!(first(&store, "b", 1), Ok(true));
        assert_eq!(first(&store, "c", 2), Err(ReplayStoreError::Full(2)));
        // A replay is still recognised as one when full.
        assert_eq!(first(&store, "a", 2), Ok(false));
        assert_eq!(first(&store, "c", 60), Ok(true));
        assert_eq!(store.len(), 2);
    }
}
