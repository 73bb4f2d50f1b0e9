//! The upstream's response body, with `upstream_body_timeout_secs`: the longest
//! the gateway waits for the upstream's next piece of body (or its end) once the
//! headers arrived. Only time spent waiting on the upstream counts, not time the
//! client takes to read, so a long download or a slow reader is never cut.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::pool::Checkin;

/// The error of a body relayed by the gateway.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream sent nothing for `upstream_body_timeout_secs` in the middle of
/// its body; the client's response is aborted (HTTP/1.1: the connection is
/// closed; HTTP/2: the stream is reset), never completed as if whole.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's response body stalled past upstream_body_timeout_secs")]
pub(crate) struct UpstreamBodyTimeout;

pin_project! {
    pub(crate) struct UpstreamBody {
        #[pin]
        inner: Incoming,
        // Made when the gateway first waits: most bodies never make it wait
        // (they came with the head), and pay for no timer.
        stall: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        waiting: bool,
        // The pooled connection the body comes on, returned at its end.
        connection: Returned,
    }
}

impl UpstreamBody {
    /// `checkin` returns the body's connection to its pool once the body ended
    /// (`None`: hyper-util's client pools it). The clock is read, and the
    /// timer set, when the gateway first waits.
    pub(crate) fn new(inner: Incoming, timeout: Duration, checkin: Option<Checkin>) -> Self {
        let mut connection = Returned(checkin);
        if inner.is_end_stream() {
            // No body (HEAD, 204, 304, `Content-Length: 0`): nothing polls it.
            connection.ended();
        }
        UpstreamBody {
            inner,
            stall: None,
            timeout,
            waiting: false,
            connection,
        }
    }
}

/// The connection a body is read from; dropped (so closed) with the body
/// unless [`Returned::ended`] returned it first.
struct Returned(Option<Checkin>);

impl Returned {
    fn ended(&mut self) {
        if let Some(checkin) = self.0.take() {
            checkin.done();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                match &frame {
                    // The end, or the last frame (hyper asks no further then).
                    None => this.connection.ended(),
                    Some(Ok(_)) if this.inner.is_end_stream() => this.connection.ended(),
                    Some(_) => {}
                }
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                if !*this.waiting {
                    // The clock starts when the gateway starts waiting.
                    *this.waiting = true;
                    let due = Instant::now() + *this.timeout;
                    match this.stall.as_mut() {
                        Some(stall) => stall.as_mut().reset(due),
                        None => *this.stall = Some(Box::pin(tokio::time::sleep_until(due))),
                    }
                }
                let stall = this.stall.as_mut().map(|stall| stall.as_mut().poll(cx));
                match stall.unwrap_or(Poll::Pending) {
                    Poll::Ready(()) => {
                        tracing::warn!("upstream response body timed out; response aborted");
                        metrics::counter!("bearer_guard_gateway_upstream_body_timeouts_total")
                            .increment(1);
                        Poll::Ready(Some(Err(UpstreamBodyTimeout.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
