//! The tower layer that validates every request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::claims::VerifiedToken;
use crate::error::AuthError;
use crate::guard::Guard;
use crate::response::{Answerer, DPOP_NONCE};
use crate::sender::ClientCertificate;
use crate::token::Scheme;
use crate::validate::Early;

/// Left in the extensions of a request an optional guard let through without
/// credentials, so that a [`Require`] or an extractor answers it with 401 and
/// this guard's challenge, not as a misconfiguration. (An admitted request's
/// [`VerifiedToken`] carries the same [`Answerer`] itself: one extension.)
///
/// [`Require`]: crate::Require
#[derive(Clone)]
pub(crate) struct Anonymous(pub Arc<Answerer>);

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
    /// A layer that requires credentials (see [`optional`](Self::optional)).
    pub(crate) fn new(guard: Guard) -> Self {
        GuardLayer {
            guard,
            credentials: Credentials::Required,
        }
    }

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
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<GuardBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The RFC 9728 document is public: answered here, before any token check.
        if let Some(metadata) = &self.guard.inner.resource_metadata
            && let Some(response) = metadata.respond(req.method(), req.uri().path())
        {
            return ResponseFuture::refused(response);
        }
        // Most traffic is a reused token: the cache answers it here, and the inner
        // service is called at once, with no allocation and nothing awaited.
        let certificate = req.extensions().get::<ClientCertificate>();
        let (scheme, token) = match self
            .guard
            .validate_request_early(req.headers(), certificate)
        {
            Early::Done(result) => {
                return match self.refusal(result, &mut req) {
                    None => ResponseFuture::inner(self.inner.call(req), None),
                    Some(response) => ResponseFuture::refused(response),
                };
            }
            Early::Verify(scheme, token) => (scheme, token.to_owned()),
        };
        // What the verification needs of the request, owned by its future: the
        // method, URI and headers only for a DPoP proof.
        let certificate = certificate.cloned();
        let request = (scheme == Scheme::Dpop).then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            )
        });
        // The clone is the one that was not driven to readiness; keep the ready one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        ResponseFuture {
            state: State::Verifying {
                verify: Box::pin(async move {
                    let request = request.as_ref().map(|(m, u, h)| (m, u, h));
                    guard
                        .verify_request(scheme, &token, request, certificate.as_ref())
                        .await
                }),
                pending: Some(Pending {
                    req,
                    inner,
                    service: self.clone_config(),
                }),
            },
        }
    }
}

impl<S> GuardService<S> {
    /// A copy of the settings without the inner service, for the verifying future.
    fn clone_config(&self) -> GuardService<()> {
        GuardService {
            inner: (),
            guard: self.guard.clone(),
            credentials: self.credentials,
        }
    }

    /// Puts the outcome into the request and returns `None`, or returns the
    /// refusal.
    fn refusal<B>(
        &self,
        result: Result<VerifiedToken, AuthError>,
        req: &mut Request<B>,
    ) -> Option<Response<Bytes>> {
        match result {
            Ok(token) => {
                req.extensions_mut().insert(token);
                None
            }
            Err(AuthError::MissingToken) if self.credentials == Credentials::Optional => {
                req.extensions_mut()
                    .insert(Anonymous(Arc::clone(&self.guard.inner.answerer)));
                None
            }
            Err(error) => Some(self.guard.error_response(&error, req.headers())),
        }
    }
}

struct Pending<S, B> {
    req: Request<B>,
    inner: S,
    service: GuardService<()>,
}

pin_project! {
    /// The future of [`GuardService`]: the inner service's future directly when
    /// the token was answered without waiting (a cache hit, or a refusal of the
    /// credentials); a boxed verification first otherwise.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Verifying {
            verify: BoxFuture<Result<VerifiedToken, AuthError>>,
            pending: Option<Pending<S, B>>,
        },
        Inner { #[pin] future: S::Future, nonce: Option<http::HeaderValue> },
        Refused { response: Option<Response<Bytes>> },
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    fn inner(future: S::Future, nonce: Option<http::HeaderValue>) -> Self {
        ResponseFuture {
            state: State::Inner { future, nonce },
        }
    }

    fn refused(response: Response<Bytes>) -> Self {
        ResponseFuture {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<GuardBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Inner { future, nonce } => {
                    let mut response = std::task::ready!(future.poll(cx))?;
                    if let Some(nonce) = nonce.take() {
                        response.headers_mut().insert(DPOP_NONCE, nonce);
                    }
                    return Poll::Ready(Ok(response.map(GuardBody::inner)));
                }
                StateProj::Refused { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(GuardBody::full)));
                }
                StateProj::Verifying { verify, pending } => {
                    let result = std::task::ready!(verify.as_mut().poll(cx));
                    let Pending {
                        mut req,
                        mut inner,
                        service,
                    } = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let nonce = match &result {
                        Ok(token) => service.guard.inner.success_nonce(token),
                        Err(_) => None,
                    };
                    match service.refusal(result, &mut req) {
                        None => State::Inner {
                            future: inner.call(req),
                            nonce,
                        },
                        Some(response) => State::Refused {
                            response: Some(response),
                        },
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
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
