//! The guard against the bundled authorization server over 127.0.0.1: validation
//! rules end to end, the key store's refresh policy, and the layer's answers.

mod common;

use std::time::Duration;

use bearer_guard::authz_server::{JwksBehavior, SignWith, SigningAlgorithm};
use bearer_guard::clock::{Clock, ManualClock};
use bearer_guard::error::TokenProblem;
use bearer_guard::{AuthError, Guard, Issuer};
use common::*;
use reqwest::StatusCode;
use reqwest::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};

// ------------------------------------------------------------ validation rules

#[tokio::test]
async fn accepts_tokens_of_every_signing_algorithm() {
    let clock = ManualClock::starting_now();
    for alg in [
        SigningAlgorithm::Rs256,
        SigningAlgorithm::Es256,
        SigningAlgorithm::EdDsa,
    ] {
        let server = authz_server(&clock, |b| b.signing_algorithm(alg)).await;
        let guard = guard_builder(&server, &clock).build().unwrap();
        let token = svc_token(&server).await;
        let verified = guard.validate(&token).await.expect("valid");
        assert_eq!(
            verified.algorithm().map(|a| a.as_str()),
            Some(alg.jws_name())
        );
        assert_eq!(verified.subject(), Some("svc"));
        assert_eq!(verified.client_id(), Some("svc"));
        assert!(verified.scopes().contains("orders:read"));
        assert_eq!(verified.token_type(), Some("at+jwt"));
        assert_eq!(verified.key_id(), Some(server.active_kid().as_str()));
    }
}

#[tokio::test]
async fn rejects_alg_none() {
    let (clock, server, guard) = fixture().await;
    let token = token_with(&server, &clock, json!({}), json!({}));
    let (header_and_claims, _) = token.rsplit_once('.').unwrap();
    let (_, claims) = header_and_claims.split_once('.').unwrap();
    for alg in ["none", "None", "NONE"] {
        let header = base64_json(&json!({"alg": alg, "typ": "at+jwt"}));
        for sig in ["", "AAAA"] {
            let forged = format!("{header}.{claims}.{sig}");
            let e = guard.validate(&forged).await.unwrap_err();
            assert!(matches!(e, AuthError::InvalidToken(_)), "{alg} {e:?}");
        }
    }
    assert_eq!(
        server.jwks_fetch_count(),
        0,
        "nothing fetched for a forged header"
    );
}

fn base64_json(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn rejects_hs256_signed_with_rsa_public_key() {
    use aws_lc_rs::hmac;
    let (clock, server, guard) = fixture().await;
    let jwks = http()
        .get(server.jwks_uri())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header = base64_json(&json!({"alg": "HS256", "kid": server.active_kid(), "typ": "at+jwt"}));
    let claims = base64_json(&claims(&server, &clock));
    let input = format!("{header}.{claims}");
    // Key the HMAC with what an attacker can see: the JWKS text and the modulus.
    let modulus: Value = serde_json::from_str(&jwks).unwrap();
    for secret in [
        jwks.as_bytes(),
        modulus["keys"][0]["n"].as_str().unwrap().as_bytes(),
    ] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
        let forged = format!("{input}.{}", {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        });
        assert_eq!(
            problem(guard.validate(&forged).await),
            TokenProblem::AlgorithmNotAllowed("HS256".into())
        );
    }
}

#[tokio::test]
async fn rejects_crit_header_and_ignores_jku() {
    let (clock, server, guard) = fixture().await;
    let crit = token_with(&server, &clock, json!({"crit": ["exp"]}), json!({}));
    assert_eq!(
        problem(guard.validate(&crit).await),
        TokenProblem::CritHeader
    );
    // jku points at a server that would count a fetch: it must never be asked.
    let decoy = authz_server(&clock, |b| b).await;
    let jku = token_with(&server, &clock, json!({"jku": decoy.jwks_uri()}), json!({}));
    assert!(guard.validate(&jku).await.is_ok());
    assert_eq!(decoy.jwks_fetch_count(), 0);
}

#[tokio::test]
async fn rejects_string_exp_and_missing_exp() {
    let (clock, server, guard) = fixture().await;
    let exp = (clock.unix_seconds() + 300).to_string();
    let string_exp = token_with(&server, &clock, json!({}), json!({"exp": exp}));
    assert!(matches!(
        problem(guard.validate(&string_exp).await),
        TokenProblem::BadClaims(_)
    ));
    let no_exp = token_with(&server, &clock, json!({}), json!({"exp": null}));
    assert_eq!(
        problem(guard.validate(&no_exp).await),
        TokenProblem::ExpirationMissing
    );
}

