//! Which issuers are trusted, and where each one's keys come from.
//!
//! The token's (unverified) `iss` picks the issuer entry by exact, byte-for-byte
//! comparison: `https://a/` and `https://a` are different issuers. An `iss` that
//! matches no entry is refused before any key lookup or network fetch, so an
//! attacker can never make us fetch from a URL of their choosing. Each entry has
//! its own key store: a key from issuer A's JWKS never verifies a token of issuer B.
//!
//! A **tenant template** (`https://login.microsoftonline.com/{tenant}/v2.0`) is one
//! entry for many issuers that share a key source, as Entra ID's tenants do. The
//! tenant is cut out of `iss`, must be a plain identifier, must equal the `tid`
//! claim when there is one, and must pass the entry's tenant policy: a list, a
//! predicate, or — only when asked for by name — any tenant. Because the keys are
//! shared, a JWK that names its `issuer` (Entra's do, with a `{tenantid}`
//! placeholder) only verifies tokens of that issuer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::jws::{Algorithm, AlgorithmSet};
use crate::keys::store::KeyStore;

/// One trusted issuer: its exact identifier, its key source, and optionally its own
/// audiences and algorithms (otherwise the guard's are used).
///
/// ```
/// use bearer_guard::{Algorithm, Issuer};
///
/// // Keys found through discovery (RFC 8414 / OpenID Connect).
/// let a = Issuer::new("https://login.example.com");
/// // Keys from an explicit JWKS URL, with this issuer's own audience and algorithms.
/// let b = Issuer::new("https://idp.partner.example")
///     .jwks_uri("https://idp.partner.example/keys")
///     .audience("https://api.example.com/partner")
///     .algorithms([Algorithm::ES256]);
/// # let _ = (a, b);
/// ```
#[derive(Debug, Clone)]
pub struct Issuer {
    pub(crate) issuer: String,
    pub(crate) keys: KeySourceSpec,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Option<Vec<Algorithm>>,
    pub(crate) tenants: Option<TenantPolicy>,
    pub(crate) dpop: Option<crate::sender::DpopMode>,
    pub(crate) introspection: Option<crate::Introspection>,
}

/// Which tenants a tenant template accepts.
#[derive(Clone)]
pub(crate) enum TenantPolicy {
    /// A set: 10,000 tenants cost one hash, not 10,000 comparisons.
    List(Arc<HashSet<String, Hasher>>),
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
    Any,
}

impl TenantPolicy {
    fn accepts(&self, tenant: &str) -> bool {
        match self {
            TenantPolicy::List(set) => set.contains(tenant),
            TenantPolicy::Predicate(f) => f(tenant),
            TenantPolicy::Any => true,
        }
    }
}

impl std::fmt::Debug for TenantPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantPolicy::List(l) => f.debug_tuple("List").field(l).finish(),
            TenantPolicy::Predicate(_) => f.write_str("Predicate(..)"),
            TenantPolicy::Any => f.write_str("Any"),
        }
    }
}

/// The placeholder of a tenant template.
pub(crate) const TENANT: &str = "{tenant}";

/// How an issuer's keys are obtained (as configured).
#[derive(Clone)]
pub(crate) enum KeySourceSpec {
    Discovery,
    JwksUri(String),
    JwksDocument(String),
    SharedSecret(Arc<[u8]>),
}

impl std::fmt::Debug for KeySourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySourceSpec::Discovery => f.write_str("Discovery"),
            KeySourceSpec::JwksUri(u) => f.debug_tuple("JwksUri").field(u).finish(),
            KeySourceSpec::JwksDocument(_) => f.write_str("JwksDocument(..)"),
            // Never print a secret.
            KeySourceSpec::SharedSecret(_) => f.write_str("SharedSecret(<redacted>)"),
        }
    }
}

impl Issuer {
    /// An issuer whose keys are found through its metadata document.
    pub fn new(issuer: impl Into<String>) -> Self {
        Issuer {
            issuer: issuer.into(),
            keys: KeySourceSpec::Discovery,
            audiences: Vec::new(),
            algorithms: None,
            tenants: None,
            dpop: None,
            introspection: None,
        }
    }

    /// A family of issuers with one `{tenant}` placeholder, e.g.
    /// `https://login.microsoftonline.com/{tenant}/v2.0`, sharing one key source
    /// (set it with [`jwks_uri`](Self::jwks_uri) or
    /// [`jwks_document`](Self::jwks_document): there is no single issuer to
    /// discover). Name the accepted tenants with [`tenants`](Self::tenants) or
    /// [`tenant_filter`](Self::tenant_filter); [`allow_any_tenant`](Self::allow_any_tenant)
    /// must be called explicitly to accept every tenant.
    ///
    /// ```
    /// use bearer_guard::Issuer;
    ///
    /// let entra = Issuer::tenant_template("https://login.microsoftonline.com/{tenant}/v2.0")
    ///     .jwks_uri("https://login.microsoftonline.com/common/discovery/v2.0/keys")
    ///     .tenants(["72f988bf-86f1-41af-91ab-2d7cd011db47"]);
    /// # let _ = entra;
    /// ```
    pub fn tenant_template(template: impl Into<String>) -> Self {
        Issuer::new(template)
    }

