//! The ordered checks. "Why was my token rejected?" is answered here.
//!
//! 1. size (before any decoding), then the compact JWS: three segments, strict
//!    base64url, header rules (`alg` never `none`, no `crit`, `typ` policy);
//! 2. the claims are parsed once, and the unverified `iss` must name a configured
//!    issuer, before any key lookup or fetch;
//! 3. `alg` must be allowed for that issuer;
//! 4. the key: by `kid` (one rate-limited refresh on a miss), or without `kid` a
//!    bounded number of keys of the right type; the key's own `alg` must equal the
//!    header's; a key that names an issuer must name this one;
//! 5. the signature;
//! 6. `exp` (required, a number), `nbf`, `iat`, with leeway; then `aud`.
//!
//! Only this module builds a [`VerifiedToken`].

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::HeaderMap;
use tracing::field::Empty;

use crate::cache::{Entry, TokenCache};
use crate::claims::{RegisteredClaims, VerifiedToken};
use crate::error::{AuthError, TokenProblem};
use crate::guard::GuardInner;
use crate::introspect::{self, Introspector, TokenKey};
use crate::issuer::{TenantRefusal, key_admits};
use crate::jws;
use crate::sender::{ClientCertificate, Presentation, bearer_binding, confirm};
use crate::token::Scheme;

/// Credentials refused at extraction, or a bearer token the cache answers
/// (see [`crate::Guard::validate_request_early`]).
pub(crate) fn early<'h>(
    g: &GuardInner,
    headers: &'h HeaderMap,
    certificate: Option<&ClientCertificate>,
    dpop: bool,
) -> Early<'h> {
    // A reused token (most traffic) is found by its bytes in the cache's front:
    // it passed extraction's checks when it was first verified. The clock is
    // read once, for the front and, on a miss, the lookup below.
    let front = g
        .cache
        .as_ref()
        .zip(g.tokens.bearer_unchecked(headers))
        .map(|(cache, raw)| (cache, raw, now(g)));
    if let Some((cache, raw, at)) = front
        && let Some(hit) = cache.front(raw, at)
    {
        let span = span();
        if let Some(result) = answer_hit(g, cache, hit, at, &span) {
            return answered(g, &span, result, certificate);
        }
    }
    let (scheme, token) = match g.tokens.extract_scheme(headers, dpop) {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(reason = e.reason(), "credentials refused");
            crate::metrics::validation(Some(e.reason()));
            return Early::Done(Err(e));
        }
    };
    let Some(cache) = g.cache.as_ref().filter(|_| scheme == Scheme::Bearer) else {
        return Early::Verify(scheme, token);
    };
    let span = span();
    let at = front.map_or_else(|| now(g), |(.., at)| at);
    match cached(g, cache, token, at, &span) {
        Some(result) => answered(g, &span, result, certificate),
        None => Early::Verify(scheme, token),
    }
}

/// The cache's answer, checked against the request's sender binding and
/// recorded on the span.
fn answered<'h>(
    g: &GuardInner,
    span: &tracing::Span,
    result: Result<VerifiedToken, AuthError>,
    certificate: Option<&ClientCertificate>,
) -> Early<'h> {
    let result = result.and_then(|t| bearer_binding(g.dpop.as_ref(), &t, certificate).map(|()| t));
    finish(span, &result);
    Early::Done(result)
}

/// The clock's time since the epoch, fraction kept: NumericDates may be fractional.
pub(crate) fn now(g: &GuardInner) -> Duration {
    g.clock()
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The answer of [`crate::Guard::validate_request_early`].
pub(crate) enum Early<'h> {
    /// Answered without waiting.
    Done(Result<VerifiedToken, AuthError>),
    /// These credentials need the full, asynchronous verification.
    Verify(Scheme, &'h str),
}

/// How one validation uses the verified-token cache.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheUse {
    /// Neither read nor filled (`validate_at`: another time than the clock's).
    Off,
    LookupAndInsert,
    /// The lookup already missed (the layer's early answer).
    InsertOnly,
}

fn span() -> tracing::Span {
    tracing::debug_span!(
        "bearer_guard.validate",
        outcome = Empty,
        reason = Empty,
        iss = Empty,
        kid = Empty,
        sub = Empty,
        client_id = Empty,
    )
}

