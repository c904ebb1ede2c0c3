//! The calls open on each connection, counted for the connection's idle timeout (see `connections.rs`).
//!
//! A call is open from the moment its request reaches the services until its response body is dropped,
//! which is when hyper has sent its end or the stream was reset: a long-lived ingest stream keeps its
//! connection busy for as long as it lasts, and a connection whose last call ended starts its idle wait.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;
use tonic::codegen::{Service, http};
use tonic::transport::server::TlsConnectInfo;

use crate::connections::ConnectionInfo;

/// How many calls are open on one connection.
#[derive(Clone, Debug)]
pub(crate) struct OpenStreams(Arc<watch::Sender<usize>>);

impl OpenStreams {
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }

    /// Follows the count.
    pub(crate) fn subscribe(&self) -> watch::Receiver<usize> {
        self.0.subscribe()
    }

    /// Counts one more call, until the guard is dropped.
    fn open(&self) -> OpenStream {
        self.0.send_modify(|open| *open += 1);
        OpenStream(Arc::clone(&self.0))
    }
}

/// One open call; dropping it ends the call's count.
struct OpenStream(Arc<watch::Sender<usize>>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

/// Counts each request's call on its connection (found in the [`ConnectionInfo`] tonic adds to every
/// request, plain or under TLS) and gives the request the TCP connection's own information, which
/// `tonic::Request::remote_addr` looks for.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CountStreamsLayer;

impl<S> tower_layer::Layer<S> for CountStreamsLayer {
    type Service = CountStreams<S>;

    fn layer(&self, inner: S) -> CountStreams<S> {
        CountStreams { inner }
    }
}

/// The service of [`CountStreamsLayer`].
#[derive(Clone, Debug)]
pub(crate) struct CountStreams<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for CountStreams<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CountedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let extensions = request.extensions();
        let connection = extensions
            .get::<ConnectionInfo>()
            .or_else(|| extensions.get::<TlsConnectInfo<ConnectionInfo>>().map(TlsConnectInfo::get_ref))
            .cloned();
        let open_stream = connection.map(|connection| {
            request.extensions_mut().insert(connection.tcp);
            connection.streams.open()
        });
        let responding = self.inner.call(request);
        Box::pin(async move {
            let response = responding.await?;
            Ok(response.map(|body| CountedBody { body, _open_stream: open_stream }))
        })
    }
}

/// A response body that keeps its call counted until dropped.
pub(crate) struct CountedBody<B> {
    body: B,
    _open_stream: Option<OpenStream>,
}

impl<B: HttpBody + Unpin> HttpBody for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
