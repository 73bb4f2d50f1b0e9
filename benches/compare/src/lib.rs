//! What the three servers share: the contract of examples/bench_server.rs.

use serde::Deserialize;

/// The scope `GET /api/data` requires.
pub const SCOPE: &str = "read:data";

/// The benchmark's configuration, from the same variables as bench_server.
pub struct Config {
    pub port: u16,
    pub iss: String,
    pub aud: String,
    pub jwks_url: String,
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name}"))
}

/// `PORT` (default 8080), the only variable noauth reads.
pub fn port() -> Result<u16, String> {
    std::env::var("PORT")
        .unwrap_or_else(|_| "8080".into())
        .parse()
        .map_err(|e| format!("PORT: {e}"))
}

impl Config {
    /// `PORT`, `ISS`, `AUD`, `JWKS_URL`.
    pub fn from_env() -> Result<Self, String> {
        Ok(Config {
            port: port()?,
            iss: env("ISS")?,
            aud: env("AUD")?,
            jwks_url: env("JWKS_URL")?,
        })
    }
}

/// The claims the scope check needs (RFC 9068: space-separated `scope`).
#[derive(Debug, Clone, Deserialize)]
pub struct ScopeClaims {
    #[serde(default)]
    pub scope: String,
}

impl ScopeClaims {
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope.split(' ').any(|s| s == wanted)
    }
}

/// The body bench_server answers.
pub fn body() -> serde_json::Value {
    serde_json::json!({"data": [1, 2, 3]})
}
