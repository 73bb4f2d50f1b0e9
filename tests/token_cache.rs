//! The verified-token cache never changes an answer: expiry, key rotation and
//! route scopes are still enforced for tokens served from it.

mod common;

use bearer_guard::clock::{Clock, ManualClock};
use bearer_guard::error::TokenProblem;
use bearer_guard::{AuthError, Guard, TokenCacheStats};
use common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn cached_token_still_expires_on_the_clock() {
    let (clock, server, guard) = fixture().await;
    let token = svc_token(&server).await;
    for _ in 0..3 {
        assert!(guard.validate(&token).await.is_ok());
    }
    at(&clock, 300 + 60);
    assert!(matches!(
        guard.validate(&token).await,
        Err(AuthError::InvalidToken(TokenProblem::Expired { .. }))
    ));
}

/// Verifies `token` twice: the second verification caches it.
async fn verify_until_cached(guard: &Guard, token: &str) {
    for _ in 0..2 {
        assert!(guard.validate(token).await.is_ok());
    }
}

fn stats(guard: &Guard) -> TokenCacheStats {
    guard.token_cache_stats().expect("cache on")
}

#[tokio::test]
async fn a_token_is_cached_on_its_second_verification_only() {
    let (_clock, server, guard) = fixture().await;
    let once = svc_token(&server).await;
    assert!(guard.validate(&once).await.is_ok());
    assert_eq!(stats(&guard).entries, 0, "a token used once is not cached");

    let reused = svc_token(&server).await;
    verify_until_cached(&guard, &reused).await;
    assert!(guard.validate(&reused).await.is_ok());
    let s = stats(&guard);
    assert_eq!((s.entries, s.hits, s.misses), (1, 1, 3), "{s:?}");
}

#[tokio::test]
async fn cached_token_is_reverified_when_its_key_leaves_the_key_set() {
    let (clock, server, guard) = fixture().await;
    let token = token_with(
        &server,
        &clock,
        json!({}),
        json!({"exp": clock.unix_seconds() + 100_000}),
    );
    verify_until_cached(&guard, &token).await;
    assert!(guard.validate(&token).await.is_ok());
    let old = server.active_kid();
    server.rotate_signing_key(bearer_guard::authz_server::SigningAlgorithm::Rs256);
    assert!(server.retire_key(&old));
    guard.prefetch().await.unwrap();
    assert!(matches!(
        guard.validate(&token).await,
        Err(AuthError::InvalidToken(TokenProblem::UnknownKid { .. }))
    ));
    let s = stats(&guard);
    assert_eq!((s.hits, s.stale), (1, 1), "{s:?}");
    assert_eq!(s.entries, 0, "the stale entry is dropped");
}

#[tokio::test]
async fn cached_token_stays_cached_when_a_refresh_republishes_its_key() {
    let (_clock, server, guard) = fixture().await;
    let token = svc_token(&server).await;
    verify_until_cached(&guard, &token).await;

    let fetches = server.jwks_fetch_count();
    guard.prefetch().await.unwrap();
    assert_eq!(server.jwks_fetch_count(), fetches + 1, "a real refresh");
    assert!(guard.validate(&token).await.is_ok());
    let s = stats(&guard);
    assert_eq!((s.hits, s.stale), (1, 0), "{s:?}");
}

#[tokio::test]
async fn cached_token_stays_cached_when_another_key_is_rotated_in() {
    let (_clock, server, guard) = fixture().await;
    let old = svc_token(&server).await;
    verify_until_cached(&guard, &old).await;

    server.rotate_signing_key(bearer_guard::authz_server::SigningAlgorithm::Es256);
    let new = svc_token(&server).await;
    guard.prefetch().await.unwrap();
    assert!(guard.validate(&old).await.is_ok());
    assert!(guard.validate(&new).await.is_ok());
    let s = stats(&guard);
    assert_eq!((s.hits, s.stale), (1, 0), "{s:?}");
}

#[tokio::test]
async fn the_cache_holds_at_most_max_entries_tokens() {
    let (_clock, server, guard) = fixture_with(|g| g.token_cache_max_entries(3)).await;
    for _ in 0..10 {
        let token = svc_token(&server).await;
        verify_until_cached(&guard, &token).await;
    }
    let s = stats(&guard);
    assert!((1..=3).contains(&s.entries), "{s:?}");
    assert_eq!(s.misses, 20);
}

#[tokio::test]
async fn cached_token_is_still_held_to_each_routes_scope() {
    let (_clock, server, guard) = fixture().await;
    let api = serve(orders_api(&guard)).await;
    let reader = server
        .client_credentials_token("reader", &["orders:read"])
        .await
        .unwrap();
    for _ in 0..3 {
        let get = get_with(format!("{api}/orders"), &reader).await;
        assert_eq!(get.status(), StatusCode::OK);
        let post = post_with(format!("{api}/orders"), &reader).await;
        assert_eq!(post.status(), StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn answers_are_the_same_with_the_cache_off() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let cached = guard_builder(&server, &clock).build().unwrap();
    let uncached = guard_builder(&server, &clock)
        .disable_token_cache()
        .build()
        .unwrap();
    assert!(uncached.token_cache_stats().is_none());
    let good = svc_token(&server).await;
    let expired = token_with(
        &server,
        &clock,
        json!({}),
        json!({"exp": clock.unix_seconds() - 120}),
    );
    let wrong_aud = token_with(&server, &clock, json!({}), json!({"aud": OTHER_API}));
    for token in [&good, &expired, &wrong_aud, &good] {
        for _ in 0..2 {
            let a = cached
                .validate(token)
                .await
                .map(|t| t.claims_json().to_owned());
            let b = uncached
                .validate(token)
                .await
                .map(|t| t.claims_json().to_owned());
            assert_eq!(a, b);
        }
    }
}
