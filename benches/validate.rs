//! Full validation of one token beside the raw signature check of the same key, per
//! algorithm, so the overhead of everything that is not crypto shows as a ratio;
//! with the verified-token cache off (every request verifies) and on: a reused
//! token (a hit) and a token never seen before (a miss; a token is cached on its
//! second verification).
//!
//! The `DPoP` group: a DPoP-bound ES256 token with a fresh ES256 proof per
//! request (one more signature check, the proof's JWK parsed, the replay store),
//! beside the same kind of token as a plain bearer token.
//!
//! `cargo bench --bench validate`

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ParsedPublicKey, RsaEncoding,
    RsaPublicKeyComponents, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard::{Guard, Issuer};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

const ISS: &str = "https://login.example.com";
const AUD: &str = "https://api.example.com";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

type Signer = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// One signing key, its JWK, and how to verify its signatures raw.
struct Case {
    name: &'static str,
    jwk: Value,
    sign: Signer,
    raw: ParsedPublicKey,
}

fn rsa(
    name: &'static str,
    enc: &'static dyn RsaEncoding,
    verify: &'static signature::RsaParameters,
) -> Case {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa keygen");
    let c = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
    let raw = c.to_parsed_public_key(verify).expect("parse");
    let jwk = json!({"kty": "RSA", "kid": name, "alg": name, "n": b64(&c.n), "e": b64(&c.e)});
    let rng = SystemRandom::new();
    Case {
        name,
        jwk,
        raw,
        sign: Box::new(move |m| {
            let mut sig = vec![0; key.public_modulus_len()];
            key.sign(enc, &rng, m, &mut sig).expect("sign");
            sig
        }),
    }
}

