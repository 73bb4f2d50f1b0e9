//! Issuer policies: allowlists with per-issuer audiences, tenant templates, and the
//! key <-> issuer binding that stops a cross-tenant (Storm-0558-style) forgery.

mod common;

use bearer_guard::authz_server::{AuthorizationServerHandle, SignWith};
use bearer_guard::clock::ManualClock;
use bearer_guard::error::TokenProblem;
use bearer_guard::{Guard, Issuer};
use common::*;
use serde_json::{Value, json};

const TEMPLATE: &str = "https://login.example.com/{tenant}/v2.0";

fn tenant_iss(tenant: &str) -> String {
    TEMPLATE.replace("{tenant}", tenant)
}

/// A token signed by `server`'s active key, claiming issuer `iss`.
fn token_for(
    server: &AuthorizationServerHandle,
    clock: &ManualClock,
    iss: &str,
    extra: Value,
) -> String {
    let mut c = claims(server, clock);
    c["iss"] = iss.into();
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    server.mint(json!({}), c, SignWith::Active)
}

#[tokio::test]
async fn tenant_template_accepts_listed_tenants_only() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let guard = Guard::builder()
        .issuer(
            Issuer::tenant_template(TEMPLATE)
                .jwks_uri(server.jwks_uri())
                .tenants(["contoso", "fabrikam"]),
        )
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();

    let ok = guard
        .validate(&token_for(
            &server,
            &clock,
            &tenant_iss("contoso"),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!(ok.tenant(), Some("contoso"));
    assert_eq!(ok.issuer(), tenant_iss("contoso"));
    let with_tid = token_for(
        &server,
        &clock,
        &tenant_iss("fabrikam"),
        json!({"tid": "fabrikam"}),
    );
    assert_eq!(
        guard.validate(&with_tid).await.unwrap().tenant_id(),
        Some("fabrikam")
    );

    assert_eq!(
        problem(
            guard
                .validate(&token_for(&server, &clock, &tenant_iss("evil"), json!({})))
                .await
        ),
        TokenProblem::TenantNotAllowed {
            tenant: "evil".into()
        }
    );
    let mismatch = token_for(
        &server,
        &clock,
        &tenant_iss("contoso"),
        json!({"tid": "fabrikam"}),
    );
    assert!(matches!(
        problem(guard.validate(&mismatch).await),
        TokenProblem::TenantMismatch { .. }
    ));
    for iss in [
        tenant_iss("a/b"),
        tenant_iss(""),
        tenant_iss(".."),
        "https://login.example.com/contoso/v2.0/".into(),
    ] {
        let t = token_for(&server, &clock, &iss, json!({}));
        assert!(
            matches!(
                problem(guard.validate(&t).await),
                TokenProblem::IssuerNotAllowed { .. }
            ),
            "{iss}"
        );
    }
    // One shared key source for every tenant.
    assert_eq!(server.jwks_fetch_count(), 1);
}

#[tokio::test]
async fn tenant_filter_and_explicit_any_tenant() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let filtered = Guard::builder()
        .issuer(
            Issuer::tenant_template(TEMPLATE)
                .jwks_uri(server.jwks_uri())
                .tenant_filter(|t| t.ends_with(".partner")),
        )
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(
        filtered
            .validate(&token_for(
                &server,
                &clock,
                &tenant_iss("a.partner"),
                json!({})
            ))
            .await
            .is_ok()
    );
    assert!(
        filtered
            .validate(&token_for(
                &server,
                &clock,
                &tenant_iss("b.other"),
                json!({})
            ))
            .await
            .is_err()
    );

    let open = Guard::builder()
        .issuer(
            Issuer::tenant_template(TEMPLATE)
                .jwks_uri(server.jwks_uri())
                .allow_any_tenant(),
        )
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(
        open.validate(&token_for(
            &server,
            &clock,
            &tenant_iss("anyone"),
            json!({})
        ))
        .await
        .is_ok()
    );
}

/// The server's JWKS with an `issuer` member on every key, as Entra publishes it.
async fn jwks_with_issuer(server: &AuthorizationServerHandle, issuer: &str) -> String {
    let mut jwks: Value = http()
        .get(server.jwks_uri())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in jwks["keys"].as_array_mut().unwrap() {
        key["issuer"] = issuer.into();
    }
    jwks.to_string()
}

#[tokio::test]
async fn cross_tenant_signature_is_rejected() {
    // Storm-0558: a key that belongs to tenant contoso signs a token that claims to
    // come from tenant fabrikam. The signature is valid; the binding is not.
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let jwks = jwks_with_issuer(&server, &tenant_iss("contoso")).await;
    let guard = Guard::builder()
        .issuer(
            Issuer::tenant_template(TEMPLATE)
                .jwks_document(jwks)
                .tenants(["contoso", "fabrikam"]),
        )
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(
        guard
            .validate(&token_for(
                &server,
                &clock,
                &tenant_iss("contoso"),
                json!({})
            ))
            .await
            .is_ok()
    );
    let forged = token_for(
        &server,
        &clock,
        &tenant_iss("fabrikam"),
        json!({"tid": "fabrikam"}),
    );
    assert!(matches!(
        problem(guard.validate(&forged).await),
        TokenProblem::KeyIssuerMismatch { .. }
    ));
}

