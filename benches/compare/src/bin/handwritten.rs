//! The reference point of the issue: a hand-written validator on aws-lc-rs with
//! the keys parsed once, as a tower layer in front of the same route, behind
//! bench_server's contract. No cache, no refresh, no discovery: the fastest
//! honest minimal validator, which every request pays in full.
//!
//! - At startup the JWKS at `JWKS_URL` is fetched once; every RSA key (as RS256)
//!   and EC P-256 key (as ES256) with a `kid` becomes an aws-lc-rs
//!   `ParsedPublicKey`, indexed by `kid`.
//! - Per request: `Authorization: Bearer <token>`, three base64url segments, the
//!   header's `alg` and `kid` (a `kid` is required, `crit` is refused), the key of
//!   that `kid` whose algorithm is `alg`, the signature over `header.payload`, then
//!   the claims: `iss` == `ISS`, `aud` (a string or an array) holds `AUD`,
//!   `exp` > now, `nbf` <= now if present (no leeway), and `scope` holds
//!   `read:data` (else 403). Anything else is 401.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard_compare::{Config, SCOPE};
use futures_util::future::{Either, Ready, ready};
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use tower::{Layer, Service};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Alg {
    RS256,
    ES256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
        }
    }
}

/// One JWK, as much of it as the two key types need.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

fn b64(field: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(field.as_deref()?).ok()
}

/// The key a JWK describes, or `None` if it is not a usable RS256 / ES256
/// signing key.
fn parse_jwk(jwk: &Jwk) -> Option<(Alg, ParsedPublicKey)> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let (alg, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            let (n, e) = (b64(&jwk.n)?, b64(&jwk.e)?);
            let components = RsaPublicKeyComponents { n: &n, e: &e };
            let key = components
                .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                .ok()?;
            (Alg::RS256, key)
        }
        ("EC", Some("P-256")) => {
            let (x, y) = (b64(&jwk.x)?, b64(&jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let point = [&[0x04][..], &x, &y].concat();
            let key = ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).ok()?;
            (Alg::ES256, key)
        }
        _ => return None,
    };
    // A JWK that names another algorithm (RS384, PS256, ...) is not used as RS256.
    if jwk.alg.as_deref().is_some_and(|a| a != alg.name()) {
        return None;
    }
    Some((alg, key))
}

async fn fetch_keys(url: &str) -> Result<HashMap<String, (Alg, ParsedPublicKey)>, String> {
    let body = reqwest::get(url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("JWKS_URL: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("JWKS_URL: {e}"))?;
    let jwks: Jwks = serde_json::from_slice(&body).map_err(|e| format!("JWKS: {e}"))?;
    let keys: HashMap<_, _> = jwks
        .keys
        .iter()
        .filter_map(|jwk| Some((jwk.kid.clone()?, parse_jwk(jwk)?)))
        .collect();
    if keys.is_empty() {
        return Err(format!("no RS256 or ES256 key with a kid in {url}"));
    }
    Ok(keys)
}

/// A string borrowed from the decoded JSON where it has no escapes.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct JwsHeader<'a> {
    #[serde(borrow)]
    alg: Str<'a>,
    #[serde(borrow)]
    kid: Option<Str<'a>>,
    crit: Option<IgnoredAny>,
}

/// `aud`: one string or an array of strings.
struct Aud<'a>(Vec<Str<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Aud<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AudVisitor;
        impl<'de> Visitor<'de> for AudVisitor {
            type Value = Aud<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Aud(vec![Str(Cow::Borrowed(s))]))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Aud(vec![Str(Cow::Owned(s.to_owned()))]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element()? {
                    all.push(s);
                }
                Ok(Aud(all))
            }
        }
        d.deserialize_any(AudVisitor)
    }
}

#[derive(Deserialize)]
struct JwtClaims<'a> {
    #[serde(borrow)]
    iss: Str<'a>,
    #[serde(borrow)]
    aud: Aud<'a>,
    exp: u64,
    nbf: Option<u64>,
    #[serde(borrow)]
    scope: Option<Str<'a>>,
}

struct Validator {
    keys: HashMap<String, (Alg, ParsedPublicKey)>,
    iss: String,
    aud: String,
}

/// Why a request is refused.
enum Refusal {
    NoToken,
    Invalid,
    Scope,
}

impl Validator {
    /// The token of `Authorization: Bearer <token>`, checked in full.
    fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), Refusal> {
        let value = authorization.ok_or(Refusal::NoToken)?.as_bytes();
        let token = match value.split_at_checked(7) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"Bearer ") => token,
            _ => return Err(Refusal::NoToken),
        };
        match self.verify(token) {
            Some(true) => Ok(()),
            Some(false) => Err(Refusal::Scope),
            None => Err(Refusal::Invalid),
        }
    }

    /// `Some(has the scope)` for a valid token, `None` for any other.
    fn verify(&self, token: &[u8]) -> Option<bool> {
        let mut parts = token.splitn(3, |&b| b == b'.');
        let (header64, payload64, signature64) = (parts.next()?, parts.next()?, parts.next()?);
        if signature64.contains(&b'.') {
            return None;
        }
        let header = URL_SAFE_NO_PAD.decode(header64).ok()?;
        let header: JwsHeader = serde_json::from_slice(&header).ok()?;
        if header.crit.is_some() {
            return None;
        }
        let (alg, key) = self.keys.get(header.kid?.0.as_ref())?;
        if header.alg.0 != alg.name() {
            return None;
        }
        // Up to an 8192-bit RSA signature.
        let mut signature = [0u8; 1032];
        let len = URL_SAFE_NO_PAD
            .decode_slice(signature64, &mut signature)
            .ok()?;
        let signed = &token[..header64.len() + 1 + payload64.len()];
        key.verify_sig(signed, &signature[..len]).ok()?;

        let payload = URL_SAFE_NO_PAD.decode(payload64).ok()?;
        let claims: JwtClaims = serde_json::from_slice(&payload).ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let valid = claims.iss.0 == self.iss
            && claims.aud.0.iter().any(|a| a.0 == self.aud)
            && claims.exp > now
            && claims.nbf.is_none_or(|nbf| nbf <= now);
        valid.then(|| {
            claims
                .scope
                .is_some_and(|s| s.0.split(' ').any(|s| s == SCOPE))
        })
    }
}

impl Refusal {
    fn into_response(self) -> Response {
        let (status, challenge) = match self {
            Refusal::NoToken => (StatusCode::UNAUTHORIZED, "Bearer"),
            Refusal::Invalid => (StatusCode::UNAUTHORIZED, "Bearer error=\"invalid_token\""),
            Refusal::Scope => (
                StatusCode::FORBIDDEN,
                "Bearer error=\"insufficient_scope\", scope=\"read:data\"",
            ),
        };
        let challenge = HeaderValue::from_static(challenge);
        (status, [(header::WWW_AUTHENTICATE, challenge)]).into_response()
    }
}

#[derive(Clone)]
struct AuthLayer(Arc<Validator>);

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            validator: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
struct Auth<S> {
    validator: Arc<Validator>,
    inner: S,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self
            .validator
            .check(request.headers().get(header::AUTHORIZATION))
        {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(refusal) => Either::Right(ready(Ok(refusal.into_response()))),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let validator = Validator {
        keys: fetch_keys(&config.jwks_url).await?,
        iss: config.iss,
        aud: config.aud,
    };

    let app = Router::new()
        .route(
            "/api/data",
            get(|| async { Json(bearer_guard_compare::body()) }),
        )
        .layer(AuthLayer(Arc::new(validator)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    eprintln!("handwritten on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
