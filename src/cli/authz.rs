//! `bearer-guard authz-server`: the bundled authorization server as a process, for
//! local development. Not for production: plain HTTP, everything in memory.
//!
//! Configuration comes from flags, or a TOML file:
//!
//! ```toml
//! audiences = ["https://api.example.com"]     # the first is the default `aud`
//! access_token_lifetime_secs = 300
//! signing_algorithm = "ES256"                  # RS256 | ES256 | ES512 | EdDSA
//!
//! [[client]]                                   # confidential: has a secret
//! id = "svc"
//! secret = "svc-secret"
//! scopes = ["orders:read", "orders:write"]
//! claims = { tenant = "acme", roles = ["admin"] }  # extra claims in its tokens
//!
//! [[client]]                                   # public: redirect URIs, PKCE
//! id = "web"
//! redirect_uris = ["http://127.0.0.1:3000/callback"]
//! scopes = ["orders:read"]
//!
//! [[user]]
//! username = "alice"
//! password = "wonderland"
//! one_time_code = "314159"                     # optional: makes `mfa` logins possible
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Algorithm;

use crate::authz_server::{
    AuthorizationServer, AuthorizationServerBuilder, AuthorizationServerHandle, ClientConfig,
    SigningAlgorithm,
};

/// The arguments of `bearer-guard authz-server`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthzServerArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// TOML file with audiences, clients and users. Without it a demo setup is
    /// used: client `demo-client` / secret `demo-secret` with scopes `read write`,
    /// public client `demo-web` (redirect `http://127.0.0.1:3000/callback`), user
    /// `alice` / `wonderland`, audience `https://api.example.com`. The printed curl
    /// line contains the demo client's secret: this is a local development tool.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The configuration file of `bearer-guard authz-server`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzConfig {
    /// Registered audiences; the first is used when a client names none.
    pub audiences: Vec<String>,
    /// Access-token lifetime in seconds (default 300).
    #[serde(default)]
    pub access_token_lifetime_secs: Option<u64>,
    /// `RS256`, `ES256`, `ES512` or `EdDSA` (default RS256).
    #[serde(default)]
    pub signing_algorithm: Option<String>,
    /// Clients.
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientEntry>,
    /// Users of the login page.
    #[serde(default, rename = "user")]
    pub users: Vec<UserEntry>,
}

/// One `[[client]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The client id.
    pub id: String,
    /// The secret of a confidential client; none makes a public client.
    #[serde(default)]
    pub secret: Option<String>,
    /// Exact redirect URIs (authorization-code flow).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Scopes the client may ask for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra claims in every access token of this client (not the server's own).
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// One `[[user]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The login name.
    pub username: String,
    /// The password.
    pub password: String,
    /// A fixed one-time code: with it a login is `acr` `mfa` (step-up tests).
    #[serde(default)]
    pub one_time_code: Option<String>,
}

impl AuthzConfig {
    /// The demo setup used without `--config`.
    pub fn demo() -> Self {
        AuthzConfig {
            audiences: vec!["https://api.example.com".into()],
            access_token_lifetime_secs: None,
            signing_algorithm: None,
            clients: vec![
                ClientEntry {
                    id: "demo-client".into(),
                    secret: Some("demo-secret".into()),
                    redirect_uris: Vec::new(),
                    scopes: vec!["read".into(), "write".into()],
                    claims: serde_json::Map::new(),
                },
                ClientEntry {
                    id: "demo-web".into(),
                    secret: None,
                    redirect_uris: vec!["http://127.0.0.1:3000/callback".into()],
                    scopes: vec!["read".into()],
                    claims: serde_json::Map::new(),
                },
            ],
            users: vec![UserEntry {
                username: "alice".into(),
                password: "wonderland".into(),
                one_time_code: None,
            }],
        }
    }

