//! Replays every file of every fuzz target's checked-in corpus (fuzz/corpus/) through
//! the same harness the libFuzzer targets run, as ordinary stable tests: CI catches
//! a regression on a known-interesting input without a fuzzing engine.

// The harness is the fuzz crate's; each target's entry is used once here.
#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::path::Path;

/// Runs `target` on each corpus file and says which one failed; an empty or
/// missing corpus is a failure too, so a renamed directory cannot pass silently.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
}

#[test]
fn extract_token_corpus_replays_cleanly() {
    replay("extract_token", harness::extract_token);
}

#[test]
fn jws_parse_corpus_replays_cleanly() {
    replay("jws_parse", harness::jws_parse);
}

#[test]
fn validate_corpus_replays_cleanly() {
    replay("validate", harness::validate_bytes);
}

#[test]
fn validate_structured_corpus_replays_cleanly() {
    replay("validate_structured", harness::validate_structured);
}

#[test]
fn jwks_corpus_replays_cleanly() {
    replay("jwks", harness::jwks);
}

#[test]
fn discovery_corpus_replays_cleanly() {
    replay("discovery", harness::discovery);
}

#[cfg(feature = "gateway")]
#[test]
fn gateway_path_corpus_replays_cleanly() {
    replay("gateway_path", harness::gateway_path);
}

#[test]
fn dpop_proof_corpus_replays_cleanly() {
    replay("dpop_proof", harness::dpop_proof);
}

#[test]
fn the_fixture_dpop_proof_is_accepted_once() {
    // Guards the structure-aware modes: a fixture proof the guard refused would
    // leave every re-signed mutation short of the claim checks.
    let (header, claims) = harness::dpop_parts("fixture-check");
    let proof = harness::dpop_sign(header.as_bytes(), claims.as_bytes());
    let mut headers = http::HeaderMap::new();
    headers.insert("dpop", proof.parse().unwrap());
    let verify = || {
        bearer_guard::__fuzz::verify_dpop_proof(
            harness::dpop_guard(),
            &headers,
            &http::Method::GET,
            &http::Uri::from_static("/orders"),
            harness::DPOP_ACCESS_TOKEN,
            &harness::dpop_jkt(),
            harness::NOW,
        )
    };
    let first = verify();
    assert!(first.is_ok(), "{first:?}");
    assert!(verify().is_err(), "a replay");
}

#[test]
fn the_fixture_token_is_valid_for_both_issuers() {
    // Guards the structure-aware target: if the fixture token were refused, every
    // mutation would be tested against a token that never got past the checks.
    for issuer in 0..2 {
        let token = harness::valid_token(issuer);
        let verified = bearer_guard::__fuzz::validate_at(harness::guard(), &token, harness::NOW);
        assert!(verified.is_ok(), "issuer {issuer}: {verified:?}");
    }
}
