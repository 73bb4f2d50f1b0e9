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
//!
//! The gateway's and the ext-authz service's (feature `gateway`):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `bearer_guard_gateway_requests_total` | counter | `outcome` |
//! | `bearer_guard_request_duration_seconds` | histogram | `outcome` |
//! | `bearer_guard_gateway_connections_refused_total` | counter | |
//! | `bearer_guard_gateway_upstream_body_timeouts_total` | counter | |
//! | `bearer_guard_ext_authz_checks_total` | counter | `protocol`, `outcome` |
//!
//! [`describe_metrics`] gives each its `HELP` text in the installed recorder.

/// Gives every metric above its description (Prometheus `HELP`) in the
/// recorder installed now; call it once after installing one (the gateway's
/// and the ext-authz service's `with_metrics` do).
///
/// ```
/// // After installing the application's recorder (the Prometheus exporter's,
/// // say: `bearer_guard::gateway::prometheus_builder()` with feature `gateway`):
/// bearer_guard::metrics::describe_metrics();
/// ```
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "bearer_guard_validations_total",
        "Token validations, by outcome (accepted/rejected) and reason."
    );
    describe_counter!(
        "bearer_guard_jwks_fetches_total",
        "JWKS fetches, by issuer and result (ok/error)."
    );
    describe_gauge!(
        "bearer_guard_jwks_keys",
        "Usable keys in the issuer's last fetched JWKS."
    );
    describe_counter!(
        "bearer_guard_token_cache_lookups_total",
        "Verified-token cache lookups, by result (hit/miss/stale)."
    );
    describe_counter!(
        "bearer_guard_dpop_replay_store_failures_total",
        "DPoP replay store failures, by action taken (refused/accepted)."
    );
    describe_counter!(
        "bearer_guard_gateway_requests_total",
        "Requests answered by the gateway, by outcome."
    );
    describe_histogram!(
        "bearer_guard_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its response headers, by outcome."
    );
    describe_counter!(
        "bearer_guard_gateway_connections_refused_total",
        "Connections closed at once because max_connections were open."
    );
    describe_counter!(
        "bearer_guard_gateway_upstream_body_timeouts_total",
        "Responses aborted because the upstream's body stalled."
    );
    describe_counter!(
        "bearer_guard_ext_authz_checks_total",
        "External authorization checks, by protocol and outcome."
    );
}

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
