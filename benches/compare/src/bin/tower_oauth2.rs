//! bench_server's contract behind `tower-oauth2-resource-server` 0.12 (axum 0.8):
//! keys from `JWKS_URL`, `iss`, `aud`, `exp` and `nbf` through
//! `ClaimsValidationSpec::recommended` (with an explicit `jwks_url` and no
//! discovery, the crate would not check `iss` by default). It has no scope check of
//! its own (its README: write further logic on the claims), so the handler checks
//! `scope` from the claims the layer put in the request's extensions.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bearer_guard_compare::{Config, SCOPE, ScopeClaims};
use tower_oauth2_resource_server::server::OAuth2ResourceServer;
use tower_oauth2_resource_server::tenant::TenantConfiguration;
use tower_oauth2_resource_server::validation::ClaimsValidationSpec;

async fn data(Extension(claims): Extension<ScopeClaims>) -> Response {
    if !claims.has_scope(SCOPE) {
        let challenge =
            HeaderValue::from_static("Bearer error=\"insufficient_scope\", scope=\"read:data\"");
        return (
            StatusCode::FORBIDDEN,
            [(header::WWW_AUTHENTICATE, challenge)],
        )
            .into_response();
    }
    Json(bearer_guard_compare::body()).into_response()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let audiences = vec![config.aud.clone()];
    let tenant = TenantConfiguration::builder(&config.iss)
        .jwks_url(&config.jwks_url)
        .audiences(&audiences)
        .claims_validation(ClaimsValidationSpec::recommended(&config.iss, &audiences))
        .build()
        .await?;
    let oauth2 = OAuth2ResourceServer::<ScopeClaims>::builder()
        .add_tenant(tenant)
        .build()
        .await?;

    let app = Router::new()
        .route("/api/data", get(data))
        .layer(oauth2.into_layer());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    eprintln!("tower_oauth2 on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
