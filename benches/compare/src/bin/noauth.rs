//! The ceiling: the same route and body as bench_server, no authentication.
//! `PORT` only.

use axum::routing::get;
use axum::{Json, Router};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = bearer_guard_compare::port()?;
    let app = Router::new().route(
        "/api/data",
        get(|| async { Json(bearer_guard_compare::body()) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("noauth on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
