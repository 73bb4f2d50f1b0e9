//! The verified-token cache: clients reuse an access token for its whole lifetime,
//! so most requests carry a token that was already verified.
//!
//! - **Keyed by the exact token**: lookup compares the full token text, so no hash
//!   collision can let a different token through.
//! - **Only successes** are cached, so an attacker cannot fill it with garbage, and
//!   tokens over a size bound are not cached at all.
//! - **Every hit re-checks** `exp`/`nbf`/`iat` against the clock and a tenant
//!   template's tenant policy (a predicate may change its mind); the route's scope
//!   check runs as always, after the layer.
//! - **Bound to its signing key**: an entry counts only while the very key that
//!   verified it is still in its issuer's key set. A key that is rotated out,
//!   revoked or republished with other material ends its entries; a refresh that
//!   republishes the key unchanged does not (the key store keeps the same key).
//! - **Admitted on second sight**: a token is cached the second time it is verified,
//!   not the first. A cache insert costs ~2 µs (moka's), so a token used once (a
//!   client that fetches a token per call) would pay it for nothing, and would
//!   push reused tokens out. A 128 KiB Bloom filter of keyed hashes remembers the
//!   tokens seen once; it holds no token and never decides an answer.
//! - **Bounded** by memory (a weigher counts each entry's bytes), by entries (no
//!   entry weighs less than `max_bytes / max_entries`) and by time (an entry lives
//!   until the token's `exp` plus leeway, at most `max_ttl`).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::claims::{NumericDate, VerifiedToken};
use crate::keys::VerifyingKey;

/// Settings of the verified-token cache.
#[derive(Debug, Clone)]
pub(crate) struct CacheConfig {
    pub enabled: bool,
    pub max_bytes: u64,
    pub max_entries: u64,
    pub max_ttl: Duration,
    pub max_token_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_bytes: 32 * 1024 * 1024,
            max_entries: 100_000,
            max_ttl: Duration::from_secs(3600),
            max_token_bytes: 8 * 1024,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub token: VerifiedToken,
    /// The key that verified the signature (compared by identity).
    pub key: Arc<VerifyingKey>,
    pub issuer: usize,
    lifetime: Duration,
    /// When the entry stops answering, by the guard's clock (since the Unix
    /// epoch): its insertion plus `lifetime`. moka's own expiry, by the real
    /// clock, only frees the memory.
    expires_at: Duration,
}

/// What one entry costs besides its token and claims text: moka's node, the
/// `VerifiedToken`, its parsed claims and their allocations. Measured: ~2.1 KB of
/// peak RSS per cached RS256 token from the bundled server (`benches/load.sh`),
/// of which ~1.1 KB is the token and claims text.
const ENTRY_OVERHEAD: usize = 1024;

/// What the verified-token cache has done so far ([`Guard::token_cache_stats`]).
///
/// [`Guard::token_cache_stats`]: crate::Guard::token_cache_stats
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TokenCacheStats {
    /// Tokens cached now.
    pub entries: u64,
    /// Their weight in bytes, as the memory bound counts it.
    pub weighted_bytes: u64,
    /// Lookups answered from the cache (a token that expired since it was cached
    /// is refused from it too).
    pub hits: u64,
    /// Lookups that found nothing (the token was then verified in full).
    pub misses: u64,
    /// Lookups that found the token but no longer its key (rotated out, revoked
    /// or changed): verified again in full.
    pub stale: u64,
}

/// Bits of the second-sight filter: 128 KiB.
const DOORKEEPER_BITS: usize = 1 << 20;

/// The filter is cleared once this many bits are set, so at most a quarter of
/// the tokens it has never seen pass for seen (and are cached on their first
/// verification: harmless, only the saving is lost).
const DOORKEEPER_RESET: u64 = DOORKEEPER_BITS as u64 / 4;

/// Tokens verified once and not cached yet: a one-hash Bloom filter over keyed
/// 64-bit hashes, cleared when a quarter full (TinyLFU's "doorkeeper"). A working
/// set of reused tokens far beyond the cache's size is remembered between two
/// uses; a flood of one-off tokens costs a bit each until the next clear.
struct Doorkeeper {
    words: Box<[AtomicU64]>,
    hasher: TokenHasher,
    marked: AtomicU64,
}

