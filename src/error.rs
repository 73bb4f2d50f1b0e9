//! Why a request was refused, and the RFC 6750 §3 answer for it.
//!
//! | situation | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no bearer credentials at all | 401 | `Bearer realm="…"` (no error code, §3.1) |
//! | malformed request (two Authorization headers, empty bearer) | 400 | `Bearer error="invalid_request"` |
//! | any token failure (signature, iss, aud, exp, alg, typ, size…) | 401 | `Bearer error="invalid_token", error_description="…"` |
//! | token valid, scope missing | 403 | `Bearer error="insufficient_scope", scope="…"` |
//! | no keys could ever be loaded for the issuer | 503 + `Retry-After` | none: the token may be fine |
//!
//! The `error_description` is a short fixed phrase per rule: it never echoes the
//! token or any value taken from it. The full detail (values, limits, times) is in
//! [`AuthError`]'s `Display` and in logs, for operators.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

/// The RFC 6750 §3.1 error codes (plus none, for a request without credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `invalid_request`: the request is malformed (400).
    InvalidRequest,
    /// `invalid_token`: the token is expired, malformed or invalid (401).
    InvalidToken,
    /// `insufficient_scope`: the token lacks a scope the route requires (403).
    InsufficientScope,
    /// `invalid_dpop_proof`: the DPoP proof is missing or invalid (401, RFC 9449 §7.1).
    InvalidDpopProof,
    /// `use_dpop_nonce`: retry with the nonce of the `DPoP-Nonce` header (401, RFC 9449 §9).
    UseDpopNonce,
    /// `insufficient_user_authentication` (RFC 9470): the user's authentication is
    /// too weak or too old for the route (401).
    InsufficientUserAuthentication,
}

impl ErrorCode {
    /// The code as written in `WWW-Authenticate` and in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::InsufficientUserAuthentication => "insufficient_user_authentication",
        }
    }
}

/// A refused request: the error of every validation step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carries no bearer credentials at all.
    #[error("no bearer token in the request")]
    MissingToken,
    /// The request is malformed (RFC 6750 `invalid_request`).
    #[error("malformed request: {0}")]
    InvalidRequest(RequestProblem),
    /// The token was refused (RFC 6750 `invalid_token`).
    #[error("invalid token: {0}")]
    InvalidToken(TokenProblem),
    /// The token is valid but lacks scopes the route requires.
    #[error("insufficient scope: the route requires {}", required.join(" "))]
    InsufficientScope {
        /// The scopes the route names (all of them, or any one, as configured).
        required: Arc<[String]>,
    },
    /// The token is valid but fails a route's rule ([`Require::predicate`]).
    ///
    /// [`Require::predicate`]: crate::Require::predicate
    #[error("the route requirement {requirement:?} is not met")]
    RequirementNotMet {
        /// The rule's name, for logs (never sent to the client).
        requirement: Arc<str>,
    },
    /// The token is valid but the user's authentication is not strong or recent
    /// enough ([`Require::acr_in`], [`Require::max_age`]; RFC 9470).
    ///
    /// [`Require::acr_in`]: crate::Require::acr_in
    /// [`Require::max_age`]: crate::Require::max_age
    #[error("step-up authentication required")]
    InsufficientUserAuthentication {
        /// The acceptable `acr` values, sent as `acr_values` in the challenge.
        acr_values: Option<Arc<[String]>>,
        /// The largest acceptable age of `auth_time` in seconds, sent as `max_age`.
        max_age: Option<u64>,
    },
    /// No keys could be loaded for the token's issuer, so it could not be checked.
    #[error("signing keys for {issuer} are unavailable: {reason}")]
    KeysUnavailable {
        /// The issuer whose keys are missing.
        issuer: String,
        /// Why the last attempt to load them failed.
        reason: String,
        /// When a client should try again.
        retry_after: Duration,
    },
    /// The DPoP proof is missing, malformed or does not match the request
    /// (RFC 9449 `invalid_dpop_proof`).
    #[error("invalid DPoP proof: {0}")]
    InvalidDpopProof(DpopProblem),
    /// The proof carries no nonce, or one this server no longer accepts: the
    /// client retries with `nonce` (sent as `DPoP-Nonce`, RFC 9449 §9).
    #[error("a fresh DPoP nonce is required")]
    UseDpopNonce {
        /// The nonce to retry with.
        nonce: String,
    },
    /// The DPoP replay store could not be asked (e.g. Redis is down), so a
    /// replayed proof cannot be ruled out (503, fail closed).
    #[error("the DPoP replay store is unavailable: {reason}")]
    ReplayStoreUnavailable {
        /// What went wrong.
        reason: String,
        /// When a client should try again.
        retry_after: Duration,
    },
    /// The issuer's introspection endpoint could not answer for an opaque token
    /// (down, timeout, 5xx, an unreadable answer), so it could not be checked.
    #[error("token introspection at {issuer} is unavailable: {reason}")]
    IntrospectionUnavailable {
        /// The issuer whose introspection endpoint failed.
        issuer: String,
        /// Why the call failed.
        reason: String,
        /// When a client should try again.
        retry_after: Duration,
    },
}

