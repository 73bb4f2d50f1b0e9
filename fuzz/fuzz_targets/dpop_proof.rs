#![no_main]

// Each target uses one entry of the shared harness.
#[allow(dead_code)]
#[path = "../src/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::dpop_proof(data));
