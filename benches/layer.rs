//! The cost of the tower layer itself on the most common request: a reused token
//! answered by the verified-token cache, over a trivial inner service, beside the
//! same inner service without the layer (and a refusal for comparison). The hit is
//! answered inside `call`, so the future completes on its first poll.
//!
//! `cargo bench --bench layer`

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard::{Guard, Issuer};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use http::{Request, Response};
use serde_json::json;
use tower::{Layer as _, Service, service_fn};

const ISS: &str = "https://login.example.com";
const AUD: &str = "https://api.example.com";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn bench(c: &mut Criterion) {
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("keygen");
    let point = key.public_key().as_ref().to_vec();
    let jwk = json!({"kty": "EC", "kid": "k1", "alg": "ES256", "crv": "P-256",
                     "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let jwks = json!({ "keys": [jwk] }).to_string();
    let guard = Guard::builder()
        .issuer(Issuer::new(ISS).jwks_document(jwks))
        .audience(AUD)
        .build()
        .expect("guard");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let header = b64(json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"})
        .to_string()
        .as_bytes());
    let claims = json!({"iss": ISS, "sub": "bench-client", "aud": AUD, "exp": now + 3600,
                        "iat": now, "jti": "b7", "client_id": "bench-client", "scope": "read:data"});
    let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let sig = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("sign");
    let authorization = format!("Bearer {input}.{}", b64(sig.as_ref()));

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    // Cached on its second verification.
    for _ in 0..2 {
        rt.block_on(guard.validate(&authorization["Bearer ".len()..]))
            .expect("the bench token validates");
    }

    let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    let mut bare = inner;
    let mut guarded = guard.layer().layer(inner);
    let request = |auth: &str| {
        Request::builder()
            .uri("/orders")
            .header("authorization", auth)
            .body(())
            .expect("request")
    };

    let mut group = c.benchmark_group("layer");
    group.bench_function("no layer", |b| {
        b.iter_batched(
            || request(&authorization),
            |req| bare.call(req).now_or_never().expect("ready").expect("ok"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("layer, cache hit", |b| {
        b.iter_batched(
            || request(&authorization),
            |req| {
                let response = guarded.call(req).now_or_never().expect("answered inline");
                assert_eq!(response.expect("ok").status(), 200);
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("layer, no credentials (401)", |b| {
        b.iter_batched(
            || Request::builder().uri("/orders").body(()).expect("request"),
            |req| guarded.call(req).now_or_never().expect("answered inline"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
