//! Client API connections: at most `connections_max` at once, each closed
//! once it has had no call open for `connection_idle_timeout_ms`.
//!
//! - [`incoming`] accepts TCP connections and counts them. One over the
//!   limit is still answered, briefly: every call on it gets
//!   `RESOURCE_EXHAUSTED` naming `connections_max`, then it is closed
//!   (at most [`REFUSED_CONNECTIONS_MAX`] such at once; beyond that they
//!   are closed unanswered).
//! - [`TrackedIo`] is the connection's socket: it reads end-of-stream once
//!   the connection has been idle long enough, which makes the HTTP/2
//!   server close it.
//! - [`Tracked`] wraps the gRPC service: it counts each call open on its
//!   connection until the response body ends (a stream counts until it
//!   ends), and rewrites the statuses tonic answers by itself (undecodable
//!   or oversize requests) through [`crate::api::error::transport_status`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::transport::server::TlsConnectInfo;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::Connected;

use crate::limits::{
    ApiLimits, ACCEPT_ERROR_BACKOFF_MS, REFUSED_CONNECTIONS_MAX, REFUSED_CONNECTION_LINGER_MS,
};
use crate::metrics::{IdleLabel, Metrics};

/// What is known of a call's connection (found in each request's
/// extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address, when the socket knows it.
    pub remote_addr: Option<SocketAddr>,
    /// The connection's open calls (for its idle timer).
    state: Arc<ConnState>,
    /// Set on a connection over `connections_max`: every call on it is
    /// answered with this refusal.
    refused: Option<Arc<str>>,
}

impl ConnInfo {
    /// The client's IP address, the key of the per-client limits.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.remote_addr.map(|a| a.ip())
    }
}

/// The calls open on one connection, and since when none is.
#[derive(Debug)]
struct ConnState {
    /// Open calls, and when the count last fell to zero.
    calls: Mutex<(usize, Instant)>,
}

impl ConnState {
    /// Counts a call open until the guard drops.
    fn begin(self: &Arc<Self>) -> CallGuard {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.0 += 1;
        CallGuard(Arc::clone(self))
    }

    /// When the connection becomes idle for `timeout` (`None`: a call is
    /// open).
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        (calls.0 == 0).then(|| calls.1 + timeout)
    }
}

/// One open call; ends it on drop.
#[derive(Debug)]
struct CallGuard(Arc<ConnState>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut calls = self.0.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.0 = calls.0.saturating_sub(1);
        if calls.0 == 0 {
            calls.1 = Instant::now();
        }
    }
}

/// Counts of admitted and refused connections.
#[derive(Debug)]
struct Gate {
    /// Connections admitted and open.
    open: AtomicUsize,
    /// Refused connections still being answered.
    refused: AtomicUsize,
    /// The limits.
    limits: ApiLimits,
    /// Gauges and rejection counters.
    metrics: Arc<Metrics>,
}

/// A connection's place in the [`Gate`]; given back on drop.
#[derive(Debug)]
struct Place {
    /// The gate.
    gate: Arc<Gate>,
    /// Whether it is counted as refused (else admitted).
    refused: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.refused {
            self.gate.refused.fetch_sub(1, Ordering::AcqRel);
        } else {
            self.gate.open.fetch_sub(1, Ordering::AcqRel);
            self.gate.metrics.connection_closed();
        }
    }
}

impl Gate {
    /// Admits a connection, admits it refused, or (`None`) turns it away.
    fn admit(self: &Arc<Self>) -> Option<(Place, Option<Arc<str>>)> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.connections_max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.metrics.connection_opened();
            let place = Place {
                gate: Arc::clone(self),
                refused: false,
            };
            return Some((place, None));
        }
        self.metrics.limit_rejected("connections_max");
        let answered = self
            .refused
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < REFUSED_CONNECTIONS_MAX).then_some(n + 1)
            })
            .is_ok();
        if !answered {
            return None;
        }
        let why = format!(
            "this node has {} client connections open, its limit (connections_max = {}); \
             retry later or use another node",
            self.limits.connections_max, self.limits.connections_max
        );
        let place = Place {
            gate: Arc::clone(self),
            refused: true,
        };
        Some((place, Some(why.into())))
    }
}

