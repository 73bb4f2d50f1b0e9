//! The configuration shared by the gateway and the ext-authz service: issuers,
//! routes, and errors that name the file, the key and the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Algorithm, BuildError, Guard, GuardBuilder, Issuer};

/// One `[[issuer]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IssuerConfig {
    /// The exact `iss` value; discovery starts from it unless `jwks_uri` is set.
    pub issuer: String,
    /// The JWKS URL, instead of discovery.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The accepted audiences (at least one, RFC 9068).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The accepted algorithms (default: every asymmetric one).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
}

/// One `[[route]]`: a path prefix, optional methods, and what the token needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteConfig {
    /// A path prefix, matched segment by segment (`/orders` matches `/orders/7`,
    /// not `/ordersX`).
    pub path: String,
    /// The methods this route applies to (default: all). A request whose path some
    /// route covers but whose method none allows is a 405 with `Allow`.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// No token required.
    #[serde(default)]
    pub public: bool,
    /// The token must carry every one of these scopes.
    #[serde(default)]
    pub scopes_all: Vec<String>,
    /// The token must carry at least one of these scopes.
    #[serde(default)]
    pub scopes_any: Vec<String>,
    /// Claim (a name or a dotted path such as `realm_access.roles`) -> the values
    /// it may equal: `claims = { tenant = ["acme"] }`. Refused with 403.
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<serde_json::Value>>,
    /// Array claim -> values it must all hold: `claims_contain_all = { roles = ["admin"] }`.
    #[serde(default)]
    pub claims_contain_all: BTreeMap<String, Vec<serde_json::Value>>,
    /// Array claim -> values of which it must hold at least one.
    #[serde(default)]
    pub claims_contain_any: BTreeMap<String, Vec<serde_json::Value>>,
    /// Step-up (RFC 9470): the token's `acr` must be one of these; else 401
    /// `insufficient_user_authentication` with `acr_values`.
    #[serde(default)]
    pub acr_values: Vec<String>,
    /// Step-up (RFC 9470): `auth_time` at most this many seconds old; else 401
    /// `insufficient_user_authentication` with `max_age`.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// The gateway only: where this route's requests go instead of the global
    /// `upstream` (same forms: `http://`, `h2c://`, `https://`). The ext-authz
    /// service refuses it: the proxy asking it chooses the upstream.
    #[serde(default)]
    pub upstream: Option<String>,
}

/// A refused configuration: the file (when known), the key and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: Option<PathBuf>,
    key: Option<String>,
    problem: String,
}

impl ConfigError {
    pub(crate) fn at(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            key: Some(key.into()),
            problem: problem.into(),
        }
    }

    /// The same error, naming the file it came from.
    pub fn in_file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = Some(path.as_ref().to_owned());
        self
    }

    /// The key path of a semantic error, e.g. `route[2].scopes_any[0]`.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Parses a TOML configuration (shape only, unknown keys refused).
pub(crate) fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError {
        file: None,
        key: None,
        // toml's message names the line, the column and the offending key.
        problem: e.to_string().trim_end().to_owned(),
    })
}

/// Reads and parses a TOML configuration file; errors name the file.
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_owned()),
        key: None,
        problem: format!("cannot read the file: {e}"),
    })?;
    from_toml(&text).map_err(|e| e.in_file(path))
}

/// The guard of `[[issuer]]`, `realm` and `allow_insecure_http`, its builder
/// adjusted by `configure` last (an HTTP client, a clock in tests).
pub(crate) fn build_guard(
    issuers: &[IssuerConfig],
    realm: Option<&str>,
    allow_insecure_http: bool,
    configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
) -> Result<Guard, ConfigError> {
    if issuers.is_empty() {
        return Err(ConfigError::at(
            "issuer",
            "no [[issuer]]: at least one is required",
        ));
    }
    let mut builder = Guard::builder();
    for (i, c) in issuers.iter().enumerate() {
        let mut issuer = Issuer::new(c.issuer.as_str());
        if let Some(uri) = &c.jwks_uri {
            issuer = issuer.jwks_uri(uri.as_str());
        }
        if c.audiences.is_empty() {
            return Err(ConfigError::at(
                format!("issuer[{i}].audiences"),
                "at least one audience is required (RFC 9068)",
            ));
        }
        for aud in &c.audiences {
            issuer = issuer.audience(aud.as_str());
        }
        if let Some(list) = &c.algorithms {
            let algs = list
                .iter()
                .enumerate()
                .map(|(j, a)| {
                    a.parse::<Algorithm>().map_err(|e| {
                        ConfigError::at(format!("issuer[{i}].algorithms[{j}]"), e.to_string())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            issuer = issuer.algorithms(algs);
        }
        builder = builder.issuer(issuer);
    }
    if let Some(realm) = realm {
        builder = builder.realm(realm);
    }
    if allow_insecure_http {
        builder = builder.allow_insecure_http();
    }
    configure(builder)
        .build()
        .map_err(|e| ConfigError::at(build_error_key(&e, issuers), e.to_string()))
}

/// The configuration key a [`BuildError`] is about.
fn build_error_key(e: &BuildError, issuers: &[IssuerConfig]) -> String {
    let issuer = match e {
        BuildError::InvalidRealm => return "realm".to_owned(),
        BuildError::DuplicateIssuer(i)
        | BuildError::NoAudience(i)
        | BuildError::NoAlgorithms(i)
        | BuildError::SecretNeedsHmacAlgorithms(i) => i,
        BuildError::HmacWithJwks { issuer, .. }
        | BuildError::SecretTooShort { issuer, .. }
        | BuildError::InvalidUrl { issuer, .. }
        | BuildError::InvalidJwks { issuer, .. } => issuer,
        _ => return "issuer".to_owned(),
    };
    match issuers.iter().position(|c| &c.issuer == issuer) {
        Some(i) => format!("issuer[{i}]"),
        None => "issuer".to_owned(),
    }
}