    /// The tenants a tenant template accepts (exact, case-sensitive).
    pub fn tenants<I, S>(mut self, tenants: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let set: HashSet<String, Hasher> = tenants.into_iter().map(Into::into).collect();
        self.tenants = Some(TenantPolicy::List(Arc::new(set)));
        self
    }

    /// Accepts the tenants for which `filter` returns true.
    pub fn tenant_filter(mut self, filter: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.tenants = Some(TenantPolicy::Predicate(Arc::new(filter)));
        self
    }

    /// Accepts every tenant of the template. Any organisation with an account at
    /// the shared issuer can then get tokens your API accepts: make sure the
    /// audience (or your own checks on `tid`) narrows that down.
    pub fn allow_any_tenant(mut self) -> Self {
        self.tenants = Some(TenantPolicy::Any);
        self
    }

    /// Fetch the keys from this JWKS URL instead of discovering it.
    pub fn jwks_uri(mut self, uri: impl Into<String>) -> Self {
        self.keys = KeySourceSpec::JwksUri(uri.into());
        self
    }

    /// Use this fixed JWKS document (JSON text); nothing is ever fetched.
    pub fn jwks_document(mut self, json: impl Into<String>) -> Self {
        self.keys = KeySourceSpec::JwksDocument(json.into());
        self
    }

    /// Verify HS256/384/512 tokens with this shared secret (at least 32 bytes).
    /// Only HMAC algorithms may then be configured for the issuer, and the
    /// algorithms must be named explicitly.
    pub fn shared_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.keys = KeySourceSpec::SharedSecret(secret.as_ref().into());
        self
    }

    /// Accepts opaque access tokens (anything not shaped like a JWS) by asking
    /// this issuer's introspection endpoint (RFC 7662). At most one issuer may
    /// have one: an opaque token names no issuer, and sending it to several
    /// would disclose one issuer's tokens to the others.
    pub fn introspection(mut self, introspection: crate::Introspection) -> Self {
        self.introspection = Some(introspection);
        self
    }

    /// An audience accepted for this issuer's tokens (replaces the guard-wide list
    /// for this issuer). May be called more than once.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The algorithms accepted for this issuer (replaces the guard-wide list).
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algorithms.into_iter().collect());
        self
    }

    /// Whether this issuer's tokens may or must be DPoP-bound (replaces the
    /// mode of [`GuardBuilder::dpop`](crate::GuardBuilder::dpop) for this issuer;
    /// anything but [`DpopMode::Disabled`](crate::sender::DpopMode::Disabled)
    /// needs that configuration).
    pub fn dpop(mut self, mode: crate::sender::DpopMode) -> Self {
        self.dpop = Some(mode);
        self
    }

    /// The issuer identifier.
    pub fn identifier(&self) -> &str {
        &self.issuer
    }
}

impl From<&str> for Issuer {
    fn from(issuer: &str) -> Self {
        Issuer::new(issuer)
    }
}

impl From<String> for Issuer {
    fn from(issuer: String) -> Self {
        Issuer::new(issuer)
    }
}

/// How an entry recognises its `iss` values.
pub(crate) enum Matcher {
    Exact,
    Template {
        prefix: Box<str>,
        suffix: Box<str>,
        tenants: TenantPolicy,
    },
}

/// A configured, ready issuer.
pub(crate) struct IssuerEntry {
    /// The issuer, or the template with its `{tenant}` placeholder.
    pub issuer: Box<str>,
    pub matcher: Matcher,
    pub audiences: Box<[String]>,
    pub algorithms: AlgorithmSet,
    pub store: Arc<KeyStore>,
}

/// The trusted issuers, looked up by exact `iss`.
pub(crate) struct IssuerPolicy {
    entries: Vec<IssuerEntry>,
    /// Exact issuers by `iss`: a SaaS may trust thousands (one per custom domain).
    exact: HashMap<Box<str>, usize, Hasher>,
    /// The indices of the tenant templates, in configuration order (a short list).
    templates: Box<[usize]>,
    /// Some template decides by a predicate, which may change its answer for the
    /// same `iss` (a live deny list); without one, `find` is a pure function of
    /// `iss` and the configuration.
    predicates: bool,
}

/// How many configured issuers an `IssuerNotAllowed` detail names.
pub(crate) const SHOWN_ISSUERS: usize = 8;

/// Keys are configuration (issuers, tenants) and lookups are the unverified `iss`:
/// foldhash, seeded per process, is fast on short strings and nothing an attacker
/// sends is ever inserted.
pub(crate) type Hasher = foldhash::fast::RandomState;