/// What is malformed about a request (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestProblem {
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    MultipleAuthorizationHeaders,
    /// `Authorization: Bearer` with nothing after it.
    #[error("the Bearer credentials are empty")]
    EmptyBearer,
    /// The credentials are not a token68 (RFC 7235 §2.1).
    #[error("the Bearer credentials contain characters a token cannot have")]
    NotToken68,
    /// A token was sent by more than one method (RFC 6750 §2).
    #[error("a token was sent by more than one method")]
    MultipleMethods,
}

/// Why a DPoP proof (RFC 9449 §4.3) was refused: 401 `invalid_dpop_proof`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopProblem {
    /// The DPoP scheme was used without a `DPoP` header.
    #[error("the request has no DPoP proof header")]
    Missing,
    /// More than one `DPoP` header.
    #[error("the request has more than one DPoP header")]
    Multiple,
    /// The proof is larger than the limit; nothing was decoded.
    #[error("the DPoP proof is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// The proof's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a compact JWS with a JSON header and payload.
    #[error("the DPoP proof is malformed: {0}")]
    Malformed(String),
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof's typ is not dpop+jwt")]
    Typ,
    /// `alg` is not an accepted asymmetric algorithm.
    #[error("the DPoP proof's alg {0:?} is not accepted")]
    AlgorithmNotAllowed(String),
    /// The `jwk` header is missing, carries private members, or is unusable.
    #[error("the DPoP proof's jwk is not acceptable: {0}")]
    Key(String),
    /// The signature does not verify with the proof's `jwk`.
    #[error("the DPoP proof's signature does not verify")]
    BadSignature,
    /// `htm` is not the request's method.
    #[error("htm {htm:?} is not the request method {method}")]
    MethodMismatch {
        /// The proof's `htm`.
        htm: String,
        /// The request's method.
        method: String,
    },
    /// `htu` is not this resource's URI.
    #[error("htu {htu:?} is not the request URI {expected:?}")]
    UriMismatch {
        /// The proof's `htu`, normalised.
        htu: String,
        /// The URI built from the configured origin and the request path.
        expected: String,
    },
    /// `iat` is outside the accepted window.
    #[error("iat {iat} is outside the window around now {now}")]
    IatOutOfWindow {
        /// The proof's `iat`.
        iat: u64,
        /// The validator's clock.
        now: u64,
    },
    /// `ath` is missing or is not the hash of the access token.
    #[error("ath is missing or is not the hash of the access token")]
    AccessTokenHash,
    /// The `jti` was seen before within the window.
    #[error("the DPoP proof was already used (jti replayed)")]
    Replayed,
}

impl DpopProblem {
    /// A short, stable, machine-readable name for the rule that failed.
    pub fn reason(&self) -> &'static str {
        match self {
            DpopProblem::Missing => "dpop_missing",
            DpopProblem::Multiple => "dpop_multiple",
            DpopProblem::TooLarge { .. } => "dpop_too_large",
            DpopProblem::Malformed(_) => "dpop_malformed",
            DpopProblem::Typ => "dpop_typ",
            DpopProblem::AlgorithmNotAllowed(_) => "dpop_alg_not_allowed",
            DpopProblem::Key(_) => "dpop_bad_key",
            DpopProblem::BadSignature => "dpop_bad_signature",
            DpopProblem::MethodMismatch { .. } => "dpop_htm_mismatch",
            DpopProblem::UriMismatch { .. } => "dpop_htu_mismatch",
            DpopProblem::IatOutOfWindow { .. } => "dpop_iat_out_of_window",
            DpopProblem::AccessTokenHash => "dpop_ath_mismatch",
            DpopProblem::Replayed => "dpop_replayed",
        }
    }

    /// The safe, fixed phrase sent to the client as `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            DpopProblem::Missing => "DPoP proof required",
            DpopProblem::Multiple => "more than one DPoP proof",
            DpopProblem::TooLarge { .. } => "DPoP proof too large",
            DpopProblem::Malformed(_) => "DPoP proof malformed",
            DpopProblem::Typ => "DPoP proof type invalid",
            DpopProblem::AlgorithmNotAllowed(_) => "DPoP proof algorithm not allowed",
            DpopProblem::Key(_) => "DPoP proof key not acceptable",
            DpopProblem::BadSignature => "DPoP proof signature invalid",
            DpopProblem::MethodMismatch { .. } => "DPoP proof method mismatch",
            DpopProblem::UriMismatch { .. } => "DPoP proof URI mismatch",
            DpopProblem::IatOutOfWindow { .. } => "DPoP proof expired or issued in the future",
            DpopProblem::AccessTokenHash => "DPoP proof access token hash mismatch",
            DpopProblem::Replayed => "DPoP proof replayed",
        }
    }
}

