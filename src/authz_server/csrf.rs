//! CSRF tokens bound to the browser (RFC 6749 §10.12).
//!
//! The first `/authorize` a browser makes sets a random, `HttpOnly`,
//! `SameSite=Lax` cookie that names the browser. Each form the server renders
//! carries `HMAC-SHA256(server key, form, browser cookie, pending request id)`,
//! checked in constant time when it is posted: a form's values are worthless
//! in any other browser, so an attacker cannot have a victim's browser
//! complete the attacker's login (login CSRF) or consent.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};

use super::oauth::random_token;

/// The cookie that names the browser; its value is a [`random_token`].
const BROWSER_COOKIE: &str = "bearer_guard_browser";

/// Which form a token is for: a login token never answers consent.
#[derive(Debug, Clone, Copy)]
pub(super) enum Form {
    Login,
    Consent,
}

impl Form {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Login => b"login",
            Self::Consent => b"consent",
        }
    }
}

/// The server's key for form tokens, generated at start.
pub(super) struct FormKey(hmac::Key);

impl FormKey {
    pub(super) fn generate() -> Result<Self, aws_lc_rs::error::Unspecified> {
        hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).map(Self)
    }

    /// The token to put in `form` for `request_id`, shown to `browser`.
    pub(super) fn token(&self, form: Form, browser: &str, request_id: &str) -> String {
        let tag = hmac::sign(&self.0, &message(form, browser, request_id));
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `given` is the token of `form` for `request_id` in `browser`.
    pub(super) fn verify(&self, form: Form, browser: &str, request_id: &str, given: &str) -> bool {
        URL_SAFE_NO_PAD.decode(given).is_ok_and(|tag| {
            hmac::verify(&self.0, &message(form, browser, request_id), &tag).is_ok()
        })
    }
}

/// Length-prefixed fields, so no two (browser, request) pairs share a message.
fn message(form: Form, browser: &str, request_id: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(64 + browser.len() + request_id.len());
    for field in [form.label(), browser.as_bytes(), request_id.as_bytes()] {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        message.extend_from_slice(&len.to_be_bytes());
        message.extend_from_slice(field);
    }
    message
}

/// The value of cookie `name`, parsed by the `cookie` crate.
pub(super) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The browser's id from its cookie, if it sent one of ours.
pub(super) fn browser_id(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, BROWSER_COOKIE).filter(|v| {
        v.len() == 43
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The browser's id, and whether it is new (then [`set_browser_cookie`] must
/// send it with the page).
pub(super) fn browser_id_or_new(headers: &HeaderMap) -> (String, bool) {
    match browser_id(headers) {
        Some(id) => (id, false),
        None => (random_token(), true),
    }
}

/// Adds a `Set-Cookie` for `name` (`HttpOnly`, `SameSite=Lax`, `Path=/`, and
/// `Secure` when the issuer is https). Lax, not Strict: the browser arrives at
/// `/authorize` by a cross-site navigation from the client, and a signed-in
/// browser must be recognised there.
pub(super) fn set_cookie(response: &mut Response, name: &str, value: String, secure: bool) {
    let cookie = Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(secure)
        .build();
    if let Ok(value) = HeaderValue::try_from(cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Sends the browser cookie with `response`.
pub(super) fn set_browser_cookie(response: &mut Response, browser: String, secure: bool) {
    set_cookie(response, BROWSER_COOKIE, browser, secure);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FormKey {
        FormKey::generate().expect("key")
    }

    #[test]
    fn a_token_verifies_only_for_its_form_browser_and_request() {
        let key = key();
        let token = key.token(Form::Login, "browser-a", "request-1");
        assert!(key.verify(Form::Login, "browser-a", "request-1", &token));
        assert!(!key.verify(Form::Consent, "browser-a", "request-1", &token));
        assert!(!key.verify(Form::Login, "browser-b", "request-1", &token));
        assert!(!key.verify(Form::Login, "browser-a", "request-2", &token));
        assert!(!key.verify(Form::Login, "browser-a", "request-1", "not base64!"));
        assert!(!key.verify(Form::Login, "browser-a", "request-1", ""));
    }

    #[test]
    fn fields_cannot_be_shifted_between_browser_and_request() {
        let key = key();
        let token = key.token(Form::Login, "ab", "c");
        assert!(!key.verify(Form::Login, "a", "bc", &token));
    }

    #[test]
    fn another_servers_key_does_not_verify() {
        let token = key().token(Form::Login, "b", "r");
        assert!(!key().verify(Form::Login, "b", "r", &token));
    }

    #[test]
    fn only_well_formed_browser_cookies_are_ours() {
        let mut headers = HeaderMap::new();
        let id = random_token();
        let cookie = format!("other=1; {BROWSER_COOKIE}={id}");
        headers.insert(
            header::COOKIE,
            HeaderValue::try_from(cookie).expect("ascii"),
        );
        assert_eq!(browser_id(&headers), Some(id));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("bearer_guard_browser=short"),
        );
        assert_eq!(browser_id(&headers), None);
        assert!(browser_id_or_new(&headers).1, "a new id replaces it");
    }
}