/// Records the outcome on the validation's span and in the metrics.
fn finish(span: &tracing::Span, result: &Result<VerifiedToken, AuthError>) {
    match result {
        Ok(t) => {
            // Skipped for a span no subscriber wants: a disabled span still looks
            // its fields up by name on every record (tracing's `log` feature,
            // which axum's default features turn on, keeps its metadata).
            if !span.is_disabled() {
                span.record("outcome", "accepted");
                span.record("sub", t.subject());
                span.record("client_id", t.client_id());
            }
            crate::metrics::validation(None);
        }
        Err(e) => {
            span.record("outcome", "rejected");
            span.record("reason", e.reason());
            span.in_scope(|| tracing::debug!(error = %e, "token rejected"));
            crate::metrics::validation(Some(e.reason()));
        }
    }
}

/// One span per validation: outcome, reason, issuer, kid, subject; never the token.
pub(crate) async fn traced(
    g: &GuardInner,
    token: &str,
    now: Duration,
    cache_use: CacheUse,
    presented: &Presentation<'_>,
) -> Result<VerifiedToken, AuthError> {
    let span = span();
    let cache = g.cache.as_ref().filter(|_| cache_use != CacheUse::Off);
    let early = match cache {
        Some(cache) if cache_use == CacheUse::LookupAndInsert => {
            cached(g, cache, token, now, &span)
        }
        _ => None,
    };
    let result = match early {
        Some(result) => result,
        None => validate(g, token, now, cache, cache_use != CacheUse::Off, &span).await,
    };
    let result = match result {
        Ok(verified) => confirm(g.dpop.as_ref(), &verified, token, presented, now.as_secs())
            .await
            .map(|()| verified),
        Err(e) => Err(e),
    };
    finish(&span, &result);
    result
}

/// The cache's answer for `token`: `None` when it has none to give (a miss, keys
/// that would have to be waited for, or a verifying key no longer published).
fn cached(
    g: &GuardInner,
    cache: &TokenCache,
    token: &str,
    now: Duration,
    span: &tracing::Span,
) -> Option<Result<VerifiedToken, AuthError>> {
    if token.len() > g.tokens.max_len {
        return None;
    }
    if let Some(intro) = &g.introspection
        && introspect::is_opaque(token)
    {
        return remembered(g, intro, &Introspector::key(token), now);
    }
    let hit = cache.get(token, now)?;
    answer_hit(g, cache, hit, now, span)
}

/// The answer to a request whose token the cache holds; `None` when the entry
/// no longer counts (dropped: the full verification follows).
fn answer_hit(
    g: &GuardInner,
    cache: &TokenCache,
    hit: Entry,
    now: Duration,
    span: &tracing::Span,
) -> Option<Result<VerifiedToken, AuthError>> {
    let token = hit.token.access_token();
    // What can change without the token changing: the time, the key set, and the
    // issuer's tenant policy (a predicate may be a live deny list). The rest (typ,
    // alg, audiences, the key's issuer binding, tid) is fixed by the token, the
    // guard's configuration and the key, all unchanged. Without a predicate the
    // issuer lookup is fixed by `iss` and the configuration, and is not repeated.
    if g.issuers.has_predicates() {
        match g.issuers.find(hit.token.issuer()) {
            Ok(m) if m.index == hit.issuer => {}
            Err(TenantRefusal::NotAllowed(tenant)) => {
                cache.hit();
                return Some(Err(AuthError::InvalidToken(
                    TokenProblem::TenantNotAllowed {
                        tenant: tenant.to_owned(),
                    },
                )));
            }
            Ok(_) | Err(TenantRefusal::NoEntry) => {
                cache.stale(token);
                return None;
            }
        }
    }
    // Is the key that verified it still published? Then only time can have changed.
    let store = &g.issuers.entries()[hit.issuer].store;
    let loaded = store.keys_at(crate::clock::saturating_millis(now))?;
    if !loaded.keys.contains(&hit.key) {
        cache.stale(token);
        return None;
    }
    if !span.is_disabled() {
        span.record("iss", hit.token.issuer());
        span.record("kid", hit.token.key_id());
    }
    // Answered from the cache, an expired token's refusal included.
    cache.hit();
    Some(
        check_times(hit.token.registered(), now, g.leeway)
            .map(|()| hit.token)
            .map_err(AuthError::InvalidToken),
    )
}