impl Doorkeeper {
    fn new() -> Self {
        Doorkeeper {
            words: (0..DOORKEEPER_BITS / 64)
                .map(|_| AtomicU64::new(0))
                .collect(),
            hasher: TokenHasher::default(),
            marked: AtomicU64::new(0),
        }
    }

    /// Whether `token` (or one sharing its bit) was seen since the last clear;
    /// marks it if not.
    fn seen_before(&self, token: &str) -> bool {
        let bit = self.hasher.hash_one(token) as usize % DOORKEEPER_BITS;
        let mask = 1u64 << (bit % 64);
        if self.words[bit / 64].fetch_or(mask, Ordering::Relaxed) & mask != 0 {
            return true;
        }
        if self.marked.fetch_add(1, Ordering::Relaxed) + 1 >= DOORKEEPER_RESET {
            self.marked.store(0, Ordering::Relaxed);
            for word in &self.words {
                word.store(0, Ordering::Relaxed);
            }
        }
        false
    }
}

/// Slots in front of moka, a token's found by its hash: a reused token (most
/// traffic) is answered by one atomic load and one comparison, where a moka
/// lookup also records the read for its eviction policy (about three times
/// the work, measured in `benches/layer.rs`). A slot holds a token moka
/// returned; another token landing on the slot takes it over on every
/// [`FRONT_TAKEOVER`]th of its moka hits, so a slot follows the hotter of the
/// tokens that share it. An entry in a slot keeps its own expiry and is
/// dropped with moka's when found stale; at most [`FRONT_SLOTS`] entries are
/// held this way beyond moka's bound.
pub(crate) const FRONT_SLOTS: usize = 256;

/// See [`FRONT_SLOTS`].
const FRONT_TAKEOVER: u32 = 8;

/// The bytes at the end of a token that choose its front slot (with its
/// length): 32 base64url characters are 192 bits of its signature.
const SLOT_HASHED_BYTES: usize = 32;

#[derive(Default)]
struct Slot {
    kept: arc_swap::ArcSwapOption<Entry>,
    /// Moka hits of other tokens landing on this slot.
    others: std::sync::atomic::AtomicU32,
}

pub(crate) struct TokenCache {
    front: Box<[Slot]>,
    front_hasher: TokenHasher,
    cache: Cache<Arc<str>, Entry, TokenHasher>,
    doorkeeper: Doorkeeper,
    max_token_bytes: usize,
    max_ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
}

/// Every lookup hashes the whole token (0.3–1 KB): SipHash, std's default, cost
/// ~0.5 µs of a ~0.6 µs hit on an RS256 token. foldhash is several times faster on
/// long keys, seeded per process; flooding its buckets would take chosen keys,
/// and only tokens the issuer signed are ever inserted.
type TokenHasher = foldhash::fast::RandomState;

/// An entry's weight: its bytes, at least `floor`.
fn weigh(token: &str, entry: &Entry, floor: u64) -> u32 {
    let bytes = token.len() + entry.token.claims_json().len() + ENTRY_OVERHEAD;
    u32::try_from((bytes as u64).max(floor)).unwrap_or(u32::MAX)
}

struct UntilExpiry;

impl moka::Expiry<Arc<str>, Entry> for UntilExpiry {
    fn expire_after_create(&self, _: &Arc<str>, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.lifetime)
    }
}

impl TokenCache {
    pub(crate) fn new(config: &CacheConfig) -> Option<Self> {
        if !config.enabled || config.max_bytes == 0 || config.max_entries == 0 {
            return None;
        }
        // With every entry weighing at least max_bytes / max_entries, the memory
        // bound also bounds the number of entries.
        let floor = config.max_bytes.div_ceil(config.max_entries);
        let weigher = move |token: &Arc<str>, entry: &Entry| weigh(token, entry, floor);
        let cache = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(weigher)
            .expire_after(UntilExpiry)
            .build_with_hasher(TokenHasher::default());
        Some(TokenCache {
            front: (0..FRONT_SLOTS).map(|_| Slot::default()).collect(),
            front_hasher: TokenHasher::default(),
            cache,
            doorkeeper: Doorkeeper::new(),
            max_token_bytes: config.max_token_bytes,
            max_ttl: config.max_ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        })
    }

