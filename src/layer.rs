//! The tower layer that validates every request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::Guard;
use crate::error::AuthError;

/// The guard's handle, left in the extensions so that [`RequireScope`] and the
/// axum extractors answer with the same realm and error hook.
///
/// [`RequireScope`]: crate::RequireScope
#[derive(Clone)]
pub(crate) struct GuardHandle(pub Guard);

impl Guard {
    /// The tower layer that validates every request with this guard.
    pub fn layer(&self) -> GuardLayer {
        GuardLayer {
            guard: self.clone(),
            credentials: Credentials::Required,
        }
    }
}

/// [`GuardLayer`]: validates every request's bearer token before the inner service
/// sees it.
///
/// On success the [`VerifiedToken`](crate::VerifiedToken) goes into the request's
/// extensions; on failure the inner service is not called and the client gets the
/// RFC 6750 answer (see [`error`](crate::error)). The service is generic over the
/// request and response bodies, so the same layer works under axum, plain hyper
/// and tonic.
///
/// ```
/// use axum::{Router, routing::get};
/// use bearer_guard::{Guard, Issuer, VerifiedToken};
///
/// # fn app(jwks: &str) -> Result<Router, bearer_guard::BuildError> {
/// let guard = Guard::builder()
///     .issuer(Issuer::new("https://login.example.com").jwks_document(jwks))
///     .audience("https://api.example.com")
///     .build()?;
/// let app = Router::new()
///     .route("/me", get(|token: VerifiedToken| async move {
///         token.subject().unwrap_or_default().to_owned()
///     }))
///     .layer(guard.layer());
/// # Ok(app) }
/// ```
#[derive(Clone, Debug)]
pub struct GuardLayer {
    guard: Guard,
    credentials: Credentials,
}

/// Whether a request must bring credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credentials {
    Required,
    /// No credentials: pass without a token. Bad credentials: refused as ever.
    Optional,
}

impl GuardLayer {
    /// Lets a request **without** credentials through, with no
    /// [`VerifiedToken`](crate::VerifiedToken) in its extensions, while a request
    /// with bad credentials (an invalid, expired or malformed token) is still
    /// refused. Handlers then take `Option<VerifiedToken>`, which is `None` for
    /// anonymous requests; a [`Require`](crate::Require) on a route, or a handler
    /// that takes `VerifiedToken`, answers an anonymous request with 401 and the
    /// challenge.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use bearer_guard::{Guard, VerifiedToken};
    ///
    /// async fn greet(token: Option<VerifiedToken>) -> String {
    ///     match token {
    ///         Some(t) => format!("hello {}", t.subject().unwrap_or("?")),
    ///         None => "hello stranger".to_owned(),
    ///     }
    /// }
    ///
    /// # fn app(guard: Guard) -> Router {
    /// Router::new().route("/", get(greet)).layer(guard.layer().optional())
    /// # }
    /// ```
    pub fn optional(mut self) -> Self {
        self.credentials = Credentials::Optional;
        self
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            guard: self.guard.clone(),
            credentials: self.credentials,
        }
    }
}

/// Validates the bearer token, then calls the inner service.
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    inner: S,
    guard: Guard,
    credentials: Credentials,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GuardService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<GuardBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone is the one that was not driven to readiness; keep the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        let credentials = self.credentials;
        Box::pin(async move {
            let verdict = guard
                .validate_request(req.method(), req.uri(), req.headers(), req.extensions())
                .await;
            match verdict {
                Ok(token) => {
                    let nonce = crate::sender::success_nonce(&guard, &token);
                    let extensions = req.extensions_mut();
                    extensions.insert(token);
                    extensions.insert(GuardHandle(guard));
                    let mut response = inner.call(req).await?;
                    if let Some(nonce) = nonce {
                        response
                            .headers_mut()
                            .insert(crate::error::DPOP_NONCE, nonce);
                    }
                    Ok(response.map(GuardBody::inner))
                }
                Err(AuthError::MissingToken) if credentials == Credentials::Optional => {
                    // The handle without a token: requirements and extractors then
                    // answer 401 with this guard's challenge, not a 500.
                    req.extensions_mut().insert(GuardHandle(guard));
                    let response = inner.call(req).await?;
                    Ok(response.map(GuardBody::inner))
                }
                Err(error) => {
                    let response = guard.error_response(&error, req.headers());
                    Ok(response.map(GuardBody::full))
                }
            }
        })
    }
}

pin_project! {
    /// The response body of the guard's services: the inner service's body, or
    /// the small body of a refusal.
    pub struct GuardBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> GuardBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        GuardBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        GuardBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for GuardBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { body } => f.debug_tuple("GuardBody::Inner").field(body).finish(),
            Kind::Full { data } => f.debug_tuple("GuardBody::Full").field(data).finish(),
        }
    }
}

impl<B> Body for GuardBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
