//! Accepting connections for the gateway (and the ext-authz HTTP listeners):
//! `TCP_NODELAY`, the connection limit, the header read and idle timeouts, the
//! request header size limit, and a graceful shutdown that connections without a
//! request in progress do not hold.
//!
//! The timeouts, per connection:
//! - until its first request arrives whole, a connection has `header_read_timeout`
//!   from its accept (a client that sends nothing, a few bytes, or a head slowly,
//!   over HTTP/1.1 or HTTP/2), then it is closed;
//! - HTTP/1.1: each later request head must arrive within `header_read_timeout` of
//!   the end of the previous response, so an idle HTTP/1.1 connection is closed
//!   after the smaller of the two timeouts;
//! - once no request is in flight for `idle_timeout`, the connection is shut down
//!   gracefully (HTTP/2: `GOAWAY`; a request that slips in is still answered).
//!
//! A request is in flight from its head's arrival until its response body has
//! been sent (or dropped). Every timeout is this one per-connection timer
//! ([`ConnState::expired`]), polled only when it fires: hyper's own HTTP/1.1
//! header timer is off, since it allocated, armed and dropped a timer for every
//! request head. With the side polled only when it fires (`Quiet`), a proxied
//! request went from 38,188 to 36,324 instructions (`PROFILE=callgrind
//! MODES=public bash benches/gateway_profile.sh`, 452ec80 against 4e30ca4).
//!
//! HTTP/1.1 connections may be upgraded (`upgrade.rs`): an upgrade request
//! carries a [`ConnTicket`], which the upgraded connection keeps, so it still
//! counts under `max_connections` and a shutdown waits for it (up to `grace`).
//! The gateway's HTTP/2 connections advertise extended CONNECT (RFC 8441,
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`), so a WebSocket can be one stream of
//! them: such a request's ticket also keeps the stream in flight while it is
//! tunnelled ([`ConnTicket::tunnel_in_flight`]), so the connection is not idle
//! while a WebSocket is open on it.
//!
//! On a TLS listener the handshake runs in the connection's task (the accept
//! loop never waits for it), holds one of the `max_connections` slots, and counts
//! against the first request's `header_read_timeout`: a client that never
//! finishes its handshake is cut off like one that never sends a head. The
//! client's verified certificate, if any, is put in every request's extensions
//! as a [`ClientCertificate`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::task::AtomicWaker;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::config::ConfigError;
use crate::sender::ClientCertificate;

/// The connection-level limits of one listener.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConnLimits {
    /// A request head (the first one from accept) must arrive whole within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is shut down.
    pub idle_timeout: Duration,
    /// Connections beyond this many open ones are closed as soon as accepted.
    pub max_connections: usize,
    /// The largest request head: HTTP/1.1 read buffer, HTTP/2 header list.
    pub max_header_bytes: usize,
    /// HTTP/2 streams a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING this often on a connection (and close it when the answer
    /// takes as long): a vanished peer's connection is freed. `None`: no pings.
    pub keepalive: Option<Duration>,
    /// Advertise HTTP/2 extended CONNECT (RFC 8441): the gateway's listeners,
    /// which tunnel WebSockets (`upgrade.rs`); not the check services.
    pub extended_connect: bool,
}

/// hyper's floor for the HTTP/1.1 read buffer.
pub(crate) const MIN_HEADER_BYTES: usize = 8 * 1024;

/// The connection-level keys of a `[limits]` section as written (the gateway's
/// and the check services'); absent keys take the listener's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConnKeys {
    pub header_read_timeout_secs: Option<f64>,
    pub idle_timeout_secs: Option<f64>,
    pub max_connections: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_concurrent_streams: Option<u32>,
    /// `0` turns pings off.
    pub keepalive_secs: Option<f64>,
}

impl ConnLimits {
    /// `keys` checked and applied over `defaults`; errors name `limits.<key>`.
    pub(crate) fn from_keys(
        keys: ConnKeys,
        defaults: ConnLimits,
    ) -> Result<ConnLimits, ConfigError> {
        let key = |k: &str| format!("limits.{k}");
        let secs = |k: &str, v, default| crate::gateway::seconds_or(&key(k), v, default);
        let max_connections = keys.max_connections.unwrap_or(defaults.max_connections);
        if max_connections == 0 {
            return Err(ConfigError::at(
                key("max_connections"),
                "0 would refuse every connection",
            ));
        }
        let max_header_bytes = keys.max_header_bytes.unwrap_or(defaults.max_header_bytes);
        let max = crate::gateway::MAX_HEADER_BYTES;
        if !(MIN_HEADER_BYTES..=max).contains(&max_header_bytes) {
            return Err(ConfigError::at(
                key("max_header_bytes"),
                format!("{max_header_bytes} is not between {MIN_HEADER_BYTES} and {max}"),
            ));
        }
        let max_concurrent_streams = keys
            .max_concurrent_streams
            .unwrap_or(defaults.max_concurrent_streams);
        if max_concurrent_streams == 0 {
            return Err(ConfigError::at(
                key("max_concurrent_streams"),
                // Only the check services configure it.
                "0 would refuse every check",
            ));
        }
        let keepalive = match keys.keepalive_secs {
            Some(0.0) => None,
            None => defaults.keepalive,
            some => Some(secs("keepalive_secs", some, Duration::ZERO)?),
        };
        Ok(ConnLimits {
            header_read_timeout: secs(
                "header_read_timeout_secs",
                keys.header_read_timeout_secs,
                defaults.header_read_timeout,
            )?,
            idle_timeout: secs(
                "idle_timeout_secs",
                keys.idle_timeout_secs,
                defaults.idle_timeout,
            )?,
            max_connections,
            max_header_bytes,
            max_concurrent_streams,
            keepalive,
            extended_connect: defaults.extended_connect,
        })
    }
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_header_bytes: 64 * 1024,
            max_concurrent_streams: 200,
            keepalive: None,
            extended_connect: false,
        }
    }
}

/// Accepts one connection and sets `TCP_NODELAY` on it: without it, a small
/// HTTP/2 DATA frame waits for the client's delayed ACK (about 40 ms each).
pub(crate) async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let (stream, peer) = listener.accept().await?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    Ok((stream, peer))
}

/// What a connection that is upgraded keeps of the listener: its place under
/// `max_connections`, and the listener's shutdown with its grace period. In the
/// extensions of every HTTP/1.1 request that asks for an upgrade, and of every
/// HTTP/2 extended CONNECT (with its connection's state).
#[derive(Clone)]
pub(crate) struct ConnTicket {
    _slot: Arc<OwnedSemaphorePermit>,
    stop: watch::Receiver<bool>,
    grace: Duration,
    /// The HTTP/2 connection an extended CONNECT's stream is one of.
    h2: Option<Arc<ConnState>>,
}

impl std::fmt::Debug for ConnTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTicket")
            .field("grace", &self.grace)
            .field("h2", &self.h2.is_some())
            .finish_non_exhaustive()
    }
}

impl ConnTicket {
    /// For an HTTP/2 extended CONNECT: counts the tunnelled stream as a request
    /// in flight on its connection until the returned value is dropped, so the
    /// idle timeout does not close a connection a WebSocket is open on. `None`
    /// for an HTTP/1.1 upgrade (its connection has left hyper's hands).
    pub(crate) fn tunnel_in_flight(&self) -> Option<TunnelInFlight> {
        self.h2.as_ref().map(|state| TunnelInFlight {
            _held: state.begin(Version::HTTP_2),
        })
    }

    /// Completes `grace` after the listener began shutting down (at once if it
    /// already did and the grace is over; never while it serves on).
    pub(crate) async fn shutdown_over(&mut self) {
        // An error means the listener is gone: shutting down as well.
        let _ = self.stop.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(self.grace).await;
    }
}

/// What a connection's task and its requests share.
struct ConnState {
    accepted: Instant,
    /// A request reached the handler on this connection.
    dispatched: AtomicBool,
    /// The connection speaks HTTP/2 (known from its first request).
    http2: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request finished, in milliseconds after `accepted`.
    last_done_ms: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            accepted: Instant::now(),
            dispatched: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>, version: Version) -> InFlight {
        if !self.dispatched.load(Ordering::Relaxed) {
            self.http2
                .store(version == Version::HTTP_2, Ordering::Relaxed);
            self.dispatched.store(true, Ordering::Release);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Completes when the connection should close: `NoRequest` when no request
    /// arrived within `header_read_timeout` of the accept, `Idle` when none was
    /// in flight for `idle_timeout` (HTTP/1.1: or for `header_read_timeout`,
    /// the time the next head has to arrive in).
    ///
    /// While a request is in flight it wakes every idle period (HTTP/1.1: the
    /// smaller of the two timeouts), so the deadline after a request that
    /// ends between two wakes is still met on time: it is later than the
    /// next wake.
    async fn expired(&self, limits: &ConnLimits) -> Expiry {
        let head_due = self.accepted + limits.header_read_timeout;
        let mut deadline = head_due.min(self.accepted + limits.idle_timeout);
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = Instant::now();
            if !self.dispatched.load(Ordering::Acquire) {
                if now >= head_due {
                    return Expiry::NoRequest;
                }
                deadline = head_due.min(now + limits.idle_timeout);
                continue;
            }
            let idle = if self.http2.load(Ordering::Relaxed) {
                limits.idle_timeout
            } else {
                limits.idle_timeout.min(limits.header_read_timeout)
            };
            if self.in_flight.load(Ordering::Acquire) > 0 {
                deadline = now + idle;
                continue;
            }
            let done = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
            let due = self.accepted + done + idle;
            if due <= now {
                return Expiry::Idle;
            }
            deadline = due;
        }
    }
}

enum Expiry {
    NoRequest,
    Idle,
}

/// One request in flight; dropped with its response's body ([`Tracked`]).
struct InFlight(Arc<ConnState>);

/// An HTTP/2 stream tunnelled after an extended CONNECT, in flight on its
/// connection until dropped.
pub(crate) struct TunnelInFlight {
    _held: InFlight,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let since = self.0.accepted.elapsed().as_millis();
        self.0
            .last_done_ms
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// A response body that holds its request's [`InFlight`] until hyper has
    /// sent it whole (or dropped it): a long download is not idle.
    struct Tracked<B> {
        #[pin]
        inner: B,
        in_flight: InFlight,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wakes the connection's task for [`Quiet`]'s second future, and says so.
struct SideWaker {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SideWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Runs `main` and `side` together like a `select!`, but polls `side` only
/// when its own waker fired: a connection's timer and shutdown signal are not
/// looked at on each of the several wake-ups of every request.
struct Quiet<M, S> {
    main: M,
    side: S,
    waker: Arc<SideWaker>,
    side_waker: Waker,
}

impl<M: Future + Unpin, S: Future + Unpin> Quiet<M, S> {
    fn new(main: M, side: S) -> Self {
        let waker = Arc::new(SideWaker {
            // Polled once at the start, to arm it.
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Quiet {
            main,
            side,
            side_waker: Waker::from(waker.clone()),
            waker,
        }
    }
}

impl<M: Future + Unpin, S: Future + Unpin> Future for Quiet<M, S> {
    type Output = Result<M::Output, S::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.waker.task.register(cx.waker());
        if let Poll::Ready(done) = Pin::new(&mut this.main).poll(cx) {
            return Poll::Ready(Ok(done));
        }
        if this.waker.fired.swap(false, Ordering::AcqRel) {
            let mut side_cx = Context::from_waker(&this.side_waker);
            if let Poll::Ready(fired) = Pin::new(&mut this.side).poll(&mut side_cx) {
                return Poll::Ready(Err(fired));
            }
        }
        Poll::Pending
    }
}

/// Why a connection's side of [`Conn::serve`] fired.
enum Side {
    Expired(Expiry),
    Stopping,
}

/// Accepts HTTP/1.1 and HTTP/2 connections on `listener` (over TLS with `tls`,
/// else cleartext) within `limits`, and answers
/// each request with `handler(request, peer)` until `shutdown` completes; then
/// closes the connections with no request in progress at once and lets the others
/// finish for up to `grace`.
pub(crate) async fn serve_connections_with<F, Fut, B>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: &ConnLimits,
    tls: Option<TlsAcceptor>,
    handler: F,
) -> io::Result<()>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The header timeouts are `ConnState::expired`'s (see the module).
        .header_read_timeout(None)
        // Head and body copied into one buffer and sent with one write, not
        // queued as slices for writev: most responses are small (a head and a
        // short body), and the queue's bookkeeping cost more than the copy.
        .writev(false)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive)
        .keep_alive_timeout(limits.keepalive.unwrap_or(Duration::from_secs(20)));
    if limits.extended_connect {
        // RFC 8441: WebSocket as a stream of an HTTP/2 connection. Advertised
        // whatever `upgrade_protocols` says (a reload may change it): one not
        // allowed is answered 501, and fails as its HTTP/1.1 form would.
        builder.http2().enable_connect_protocol();
    }
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping, stop_seen) = watch::channel(false);
    drop(stop_seen);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = accept(&listener) => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Closed at once: the descriptor is freed and the open
                    // connections keep being served.
                    metrics::counter!("bearer_guard_gateway_connections_refused_total").increment(1);
                    tracing::debug!(%peer, "connection limit reached; connection closed");
                    drop(stream);
                    continue;
                };
                let state = Arc::new(ConnState::new());
                // The connection's place under `max_connections`: held by this
                // task, and by the upgraded connection if there is one.
                let ticket = ConnTicket {
                    _slot: Arc::new(slot),
                    stop: stopping.subscribe(),
                    grace,
                    h2: None,
                };
                let conn = Conn {
                    builder: builder.clone(),
                    state,
                    stop: stopping.subscribe(),
                    limits: limits.clone(),
                    peer,
                    ticket,
                };
                let handler = handler.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => conn.serve(TokioIo::new(stream), None, handler).await,
                        Some(acceptor) => conn.serve_tls(acceptor, stream, handler).await,
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    if tokio::time::timeout(grace, stopping.closed())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout: in-flight requests abandoned");
    }
    Ok(())
}

/// One accepted connection, before its protocol runs.
struct Conn {
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<ConnState>,
    stop: watch::Receiver<bool>,
    limits: ConnLimits,
    peer: SocketAddr,
    ticket: ConnTicket,
}

impl Conn {
    /// The TLS handshake within the first head's deadline, then [`serve`](Self::serve).
    async fn serve_tls<F, Fut, B>(mut self, acceptor: TlsAcceptor, stream: TcpStream, handler: F)
    where
        F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let deadline = self.state.accepted + self.limits.header_read_timeout;
        let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
        let peer = self.peer;
        let stream = tokio::select! {
            done = handshake => match done {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    metrics::counter!("bearer_guard_gateway_tls_handshake_failures_total")
                        .increment(1);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics::counter!("bearer_guard_gateway_tls_handshake_failures_total")
                        .increment(1);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
            // Nothing was asked on this connection yet: closed at once.
            _ = self.stop.changed() => return,
        };
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| ClientCertificate::from_der(leaf));
        self.serve(TokioIo::new(stream), certificate, handler).await;
    }

    /// HTTP/1.1 or HTTP/2 on `io` until the peer or a limit ends it.
    async fn serve<I, F, Fut, B>(
        mut self,
        io: TokioIo<I>,
        certificate: Option<ClientCertificate>,
        handler: F,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let requests = self.state.clone();
        let peer = self.peer;
        let ticket = self.ticket.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let in_flight = requests.begin(req.version());
            if let Some(certificate) = &certificate {
                req.extensions_mut().insert(certificate.clone());
            }
            if req.version() == http::Version::HTTP_11
                && req.headers().contains_key(http::header::UPGRADE)
            {
                req.extensions_mut().insert(ticket.clone());
            } else if req.method() == http::Method::CONNECT
                && req.extensions().get::<hyper::ext::Protocol>().is_some()
            {
                let ticket = ConnTicket {
                    h2: Some(requests.clone()),
                    ..ticket.clone()
                };
                req.extensions_mut().insert(ticket);
            }
            // A combinator: an async block awaiting the handler's future
            // would hold it twice, and hyper moves this future into place.
            handler(req, peer).map(move |response| {
                Ok::<_, Infallible>(response.map(|inner| Tracked { inner, in_flight }))
            })
        });
        // Upgrades are handed to the handler (`hyper::upgrade::on`); once
        // upgraded, this task ends and the request's ticket holds the slot.
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        let mut conn = std::pin::pin!(conn);
        let state = &self.state;
        let limits = &self.limits;
        let stop = &mut self.stop;
        let side = std::pin::pin!(async move {
            tokio::select! {
                expiry = state.expired(limits) => Side::Expired(expiry),
                _ = stop.changed() => Side::Stopping,
            }
        });
        match Quiet::new(conn.as_mut(), side).await {
            Ok(ended) => return log_end(ended),
            Err(Side::Expired(Expiry::NoRequest)) => return,
            Err(Side::Expired(Expiry::Idle)) => conn.as_mut().graceful_shutdown(),
            Err(Side::Stopping) => {
                // Nothing was ever answered here, so nothing is cut:
                // a half-sent first head does not hold the shutdown.
                if !state.dispatched.load(Ordering::Acquire) {
                    return;
                }
                conn.as_mut().graceful_shutdown();
            }
        }
        log_end(conn.await);
    }
}

fn log_end(ended: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, peer) = accept(&listener).await.expect("accept");
        assert_eq!(peer, client.local_addr().expect("client addr"));
        assert!(accepted.nodelay().expect("nodelay readable"));
    }

    #[tokio::test]
    async fn a_tunnelled_http2_stream_is_in_flight_until_it_ends() {
        let slot = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("slot");
        let (_stopping, stop) = watch::channel(false);
        let state = Arc::new(ConnState::new());
        let upgraded = ConnTicket {
            _slot: Arc::new(slot),
            stop,
            grace: Duration::ZERO,
            h2: None,
        };
        // An HTTP/1.1 upgrade's connection has left hyper: nothing to count.
        assert!(upgraded.tunnel_in_flight().is_none());
        let stream = ConnTicket {
            h2: Some(state.clone()),
            ..upgraded
        };
        let open = stream.tunnel_in_flight().expect("an HTTP/2 stream");
        assert_eq!(state.in_flight.load(Ordering::Acquire), 1);
        assert!(state.http2.load(Ordering::Acquire));
        drop(open);
        assert_eq!(state.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn default_limits_are_an_edge_proxys() {
        let l = ConnLimits::default();
        assert!(l.header_read_timeout <= Duration::from_secs(30));
        assert!(l.idle_timeout >= l.header_read_timeout);
        assert!(
            l.max_connections > 0 && l.max_connections < 1024,
            "below the usual fd limit"
        );
        assert!(l.max_header_bytes >= 32 * 1024, "room for a 16 KiB token");
    }
}