async fn validate(
    g: &GuardInner,
    token: &str,
    now: Duration,
    cache: Option<&TokenCache>,
    reuse_introspection: bool,
    span: &tracing::Span,
) -> Result<VerifiedToken, AuthError> {
    let invalid = AuthError::InvalidToken;
    let max = g.tokens.max_len;
    if token.len() > max {
        return Err(invalid(TokenProblem::TooLarge {
            len: token.len(),
            max,
        }));
    }
    if let Some(intro) = &g.introspection
        && introspect::is_opaque(token)
    {
        span.record("iss", &*g.issuers.entries()[intro.issuer_index].issuer);
        return introspected(g, intro, token, now, reuse_introspection).await;
    }
    let jws = jws::parse(token, g.typ).map_err(invalid)?;
    // The whole payload, claims we skip included, must be UTF-8 (RFC 8259 §8.1).
    let raw = String::from_utf8(jws.payload).map_err(|_| {
        invalid(TokenProblem::BadClaims(
            "the payload is not UTF-8".to_owned(),
        ))
    })?;
    let claims = RegisteredClaims::parse(&raw)
        .map_err(|e| invalid(TokenProblem::BadClaims(e.to_string())))?;

    let iss = claims
        .iss
        .as_deref()
        .ok_or(invalid(TokenProblem::IssuerMissing))?;
    span.record("iss", iss);
    span.record("kid", jws.header.kid.as_deref());
    let (index, issuer, tenant) = match g.issuers.find(iss) {
        Ok(m) => (m.index, m.entry, m.tenant),
        Err(TenantRefusal::NotAllowed(tenant)) => {
            return Err(invalid(TokenProblem::TenantNotAllowed {
                tenant: tenant.to_owned(),
            }));
        }
        Err(TenantRefusal::NoEntry) => {
            return Err(invalid(TokenProblem::IssuerNotAllowed {
                iss: iss.to_owned(),
                allowed: g.issuers.identifiers(),
            }));
        }
    };
    if let (Some(tenant), Some(tid)) = (tenant, claims.tid.as_deref())
        && tid != tenant
    {
        return Err(invalid(TokenProblem::TenantMismatch {
            tenant: tenant.to_owned(),
            tid: tid.to_owned(),
        }));
    }
    let alg = jws.header.alg;
    if !issuer.algorithms.contains(alg) {
        return Err(invalid(TokenProblem::AlgorithmNotAllowed(
            alg.as_str().to_owned(),
        )));
    }

    let kid = jws.header.kid.as_deref();
    let mut loaded = issuer.store.keys().await?;
    let mut outcome = loaded
        .keys
        .verify(kid, alg, jws.signing_input, &jws.signature);
    if let (Err(TokenProblem::UnknownKid { .. }), Some(_)) = (&outcome, kid) {
        // Perhaps the issuer rotated: one shared, rate-limited refresh.
        if let Some(fresh) = issuer.store.keys_after_kid_miss().await {
            loaded = fresh;
            outcome = loaded
                .keys
                .verify(kid, alg, jws.signing_input, &jws.signature);
        }
    }
    let key = outcome.map_err(invalid)?;
    if let Some(key_issuer) = key.issuer()
        && !key_admits(key_issuer, iss, tenant)
    {
        return Err(invalid(TokenProblem::KeyIssuerMismatch {
            key_issuer: key_issuer.to_owned(),
            iss: iss.to_owned(),
        }));
    }

    check_times(&claims, now, g.leeway).map_err(invalid)?;
    let aud = claims
        .aud
        .as_deref()
        .ok_or(invalid(TokenProblem::AudienceMissing))?;
    if !aud.iter().any(|a| issuer.audiences.contains(a)) {
        return Err(invalid(TokenProblem::AudienceMismatch {
            aud: aud.to_vec(),
            expected: issuer.audiences.to_vec(),
        }));
    }

    let tenant = tenant.map(Box::from);
    let verified = VerifiedToken::new(
        Some(jws.header),
        claims,
        raw.into(),
        token.into(),
        index,
        tenant,
        Some(Arc::clone(&g.answerer)),
    );
    if let Some(cache) = cache {
        cache.insert(token, &verified, Arc::clone(key), index, now, g.leeway);
    }
    Ok(verified)
}

