//! Kept-alive HTTP/1.1 connections to one plain `http://` upstream (`https://`
//! and `h2c://` upstreams use hyper-util's pooled client, `upstream.rs`).
//!
//! Most proxied requests go to one upstream over HTTP/1.1, and a general pool
//! (a map keyed by scheme and authority, hashed with SipHash per request, a
//! checkout future, a waiter list) cost about as much per request as the
//! request's own encoding. Here a request pops the most recently used idle
//! connection (LIFO: the warmest one, and idle ones at the bottom age out),
//! sends on it, and the connection goes back when the response body has been
//! relayed whole ([`Checkin`], held by the response body).
//!
//! A connection is never reused after a response the client did not read to
//! its end, an upgrade (its stream belongs to the spliced connection), or an
//! error; hyper closes it. One that the upstream closed while idle is found
//! closed and dropped at checkout; if it closes just as a request is sent, the
//! request comes back unsent and goes out on another connection (only then: a
//! request that may have been written is never sent twice). A connection idle
//! longer than [`IDLE_TIMEOUT`] is not reused: the next checkout closes it
//! (nothing runs in between: an idle pool's connections stay open until the
//! upstream closes them or a request comes). At most [`MAX_IDLE`] are kept.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::Either;

use http::uri::Authority;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::body::BoxError;
use crate::sync::lock;

/// An idle connection older than this is closed at the next checkout rather
/// than reused: below the keep-alive timeouts of common servers (nginx 75 s;
/// Node's 5 s is shorter, and such a connection is found closed), so a
/// connection is rarely reused just as the upstream closes it.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle connections kept per upstream, beyond which a returned one is closed.
pub(crate) const MAX_IDLE: usize = 256;

type Sender = SendRequest<Limited<Incoming>>;
type Outgoing = Request<Limited<Incoming>>;

/// An upstream's answer and the connection it came on, or why there is none.
pub(crate) type Sent = Result<(Response<Incoming>, Checkin), BoxError>;

/// No answer (no response head) came within `upstream_timeout_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

type Slow = Pin<Box<dyn Future<Output = Result<Sent, TimedOut>> + Send>>;

/// A kept-alive connection, and the timer its requests wait on for their
/// answer. The timer goes with the connection so that each request only moves
/// its deadline later (tokio extends a registered timer in place), where one
/// timer per request was made, armed and removed each time (a proxied request
/// went from 35,745 to 35,119 instructions, `PROFILE=callgrind MODES=public
/// bash benches/gateway_profile.sh`, 47746e6 against 33cb28a).
struct Conn {
    sender: Sender,
    timer: Pin<Box<Sleep>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The kept-alive connections to one upstream.
pub(crate) struct Http1Pool {
    authority: Authority,
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Pool")
            .field("authority", &self.authority)
            .field("idle", &lock(&self.idle).len())
            .finish()
    }
}