/// Accepts the client API's connections under `limits` (with TCP_NODELAY:
/// see the notes on tonic's `serve_with_incoming`).
pub fn incoming(
    listener: TcpListener,
    limits: ApiLimits,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = io::Result<TrackedIo>> + Send + 'static {
    let gate = Arc::new(Gate {
        open: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        limits,
        metrics,
    });
    futures::stream::unfold((listener, gate), |(listener, gate)| async move {
        loop {
            let (tcp, remote_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a client connection failed; pausing");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                    continue;
                }
            };
            let Some((place, refused)) = gate.admit() else {
                tracing::debug!(%remote_addr, "connection over connections_max closed unanswered");
                continue;
            };
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%remote_addr, %error, "could not set TCP_NODELAY");
            }
            let idle_timeout = match refused {
                Some(_) => Duration::from_millis(REFUSED_CONNECTION_LINGER_MS),
                None => gate.limits.connection_idle_timeout(),
            };
            let info = ConnInfo {
                remote_addr: Some(remote_addr),
                state: Arc::new(ConnState {
                    calls: Mutex::new((0, Instant::now())),
                }),
                refused,
            };
            let io = TrackedIo {
                timer: Box::pin(tokio::time::sleep(idle_timeout)),
                tcp,
                info,
                idle_timeout,
                ended: false,
                metrics: Arc::clone(&gate.metrics),
                _place: place,
            };
            return Some((Ok(io), (listener, gate)));
        }
    })
}

/// A client API connection's socket, with its idle timer.
#[derive(Debug)]
pub struct TrackedIo {
    /// The socket.
    tcp: TcpStream,
    /// Shared with the calls on it.
    info: ConnInfo,
    /// How long it may have no call open.
    idle_timeout: Duration,
    /// Fires when the connection may have become idle.
    timer: Pin<Box<Sleep>>,
    /// Set once it read end-of-stream for idleness.
    ended: bool,
    /// Counts idle closes.
    metrics: Arc<Metrics>,
    /// Its place under `connections_max`, given back when hyper drops it.
    _place: Place,
}

impl TrackedIo {
    /// Whether the connection has been idle long enough to close.
    fn idle(&mut self, cx: &mut Context<'_>) -> bool {
        if self.ended {
            return true;
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.info.state.idle_deadline(self.idle_timeout) {
                Some(deadline) if deadline <= now => {
                    self.ended = true;
                    if self.info.refused.is_none() {
                        self.metrics.idle_closed(IdleLabel::connection);
                    }
                    tracing::debug!(remote_addr = ?self.info.remote_addr, "closing an idle connection");
                    return true;
                }
                Some(deadline) => self.timer.as_mut().reset(deadline),
                None => self.timer.as_mut().reset(now + self.idle_timeout),
            }
        }
        false
    }
}

impl Connected for TrackedIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.idle(cx) {
            // End of stream: the HTTP/2 server closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// A gRPC service whose calls are counted on their connection (see the
/// module documentation).
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    /// The service.
    inner: S,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Tracked { inner }
    }
}

impl<S: NamedService> NamedService for Tracked<S> {
    const NAME: &'static str = S::NAME;
}

/// The future of a [`Tracked`] call.
type TrackedFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tonic::codegen::Service<http::Request<Body>> for Tracked<S>
where
    S: tonic::codegen::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> TrackedFuture {
        // tonic stores the connection's info bare on a plaintext
        // connection and inside `TlsConnectInfo` on a TLS one.
        let info = req
            .extensions()
            .get::<ConnInfo>()
            .or_else(|| {
                req.extensions()
                    .get::<TlsConnectInfo<ConnInfo>>()
                    .map(TlsConnectInfo::get_ref)
            })
            .cloned();
        let guard = info.as_ref().map(|i| i.state.begin());
        if let Some(why) = info.as_ref().and_then(|i| i.refused.clone()) {
            let status = crate::api::error::connection_refused(&why);
            return Box::pin(async move {
                drop(guard);
                Ok(status.into_http())
            });
        }
        let call = self.inner.call(req);
        Box::pin(async move {
            let mut response = call.await?;
            crate::api::error::rewrite_transport_status(response.headers_mut());
            Ok(response.map(|body| {
                Body::new(GuardedBody {
                    inner: body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that keeps its call counted until it ends.
struct GuardedBody {
    /// The body.
    inner: Body,
    /// The call's count on its connection.
    _guard: Option<CallGuard>,
}

impl http_body::Body for GuardedBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