/// A remembered introspection verdict for the token with this `key`, its times
/// re-checked: `None` when there is none to reuse.
fn remembered(
    g: &GuardInner,
    intro: &Introspector,
    key: &TokenKey,
    now: Duration,
) -> Option<Result<VerifiedToken, AuthError>> {
    let verdict = intro.remembered(key, now)?;
    Some(
        verdict
            .and_then(|t| check_times(t.registered(), now, g.leeway).map(|()| t))
            .map_err(AuthError::InvalidToken),
    )
}

/// An opaque token, checked by the issuer's introspection endpoint (RFC 7662):
/// the answer must be `active: true`, name this issuer if it names one, be
/// within its times like a JWT (`exp` required) and name an accepted audience.
async fn introspected(
    g: &GuardInner,
    intro: &Introspector,
    token: &str,
    now: Duration,
    reuse: bool,
) -> Result<VerifiedToken, AuthError> {
    let key = Introspector::key(token);
    if reuse && let Some(result) = remembered(g, intro, &key, now) {
        return result;
    }
    let body = intro.call(key, token).await?;
    let (verdict, until) = introspection_verdict(g, intro, token, &body, now)?;
    if reuse {
        intro.remember(key, verdict.clone(), until);
    }
    verdict.map_err(AuthError::InvalidToken)
}

/// What an introspection answer means, and until when (on the guard's clock)
/// that may be reused. An answer without a boolean `active` is the endpoint's
/// failure (503), not the token's.
fn introspection_verdict(
    g: &GuardInner,
    intro: &Introspector,
    token: &str,
    body: &str,
    now: Duration,
) -> Result<(Result<VerifiedToken, TokenProblem>, Duration), AuthError> {
    #[derive(serde::Deserialize)]
    struct Status {
        active: bool,
    }
    let status: Status = crate::json::from_json_object(body)
        .map_err(|_| intro.garbage("not a JSON object with a boolean active member"))?;
    let refused_until = now.saturating_add(intro.negative_ttl);
    let refused = |problem| Ok((Err(problem), refused_until));
    if !status.active {
        return refused(TokenProblem::Inactive);
    }
    let entry = &g.issuers.entries()[intro.issuer_index];
    let mut claims = match RegisteredClaims::parse(body) {
        Ok(claims) => claims,
        Err(e) => return refused(TokenProblem::BadClaims(e.to_string())),
    };
    match claims.iss.as_deref() {
        Some(iss) if iss != &*entry.issuer => {
            return refused(TokenProblem::IssuerNotAllowed {
                iss: iss.to_owned(),
                allowed: vec![entry.issuer.to_string()],
            });
        }
        Some(_) => {}
        None => claims.iss = Some(entry.issuer.to_string()),
    }
    if let Err(problem) = check_times(&claims, now, g.leeway) {
        return refused(problem);
    }
    let Some(aud) = claims.aud.as_deref() else {
        return refused(TokenProblem::AudienceMissing);
    };
    if !aud.iter().any(|a| entry.audiences.contains(a)) {
        return refused(TokenProblem::AudienceMismatch {
            aud: aud.to_vec(),
            expected: entry.audiences.to_vec(),
        });
    }
    // Reused until the earlier of the configured bound and the token's `exp`.
    let exp = claims.exp.map_or(now, |exp| exp.since_epoch());
    let until = now.saturating_add(intro.max_ttl).min(exp);
    let verified = VerifiedToken::new(
        None,
        claims,
        body.into(),
        token.into(),
        intro.issuer_index,
        None,
        Some(Arc::clone(&g.answerer)),
    );
    Ok((Ok(verified), until))
}