#[tokio::test]
async fn rejects_unknown_issuer_without_fetching() {
    let (clock, server, guard) = fixture().await;
    for iss in [
        format!("{}/", server.issuer()),
        server.issuer().to_uppercase(),
        format!("{}/tenant", server.issuer()),
        "https://evil.example".to_owned(),
    ] {
        let token = token_with(&server, &clock, json!({}), json!({"iss": iss}));
        assert!(matches!(
            problem(guard.validate(&token).await),
            TokenProblem::IssuerNotAllowed { .. }
        ));
    }
    let no_iss = token_with(&server, &clock, json!({}), json!({"iss": null}));
    assert_eq!(
        problem(guard.validate(&no_iss).await),
        TokenProblem::IssuerMissing
    );
    assert_eq!(server.jwks_fetch_count(), 0);
}

#[tokio::test]
async fn checks_times_with_leeway_on_the_injected_clock() {
    let (clock, server, guard) = fixture().await;
    let token = svc_token(&server).await;
    assert!(guard.validate(&token).await.is_ok());
    at(&clock, 300 + 59); // lifetime 300 s, leeway 60 s
    assert!(guard.validate(&token).await.is_ok());
    at(&clock, 1);
    assert!(matches!(
        problem(guard.validate(&token).await),
        TokenProblem::Expired { .. }
    ));

    let now = clock.unix_seconds();
    let future = token_with(&server, &clock, json!({}), json!({"nbf": now + 61}));
    assert!(matches!(
        problem(guard.validate(&future).await),
        TokenProblem::NotYetValid { .. }
    ));
    let iat = token_with(&server, &clock, json!({}), json!({"iat": now + 61}));
    assert!(matches!(
        problem(guard.validate(&iat).await),
        TokenProblem::IssuedInFuture { .. }
    ));
    // `validate_at` answers "was it valid then?".
    assert!(guard.validate_at(&token, now - 300).await.is_ok());
}

#[tokio::test]
async fn checks_audience_string_or_array() {
    let (clock, server, guard) = fixture().await;
    let array = token_with(&server, &clock, json!({}), json!({"aud": ["x", API]}));
    assert!(guard.validate(&array).await.is_ok());
    for aud in [
        json!(OTHER_API),
        json!([]),
        json!(format!("{API}/")),
        json!("HTTPS://API.EXAMPLE.COM"),
    ] {
        let t = token_with(&server, &clock, json!({}), json!({"aud": aud}));
        assert!(matches!(
            problem(guard.validate(&t).await),
            TokenProblem::AudienceMismatch { .. }
        ));
    }
    let none = token_with(&server, &clock, json!({}), json!({"aud": null}));
    assert_eq!(
        problem(guard.validate(&none).await),
        TokenProblem::AudienceMissing
    );
    // A token the server issued for another resource (RFC 8707).
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", OTHER_API),
    ];
    let body: Value = http()
        .post(server.token_endpoint())
        .basic_auth("svc", Some("svc-secret"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other = body["access_token"].as_str().unwrap();
    assert!(matches!(
        problem(guard.validate(other).await),
        TokenProblem::AudienceMismatch { .. }
    ));
}

#[tokio::test]
async fn strict_rfc9068_refuses_plain_jwts() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let lenient = guard_builder(&server, &clock).build().unwrap();
    let strict = guard_builder(&server, &clock)
        .strict_rfc9068()
        .build()
        .unwrap();
    let id_token_like = token_with(&server, &clock, json!({"typ": "JWT"}), json!({}));
    assert!(lenient.validate(&id_token_like).await.is_ok());
    assert!(matches!(
        problem(strict.validate(&id_token_like).await),
        TokenProblem::TypNotAccepted(_)
    ));
}

