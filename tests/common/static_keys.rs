//! Static test keys (Ed25519), tokens signed with them, and tiny in-process
//! issuers: for the CLI and gateway tests, which need no authorization server.

use std::net::SocketAddr;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub const AUDIENCE: &str = "https://api.example.com";
pub const NOW: u64 = 1_732_460_000;

/// An Ed25519 signing key and its one-key JWKS.
pub struct TestKey {
    pair: Ed25519KeyPair,
    pub kid: String,
}

impl TestKey {
    pub fn new(kid: &str) -> Self {
        TestKey {
            pair: Ed25519KeyPair::generate().expect("ed25519 keygen"),
            kid: kid.to_owned(),
        }
    }

    pub fn jwks(&self) -> String {
        json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
        }]})
        .to_string()
    }

    /// A signed compact JWS with `typ: at+jwt` over `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_typ("at+jwt", claims)
    }

    /// A signed compact JWS with the given `typ` header.
    pub fn sign_typ(&self, typ: &str, claims: &Value) -> String {
        let header = json!({ "alg": "EdDSA", "typ": typ, "kid": self.kid });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// An access token from `iss` for [`AUDIENCE`], valid for an hour after `iat`.
    pub fn token(&self, iss: &str, iat: u64, scope: &str) -> String {
        self.sign(&json!({
            "iss": iss, "sub": "alice", "aud": AUDIENCE, "client_id": "cli-app",
            "iat": iat, "exp": iat + 3600, "scope": scope, "tenant": "acme",
        }))
    }
}

/// Seconds since the Unix epoch, for tokens checked against the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves `app` on 127.0.0.1 port 0 until the test's runtime ends.
pub async fn spawn_app(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A discovery server: `/.well-known/openid-configuration` naming itself as the
/// issuer, and `/jwks` serving `jwks`. Returns the issuer URL.
pub async fn spawn_issuer(jwks: String) -> String {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let metadata = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") }).to_string();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { ([("content-type", "application/json")], metadata) }),
        )
        .route(
            "/jwks",
            get(move || async move { ([("content-type", "application/json")], jwks) }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    issuer
}
