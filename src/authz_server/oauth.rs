//! The OAuth wire vocabulary shared by the endpoints: request parameters, error
//! codes (RFC 6749 §4.1.2.1 and §5.2), scopes and random values.

use std::collections::HashMap;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The `error` codes this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    AccessDenied,
    ServerError,
    InvalidDpopProof,
    UseDpopNonce,
    UnsupportedTokenType,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::UnsupportedTokenType => "unsupported_token_type",
        }
    }
}

/// An OAuth error: a code plus a short description that never echoes a secret.
///
/// At the token endpoint it becomes a JSON response (RFC 6749 §5.2); at the
/// authorization endpoint it is carried back to the client's redirect URI.
#[derive(Debug, Clone)]
pub(crate) struct OAuthError {
    pub(crate) code: ErrorCode,
    pub(crate) description: String,
}

impl OAuthError {
    pub(crate) fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub(crate) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }
}

/// The realm announced with `invalid_client` (RFC 6749 §5.2 asks for a challenge).
const BASIC_CHALLENGE: &str = "Basic realm=\"bearer-guard authorization server\"";

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match self.code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        });
        let mut response = (status, no_store(), Json(body)).into_response();
        if self.code == ErrorCode::InvalidClient {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(BASIC_CHALLENGE),
            );
        }
        response
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1): tokens,
/// codes and their errors must never be cached, by HTTP/1.0 caches either.
pub(crate) fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// The parameters that may be repeated: RFC 8707 §2 lets a client name
/// several resources.
const REPEATABLE: &[&str] = &["resource"];

/// Form or query parameters, decoded by `form_urlencoded`.
///
/// Duplicates are remembered rather than silently resolved, because RFC 6749 §3.1
/// forbids repeating a parameter and the right answer (error page or redirect)
/// depends on which one was repeated. Empty values count as absent (§3.1).
#[derive(Debug, Default)]
pub(crate) struct Params {
    values: HashMap<String, Vec<String>>,
}

impl Params {
    pub(crate) fn parse(input: &[u8]) -> Self {
        let mut params = Self::default();
        for (name, value) in url::form_urlencoded::parse(input) {
            if value.is_empty() {
                continue;
            }
            params
                .values
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        params
    }

    /// The value of `name`; an error when it was sent more than once.
    pub(crate) fn get(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        match self.values.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([value]) => Ok(Some(value)),
            Some(_) => Err(OAuthError::invalid_request(format!(
                "parameter `{name}` was sent more than once"
            ))),
        }
    }

    /// The value of `name`, which must be present exactly once.
    pub(crate) fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter `{name}`")))
    }

    /// Fails when any parameter but a [`REPEATABLE`] one was repeated.
    pub(crate) fn reject_duplicates(&self) -> Result<(), OAuthError> {
        let repeated = self
            .values
            .iter()
            .find(|(name, values)| values.len() > 1 && !REPEATABLE.contains(&name.as_str()));
        match repeated {
            Some((name, _)) => self.get(name).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Every `resource` (RFC 8707 §2), without repeats, in the order sent.
    pub(crate) fn resources(&self) -> Vec<String> {
        let mut resources: Vec<String> = Vec::new();
        for resource in self.values.get("resource").into_iter().flatten() {
            if !resources.contains(resource) {
                resources.push(resource.clone());
            }
        }
        resources
    }
}

/// Parses a space-delimited `scope` value (RFC 6749 §3.3), `None` when absent.
pub(crate) fn parse_scope(value: Option<&str>) -> Result<Option<Vec<String>>, OAuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let mut scopes: Vec<String> = Vec::new();
    for token in value.split(' ').filter(|t| !t.is_empty()) {
        if !crate::scope::is_scope_token(token) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "scope contains characters RFC 6749 does not allow",
            ));
        }
        if !scopes.iter().any(|s| s == token) {
            scopes.push(token.to_owned());
        }
    }
    Ok(Some(scopes))
}

/// Checks `requested` against `allowed`, defaulting to all of `allowed`.
pub(crate) fn grant_scope(
    requested: Option<Vec<String>>,
    allowed: &[String],
) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(allowed.to_vec());
    };
    match requested.iter().find(|s| !allowed.contains(s)) {
        Some(_) => Err(OAuthError::new(
            ErrorCode::InvalidScope,
            "the requested scope exceeds what this client may be granted",
        )),
        None => Ok(requested),
    }
}

/// A PKCE `code_verifier` or S256 `code_challenge`: 43 to 128 unreserved
/// characters (RFC 7636 §4.1, §4.2).
pub(crate) fn is_pkce_value(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// A fresh unguessable value (256 bits), base64url: codes, tokens, session ids.
pub(crate) fn random_token() -> String {
    random_base64url::<32>()
}

/// `N` random bytes from the system CSPRNG, base64url-encoded.
pub(crate) fn random_base64url<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    // The system RNG only fails if the OS cannot provide entropy; then nothing
    // this server hands out could be trusted, so stopping is the honest answer.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two secrets without leaking where they differ.
pub(crate) fn secrets_equal(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_treat_empty_values_as_absent() {
        let params = Params::parse(b"a=&b=1");
        assert_eq!(params.get("a").ok().flatten(), None);
        assert_eq!(params.get("b").ok().flatten(), Some("1"));
    }

    #[test]
    fn params_report_duplicates_per_name() {
        let params = Params::parse(b"a=1&a=2&b=3");
        assert!(params.get("a").is_err());
        assert!(params.get("b").is_ok());
        assert!(params.reject_duplicates().is_err());
    }

    #[test]
    fn resource_alone_may_be_repeated() {
        let params = Params::parse(b"resource=a&resource=b&resource=a&x=1");
        assert!(params.reject_duplicates().is_ok());
        assert_eq!(params.resources(), vec!["a".to_owned(), "b".to_owned()]);
        assert!(params.get("resource").is_err(), "not read as one value");
        assert!(
            Params::parse(b"scope=a&scope=b")
                .reject_duplicates()
                .is_err()
        );
    }

    #[test]
    fn params_decode_plus_and_percent() {
        let params = Params::parse(b"s=a+b%26c");
        assert_eq!(params.get("s").ok().flatten(), Some("a b&c"));
    }

    #[test]
    fn scope_rejects_forbidden_characters() {
        assert!(parse_scope(Some("ok \"quoted\"")).is_err());
        assert_eq!(
            parse_scope(Some(" a  b a ")).ok().flatten(),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn scope_must_be_a_subset_of_the_allowed() {
        let allowed = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(grant_scope(None, &allowed).ok(), Some(allowed.clone()));
        assert!(grant_scope(Some(vec!["c".to_owned()]), &allowed).is_err());
    }

    #[test]
    fn random_tokens_differ() {
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 43);
    }
}
