//! Validation with many trusted issuers and many listed tenants: the token of the
//! last one configured, HS256 (so the signature is cheap and the lookup shows), the
//! verified-token cache off. Exact issuers and tenant lists are hash lookups, so 10,000
//! should cost what 1 does.
//!
//! `cargo bench --bench issuers`

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard::{Algorithm, Guard, Issuer};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const AUD: &str = "https://api.example.com";
const SECRET: [u8; 32] = [7; 32];

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn token(iss: &str, tid: Option<&str>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let mut claims = json!({"iss": iss, "sub": "bench", "aud": AUD, "exp": now + 3600, "iat": now});
    if let Some(tid) = tid {
        claims["tid"] = json!(tid);
    }
    let header = b64(json!({"alg": "HS256", "typ": "at+jwt"})
        .to_string()
        .as_bytes());
    let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let key = hmac::Key::new(hmac::HMAC_SHA256, &SECRET);
    let tag = hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

fn hs256(issuer: Issuer) -> Issuer {
    issuer.shared_secret(SECRET).algorithms([Algorithm::HS256])
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("issuers");
    for n in [1usize, 100, 10_000] {
        let mut builder = Guard::builder().audience(AUD).disable_token_cache();
        for i in 0..n {
            builder = builder.issuer(hs256(Issuer::new(format!("https://t{i}.example.com"))));
        }
        let guard = builder.build().expect("guard");
        let last = token(&format!("https://t{}.example.com", n - 1), None);
        rt.block_on(guard.validate(&last)).expect("valid");
        group.bench_function(format!("{n} exact issuers"), |b| {
            b.to_async(&rt)
                .iter(|| async { guard.validate(&last).await.expect("valid") })
        });

        let tenants: Vec<String> = (0..n).map(|i| format!("tenant{i}")).collect();
        let guard = Guard::builder()
            .audience(AUD)
            .disable_token_cache()
            .issuer(hs256(
                Issuer::tenant_template("https://login.example.com/{tenant}/v2.0")
                    .tenants(tenants.iter().cloned()),
            ))
            .build()
            .expect("guard");
        let tenant = &tenants[n - 1];
        let last = token(
            &format!("https://login.example.com/{tenant}/v2.0"),
            Some(tenant),
        );
        rt.block_on(guard.validate(&last)).expect("valid");
        group.bench_function(format!("{n} listed tenants"), |b| {
            b.to_async(&rt)
                .iter(|| async { guard.validate(&last).await.expect("valid") })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
