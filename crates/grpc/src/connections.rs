//! The connections a [`GrpcServer`](crate::serve::GrpcServer) accepted, counted, and cut when the
//! shutdown's drain timeout has passed.
//!
//! Tonic runs every connection in a task of its own: when the server stops waiting for its calls to end,
//! those tasks go on. In a process that exits right after, that does not matter; in standalone, which
//! stops ingestion and aggregation after serving, or in a test, a call past the drain timeout would keep
//! running. So each accepted connection is wrapped: once cut, its next read or write fails, hyper drops
//! the connection, and its calls end (the client sees the connection close).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

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

    /// `accepted`, each connection counted while open and cut by [`Connections::cut`].
    pub(crate) fn track(
        &self,
        accepted: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
    ) -> impl Stream<Item = io::Result<CuttableConnection>> + Send + 'static {
        let (open_tx, cut) = (Arc::clone(&self.open_tx), self.cut.clone());
        accepted.map(move |accepted| {
            accepted.map(|stream| {
                open_tx.send_modify(|open| *open += 1);
                CuttableConnection {
                    stream,
                    cut: cut.clone(),
                    cut_signal: Box::pin(cut.clone().cancelled_owned()),
                    _open: OpenConnection(Arc::clone(&open_tx)),
                }
            })
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
    }
}

/// An accepted TCP connection that fails every read and write once cut.
pub(crate) struct CuttableConnection {
    stream: TcpStream,
    cut: CancellationToken,
    /// Polled by reads and writes, so that cutting wakes a connection that waits for its client.
    cut_signal: Pin<Box<WaitForCancellationFutureOwned>>,
    _open: OpenConnection,
}

impl CuttableConnection {
    /// `Err` once cut; otherwise registers the task to be woken by the cut.
    fn check_cut(&mut self, context: &mut Context<'_>) -> io::Result<()> {
        if self.cut.is_cancelled() || self.cut_signal.as_mut().poll(context).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection cut: still open after the shutdown's drain timeout",
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

impl Connected for CuttableConnection {
    // The TCP connection's own, so a service that asks for the peer's address still finds it.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}
