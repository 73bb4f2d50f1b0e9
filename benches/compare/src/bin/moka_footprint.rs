//! What moka itself costs per entry, configured like bearer-guard's verified-token
//! cache: a moka 0.12 sync `Cache` with `max_capacity(32 MiB)`, a weigher (the
//! key's bytes plus 1 KiB, at least 32 MiB / 100 000) and `expire_after` (an
//! `Expiry` whose `expire_after_create` returns the value's lifetime). The value is
//! tiny: an `Arc` clone, a `usize` and a `Duration`, so what grows is moka's node
//! and the key.
//!
//! Measured as the growth of RssAnon (/proc/self/status) over inserting N entries
//! (default 10 000) and `run_pending_tasks()`. One case per process, so one case's
//! heap does not pollute the other:
//!
//!   for case in array32 string716; do moka_footprint $case 10000; done
//!
//! - `array32`: `[u8; 32]` keys (what a SHA-256 of the token would be);
//! - `string716`: `String` keys of 716 bytes (an RS256 access token from the
//!   bundled authorization server); "beyond the key" subtracts those 716 bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

const MAX_BYTES: u64 = 32 * 1024 * 1024;
const MAX_ENTRIES: u64 = 100_000;
const ENTRY_OVERHEAD: usize = 1024;
const TOKEN_BYTES: usize = 716;

/// The value: as small as bearer-guard's entry without its token and claims.
#[derive(Clone)]
struct Tiny {
    _key: Arc<[u8; 64]>,
    _issuer: usize,
    lifetime: Duration,
}

struct UntilExpiry;

impl<K> moka::Expiry<K, Tiny> for UntilExpiry {
    fn expire_after_create(&self, _: &K, value: &Tiny, _: Instant) -> Option<Duration> {
        Some(value.lifetime)
    }
}

fn cache<K>(len: fn(&K) -> usize) -> Cache<K, Tiny>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    let floor = MAX_BYTES.div_ceil(MAX_ENTRIES);
    Cache::builder()
        .max_capacity(MAX_BYTES)
        .weigher(move |k: &K, _: &Tiny| {
            u32::try_from(((len(k) + ENTRY_OVERHEAD) as u64).max(floor)).unwrap_or(u32::MAX)
        })
        .expire_after(UntilExpiry)
        .build()
}

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status")
}

/// Distinct bytes for entry `i` (splitmix64), so keys do not share a prefix.
fn mix(i: u64, out: &mut [u8]) {
    let mut z = i;
    for chunk in out.chunks_mut(8) {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// A 716-byte token-like string: base64url characters, distinct per `i`.
fn token(i: u64) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = vec![0u8; TOKEN_BYTES];
    mix(i, &mut bytes);
    bytes
        .iter()
        .map(|&b| B64[usize::from(b & 63)] as char)
        .collect()
}

/// Inserts `n` entries with keys from `key`, and returns (RssAnon growth in KiB,
/// entries kept).
fn measure<K>(n: u64, len: fn(&K) -> usize, key: impl Fn(u64) -> K) -> (u64, u64)
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    let shared = Arc::new([7u8; 64]);
    let cache = cache(len);
    // moka's first insert sets up what every cache has, whatever its size: once,
    // before the baseline.
    cache.insert(key(u64::MAX), tiny(&shared));
    cache.invalidate(&key(u64::MAX));
    cache.run_pending_tasks();
    let before = rss_anon_kib();
    for i in 0..n {
        cache.insert(key(i), tiny(&shared));
    }
    cache.run_pending_tasks();
    let after = rss_anon_kib();
    (after.saturating_sub(before), cache.entry_count())
}

fn tiny(shared: &Arc<[u8; 64]>) -> Tiny {
    Tiny {
        _key: shared.clone(),
        _issuer: 0,
        lifetime: Duration::from_secs(3600),
    }
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_default();
    let n: u64 = match args.next() {
        Some(n) => n.parse().map_err(|e| format!("N: {e}"))?,
        None => 10_000,
    };
    let (kib, kept, key_bytes, what) = match case.as_str() {
        "array32" => {
            let (kib, kept) = measure(
                n,
                |_: &[u8; 32]| 32,
                |i| {
                    let mut k = [0u8; 32];
                    mix(i, &mut k);
                    k
                },
            );
            (kib, kept, 0, "[u8; 32] keys")
        }
        "string716" => {
            let (kib, kept) = measure(n, String::len, token);
            (kib, kept, TOKEN_BYTES, "716-byte String keys")
        }
        _ => return Err("usage: moka_footprint array32|string716 [N]".into()),
    };
    let per_entry = kib * 1024 / kept.max(1);
    let beyond = if key_bytes > 0 {
        format!(
            ", {} beyond the key",
            per_entry.saturating_sub(key_bytes as u64)
        )
    } else {
        String::new()
    };
    // Past the 32 MiB bound moka evicts, and the growth is no longer per entry.
    let evicted = if kept < n {
        " (the weight bound evicted some: lower N)"
    } else {
        ""
    };
    println!(
        "moka 0.12.16, {what}: {kept} of {n} entries kept, RssAnon +{kib} KiB, ≈ {per_entry} bytes per entry{beyond}{evicted}"
    );
    Ok(())
}
