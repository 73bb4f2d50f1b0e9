//! The front channel: `GET /authorize`, then `POST /login` and `POST /consent`.
//!
//! The client and its exact redirect URI are checked first: until they are known
//! to belong together, errors are shown as a page and never redirected (RFC 6749
//! §4.1.2.1), so this server cannot be used as an open redirector. After that,
//! errors go back to the client with `state` and `iss` (RFC 9207).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::builder::ClientConfig;
use super::csrf::{
    Form, browser_id, browser_id_or_new, cookie_value, set_browser_cookie, set_cookie,
};
use super::oauth::{
    ErrorCode, OAuthError, Params, grant_scope, is_pkce_value, no_store, parse_scope, secrets_equal,
};
use super::pages::{consent_page, error_page, login_page};
use super::store::{Grant, PendingAuthorization};
use super::{Shared, lock};

const SESSION_COOKIE: &str = "bearer_guard_session";

/// `GET /authorize`.
pub(super) async fn authorize(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let Ok(Some(client_id)) = params.get("client_id") else {
        return error_page(StatusCode::BAD_REQUEST, "client_id is missing or repeated.");
    };
    let Some(client) = shared.clients.get(client_id) else {
        return error_page(StatusCode::BAD_REQUEST, "Unknown client.");
    };
    let redirect_uri = match params.get("redirect_uri") {
        Ok(Some(uri)) if client.has_redirect_uri(uri) => uri,
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "redirect_uri is missing or not registered for this client.",
            );
        }
    };
    let back = ClientRedirect {
        issuer: &shared.issuer,
        redirect_uri,
        state: params.get("state").ok().flatten(),
    };
    let pending = match validate(&shared, client, redirect_uri, &params) {
        Ok(pending) => pending,
        Err(error) => return back.error(&error),
    };
    let now = shared.now();
    let (browser, new_browser) = browser_id_or_new(&headers);
    let session = cookie_value(&headers, SESSION_COOKIE);
    let scope = pending.scope.clone();
    let mut store = lock(&shared.store);
    // A browser that is already signed in goes straight to consent, unless its
    // login is too old for max_age or of a class acr_values does not accept:
    // then the user signs in again (OIDC Core §3.1.2.1, RFC 9470 §4).
    let signed_in = session.and_then(|sid| {
        let s = store.session(&sid, now)?;
        pending
            .accepts(&s.login, now)
            .then(|| (s.user.clone(), sid))
    });
    let mfa = pending.wants_mfa();
    let mut response = match signed_in {
        Some((user, sid)) => {
            let pending = PendingAuthorization {
                session: Some(sid),
                ..pending
            };
            let request_id = store.add_pending(pending, now);
            let csrf = shared.form_key.token(Form::Consent, &browser, &request_id);
            consent_page(&request_id, &csrf, &user, client.id(), &scope)
        }
        None => {
            let request_id = store.add_pending(pending, now);
            let csrf = shared.form_key.token(Form::Login, &browser, &request_id);
            login_page(StatusCode::OK, &request_id, &csrf, client.id(), None, mfa)
        }
    };
    if new_browser {
        set_browser_cookie(&mut response, browser, shared.secure_cookies());
    }
    response
}

/// The checks that, on failure, are reported back to the client.
fn validate(
    shared: &Shared,
    client: &ClientConfig,
    redirect_uri: &str,
    params: &Params,
) -> Result<PendingAuthorization, OAuthError> {
    params.reject_duplicates()?;
    if params.require("response_type")? != "code" {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedResponseType,
            "only response_type=code is supported",
        ));
    }
    let code_challenge = params.require("code_challenge")?;
    if params.get("code_challenge_method")? != Some("S256") {
        return Err(OAuthError::invalid_request(
            "PKCE is required with code_challenge_method=S256",
        ));
    }
    if !is_pkce_value(code_challenge) {
        return Err(OAuthError::invalid_request("code_challenge is malformed"));
    }
    let scope = grant_scope(parse_scope(params.get("scope")?)?, client.allowed_scopes())?;
    let audiences = shared.audiences_for(&params.resources())?;
    let acr_values = match params.get("acr_values")? {
        Some(v) => v
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    let max_age = match params.get("max_age")? {
        None => None,
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            Some(v.parse::<u64>().unwrap_or(u64::MAX))
        }
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "max_age must be a non-negative number of seconds",
            ));
        }
    };
    Ok(PendingAuthorization {
        client_id: client.id().to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scope,
        state: params.get("state")?.map(str::to_owned),
        code_challenge: code_challenge.to_owned(),
        audiences,
        session: None,
        acr_values,
        max_age,
    })
}

