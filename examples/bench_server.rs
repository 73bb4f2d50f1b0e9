//! The API the load script measures: `GET /api/data` needs scope `read:data` and
//! answers a small JSON body. Configuration from the environment, so any other
//! middleware can be measured behind the same contract:
//!
//! - `PORT` (default 8080), `ISS`, `AUD`, `JWKS_URL`;
//! - `BG_TOKEN_CACHE=off` turns the verified-token cache off (every request then
//!   pays for the full verification).
//!
//! `ISS=... AUD=... JWKS_URL=... cargo run --release --example bench_server`

use axum::routing::get;
use axum::{Json, Router};
use bearer_guard::{Guard, Issuer, RequireScope};
use serde_json::json;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .unwrap_or_else(|_| "8080".into())
        .parse()?;
    let mut builder = Guard::builder()
        .issuer(Issuer::new(env("ISS")?).jwks_uri(env("JWKS_URL")?))
        .audience(env("AUD")?);
    if std::env::var("BG_TOKEN_CACHE").is_ok_and(|v| v == "off") {
        builder = builder.disable_token_cache();
    }
    let guard = builder.build()?;
    guard.prefetch().await?;

    let app = Router::new()
        .route(
            "/api/data",
            get(|| async { Json(json!({"data": [1, 2, 3]})) })
                .route_layer(RequireScope::all(["read:data"])),
        )
        .layer(guard.layer());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("bench_server on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