/// `exp` is required; a token is valid while `now < exp + leeway`, once
/// `now + leeway >= nbf`, and if `iat <= now + leeway`. Compared to the
/// nanosecond: a fractional NumericDate is never rounded.
pub(crate) fn check_times(
    c: &RegisteredClaims,
    now: Duration,
    leeway: Duration,
) -> Result<(), TokenProblem> {
    let secs = |d: Duration| d.as_secs();
    let (now_s, leeway_s) = (secs(now), secs(leeway));
    let exp = c.exp.ok_or(TokenProblem::ExpirationMissing)?;
    if now >= exp.since_epoch().saturating_add(leeway) {
        return Err(TokenProblem::Expired {
            exp: exp.secs(),
            now: now_s,
            leeway: leeway_s,
        });
    }
    if let Some(nbf) = c.nbf
        && now.saturating_add(leeway) < nbf.since_epoch()
    {
        return Err(TokenProblem::NotYetValid {
            nbf: nbf.secs(),
            now: now_s,
            leeway: leeway_s,
        });
    }
    if let Some(iat) = c.iat
        && iat.since_epoch() > now.saturating_add(leeway)
    {
        return Err(TokenProblem::IssuedInFuture {
            iat: iat.secs(),
            now: now_s,
            leeway: leeway_s,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::NumericDate;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn claims(exp: Option<u64>, nbf: Option<u64>, iat: Option<u64>) -> RegisteredClaims {
        RegisteredClaims {
            exp: exp.map(NumericDate::from_secs),
            nbf: nbf.map(NumericDate::from_secs),
            iat: iat.map(NumericDate::from_secs),
            ..Default::default()
        }
    }

    fn fractional(claim: &str, secs: f64) -> RegisteredClaims {
        let exp = if claim == "exp" { "" } else { r#""exp":5000,"# };
        let json = format!(r#"{{{exp}"{claim}":{secs}}}"#);
        RegisteredClaims::parse(&json).unwrap()
    }

    #[test]
    fn exp_is_required() {
        assert_eq!(
            check_times(&claims(None, None, None), S(100), S(60)),
            Err(TokenProblem::ExpirationMissing)
        );
    }

    #[test]
    fn exp_with_leeway_boundaries() {
        let c = claims(Some(1000), None, None);
        assert!(check_times(&c, S(1059), S(60)).is_ok());
        assert!(matches!(
            check_times(&c, S(1060), S(60)),
            Err(TokenProblem::Expired { .. })
        ));
        assert!(matches!(
            check_times(&c, S(1000), S(0)),
            Err(TokenProblem::Expired { .. })
        ));
    }

    #[test]
    fn nbf_and_iat_with_leeway() {
        let c = claims(Some(5000), Some(1060), Some(1060));
        assert!(check_times(&c, S(1000), S(60)).is_ok());
        assert!(matches!(
            check_times(&c, S(999), S(60)),
            Err(TokenProblem::NotYetValid { .. })
        ));
        let c = claims(Some(5000), None, Some(1061));
        assert!(matches!(
            check_times(&c, S(1000), S(60)),
            Err(TokenProblem::IssuedInFuture { .. })
        ));
    }

    #[test]
    fn fractional_dates_are_compared_without_flooring() {
        let zero = Duration::ZERO;
        // exp = now + 0.5: still valid at now, expired half a second later.
        let c = fractional("exp", 1000.5);
        assert!(check_times(&c, S(1000), zero).is_ok());
        assert!(check_times(&c, Duration::from_millis(1_000_499), zero).is_ok());
        assert!(check_times(&c, Duration::from_millis(1_000_500), zero).is_err());
        // nbf = now + 0.5: not yet valid at now, valid half a second later.
        let c = fractional("nbf", 1000.5);
        assert!(matches!(
            check_times(&c, S(1000), zero),
            Err(TokenProblem::NotYetValid { .. })
        ));
        assert!(check_times(&c, Duration::from_millis(1_000_500), zero).is_ok());
        // iat = now + 0.5: issued in the future at now.
        let c = fractional("iat", 1000.5);
        assert!(matches!(
            check_times(&c, S(1000), zero),
            Err(TokenProblem::IssuedInFuture { .. })
        ));
        assert!(check_times(&c, Duration::from_millis(1_000_500), zero).is_ok());
    }

    #[test]
    fn huge_exp_does_not_overflow() {
        let c = claims(Some(crate::claims::MAX_NUMERIC_DATE), None, None);
        assert!(check_times(&c, Duration::MAX, Duration::MAX).is_err());
        assert!(check_times(&c, Duration::ZERO, Duration::MAX).is_ok());
    }
}