#[tokio::test]
async fn entra_style_tenantid_placeholder_binds_each_tenant_to_itself() {
    let clock = ManualClock::starting_now();
    let server = authz_server(&clock, |b| b).await;
    let jwks = jwks_with_issuer(&server, "https://login.example.com/{tenantid}/v2.0").await;
    let guard = Guard::builder()
        .issuer(
            Issuer::tenant_template(TEMPLATE)
                .jwks_document(jwks)
                .tenants(["contoso", "fabrikam"]),
        )
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    for tenant in ["contoso", "fabrikam"] {
        let t = token_for(&server, &clock, &tenant_iss(tenant), json!({"tid": tenant}));
        assert_eq!(guard.validate(&t).await.unwrap().tenant(), Some(tenant));
    }
    // A key published for another deployment's template never verifies ours.
    let jwks = jwks_with_issuer(&server, "https://elsewhere.example/{tenantid}/v2.0").await;
    let guard = Guard::builder()
        .issuer(
            Issuer::tenant_template(TEMPLATE)
                .jwks_document(jwks)
                .tenants(["contoso"]),
        )
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    let t = token_for(&server, &clock, &tenant_iss("contoso"), json!({}));
    assert!(matches!(
        problem(guard.validate(&t).await),
        TokenProblem::KeyIssuerMismatch { .. }
    ));
}

#[tokio::test]
async fn allowlist_checks_each_issuers_own_audience() {
    let clock = ManualClock::starting_now();
    let a = authz_server(&clock, |b| b).await;
    let b = authz_server(&clock, |b| b.audience(OTHER_API)).await;
    let guard = Guard::builder()
        .issuer(Issuer::new(a.issuer()).jwks_uri(a.jwks_uri()))
        .issuer(
            Issuer::new(b.issuer())
                .jwks_uri(b.jwks_uri())
                .audience(OTHER_API),
        )
        .audience(API)
        .clock(clock.clone())
        .build()
        .unwrap();
    let from_a = a
        .client_credentials_token("svc", &["orders:read"])
        .await
        .unwrap();
    let from_b = b
        .client_credentials_token("svc", &["orders:read"])
        .await
        .unwrap();
    assert_eq!(guard.validate(&from_a).await.unwrap().issuer_index(), 0);
    assert_eq!(guard.validate(&from_b).await.unwrap().issuer_index(), 1);
    // B's issuer with A's audience: B's entry only accepts OTHER_API.
    let mut c = claims(&b, &clock);
    c["aud"] = API.into();
    let wrong_aud = b.mint(json!({}), c, SignWith::Active);
    assert!(matches!(
        problem(guard.validate(&wrong_aud).await),
        TokenProblem::AudienceMismatch { .. }
    ));
}

mod configuration_order {
    use aws_lc_rs::hmac;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use bearer_guard::{Algorithm, Guard, Issuer};
    use serde_json::json;

    const SECRET: [u8; 32] = [9; 32];
    const ISS: &str = "https://login.example.com/acme/v2.0";
    const TEMPLATE: &str = "https://login.example.com/{tenant}/v2.0";

    fn hs256(issuer: Issuer) -> Issuer {
        issuer.shared_secret(SECRET).algorithms([Algorithm::HS256])
    }

    fn token() -> String {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"iss": ISS, "sub": "s", "aud": "api", "exp": now + 60});
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256"}"#),
            b64(claims.to_string().as_bytes())
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &SECRET),
            input.as_bytes(),
        );
        format!("{input}.{}", b64(tag.as_ref()))
    }

    async fn matched(issuers: Vec<Issuer>) -> (usize, Option<String>) {
        let mut builder = Guard::builder().audience("api");
        for issuer in issuers {
            builder = builder.issuer(issuer);
        }
        let t = builder.build().unwrap().validate(&token()).await.unwrap();
        (t.issuer_index(), t.tenant().map(str::to_owned))
    }

    #[tokio::test]
    async fn the_first_configured_entry_that_accepts_iss_wins_among_thousands() {
        let many =
            |from: usize| (from..from + 2_000).map(|i| hs256(Issuer::new(format!("https://t{i}"))));
        // A template before the exact entry answers first...
        let mut issuers: Vec<Issuer> = many(0).collect();
        issuers.push(hs256(Issuer::tenant_template(TEMPLATE).tenants(["acme"])));
        issuers.push(hs256(Issuer::new(ISS)));
        assert_eq!(matched(issuers).await, (2_000, Some("acme".into())));
        // ...an exact entry before the template does...
        let mut issuers: Vec<Issuer> = vec![hs256(Issuer::new(ISS))];
        issuers.extend(many(0));
        issuers.push(hs256(Issuer::tenant_template(TEMPLATE).tenants(["acme"])));
        assert_eq!(matched(issuers).await, (0, None));
        // ...and a template that refuses the tenant does not hide a later exact entry.
        let issuers = vec![
            hs256(Issuer::tenant_template(TEMPLATE).tenants(["other"])),
            hs256(Issuer::new(ISS)),
        ];
        assert_eq!(matched(issuers).await, (1, None));
    }
}
