//! DPoP proofs at the resource server (RFC 9449 §4.3, §7.1): the checks, the
//! JWK thumbprint (RFC 7638), `htu` normalisation and stateless nonces.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Uri};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::DpopMode;
use super::replay::{ReplayKey, ReplayStore};
use crate::error::{AuthError, BindingProblem, DpopProblem};
use crate::json::from_json_object;
use crate::jws::{self, Algorithm, AlgorithmSet};
use crate::keys::verifying_key;

/// JWK members that only a private key has (RFC 7518 §6.2.2, §6.3.2, §6.4;
/// RFC 8037 §2): a proof whose `jwk` carries one is refused.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Everything the guard needs to check proofs, built once by the builder.
pub(crate) struct DpopVerifier {
    /// The public base URL, normalised, without a trailing `/`.
    pub base: Box<str>,
    pub algorithms: AlgorithmSet,
    /// The accepted algorithms, space-separated, for the challenge.
    pub algs: Arc<str>,
    pub max_age: u64,
    pub leeway: u64,
    pub max_proof_bytes: usize,
    pub nonces: Option<Nonces>,
    pub replay: Arc<dyn ReplayStore>,
    pub fail_open: bool,
    /// The mode of each issuer, by configuration index.
    pub modes: Box<[DpopMode]>,
}

/// The protected header of a proof.
#[derive(Deserialize)]
struct ProofHeader {
    typ: String,
    alg: String,
    jwk: Map<String, Value>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
    #[serde(default)]
    b64: Option<IgnoredAny>,
}

/// The claims of a proof.
#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    #[serde(deserialize_with = "crate::claims::numeric_date")]
    iat: Option<crate::claims::NumericDate>,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// The request a proof must match.
pub(crate) struct ProofTarget<'a> {
    pub headers: &'a HeaderMap,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub access_token: &'a str,
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
    pub now: u64,
}

/// What a proof that passed the request-independent checks says.
pub(crate) struct CheckedProof {
    /// The RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    pub jti: String,
    pub ath: Option<String>,
    pub nonce: Option<String>,
}

impl DpopVerifier {
    /// Checks the request's one `DPoP` proof against the request and the token,
    /// then records it in the replay store.
    pub(crate) async fn verify(&self, t: &ProofTarget<'_>) -> Result<(), AuthError> {
        let proof = self.check_proof(t.headers, t.method, t.uri, t.now)?;
        let ath = URL_SAFE_NO_PAD.encode(digest(&SHA256, t.access_token.as_bytes()));
        if proof.ath.as_deref() != Some(ath.as_str()) {
            return Err(AuthError::InvalidDpopProof(DpopProblem::AccessTokenHash));
        }
        if proof.jkt != t.jkt {
            return Err(AuthError::InvalidToken(
                crate::error::TokenProblem::Binding(BindingProblem::KeyMismatch {
                    jkt: t.jkt.to_owned(),
                    proof: proof.jkt,
                }),
            ));
        }
        self.check_nonce(proof.nonce.as_deref(), t.now)?;
        self.record(&proof.jkt, &proof.jti, t.now).await
    }

    /// `UseDpopNonce` with a fresh nonce unless `nonce` is current (when nonces
    /// are demanded at all).
    pub(crate) fn check_nonce(&self, nonce: Option<&str>, now: u64) -> Result<(), AuthError> {
        match &self.nonces {
            Some(nonces) if !nonce.is_some_and(|n| nonces.accepts(n, now)) => {
                Err(AuthError::UseDpopNonce {
                    nonce: nonces.current(now),
                })
            }
            _ => Ok(()),
        }
    }

