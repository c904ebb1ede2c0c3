//! The connections a [`GrpcServer`](crate::serve::GrpcServer) accepts: at most `--max-connections` open,
//! each closed once it has had no open call for `--idle-connection-timeout-secs`, and all cut when the
//! shutdown's drain timeout has passed.
//!
//! Tonic has no bound on connections and no idle timeout of its own (HTTP/2 keepalive pings only find
//! dead peers: an idle client answers them), and it runs every connection in a task of its own: when the
//! server stops waiting for its calls to end, those tasks go on. So each accepted connection is wrapped:
//! once closed (idle, or cut at shutdown), its next read or write fails, hyper drops the connection, and
//! its calls end (the client sees the connection close). Its open calls are counted by
//! [`CountStreamsLayer`](crate::streams::CountStreamsLayer), which finds the connection's counter in
//! the [`ConnectionInfo`] tonic gives every request.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::streams::OpenStreams;
use crate::telemetry;

/// The bounds every accepted connection is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    /// Connections open at once; one accepted beyond it is closed at once.
    pub(crate) max_connections: usize,
    /// How long a connection may have no open call before it is closed.
    pub(crate) idle_timeout: Duration,
}

/// The open connections of one server, and the switch that cuts them.
pub(crate) struct Connections {
    /// How many accepted connections are still open (their [`CuttableConnection`] not yet dropped).
    open_tx: Arc<watch::Sender<usize>>,
    cut: CancellationToken,
}

impl Connections {
    pub(crate) fn new() -> Self {
        Self { open_tx: Arc::new(watch::Sender::new(0)), cut: CancellationToken::new() }
    }

    /// `accepted`, each connection counted while open, closed when idle and cut by [`Connections::cut`];
    /// a connection accepted while `limits.max_connections` are open is closed at once and not
    /// yielded. Closing it (rather than leaving it in the listen backlog) answers the client at once,
    /// and costs the server nothing more than the accept.
    pub(crate) fn track(
        &self,
        accepted: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
        limits: ConnectionLimits,
    ) -> impl Stream<Item = io::Result<CuttableConnection>> + Send + 'static {
        let (open_tx, cut) = (Arc::clone(&self.open_tx), self.cut.clone());
        accepted.filter_map(move |accepted| {
            let tracked = match accepted {
                Err(error) => Some(Err(error)),
                Ok(stream) if *open_tx.borrow() >= limits.max_connections => {
                    metrics::counter!(telemetry::CONNECTIONS_REFUSED_TOTAL).increment(1);
                    tracing::debug!(max_connections = limits.max_connections, "connection refused: at the limit");
                    drop(stream);
                    None
                }
                Ok(stream) => Some(Ok(CuttableConnection::new(stream, &open_tx, &cut, limits.idle_timeout))),
            };
            std::future::ready(tracked)
        })
    }

    /// Connections accepted and not yet closed.
    pub(crate) fn open(&self) -> usize {
        *self.open_tx.borrow()
    }

    /// Cuts every open connection (and any accepted later), then waits at most `wait` for their tasks to
    /// drop them. A cut connection fails its next read or write, and hyper's connection task polls it as
    /// soon as it is woken, so this takes a scheduling round, not `wait`; the bound is for a runtime too
    /// busy to schedule it. Returns how many are still open after that.
    pub(crate) async fn cut(&self, wait: Duration) -> usize {
        self.cut.cancel();
        let mut open_rx = self.open_tx.subscribe();
        let _ = tokio::time::timeout(wait, open_rx.wait_for(|open| *open == 0)).await;
        self.open()
    }
}

/// Counts a connection as open until dropped.
struct OpenConnection(Arc<watch::Sender<usize>>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
        metrics::gauge!(telemetry::CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// Closes `connection` once it has had no open call for `idle_timeout`. A call opening restarts the
/// wait; it ends when the connection is closed for any reason. A call may open as the timeout passes: it
/// then fails with the connection, as it would if the client's network failed, and the client retries.
async fn close_when_idle(
    mut streams_rx: watch::Receiver<usize>,
    idle_timeout: Duration,
    connection: CancellationToken,
) {
    loop {
        tokio::select! {
            () = connection.cancelled() => return,
            idle = streams_rx.wait_for(|open| *open == 0) => if idle.is_err() { return },
        }
        tokio::select! {
            () = connection.cancelled() => return,
            changed = streams_rx.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(idle_timeout) => {
                metrics::counter!(telemetry::CONNECTIONS_IDLE_CLOSED_TOTAL).increment(1);
                tracing::debug!(idle_timeout_secs = idle_timeout.as_secs(), "closing a connection with no call open");
                connection.cancel();
                return;
            }
        }
    }
}

/// An accepted TCP connection that fails every read and write once closed: idle, or cut at shutdown.
pub(crate) struct CuttableConnection {
    stream: TcpStream,
    /// Cancelled when the connection is to close: by the idle timeout, or by the shutdown's cut (whose
    /// child it is).
    closed: CancellationToken,
    /// Polled by reads and writes, so that closing wakes a connection that waits for its client.
    closed_signal: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The calls open on this connection, handed to each request through [`ConnectionInfo`].
    streams: OpenStreams,
    /// Cancels `closed` when the connection is dropped, which ends its idle watch.
    _close_on_drop: DropGuard,
    _open: OpenConnection,
}

impl CuttableConnection {
    /// Counts the connection as open and starts its idle watch.
    fn new(
        stream: TcpStream,
        open_tx: &Arc<watch::Sender<usize>>,
        cut: &CancellationToken,
        idle_timeout: Duration,
    ) -> Self {
        open_tx.send_modify(|open| *open += 1);
        metrics::gauge!(telemetry::CONNECTIONS_OPEN).increment(1.0);
        let closed = cut.child_token();
        let streams = OpenStreams::new();
        tokio::spawn(close_when_idle(streams.subscribe(), idle_timeout, closed.clone()));
        Self {
            stream,
            closed_signal: Box::pin(closed.clone().cancelled_owned()),
            _close_on_drop: closed.clone().drop_guard(),
            closed,
            streams,
            _open: OpenConnection(Arc::clone(open_tx)),
        }
    }

    /// `Err` once closed; otherwise registers the task to be woken by the close.
    fn check_cut(&mut self, context: &mut Context<'_>) -> io::Result<()> {
        if self.closed.is_cancelled() || self.closed_signal.as_mut().poll(context).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed: idle past the idle timeout, or still open after the shutdown's drain timeout",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for CuttableConnection {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let connection = self.get_mut();
        connection.check_cut(context)?;
        Pin::new(&mut connection.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for CuttableConnection {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let connection = self.get_mut();
        connection.check_cut(context)?;
        Pin::new(&mut connection.stream).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let connection = self.get_mut();
        connection.check_cut(context)?;
        Pin::new(&mut connection.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}

/// What tonic puts in every request of a connection: the TCP connection's own information (peer
/// address), and the counter of the connection's open calls.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionInfo {
    pub(crate) tcp: TcpConnectInfo,
    pub(crate) streams: OpenStreams,
}

impl Connected for CuttableConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo { tcp: self.stream.connect_info(), streams: self.streams.clone() }
    }
}
