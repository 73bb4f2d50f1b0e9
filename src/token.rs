//! The bearer token of a request (RFC 6750 §2.1).
//!
//! Only the `Authorization: Bearer <token68>` header is read by default (the scheme
//! is case-insensitive). OAuth 2.1 forbids tokens in the query string, so there is
//! no such option. A cookie can be named as an additional source with
//! [`GuardBuilder::token_cookie`](crate::GuardBuilder::token_cookie); a request that
//! carries both is refused as ambiguous (RFC 6750 §2: one method per request).
//!
//! The size cap is applied before any decoding.

use http::HeaderMap;
use http::header::AUTHORIZATION;
#[cfg(feature = "cookie")]
use http::header::COOKIE;

use crate::error::{AuthError, RequestProblem, TokenProblem};

/// Where tokens are looked for, and how large they may be.
#[derive(Debug, Clone)]
pub(crate) struct TokenSource {
    pub max_len: usize,
    #[cfg(feature = "cookie")]
    pub cookie: Option<Box<str>>,
}

/// The authorization scheme the credentials came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `Authorization: Bearer` (or the configured cookie).
    Bearer,
    /// `Authorization: DPoP` (RFC 9449 §7.1).
    Dpop,
}

impl TokenSource {
    /// Finds the request's bearer token, without allocating.
    #[cfg(test)]
    pub(crate) fn extract<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, AuthError> {
        self.extract_scheme(headers, false).map(|(_, token)| token)
    }

    /// Finds the request's token and its scheme; `DPoP` only when `dpop` is set
    /// (otherwise it is an unsupported scheme, like `Basic`).
    pub(crate) fn extract_scheme<'h>(
        &self,
        headers: &'h HeaderMap,
        dpop: bool,
    ) -> Result<(Scheme, &'h str), AuthError> {
        let from_header = self.in_authorization_header(headers, dpop)?;
        #[cfg(feature = "cookie")]
        let from_cookie = match &self.cookie {
            Some(name) => self.in_cookie(headers, name)?,
            None => None,
        };
        #[cfg(not(feature = "cookie"))]
        let from_cookie: Option<&str> = None;
        match (from_header, from_cookie) {
            (Some(_), Some(_)) => Err(AuthError::InvalidRequest(RequestProblem::MultipleMethods)),
            (Some(t), None) => Ok(t),
            (None, Some(t)) => Ok((Scheme::Bearer, t)),
            (None, None) => Err(AuthError::MissingToken),
        }
    }

    /// The credentials of the one `Authorization: Bearer` header, unchecked,
    /// when that header is the request's only possible source of a token (no
    /// token cookie configured): for a lookup among tokens that passed
    /// [`extract_scheme`](Self::extract_scheme) before. `None` whenever
    /// `extract_scheme` might answer otherwise than with these bytes (another
    /// scheme, several headers, empty or too long credentials); it must then
    /// be called.
    pub(crate) fn bearer_unchecked<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        #[cfg(feature = "cookie")]
        if self.cookie.is_some() {
            return None;
        }
        match authorization(headers, false) {
            Ok(Some((Scheme::Bearer, credentials)))
                if !credentials.is_empty() && credentials.len() <= self.max_len =>
            {
                Some(credentials)
            }
            _ => None,
        }
    }

    fn in_authorization_header<'h>(
        &self,
        headers: &'h HeaderMap,
        dpop: bool,
    ) -> Result<Option<(Scheme, &'h str)>, AuthError> {
        let Some((scheme, credentials)) = authorization(headers, dpop)? else {
            return Ok(None);
        };
        if credentials.is_empty() {
            return Err(AuthError::InvalidRequest(RequestProblem::EmptyBearer));
        }
        self.check(credentials).map(|t| Some((scheme, t)))
    }

    #[cfg(feature = "cookie")]
    fn in_cookie<'h>(
        &self,
        headers: &'h HeaderMap,
        name: &str,
    ) -> Result<Option<&'h str>, AuthError> {
        let mut found = None;
        for header in headers.get_all(COOKIE) {
            let Ok(header) = header.to_str() else {
                continue;
            };
            for cookie in cookie::Cookie::split_parse(header).flatten() {
                if cookie.name() != name {
                    continue;
                }
                if found.is_some() {
                    return Err(AuthError::InvalidRequest(RequestProblem::MultipleMethods));
                }
                // `split_parse` borrows from the header; keep the borrow, not a copy.
                let value = cookie.value_raw().unwrap_or_default();
                if value.is_empty() {
                    return Err(AuthError::InvalidRequest(RequestProblem::EmptyBearer));
                }
                found = Some(self.check(value.as_bytes())?);
            }
        }
        Ok(found)
    }

    /// token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    fn check<'h>(&self, token: &'h [u8]) -> Result<&'h str, AuthError> {
        if token.len() > self.max_len {
            return Err(AuthError::InvalidToken(TokenProblem::TooLarge {
                len: token.len(),
                max: self.max_len,
            }));
        }
        let body_end = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
        let valid = body_end > 0 && all_token68(&token[..body_end]);
        if !valid {
            return Err(AuthError::InvalidRequest(RequestProblem::NotToken68));
        }
        // All bytes are ASCII, so this never fails.
        std::str::from_utf8(token)
            .map_err(|_| AuthError::InvalidRequest(RequestProblem::NotToken68))
    }
}

