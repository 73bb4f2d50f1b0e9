//! bench_server's contract behind `jwt-authorizer` 0.15 (axum 0.7): keys from
//! `JWKS_URL`, `iss` and `aud` through its `Validation`, the scope through its
//! claims checker (`check`), which answers 403 `insufficient_scope` natively.

use axum07::routing::get;
use axum07::{Json, Router};
use bearer_guard_compare::{Config, SCOPE, ScopeClaims};
use jwt_authorizer::{IntoLayer, JwtAuthorizer, Validation};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let authorizer = JwtAuthorizer::<ScopeClaims>::from_jwks_url(&config.jwks_url)
        .validation(
            Validation::new()
                .iss(&[&config.iss])
                .aud(&[&config.aud])
                .nbf(true),
        )
        .check(|claims: &ScopeClaims| claims.has_scope(SCOPE))
        .build()
        .await?;

    let app = Router::new()
        .route(
            "/api/data",
            get(|| async { Json(bearer_guard_compare::body()) }),
        )
        .layer(authorizer.into_layer());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    eprintln!("jwt_authorizer on http://{}", listener.local_addr()?);
    axum07::serve(listener, app).await?;
    Ok(())
}