    /// The checks of a proof that need neither an access token nor state:
    /// one `DPoP` header, shape, `typ`, `alg`, a public `jwk` that verifies the
    /// signature, `htm`, `htu` and `iat`.
    pub(crate) fn check_proof(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        now: u64,
    ) -> Result<CheckedProof, AuthError> {
        let bad = AuthError::InvalidDpopProof;
        let mut values = headers.get_all("dpop").iter();
        let proof = values.next().ok_or(bad(DpopProblem::Missing))?;
        if values.next().is_some() {
            return Err(bad(DpopProblem::Multiple));
        }
        if proof.len() > self.max_proof_bytes {
            return Err(bad(DpopProblem::TooLarge {
                len: proof.len(),
                max: self.max_proof_bytes,
            }));
        }
        let proof = proof
            .to_str()
            .map_err(|_| bad(DpopProblem::Malformed("not ASCII".into())))?;
        let (h, p, s) =
            jws::split(proof).map_err(|e| bad(DpopProblem::Malformed(e.to_string())))?;
        let decode = |segment: &str, which: &str| {
            jws::decode_b64url(segment).ok_or_else(|| {
                bad(DpopProblem::Malformed(format!(
                    "the {which} is not base64url"
                )))
            })
        };
        // Header and claims are JSON text: strict UTF-8 as a whole, as for tokens.
        let text = |bytes: Vec<u8>, which: &str| {
            String::from_utf8(bytes)
                .map_err(|_| bad(DpopProblem::Malformed(format!("the {which} is not UTF-8"))))
        };
        let header: ProofHeader = from_json_object(&text(decode(h, "header")?, "header")?)
            .map_err(|e| bad(DpopProblem::Malformed(format!("header: {e}"))))?;
        if header.crit.is_some() || header.b64.is_some() {
            return Err(bad(DpopProblem::Malformed(
                "crit and b64 are not supported".into(),
            )));
        }
        let typ = header.typ.as_str();
        if !typ.eq_ignore_ascii_case("dpop+jwt")
            && !typ.eq_ignore_ascii_case("application/dpop+jwt")
        {
            return Err(bad(DpopProblem::Typ));
        }
        let alg = match header.alg.parse::<Algorithm>() {
            Ok(alg) if !alg.is_symmetric() && self.algorithms.contains(alg) => alg,
            _ => return Err(bad(DpopProblem::AlgorithmNotAllowed(header.alg))),
        };
        if let Some(m) = PRIVATE_MEMBERS
            .iter()
            .find(|m| header.jwk.contains_key(**m))
        {
            return Err(bad(DpopProblem::Key(format!(
                "the jwk has the private member {m:?}"
            ))));
        }
        let jkt = jwk_thumbprint(&header.jwk).ok_or_else(|| {
            bad(DpopProblem::Key(
                "the jwk lacks its required members".into(),
            ))
        })?;
        let key = verifying_key(Value::Object(header.jwk), [alg].into_iter().collect())
            .map_err(|(_, why)| bad(DpopProblem::Key(why)))?;
        let signature = decode(s, "signature")?;
        key.verify(alg, &proof.as_bytes()[..h.len() + 1 + p.len()], &signature)
            .map_err(|e| match e {
                crate::error::TokenProblem::BadSignature => bad(DpopProblem::BadSignature),
                other => bad(DpopProblem::Key(other.to_string())),
            })?;

        let claims: ProofClaims = from_json_object(&text(decode(p, "payload")?, "payload")?)
            .map_err(|e| bad(DpopProblem::Malformed(format!("claims: {e}"))))?;
        if claims.jti.is_empty() {
            return Err(bad(DpopProblem::Malformed("jti is empty".into())));
        }
        if claims.htm != method.as_str() {
            return Err(bad(DpopProblem::MethodMismatch {
                htm: claims.htm,
                method: method.to_string(),
            }));
        }
        let expected = self.htu_for(uri);
        match normalize_htu(&claims.htu) {
            Some(htu) if Some(&htu) == expected.as_ref() => {}
            htu => {
                return Err(bad(DpopProblem::UriMismatch {
                    htu: htu.unwrap_or(claims.htu),
                    expected: expected.unwrap_or_default(),
                }));
            }
        }
        let iat = claims
            .iat
            .map(crate::claims::NumericDate::secs)
            .ok_or_else(|| bad(DpopProblem::Malformed("iat is missing".into())))?;
        let oldest = now.saturating_sub(self.max_age.saturating_add(self.leeway));
        if iat < oldest || iat > now.saturating_add(self.leeway) {
            return Err(bad(DpopProblem::IatOutOfWindow { iat, now }));
        }
        Ok(CheckedProof {
            jkt,
            jti: claims.jti,
            ath: claims.ath,
            nonce: claims.nonce,
        })
    }

    /// Records the proof; only a proof that passed every other check gets here.
    pub(crate) async fn record(&self, jkt: &str, jti: &str, now: u64) -> Result<(), AuthError> {
        // Kept until its iat can no longer be accepted: iat <= now + leeway, and
        // iat is refused once older than max_age + leeway.
        let ttl = Duration::from_secs(
            self.max_age
                .saturating_add(self.leeway.saturating_mul(2))
                .saturating_add(1),
        );
        match self
            .replay
            .first_use(&ReplayKey::new(jkt, jti), now, ttl)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(AuthError::InvalidDpopProof(DpopProblem::Replayed)),
            Err(e) if self.fail_open => {
                tracing::warn!(error = %e, "DPoP replay store failed; accepting the proof (fail open)");
                crate::metrics::replay_store_failure(true);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "DPoP replay store failed; refusing the request (fail closed)");
                crate::metrics::replay_store_failure(false);
                Err(AuthError::ReplayStoreUnavailable {
                    reason: e.to_string(),
                    retry_after: Duration::from_secs(1),
                })
            }
        }
    }

    /// The `htu` this request's proof must carry: the configured base URL and the
    /// request's path (never its `Host`), normalised; no query, no fragment.
    pub(crate) fn htu_for(&self, uri: &Uri) -> Option<String> {
        let path = uri.path();
        let path = if path.starts_with('/') { path } else { "/" };
        normalize_htu(&format!("{}{path}", self.base))
    }
}

/// An `htu` in the form compared (RFC 9449 §4.3, RFC 3986 §6.2.2 and §6.2.3):
/// scheme and host lower case, default port dropped, dot segments resolved,
/// percent-encodings upper case and unreserved characters decoded; query and
/// fragment removed. `None` for anything but an absolute http(s) URL without
/// user information.
pub(crate) fn normalize_htu(raw: &str) -> Option<String> {
    let mut url = url::Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    Some(normalize_percent_encoding(url.as_str()))
}

