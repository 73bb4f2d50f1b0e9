//! The verified token handed to handlers: header facts, standard claims, scopes,
//! and the raw claims for the application's own type.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};

use crate::json::from_json_object;
use crate::jws::{Algorithm, TokenHeader};
use crate::response::Answerer;

/// The largest NumericDate accepted: 9999-12-31T23:59:59Z. Anything beyond is
/// refused rather than saturated, so no arithmetic on it can overflow.
pub(crate) const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A NumericDate (RFC 7519 §2): seconds since the Unix epoch, fraction kept to
/// the nanosecond, so `exp = now + 0.5` is compared as such, never floored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct NumericDate(Duration);

impl NumericDate {
    pub(crate) fn from_secs(secs: u64) -> Self {
        NumericDate(Duration::from_secs(secs))
    }

    /// Since the Unix epoch.
    pub(crate) fn since_epoch(self) -> Duration {
        self.0
    }

    /// Whole seconds (the fraction dropped), for display and the public accessors.
    pub(crate) fn secs(self) -> u64 {
        self.0.as_secs()
    }
}

/// The registered claims bearer-guard checks, parsed once from the payload.
///
/// Duplicate members (two `iss`) are a parse error, never "last one wins".
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RegisteredClaims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default, deserialize_with = "audience")]
    pub aud: Option<Vec<String>>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<NumericDate>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub nbf: Option<NumericDate>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub iat: Option<NumericDate>,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default, deserialize_with = "string_or_list")]
    pub scp: Option<Vec<String>>,
    #[serde(default)]
    pub tid: Option<String>,
    /// RFC 7800 confirmation: what the token is bound to.
    #[serde(default)]
    pub cnf: Option<Confirmation>,
}

/// The `cnf` claim: a DPoP key thumbprint (RFC 9449 §6.1) and/or a client
/// certificate thumbprint (RFC 8705 §3.1). Other members are kept by name, so
/// that a binding bearer-guard cannot check is refused rather than ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Confirmation {
    #[serde(default, deserialize_with = "present_string")]
    pub jkt: Option<String>,
    #[serde(default, rename = "x5t#S256", deserialize_with = "present_string")]
    pub x5t_s256: Option<String>,
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, de::IgnoredAny>,
}

/// A member that, when present, must be a string (`null` is not "absent").
fn present_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// How a verified token is bound to its sender (RFC 7800 `cnf`). A bound token
/// is only ever accepted with its proof: a valid DPoP proof by the key `jkt`
/// names, or a client certificate with the thumbprint `x5t_s256` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Binding<'a> {
    /// Not bound: a plain bearer token.
    Bearer,
    /// DPoP-bound (RFC 9449): `cnf.jkt`, the key's RFC 7638 thumbprint.
    Dpop {
        /// The thumbprint.
        jkt: &'a str,
    },
    /// Bound to a client certificate (RFC 8705): `cnf["x5t#S256"]`.
    Certificate {
        /// The certificate's base64url SHA-256 thumbprint.
        x5t_s256: &'a str,
    },
    /// Bound to both a DPoP key and a client certificate.
    DpopAndCertificate {
        /// The key thumbprint.
        jkt: &'a str,
        /// The certificate thumbprint.
        x5t_s256: &'a str,
    },
}

impl RegisteredClaims {
    pub(crate) fn parse(payload: &str) -> Result<Self, serde_json::Error> {
        from_json_object(payload)
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds, possibly fractional.
/// A member that is present must be one: `null`, strings, booleans, arrays,
/// objects, negative, non-finite and absurdly large values are all refused, for
/// `exp`, `nbf` and `iat` alike (only an absent member is "no claim").
pub(crate) fn numeric_date<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<NumericDate>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = NumericDate;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a NumericDate (a JSON number of seconds)")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            if v > MAX_NUMERIC_DATE {
                return Err(E::custom(format!("NumericDate {v} is beyond year 9999")));
            }
            Ok(NumericDate::from_secs(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("NumericDate {v} is negative")))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if !v.is_finite() || v < 0.0 || v > MAX_NUMERIC_DATE as f64 {
                return Err(E::custom(format!("NumericDate {v} is out of range")));
            }
            Duration::try_from_secs_f64(v)
                .map(NumericDate)
                .map_err(|_| E::custom(format!("NumericDate {v} is out of range")))
        }
    }
    d.deserialize_any(V).map(Some)
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
fn audience<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_any(StringOrList { split: false })
}