/// Why a valid token's sender binding (`cnf`, RFC 7800) was not satisfied:
/// 401 `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingProblem {
    /// A DPoP-bound token (`cnf.jkt`) sent with the `Bearer` scheme (RFC 9449 §7.2).
    #[error("the token is DPoP-bound (cnf.jkt) but was sent as a bearer token")]
    DpopBoundAsBearer,
    /// The DPoP scheme with a token that has no `cnf.jkt`.
    #[error("the token was sent with the DPoP scheme but is not DPoP-bound")]
    NotDpopBound,
    /// A plain bearer token where DPoP is required.
    #[error("DPoP is required but the token is a plain bearer token")]
    DpopRequired,
    /// The DPoP scheme for an issuer (or guard) that does not accept DPoP.
    #[error("DPoP is not accepted for this issuer")]
    DpopNotAccepted,
    /// `cnf.jkt` is not the thumbprint of the proof's key.
    #[error("cnf.jkt {jkt:?} is not the thumbprint {proof:?} of the proof's key")]
    KeyMismatch {
        /// The token's `cnf.jkt`.
        jkt: String,
        /// The RFC 7638 thumbprint of the proof's `jwk`.
        proof: String,
    },
    /// A certificate-bound token (`cnf["x5t#S256"]`) without a client certificate.
    #[error("the token is certificate-bound but the connection has no client certificate")]
    CertificateMissing,
    /// `cnf["x5t#S256"]` is not the thumbprint of the connection's certificate.
    #[error("cnf x5t#S256 {expected:?} is not the client certificate's thumbprint {actual:?}")]
    CertificateMismatch {
        /// The token's `cnf["x5t#S256"]`.
        expected: String,
        /// The SHA-256 thumbprint of the connection's certificate.
        actual: String,
    },
    /// `cnf` names a confirmation method bearer-guard cannot check.
    #[error("cnf uses a confirmation method that is not supported: {0}")]
    UnsupportedConfirmation(String),
}

impl BindingProblem {
    /// A short, stable, machine-readable name for the rule that failed.
    pub fn reason(&self) -> &'static str {
        match self {
            BindingProblem::DpopBoundAsBearer => "dpop_bound_as_bearer",
            BindingProblem::NotDpopBound => "not_dpop_bound",
            BindingProblem::DpopRequired => "dpop_required",
            BindingProblem::DpopNotAccepted => "dpop_not_accepted",
            BindingProblem::KeyMismatch { .. } => "dpop_key_mismatch",
            BindingProblem::CertificateMissing => "certificate_missing",
            BindingProblem::CertificateMismatch { .. } => "certificate_mismatch",
            BindingProblem::UnsupportedConfirmation(_) => "cnf_unsupported",
        }
    }

    /// The safe, fixed phrase sent to the client as `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            BindingProblem::DpopBoundAsBearer => "DPoP-bound token sent as a bearer token",
            BindingProblem::NotDpopBound => "token is not DPoP-bound",
            BindingProblem::DpopRequired => "DPoP-bound token required",
            BindingProblem::DpopNotAccepted => "DPoP not accepted",
            BindingProblem::KeyMismatch { .. } => "DPoP key binding mismatch",
            BindingProblem::CertificateMissing => "client certificate required",
            BindingProblem::CertificateMismatch { .. } => "client certificate binding mismatch",
            BindingProblem::UnsupportedConfirmation(_) => "token confirmation method not supported",
        }
    }
}

