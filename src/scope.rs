//! Per-route scope requirements.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::claims::VerifiedToken;
use crate::error::{AuthError, Responder, is_grpc};
use crate::layer::{GuardBody, GuardHandle};

/// [`RequireScope`]: per-route scope requirements, checked after [`GuardLayer`].
///
/// A route that needs scopes adds `RequireScope::all([..])` (every scope) or
/// `RequireScope::any([..])` (at least one) as a route layer. A token without them
/// gets 403 `insufficient_scope` naming the scopes; a request that reaches the
/// layer with no verified token at all (the guard layer is missing: a
/// misconfiguration) gets 401 and an error in the log, never a pass.
///
/// ```
/// use axum::{Router, routing::{get, post}};
/// use bearer_guard::{Guard, RequireScope};
///
/// # fn app(guard: Guard) -> Router {
/// Router::new()
///     .route("/orders", get(|| async { "list" })
///         .route_layer(RequireScope::any(["orders:read", "orders:admin"])))
///     .route("/orders/new", post(|| async { "created" })
///         .route_layer(RequireScope::all(["orders:write"])))
///     .layer(guard.layer())
/// # }
/// ```
///
/// [`GuardLayer`]: crate::GuardLayer
#[derive(Clone, Debug)]
pub struct RequireScope {
    scopes: Arc<[String]>,
    any: bool,
}

impl RequireScope {
    /// The token must carry every one of `scopes`.
    ///
    /// # Panics
    ///
    /// If `scopes` is empty or a scope is not a valid scope token (RFC 6749 §3.3:
    /// printable ASCII without space, `"` or `\`). This is a programming error,
    /// caught when the router is built.
    pub fn all<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(scopes, false)
    }

    /// The token must carry at least one of `scopes`.
    ///
    /// # Panics
    ///
    /// As [`RequireScope::all`].
    pub fn any<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(scopes, true)
    }

    fn new<I, S>(scopes: I, any: bool) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        assert!(!scopes.is_empty(), "RequireScope needs at least one scope");
        for s in &scopes {
            assert!(is_scope_token(s), "{s:?} is not a valid OAuth scope token");
        }
        RequireScope {
            scopes: scopes.into(),
            any,
        }
    }

    /// Whether `token` satisfies the requirement.
    pub fn is_satisfied_by(&self, token: &VerifiedToken) -> bool {
        let has = |s: &String| token.scopes().contains(s);
        if self.any {
            self.scopes.iter().any(has)
        } else {
            self.scopes.iter().all(has)
        }
    }

    /// The refusal for a request whose verified token misses the requirement.
    pub(crate) fn refusal(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<Response<Bytes>> {
        let Some(token) = extensions.get::<VerifiedToken>() else {
            tracing::error!(
                "RequireScope found no verified token: is the Guard layer applied outside this route?"
            );
            return Some(Responder::default().respond(&AuthError::MissingToken, is_grpc(headers)));
        };
        if self.is_satisfied_by(token) {
            return None;
        }
        let grpc = is_grpc(headers);
        tracing::debug!(
            sub = token.subject(),
            required = ?self.scopes,
            any = self.any,
            "insufficient scope"
        );
        let error = AuthError::InsufficientScope {
            required: Arc::clone(&self.scopes),
        };
        Some(match extensions.get::<GuardHandle>() {
            Some(handle) => handle.0.inner.responder.respond_to(&error, headers),
            None => Responder::default().respond(&error, grpc),
        })
    }
}

impl<S> Layer<S> for RequireScope {
    type Service = RequireScopeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopeService {
            inner,
            require: self.clone(),
        }
    }
}

/// The service made by the [`RequireScope`] layer.
#[derive(Clone, Debug)]
pub struct RequireScopeService<S> {
    inner: S,
    require: RequireScope,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopeService<S>
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
    /// The future of [`RequireScopeService`]: no allocation on either path.
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

/// An RFC 6749 §3.3 scope-token: printable ASCII without space, `"` or `\`.
/// Configuration readers check with it so [`RequireScope`] never panics on input.
pub(crate) fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "not a valid OAuth scope token")]
    fn refuses_scopes_with_quotes() {
        RequireScope::all(["a\"b"]);
    }

    #[test]
    #[should_panic(expected = "at least one scope")]
    fn refuses_empty_requirements() {
        RequireScope::any(Vec::<String>::new());
    }

    #[test]
    fn missing_token_is_a_loud_401() {
        let r = RequireScope::all(["a"])
            .refusal(&http::HeaderMap::new(), &http::Extensions::new())
            .expect("refused");
        assert_eq!(r.status(), 401);
    }
}
