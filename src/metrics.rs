//! Counters and gauges through the `metrics` facade (feature `metrics`), so the
//! application picks the exporter. Without the feature these calls compile away.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `bearer_guard_validations_total` | counter | `outcome` (`accepted`/`rejected`), `reason` |
//! | `bearer_guard_jwks_fetches_total` | counter | `issuer`, `result` (`ok`/`error`) |
//! | `bearer_guard_jwks_keys` | gauge | `issuer` |
//! | `bearer_guard_token_cache_lookups_total` | counter | `result` (`hit`/`miss`/`stale`) |
//! | `bearer_guard_dpop_replay_store_failures_total` | counter | `action` (`refused`/`accepted`) |

#[cfg(feature = "metrics")]
pub(crate) fn validation(reason: Option<&'static str>) {
    let (outcome, reason) = match reason {
        None => ("accepted", "ok"),
        Some(r) => ("rejected", r),
    };
    metrics::counter!("bearer_guard_validations_total", "outcome" => outcome, "reason" => reason)
        .increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn jwks_fetch(issuer: &str, ok: bool, keys: usize) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!("bearer_guard_jwks_fetches_total", "issuer" => issuer.to_owned(), "result" => result)
        .increment(1);
    if ok {
        metrics::gauge!("bearer_guard_jwks_keys", "issuer" => issuer.to_owned()).set(keys as f64);
    }
}

#[cfg(feature = "metrics")]
pub(crate) fn token_cache(result: &'static str) {
    metrics::counter!("bearer_guard_token_cache_lookups_total", "result" => result).increment(1);
}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn token_cache(_result: &'static str) {}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn validation(_reason: Option<&'static str>) {}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn jwks_fetch(_issuer: &str, _ok: bool, _keys: usize) {}

#[cfg(feature = "metrics")]
pub(crate) fn replay_store_failure(fail_open: bool) {
    let action = if fail_open { "accepted" } else { "refused" };
    metrics::counter!("bearer_guard_dpop_replay_store_failures_total", "action" => action)
        .increment(1);
}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn replay_store_failure(_fail_open: bool) {}