/// `scp`: a space-delimited string or an array of strings (Azure AD, Okta).
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_any(StringOrList { split: true })
}

struct StringOrList {
    split: bool,
}

impl<'de> Visitor<'de> for StringOrList {
    type Value = Option<Vec<String>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(if self.split {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        } else {
            vec![v.to_owned()]
        }))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
        while let Some(s) = seq.next_element::<String>()? {
            out.push(s);
        }
        Ok(Some(out))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A set of OAuth scopes: sorted, deduplicated, looked up by binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Box<[String]>);

impl Scopes {
    pub(crate) fn from_claims(scope: Option<&str>, scp: Option<&[String]>) -> Self {
        let mut all: Vec<String> = scope
            .into_iter()
            .flat_map(|s| s.split(' '))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .chain(scp.into_iter().flatten().cloned())
            .collect();
        all.sort_unstable();
        all.dedup();
        Scopes(all.into_boxed_slice())
    }

    /// Whether the set holds `scope` (exact, case-sensitive).
    pub fn contains(&self, scope: &str) -> bool {
        self.0.binary_search_by(|s| s.as_str().cmp(scope)).is_ok()
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// How many scopes the token carries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the token carries no scope.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

/// A token whose signature, issuer, algorithm, times and audience have all been
/// checked. Only validation constructs one; the layer puts it into the request's
/// extensions. Cheap to clone.
#[derive(Clone)]
pub struct VerifiedToken {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for an opaque token, accepted by introspection (RFC 7662).
    header: Option<TokenHeader>,
    claims: RegisteredClaims,
    scopes: Scopes,
    raw: Box<str>,
    /// The access token itself, shared with the cache's key for it.
    token: Arc<str>,
    issuer_index: usize,
    tenant: Option<Box<str>>,
    /// The guard's way of answering, for requirements and extractors after
    /// the layer (`None` only in unit tests).
    answerer: Option<Arc<Answerer>>,
}

impl VerifiedToken {
    /// Only `validate.rs` calls this, after every check passed.
    pub(crate) fn new(
        header: Option<TokenHeader>,
        claims: RegisteredClaims,
        raw: Box<str>,
        token: Arc<str>,
        issuer_index: usize,
        tenant: Option<Box<str>>,
        answerer: Option<Arc<Answerer>>,
    ) -> Self {
        let scopes = Scopes::from_claims(claims.scope.as_deref(), claims.scp.as_deref());
        VerifiedToken {
            inner: Arc::new(Inner {
                header,
                claims,
                scopes,
                raw,
                token,
                issuer_index,
                tenant,
                answerer,
            }),
        }
    }

    /// How the guard that admitted this token answers.
    pub(crate) fn answerer(&self) -> Option<&Arc<Answerer>> {
        self.inner.answerer.as_ref()
    }

    /// A token with these claims, for unit tests of what reads verified tokens.
    #[cfg(all(test, feature = "gateway"))]
    pub(crate) fn for_tests(claims: serde_json::Value) -> Self {
        let raw = claims.to_string();
        let registered = RegisteredClaims::parse(&raw).expect("test claims");
        Self::new(
            None,
            registered,
            raw.into(),
            Arc::from("test"),
            0,
            None,
            None,
        )
    }

    pub(crate) fn registered(&self) -> &RegisteredClaims {
        &self.inner.claims
    }

    /// The `alg` the token was signed with; `None` for an opaque token the
    /// issuer's introspection endpoint vouched for.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.inner.header.as_ref().map(|h| h.alg)
    }

    /// The `kid` of the key that verified it, if the header named one.
    pub fn key_id(&self) -> Option<&str> {
        self.inner.header.as_ref()?.kid.as_deref()
    }

    /// The `typ` header, if any.
    pub fn token_type(&self) -> Option<&str> {
        self.inner.header.as_ref()?.typ.as_deref()
    }

    /// Whether the token is opaque and was accepted by the issuer's introspection
    /// endpoint (RFC 7662) rather than by a signature check.
    pub fn is_introspected(&self) -> bool {
        self.inner.header.is_none()
    }

    /// `iss`: the issuer, equal to one of the configured issuers.
    pub fn issuer(&self) -> &str {
        self.inner.claims.iss.as_deref().unwrap_or_default()
    }

    /// `sub`: the user, or the client for client-credentials tokens.
    pub fn subject(&self) -> Option<&str> {
        self.inner.claims.sub.as_deref()
    }

    /// `aud`: every audience the token names.
    pub fn audiences(&self) -> &[String] {
        self.inner.claims.aud.as_deref().unwrap_or_default()
    }

    /// `exp`, in seconds since the Unix epoch.
    /// A fractional `exp` is rounded down here; validation compares the fraction.
    pub fn expires_at(&self) -> u64 {
        self.inner.claims.exp.map_or(0, NumericDate::secs)
    }

    /// `iat`, in seconds since the Unix epoch.
    pub fn issued_at(&self) -> Option<u64> {
        self.inner.claims.iat.map(NumericDate::secs)
    }

    /// `nbf`, in seconds since the Unix epoch.
    pub fn not_before(&self) -> Option<u64> {
        self.inner.claims.nbf.map(NumericDate::secs)
    }

    /// `jti`: the token's unique identifier.
    pub fn jwt_id(&self) -> Option<&str> {
        self.inner.claims.jti.as_deref()
    }

    /// `client_id` (RFC 9068 §2.2).
    pub fn client_id(&self) -> Option<&str> {
        self.inner.claims.client_id.as_deref()
    }

    /// The scopes, from `scope` (space-delimited) and `scp` (string or array).
    pub fn scopes(&self) -> &Scopes {
        &self.inner.scopes
    }

    /// The tenant id claim `tid`, when present (Entra ID).
    pub fn tenant_id(&self) -> Option<&str> {
        self.inner.claims.tid.as_deref()
    }

    /// The position of the issuer entry that accepted the token, in the order the
    /// issuers were configured.
    pub fn issuer_index(&self) -> usize {
        self.inner.issuer_index
    }

    /// The tenant a tenant-template issuer matched (cut from `iss`), if any.
    pub fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// Whether and how the token is bound to its sender (`cnf`). The guard accepts
    /// a bound token only with its proof, so a `Dpop` or `Certificate` answer
    /// means that proof was checked on this request.
    pub fn binding(&self) -> Binding<'_> {
        let cnf = self.inner.claims.cnf.as_ref();
        let jkt = cnf.and_then(|c| c.jkt.as_deref());
        let x5t = cnf.and_then(|c| c.x5t_s256.as_deref());
        match (jkt, x5t) {
            (None, None) => Binding::Bearer,
            (Some(jkt), None) => Binding::Dpop { jkt },
            (None, Some(x5t_s256)) => Binding::Certificate { x5t_s256 },
            (Some(jkt), Some(x5t_s256)) => Binding::DpopAndCertificate { jkt, x5t_s256 },
        }
    }

