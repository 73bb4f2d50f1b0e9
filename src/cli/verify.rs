//! `bearer-guard verify`: validates one token with exactly the checks and defaults
//! of the library, and says why it passed or failed.
//!
//! Exit status: 0 valid, 1 rejected, 2 usage or configuration error. Only the
//! header and the claims are printed, never the signature segment.
//!
//! Token text is the issuer's (or an attacker's) to choose, so nothing of it
//! reaches the terminal raw: control characters (C0, DEL, C1), bidi marks,
//! embeddings, overrides and isolates, line and paragraph separators, zero-width
//! characters and the BOM are printed as `\uXXXX`, in the text report (with `\`
//! as `\\` in the header fields and the error detail, so the escape is
//! unambiguous) and in `--json`, where `\uXXXX` is the same JSON string: a JSON
//! consumer reads exactly the claim, and a person reading the output sees it.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::scope::is_scope_token;
use crate::{Algorithm, AuthError, Guard, Issuer, RequireScope, VerifiedToken};

/// The arguments of `bearer-guard verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// A trusted issuer (exact `iss`); repeat for several.
    #[arg(long = "issuer", value_name = "URL", required = true)]
    pub issuers: Vec<String>,
    /// The JWKS URL of the issuer(s), instead of discovery.
    #[arg(long, value_name = "URL", conflicts_with = "jwks_file")]
    pub jwks_uri: Option<String>,
    /// A JWKS document on disk for the issuer(s): nothing is fetched.
    #[arg(long, value_name = "PATH")]
    pub jwks_file: Option<PathBuf>,
    /// An accepted audience; repeat for several. At least one is required.
    #[arg(long = "audience", value_name = "AUD")]
    pub audiences: Vec<String>,
    /// The accepted algorithms (default: every asymmetric one).
    #[arg(long, value_name = "ALG,...", value_delimiter = ',')]
    pub algorithms: Vec<Algorithm>,
    /// A scope the token must carry; repeat for several (all are required).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Clock-skew tolerance for exp, nbf and iat, in seconds (default 60).
    #[arg(long, value_name = "SECONDS")]
    pub leeway: Option<u64>,
    /// Validate as if the time were this (Unix seconds), e.g. for a recorded token.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<u64>,
    /// Require `typ: at+jwt` (RFC 9068).
    #[arg(long)]
    pub strict_typ: bool,
    /// Allow plain-http discovery and JWKS URLs on non-loopback hosts.
    #[arg(long)]
    pub allow_http: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The token; `-` or absent reads it from standard input. `Bearer ` is tolerated.
    #[arg(value_name = "TOKEN")]
    pub token: Option<String>,
}

/// A problem with the command line or the configuration (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The result of `verify`: the token was accepted or rejected.
#[derive(Debug)]
pub enum Verdict {
    /// Every check passed, `--scope` requirements included.
    Valid(VerifiedToken),
    /// A check failed.
    Rejected(AuthError),
}

impl VerifyArgs {
    /// The token to check: the argument, or `input` when it is absent or `-`;
    /// surrounding whitespace and a leading `Bearer ` are removed.
    pub fn read_token(&self, mut input: impl Read) -> Result<String, UsageError> {
        let raw = match self.token.as_deref() {
            Some(t) if t != "-" => t.to_owned(),
            _ => {
                let mut s = String::new();
                input
                    .read_to_string(&mut s)
                    .map_err(|e| UsageError(format!("cannot read the token from stdin: {e}")))?;
                s
            }
        };
        let token = clean_token(&raw);
        if token.is_empty() {
            return Err(UsageError(
                "no token: pass it as an argument or on standard input".to_owned(),
            ));
        }
        Ok(token.to_owned())
    }

    /// Builds the guard these arguments describe, through the library's builder.
    pub fn guard(&self) -> Result<Guard, UsageError> {
        let jwks_document = match &self.jwks_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                UsageError(format!("cannot read --jwks-file {}: {e}", path.display()))
            })?),
            None => None,
        };
        let mut builder = Guard::builder();
        for iss in &self.issuers {
            let mut issuer = Issuer::new(iss.as_str());
            if let Some(uri) = &self.jwks_uri {
                issuer = issuer.jwks_uri(uri.as_str());
            }
            if let Some(doc) = &jwks_document {
                issuer = issuer.jwks_document(doc.as_str());
            }
            builder = builder.issuer(issuer);
        }
        for aud in &self.audiences {
            builder = builder.audience(aud.as_str());
        }
        if !self.algorithms.is_empty() {
            builder = builder.algorithms(self.algorithms.iter().copied());
        }
        if let Some(leeway) = self.leeway {
            builder = builder.leeway(Duration::from_secs(leeway));
        }
        if self.strict_typ {
            builder = builder.strict_rfc9068();
        }
        if self.allow_http {
            builder = builder.allow_insecure_http();
        }
        builder
            .build()
            .map_err(|e| UsageError(format!("invalid configuration: {e}")))
    }

    /// The `--scope` requirement, checked before [`RequireScope::all`] can panic.
    fn scope_requirement(&self) -> Result<Option<RequireScope>, UsageError> {
        if self.scopes.is_empty() {
            return Ok(None);
        }
        if let Some(bad) = self.scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(UsageError(format!(
                "--scope {bad:?} is not a valid OAuth scope token"
            )));
        }
        Ok(Some(RequireScope::all(self.scopes.iter().cloned())))
    }
}