    /// Reads and parses a TOML file; errors name the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A server builder for this configuration, bound to `listen`.
    pub fn builder(&self, listen: SocketAddr) -> Result<AuthorizationServerBuilder, String> {
        let Some((first, rest)) = self.audiences.split_first() else {
            return Err("audiences: at least one audience is required".into());
        };
        let alg = match self.signing_algorithm.as_deref() {
            None => SigningAlgorithm::Rs256,
            Some(name) => name
                .parse::<Algorithm>()
                .ok()
                .and_then(SigningAlgorithm::from_algorithm)
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        SigningAlgorithm::ALL.iter().map(|a| a.jws_name()).collect();
                    format!(
                        "signing_algorithm: {name:?} is not one of {}",
                        names.join(", ")
                    )
                })?,
        };
        let mut builder = AuthorizationServer::builder()
            .audience(first)
            .signing_algorithm(alg)
            .bind(listen);
        for resource in rest {
            builder = builder.resource(resource);
        }
        if let Some(secs) = self.access_token_lifetime_secs {
            if secs == 0 {
                return Err("access_token_lifetime_secs: must be positive".into());
            }
            builder = builder.access_token_lifetime(Duration::from_secs(secs));
        }
        for c in &self.clients {
            let mut client = match &c.secret {
                Some(secret) => ClientConfig::confidential(&c.id, secret),
                None => ClientConfig::public(&c.id),
            };
            for uri in &c.redirect_uris {
                client = client.redirect_uri(uri);
            }
            for (name, value) in &c.claims {
                client = client.claim(name, value.clone());
            }
            builder = builder.client(client.scopes(c.scopes.iter().cloned()));
        }
        for u in &self.users {
            builder = builder.user(&u.username, &u.password);
            if let Some(code) = &u.one_time_code {
                builder = builder.user_one_time_code(&u.username, code);
            }
        }
        Ok(builder)
    }

    /// What to print once the server runs: its URL, and a ready-to-paste curl
    /// line for the client-credentials flow of the first confidential client.
    pub fn banner(&self, server: &AuthorizationServerHandle) -> String {
        let mut out = format!(
            "bearer-guard authz-server: issuer {}\n  discovery  {}/.well-known/oauth-authorization-server\n  jwks       {}\n",
            server.issuer(),
            server.issuer(),
            server.jwks_uri()
        );
        let confidential = self
            .clients
            .iter()
            .find_map(|c| c.secret.as_ref().map(|s| (c, s)));
        if let Some((client, secret)) = confidential {
            out.push_str(&format!(
                "  try        curl -s -u '{}:{}' -d grant_type=client_credentials -d 'scope={}' {}\n",
                client.id,
                secret,
                client.scopes.join(" "),
                server.token_endpoint()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_file() {
        let doc = r#"
            audiences = ["https://api.example.com", "https://other.example.com"]
            access_token_lifetime_secs = 60
            signing_algorithm = "ES256"
            [[client]]
            id = "svc"
            secret = "s"
            scopes = ["a"]
            [[user]]
            username = "alice"
            password = "pw"
        "#;
        let config: AuthzConfig = toml::from_str(doc).unwrap();
        assert_eq!(config.clients[0].id, "svc");
        assert!(config.builder("127.0.0.1:0".parse().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn client_claims_and_one_time_codes_come_from_the_file() {
        let doc = r#"
            audiences = ["https://api.example.com"]
            [[client]]
            id = "svc"
            secret = "s"
            scopes = ["a"]
            claims = { tenant = "acme", roles = ["admin"], level = 3 }
            [[user]]
            username = "alice"
            password = "pw"
            one_time_code = "314159"
        "#;
        let config: AuthzConfig = toml::from_str(doc).unwrap();
        let server = config
            .builder("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .start()
            .await
            .unwrap();
        let token = server.client_credentials_token("svc", &[]).await.unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["roles"], serde_json::json!(["admin"]));
        assert_eq!(claims["level"], 3);
        // The server's own claims are refused at start.
        let bad: AuthzConfig = toml::from_str(
            "audiences = [\"x\"]\n[[client]]\nid = \"c\"\nsecret = \"s\"\nclaims = { sub = \"root\" }",
        )
        .unwrap();
        let start = bad
            .builder("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .start()
            .await;
        assert!(start.is_err());
    }

    #[test]
    fn refuses_unknown_keys_bad_algorithms_and_no_audience() {
        assert!(toml::from_str::<AuthzConfig>("audiences = []\nport = 1").is_err());
        let addr = "127.0.0.1:0".parse().unwrap();
        let mut c = AuthzConfig::demo();
        c.signing_algorithm = Some("HS256".into());
        assert!(c.builder(addr).unwrap_err().contains("signing_algorithm"));
        c.signing_algorithm = None;
        c.audiences.clear();
        assert!(c.builder(addr).unwrap_err().contains("audiences"));
    }
}