fn ec() -> Case {
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("keygen");
    let point = key.public_key().as_ref().to_vec();
    let verify: &'static dyn VerificationAlgorithm = &signature::ECDSA_P256_SHA256_FIXED;
    let raw = ParsedPublicKey::new(verify, &point).expect("parse");
    let jwk = json!({"kty": "EC", "kid": "ES256", "alg": "ES256", "crv": "P-256",
                     "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let rng = SystemRandom::new();
    Case {
        name: "ES256",
        jwk,
        raw,
        sign: Box::new(move |m| key.sign(&rng, m).expect("sign").as_ref().to_vec()),
    }
}

fn ed() -> Case {
    let key = Ed25519KeyPair::generate().expect("keygen");
    let public = key.public_key().as_ref().to_vec();
    let raw = ParsedPublicKey::new(&signature::ED25519, &public).expect("parse");
    let jwk =
        json!({"kty": "OKP", "kid": "EdDSA", "alg": "EdDSA", "crv": "Ed25519", "x": b64(&public)});
    Case {
        name: "EdDSA",
        jwk,
        raw,
        sign: Box::new(move |m| key.sign(m).as_ref().to_vec()),
    }
}

fn bench(c: &mut Criterion) {
    let cases = vec![
        rsa(
            "RS256",
            &signature::RSA_PKCS1_SHA256,
            &signature::RSA_PKCS1_2048_8192_SHA256,
        ),
        rsa(
            "PS256",
            &signature::RSA_PSS_SHA256,
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
        ec(),
        ed(),
    ];
    let jwks = json!({"keys": cases.iter().map(|c| c.jwk.clone()).collect::<Vec<_>>()}).to_string();
    let builder = || {
        Guard::builder()
            .issuer(Issuer::new(ISS).jwks_document(jwks.clone()))
            .audience(AUD)
    };
    let cold = builder().disable_token_cache().build().expect("guard");
    let warm = builder().build().expect("guard");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let claims = json!({"iss": ISS, "sub": "bench-client", "aud": AUD, "exp": now + 3600, "iat": now,
                        "nbf": now, "jti": "8d1c6f8e-5b1e-4f7a-9d1c", "client_id": "bench-client",
                        "scope": "read:data write:data"});
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    for case in &cases {
        let header = json!({"alg": case.name, "kid": case.name, "typ": "at+jwt"});
        let header = b64(header.to_string().as_bytes());
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let sig = (case.sign)(input.as_bytes());
        let token = format!("{input}.{}", b64(&sig));
        // Tokens that differ from the bench token in their jti only, each new.
        let serial = Cell::new(0u64);
        let fresh = || {
            let mut claims = claims.clone();
            serial.set(serial.get() + 1);
            claims["jti"] = json!(format!("fresh-{}", serial.get()));
            let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
            let sig = (case.sign)(input.as_bytes());
            format!("{input}.{}", b64(&sig))
        };
        for guard in [&cold, &warm] {
            rt.block_on(guard.validate(&token))
                .expect("the bench token validates");
        }

        let mut group = c.benchmark_group(case.name);
        group.bench_function("raw verify", |b| {
            b.iter(|| {
                case.raw
                    .verify_sig(input.as_bytes(), &sig)
                    .expect("verifies")
            })
        });
        group.bench_function("validate, cache off", |b| {
            b.to_async(&rt)
                .iter(|| async { cold.validate(&token).await.expect("valid") })
        });
        // Signing the new token is setup, not measured.
        group.bench_function("validate, cache on (new token)", |b| {
            b.to_async(&rt).iter_batched(
                fresh,
                |t| {
                    let warm = &warm;
                    async move { warm.validate(&t).await.expect("valid") }
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("validate, cache off (new token)", |b| {
            b.to_async(&rt).iter_batched(
                fresh,
                |t| {
                    let cold = &cold;
                    async move { cold.validate(&t).await.expect("valid") }
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("validate, cache hit", |b| {
            b.to_async(&rt)
                .iter(|| async { warm.validate(&token).await.expect("valid") })
        });
        group.finish();
    }
}

/// The cost of a DPoP check beside the access-token check it comes with.
fn bench_dpop(c: &mut Criterion) {
    use bearer_guard::authz_server::DpopKey;
    use bearer_guard::sender::{Dpop, MemoryReplayStore};

    const ORIGIN: &str = "https://api.example.com";
    let case = ec();
    let jwks = json!({"keys": [case.jwk.clone()]}).to_string();
    let builder = || {
        Guard::builder()
            .issuer(Issuer::new(ISS).jwks_document(jwks.clone()))
            .audience(AUD)
            // Every proof of the run stays recorded: room for all of them.
            .dpop(Dpop::new(ORIGIN).replay_store(MemoryReplayStore::new(50_000_000)))
    };
    let cold = builder().disable_token_cache().build().expect("guard");
    let warm = builder().build().expect("guard");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let key = DpopKey::generate();
    let sign = |cnf: Option<Value>| {
        let mut claims = json!({"iss": ISS, "sub": "bench-client", "aud": AUD, "exp": now + 3600,
                                "iat": now, "nbf": now, "jti": "8d1c6f8e", "client_id": "bench-client",
                                "scope": "read:data write:data"});
        if let Some(cnf) = cnf {
            claims["cnf"] = cnf;
        }
        let header = b64(json!({"alg": "ES256", "kid": "ES256", "typ": "at+jwt"})
            .to_string()
            .as_bytes());
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        format!("{input}.{}", b64(&(case.sign)(input.as_bytes())))
    };
    let bearer = sign(None);
    let bound = sign(Some(json!({"jkt": key.thumbprint()})));
    let method = http::Method::GET;
    let uri: http::Uri = "/orders".parse().expect("uri");
    let extensions = http::Extensions::new();
    let bearer_headers = {
        let mut h = http::HeaderMap::new();
        h.insert(
            "authorization",
            format!("Bearer {bearer}").parse().expect("header"),
        );
        h
    };
    // A request with the bound token and a proof never used before.
    let dpop_request = || {
        let proof = key
            .proof("GET", &format!("{ORIGIN}/orders"))
            .access_token(&bound)
            .sign();
        let mut h = http::HeaderMap::new();
        h.insert(
            "authorization",
            format!("DPoP {bound}").parse().expect("header"),
        );
        h.insert("dpop", proof.parse().expect("header"));
        h
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for guard in [&cold, &warm] {
        rt.block_on(guard.validate_request(&method, &uri, &dpop_request(), &extensions))
            .expect("the bench request validates");
    }

    let mut group = c.benchmark_group("DPoP");
    for (name, guard) in [("cache off", &cold), ("cache hit", &warm)] {
        group.bench_function(format!("bearer ES256 token, {name}"), |b| {
            b.to_async(&rt).iter(|| async {
                guard
                    .validate_request(&method, &uri, &bearer_headers, &extensions)
                    .await
                    .expect("valid")
            })
        });
        // Signing the proof is setup, not measured.
        group.bench_function(format!("DPoP-bound token + ES256 proof, {name}"), |b| {
            b.to_async(&rt).iter_batched(
                dpop_request,
                |headers| {
                    let (method, uri, extensions) = (&method, &uri, &extensions);
                    async move {
                        guard
                            .validate_request(method, uri, &headers, extensions)
                            .await
                            .expect("valid")
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_dpop);
criterion_main!(benches);