impl Http1Pool {
    pub(crate) fn new(authority: Authority) -> Arc<Http1Pool> {
        // An authority is a valid header value (it was parsed from a URL).
        let host = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Arc::new(Http1Pool {
            authority,
            host,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `req` (origin-form target; `Host` is set to the upstream's) on a
    /// kept-alive connection or a new one, and waits for the answer until
    /// `deadline`. The [`Checkin`] returns the connection when the response
    /// body has been relayed: put it in the body.
    ///
    /// With a kept-alive connection ready (the usual case), the request is
    /// handed to it at once and the future only waits for the answer; a new
    /// connection, or a retry, is a boxed future of its own. `now` is the
    /// time, read by the caller.
    pub(crate) fn send(
        self: &Arc<Self>,
        mut req: Outgoing,
        now: Instant,
        deadline: Instant,
    ) -> impl Future<Output = Result<Sent, TimedOut>> + Send + 'static {
        req.headers_mut().insert(header::HOST, self.host.clone());
        let Some(mut conn) = self.checkout(now) else {
            return Either::Right(Arc::clone(self).send_on_any(req, deadline));
        };
        conn.timer.as_mut().reset(deadline);
        let exchange = Exchange {
            sent: conn.sender.try_send_request(req),
            conn: Some(conn),
        };
        let pool = Arc::clone(self);
        Either::Left(exchange.then(move |outcome| match outcome {
            Outcome::Answered(response, conn) => {
                let checkin = Checkin { pool, conn };
                Either::Left(std::future::ready(Ok(Ok((response, checkin)))))
            }
            // Never written: the kept-alive connection was closed under it.
            // Another one (or a new one) gets it, within the same deadline.
            Outcome::Unsent(unsent) => Either::Right(pool.send_on_any(unsent, deadline)),
            Outcome::Failed(e) => Either::Left(std::future::ready(Ok(Err(e)))),
            Outcome::TimedOut => Either::Left(std::future::ready(Err(TimedOut))),
        }))
    }

    /// [`send`](Self::send) on the next ready connection, else a new one.
    fn send_on_any(self: Arc<Self>, req: Outgoing, deadline: Instant) -> Slow {
        let sent = tokio::time::timeout_at(deadline, self.send_on_any_untimed(req));
        Box::pin(sent.map(|sent| sent.map_err(|_| TimedOut)))
    }

    async fn send_on_any_untimed(self: Arc<Self>, mut req: Outgoing) -> Sent {
        loop {
            let (mut conn, reused) = match self.checkout(Instant::now()) {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            match conn.sender.try_send_request(req).await {
                Ok(response) => {
                    let checkin = Checkin {
                        pool: Arc::clone(&self),
                        conn: Some(conn),
                    };
                    return Ok((response, checkin));
                }
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
    }

    /// The most recently returned connection that is open and ready.
    fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = lock(&self.idle);
        // The oldest are at the front: drop those idle too long.
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) > IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        // A returned connection is ready as soon as hyper has seen its response
        // end, which is before the body's end reached us; one that is not (yet)
        // is kept for later rather than closed, and a closed one is dropped.
        let mut busy = Vec::new();
        let found = loop {
            match idle.pop() {
                None => break None,
                Some(i) if i.conn.sender.is_closed() => {}
                Some(i) if i.conn.sender.is_ready() => break Some(i.conn),
                Some(i) => busy.push(i),
            }
        };
        idle.extend(busy.into_iter().rev());
        found
    }

    async fn connect(&self) -> Result<Conn, BoxError> {
        let stream = TcpStream::connect(self.authority.as_str()).await?;
        // A request's last small write is not held back by Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on an upstream connection");
        }
        // One flat write per request, as on the client side (listener.rs).
        let (sender, connection) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            // Upgrades (WebSocket) take the connection over from hyper.
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Conn {
            sender,
            // Set for each request (`send`); a timer is only registered once polled.
            timer: Box::pin(tokio::time::sleep_until(Instant::now() + IDLE_TIMEOUT)),
        })
    }

    fn checkin(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        lock(&self.idle).len()
    }
}

pin_project! {
    /// One request on a kept-alive connection: its answer, or its deadline on
    /// the connection's timer.
    struct Exchange<F> {
        #[pin]
        sent: F,
        // Taken when the exchange ends (it is not polled again then).
        conn: Option<Conn>,
    }
}

/// How an [`Exchange`] ended.
enum Outcome {
    /// With the connection it came on, for the [`Checkin`].
    Answered(Response<Incoming>, Option<Conn>),
    /// The connection was closed before the request was written: it can go
    /// out on another.
    Unsent(Outgoing),
    Failed(BoxError),
    /// The connection goes with the exchange (hyper closes it): its answer,
    /// if one comes, would be to a request nobody waits for.
    TimedOut,
}

impl<F> Future for Exchange<F>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError<Outgoing>>>,
{
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self.project();
        let Some(conn) = this.conn.as_mut() else {
            // Ended already: never ready again.
            return Poll::Pending;
        };
        let sent = match this.sent.poll(cx) {
            Poll::Ready(sent) => sent,
            Poll::Pending => match conn.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    *this.conn = None;
                    return Poll::Ready(Outcome::TimedOut);
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        // The connection goes with the answer, or is closed with a failure.
        let conn = this.conn.take();
        Poll::Ready(match sent {
            Ok(response) => Outcome::Answered(response, conn),
            Err(mut failed) => match failed.take_message() {
                Some(unsent) => Outcome::Unsent(unsent),
                None => Outcome::Failed(failed.into_error().into()),
            },
        })
    }
}

/// A connection lent to one response: returned to its pool by [`Checkin::done`]
/// once the response body ended, closed when dropped before that.
pub(crate) struct Checkin {
    pool: Arc<Http1Pool>,
    conn: Option<Conn>,
}

impl Checkin {
    /// The response body was relayed to its end: the connection can serve the
    /// next request.
    pub(crate) fn done(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }
}

impl std::fmt::Debug for Checkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkin").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt as _, Full};
    use tokio::net::TcpListener;

    use super::*;

    /// A real HTTP/1.1 server on loopback counting the connections it accepted;
    /// each answers `hello` (and closes after its first response when
    /// `close_after_one`), except to `/hang`, never answered.
    async fn upstream(close_after_one: bool) -> (Authority, Arc<AtomicUsize>) {
        let (listener, authority) = bound().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        if req.uri().path() == "/hang" {
                            std::future::pending::<()>().await;
                        }
                        let host = req.headers().get(header::HOST).cloned();
                        let mut response =
                            Response::new(Full::new(bytes::Bytes::from_static(b"hello")));
                        if let Some(host) = host {
                            response.headers_mut().insert("x-seen-host", host);
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close_after_one)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (authority, accepted)
    }

    /// An empty request body of the type the gateway sends: an `Incoming`
    /// cannot be made by hand, so one is taken from a real request.
    async fn empty_body() -> Limited<Incoming> {
        let (listener, authority) = bound().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Mutex::new(Some(tx));
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                if let Some(tx) = lock(&tx).take() {
                    let _ = tx.send(req.into_body());
                }
                async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(bytes::Bytes::new())))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let stream = TcpStream::connect(authority.as_str())
            .await
            .expect("connect");
        let (mut sender, conn) = http1::handshake::<_, Full<bytes::Bytes>>(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .uri("/")
            .header(header::HOST, "x")
            .body(Full::default())
            .expect("request");
        tokio::spawn(async move { sender.send_request(req).await });
        Limited::new(rx.await.expect("a body"), 1024)
    }

