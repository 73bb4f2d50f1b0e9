//! An API that accepts tokens from two issuers and from a set of tenants of a
//! shared, multi-tenant issuer (the Entra ID shape), and refuses everyone else.
//!
//! Three bundled authorization servers stand in for the real ones:
//! `cargo run --example multi_tenant`.

use std::time::{SystemTime, UNIX_EPOCH};

use bearer_guard::authz_server::{
    AuthorizationServer, AuthorizationServerHandle, ClientConfig, SignWith,
};
use bearer_guard::{Guard, Issuer};
use serde_json::json;

const API: &str = "https://api.example.com";

async fn issuer() -> Result<AuthorizationServerHandle, Box<dyn std::error::Error>> {
    Ok(AuthorizationServer::builder()
        .client(ClientConfig::confidential("svc", "secret").scopes(["orders:read"]))
        .audience(API)
        .start()
        .await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (corp, partner, shared) = (issuer().await?, issuer().await?, issuer().await?);
    // The shared issuer's tenants appear as https://login.shared.example/{tenant}/v2.0.
    let template = "https://login.shared.example/{tenant}/v2.0";

    let guard = Guard::builder()
        .issuer(corp.issuer()) // discovery
        .issuer(Issuer::new(partner.issuer()).jwks_uri(partner.jwks_uri()))
        .issuer(
            Issuer::tenant_template(template)
                .jwks_uri(shared.jwks_uri()) // one key set for every tenant
                .tenants(["contoso", "fabrikam"]),
        )
        .audience(API)
        .build()?;

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let tenant_token = |tenant: &str| {
        let iss = template.replace("{tenant}", tenant);
        let claims = json!({"iss": iss, "tid": tenant, "sub": "app", "aud": API,
                            "exp": now + 300, "iat": now, "scope": "orders:read"});
        shared.mint(json!({}), claims, SignWith::Active)
    };
    let cases = [
        (
            "corp issuer",
            corp.client_credentials_token("svc", &["orders:read"])
                .await?,
        ),
        (
            "partner issuer",
            partner
                .client_credentials_token("svc", &["orders:read"])
                .await?,
        ),
        ("tenant contoso", tenant_token("contoso")),
        ("tenant fabrikam", tenant_token("fabrikam")),
        ("tenant mallory (not listed)", tenant_token("mallory")),
    ];
    for (who, token) in cases {
        match guard.validate(&token).await {
            Ok(t) => println!(
                "{who:<28} accepted: iss={} tenant={}",
                t.issuer(),
                t.tenant().unwrap_or("-")
            ),
            Err(e) => println!("{who:<28} refused: {e}"),
        }
    }
    Ok(())
}