/// Validates `token` as `args` say. `Err` only for usage/configuration problems.
pub async fn verify(args: &VerifyArgs, token: &str) -> Result<Verdict, UsageError> {
    let require = args.scope_requirement()?;
    let guard = args.guard()?;
    let result = match args.now {
        Some(now) => guard.validate_at(token, now).await,
        None => guard.validate(token).await,
    };
    Ok(match result {
        Ok(verified) => match require {
            Some(req) if !req.is_satisfied_by(&verified) => {
                Verdict::Rejected(AuthError::InsufficientScope {
                    required: args.scopes.clone().into(),
                })
            }
            _ => Verdict::Valid(verified),
        },
        Err(e) => Verdict::Rejected(e),
    })
}

impl Verdict {
    /// The process exit status: 0 valid, 1 rejected.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Valid(_) => 0,
            Verdict::Rejected(_) => 1,
        }
    }

    /// The report for `token` (the one that was verified), as text or JSON.
    pub fn render(&self, token: &str, as_json: bool) -> String {
        match self {
            Verdict::Valid(t) => render_valid(t, token, as_json),
            Verdict::Rejected(e) => render_rejected(e, as_json),
        }
    }
}

/// The RFC 6750 error code, or `temporarily_unavailable` when no keys could be
/// loaded (the token itself may be fine).
pub fn error_name(error: &AuthError) -> &'static str {
    match (error.error_code(), error) {
        (Some(code), _) => code.as_str(),
        (None, AuthError::KeysUnavailable { .. } | AuthError::IntrospectionUnavailable { .. }) => {
            "temporarily_unavailable"
        }
        (None, _) => "invalid_request",
    }
}

/// Whether `c` can drive a terminal or make text read differently than it is:
/// the C0 and C1 controls and DEL, the bidi marks, embeddings, overrides and
/// isolates (Trojan Source, CVE-2021-42574), the line and paragraph separators,
/// zero-width characters and the BOM.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// Writes `c` as `\uXXXX` (every unsafe character is in the BMP).
fn push_escaped(out: &mut String, c: char) {
    out.push_str(&format!("\\u{:04x}", u32::from(c)));
}

/// A field printed as text: unsafe characters as `\uXXXX`, `\` as `\\`.
fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_unsafe_char(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// JSON text from serde_json with the unsafe characters it leaves raw (DEL, C1,
/// bidi, U+2028...) as `\uXXXX`: the same JSON value. serde_json escapes the C0
/// controls inside strings, so a raw line feed is the pretty-printer's own.
fn escape_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            c if c != '\n' && is_unsafe_char(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

fn render_valid(t: &VerifiedToken, token: &str, as_json: bool) -> String {
    // Only the first segment is decoded here; the signature is never touched.
    let header = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .unwrap_or_else(
            || json!({ "alg": t.algorithm().map(|a| a.as_str()), "kid": t.key_id(), "typ": t.token_type() }),
        );
    let claims: Value = serde_json::from_str(t.claims_json()).unwrap_or(Value::Null);
    if as_json {
        return escape_json(
            &json!({ "valid": true, "header": header, "claims": claims }).to_string(),
        );
    }
    let claims_text = serde_json::to_string_pretty(&claims).unwrap_or_default();
    format!(
        "valid token\n  alg:    {}\n  kid:    {}\n  typ:    {}\n  scopes: {}\nclaims:\n{}",
        t.algorithm().map_or("-", |a| a.as_str()),
        escape_text(t.key_id().unwrap_or("-")),
        escape_text(t.token_type().unwrap_or("-")),
        if t.scopes().is_empty() {
            "-".to_owned()
        } else {
            escape_text(&t.scopes().to_string())
        },
        escape_json(&claims_text)
    )
}

fn render_rejected(e: &AuthError, as_json: bool) -> String {
    if as_json {
        return escape_json(
            &json!({
                "valid": false,
                "error": error_name(e),
                "reason": e.reason(),
                "description": e.description(),
                "detail": e.to_string(),
            })
            .to_string(),
        );
    }
    format!(
        "rejected: {}\n  description: {}\n  reason:      {}\n  detail:      {}",
        error_name(e),
        e.description(),
        e.reason(),
        escape_text(&e.to_string()),
    )
}

/// Trims the input and removes a leading `Bearer ` (any casing), as pasted from
/// an `Authorization` header.
fn clean_token(raw: &str) -> &str {
    let t = raw.trim();
    match t.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => t[7..].trim_start(),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_bearer_prefix_and_whitespace() {
        assert_eq!(clean_token("  abc.def.ghi\n"), "abc.def.ghi");
        assert_eq!(clean_token("Bearer abc.def.ghi"), "abc.def.ghi");
        assert_eq!(clean_token("bearer   abc"), "abc");
        assert_eq!(clean_token("Bearer"), "Bearer");
        assert_eq!(clean_token("Bearé"), "Bearé");
    }

    #[test]
    fn text_fields_escape_every_unsafe_character_and_the_backslash() {
        assert_eq!(
            escape_text(
                "a\u{1b}[31m\u{7}\r\n\t\u{7f}\u{9b}\u{202e}\u{2028}\u{200b}\u{feff}\\u0041é"
            ),
            "a\\u001b[31m\\u0007\\u000d\\u000a\\u0009\\u007f\\u009b\\u202e\\u2028\\u200b\\ufeff\\\\u0041é"
        );
        assert_eq!(escape_text("plain kid-2024"), "plain kid-2024");
    }

    #[test]
    fn escaped_json_is_the_same_json_value() {
        let value = json!({ "s": "\u{1b}\u{7f}\u{85}\u{202e}\u{2028}\u{2066}x\\y\"é" });
        for text in [
            value.to_string(),
            serde_json::to_string_pretty(&value).unwrap_or_default(),
        ] {
            let escaped = escape_json(&text);
            assert!(
                !escaped.chars().any(|c| c != '\n' && is_unsafe_char(c)),
                "{escaped}"
            );
            let back: Value = serde_json::from_str(&escaped).unwrap_or(Value::Null);
            assert_eq!(back, value, "{escaped}");
        }
    }
}