/// Why a token was refused (401). Each variant carries the values involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenProblem {
    /// The token is longer than the configured maximum; nothing was decoded.
    #[error("the token is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not a well-formed compact JWS.
    #[error("{0}")]
    Malformed(&'static str),
    /// A segment is not strict unpadded base64url.
    #[error("the {0} segment is not strict base64url")]
    BadBase64(&'static str),
    /// The header is not the JSON object we expect.
    #[error("the header is not valid: {0}")]
    BadHeader(String),
    /// `alg: none`, in any casing.
    #[error("alg \"none\" is never accepted")]
    AlgNone,
    /// The header's `alg` is not on the allowlist for this issuer.
    #[error("alg {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// A `crit` header: we implement no JWS extension.
    #[error("the crit header names extensions that are not supported")]
    CritHeader,
    /// The `typ` header is not accepted by the typ policy.
    #[error("typ {0:?} is not accepted")]
    TypNotAccepted(Option<String>),
    /// The payload is not a JSON object of the expected shape.
    #[error("the claims are not valid: {0}")]
    BadClaims(String),
    /// No `iss` claim.
    #[error("the iss claim is missing")]
    IssuerMissing,
    /// The `iss` claim is not one of the configured issuers.
    #[error("iss {iss:?} is not one of {allowed:?}")]
    IssuerNotAllowed {
        /// The token's `iss`.
        iss: String,
        /// The configured issuers (the first eight, when there are more).
        allowed: Vec<String>,
    },
    /// A tenant template matched `iss`, but its tenant is not accepted.
    #[error("tenant {tenant:?} is not accepted")]
    TenantNotAllowed {
        /// The tenant taken from `iss`.
        tenant: String,
    },
    /// The `tid` claim names another tenant than `iss` does.
    #[error("tid {tid:?} does not match the tenant {tenant:?} of iss")]
    TenantMismatch {
        /// The tenant taken from `iss`.
        tenant: String,
        /// The `tid` claim.
        tid: String,
    },
    /// No key of the issuer's key set has the token's `kid`, even after a refresh.
    #[error("no key with kid {kid:?} in the issuer's key set")]
    UnknownKid {
        /// The token's `kid`.
        kid: String,
    },
    /// No key of the issuer's key set can verify this algorithm.
    #[error("no key in the issuer's key set fits alg {0}")]
    NoMatchingKey(crate::Algorithm),
    /// The key's declared `alg` or type does not fit the header's `alg`.
    #[error("the key {kid:?} is for {key}, not for alg {alg}")]
    KeyAlgorithmMismatch {
        /// The key's `kid`.
        kid: Option<String>,
        /// What the key is for.
        key: String,
        /// The header's `alg`.
        alg: crate::Algorithm,
    },
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// The key that verified the token belongs to another issuer.
    #[error("the signing key is bound to issuer {key_issuer:?}, not {iss:?}")]
    KeyIssuerMismatch {
        /// The issuer named by the key.
        key_issuer: String,
        /// The token's `iss`.
        iss: String,
    },
    /// No `exp` claim.
    #[error("the exp claim is missing")]
    ExpirationMissing,
    /// `exp` is in the past (beyond the leeway).
    #[error("exp {exp} is {} s before now {now} (leeway {leeway} s)", now.saturating_sub(*exp))]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The validator's clock.
        now: u64,
        /// The configured leeway in seconds.
        leeway: u64,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error("nbf {nbf} is {} s after now {now} (leeway {leeway} s)", nbf.saturating_sub(*now))]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The validator's clock.
        now: u64,
        /// The configured leeway in seconds.
        leeway: u64,
    },
    /// `iat` is in the future (beyond the leeway).
    #[error("iat {iat} is {} s after now {now} (leeway {leeway} s)", iat.saturating_sub(*now))]
    IssuedInFuture {
        /// The token's `iat`.
        iat: u64,
        /// The validator's clock.
        now: u64,
        /// The configured leeway in seconds.
        leeway: u64,
    },
    /// No `aud` claim.
    #[error("the aud claim is missing")]
    AudienceMissing,
    /// The introspection endpoint answered `active: false` (RFC 7662 §2.2):
    /// revoked, expired, or never issued.
    #[error("the introspection endpoint says the token is not active")]
    Inactive,
    /// None of the token's audiences is an expected one.
    #[error("aud {aud:?} contains none of {expected:?}")]
    AudienceMismatch {
        /// The token's audiences.
        aud: Vec<String>,
        /// The expected audiences.
        expected: Vec<String>,
    },
    /// The token's `cnf` binding (RFC 7800) is not satisfied by this request.
    #[error("{0}")]
    Binding(BindingProblem),
}