/// The scheme of the one `Authorization` header and its credentials, spaces
/// trimmed and not yet checked; `None` without the header or for another scheme
/// (`Basic`, ...: not bearer credentials, so 401 without an error code, as
/// RFC 6750 §3.1 asks for an unsupported method).
fn authorization(headers: &HeaderMap, dpop: bool) -> Result<Option<(Scheme, &[u8])>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest(
            RequestProblem::MultipleAuthorizationHeaders,
        ));
    }
    Ok(scheme_of(value.as_bytes(), dpop).map(|(scheme, rest)| (scheme, trim_spaces(rest))))
}

/// The scheme of an `Authorization` value and what follows it; `None` for
/// another scheme (`Basic`, `BearerX`, `DPoP` when DPoP is off).
fn scheme_of(value: &[u8], dpop: bool) -> Option<(Scheme, &[u8])> {
    let schemes: &[(&[u8], Scheme)] = if dpop {
        &[(b"bearer", Scheme::Bearer), (b"dpop", Scheme::Dpop)]
    } else {
        &[(b"bearer", Scheme::Bearer)]
    };
    schemes.iter().find_map(|&(name, scheme)| {
        let head = value.get(..name.len())?;
        let rest = &value[name.len()..];
        (head.eq_ignore_ascii_case(name) && (rest.is_empty() || rest[0] == b' '))
            .then_some((scheme, rest))
    })
}

/// Whether every byte is a token68 character before the `=` padding (letters,
/// digits, `-._~+/`). This runs over every byte of every token: each byte's
/// test is branch-free and the results are or-ed without an early exit, so
/// the compiler checks many bytes per step with vector instructions (a table
/// lookup per byte cost several times as much on a 700-byte token; a refused
/// token costs the same pass, bounded by the size limit checked before).
fn all_token68(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(0u8, |bad, &b| bad | u8::from(!is_token68(b)))
        == 0
}