const EXPIRED_REQUEST: &str =
    "This sign-in request is unknown or has expired. Start again from the application.";

/// `POST /login`.
pub(super) async fn login(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    PageForm(params): PageForm,
) -> Response {
    let Ok(Some(request_id)) = params.get("request") else {
        return error_page(StatusCode::BAD_REQUEST, EXPIRED_REQUEST);
    };
    let browser = match checked_browser(&shared, &headers, &params, Form::Login, request_id) {
        Ok(browser) => browser,
        Err((status, message)) => return error_page(status, message),
    };
    let now = shared.now();
    let mut store = lock(&shared.store);
    let Some(pending) = store.pending_mut(request_id, now) else {
        return error_page(StatusCode::BAD_REQUEST, EXPIRED_REQUEST);
    };
    let username = params.get("username").ok().flatten().unwrap_or_default();
    let password = params.get("password").ok().flatten().unwrap_or_default();
    let valid = shared
        .users
        .get(username)
        .is_some_and(|expected| secrets_equal(expected, password));
    let mfa = pending.wants_mfa();
    // With a second factor the login is "mfa", else "pwd". When the request
    // needs "mfa", a missing or wrong code fails the login as a whole.
    let code = params.get("otp").ok().flatten().filter(|c| !c.is_empty());
    let second = shared.second_factors.get(username);
    let code_ok = match (code, second) {
        (Some(given), Some(expected)) => secrets_equal(expected, given),
        _ => false,
    };
    let problem = if !valid {
        Some("Wrong username or password.")
    } else if mfa && !code_ok {
        Some("This sign-in needs a valid one-time code.")
    } else if code.is_some() && !code_ok {
        Some("Wrong one-time code.")
    } else {
        None
    };
    if let Some(problem) = problem {
        let csrf = shared.form_key.token(Form::Login, &browser, request_id);
        return login_page(
            StatusCode::UNAUTHORIZED,
            request_id,
            &csrf,
            &pending.client_id,
            Some(problem),
            mfa,
        );
    }
    let acr = if code_ok { "mfa" } else { "pwd" };
    let (client_id, scope) = (pending.client_id.clone(), pending.scope.clone());
    let sid = store.new_session(username, acr, now);
    if let Some(pending) = store.pending_mut(request_id, now) {
        pending.session = Some(sid.clone());
    }
    let csrf = shared.form_key.token(Form::Consent, &browser, request_id);
    let mut response = consent_page(request_id, &csrf, username, &client_id, &scope);
    set_cookie(&mut response, SESSION_COOKIE, sid, shared.secure_cookies());
    response
}

