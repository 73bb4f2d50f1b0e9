//! [`GuardBuilder`] and [`BuildError`]: everything is checked when the guard is
//! built, so a misconfiguration fails at startup, not on the first request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cache::{CacheConfig, TokenCache};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::guard::{Guard, GuardInner};
use crate::issuer::{Issuer, IssuerEntry, IssuerPolicy, KeySourceSpec, Matcher, TENANT};
use crate::jws::{Algorithm, AlgorithmSet, TypPolicy};
use crate::keys::KeySet;
use crate::keys::discovery::check_url;
use crate::keys::fetch::{self, FetchLimits};
use crate::keys::store::{FetchContext, KeySource, KeyStore, RefreshPolicy};
use crate::response::{Answerer, DpopChallenge, ErrorHandler, Responder};
use crate::token::TokenSource;

/// A configuration the builder refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No issuer was configured.
    #[error("no issuer configured: call .issuer(..) at least once")]
    NoIssuer,
    /// An issuer identifier is empty or appears twice.
    #[error("issuer {0:?} is empty or configured twice")]
    DuplicateIssuer(String),
    /// No audience for an issuer (RFC 9068 §4 makes the check mandatory).
    #[error("no audience configured for issuer {0:?}: call .audience(..)")]
    NoAudience(String),
    /// The algorithm list is empty.
    #[error("no algorithm allowed for issuer {0:?}")]
    NoAlgorithms(String),
    /// HS* configured for an issuer whose keys come from a JWKS.
    #[error(
        "issuer {issuer:?}: {alg} needs a shared secret and can never be verified against a JWKS"
    )]
    HmacWithJwks {
        /// The issuer.
        issuer: String,
        /// The HMAC algorithm.
        alg: Algorithm,
    },
    /// A shared secret with asymmetric (or no explicit) algorithms.
    #[error(
        "issuer {0:?} has a shared secret: name its HS256/384/512 algorithms explicitly, and only those"
    )]
    SecretNeedsHmacAlgorithms(String),
    /// A shared secret shorter than the hash output (RFC 7518 §3.2).
    #[error("issuer {issuer:?}: the shared secret is {len} bytes; {alg} needs at least {min}")]
    SecretTooShort {
        /// The issuer.
        issuer: String,
        /// The algorithm.
        alg: Algorithm,
        /// The secret's length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// A URL (issuer for discovery, or jwks_uri) is unusable.
    #[error("issuer {issuer:?}: {reason}")]
    InvalidUrl {
        /// The issuer.
        issuer: String,
        /// What is wrong.
        reason: String,
    },
    /// A static JWKS document is unusable.
    #[error("issuer {issuer:?}: the JWKS document is unusable: {reason}")]
    InvalidJwks {
        /// The issuer.
        issuer: String,
        /// What is wrong.
        reason: String,
    },
    /// The realm contains a character that cannot appear in a quoted-string.
    #[error("the realm may not contain quotes, backslashes or control characters")]
    InvalidRealm,
    /// A tenant template without a tenant policy, or a policy without a template.
    #[error(
        "issuer {0:?}: a tenant template needs exactly one {{tenant}} and .tenants(..), .tenant_filter(..) or .allow_any_tenant()"
    )]
    TenantTemplate(String),
    /// A tenant template must name its shared key source.
    #[error(
        "issuer {0:?}: a tenant template cannot use discovery; set .jwks_uri(..) or .jwks_document(..)"
    )]
    TemplateNeedsKeySource(String),
    /// A limit is zero or inconsistent.
    #[error("invalid limit: {0}")]
    InvalidLimit(&'static str),
    /// A time setting is outside the range it may take (see the builder method
    /// named by `setting`).
    #[error("{setting} is {value:?}; {}", range_text(*min, *max))]
    DurationOutOfRange {
        /// The builder method.
        setting: &'static str,
        /// The value given.
        value: Duration,
        /// The smallest value accepted.
        min: Duration,
        /// The largest value accepted, if there is one.
        max: Option<Duration>,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    HttpClient(String),
    /// The DPoP settings are unusable, or an issuer asks for DPoP without them.
    #[error("DPoP: {0}")]
    InvalidDpop(String),
    /// The protected-resource metadata (RFC 9728) is unusable.
    #[error("resource metadata: {0}")]
    InvalidResourceMetadata(String),
}

fn range_text(min: Duration, max: Option<Duration>) -> String {
    match max {
        Some(max) if min.is_zero() => format!("it must be at most {max:?}"),
        Some(max) => format!("it must be between {min:?} and {max:?}"),
        None => format!("it must be at least {min:?}"),
    }
}

/// The largest leeway: beyond a few minutes a clock is broken, not skewed, and a
/// huge leeway makes tokens never expire.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// The shortest JWKS TTL, unknown-`kid` cooldown and retry interval: below a
/// second, a `max-age=0` issuer or a flood of unknown `kid`s would make every
/// request a fetch.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(1);

/// Builds a [`Guard`]. Every method consumes and returns the builder.
#[must_use]
pub struct GuardBuilder {
    issuers: Vec<Issuer>,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    typ: TypPolicy,
    max_token_bytes: usize,
    clock: SharedClock,
    http_client: Option<reqwest::Client>,
    realm: Option<String>,
    error_handler: Option<ErrorHandler>,
    #[cfg(feature = "cookie")]
    token_cookie: Option<String>,
    allow_http: bool,
    refresh: RefreshPolicy,
    limits: FetchLimits,
    cache: CacheConfig,
    dpop: Option<crate::sender::Dpop>,
    resource_metadata: Option<crate::resource_metadata::ResourceMetadata>,
}

impl Default for GuardBuilder {
    fn default() -> Self {
        GuardBuilder {
            issuers: Vec::new(),
            audiences: Vec::new(),
            algorithms: Algorithm::DEFAULT.to_vec(),
            leeway: Duration::from_secs(60),
            typ: TypPolicy::Lenient,
            max_token_bytes: 16 * 1024,
            clock: Arc::new(SystemClock),
            http_client: None,
            realm: None,
            error_handler: None,
            #[cfg(feature = "cookie")]
            token_cookie: None,
            allow_http: false,
            refresh: RefreshPolicy::default(),
            limits: FetchLimits::default(),
            cache: CacheConfig::default(),
            dpop: None,
            resource_metadata: None,
        }
    }
}

impl fmt::Debug for GuardBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardBuilder")
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl GuardBuilder {
    /// Trusts an issuer: a string (keys by discovery) or an [`Issuer`].
    pub fn issuer(mut self, issuer: impl Into<Issuer>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// An accepted audience (RFC 9068 `aud`), for issuers without their own list.
    /// May be called more than once; a token must name at least one of them.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The accepted algorithms, for issuers without their own list.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Tolerance for clock skew on `exp`, `nbf` and `iat` (default 60 s, at most
    /// 5 min: [`build`](Self::build) refuses more).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Which `typ` headers are accepted (default [`TypPolicy::Lenient`]).
    pub fn typ_policy(mut self, typ: TypPolicy) -> Self {
        self.typ = typ;
        self
    }

    /// Requires `typ: at+jwt` (RFC 9068), refusing ID tokens and other JWTs.
    pub fn strict_rfc9068(self) -> Self {
        self.typ_policy(TypPolicy::StrictRfc9068)
    }

    /// The largest token accepted, in bytes, checked before any decoding
    /// (default 16 KiB).
    pub fn max_token_size(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// The clock for token times and key-refresh timing (default: the system's).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The HTTP client for discovery and JWKS fetches (custom CA, proxy...). The
    /// fetch timeout still applies; redirects follow the client's own policy.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// The `realm` of `WWW-Authenticate` challenges.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// Replaces the whole error response of the layers, extractors and
    /// [`Require`](crate::Require) (status, headers, body). The hook sees the
    /// error, the request's headers, whether a gRPC answer is expected, and the
    /// default answer to start from (see [`Refusal`](crate::Refusal)): building on
    /// [`Refusal::default_response`](crate::Refusal::default_response) keeps the
    /// challenges, `DPoP-Nonce` and `Retry-After` that clients rely on.
    pub fn error_handler(
        mut self,
        handler: impl Fn(&crate::Refusal<'_>) -> http::Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.error_handler = Some(Arc::new(handler));
        self
    }

    /// Also accepts the token from this cookie (a request must not carry both a
    /// header and the cookie). Off by default.
    #[cfg(feature = "cookie")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cookie")))]
    pub fn token_cookie(mut self, name: impl Into<String>) -> Self {
        self.token_cookie = Some(name.into());
        self
    }

    /// Allows plain-http discovery and JWKS URLs on non-loopback hosts. Only for
    /// networks where the transport is otherwise protected.
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    /// JWKS TTL when the response has no caching headers (default 10 min).
    pub fn jwks_default_ttl(mut self, ttl: Duration) -> Self {
        self.refresh.default_ttl = ttl;
        self
    }

    /// Bounds for the TTL taken from `Cache-Control`/`Expires` (default 5 min..24 h;
    /// the minimum must be at least 1 s and not above the maximum).
    pub fn jwks_ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.refresh.min_ttl = min;
        self.refresh.max_ttl = max;
        self
    }

    /// Minimum time between two refreshes caused by an unknown `kid` (default 30 s,
    /// at least 1 s).
    pub fn kid_miss_cooldown(mut self, cooldown: Duration) -> Self {
        self.refresh.kid_miss_cooldown = cooldown;
        self
    }

    /// How long past their TTL last-known-good keys are used while the issuer
    /// cannot be reached (default 24 h).
    pub fn max_key_staleness(mut self, staleness: Duration) -> Self {
        self.refresh.max_staleness = staleness;
        self
    }

    /// Minimum time between fetch attempts after a failure (default 5 s, at
    /// least 1 s).
    pub fn jwks_retry_interval(mut self, interval: Duration) -> Self {
        self.refresh.retry_interval = interval;
        self
    }

    /// Timeout of one discovery or JWKS fetch, body included (default 5 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout = timeout;
        self
    }

    /// Largest JWKS or metadata body accepted (default 512 KiB).
    pub fn max_jwks_size(mut self, bytes: usize) -> Self {
        self.limits.max_bytes = bytes;
        self
    }

    /// Most keys accepted in one JWKS (default 100).
    pub fn max_jwks_keys(mut self, keys: usize) -> Self {
        self.limits.max_keys = keys;
        self
    }

    /// Turns the verified-token cache off: every request then pays for the full
    /// verification (parsing and signature).
    pub fn disable_token_cache(mut self) -> Self {
        self.cache.enabled = false;
        self
    }

    /// Memory bound of the verified-token cache, in bytes (default 32 MiB; each
    /// entry weighs its token, its claims and 1 KiB of bookkeeping: about 2 KiB
    /// for a typical RS256 token, so ~16k tokens by default).
    pub fn token_cache_capacity(mut self, bytes: u64) -> Self {
        self.cache.max_bytes = bytes;
        self
    }

    /// Most tokens the verified-token cache holds (default 100,000), whatever
    /// their size.
    pub fn token_cache_max_entries(mut self, entries: u64) -> Self {
        self.cache.max_entries = entries;
        self
    }

    /// Longest time a verified token is served from the cache before it is
    /// verified again, whatever its `exp` (default 1 h), by the guard's clock
    /// ([`clock`](Self::clock)).
    pub fn token_cache_max_ttl(mut self, ttl: Duration) -> Self {
        self.cache.max_ttl = ttl;
        self
    }

    /// Tokens longer than this are never cached (default 8 KiB).
    pub fn token_cache_max_token_size(mut self, bytes: usize) -> Self {
        self.cache.max_token_bytes = bytes;
        self
    }

    /// Accepts DPoP-bound tokens (RFC 9449) with these settings; see
    /// [`sender`](crate::sender). Without it the `DPoP` scheme is not accepted
    /// and DPoP-bound tokens are refused.
    pub fn dpop(mut self, dpop: crate::sender::Dpop) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// Publishes protected-resource metadata (RFC 9728): the layer answers its
    /// well-known URL and every challenge names it in `resource_metadata="…"`.
    /// See [`resource_metadata`](crate::resource_metadata).
    pub fn resource_metadata(
        mut self,
        metadata: crate::resource_metadata::ResourceMetadata,
    ) -> Self {
        self.resource_metadata = Some(metadata);
        self
    }

    /// Checks the configuration and builds the guard. Keys are fetched lazily, on
    /// the first request (or by [`Guard::prefetch`]).
    pub fn build(self) -> Result<Guard, BuildError> {
        if self.issuers.is_empty() {
            return Err(BuildError::NoIssuer);
        }
        if self.max_token_bytes == 0 {
            return Err(BuildError::InvalidLimit("max_token_size must be positive"));
        }
        if self.limits.max_bytes == 0 || self.limits.max_keys == 0 {
            return Err(BuildError::InvalidLimit(
                "JWKS size and key limits must be positive",
            ));
        }
        if self.limits.timeout.is_zero() {
            return Err(BuildError::InvalidLimit("fetch_timeout must be positive"));
        }
        if self.refresh.min_ttl > self.refresh.max_ttl {
            return Err(BuildError::InvalidLimit(
                "the JWKS TTL minimum exceeds the maximum",
            ));
        }
        self.check_durations()?;
        if let Some(realm) = &self.realm
            && realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(BuildError::InvalidRealm);
        }
        let client = match self.http_client.clone() {
            Some(client) => client,
            None => fetch::default_client(self.limits.timeout)
                .map_err(|e| BuildError::HttpClient(e.to_string()))?,
        };
        let context = Arc::new(FetchContext {
            client,
            clock: Arc::clone(&self.clock),
            policy: self.refresh.clone(),
            limits: self.limits.clone(),
        });

        let introspection = self.introspector(&context)?;
        let mut entries: Vec<IssuerEntry> = Vec::with_capacity(self.issuers.len());
        for issuer in &self.issuers {
            let name = issuer.issuer.clone();
            if name.is_empty() || entries.iter().any(|e| *e.issuer == *name) {
                return Err(BuildError::DuplicateIssuer(name));
            }
            let audiences = if issuer.audiences.is_empty() {
                self.audiences.clone()
            } else {
                issuer.audiences.clone()
            };
            if audiences.is_empty() {
                return Err(BuildError::NoAudience(name));
            }
            let explicit_algorithms = issuer.algorithms.is_some();
            let algorithms: AlgorithmSet = issuer
                .algorithms
                .as_deref()
                .unwrap_or(&self.algorithms)
                .iter()
                .copied()
                .collect();
            if algorithms.is_empty() {
                return Err(BuildError::NoAlgorithms(name));
            }
            let matcher = matcher(issuer)?;
            let source = self.key_source(issuer, algorithms, explicit_algorithms)?;
            let store = KeyStore::new(&name, source, Arc::clone(&context), algorithms);
            entries.push(IssuerEntry {
                issuer: name.into(),
                matcher,
                audiences: audiences.into(),
                algorithms,
                store: Arc::new(store),
            });
        }

        let dpop = self.dpop_verifier()?;
        let challenge = dpop.as_ref().map(|d| {
            Arc::new(DpopChallenge {
                algs: Arc::clone(&d.algs),
                bearer_too: d
                    .modes
                    .iter()
                    .any(|m| *m != crate::sender::DpopMode::Required),
            })
        });
        let resource_metadata = match &self.resource_metadata {
            None => None,
            Some(m) => {
                let facts = crate::resource_metadata::GuardFacts {
                    // Templates have no one URL to publish (see the module docs).
                    issuers: self
                        .issuers
                        .iter()
                        .filter(|i| i.tenants.is_none() && !i.issuer.contains(TENANT))
                        .map(|i| i.issuer.as_str())
                        .collect(),
                    dpop_algs: dpop.as_ref().map(|d| d.algs.split(' ').collect()),
                    dpop_required: dpop.as_ref().is_some_and(|d| {
                        d.modes
                            .iter()
                            .all(|m| *m == crate::sender::DpopMode::Required)
                    }),
                    allow_http: self.allow_http,
                };
                Some(
                    m.publish(&facts)
                        .map_err(BuildError::InvalidResourceMetadata)?,
                )
            }
        };
        Ok(Guard {
            inner: Arc::new(GuardInner {
                issuers: IssuerPolicy::new(entries),
                cache: TokenCache::new(&self.cache),
                leeway: self.leeway,
                typ: self.typ,
                tokens: TokenSource {
                    max_len: self.max_token_bytes,
                    #[cfg(feature = "cookie")]
                    cookie: self.token_cookie.map(Into::into),
                },
                answerer: Arc::new(Answerer {
                    responder: Responder {
                        realm: self.realm.map(Into::into),
                        handler: self.error_handler,
                        dpop: challenge,
                        resource_metadata: resource_metadata.as_ref().map(|m| m.url().into()),
                    },
                    clock: self.clock,
                }),
                dpop,
                introspection,
                resource_metadata,
            }),
        })
    }

    /// The DPoP verifier, with each issuer's mode; `None` without `.dpop(..)`.
    fn dpop_verifier(&self) -> Result<Option<crate::sender::DpopVerifier>, BuildError> {
        use crate::sender::DpopMode;
        let Some(dpop) = &self.dpop else {
            return match self
                .issuers
                .iter()
                .find(|i| i.dpop.is_some_and(|m| m != DpopMode::Disabled))
            {
                Some(i) => Err(BuildError::InvalidDpop(format!(
                    "issuer {:?} accepts DPoP: configure it with GuardBuilder::dpop(..)",
                    i.issuer
                ))),
                None => Ok(None),
            };
        };
        let modes = self
            .issuers
            .iter()
            .map(|i| i.dpop.unwrap_or(dpop.mode))
            .collect();
        dpop.clone()
            .build(modes)
            .map(Some)
            .map_err(BuildError::InvalidDpop)
    }

    /// The introspection endpoint of the one issuer that has one.
    fn introspector(
        &self,
        context: &FetchContext,
    ) -> Result<Option<crate::introspect::Introspector>, BuildError> {
        let mut configured = self
            .issuers
            .iter()
            .enumerate()
            .filter_map(|(i, issuer)| Some((i, issuer, issuer.introspection.as_ref()?)));
        let Some((index, issuer, config)) = configured.next() else {
            return Ok(None);
        };
        if configured.next().is_some() {
            return Err(BuildError::InvalidLimit(
                "at most one issuer may have an introspection endpoint",
            ));
        }
        if issuer.tenants.is_some() {
            return Err(BuildError::InvalidLimit(
                "a tenant template cannot have an introspection endpoint",
            ));
        }
        if config.max_ttl.is_zero() || config.negative_ttl.is_zero() || config.max_entries == 0 {
            return Err(BuildError::InvalidLimit(
                "introspection cache TTLs and size must be positive",
            ));
        }
        let invalid = |reason| BuildError::InvalidUrl {
            issuer: issuer.issuer.clone(),
            reason,
        };
        let endpoint = match &config.endpoint {
            Some(url) => crate::introspect::EndpointSource::Configured(
                check_url(url, self.allow_http).map_err(invalid)?,
            ),
            None => {
                // Discovery starts from the issuer identifier.
                check_url(&issuer.issuer, self.allow_http).map_err(invalid)?;
                crate::introspect::EndpointSource::discovered(self.allow_http)
            }
        };
        Ok(Some(crate::introspect::Introspector::new(
            index,
            &issuer.issuer,
            endpoint,
            config,
            context.client.clone(),
            context.limits.clone(),
        )))
    }

    /// The time settings whose extremes would weaken validation or hammer the
    /// issuer: refused rather than clamped, so a typo shows at startup.
    fn check_durations(&self) -> Result<(), BuildError> {
        let r = &self.refresh;
        let bounds = [
            ("leeway", self.leeway, Duration::ZERO, Some(MAX_LEEWAY)),
            (
                "jwks_ttl_bounds (min)",
                r.min_ttl,
                MIN_REFETCH_INTERVAL,
                None,
            ),
            (
                "kid_miss_cooldown",
                r.kid_miss_cooldown,
                MIN_REFETCH_INTERVAL,
                None,
            ),
            (
                "jwks_retry_interval",
                r.retry_interval,
                MIN_REFETCH_INTERVAL,
                None,
            ),
        ];
        for (setting, value, min, max) in bounds {
            if value < min || max.is_some_and(|max| value > max) {
                return Err(BuildError::DurationOutOfRange {
                    setting,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }

    fn key_source(
        &self,
        issuer: &Issuer,
        algorithms: AlgorithmSet,
        explicit_algorithms: bool,
    ) -> Result<KeySource, BuildError> {
        let name = &issuer.issuer;
        if let KeySourceSpec::SharedSecret(secret) = &issuer.keys {
            if !explicit_algorithms || algorithms.iter().any(|a| !a.is_symmetric()) {
                return Err(BuildError::SecretNeedsHmacAlgorithms(name.clone()));
            }
            for alg in algorithms.iter() {
                let min = match alg {
                    Algorithm::HS256 => 32,
                    Algorithm::HS384 => 48,
                    _ => 64,
                };
                if secret.len() < min {
                    return Err(BuildError::SecretTooShort {
                        issuer: name.clone(),
                        alg,
                        len: secret.len(),
                        min,
                    });
                }
            }
            return Ok(KeySource::Static(Arc::new(KeySet::from_secret(
                secret, algorithms,
            ))));
        }
        if let Some(alg) = algorithms.iter().find(|a| a.is_symmetric()) {
            return Err(BuildError::HmacWithJwks {
                issuer: name.clone(),
                alg,
            });
        }
        let invalid_url = |reason| BuildError::InvalidUrl {
            issuer: name.clone(),
            reason,
        };
        Ok(match &issuer.keys {
            KeySourceSpec::Discovery => {
                let url = check_url(name, self.allow_http).map_err(invalid_url)?;
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(invalid_url(
                        "an issuer used for discovery has no query or fragment".to_owned(),
                    ));
                }
                KeySource::Discovery {
                    issuer: name.clone(),
                    allow_http: self.allow_http,
                }
            }
            KeySourceSpec::JwksUri(uri) => {
                KeySource::Jwks(check_url(uri, self.allow_http).map_err(invalid_url)?)
            }
            KeySourceSpec::JwksDocument(json) => {
                let keys = KeySet::from_jwks(json.as_bytes(), algorithms, self.limits.max_keys)
                    .map_err(|e| BuildError::InvalidJwks {
                        issuer: name.clone(),
                        reason: e.to_string(),
                    })?;
                KeySource::Static(Arc::new(keys))
            }
            KeySourceSpec::SharedSecret(_) => unreachable!("handled above"),
        })
    }
}

/// Exact issuer, or a tenant template with its policy.
fn matcher(issuer: &Issuer) -> Result<Matcher, BuildError> {
    let name = &issuer.issuer;
    let placeholders = name.matches(TENANT).count();
    match (&issuer.tenants, placeholders) {
        (None, 0) => Ok(Matcher::Exact),
        (Some(tenants), 1) => {
            if matches!(issuer.keys, KeySourceSpec::Discovery) {
                return Err(BuildError::TemplateNeedsKeySource(name.clone()));
            }
            let (prefix, suffix) = name.split_once(TENANT).unwrap_or((name, ""));
            Ok(Matcher::Template {
                prefix: prefix.into(),
                suffix: suffix.into(),
                tenants: tenants.clone(),
            })
        }
        _ => Err(BuildError::TenantTemplate(name.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> GuardBuilder {
        Guard::builder().audience("https://api")
    }

    #[test]
    fn refuses_no_issuer_and_no_audience() {
        assert_eq!(base().build().err(), Some(BuildError::NoIssuer));
        assert_eq!(
            Guard::builder().issuer("https://a").build().err(),
            Some(BuildError::NoAudience("https://a".into()))
        );
    }

    #[test]
    fn refuses_empty_algorithm_list() {
        let e = base().issuer("https://a").algorithms([]).build().err();
        assert_eq!(e, Some(BuildError::NoAlgorithms("https://a".into())));
    }

    #[test]
    fn refuses_hmac_mixed_with_a_jwks_issuer() {
        let e = base()
            .issuer(Issuer::new("https://a").algorithms([Algorithm::RS256, Algorithm::HS256]))
            .build()
            .err();
        assert!(matches!(
            e,
            Some(BuildError::HmacWithJwks {
                alg: Algorithm::HS256,
                ..
            })
        ));
    }

    #[test]
    fn shared_secret_needs_explicit_hmac_algorithms_and_length() {
        let secret = [1u8; 32];
        let e = base()
            .issuer(Issuer::new("a").shared_secret(secret))
            .build()
            .err();
        assert!(matches!(e, Some(BuildError::SecretNeedsHmacAlgorithms(_))));
        let e = base()
            .issuer(
                Issuer::new("a")
                    .shared_secret(secret)
                    .algorithms([Algorithm::HS512]),
            )
            .build()
            .err();
        assert!(matches!(
            e,
            Some(BuildError::SecretTooShort { min: 64, .. })
        ));
        assert!(
            base()
                .issuer(
                    Issuer::new("a")
                        .shared_secret(secret)
                        .algorithms([Algorithm::HS256])
                )
                .build()
                .is_ok()
        );
    }

    #[test]
    fn refuses_duplicate_issuers_bad_urls_and_realms() {
        let e = base().issuer("https://a").issuer("https://a").build().err();
        assert!(matches!(e, Some(BuildError::DuplicateIssuer(_))));
        let e = base().issuer("http://idp.example").build().err();
        assert!(matches!(e, Some(BuildError::InvalidUrl { .. })));
        let e = base()
            .issuer(Issuer::new("https://a").jwks_uri("ftp://a/jwks"))
            .build()
            .err();
        assert!(matches!(e, Some(BuildError::InvalidUrl { .. })));
        let e = base().issuer("https://a").realm("a\"b").build().err();
        assert_eq!(e, Some(BuildError::InvalidRealm));
        assert!(base().issuer("http://127.0.0.1:9/").build().is_ok());
    }

    #[test]
    fn refuses_an_unusable_static_jwks() {
        let e = base()
            .issuer(Issuer::new("a").jwks_document(r#"{"keys":[]}"#))
            .build()
            .err();
        assert!(matches!(e, Some(BuildError::InvalidJwks { .. })));
    }

    #[test]
    fn tenant_templates_must_be_explicit() {
        let jwks = "https://login.example.com/keys";
        let open =
            Issuer::tenant_template("https://login.example.com/{tenant}/v2.0").jwks_uri(jwks);
        assert!(matches!(
            base().issuer(open.clone()).build().err(),
            Some(BuildError::TenantTemplate(_))
        ));
        assert!(
            base()
                .issuer(open.clone().allow_any_tenant())
                .build()
                .is_ok()
        );
        assert!(base().issuer(open.tenants(["a"])).build().is_ok());
        let discovery =
            Issuer::tenant_template("https://login.example.com/{tenant}/v2.0").tenants(["a"]);
        assert!(matches!(
            base().issuer(discovery).build().err(),
            Some(BuildError::TemplateNeedsKeySource(_))
        ));
        let two = Issuer::tenant_template("https://{tenant}/{tenant}")
            .jwks_uri(jwks)
            .tenants(["a"]);
        assert!(matches!(
            base().issuer(two).build().err(),
            Some(BuildError::TenantTemplate(_))
        ));
        let no_placeholder = Issuer::new("https://a").tenants(["a"]);
        assert!(matches!(
            base().issuer(no_placeholder).build().err(),
            Some(BuildError::TenantTemplate(_))
        ));
    }

    #[test]
    fn refuses_time_settings_that_weaken_validation_or_hammer_the_issuer() {
        let ok = || base().issuer("https://a");
        let out_of_range = |b: GuardBuilder| match b.build() {
            Err(BuildError::DurationOutOfRange { setting, .. }) => setting,
            other => panic!("expected DurationOutOfRange, got {other:?}"),
        };
        let s = Duration::from_secs;
        assert_eq!(out_of_range(ok().leeway(s(301))), "leeway");
        assert_eq!(out_of_range(ok().leeway(Duration::MAX)), "leeway");
        assert_eq!(
            out_of_range(ok().jwks_ttl_bounds(Duration::ZERO, s(60))),
            "jwks_ttl_bounds (min)"
        );
        assert_eq!(
            out_of_range(ok().kid_miss_cooldown(Duration::ZERO)),
            "kid_miss_cooldown"
        );
        assert_eq!(
            out_of_range(ok().kid_miss_cooldown(Duration::from_millis(999))),
            "kid_miss_cooldown"
        );
        assert_eq!(
            out_of_range(ok().jwks_retry_interval(Duration::ZERO)),
            "jwks_retry_interval"
        );
        // The bounds themselves, and huge values where only a minimum applies.
        assert!(
            ok().leeway(s(300))
                .jwks_ttl_bounds(s(1), Duration::MAX)
                .kid_miss_cooldown(s(1))
                .jwks_retry_interval(Duration::MAX)
                .max_key_staleness(Duration::MAX)
                .token_cache_max_ttl(Duration::MAX)
                .build()
                .is_ok()
        );
        let e = ok().leeway(s(301)).build().unwrap_err().to_string();
        assert_eq!(e, "leeway is 301s; it must be at most 300s");
        let e = ok().kid_miss_cooldown(Duration::ZERO).build().unwrap_err();
        assert_eq!(
            e.to_string(),
            "kid_miss_cooldown is 0ns; it must be at least 1s"
        );
    }
}