/// One token68 byte, without branches: `b | 0x20` folds `A-Z` onto `a-z`
/// (and nothing else onto them), and a wrapped subtraction is a range test.
#[inline(always)]
const fn is_token68(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_branch_free_token68_test_is_the_grammar() {
        for b in 0..=255u8 {
            let grammar =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_token68(b), grammar, "byte {b:#04x}");
        }
        // Every position of a long run, across the vector widths.
        let good = vec![b'a'; 100];
        assert!(all_token68(&good));
        for at in 0..good.len() {
            for bad in [b' ', b'=', b'@', b'[', b'`', b'{', 0x80, 0xff, 0] {
                let mut token = good.clone();
                token[at] = bad;
                assert!(!all_token68(&token), "{bad:#04x} at {at}");
            }
        }
    }
    use http::HeaderValue;
    #[cfg(feature = "cookie")]
    use http::header::COOKIE;

    fn source() -> TokenSource {
        TokenSource {
            max_len: 64,
            #[cfg(feature = "cookie")]
            cookie: None,
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn extracts_bearer_token_with_any_scheme_casing() {
        for v in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER   abc.def.ghi ",
        ] {
            assert_eq!(source().extract(&headers(&[v])).unwrap(), "abc.def.ghi");
        }
    }

    #[test]
    fn no_header_or_other_scheme_is_missing_token() {
        for v in [
            &[][..],
            &["Basic dXNlcjpwYXNz"],
            &["BearerX abc"],
            &["DPoP abc"],
        ] {
            assert_eq!(source().extract(&headers(v)), Err(AuthError::MissingToken));
        }
    }

    #[test]
    fn the_dpop_scheme_is_read_only_when_dpop_is_on() {
        let h = headers(&["DPoP abc.def.ghi"]);
        assert_eq!(
            source().extract_scheme(&h, true),
            Ok((Scheme::Dpop, "abc.def.ghi"))
        );
        assert_eq!(
            source().extract_scheme(&h, false),
            Err(AuthError::MissingToken)
        );
        for v in ["DPoPX abc", "dpop", "DPoP "] {
            assert!(
                source().extract_scheme(&headers(&[v]), true).is_err(),
                "{v}"
            );
        }
        let bearer = headers(&["bearer abc"]);
        assert_eq!(
            source().extract_scheme(&bearer, true),
            Ok((Scheme::Bearer, "abc"))
        );
    }

    #[test]
    fn two_authorization_headers_are_invalid_request() {
        assert_eq!(
            source().extract(&headers(&["Bearer a", "Bearer b"])),
            Err(AuthError::InvalidRequest(
                RequestProblem::MultipleAuthorizationHeaders
            ))
        );
    }

    #[test]
    fn empty_bearer_is_invalid_request() {
        for v in ["Bearer", "Bearer ", "bearer    "] {
            assert_eq!(
                source().extract(&headers(&[v])),
                Err(AuthError::InvalidRequest(RequestProblem::EmptyBearer))
            );
        }
    }

    #[test]
    fn non_token68_credentials_are_invalid_request() {
        for v in [
            "Bearer a b",
            "Bearer a,b",
            "Bearer ===",
            "Bearer a=b",
            "Bearer \"a\"",
        ] {
            assert_eq!(
                source().extract(&headers(&[v])),
                Err(AuthError::InvalidRequest(RequestProblem::NotToken68)),
                "{v}"
            );
        }
        assert_eq!(
            source().extract(&headers(&["Bearer ab=="])).unwrap(),
            "ab=="
        );
    }

    #[test]
    fn oversized_token_is_refused_before_decoding() {
        let long = format!("Bearer {}", "a".repeat(65));
        assert!(matches!(
            source().extract(&headers(&[&long])),
            Err(AuthError::InvalidToken(TokenProblem::TooLarge {
                len: 65,
                max: 64
            }))
        ));
    }

    #[cfg(feature = "cookie")]
    #[test]
    fn cookie_source_only_when_configured() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("theme=dark; at=abc.def.ghi"),
        );
        assert_eq!(source().extract(&h), Err(AuthError::MissingToken));
        let with_cookie = TokenSource {
            cookie: Some("at".into()),
            ..source()
        };
        assert_eq!(with_cookie.extract(&h).unwrap(), "abc.def.ghi");
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x.y.z"));
        assert_eq!(
            with_cookie.extract(&h),
            Err(AuthError::InvalidRequest(RequestProblem::MultipleMethods))
        );
    }

    /// The unchecked lookup never names bytes that extraction would answer
    /// otherwise: where it finds credentials, extraction finds the same bytes,
    /// or refuses only their token68 syntax (which a cached token passed).
    #[test]
    fn unchecked_bearer_credentials_are_what_extraction_finds() {
        let long = format!("Bearer {}", "a".repeat(65));
        let cases: &[&[&str]] = &[
            &[],
            &["Bearer abc.def.ghi"],
            &["bearer abc.def.ghi"],
            &["BEARER \t abc.def.ghi \t"],
            &["Bearer abc", "Bearer abc"],
            &["Bearer"],
            &["Bearer "],
            &["Bearer    "],
            &["BearerX abc"],
            &["Basic dXNlcjpwYXNz"],
            &["DPoP abc.def.ghi"],
            &["Bearer a b"],
            &["Bearer a,b"],
            &["Bearer abc=="],
            &["Bearer =="],
            &[&long],
        ];
        for &values in cases {
            let h = headers(values);
            for dpop in [false, true] {
                let extracted = source().extract_scheme(&h, dpop);
                match source().bearer_unchecked(&h) {
                    Some(raw) => match extracted {
                        Ok((scheme, token)) => {
                            assert_eq!(
                                (scheme, token.as_bytes()),
                                (Scheme::Bearer, raw),
                                "{values:?}"
                            )
                        }
                        Err(e) => assert_eq!(
                            e,
                            AuthError::InvalidRequest(RequestProblem::NotToken68),
                            "{values:?}"
                        ),
                    },
                    None => assert!(
                        !matches!(extracted, Ok((Scheme::Bearer, _))) || values.is_empty(),
                        "{values:?}: extraction found {extracted:?}, the lookup nothing"
                    ),
                }
            }
        }
        assert_eq!(
            source().bearer_unchecked(&headers(&["Bearer abc.def.ghi"])),
            Some(&b"abc.def.ghi"[..])
        );
    }

    #[cfg(feature = "cookie")]
    #[test]
    fn no_unchecked_lookup_with_a_token_cookie() {
        let with_cookie = TokenSource {
            cookie: Some("at".into()),
            ..source()
        };
        assert_eq!(
            with_cookie.bearer_unchecked(&headers(&["Bearer abc"])),
            None
        );
    }
}