#[tokio::test]
async fn rejects_a_valid_signature_from_a_key_the_issuer_never_published() {
    let (clock, server, guard) = fixture().await;
    let forged = server.mint(
        json!({}),
        claims(&server, &clock),
        SignWith::Unpublished(SigningAlgorithm::Rs256),
    );
    assert!(matches!(
        problem(guard.validate(&forged).await),
        TokenProblem::UnknownKid { .. }
    ));
    // The same key under the published kid: the signature does not verify.
    let kid = server.active_kid();
    let forged = server.mint(
        json!({"kid": kid}),
        claims(&server, &clock),
        SignWith::Unpublished(SigningAlgorithm::Rs256),
    );
    assert_eq!(
        problem(guard.validate(&forged).await),
        TokenProblem::BadSignature
    );
}

// ------------------------------------------------------------ the key store

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    let (_clock, server, guard) = fixture().await;
    let token = svc_token(&server).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (guard, token) = (guard.clone(), token.clone());
            tokio::spawn(async move { guard.validate(&token).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("valid");
    }
    assert_eq!(server.jwks_fetch_count(), 1);
}

#[tokio::test]
async fn unknown_kid_refetches_once_per_cooldown() {
    let (clock, server, guard) = fixture().await;
    guard.prefetch().await.unwrap();
    assert_eq!(server.jwks_fetch_count(), 1);
    let unknown = |s: &_| {
        server.mint(
            json!({"kid": format!("random-{s}")}),
            claims(&server, &clock),
            SignWith::Active,
        )
    };
    for i in 0..1000 {
        assert!(guard.validate(&unknown(&i)).await.is_err());
    }
    assert_eq!(
        server.jwks_fetch_count(),
        2,
        "one refetch for a flood of unknown kids"
    );
    at(&clock, 29);
    assert!(guard.validate(&unknown(&1_000_001)).await.is_err());
    assert_eq!(server.jwks_fetch_count(), 2);
    at(&clock, 1);
    assert!(guard.validate(&unknown(&1_000_002)).await.is_err());
    assert_eq!(
        server.jwks_fetch_count(),
        3,
        "a new refetch once the cooldown has passed"
    );
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let (clock, server, guard) = fixture().await;
    guard.prefetch().await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let token = server.mint(
                json!({"kid": format!("k{i}")}),
                claims(&server, &clock),
                SignWith::Active,
            );
            let guard = guard.clone();
            tokio::spawn(async move { guard.validate(&token).await.is_err() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(server.jwks_fetch_count(), 2);
}

#[tokio::test]
async fn rotated_keys_are_picked_up_without_restart_and_removed_kids_stop_validating() {
    let (_clock, server, guard) = fixture().await;
    let old_token = svc_token(&server).await;
    assert!(guard.validate(&old_token).await.is_ok());
    let old_kid = server.active_kid();

    let new_kid = server.rotate_signing_key(SigningAlgorithm::Es256);
    let new_token = svc_token(&server).await;
    let verified = guard
        .validate(&new_token)
        .await
        .expect("new kid found by one refetch");
    assert_eq!(verified.key_id(), Some(new_kid.as_str()));
    assert!(
        guard.validate(&old_token).await.is_ok(),
        "old kid still published"
    );

    assert!(server.retire_key(&old_kid));
    guard.prefetch().await.unwrap(); // the next refresh
    assert!(matches!(
        problem(guard.validate(&old_token).await),
        TokenProblem::UnknownKid { .. }
    ));
    assert!(guard.validate(&new_token).await.is_ok());
}

#[tokio::test]
async fn keeps_last_known_good_keys_when_refresh_fails() {
    for fault in [
        JwksBehavior::Status(500),
        JwksBehavior::Garbage("<html>oops</html>".into()),
        JwksBehavior::EmptySet,
        JwksBehavior::Oversized(600 * 1024),
    ] {
        let (clock, server, guard) = fixture().await;
        let token = token_with(
            &server,
            &clock,
            json!({}),
            json!({"exp": clock.unix_seconds() + 100_000}),
        );
        assert!(guard.validate(&token).await.is_ok());

        server.set_jwks_behavior(fault.clone());
        at(&clock, 3600); // well past the 10 min TTL
        assert!(
            guard.prefetch().await.is_err(),
            "{fault:?}: the refresh fails"
        );
        assert!(
            guard.validate(&token).await.is_ok(),
            "{fault:?}: last-known-good keys"
        );
        let status = &guard.key_status()[0];
        assert!(status.ready());
        assert!(status.consecutive_failures >= 1);
        assert!(status.last_error.is_some(), "{fault:?}");

        // Past the staleness limit the keys are no longer used.
        at(&clock, 24 * 3600);
        assert!(matches!(
            guard.validate(&token).await,
            Err(AuthError::KeysUnavailable { .. })
        ));
    }
}

#[tokio::test]
async fn issuer_down_from_the_start_gets_503_with_retry_after() {
    let (clock, server, guard) = fixture().await;
    server.set_jwks_behavior(JwksBehavior::Status(503));
    let api = serve(orders_api(&guard)).await;
    let token = svc_token(&server).await;
    let r = get_with(format!("{api}/orders"), &token).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
    assert!(
        r.headers()[RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Within the retry interval nothing more is fetched; after it, the issuer is back.
    let fetches = server.jwks_fetch_count();
    let r = get_with(format!("{api}/orders"), &token).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.jwks_fetch_count(), fetches);
    server.set_jwks_behavior(JwksBehavior::Normal);
    at(&clock, 5);
    let r = get_with(format!("{api}/orders"), &token).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn slow_issuer_times_out_and_never_hangs_a_request() {
    let (_clock, server, guard) =
        fixture_with(|g| g.fetch_timeout(Duration::from_millis(200))).await;
    server.set_jwks_behavior(JwksBehavior::Delay(Duration::from_secs(30)));
    let token = svc_token(&server).await;
    let e = guard.validate(&token).await.unwrap_err();
    assert!(
        matches!(&e, AuthError::KeysUnavailable { reason, .. } if reason.contains("timed out")),
        "{e:?}"
    );
}

#[tokio::test]
async fn refresh_ahead_never_makes_a_request_wait() {
    let (clock, server, guard) = fixture_with(|g| g.fetch_timeout(Duration::from_secs(60))).await;
    let token = token_with(
        &server,
        &clock,
        json!({}),
        json!({"exp": clock.unix_seconds() + 100_000}),
    );
    guard.prefetch().await.unwrap();
    server.set_jwks_behavior(JwksBehavior::Delay(Duration::from_secs(60)));
    at(&clock, 500); // past 80% of the 600 s TTL: a background refresh starts
    let quick = tokio::time::timeout(Duration::from_secs(10), guard.validate(&token)).await;
    assert!(quick.expect("did not wait for the refresh").is_ok());
    // The refresh did start (it is waiting on the slow server).
    let started = async {
        while server.jwks_fetch_count() < 2 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), started)
        .await
        .expect("refresh started");
}

#[tokio::test]
async fn jwks_ttl_follows_cache_control_within_bounds() {
    for (max_age, expected) in [
        (Some(600), 600),
        (Some(10), 300),                  // clamped up to 5 min
        (Some(7 * 24 * 3600), 24 * 3600), // clamped down to 24 h
        (None, 600),                      // absent: 10 min
    ] {
        let clock = ManualClock::starting_now();
        let server = authz_server(&clock, |b| match max_age {
            Some(s) => b.jwks_max_age(Duration::from_secs(s)),
            None => b.without_jwks_cache_control(),
        })
        .await;
        let guard = guard_builder(&server, &clock).build().unwrap();
        guard.prefetch().await.unwrap();
        let s = &guard.key_status()[0];
        let ttl = s
            .expires_at
            .unwrap()
            .duration_since(s.fetched_at.unwrap())
            .unwrap();
        assert_eq!(ttl, Duration::from_secs(expected), "max-age {max_age:?}");
    }
}

#[tokio::test]
async fn redirect_to_another_host_is_not_followed() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let other = authz_server(&clock, |b| b).await;
    let elsewhere = other.jwks_uri().replace("127.0.0.1", "localhost");
    server.set_jwks_behavior(JwksBehavior::RedirectTo(elsewhere));
    let guard = guard_builder(&server, &clock).build().unwrap();
    assert!(guard.prefetch().await.is_err());
    assert_eq!(other.jwks_fetch_count(), 0);
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_checks_the_issuer() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let guard = Guard::builder()
        .issuer(server.issuer())
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    let token = svc_token(&server).await;
    assert!(guard.validate(&token).await.is_ok());

    // Configured with a trailing slash, the metadata's issuer does not match.
    let slash = Guard::builder()
        .issuer(format!("{}/", server.issuer()))
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    let e = slash.prefetch().await.unwrap_err();
    assert!(
        matches!(&e, AuthError::KeysUnavailable { reason, .. } if reason.contains("not the configured")),
        "{e}"
    );
}

#[tokio::test]
async fn a_key_from_one_issuer_never_verifies_another_issuers_token() {
    let clock = ManualClock::starting_now();
    let a = authz_server(&clock, |b| b).await;
    let b = authz_server(&clock, |b| b).await;
    let guard = Guard::builder()
        .issuer(Issuer::new(a.issuer()).jwks_uri(a.jwks_uri()))
        .issuer(Issuer::new(b.issuer()).jwks_uri(b.jwks_uri()))
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    // Signed by A's published key, claiming to come from B.
    let mut c = claims(&a, &clock);
    c["iss"] = b.issuer().into();
    let cross = a.mint(json!({}), c, SignWith::Active);
    assert!(matches!(
        problem(guard.validate(&cross).await),
        TokenProblem::UnknownKid { .. }
    ));
    let same_kid = a.mint(
        json!({"kid": b.active_kid()}),
        {
            let mut c = claims(&a, &clock);
            c["iss"] = b.issuer().into();
            c
        },
        SignWith::Active,
    );
    assert_eq!(
        problem(guard.validate(&same_kid).await),
        TokenProblem::BadSignature
    );
    let genuine = b
        .client_credentials_token("svc", &["orders:read"])
        .await
        .unwrap();
    assert_eq!(guard.validate(&genuine).await.unwrap().issuer_index(), 1);
}

// ------------------------------------------------------------ the layer over HTTP

#[tokio::test]
async fn missing_token_gets_401_without_error_code() {
    let (_clock, _server, guard) = fixture().await;
    let api = serve(orders_api(&guard)).await;
    let r = http().get(format!("{api}/orders")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()[WWW_AUTHENTICATE], r#"Bearer realm="orders""#);
    let r = http()
        .get(format!("{api}/orders"))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[WWW_AUTHENTICATE], r#"Bearer realm="orders""#);
}

#[tokio::test]
async fn malformed_requests_get_400_and_bad_tokens_401() {
    let (_clock, _server, guard) = fixture().await;
    let api = serve(orders_api(&guard)).await;
    let r = http()
        .get(format!("{api}/orders"))
        .header("authorization", "Bearer a.b.c")
        .header("authorization", "Bearer d.e.f")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_request""#)
    );
    for bad in ["Bearer ", "Bearer a b"] {
        let r = http()
            .get(format!("{api}/orders"))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    for bad in ["x.y.z", "eyJ.eyJ.sig", &"a".repeat(20_000)] {
        let r = get_with(format!("{api}/orders"), bad).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
        assert!(
            challenge.starts_with(r#"Bearer realm="orders", error="invalid_token""#),
            "{challenge}"
        );
        assert!(!challenge.contains(&bad[..3.min(bad.len())]) || bad.starts_with('a'));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token");
    }
}

#[tokio::test]
async fn insufficient_scope_gets_403_with_scope() {
    let (_clock, server, guard) = fixture().await;
    let api = serve(orders_api(&guard)).await;
    let reader = server
        .client_credentials_token("reader", &["orders:read"])
        .await
        .unwrap();
    let r = get_with(format!("{api}/orders"), &reader).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = post_with(format!("{api}/orders"), &reader).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.headers()[WWW_AUTHENTICATE],
        r#"Bearer realm="orders", error="insufficient_scope", error_description="token lacks a required scope", scope="orders:write""#
    );
    let writer = server
        .client_credentials_token("svc", &["orders:write"])
        .await
        .unwrap();
    let r = post_with(format!("{api}/orders"), &writer).await;
    assert_eq!(r.status(), StatusCode::OK);
    // any-of: orders:write alone does not satisfy GET's [orders:read, orders:admin]
    let r = get_with(format!("{api}/orders"), &writer).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn error_handler_replaces_the_whole_response() {
    let (_clock, _server, guard) = fixture_with(|g| {
        g.error_handler(|refusal| {
            let e = refusal.error();
            http::Response::builder()
                .status(e.status())
                .header("x-reason", e.reason())
                .body(bytes::Bytes::from_static(b"nope"))
                .unwrap()
        })
    })
    .await;
    let api = serve(orders_api(&guard)).await;
    let r = get_with(format!("{api}/orders"), "x.y.z").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["x-reason"], "malformed");
    assert_eq!(r.text().await.unwrap(), "nope");
}

#[tokio::test]
async fn works_under_plain_hyper() {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceBuilder;

    let (_clock, server, guard) = fixture().await;
    let service = ServiceBuilder::new().layer(guard.layer()).service_fn(
        |req: http::Request<hyper::body::Incoming>| async move {
            let token = req
                .extensions()
                .get::<bearer_guard::VerifiedToken>()
                .cloned();
            let sub = token
                .and_then(|t| t.subject().map(str::to_owned))
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from(
                sub,
            ))))
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    let token = svc_token(&server).await;
    let r = get_with(format!("http://{addr}/"), &token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "svc");
    let r = http().get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn claims_extractor_deserializes_the_applications_type() {
    use axum::routing::get;
    use bearer_guard::axum::Claims;

    #[derive(serde::Deserialize)]
    struct Mine {
        sub: String,
        tenant: String,
    }
    let (clock, server, guard) = fixture().await;
    let app = axum::Router::new()
        .route(
            "/t",
            get(|Claims(c): Claims<Mine>| async move { format!("{}@{}", c.sub, c.tenant) }),
        )
        .layer(guard.layer());
    let api = serve(app).await;
    let with = token_with(&server, &clock, json!({}), json!({"tenant": "acme"}));
    let r = get_with(format!("{api}/t"), &with).await;
    assert_eq!(r.text().await.unwrap(), "alice@acme");
    let without = token_with(&server, &clock, json!({}), json!({}));
    let r = get_with(format!("{api}/t"), &without).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn discovery_falls_back_to_the_rfc8414_path_insertion_form() {
    // An issuer with a path whose metadata lives only at
    // {origin}/.well-known/oauth-authorization-server{path}.
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let jwks: Value = http()
        .get(server.jwks_uri())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let issuer = format!("{origin}/tenant-a");
    let metadata = json!({"issuer": issuer, "jwks_uri": format!("{origin}/tenant-a/keys")});
    let app = axum::Router::new()
        .route(
            "/.well-known/oauth-authorization-server/tenant-a",
            axum::routing::get(move || async move { axum::Json(metadata) }),
        )
        .route(
            "/tenant-a/keys",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let guard = Guard::builder()
        .issuer(issuer.as_str())
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    let token = token_with(&server, &clock, json!({}), json!({"iss": issuer}));
    assert_eq!(guard.validate(&token).await.unwrap().issuer(), issuer);
}

/// Point 8 of issue #10: requests on a new `kid` right after a key rotation
/// must all find it, however they interleave with the forced refresh.
///
/// A request that misses the kid in the keys it read asks for the forced
/// refresh. The old code answered "unknown kid" to a request that looked for
/// the fetch after another request had won the cooldown's compare-exchange but
/// before that one had published its fetch, or after the fetch had installed
/// the new keys and left the slot. Here 64 tasks on eight worker threads each
/// send a stream of requests (token cache off, so each takes the full path)
/// across the fetch, over ten rotations. Those windows are a few instructions
/// wide: this end-to-end run did not catch them in three runs of the old code
/// here; the state they leave is pinned deterministically by the key store's
/// unit test `a_kid_miss_that_finds_no_fetch_to_join_reads_the_keys_installed_meanwhile`.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn every_request_on_a_new_kid_succeeds_while_the_forced_refresh_runs() {
    let (clock, server, guard) = fixture_with(|g| g.disable_token_cache()).await;
    guard.prefetch().await.unwrap();
    const TASKS: usize = 64;
    const REQUESTS_PER_TASK: usize = 16;
    for round in 0..10 {
        // Past the unknown-kid cooldown, so this rotation may force a refresh.
        at(&clock, 31);
        let kid = server.rotate_signing_key(SigningAlgorithm::EdDsa);
        let token = server.mint(json!({}), claims(&server, &clock), SignWith::Active);
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (guard, token, start) = (guard.clone(), token.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let mut failures = Vec::new();
                    for _ in 0..REQUESTS_PER_TASK {
                        if let Err(e) = guard.validate(&token).await {
                            failures.push(e.to_string());
                        }
                        tokio::task::yield_now().await;
                    }
                    failures
                })
            })
            .collect();
        let mut failures = Vec::new();
        for task in tasks {
            failures.extend(task.await.unwrap());
        }
        assert!(
            failures.is_empty(),
            "round {round}: {} of {} requests on the new kid {kid} failed: {:?}",
            failures.len(),
            TASKS * REQUESTS_PER_TASK,
            &failures[..failures.len().min(3)]
        );
    }
}
