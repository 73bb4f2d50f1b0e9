//! Per-route requirements on the verified token: scopes, and any rule over the token.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::claims::{Binding, VerifiedToken};
use crate::clock::Clock as _;
use crate::error::{AuthError, BindingProblem, TokenProblem};
use crate::layer::{Anonymous, GuardBody};
use crate::response::{Responder, is_grpc};
use crate::scope::is_scope_token;

/// [`Require`]: what a route demands of the verified token, checked after
/// [`GuardLayer`].
///
/// - `Require::all([..])` / `Require::any([..])`: every scope / at least one; a token
///   without them gets 403 `insufficient_scope` naming the scopes;
/// - `Require::predicate(name, |token| ..)`: any rule over the [`VerifiedToken`]
///   (a claim, a tenant, a client); a token that fails it gets 403
///   `insufficient_scope` with a fixed description that names no claim value;
/// - `Require::claim_in(path, [..])`, `Require::claim_contains_all(path, [..])`,
///   `Require::claim_contains_any(path, [..])`: a claim (a top-level name or a
///   dotted path such as `realm_access.roles`) equals one of a set of values, or is
///   an array holding all / any of them; refused like a predicate;
/// - `Require::acr_in([..])`, `Require::max_age(d)`: step-up (RFC 9470); a token
///   whose `acr` is not in the set, or whose `auth_time` is older than `d` (by the
///   guard's clock), gets 401 `insufficient_user_authentication` with `acr_values`
///   / `max_age` in the challenge, so the client can ask the authorization server
///   for a stronger or fresher login;
/// - `a.and(b)`: both, checked in order (the first refusal answers).
///
/// A request that reaches the layer with no verified token at all (the guard layer
/// is missing, a server misconfiguration) gets 500 and an error in the log, never
/// a pass. Under [`GuardLayer::optional`] a request without credentials has no
/// token either; a route with a requirement then answers 401 with the challenge.
///
/// [`RequireScope`] is the same type under the name it has always had.
///
/// ```
/// use axum::{Router, routing::{get, post}};
/// use bearer_guard::{Guard, Require};
///
/// # fn app(guard: Guard) -> Router {
/// Router::new()
///     .route("/orders", get(|| async { "list" })
///         .route_layer(Require::any(["orders:read", "orders:admin"])))
///     .route("/orders/new", post(|| async { "created" })
///         .route_layer(Require::all(["orders:write"])
///             .and(Require::predicate("machine client", |t| t.subject() == t.client_id()))))
///     .layer(guard.layer())
/// # }
/// ```
///
/// [`GuardLayer`]: crate::GuardLayer
/// [`GuardLayer::optional`]: crate::GuardLayer::optional
#[derive(Clone)]
pub struct Require {
    rules: Arc<[Rule]>,
}

/// The historical name of [`Require`]; scope requirements are one kind of it.
pub type RequireScope = Require;

/// The historical name of [`RequireService`].
pub type RequireScopeService<S> = RequireService<S>;

#[derive(Clone)]
enum Rule {
    Scopes {
        scopes: Arc<[String]>,
        any: bool,
    },
    Predicate {
        name: Arc<str>,
        check: Predicate,
    },
    DpopBound,
    /// RFC 9470: `acr` one of a set, and/or `auth_time` no older than `max_age` s.
    StepUp {
        acr: Option<Arc<[String]>>,
        max_age: Option<u64>,
    },
}

type Predicate = Arc<dyn Fn(&VerifiedToken) -> bool + Send + Sync>;

/// A scope requirement that cannot be built: no scope, or a string that is not an
/// RFC 6749 §3.3 scope token (printable ASCII without space, `"` or `\`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidScope {
    /// The requirement names no scope.
    #[error("a scope requirement needs at least one scope")]
    Empty,
    /// This string is not a scope token.
    #[error("{0:?} is not a valid OAuth scope token")]
    NotAScopeToken(String),
}

