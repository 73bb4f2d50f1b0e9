//! The configuration shared by the gateway and the ext-authz service: issuers,
//! routes, and errors that name the file, the key and the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::sender::{Dpop, DpopMode, MemoryReplayStore};
use crate::{Algorithm, BuildError, Guard, GuardBuilder, Issuer};

/// One `[[issuer]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// This issuer's DPoP mode (`"disabled"`, `"allowed"`, `"required"`),
    /// instead of `[dpop] mode`. Anything but `"disabled"` needs `[dpop]`.
    #[serde(default)]
    pub dpop: Option<DpopMode>,
}

/// `[dpop]`: sender-constrained tokens by DPoP proofs (RFC 9449), for every
/// issuer that does not set its own `dpop` mode.
///
/// The nonce secret is never written in the file itself: it is read from
/// `nonce_secret_file` (a file readable by the service only; a warning is
/// logged when others may read it) or from the environment variable named by
/// `nonce_secret_env`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DpopConfig {
    /// The API's public base URL, as clients address it
    /// (`https://api.example.com`, or with a path prefix): a proof's `htu` must
    /// be this plus the request's path. The request's `Host` is never used.
    /// Required unless `mode = "disabled"`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// `"disabled"`, `"allowed"` (default: bearer and DPoP-bound tokens) or
    /// `"required"` (DPoP-bound tokens only).
    #[serde(default)]
    pub mode: Option<DpopMode>,
    /// The accepted proof algorithms (default: every asymmetric one).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// How old a proof's `iat` may be, in seconds (default 60).
    #[serde(default)]
    pub proof_max_age_secs: Option<u64>,
    /// Clock skew tolerated on a proof's `iat`, either way, in seconds (default 15).
    #[serde(default)]
    pub proof_leeway_secs: Option<u64>,
    /// The largest proof accepted, in bytes (default 8192).
    #[serde(default)]
    pub max_proof_bytes: Option<usize>,
    /// Demand server nonces (RFC 9449 §8) with the secret in this file (at
    /// least 32 bytes; trailing whitespace ignored). Give every replica the same.
    #[serde(default)]
    pub nonce_secret_file: Option<PathBuf>,
    /// Demand server nonces with the secret in this environment variable.
    #[serde(default)]
    pub nonce_secret_env: Option<String>,
    /// How long one nonce step lasts, in seconds (default 300).
    #[serde(default)]
    pub nonce_lifetime_secs: Option<u64>,
    /// Where seen proofs are remembered: `"memory"` (default, this process) or
    /// a `redis://` / `rediss://` URL shared by every replica (feature `redis`).
    #[serde(default)]
    pub replay_store: Option<String>,
    /// The most live proofs the memory store holds (default 1000000).
    #[serde(default)]
    pub replay_capacity: Option<usize>,
    /// The Redis key prefix (default `bearer-guard:dpop:`).
    #[serde(default)]
    pub replay_key_prefix: Option<String>,
    /// When the replay store fails, accept proofs instead of answering 503
    /// (default `false`: fail closed).
    #[serde(default)]
    pub fail_open_on_store_error: bool,
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
    /// Only DPoP-bound tokens with a valid proof (RFC 9449); a plain bearer
    /// token is refused 401 `invalid_token`. Needs the `[dpop]` section.
    #[serde(default)]
    pub dpop_bound: bool,
    /// The gateway only: where this route's requests go instead of the global
    /// `upstream` (same forms: `http://`, `h2c://`, `https://`). The ext-authz
    /// service refuses it: the proxy asking it chooses the upstream.
    #[serde(default)]
    pub upstream: Option<String>,
}

/// `[resource_metadata]`: the RFC 9728 document the gateway (or the check
/// service) serves at the resource's well-known URL, and names in every
/// challenge. See [`ResourceMetadata`](crate::ResourceMetadata).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ResourceMetadataConfig {
    /// The resource identifier clients use: `https://api.example.com/mcp`.
    pub resource: String,
    /// The authorization servers to list (default: every exact `[[issuer]]`).
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// `scopes_supported`.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// `resource_name`.
    #[serde(default)]
    pub resource_name: Option<String>,
    /// `resource_documentation`.
    #[serde(default)]
    pub resource_documentation: Option<String>,
    /// `resource_policy_uri`.
    #[serde(default)]
    pub resource_policy_uri: Option<String>,
    /// `resource_tos_uri`.
    #[serde(default)]
    pub resource_tos_uri: Option<String>,
    /// `tls_client_certificate_bound_access_tokens` (default `false`).
    #[serde(default)]
    pub tls_client_certificate_bound_access_tokens: bool,
    /// `Cache-Control: public, max-age=…` of the document (default 3600).
    #[serde(default)]
    pub cache_max_age_secs: Option<u64>,
}