impl IssuerPolicy {
    pub(crate) fn new(entries: Vec<IssuerEntry>) -> Self {
        let mut exact = HashMap::with_hasher(Hasher::default());
        let mut templates = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match entry.matcher {
                // The first entry for an issuer wins, as in a scan.
                Matcher::Exact => {
                    exact.entry(entry.issuer.clone()).or_insert(index);
                }
                Matcher::Template { .. } => templates.push(index),
            }
        }
        let predicates = entries.iter().any(|e| {
            matches!(
                e.matcher,
                Matcher::Template {
                    tenants: TenantPolicy::Predicate(_),
                    ..
                }
            )
        });
        IssuerPolicy {
            entries,
            exact,
            templates: templates.into(),
            predicates,
        }
    }

    /// The entry for `iss`, and the tenant when a template matched. Exact entries
    /// compare byte for byte. The first entry in configuration order that accepts
    /// `iss` wins: templates before the exact entry are tried first.
    pub(crate) fn find<'i>(&self, iss: &'i str) -> Result<Match<'_, 'i>, TenantRefusal<'i>> {
        let exact = self.exact.get(iss).copied();
        let mut refusal = TenantRefusal::NoEntry;
        for &index in self.templates.iter() {
            if exact.is_some_and(|e| e < index) {
                break;
            }
            let entry = &self.entries[index];
            let Matcher::Template {
                prefix,
                suffix,
                tenants,
            } = &entry.matcher
            else {
                continue;
            };
            let Some(tenant) = iss
                .strip_prefix(&**prefix)
                .and_then(|rest| rest.strip_suffix(&**suffix))
            else {
                continue;
            };
            if !is_tenant_id(tenant) {
                continue;
            }
            if tenants.accepts(tenant) {
                return Ok(Match {
                    index,
                    entry,
                    tenant: Some(tenant),
                });
            }
            refusal = TenantRefusal::NotAllowed(tenant);
        }
        match exact {
            Some(index) => Ok(Match {
                index,
                entry: &self.entries[index],
                tenant: None,
            }),
            None => Err(refusal),
        }
    }

    /// Whether [`find`](Self::find) can answer differently for the same `iss`
    /// over time: only through a tenant predicate.
    pub(crate) fn has_predicates(&self) -> bool {
        self.predicates
    }

    pub(crate) fn entries(&self) -> &[IssuerEntry] {
        &self.entries
    }

    /// The first [`SHOWN_ISSUERS`] configured issuers, for error details: a refused
    /// token must not cost an allocation per configured issuer.
    pub(crate) fn identifiers(&self) -> Vec<String> {
        self.entries
            .iter()
            .take(SHOWN_ISSUERS)
            .map(|e| e.issuer.to_string())
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The issuer entry a token's `iss` selected.
pub(crate) struct Match<'p, 'i> {
    pub index: usize,
    pub entry: &'p IssuerEntry,
    pub tenant: Option<&'i str>,
}

/// Why no entry accepted an `iss`.
pub(crate) enum TenantRefusal<'i> {
    NoEntry,
    NotAllowed(&'i str),
}

/// A tenant cut from `iss` must be a plain identifier (GUIDs, domain names):
/// never empty, never a path (`a/b`), never anything needing escaping.
fn is_tenant_id(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && t != "."
        && t != ".."
}

/// Whether a JWK's `issuer` member admits a token of `iss`. Entra publishes the
/// member with a `{tenantid}` placeholder, filled with the token's tenant.
pub(crate) fn key_admits(key_issuer: &str, iss: &str, tenant: Option<&str>) -> bool {
    match (key_issuer.split_once("{tenantid}"), tenant) {
        (Some((before, after)), Some(tenant)) => {
            iss.len() == before.len() + tenant.len() + after.len()
                && iss.starts_with(before)
                && iss.ends_with(after)
                && &iss[before.len()..iss.len() - after.len()] == tenant
        }
        _ => key_issuer == iss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_plain_identifiers() {
        for ok in [
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "contoso.onmicrosoft.com",
            "a_b",
        ] {
            assert!(is_tenant_id(ok), "{ok}");
        }
        for bad in ["", "a/b", "..", ".", "a b", "a%2fb", "a?x=1", "\u{0}"] {
            assert!(!is_tenant_id(bad), "{bad}");
        }
    }

    #[test]
    fn key_issuer_binding_with_and_without_placeholder() {
        let entra = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let iss_a = "https://login.microsoftonline.com/a/v2.0";
        assert!(key_admits(entra, iss_a, Some("a")));
        assert!(!key_admits(entra, iss_a, Some("b")));
        assert!(!key_admits(
            entra,
            "https://login.microsoftonline.com/b/v2.0",
            Some("a")
        ));
        assert!(key_admits(iss_a, iss_a, Some("a")));
        assert!(!key_admits(
            iss_a,
            "https://login.microsoftonline.com/b/v2.0",
            Some("b")
        ));
        assert!(!key_admits(entra, iss_a, None));
    }
}