impl Require {
    /// The token must carry every one of `scopes`.
    ///
    /// # Panics
    ///
    /// As [`Require::try_all`] fails: `scopes` is empty or one is not a scope token.
    /// Use `try_all` for scopes that come from configuration.
    pub fn all<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::try_all(scopes).unwrap_or_else(|e| panic!("Require::all: {e}"))
    }

    /// The token must carry at least one of `scopes`.
    ///
    /// # Panics
    ///
    /// As [`Require::try_any`] fails.
    pub fn any<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::try_any(scopes).unwrap_or_else(|e| panic!("Require::any: {e}"))
    }

    /// The token must carry every one of `scopes`; an empty list or an invalid
    /// scope token is an error instead of a panic.
    ///
    /// ```
    /// use bearer_guard::{InvalidScope, Require};
    ///
    /// assert!(Require::try_all(["orders:read"]).is_ok());
    /// assert_eq!(
    ///     Require::try_all(["orders read"]).unwrap_err(),
    ///     InvalidScope::NotAScopeToken("orders read".into()),
    /// );
    /// ```
    pub fn try_all<I, S>(scopes: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::scopes(scopes, false)
    }

    /// The token must carry at least one of `scopes`; errors as [`Require::try_all`].
    pub fn try_any<I, S>(scopes: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::scopes(scopes, true)
    }

    fn scopes<I, S>(scopes: I, any: bool) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        if scopes.is_empty() {
            return Err(InvalidScope::Empty);
        }
        if let Some(bad) = scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(InvalidScope::NotAScopeToken(bad.clone()));
        }
        Ok(Self::rule(Rule::Scopes {
            scopes: scopes.into(),
            any,
        }))
    }

    /// The token must pass `check`. `name` identifies the rule in logs (it is not
    /// sent to the client); a refusal is 403 `insufficient_scope` with the fixed
    /// description "token does not meet the route's requirements".
    ///
    /// ```
    /// use bearer_guard::Require;
    ///
    /// // Only tokens issued to a client, not on behalf of a user.
    /// let machines_only = Require::predicate("client credentials", |t| t.subject() == t.client_id());
    /// ```
    pub fn predicate<F>(name: impl Into<Arc<str>>, check: F) -> Self
    where
        F: Fn(&VerifiedToken) -> bool + Send + Sync + 'static,
    {
        Self::rule(Rule::Predicate {
            name: name.into(),
            check: Arc::new(check),
        })
    }

    /// The token must be DPoP-bound (RFC 9449), so it reached the route with a
    /// valid proof: DPoP required on this route even where the guard allows
    /// plain bearer tokens. A plain token is refused 401 `invalid_token`
    /// ("DPoP-bound token required"), with the `DPoP` challenge.
    ///
    /// ```
    /// use bearer_guard::Require;
    ///
    /// let payments = Require::all(["payments:write"]).and(Require::dpop_bound());
    /// # let _ = payments;
    /// ```
    pub fn dpop_bound() -> Self {
        Self::rule(Rule::DpopBound)
    }

    /// The claim at `path` (see [`VerifiedToken::claim`]) must equal one of
    /// `values` (JSON equality: the string `"1"` is not the number `1`).
    ///
    /// ```
    /// use bearer_guard::Require;
    ///
    /// let acme_only = Require::claim_in("tenant", ["acme", "acme-eu"]);
    /// let level = Require::claim_in("clearance", [2, 3]);
    /// ```
    pub fn claim_in<I, V>(path: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<serde_json::Value>,
    {
        let path = path.into();
        let values: Vec<serde_json::Value> = values.into_iter().map(Into::into).collect();
        Self::predicate(format!("claim {path:?} in a set"), move |token| {
            token
                .claim(&path)
                .is_some_and(|claim| values.contains(&claim))
        })
    }

    /// The claim at `path` must be an array holding every one of `values`.
    ///
    /// ```
    /// use bearer_guard::Require;
    ///
    /// let admins = Require::claim_contains_all("realm_access.roles", ["admin"]);
    /// ```
    pub fn claim_contains_all<I, V>(path: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<serde_json::Value>,
    {
        Self::claim_contains(path.into(), values, false)
    }

    /// The claim at `path` must be an array holding at least one of `values`.
    pub fn claim_contains_any<I, V>(path: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<serde_json::Value>,
    {
        Self::claim_contains(path.into(), values, true)
    }

    fn claim_contains<I, V>(path: String, values: I, any: bool) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<serde_json::Value>,
    {
        let values: Vec<serde_json::Value> = values.into_iter().map(Into::into).collect();
        let name = format!(
            "claim {path:?} contains {}",
            if any { "any" } else { "all" }
        );
        Self::predicate(name, move |token| {
            let Some(serde_json::Value::Array(held)) = token.claim(&path) else {
                return false;
            };
            let has = |v: &serde_json::Value| held.contains(v);
            // An empty requirement is met by no token rather than by every one.
            !values.is_empty()
                && if any {
                    values.iter().any(has)
                } else {
                    values.iter().all(has)
                }
        })
    }

    /// Step-up (RFC 9470): the token's `acr` must be one of `values`; else 401
    /// `insufficient_user_authentication` with `acr_values="…"`.
    ///
    /// # Panics
    ///
    /// As [`Require::try_acr_in`] fails.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bearer_guard::Require;
    ///
    /// let payments = Require::acr_in(["mfa"]).and(Require::max_age(Duration::from_secs(300)));
    /// ```
    pub fn acr_in<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::try_acr_in(values).unwrap_or_else(|e| panic!("Require::acr_in: {e}"))
    }

    /// [`Require::acr_in`] with an error instead of a panic: the values must be
    /// non-empty and each a space-free token as scopes are (they are sent inside
    /// the quoted `acr_values` parameter).
    pub fn try_acr_in<I, S>(values: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        if values.is_empty() {
            return Err(InvalidScope::Empty);
        }
        if let Some(bad) = values.iter().find(|s| !is_scope_token(s)) {
            return Err(InvalidScope::NotAScopeToken(bad.clone()));
        }
        Ok(Self::rule(Rule::StepUp {
            acr: Some(values.into()),
            max_age: None,
        }))
    }

    /// Step-up (RFC 9470): the token's `auth_time` must be at most `max_age` old
    /// by the guard's clock (whole seconds); a token without `auth_time` fails it.
    /// Else 401 `insufficient_user_authentication` with `max_age=…`.
    pub fn max_age(max_age: std::time::Duration) -> Self {
        Self::rule(Rule::StepUp {
            acr: None,
            max_age: Some(max_age.as_secs()),
        })
    }

    /// Both `self` and `other`, checked in that order.
    pub fn and(self, other: Require) -> Self {
        let rules: Vec<Rule> = self
            .rules
            .iter()
            .chain(other.rules.iter())
            .cloned()
            .collect();
        Require {
            rules: rules.into(),
        }
    }

    fn rule(rule: Rule) -> Self {
        Require {
            rules: Arc::new([rule]),
        }
    }

    /// Whether `token` satisfies the requirement.
    pub fn is_satisfied_by(&self, token: &VerifiedToken) -> bool {
        self.check(token).is_ok()
    }

    /// `Ok` when `token` satisfies every rule, else the refusal of the first that
    /// it does not. A [`Require::max_age`] rule reads the system clock here; the
    /// layer uses the guard's.
    pub fn check(&self, token: &VerifiedToken) -> Result<(), AuthError> {
        self.check_at(token, crate::clock::SystemClock.unix_seconds())
    }

    /// [`Require::check`] at `now` (Unix seconds).
    pub fn check_at(&self, token: &VerifiedToken, now: u64) -> Result<(), AuthError> {
        for rule in self.rules.iter() {
            match rule {
                Rule::Scopes { scopes, any } => {
                    let has = |s: &String| token.scopes().contains(s);
                    let met = if *any {
                        scopes.iter().any(has)
                    } else {
                        scopes.iter().all(has)
                    };
                    if !met {
                        tracing::debug!(sub = token.subject(), required = ?scopes, any, "insufficient scope");
                        return Err(AuthError::InsufficientScope {
                            required: Arc::clone(scopes),
                        });
                    }
                }
                Rule::DpopBound => {
                    if !matches!(
                        token.binding(),
                        Binding::Dpop { .. } | Binding::DpopAndCertificate { .. }
                    ) {
                        tracing::debug!(sub = token.subject(), "route requires DPoP");
                        return Err(AuthError::InvalidToken(TokenProblem::Binding(
                            BindingProblem::DpopRequired,
                        )));
                    }
                }
                Rule::Predicate { name, check } => {
                    if !check(token) {
                        tracing::debug!(sub = token.subject(), rule = %name, "route requirement not met");
                        return Err(AuthError::RequirementNotMet {
                            requirement: Arc::clone(name),
                        });
                    }
                }
                Rule::StepUp { acr, max_age } => {
                    let acr_met = acr.as_ref().is_none_or(|acr| {
                        token
                            .claim("acr")
                            .is_some_and(|v| v.as_str().is_some_and(|v| acr.iter().any(|a| a == v)))
                    });
                    let age_met = max_age.is_none_or(|max_age| {
                        token
                            .claim("auth_time")
                            .and_then(|t| t.as_f64())
                            .is_some_and(
                                // A future auth_time counts as age 0; exp and iat bound it.
                                |auth_time| (now as f64 - auth_time) <= max_age as f64,
                            )
                    });
                    if !(acr_met && age_met) {
                        tracing::debug!(sub = token.subject(), ?acr, ?max_age, "step-up required");
                        return Err(AuthError::InsufficientUserAuthentication {
                            acr_values: acr.clone(),
                            max_age: *max_age,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The refusal for a request whose verified token misses the requirement.
    pub(crate) fn refusal(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<Response<Bytes>> {
        let Some(token) = extensions.get::<VerifiedToken>() else {
            return Some(match extensions.get::<Anonymous>() {
                // The guard ran in optional mode and the request had no credentials.
                Some(Anonymous(answerer)) => answerer
                    .responder
                    .respond_to(&AuthError::MissingToken, headers),
                None => {
                    tracing::error!(
                        "Require found no verified token: is the Guard layer applied outside this route?"
                    );
                    crate::response::misconfigured(is_grpc(headers))
                }
            });
        };
        let answerer = token.answerer();
        let now = match answerer {
            Some(answerer) => answerer.clock.unix_seconds(),
            None => crate::clock::SystemClock.unix_seconds(),
        };
        let error = self.check_at(token, now).err()?;
        Some(match answerer {
            Some(answerer) => answerer.responder.respond_to(&error, headers),
            None => Responder::default().respond(&error, is_grpc(headers)),
        })
    }
}

impl fmt::Debug for Require {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for rule in self.rules.iter() {
            match rule {
                Rule::Scopes { scopes, any: true } => list.entry(&format_args!("any{scopes:?}")),
                Rule::Scopes { scopes, any: false } => list.entry(&format_args!("all{scopes:?}")),
                Rule::Predicate { name, .. } => list.entry(&format_args!("predicate({name:?})")),
                Rule::DpopBound => list.entry(&format_args!("dpop_bound")),
                Rule::StepUp { acr, max_age } => {
                    list.entry(&format_args!("step_up(acr {acr:?}, max_age {max_age:?})"))
                }
            };
        }
        list.finish()
    }
}

impl<S> Layer<S> for Require {
    type Service = RequireService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            require: self.clone(),
        }
    }
}

/// The service made by the [`Require`] layer.
#[derive(Clone, Debug)]
pub struct RequireService<S> {
    inner: S,
    require: Require,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<GuardBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.require.refusal(req.headers(), req.extensions()) {
            None => ResponseFuture {
                state: State::Inner {
                    future: self.inner.call(req),
                },
            },
            Some(response) => ResponseFuture {
                state: State::Refused {
                    response: Some(response),
                },
            },
        }
    }
}

pin_project! {
    /// The future of [`RequireService`]: no allocation on either path.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response<Bytes>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GuardBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|resp| resp.map(GuardBody::inner))),
            StateProj::Refused { response } => {
                let response = response
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Ok(response.map(GuardBody::full)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "not a valid OAuth scope token")]
    fn all_panics_on_scopes_with_quotes() {
        Require::all(["a\"b"]);
    }

    #[test]
    #[should_panic(expected = "at least one scope")]
    fn any_panics_on_empty_requirements() {
        Require::any(Vec::<String>::new());
    }

    #[test]
    fn try_constructors_return_errors_instead_of_panicking() {
        assert_eq!(
            Require::try_any(Vec::<String>::new()).unwrap_err(),
            InvalidScope::Empty
        );
        assert_eq!(
            Require::try_all(["ok", "not ok"]).unwrap_err(),
            InvalidScope::NotAScopeToken("not ok".into())
        );
        assert!(Require::try_any(["a", "b:c"]).is_ok());
    }

    #[test]
    fn missing_token_without_a_guard_is_a_loud_500() {
        let r = Require::all(["a"])
            .refusal(&http::HeaderMap::new(), &http::Extensions::new())
            .expect("refused");
        assert_eq!(r.status(), 500);
    }
}
