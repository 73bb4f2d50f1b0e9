//! The `metrics` feature: validations by outcome and reason, JWKS fetches by
//! result, keys per issuer, through whatever recorder the application installs.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bearer_guard::clock::Clock;
use common::*;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use serde_json::json;

type Values = Arc<Mutex<BTreeMap<String, f64>>>;

/// Keeps the latest value of every counter and gauge, by `name{label=value,...}`.
#[derive(Default)]
struct TestRecorder(Values);

struct Handle(Values, String);

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.0.lock().unwrap().insert(self.1.clone(), value as f64);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.0.lock().unwrap().insert(self.1.clone(), value);
    }
}

fn name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle(self.0.clone(), name(key))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Handle(self.0.clone(), name(key))))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test]
async fn counts_validations_fetches_and_keys() {
    let recorder = TestRecorder::default();
    let values = recorder.0.clone();
    metrics::set_global_recorder(recorder).expect("the only recorder in this test binary");

    let (clock, server, guard) = fixture().await;
    let good = svc_token(&server).await;
    let expired = token_with(
        &server,
        &clock,
        json!({}),
        json!({"exp": clock.unix_seconds() - 3600}),
    );
    for _ in 0..3 {
        assert!(guard.validate(&good).await.is_ok());
    }
    assert!(guard.validate(&expired).await.is_err());
    assert!(guard.validate("not-a-jwt").await.is_err());

    let v = values.lock().unwrap().clone();
    let issuer = server.issuer();
    assert_eq!(
        v["bearer_guard_validations_total{outcome=accepted,reason=ok}"], 3.0,
        "{v:?}"
    );
    assert_eq!(
        v["bearer_guard_validations_total{outcome=rejected,reason=expired}"],
        1.0
    );
    assert_eq!(
        v["bearer_guard_validations_total{outcome=rejected,reason=malformed}"],
        1.0
    );
    assert_eq!(
        v[&format!("bearer_guard_jwks_fetches_total{{issuer={issuer},result=ok}}")],
        1.0
    );
    assert_eq!(
        v[&format!("bearer_guard_jwks_keys{{issuer={issuer}}}")],
        1.0
    );
    // The good token is cached on its second verification and answered from the
    // cache on its third; every other lookup missed.
    assert_eq!(v["bearer_guard_token_cache_lookups_total{result=hit}"], 1.0);
    assert_eq!(
        v["bearer_guard_token_cache_lookups_total{result=miss}"],
        4.0
    );
}
