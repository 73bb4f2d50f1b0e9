//! The server's own HTML: login, consent and error pages. Plain forms, no
//! JavaScript; every echoed value goes through [`escape`].

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::{CONSENT_PATH, LOGIN_PATH};

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Pages carry one-time values (CSRF tokens), must not be cached, and the
/// consent page must not be framed (clickjacking).
const PAGE_HEADERS: [(HeaderName, &str); 4] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// A complete page; `body` must already be escaped.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body>\n<h1>{title}</h1>\n{body}\n</body>\n</html>\n",
        title = escape(title),
    );
    let mut response = (status, Html(html)).into_response();
    for (name, value) in PAGE_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An error shown to the user instead of redirecting (e.g. unknown client).
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Authorization error",
        &format!("<p>{}</p>", escape(message)),
    )
}

/// The hidden fields every form carries: the pending request and the CSRF token.
fn hidden_fields(request_id: &str, csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"request\" value=\"{}\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(request_id),
        escape(csrf)
    )
}

/// The login form, optionally with an error message from the last attempt.
pub(super) fn login_page(
    status: StatusCode,
    request_id: &str,
    csrf: &str,
    client_id: &str,
    error: Option<&str>,
    one_time_code: bool,
) -> Response {
    let error = error
        .map(|e| format!("<p role=\"alert\"><strong>{}</strong></p>\n", escape(e)))
        .unwrap_or_default();
    // Asked for when the request's acr_values call for "mfa".
    let code = if one_time_code {
        "<p><label>One-time code <input name=\"otp\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required></label></p>\n"
    } else {
        ""
    };
    let body = format!(
        "<p>Sign in to continue to <strong>{client}</strong>.</p>\n{error}\
         <form method=\"post\" action=\"{LOGIN_PATH}\">\n{hidden}\n\
         <p><label>Username <input name=\"username\" autocomplete=\"username\" required></label></p>\n\
         <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\n\
         {code}<p><button type=\"submit\">Sign in</button></p>\n</form>",
        client = escape(client_id),
        hidden = hidden_fields(request_id, csrf),
    );
    page(status, "Sign in", &body)
}

/// Asks the logged-in user to allow or deny the client's requested scopes.
pub(super) fn consent_page(
    request_id: &str,
    csrf: &str,
    user: &str,
    client_id: &str,
    scopes: &[String],
) -> Response {
    let scopes: String = scopes
        .iter()
        .map(|s| format!("<li>{}</li>\n", escape(s)))
        .collect();
    let body = format!(
        "<p>Signed in as <strong>{user}</strong>.</p>\n\
         <p><strong>{client}</strong> asks for access to:</p>\n<ul>\n{scopes}</ul>\n\
         <form method=\"post\" action=\"{CONSENT_PATH}\">\n{hidden}\n\
         <p><button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></p>\n</form>",
        user = escape(user),
        client = escape(client_id),
        hidden = hidden_fields(request_id, csrf),
    );
    page(StatusCode::OK, "Authorize access", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#x27;y&#x27;&gt;&amp;&lt;/a&gt;"
        );
    }
}