impl ResourceMetadataConfig {
    /// The builder's form.
    pub(crate) fn to_metadata(&self) -> crate::ResourceMetadata {
        let mut m = crate::ResourceMetadata::new(self.resource.as_str())
            .scopes_supported(self.scopes_supported.iter().cloned())
            .tls_client_certificate_bound_access_tokens(
                self.tls_client_certificate_bound_access_tokens,
            );
        for a in &self.authorization_servers {
            m = m.authorization_server(a.as_str());
        }
        if let Some(v) = &self.resource_name {
            m = m.resource_name(v.as_str());
        }
        if let Some(v) = &self.resource_documentation {
            m = m.resource_documentation(v.as_str());
        }
        if let Some(v) = &self.resource_policy_uri {
            m = m.resource_policy_uri(v.as_str());
        }
        if let Some(v) = &self.resource_tos_uri {
            m = m.resource_tos_uri(v.as_str());
        }
        if let Some(secs) = self.cache_max_age_secs {
            m = m.cache_max_age(std::time::Duration::from_secs(secs));
        }
        m
    }

    /// `configure` with this metadata applied first.
    pub(crate) fn apply(
        config: Option<&ResourceMetadataConfig>,
        configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
    ) -> impl FnOnce(GuardBuilder) -> GuardBuilder {
        let metadata = config.map(ResourceMetadataConfig::to_metadata);
        move |builder| match metadata {
            Some(m) => configure(builder.resource_metadata(m)),
            None => configure(builder),
        }
    }
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