    /// The entry for `token` at `now` (the guard's clock, since the epoch).
    pub(crate) fn get(&self, token: &str, now: Duration) -> Option<Entry> {
        if token.len() > self.max_token_bytes {
            return None;
        }
        if let Some(kept) = self.front(token.as_bytes(), now) {
            return Some(kept);
        }
        let slot = self.slot(token.as_bytes());
        let entry = self.cache.get(token).filter(|e| now < e.expires_at);
        match &entry {
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                crate::metrics::token_cache("miss");
            }
            Some(found) => {
                let empty = slot.kept.load().is_none();
                if empty
                    || slot
                        .others
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(FRONT_TAKEOVER)
                {
                    slot.kept.store(Some(Arc::new(found.clone())));
                }
            }
        }
        entry
    }

    /// The entry in `token`'s front slot, if it holds exactly these bytes and
    /// has not expired. The bytes need no checking first: only a token that
    /// passed every check, its token68 syntax included, is ever in a slot, and
    /// a byte-equal one is the same token.
    pub(crate) fn front(&self, token: &[u8], now: Duration) -> Option<Entry> {
        let kept = self.slot(token).kept.load();
        let kept = kept.as_deref()?;
        (kept.token.access_token_arc().as_bytes() == token && now < kept.expires_at)
            .then(|| kept.clone())
    }

    /// `token`'s front slot, chosen by its length and its last
    /// [`SLOT_HASHED_BYTES`] bytes: a JWS ends in its signature, so those
    /// differ between tokens, and hashing the whole token was half the cost
    /// of a front hit. Tokens that share a slot only take turns in it: a slot
    /// answers only for the exact bytes it holds.
    fn slot(&self, token: &[u8]) -> &Slot {
        let tail = &token[token.len().saturating_sub(SLOT_HASHED_BYTES)..];
        let hash = self.front_hasher.hash_one((token.len(), tail)) as usize;
        &self.front[hash % FRONT_SLOTS]
    }

    /// The entry `get` returned answered the request.
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        crate::metrics::token_cache("hit");
    }

    /// The entry `get` returned for `token` no longer counts (its key is gone):
    /// drops it, so the full verification that follows can cache it anew.
    pub(crate) fn stale(&self, token: &str) {
        self.stale.fetch_add(1, Ordering::Relaxed);
        crate::metrics::token_cache("stale");
        self.cache.invalidate(token);
        let slot = self.slot(token.as_bytes());
        if slot
            .kept
            .load()
            .as_deref()
            .is_some_and(|kept| **kept.token.access_token_arc() == *token)
        {
            slot.kept.store(None);
        }
    }

    /// Caches a token verified at `now` (since the Unix epoch) until
    /// `exp + leeway`, at most `max_ttl`, if this is the second time it was
    /// verified.
    pub(crate) fn insert(
        &self,
        token: &str,
        verified: &VerifiedToken,
        key: Arc<VerifyingKey>,
        issuer: usize,
        now: Duration,
        leeway: Duration,
    ) {
        if token.len() > self.max_token_bytes {
            return;
        }
        let exp = verified
            .registered()
            .exp
            .map_or(Duration::ZERO, NumericDate::since_epoch);
        let lifetime = exp
            .saturating_add(leeway)
            .saturating_sub(now)
            .min(self.max_ttl);
        if lifetime.is_zero() || !self.doorkeeper.seen_before(token) {
            return;
        }
        // The verified token holds the same text: share it rather than copy it.
        let text = match verified.access_token_arc() {
            t if **t == *token => Arc::clone(t),
            _ => Arc::from(token),
        };
        self.cache.insert(
            text,
            Entry {
                token: verified.clone(),
                key,
                issuer,
                lifetime,
                expires_at: now.saturating_add(lifetime),
            },
        );
    }

    /// Counters, and the entries after moka's pending housekeeping ran.
    pub(crate) fn stats(&self) -> TokenCacheStats {
        self.cache.run_pending_tasks();
        TokenCacheStats {
            entries: self.cache.entry_count(),
            weighted_bytes: self.cache.weighted_size(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.stats().entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::RegisteredClaims;
    use crate::jws::{Algorithm, TokenHeader};
    use crate::keys::KeySet;

    fn a_key() -> Arc<VerifyingKey> {
        let set = KeySet::from_secret(
            b"0123456789abcdef0123456789abcdef",
            [Algorithm::HS256].into_iter().collect(),
        );
        Arc::clone(set.first().expect("one key"))
    }

    fn verified(exp: u64) -> VerifiedToken {
        let header = TokenHeader {
            alg: Algorithm::ES256,
            kid: None,
            typ: None,
        };
        let claims = RegisteredClaims {
            exp: Some(NumericDate::from_secs(exp)),
            ..Default::default()
        };
        VerifiedToken::new(
            Some(header),
            claims,
            "{}".into(),
            "a.b.c".into(),
            0,
            None,
            None,
        )
    }

    fn cache(max_token_bytes: usize) -> TokenCache {
        TokenCache::new(&CacheConfig {
            max_token_bytes,
            max_ttl: Duration::from_secs(3600),
            ..CacheConfig::default()
        })
        .expect("enabled")
    }

    /// Inserts as a second verification does (the first is only remembered).
    fn insert_twice(c: &TokenCache, token: &str, v: &VerifiedToken, now: u64) {
        for _ in 0..2 {
            c.insert(token, v, a_key(), 0, secs(now), secs(60));
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A verified token whose text is `text`.
    fn verified_as(text: &str, exp: u64) -> VerifiedToken {
        let claims = RegisteredClaims {
            exp: Some(NumericDate::from_secs(exp)),
            ..Default::default()
        };
        VerifiedToken::new(None, claims, "{}".into(), text.into(), 0, None, None)
    }

    #[test]
    fn the_front_slots_never_answer_for_another_token() {
        let c = cache(100);
        // More tokens than slots: many share one.
        let tokens: Vec<String> = (0..3 * FRONT_SLOTS).map(|i| format!("t.{i}.s")).collect();
        for t in &tokens {
            insert_twice(&c, t, &verified_as(t, 1000), 900);
        }
        for _ in 0..3 {
            for t in &tokens {
                let entry = c.get(t, secs(900)).expect("cached");
                assert_eq!(&**entry.token.access_token_arc(), t.as_str());
            }
        }
        assert!(c.get("t.unknown.s", secs(900)).is_none());
    }

    #[test]
    fn tokens_sharing_a_slot_take_turns_and_never_answer_for_each_other() {
        let c = cache(100);
        let tail = "s".repeat(SLOT_HASHED_BYTES + 8);
        let tokens: Vec<String> = (0..10).map(|i| format!("h{i}.p.{tail}")).collect();
        assert!(
            tokens
                .iter()
                .all(|t| std::ptr::eq(c.slot(t.as_bytes()), c.slot(tokens[0].as_bytes())))
        );
        for t in &tokens {
            insert_twice(&c, t, &verified_as(t, 1000), 900);
        }
        for _ in 0..2 * FRONT_TAKEOVER {
            for t in &tokens {
                let entry = c.get(t, secs(900)).expect("cached");
                assert_eq!(&**entry.token.access_token_arc(), t.as_str());
                if let Some(front) = c.front(t.as_bytes(), secs(900)) {
                    assert_eq!(&**front.token.access_token_arc(), t.as_str());
                }
            }
        }
    }

    #[test]
    fn entries_stop_answering_at_their_expiry_by_the_guards_clock() {
        let c = cache(100);
        // exp 1000 + leeway 60, inserted at 900: until 1060.
        insert_twice(&c, "a.b.c", &verified_as("a.b.c", 1000), 900);
        for _ in 0..3 {
            assert!(c.get("a.b.c", secs(1059)).is_some());
        }
        assert!(c.front(b"a.b.c", secs(1059)).is_some(), "in its slot");
        assert!(c.front(b"a.b.c", secs(1060)).is_none());
        assert!(c.get("a.b.c", secs(1060)).is_none(), "nor from moka");
        assert!(
            c.get("a.b.c", secs(1059)).is_some(),
            "moka keeps it by its own clock"
        );
    }

    #[test]
    fn a_stale_token_leaves_its_front_slot_too() {
        let c = cache(100);
        let v = verified_as("a.b.c", 1000);
        insert_twice(&c, "a.b.c", &v, 900);
        for _ in 0..3 {
            assert!(
                c.get("a.b.c", secs(900)).is_some(),
                "from moka, then from its slot"
            );
        }
        assert!(c.slot(b"a.b.c").kept.load().is_some());
        c.stale("a.b.c");
        assert!(c.get("a.b.c", secs(900)).is_none());
    }

    #[test]
    fn a_token_is_cached_on_its_second_verification() {
        let c = cache(100);
        c.insert("a.b.c", &verified(1000), a_key(), 0, secs(900), secs(60));
        assert!(c.get("a.b.c", secs(900)).is_none());
        c.insert("a.b.c", &verified(1000), a_key(), 0, secs(900), secs(60));
        assert!(c.get("a.b.c", secs(900)).is_some());
        // One-off tokens never enter it, but for one whose bit another token set
        // (a one-hash filter: ~0.5 % of runs have such a pair among 101 tokens).
        // Counted here with the filter's own hash, so the test is exact.
        let bit = |t: &str| c.doorkeeper.hasher.hash_one(t) as usize % DOORKEEPER_BITS;
        let mut bits = std::collections::HashSet::from([bit("a.b.c")]);
        let mut expected = 1;
        for i in 0..100 {
            let token = format!("once.{i}.x");
            if !bits.insert(bit(&token)) {
                expected += 1;
            }
            c.insert(&token, &verified(1000), a_key(), 0, secs(900), secs(60));
        }
        assert_eq!(c.len(), expected);
    }

    #[test]
    fn the_doorkeeper_remembers_a_large_working_set_and_clears_when_full() {
        let d = Doorkeeper::new();
        let tokens: Vec<String> = (0..20_000).map(|i| format!("token-{i}")).collect();
        let first = tokens.iter().filter(|t| d.seen_before(t)).count();
        // ~n²/2m = 190 expected collisions among 20,000 tokens in 2^20 bits.
        assert!(first < 400, "{first} of 20,000 new tokens passed for seen");
        let second = tokens.iter().filter(|t| d.seen_before(t)).count();
        assert_eq!(second, 20_000, "every token is known on its second use");

        // Enough one-off tokens to set a quarter of the bits (some collide).
        for i in 0..DOORKEEPER_RESET + DOORKEEPER_RESET / 2 {
            d.seen_before(&format!("flood-{i}"));
        }
        let after = tokens.iter().filter(|t| d.seen_before(t)).count();
        assert!(after < 20_000 / 3, "cleared: {after} still passed for seen");
    }

    #[test]
    fn hits_only_on_the_exact_token() {
        let c = cache(100);
        insert_twice(&c, "a.b.c", &verified(1000), 900);
        assert!(c.get("a.b.c", secs(900)).is_some());
        for other in ["a.b.", "a.b.cc", "A.b.c", "a.b.c "] {
            assert!(c.get(other, secs(900)).is_none(), "{other}");
        }
    }

    #[test]
    fn large_and_already_expired_tokens_are_not_cached() {
        let c = cache(8);
        insert_twice(&c, &"x".repeat(9), &verified(1000), 900);
        insert_twice(&c, "a.b.c", &verified(1000), 1060);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn lifetime_is_exp_plus_leeway_capped_by_max_ttl() {
        let c = cache(100);
        insert_twice(&c, "a", &verified(1000), 900);
        assert_eq!(
            c.get("a", secs(900)).unwrap().lifetime,
            Duration::from_secs(160)
        );
        insert_twice(&c, "b", &verified(100_000), 900);
        assert_eq!(
            c.get("b", secs(900)).unwrap().lifetime,
            Duration::from_secs(3600)
        );
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