impl TokenProblem {
    /// A short, stable, machine-readable name for the rule that failed
    /// (used in logs, metrics labels and `bearer-guard verify --json`).
    pub fn reason(&self) -> &'static str {
        match self {
            TokenProblem::TooLarge { .. } => "too_large",
            TokenProblem::Malformed(_) | TokenProblem::BadBase64(_) => "malformed",
            TokenProblem::BadHeader(_) => "bad_header",
            TokenProblem::AlgNone => "alg_none",
            TokenProblem::AlgorithmNotAllowed(_) => "alg_not_allowed",
            TokenProblem::CritHeader => "crit_header",
            TokenProblem::TypNotAccepted(_) => "typ_not_accepted",
            TokenProblem::BadClaims(_) => "bad_claims",
            TokenProblem::IssuerMissing => "iss_missing",
            TokenProblem::IssuerNotAllowed { .. } => "iss_not_allowed",
            TokenProblem::TenantNotAllowed { .. } => "tenant_not_allowed",
            TokenProblem::TenantMismatch { .. } => "tenant_mismatch",
            TokenProblem::UnknownKid { .. } => "unknown_kid",
            TokenProblem::NoMatchingKey(_) => "no_matching_key",
            TokenProblem::KeyAlgorithmMismatch { .. } => "key_alg_mismatch",
            TokenProblem::BadSignature => "bad_signature",
            TokenProblem::KeyIssuerMismatch { .. } => "key_issuer_mismatch",
            TokenProblem::ExpirationMissing => "exp_missing",
            TokenProblem::Expired { .. } => "expired",
            TokenProblem::NotYetValid { .. } => "not_yet_valid",
            TokenProblem::IssuedInFuture { .. } => "iat_in_future",
            TokenProblem::AudienceMissing => "aud_missing",
            TokenProblem::AudienceMismatch { .. } => "aud_mismatch",
            TokenProblem::Binding(b) => b.reason(),
            TokenProblem::Inactive => "inactive",
        }
    }

    /// The safe, fixed phrase sent to the client as `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            TokenProblem::TooLarge { .. } => "token too large",
            TokenProblem::Malformed(_) | TokenProblem::BadBase64(_) => "token malformed",
            TokenProblem::BadHeader(_) => "token header invalid",
            TokenProblem::AlgNone | TokenProblem::AlgorithmNotAllowed(_) => {
                "token algorithm not allowed"
            }
            TokenProblem::CritHeader => "token uses unsupported critical extensions",
            TokenProblem::TypNotAccepted(_) => "token type not accepted",
            TokenProblem::BadClaims(_) => "token claims invalid",
            TokenProblem::IssuerMissing
            | TokenProblem::IssuerNotAllowed { .. }
            | TokenProblem::TenantNotAllowed { .. }
            | TokenProblem::TenantMismatch { .. } => "token issuer not accepted",
            TokenProblem::UnknownKid { .. }
            | TokenProblem::NoMatchingKey(_)
            | TokenProblem::KeyAlgorithmMismatch { .. } => "token signing key not found",
            TokenProblem::BadSignature | TokenProblem::KeyIssuerMismatch { .. } => {
                "token signature invalid"
            }
            TokenProblem::ExpirationMissing => "token has no expiry",
            TokenProblem::Expired { .. } => "token expired",
            TokenProblem::NotYetValid { .. } => "token not yet valid",
            TokenProblem::IssuedInFuture { .. } => "token issued in the future",
            TokenProblem::AudienceMissing | TokenProblem::AudienceMismatch { .. } => {
                "token audience not accepted"
            }
            TokenProblem::Binding(b) => b.description(),
            TokenProblem::Inactive => "token not active",
        }
    }
}

