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

/// The handle of one metric with fixed labels, kept between calls: a lookup in
/// the recorder's registry hashes the key and copies it (about 1,500
/// instructions with the Prometheus exporter), an increment through a kept
/// handle is one atomic add. For the metrics counted on every request.
///
/// The handle belongs to the recorder in effect when it was registered, so it
/// is registered again whenever another recorder is in effect (a global one
/// installed after the first call, a thread's local one). Recorders are told
/// apart by address: a local recorder dropped and another made at the same
/// address on the same thread would be counted into through the first one's
/// handle (the global recorder, set once, never moves).
#[cfg(feature = "metrics")]
pub(crate) struct Hot<H> {
    kept: arc_swap::ArcSwapOption<(usize, H)>,
}

#[cfg(feature = "metrics")]
impl<H> Hot<H> {
    pub(crate) const fn new() -> Self {
        Hot {
            kept: arc_swap::ArcSwapOption::const_empty(),
        }
    }

    /// Runs `use_it` on the handle for the recorder in effect, registered by
    /// `register` when there is none yet for it.
    pub(crate) fn with(&self, register: impl FnOnce() -> H, use_it: impl FnOnce(&H)) {
        let recorder = metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>().addr());
        let kept = self.kept.load();
        if let Some((at, handle)) = kept.as_deref()
            && *at == recorder
        {
            return use_it(handle);
        }
        drop(kept);
        let handle = register();
        use_it(&handle);
        self.kept
            .store(Some(std::sync::Arc::new((recorder, handle))));
    }
}

/// Runs `use_it` on the handle `register` makes: kept in `hot` when the call
/// site has one for these label values (those counted on every request),
/// registered anew otherwise (the rare ones: a handle per label value would
/// be a static per value).
#[cfg(feature = "metrics")]
pub(crate) fn with_handle<H>(
    hot: Option<&Hot<H>>,
    register: impl FnOnce() -> H,
    use_it: impl FnOnce(&H),
) {
    match hot {
        Some(hot) => hot.with(register, use_it),
        None => use_it(&register()),
    }
}

#[cfg(feature = "metrics")]
pub(crate) fn validation(reason: Option<&'static str>) {
    static ACCEPTED: Hot<metrics::Counter> = Hot::new();
    let (outcome, label, hot) = match reason {
        None => ("accepted", "ok", Some(&ACCEPTED)),
        Some(r) => ("rejected", r, None),
    };
    with_handle(
        hot,
        || metrics::counter!("bearer_guard_validations_total", "outcome" => outcome, "reason" => label),
        |c| c.increment(1),
    );
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
    static HIT: Hot<metrics::Counter> = Hot::new();
    static MISS: Hot<metrics::Counter> = Hot::new();
    let hot = match result {
        "hit" => Some(&HIT),
        "miss" => Some(&MISS),
        _ => None,
    };
    with_handle(
        hot,
        || metrics::counter!("bearer_guard_token_cache_lookups_total", "result" => result),
        |c| c.increment(1),
    );
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

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::Hot;

    /// Counts registrations, and every counter it hands out counts into `total`.
    #[derive(Default)]
    struct Counting {
        registered: AtomicU64,
        total: Arc<AtomicU64>,
    }

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            self.registered.fetch_add(1, Ordering::Relaxed);
            Counter::from_arc(self.total.clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn a_kept_handle_is_registered_once_per_recorder() {
        static HOT: Hot<Counter> = Hot::new();
        let count = || HOT.with(|| metrics::counter!("hot_test_total"), |c| c.increment(1));
        // Before any recorder: counted nowhere, and nothing kept that would
        // hide the recorders below.
        count();
        let (first, second) = (Counting::default(), Counting::default());
        metrics::with_local_recorder(&first, || (0..5).for_each(|_| count()));
        metrics::with_local_recorder(&second, || (0..3).for_each(|_| count()));
        metrics::with_local_recorder(&first, count);
        assert_eq!(first.total.load(Ordering::Relaxed), 6);
        assert_eq!(second.total.load(Ordering::Relaxed), 3);
        assert_eq!(
            first.registered.load(Ordering::Relaxed),
            2,
            "again after the second"
        );
        assert_eq!(second.registered.load(Ordering::Relaxed), 1);
    }
}