/// `%7e` and `%7E` become `~`, `%2f` becomes `%2F`.
fn normalize_percent_encoding(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            let c = (hi * 16 + lo) as u8;
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                out.push(c as char);
            } else {
                out.push('%');
                out.push_str(&format!("{c:02X}"));
            }
            i += 3;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// The RFC 7638 thumbprint: SHA-256 over the required members only, in
/// lexicographic order, without white space (serde_json on a `BTreeMap`), then
/// base64url. `None` when a required member is missing or not a string.
pub fn jwk_thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let kty = jwk.get("kty")?.as_str()?;
    let required: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut members = BTreeMap::new();
    for name in required {
        members.insert(*name, jwk.get(*name)?.as_str()?);
    }
    let json = serde_json::to_vec(&members).ok()?;
    Some(URL_SAFE_NO_PAD.encode(digest(&SHA256, &json)))
}

/// Stateless server nonces (RFC 9449 §8): an HMAC over a time step, so every
/// replica with the same secret accepts every other's nonces.
pub(crate) struct Nonces {
    key: hmac::Key,
    step: u64,
}

/// Step number (8 bytes) and 16 bytes of the HMAC tag.
const NONCE_BYTES: usize = 24;

impl Nonces {
    pub(crate) fn new(secret: &[u8], lifetime: Duration) -> Self {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            step: lifetime.as_secs().max(1),
        }
    }

    fn tag(&self, step: u64) -> [u8; 16] {
        let mut input = *b"dpop-nonce\0\0\0\0\0\0\0\0";
        input[10..].copy_from_slice(&step.to_be_bytes());
        let full = hmac::sign(&self.key, &input);
        let mut tag = [0; 16];
        tag.copy_from_slice(&full.as_ref()[..16]);
        tag
    }

    /// The nonce of the current time step.
    pub(crate) fn current(&self, now: u64) -> String {
        let step = now / self.step;
        let mut bytes = [0; NONCE_BYTES];
        bytes[..8].copy_from_slice(&step.to_be_bytes());
        bytes[8..].copy_from_slice(&self.tag(step));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A nonce of this step, the previous one, or the next (replicas' clocks
    /// differ a little): it lives one to two steps.
    pub(crate) fn accepts(&self, nonce: &str, now: u64) -> bool {
        let Some(bytes) = jws::decode_b64url(nonce).filter(|b| b.len() == NONCE_BYTES) else {
            return false;
        };
        let mut step = [0; 8];
        step.copy_from_slice(&bytes[..8]);
        let step = u64::from_be_bytes(step);
        let current = now / self.step;
        if step.saturating_add(1) < current || step > current.saturating_add(1) {
            return false;
        }
        verify_slices_are_equal(&self.tag(step), &bytes[8..]).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk: Map<String, Value> = serde_json::from_str(
            r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#,
        )
        .unwrap();
        assert_eq!(
            jwk_thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn thumbprint_needs_every_required_member_as_a_string() {
        let ec: Map<String, Value> =
            serde_json::from_str(r#"{"kty":"EC","crv":"P-256","x":"AA"}"#).unwrap();
        assert_eq!(jwk_thumbprint(&ec), None);
        let odd: Map<String, Value> =
            serde_json::from_str(r#"{"kty":"OKP","crv":"Ed25519","x":1}"#).unwrap();
        assert_eq!(jwk_thumbprint(&odd), None);
    }

    #[test]
    fn htu_is_normalised_per_rfc_3986() {
        let n = |s| normalize_htu(s);
        assert_eq!(
            n("HTTPS://API.Example.COM:443/a/./b/../c%7e%2f?q=1#f").as_deref(),
            Some("https://api.example.com/a/c~%2F")
        );
        assert_eq!(n("http://a:80/").as_deref(), Some("http://a/"));
        assert_eq!(n("https://a:8443/x").as_deref(), Some("https://a:8443/x"));
        assert_eq!(n("https://a/%41"), n("https://a/A"));
        for bad in [
            "/relative",
            "ftp://a/",
            "https://user@a/",
            "urn:x:y",
            "not a url",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }

    #[test]
    fn nonces_live_one_to_two_steps_and_need_the_secret() {
        let nonces = Nonces::new(&[7; 32], Duration::from_secs(100));
        let other = Nonces::new(&[8; 32], Duration::from_secs(100));
        let n = nonces.current(1_000);
        assert!(nonces.accepts(&n, 1_000));
        assert!(nonces.accepts(&n, 1_199));
        assert!(!nonces.accepts(&n, 1_200));
        assert!(nonces.accepts(&n, 999)); // a replica one step behind
        assert!(!nonces.accepts(&n, 899));
        assert!(!other.accepts(&n, 1_000));
        assert!(!nonces.accepts("garbage", 1_000));
        let mut forged = jws::decode_b64url(&n).unwrap();
        forged[7] ^= 1; // another step, same tag
        assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(forged), 1_000));
    }
}