    /// The token's payload, the claims JSON object, as text exactly as the issuer
    /// signed it (claims this crate does not model included).
    pub fn claims_json(&self) -> &str {
        &self.inner.raw
    }

    /// The claims JSON text: the old name of [`VerifiedToken::claims_json`].
    #[deprecated(
        since = "0.1.1",
        note = "renamed `claims_json`: it is the payload's JSON text"
    )]
    pub fn raw_claims(&self) -> &str {
        self.claims_json()
    }

    /// The access token exactly as the client sent it (without `Bearer `), for
    /// relaying it to a downstream API or an on-behalf-of exchange. It is a bearer
    /// credential: never log it.
    ///
    /// ```
    /// # fn relay(token: &bearer_guard::VerifiedToken) {
    /// let header = format!("Bearer {}", token.access_token());
    /// # }
    /// ```
    pub fn access_token(&self) -> &str {
        &self.inner.token
    }

    /// The shared text of [`VerifiedToken::access_token`].
    pub(crate) fn access_token_arc(&self) -> &Arc<str> {
        &self.inner.token
    }

    /// Deserializes the verified claims into the application's own type.
    ///
    /// ```
    /// # use bearer_guard::VerifiedToken;
    /// #[derive(serde::Deserialize)]
    /// struct MyClaims { sub: String, tenant: String }
    ///
    /// fn tenant(token: &VerifiedToken) -> Result<String, serde_json::Error> {
    ///     Ok(token.claims::<MyClaims>()?.tenant)
    /// }
    /// ```
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.inner.raw)
    }

    /// The claim at `path`: a top-level claim of exactly that name if there is one
    /// (`"https://example.com/roles"`), else the dot-separated path into nested
    /// objects (`"realm_access.roles"`, as Keycloak nests them). `None` when the
    /// claim is absent.
    ///
    /// ```
    /// use bearer_guard::VerifiedToken;
    ///
    /// fn roles(token: &VerifiedToken) -> Vec<String> {
    ///     token
    ///         .claim("realm_access.roles")
    ///         .and_then(|roles| serde_json::from_value(roles).ok())
    ///         .unwrap_or_default()
    /// }
    /// ```
    pub fn claim(&self, path: &str) -> Option<serde_json::Value> {
        let serde_json::Value::Object(mut claims) = serde_json::from_str(&self.inner.raw).ok()?
        else {
            return None;
        };
        if let Some(value) = claims.remove(path) {
            return Some(value);
        }
        let mut segments = path.split('.');
        let mut value = claims.remove(segments.next()?)?;
        for segment in segments {
            value = match value {
                serde_json::Value::Object(mut members) => members.remove(segment)?,
                _ => return None,
            };
        }
        Some(value)
    }
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("alg", &self.algorithm())
            .field("kid", &self.key_id())
            .field("iss", &self.inner.claims.iss)
            .field("sub", &self.inner.claims.sub)
            .field("client_id", &self.inner.claims.client_id)
            .field("exp", &self.inner.claims.exp)
            .field("scopes", &self.inner.scopes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_standard_claims() {
        let c = RegisteredClaims::parse(
            r#"{"iss":"https://a","sub":"u","aud":["x","y"],"exp":1700000000,"nbf":1.5,"iat":1699999999,"scope":"a b","scp":["c"],"extra":{"deep":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(c.iss.as_deref(), Some("https://a"));
        assert_eq!(c.aud.unwrap(), ["x", "y"]);
        assert_eq!(c.exp, Some(NumericDate::from_secs(1_700_000_000)));
        assert_eq!(
            c.nbf.map(NumericDate::since_epoch),
            Some(Duration::from_millis(1500))
        );
        let scopes = Scopes::from_claims(c.scope.as_deref(), c.scp.as_deref());
        assert_eq!(scopes.to_string(), "a b c");
    }

    #[test]
    fn aud_may_be_a_single_string() {
        let c = RegisteredClaims::parse(r#"{"aud":"x"}"#).unwrap();
        assert_eq!(c.aud.unwrap(), ["x"]);
    }

    #[test]
    fn rejects_string_exp() {
        assert!(RegisteredClaims::parse(r#"{"exp":"1700000000"}"#).is_err());
    }

    #[test]
    fn rejects_negative_huge_and_boolean_dates() {
        for v in ["-1", "1e300", "253402300800", "true", "-0.5", "[1]"] {
            let json = format!(r#"{{"exp":{v}}}"#);
            assert!(RegisteredClaims::parse(&json).is_err(), "{v}");
        }
    }

    #[test]
    fn a_present_time_claim_of_the_wrong_type_is_refused_like_exp() {
        for claim in ["exp", "nbf", "iat"] {
            for v in [
                "null", "\"1\"", "false", "[]", "{}", "-1", "1e300", "-0.0001",
            ] {
                let json = format!(r#"{{"{claim}":{v}}}"#);
                assert!(RegisteredClaims::parse(&json).is_err(), "{json}");
            }
            let absent = RegisteredClaims::parse("{}").unwrap();
            assert!(absent.exp.is_none() && absent.nbf.is_none() && absent.iat.is_none());
        }
    }

    #[test]
    fn rejects_duplicate_claims() {
        assert!(RegisteredClaims::parse(r#"{"iss":"a","iss":"b"}"#).is_err());
        assert!(RegisteredClaims::parse(r#"{"exp":1,"exp":2}"#).is_err());
    }

    #[test]
    fn rejects_non_object_payloads() {
        for p in ["[]", "1", "\"x\"", "null", "", "{"] {
            assert!(RegisteredClaims::parse(p).is_err());
        }
    }

    #[test]
    fn deeply_nested_json_never_overflows_the_stack() {
        // Unknown claims are skipped iteratively; known ones hit serde_json's
        // recursion limit. Neither recurses without bound.
        let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(RegisteredClaims::parse(&deep).is_ok());
        let deep = format!(
            r#"{{"aud":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(RegisteredClaims::parse(&deep).is_err());
    }

    #[test]
    fn scopes_are_sorted_deduplicated_and_exact() {
        let s = Scopes::from_claims(Some("b  a b"), Some(&["A".to_owned()]));
        assert_eq!(s.iter().collect::<Vec<_>>(), ["A", "a", "b"]);
        assert!(s.contains("a"));
        assert!(!s.contains("c"));
    }
}