impl AuthError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MissingToken
            | AuthError::InvalidToken(_)
            | AuthError::InsufficientUserAuthentication { .. } => StatusCode::UNAUTHORIZED,
            AuthError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AuthError::InsufficientScope { .. } | AuthError::RequirementNotMet { .. } => {
                StatusCode::FORBIDDEN
            }
            AuthError::InvalidDpopProof(_) | AuthError::UseDpopNonce { .. } => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::KeysUnavailable { .. }
            | AuthError::ReplayStoreUnavailable { .. }
            | AuthError::IntrospectionUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The RFC 6750 error code, if the answer carries one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            AuthError::MissingToken
            | AuthError::KeysUnavailable { .. }
            | AuthError::ReplayStoreUnavailable { .. }
            | AuthError::IntrospectionUnavailable { .. } => None,
            AuthError::InvalidRequest(_) => Some(ErrorCode::InvalidRequest),
            AuthError::InvalidDpopProof(_) => Some(ErrorCode::InvalidDpopProof),
            AuthError::UseDpopNonce { .. } => Some(ErrorCode::UseDpopNonce),
            AuthError::InvalidToken(_) => Some(ErrorCode::InvalidToken),
            AuthError::InsufficientUserAuthentication { .. } => {
                Some(ErrorCode::InsufficientUserAuthentication)
            }
            // RFC 6750 has one code for "the token is valid but not enough here".
            AuthError::InsufficientScope { .. } | AuthError::RequirementNotMet { .. } => {
                Some(ErrorCode::InsufficientScope)
            }
        }
    }

    /// A short, stable, machine-readable name for what failed.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InvalidToken(p) => p.reason(),
            AuthError::InsufficientScope { .. } => "insufficient_scope",
            AuthError::RequirementNotMet { .. } => "requirement_not_met",
            AuthError::InsufficientUserAuthentication { .. } => "insufficient_user_authentication",
            AuthError::KeysUnavailable { .. } => "keys_unavailable",
            AuthError::InvalidDpopProof(p) => p.reason(),
            AuthError::UseDpopNonce { .. } => "dpop_nonce_required",
            AuthError::ReplayStoreUnavailable { .. } => "replay_store_unavailable",
            AuthError::IntrospectionUnavailable { .. } => "introspection_unavailable",
        }
    }

    /// The safe, fixed phrase sent to the client.
    pub fn description(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "bearer token required",
            AuthError::InvalidRequest(RequestProblem::MultipleAuthorizationHeaders) => {
                "more than one Authorization header"
            }
            AuthError::InvalidRequest(RequestProblem::EmptyBearer) => "empty bearer token",
            AuthError::InvalidRequest(RequestProblem::NotToken68) => "malformed bearer token",
            AuthError::InvalidRequest(RequestProblem::MultipleMethods) => {
                "token sent by more than one method"
            }
            AuthError::InvalidToken(p) => p.description(),
            AuthError::InsufficientScope { .. } => "token lacks a required scope",
            AuthError::RequirementNotMet { .. } => "token does not meet the route's requirements",
            AuthError::InsufficientUserAuthentication { .. } => {
                "stronger or more recent user authentication required"
            }
            AuthError::KeysUnavailable { .. } => "signing keys temporarily unavailable",
            AuthError::InvalidDpopProof(p) => p.description(),
            AuthError::UseDpopNonce { .. } => "a DPoP nonce is required",
            AuthError::ReplayStoreUnavailable { .. } => "DPoP replay check temporarily unavailable",
            AuthError::IntrospectionUnavailable { .. } => {
                "token introspection temporarily unavailable"
            }
        }
    }

    /// The default RFC 6750 response: status, `WWW-Authenticate`, a small JSON body.
    ///
    /// `realm` must already be a safe quoted-string value (the builder checks it).
    pub fn to_response(&self, realm: Option<&str>) -> Response<Bytes> {
        self.render(realm, None, false)
    }

    /// The response with the challenges of the accepted schemes: `Bearer` unless
    /// DPoP is required, `DPoP algs="…"` when DPoP is accepted (RFC 9449 §7.1).
    /// The error goes on the scheme the client used, and on `DPoP` for a
    /// proof or nonce problem.
    pub(crate) fn render(
        &self,
        realm: Option<&str>,
        dpop: Option<&DpopChallenge>,
        client_used_dpop: bool,
    ) -> Response<Bytes> {
        let dpop_error = matches!(
            self,
            AuthError::InvalidDpopProof(_) | AuthError::UseDpopNonce { .. }
        ) || (client_used_dpop && dpop.is_some());
        let bearer =
            dpop.is_none_or(|d| d.bearer_too) || (!dpop_error && self.error_code().is_some());
        let scope = match self {
            // Scope tokens are %x21 / %x23-5B / %x5D-7E (RFC 6749 §3.3), checked
            // when the route was configured, so they are safe inside quotes.
            AuthError::InsufficientScope { required } => Some(required.join(" ")),
            _ => None,
        };
        let (acr, max_age_text) = match self {
            // acr values pass the scope-token grammar when the route is built.
            AuthError::InsufficientUserAuthentication {
                acr_values,
                max_age,
            } => (
                acr_values.as_ref().map(|a| a.join(" ")),
                max_age.map(|m| m.to_string()),
            ),
            _ => (None, None),
        };
        let challenge = |scheme: &str, with_error: bool, algs: Option<&str>| {
            let mut c = Challenge::new(scheme);
            c.param("realm", realm);
            if let (true, Some(code)) = (with_error, self.error_code()) {
                c.param("error", Some(code.as_str()));
                c.param("error_description", Some(self.description()));
                c.param("scope", scope.as_deref());
                c.param("acr_values", acr.as_deref());
                c.param("max_age", max_age_text.as_deref());
            }
            c.param("algs", algs);
            c.0
        };

        let error = self.error_code().map_or(
            match self {
                AuthError::KeysUnavailable { .. }
                | AuthError::ReplayStoreUnavailable { .. }
                | AuthError::IntrospectionUnavailable { .. } => "temporarily_unavailable",
                _ => "unauthorized",
            },
            ErrorCode::as_str,
        );
        let mut response = json_response(self.status(), error, self.description());
        let headers = response.headers_mut();
        match self {
            AuthError::KeysUnavailable { retry_after, .. }
            | AuthError::ReplayStoreUnavailable { retry_after, .. }
            | AuthError::IntrospectionUnavailable { retry_after, .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
                return response;
            }
            AuthError::UseDpopNonce { nonce } => {
                if let Ok(value) = HeaderValue::from_str(nonce) {
                    headers.insert(DPOP_NONCE, value);
                }
            }
            _ => {}
        }
        let mut values = Vec::with_capacity(2);
        if bearer {
            values.push(challenge("Bearer", !dpop_error, None));
        }
        if let Some(dpop) = dpop {
            values.push(challenge("DPoP", dpop_error, Some(&dpop.algs)));
        }
        for value in values {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// The `DPoP-Nonce` response header (RFC 9449 §8.1).
pub(crate) const DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");

/// The `DPoP` challenge of a guard that accepts DPoP.
#[derive(Debug, Clone)]
pub(crate) struct DpopChallenge {
    /// The accepted proof algorithms, space-separated.
    pub algs: Arc<str>,
    /// Whether plain bearer tokens are accepted too (then both are challenged).
    pub bearer_too: bool,
}

/// One `WWW-Authenticate` challenge being written: `Scheme a="1", b="2"`.
struct Challenge(String);

impl Challenge {
    fn new(scheme: &str) -> Self {
        Challenge(scheme.to_owned())
    }

    /// Values are fixed phrases, checked realms, scope tokens or algorithm
    /// names: none contains a quote or backslash.
    fn param(&mut self, name: &str, value: Option<&str>) {
        let Some(value) = value else { return };
        self.0
            .push_str(if self.0.contains('=') { ", " } else { " " });
        self.0.push_str(name);
        self.0.push_str("=\"");
        self.0.push_str(value);
        self.0.push('"');
    }
}

/// Whether a request is gRPC: its refusal must then be a gRPC status, because a
/// gRPC client reads any non-gRPC HTTP answer as `INTERNAL`.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl AuthError {
    /// The gRPC status code for this error: `UNAUTHENTICATED` (16) for missing,
    /// malformed or invalid credentials, `PERMISSION_DENIED` (7) for a missing
    /// scope, `UNAVAILABLE` (14) when no keys could be loaded.
    pub fn grpc_status(&self) -> u8 {
        match self {
            AuthError::MissingToken
            | AuthError::InvalidRequest(_)
            | AuthError::InvalidToken(_)
            | AuthError::InsufficientUserAuthentication { .. } => 16,
            AuthError::InvalidDpopProof(_) | AuthError::UseDpopNonce { .. } => 16,
            AuthError::InsufficientScope { .. } | AuthError::RequirementNotMet { .. } => 7,
            AuthError::KeysUnavailable { .. }
            | AuthError::ReplayStoreUnavailable { .. }
            | AuthError::IntrospectionUnavailable { .. } => 14,
        }
    }

    /// The default answer to a gRPC request: a trailers-only response (HTTP 200,
    /// `content-type: application/grpc`, `grpc-status`, `grpc-message`), keeping
    /// the RFC 6750 `WWW-Authenticate` challenge.
    pub fn to_grpc_response(&self, realm: Option<&str>) -> Response<Bytes> {
        self.to_grpc_response_with(realm, None, false)
    }

    fn to_grpc_response_with(
        &self,
        realm: Option<&str>,
        dpop: Option<&DpopChallenge>,
        used_dpop: bool,
    ) -> Response<Bytes> {
        let (mut parts, _) = self.render(realm, dpop, used_dpop).into_parts();
        parts.status = StatusCode::OK;
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        parts.headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        // Descriptions are printable ASCII without '%': nothing to percent-encode.
        parts
            .headers
            .insert("grpc-message", HeaderValue::from_static(self.description()));
        Response::from_parts(parts, Bytes::new())
    }
}

/// The answer when a requirement or an extractor finds no guard in front of it: a
/// server misconfiguration (500, gRPC `INTERNAL`), never a pass and never a 401
/// that would blame the client.
pub(crate) fn misconfigured(grpc: bool) -> Response<Bytes> {
    if grpc {
        let mut r = Response::new(Bytes::new());
        let headers = r.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("grpc-status", HeaderValue::from_static("13"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("server misconfigured"),
        );
        return r;
    }
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "authentication is misconfigured on this server",
    )
}

/// The one JSON error body: `{"error": …, "error_description": …}`, not cacheable.
pub(crate) fn json_response(status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Replaces the whole error response (status, headers, body).
pub type ErrorHandler = Arc<dyn Fn(&AuthError) -> Response<Bytes> + Send + Sync>;

/// How the layers answer a refused request: the realm and an optional hook.
#[derive(Clone, Default)]
pub(crate) struct Responder {
    pub realm: Option<Arc<str>>,
    pub handler: Option<ErrorHandler>,
    /// Set when the guard accepts DPoP (an `Arc`: rejections carry a responder).
    pub dpop: Option<Arc<DpopChallenge>>,
}

impl Responder {
    /// The answer to a request: the user's hook, else RFC 6750, in gRPC form for a
    /// gRPC request (see [`is_grpc`]).
    pub(crate) fn respond(&self, error: &AuthError, grpc: bool) -> Response<Bytes> {
        self.answer(error, grpc, false)
    }

    /// [`respond`](Self::respond) for a request with these headers: gRPC or not,
    /// and which scheme its `Authorization` header used.
    pub(crate) fn respond_to(
        &self,
        error: &AuthError,
        request: &http::HeaderMap,
    ) -> Response<Bytes> {
        self.respond_as(error, request, is_grpc(request))
    }

    /// [`respond_to`](Self::respond_to), in gRPC form or not as `grpc` says (a
    /// check service answers a proxy, whatever the client's `content-type`).
    pub(crate) fn respond_as(
        &self,
        error: &AuthError,
        request: &http::HeaderMap,
        grpc: bool,
    ) -> Response<Bytes> {
        let used_dpop = request.get(http::header::AUTHORIZATION).is_some_and(|v| {
            v.as_bytes()
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"dpop "))
        });
        self.answer(error, grpc, used_dpop)
    }

    fn answer(&self, error: &AuthError, grpc: bool, used_dpop: bool) -> Response<Bytes> {
        let realm = self.realm.as_deref();
        match &self.handler {
            Some(handler) => handler(error),
            None if grpc => error.to_grpc_response_with(realm, self.dpop.as_deref(), used_dpop),
            None => error.render(realm, self.dpop.as_deref(), used_dpop),
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("realm", &self.realm)
            .field("handler", &self.handler.as_ref().map(|_| "custom"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn www(r: &Response<Bytes>) -> &str {
        r.headers()[WWW_AUTHENTICATE].to_str().unwrap()
    }

    #[test]
    fn missing_token_gets_401_without_error_code() {
        let r = AuthError::MissingToken.to_response(Some("orders"));
        assert_eq!(r.status(), 401);
        assert_eq!(www(&r), r#"Bearer realm="orders""#);
        let r = AuthError::MissingToken.to_response(None);
        assert_eq!(www(&r), "Bearer");
    }

    #[test]
    fn malformed_request_gets_400_invalid_request() {
        let r = AuthError::InvalidRequest(RequestProblem::MultipleAuthorizationHeaders)
            .to_response(None);
        assert_eq!(r.status(), 400);
        assert_eq!(
            www(&r),
            r#"Bearer error="invalid_request", error_description="more than one Authorization header""#
        );
    }

    #[test]
    fn expired_token_gets_401_invalid_token_with_safe_description() {
        let e = AuthError::InvalidToken(TokenProblem::Expired {
            exp: 1_732_460_000,
            now: 1_732_460_312,
            leeway: 60,
        });
        let r = e.to_response(Some("api"));
        assert_eq!(r.status(), 401);
        assert_eq!(
            www(&r),
            r#"Bearer realm="api", error="invalid_token", error_description="token expired""#
        );
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(
            e.to_string(),
            "invalid token: exp 1732460000 is 312 s before now 1732460312 (leeway 60 s)"
        );
    }

    #[test]
    fn insufficient_scope_gets_403_with_scope() {
        let e = AuthError::InsufficientScope {
            required: vec!["orders:write".to_owned(), "orders:admin".to_owned()].into(),
        };
        let r = e.to_response(None);
        assert_eq!(r.status(), 403);
        assert_eq!(
            www(&r),
            r#"Bearer error="insufficient_scope", error_description="token lacks a required scope", scope="orders:write orders:admin""#
        );
    }

    #[test]
    fn keys_unavailable_gets_503_with_retry_after_and_no_challenge() {
        let e = AuthError::KeysUnavailable {
            issuer: "https://a".into(),
            reason: "connection refused".into(),
            retry_after: Duration::from_secs(30),
        };
        let r = e.to_response(Some("api"));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "30");
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn grpc_requests_get_a_grpc_status() {
        let mut grpc = http::HeaderMap::new();
        grpc.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        let responder = Responder::default();
        let r = responder.respond(&AuthError::MissingToken, is_grpc(&grpc));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "16");
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
        assert!(r.body().is_empty());
        let scope = AuthError::InsufficientScope {
            required: vec!["a".to_owned()].into(),
        };
        assert_eq!(
            responder.respond(&scope, is_grpc(&grpc)).headers()["grpc-status"],
            "7"
        );
        let plain = responder.respond(&scope, is_grpc(&http::HeaderMap::new()));
        assert_eq!(plain.status(), 403);
    }

    #[test]
    fn descriptions_never_echo_token_values() {
        let e = TokenProblem::IssuerNotAllowed {
            iss: "https://evil\"".into(),
            allowed: vec!["https://a".into()],
        };
        assert_eq!(e.description(), "token issuer not accepted");
        let r = AuthError::InvalidToken(e).to_response(None);
        assert!(!www(&r).contains("evil"));
    }
}
