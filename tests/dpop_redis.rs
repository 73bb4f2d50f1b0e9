//! The DPoP replay window shared through a real Redis by two guards in two
//! processes, and the fail-closed answer when Redis stops.
//!
//! Its own `main` (no test harness): run as a test it starts `redis-server` on
//! a free loopback port, the bundled authorization server and a guard (replica
//! A), then starts itself again with `--replica` as replica B, a second process
//! with its own guard and the same Redis. A missing `redis-server` fails the
//! test; it is not skipped.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use bearer_guard::Issuer;
use bearer_guard::authz_server::DpopKey;
use bearer_guard::clock::{Clock, ManualClock};
use bearer_guard::sender::{Dpop, RedisReplayStore};
use common::redis::RedisServer;
use common::*;

const ORIGIN: &str = "https://api.example.com";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let [_, flag, issuer, jwks, redis] = args.as_slice()
        && flag == "--replica"
    {
        runtime.block_on(replica(issuer, jwks, redis));
        return;
    }
    // `cargo test` passes harness flags (`--quiet`, filters): none apply here.
    runtime.block_on(two_replicas_share_one_replay_window_and_fail_closed_without_redis());
    println!("test two_replicas_share_one_replay_window_and_fail_closed_without_redis ... ok");
}

/// A guard on the orders API, its replay store in `redis`.
async fn serve_replica(issuer: &str, jwks: &str, redis: &str, clock: impl Clock) -> String {
    let store = RedisReplayStore::connect(redis)
        .await
        .expect("Redis reachable");
    let guard = bearer_guard::Guard::builder()
        .issuer(Issuer::new(issuer).jwks_uri(jwks))
        .audience(API)
        .clock(clock)
        .dpop(Dpop::new(ORIGIN).replay_store(store))
        .build()
        .expect("guard");
    serve(orders_api(&guard)).await
}

/// Replica B: serves until its standard input closes, printing its URL first.
async fn replica(issuer: &str, jwks: &str, redis: &str) {
    let url = serve_replica(issuer, jwks, redis, bearer_guard::clock::SystemClock).await;
    println!("{url}");
    std::io::stdout().flush().expect("stdout");
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    })
    .await
    .expect("stdin watcher");
}

async fn get_me(url: &str, token: &str, proof: &str) -> u16 {
    http()
        .get(format!("{url}/me"))
        .dpop(token, proof)
        .send()
        .await
        .expect("GET /me")
        .status()
        .as_u16()
}

async fn two_replicas_share_one_replay_window_and_fail_closed_without_redis() {
    let mut redis = RedisServer::start().await;
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let a = serve_replica(
        server.issuer(),
        &server.jwks_uri(),
        &redis.url,
        clock.clone(),
    )
    .await;

    let mut b_process = Command::new(std::env::current_exe().expect("own binary"))
        .args(["--replica", server.issuer(), &server.jwks_uri(), &redis.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("replica B starts");
    let mut line = String::new();
    BufReader::new(b_process.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("replica B prints its URL");
    let b = line.trim().to_owned();
    assert!(b.starts_with("http://127.0.0.1:"), "replica B said {b:?}");

    let key = DpopKey::generate();
    let token = dpop_bound_token(&server, &clock, &key);
    let proof = || {
        key.proof("GET", &format!("{ORIGIN}/me"))
            .access_token(&token)
            .iat(clock.unix_seconds())
            .sign()
    };

    // A proof used at A is a replay at B, and the other way round.
    let first = proof();
    assert_eq!(get_me(&a, &token, &first).await, 200);
    assert_eq!(
        get_me(&b, &token, &first).await,
        401,
        "B accepted A's proof"
    );
    let second = proof();
    assert_eq!(get_me(&b, &token, &second).await, 200);
    assert_eq!(
        get_me(&a, &token, &second).await,
        401,
        "A accepted B's proof"
    );
    assert_eq!(get_me(&a, &token, &second).await, 401);

    // Redis stops: fresh, valid proofs are refused with 503 by both.
    redis.stop();
    assert_eq!(get_me(&a, &token, &proof()).await, 503);
    assert_eq!(get_me(&b, &token, &proof()).await, 503);
    // Plain bearer tokens need no replay store.
    assert_eq!(
        get_with(format!("{a}/me"), &svc_token(&server).await)
            .await
            .status(),
        200
    );

    drop(b_process.stdin.take()); // replica B exits when its stdin closes
    let status = b_process.wait().expect("replica B exits");
    assert!(status.success(), "replica B: {status}");
}