    async fn bound() -> (TcpListener, Authority) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr.to_string().parse().expect("authority"))
    }

    /// One GET whose body is read whole, its connection then returned: the
    /// response's headers and body.
    async fn read_whole(pool: &Arc<Http1Pool>) -> (http::HeaderMap, bytes::Bytes) {
        let (response, checkin) = get(pool).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body");
        checkin.done();
        (parts.headers, body.to_bytes())
    }

    /// A GET of `path` with the gateway's request body type.
    async fn request(path: &str) -> Outgoing {
        Request::builder()
            .uri(path)
            .body(empty_body().await)
            .expect("request")
    }

    /// `req` sent on `pool`, waiting at most `wait` for the answer.
    async fn send(pool: &Arc<Http1Pool>, req: Outgoing, wait: Duration) -> Result<Sent, TimedOut> {
        let now = Instant::now();
        pool.send(req, now, now + wait).await
    }

    async fn get(pool: &Arc<Http1Pool>) -> (Response<Incoming>, Checkin) {
        send(pool, request("/x").await, Duration::from_secs(30))
            .await
            .expect("in time")
            .expect("sent")
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_was_read_whole() {
        let (authority, accepted) = upstream(false).await;
        let pool = Http1Pool::new(authority.clone());
        for _ in 0..3 {
            let (headers, body) = read_whole(&pool).await;
            assert_eq!(headers["x-seen-host"], authority.as_str());
            assert_eq!(body, "hello");
            assert_eq!(pool.idle_count(), 1);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for three requests"
        );
    }

    #[tokio::test]
    async fn a_kept_alive_connections_timer_times_out_its_request_and_it_is_not_reused() {
        let (authority, accepted) = upstream(false).await;
        let pool = Http1Pool::new(authority);
        read_whole(&pool).await;
        assert_eq!(pool.idle_count(), 1);
        for round in 1..=2 {
            // On the kept-alive connection, so on its own timer.
            let sent = send(&pool, request("/hang").await, Duration::from_millis(100)).await;
            assert!(matches!(sent, Err(TimedOut)), "round {round}");
            assert_eq!(pool.idle_count(), 0, "the timed-out connection is gone");
            // The next request opens a connection, and keeps it.
            read_whole(&pool).await;
            assert_eq!(accepted.load(Ordering::SeqCst), 1 + round);
            // A timer set again after an answer still allows the next one.
            read_whole(&pool).await;
            assert_eq!(accepted.load(Ordering::SeqCst), 1 + round);
        }
    }

    #[tokio::test]
    async fn a_response_not_read_to_its_end_closes_its_connection() {
        let (authority, accepted) = upstream(false).await;
        let pool = Http1Pool::new(authority);
        let (response, checkin) = get(&pool).await;
        drop((response, checkin));
        assert_eq!(pool.idle_count(), 0);
        read_whole(&pool).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        let (authority, accepted) = upstream(true).await;
        let pool = Http1Pool::new(authority);
        for _ in 0..3 {
            read_whole(&pool).await;
        }
        // Each response said `Connection: close`: never kept, never reused.
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_closed_without_notice_is_replaced() {
        // An upstream that answers as if keeping the connection alive, then
        // closes it: whether the pool sees the close before the next request
        // or only when sending it, every request is answered.
        let (listener, authority) = bound().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                    .await;
                drop(stream);
            }
        });
        let pool = Http1Pool::new(authority);
        for _ in 0..20 {
            assert_eq!(read_whole(&pool).await.1, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error() {
        let (listener, authority) = bound().await;
        drop(listener);
        let pool = Http1Pool::new(authority);
        let sent = send(&pool, request("/").await, Duration::from_secs(30)).await;
        assert!(sent.expect("in time").is_err());
    }
}