/// `POST /consent`.
pub(super) async fn consent(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    PageForm(params): PageForm,
) -> Response {
    let now = shared.now();
    let mut store = lock(&shared.store);
    let session = cookie_value(&headers, SESSION_COOKIE)
        .and_then(|sid| Some((store.session(&sid, now)?.clone(), sid)));
    let Some((session, sid)) = session else {
        return error_page(
            StatusCode::FORBIDDEN,
            "You are not signed in. Start again from the application.",
        );
    };
    let Ok(Some(request_id)) = params.get("request") else {
        return error_page(StatusCode::BAD_REQUEST, EXPIRED_REQUEST);
    };
    if let Err((status, message)) =
        checked_browser(&shared, &headers, &params, Form::Consent, request_id)
    {
        return error_page(status, message);
    }
    let allow = match params.get("decision") {
        Ok(Some("allow")) => true,
        Ok(Some("deny")) => false,
        _ => return error_page(StatusCode::BAD_REQUEST, "Choose Allow or Deny."),
    };
    match store.pending_mut(request_id, now) {
        Some(pending) if pending.session.as_deref() == Some(sid.as_str()) => {}
        Some(_) => {
            return error_page(
                StatusCode::FORBIDDEN,
                "This request belongs to another sign-in.",
            );
        }
        None => return error_page(StatusCode::BAD_REQUEST, EXPIRED_REQUEST),
    }
    let Some(pending) = store.take_pending(request_id, now) else {
        return error_page(StatusCode::BAD_REQUEST, EXPIRED_REQUEST);
    };
    let back = ClientRedirect {
        issuer: &shared.issuer,
        redirect_uri: &pending.redirect_uri,
        state: pending.state.as_deref(),
    };
    if !allow {
        return back.error(&OAuthError::new(
            ErrorCode::AccessDenied,
            "the user denied the request",
        ));
    }
    let grant = Grant {
        client_id: pending.client_id.clone(),
        subject: session.user,
        scope: pending.scope.clone(),
        audiences: pending.audiences.clone(),
        dpop_jkt: None,
        authentication: Some(session.login.clone()),
    };
    let code = store.issue_code(
        grant,
        pending.redirect_uri.clone(),
        pending.code_challenge.clone(),
        now,
    );
    back.send(&[("code", &code)])
}

/// The browser that posted `form` for `request_id`, if the form's CSRF token
/// was made for this very browser (its cookie) and request; else the status
/// and message of the error page.
fn checked_browser(
    shared: &Shared,
    headers: &HeaderMap,
    params: &Params,
    form: Form,
    request_id: &str,
) -> Result<String, (StatusCode, &'static str)> {
    let Ok(Some(given)) = params.get("csrf") else {
        return Err((StatusCode::BAD_REQUEST, "Missing CSRF token."));
    };
    match browser_id(headers) {
        Some(browser) if shared.form_key.verify(form, &browser, request_id, given) => Ok(browser),
        _ => Err((
            StatusCode::FORBIDDEN,
            "This form was not opened in this browser (CSRF token mismatch). \
             Start again from the application.",
        )),
    }
}

/// A form posted from one of the server's pages. A body that is too large
/// (413) or cannot be read (400) is answered with an error page.
pub(super) struct PageForm(Params);

impl<S: Send + Sync> FromRequest<S> for PageForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        match Bytes::from_request(request, state).await {
            Ok(body) => Ok(Self(Params::parse(&body))),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(
                error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
            ),
            Err(_) => Err(error_page(
                StatusCode::BAD_REQUEST,
                "The form could not be read.",
            )),
        }
    }
}

/// A response to the client's registered redirect URI (already validated).
struct ClientRedirect<'a> {
    issuer: &'a str,
    redirect_uri: &'a str,
    state: Option<&'a str>,
}

impl ClientRedirect<'_> {
    fn error(&self, error: &OAuthError) -> Response {
        self.send(&[
            ("error", error.code.as_str()),
            ("error_description", &error.description),
        ])
    }

    /// `302 Found` to the redirect URI with `pairs`, `state` (echoed exactly, if
    /// sent) and `iss` appended to its query by `url`'s form encoder.
    fn send(&self, pairs: &[(&str, &str)]) -> Response {
        let Ok(mut target) = url::Url::parse(self.redirect_uri) else {
            return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Invalid redirect URI.");
        };
        {
            let mut query = target.query_pairs_mut();
            query.extend_pairs(pairs);
            if let Some(state) = self.state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", self.issuer);
        }
        match HeaderValue::try_from(target.as_str()) {
            Ok(location) => (
                StatusCode::FOUND,
                no_store(),
                [(header::LOCATION, location)],
            )
                .into_response(),
            Err(_) => error_page(StatusCode::INTERNAL_SERVER_ERROR, "Invalid redirect URI."),
        }
    }
}