    /// The same error under another key: `from[2]` becomes `to[2]`.
    #[cfg(feature = "ext-authz")]
    pub(crate) fn renamed(mut self, from: &str, to: &str) -> Self {
        if let Some(key) = &self.key
            && let Some(rest) = key.strip_prefix(from)
        {
            self.key = Some(format!("{to}{rest}"));
        }
        self
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

/// The guard of `[[issuer]]`, `[dpop]`, `realm` and `allow_insecure_http`, its
/// builder adjusted by `configure` last (an HTTP client, a clock in tests).
pub(crate) fn build_guard(
    issuers: &[IssuerConfig],
    dpop: Option<&DpopConfig>,
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
        if let Some(mode) = c.dpop {
            issuer = issuer.dpop(mode);
        }
        builder = builder.issuer(issuer);
    }
    match dpop.map(dpop_settings).transpose()?.flatten() {
        Some(settings) => builder = builder.dpop(settings),
        None => {
            if let Some(i) = issuers
                .iter()
                .position(|c| c.dpop.is_some_and(|m| m != DpopMode::Disabled))
            {
                return Err(ConfigError::at(
                    format!("issuer[{i}].dpop"),
                    "DPoP needs a [dpop] section with public_url",
                ));
            }
        }
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

/// The DPoP settings of `[dpop]`: `None` when it is disabled and names no
/// public URL.
fn dpop_settings(c: &DpopConfig) -> Result<Option<Dpop>, ConfigError> {
    let key = |k: &str| format!("dpop.{k}");
    let Some(url) = &c.public_url else {
        if c.mode == Some(DpopMode::Disabled) {
            return Ok(None);
        }
        return Err(ConfigError::at(
            key("public_url"),
            "required: the API's public base URL, as clients address it (htu)",
        ));
    };
    let mut dpop = Dpop::new(url.as_str()).mode(c.mode.unwrap_or_default());
    if let Some(list) = &c.algorithms {
        let algs = list
            .iter()
            .enumerate()
            .map(|(j, a)| match a.parse::<Algorithm>() {
                Ok(alg) if !alg.is_symmetric() => Ok(alg),
                Ok(_) => Err(ConfigError::at(
                    format!("dpop.algorithms[{j}]"),
                    format!("{a} is symmetric: DPoP proofs are signed with asymmetric keys"),
                )),
                Err(e) => Err(ConfigError::at(
                    format!("dpop.algorithms[{j}]"),
                    e.to_string(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if algs.is_empty() {
            return Err(ConfigError::at(key("algorithms"), "at least one algorithm"));
        }
        dpop = dpop.algorithms(algs);
    }
    if let Some(secs) = c.proof_max_age_secs {
        dpop = dpop.proof_max_age(std::time::Duration::from_secs(secs));
    }
    if let Some(secs) = c.proof_leeway_secs {
        dpop = dpop.proof_leeway(std::time::Duration::from_secs(secs));
    }
    if let Some(bytes) = c.max_proof_bytes {
        if bytes == 0 {
            return Err(ConfigError::at(key("max_proof_bytes"), "must be positive"));
        }
        dpop = dpop.max_proof_size(bytes);
    }
    if let Some(secs) = c.nonce_lifetime_secs {
        if secs == 0 {
            return Err(ConfigError::at(
                key("nonce_lifetime_secs"),
                "must be positive",
            ));
        }
        dpop = dpop.nonce_lifetime(std::time::Duration::from_secs(secs));
    }
    if let Some((secret, name)) = nonce_secret(c)? {
        if secret.len() < 32 {
            return Err(ConfigError::at(
                key(name),
                format!(
                    "the nonce secret is {} bytes; at least 32 are required",
                    secret.len()
                ),
            ));
        }
        dpop = dpop.require_nonce(secret);
    } else if c.nonce_lifetime_secs.is_some() {
        return Err(ConfigError::at(
            key("nonce_lifetime_secs"),
            "nonces are off: set nonce_secret_file or nonce_secret_env",
        ));
    }
    match c.replay_store.as_deref().unwrap_or("memory") {
        "memory" => {
            if c.replay_key_prefix.is_some() {
                return Err(ConfigError::at(
                    key("replay_key_prefix"),
                    "only for a Redis replay_store",
                ));
            }
            let capacity = c
                .replay_capacity
                .unwrap_or(MemoryReplayStore::DEFAULT_CAPACITY);
            if capacity == 0 {
                return Err(ConfigError::at(key("replay_capacity"), "must be positive"));
            }
            dpop = dpop.replay_store(MemoryReplayStore::new(capacity));
        }
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            if c.replay_capacity.is_some() {
                return Err(ConfigError::at(
                    key("replay_capacity"),
                    "only for replay_store = \"memory\" (Redis expires proofs itself)",
                ));
            }
            dpop = redis_store(dpop, url, c.replay_key_prefix.as_deref())?;
        }
        other => {
            return Err(ConfigError::at(
                key("replay_store"),
                format!("{other:?} is neither \"memory\" nor a redis:// or rediss:// URL"),
            ));
        }
    }
    if c.fail_open_on_store_error {
        dpop = dpop.fail_open_on_store_error();
    }
    Ok(Some(dpop))
}

#[cfg(feature = "redis")]
fn redis_store(dpop: Dpop, url: &str, prefix: Option<&str>) -> Result<Dpop, ConfigError> {
    let mut store = crate::sender::RedisReplayStore::lazy(url).map_err(|e| {
        // The URL may carry a password: not echoed.
        ConfigError::at(
            "dpop.replay_store",
            format!(
                "not a usable Redis URL: {}",
                redact_problem(&e.to_string(), url)
            ),
        )
    })?;
    if let Some(prefix) = prefix {
        store = store.key_prefix(prefix);
    }
    Ok(dpop.replay_store(store))
}

#[cfg(feature = "redis")]
fn redact_problem(problem: &str, url: &str) -> String {
    problem.replace(url, "<the URL>")
}

#[cfg(not(feature = "redis"))]
fn redis_store(_: Dpop, _: &str, _: Option<&str>) -> Result<Dpop, ConfigError> {
    Err(ConfigError::at(
        "dpop.replay_store",
        "a Redis replay store needs bearer-guard built with the `redis` feature",
    ))
}

/// The nonce secret and the key it came from, if nonces are demanded.
fn nonce_secret(c: &DpopConfig) -> Result<Option<(Vec<u8>, &'static str)>, ConfigError> {
    match (&c.nonce_secret_file, &c.nonce_secret_env) {
        (Some(_), Some(_)) => Err(ConfigError::at(
            "dpop.nonce_secret_file",
            "set nonce_secret_file or nonce_secret_env, not both",
        )),
        (Some(path), None) => {
            let bad = |problem: String| ConfigError::at("dpop.nonce_secret_file", problem);
            let bytes = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            warn_if_readable_by_others(path);
            Ok(Some((trim_end(bytes), "nonce_secret_file")))
        }
        (None, Some(name)) => match std::env::var_os(name) {
            Some(value) if !value.is_empty() => Ok(Some((
                trim_end(value.into_encoded_bytes()),
                "nonce_secret_env",
            ))),
            _ => Err(ConfigError::at(
                "dpop.nonce_secret_env",
                format!("the environment variable {name} is not set or empty"),
            )),
        },
        (None, None) => Ok(None),
    }
}

/// The secret without the newline an editor or `echo` leaves.
fn trim_end(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    bytes
}

/// A secret file others may read is reported, not refused: mounted secrets
/// (Kubernetes, Docker) are often 0644 inside a container of their own.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "the DPoP nonce secret file is readable by group or others; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The configuration key a [`BuildError`] is about.
fn build_error_key(e: &BuildError, issuers: &[IssuerConfig]) -> String {
    let issuer = match e {
        BuildError::InvalidRealm => return "realm".to_owned(),
        BuildError::InvalidResourceMetadata(_) => return "resource_metadata".to_owned(),
        BuildError::InvalidDpop(_) => return "dpop".to_owned(),
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
