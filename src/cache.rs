//! The verified-token cache: clients reuse an access token for its whole lifetime,
//! so most requests carry a token that was already verified.
//!
//! - **Keyed by the exact token**: lookup compares the full token text, so no hash
//!   collision can let a different token through.
//! - **Only successes** are cached, so an attacker cannot fill it with garbage, and
//!   tokens over a size bound are not cached at all.
//! - **Every hit re-checks** `exp`/`nbf`/`iat` against the clock; the route's scope
//!   check runs as always, after the layer.
//! - **Bound to the key set** that verified the token: when the issuer's keys are
//!   refreshed (rotation, revocation) the entry no longer counts, and the token is
//!   verified again against the new keys.
//! - **Bounded** by memory (a weigher counts each entry's bytes) and by time (an
//!   entry lives until the token's `exp` plus leeway, at most `max_ttl`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::claims::VerifiedToken;
use crate::keys::KeySet;

/// Settings of the verified-token cache.
#[derive(Debug, Clone)]
pub(crate) struct CacheConfig {
    pub enabled: bool,
    pub max_bytes: u64,
    pub max_ttl: Duration,
    pub max_token_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_bytes: 32 * 1024 * 1024,
            max_ttl: Duration::from_secs(3600),
            max_token_bytes: 8 * 1024,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub token: VerifiedToken,
    /// The key set that verified the signature (compared by identity).
    pub keys: Arc<KeySet>,
    pub issuer: usize,
    lifetime: Duration,
}

/// What one entry costs besides its token and claims text: moka's node, the
/// `VerifiedToken`, its parsed claims and their allocations. Measured: ~2.1 KB of
/// peak RSS per cached RS256 token from the bundled server (`benches/load.sh`),
/// of which ~1.1 KB is the token and claims text.
const ENTRY_OVERHEAD: usize = 1024;

pub(crate) struct TokenCache {
    cache: Cache<Box<str>, Entry>,
    max_token_bytes: usize,
    max_ttl: Duration,
}

/// An entry's weight: its bytes. (moka hands the key as `&Box<str>`.)
#[allow(clippy::borrowed_box)]
fn weigh(token: &Box<str>, entry: &Entry) -> u32 {
    let bytes = token.len() + entry.token.raw_claims().len() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

struct UntilExpiry;

impl moka::Expiry<Box<str>, Entry> for UntilExpiry {
    fn expire_after_create(&self, _: &Box<str>, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.lifetime)
    }
}

impl TokenCache {
    pub(crate) fn new(config: &CacheConfig) -> Option<Self> {
        if !config.enabled || config.max_bytes == 0 {
            return None;
        }
        let cache = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(weigh)
            .expire_after(UntilExpiry)
            .build();
        Some(TokenCache {
            cache,
            max_token_bytes: config.max_token_bytes,
            max_ttl: config.max_ttl,
        })
    }

    pub(crate) fn get(&self, token: &str) -> Option<Entry> {
        if token.len() > self.max_token_bytes {
            return None;
        }
        self.cache.get(token)
    }

    /// Caches a token verified at `now` (seconds) until `exp + leeway`, at most
    /// `max_ttl`.
    pub(crate) fn insert(
        &self,
        token: &str,
        verified: &VerifiedToken,
        keys: Arc<KeySet>,
        issuer: usize,
        now: u64,
        leeway: u64,
    ) {
        if token.len() > self.max_token_bytes {
            return;
        }
        let remaining = verified
            .expires_at()
            .saturating_add(leeway)
            .saturating_sub(now);
        let lifetime = Duration::from_secs(remaining).min(self.max_ttl);
        if lifetime.is_zero() {
            return;
        }
        self.cache.insert(
            token.into(),
            Entry {
                token: verified.clone(),
                keys,
                issuer,
                lifetime,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::RegisteredClaims;
    use crate::jws::{Algorithm, TokenHeader};

    fn verified(exp: u64) -> VerifiedToken {
        let header = TokenHeader {
            alg: Algorithm::ES256,
            kid: None,
            typ: None,
        };
        let claims = RegisteredClaims {
            exp: Some(exp),
            ..Default::default()
        };
        VerifiedToken::new(header, claims, "{}".into(), 0, None)
    }

    fn cache(max_token_bytes: usize) -> TokenCache {
        TokenCache::new(&CacheConfig {
            max_token_bytes,
            max_ttl: Duration::from_secs(3600),
            ..CacheConfig::default()
        })
        .expect("enabled")
    }

    #[test]
    fn hits_only_on_the_exact_token() {
        let c = cache(100);
        let keys = Arc::new(KeySet::default());
        c.insert("a.b.c", &verified(1000), keys, 0, 900, 60);
        assert!(c.get("a.b.c").is_some());
        for other in ["a.b.", "a.b.cc", "A.b.c", "a.b.c "] {
            assert!(c.get(other).is_none(), "{other}");
        }
    }

    #[test]
    fn large_and_already_expired_tokens_are_not_cached() {
        let c = cache(8);
        let keys = Arc::new(KeySet::default());
        let long = "x".repeat(9);
        c.insert(&long, &verified(1000), keys.clone(), 0, 900, 60);
        c.insert("a.b.c", &verified(1000), keys, 0, 1060, 60);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn lifetime_is_exp_plus_leeway_capped_by_max_ttl() {
        let c = cache(100);
        let keys = Arc::new(KeySet::default());
        c.insert("a", &verified(1000), keys.clone(), 0, 900, 60);
        assert_eq!(c.get("a").unwrap().lifetime, Duration::from_secs(160));
        c.insert("b", &verified(100_000), keys, 0, 900, 60);
        assert_eq!(c.get("b").unwrap().lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn disabled_means_no_cache() {
        let config = CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        };
        assert!(TokenCache::new(&config).is_none());
    }
}
