//! A report's response body sent from the bytes the service keeps, neither copied nor compressed per request.
//!
//! tonic writes every response message into a buffer of its own before HTTP/2 sends it: for a cached
//! report that is a copy of its encoding (543 KiB for a 30-day report per event type), and for a client
//! that accepts gzip (gRPC's C-core clients, Python's grpcio among them, and Java's announce it by
//! default) a compression of it, several milliseconds of CPU for every request. [`ReportBodyLayer`] wraps the
//! generated server and, for a report response, replaces tonic's body (never polled, so nothing is
//! encoded) with the same gRPC message: its 5-byte prefix, then the kept bytes themselves, or their gzip
//! form, compressed once per cache entry on the blocking pool, then the trailers tonic sends on success.
//! The bytes on the wire are those tonic would have written (tests compare them, with and without gzip);
//! tonic still decides everything else: the status, the headers, the encoding it negotiated, errors.

use std::fmt;
use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::bytes::{BufMut, Bytes, BytesMut};
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Code, Status};
use tower_layer::Layer;

/// gRPC's message prefix: a compressed flag and a big-endian length.
const MESSAGE_PREFIX_BYTES: usize = 5;
/// The level tonic compresses gzip responses at (flate2's 6, its default), so the kept gzip form is the
/// one tonic would send.
const GZIP_LEVEL: u32 = 6;

/// An encoded report response and, once a client has asked for it, its gzip form; clones share both.
/// The service attaches one to each report response ([`ReportBody::attach`]) and the cache keeps one
/// per entry, so a report is compressed once however many clients ask for it compressed.
#[derive(Clone)]
pub struct ReportBody {
    encoded: Bytes,
    gzip: Arc<OnceLock<Bytes>>,
}

impl fmt::Debug for ReportBody {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ReportBody")
            .field("encoded_bytes", &self.encoded.len())
            .field("gzip_bytes", &self.gzip.get().map(Bytes::len))
            .finish()
    }
}

impl ReportBody {
    /// The body of the response encoded as `encoded`, not compressed yet.
    pub fn new(encoded: Bytes) -> Self {
        Self { encoded, gzip: Arc::new(OnceLock::new()) }
    }

    /// The encoded response (without the gRPC prefix).
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }

    /// The most bytes this body holds with its gzip form: the encoding and zlib's bound for its deflate
    /// stream (`compressBound`) with gzip's 18-byte header and trailer, for the cache's byte budget.
    pub fn max_bytes(&self) -> usize {
        let length = self.encoded.len();
        length + (length + (length >> 12) + (length >> 14) + (length >> 25) + 13 - 6 + 18)
    }

    /// `response` carrying this body, for [`ReportBodyLayer`] to send in place of tonic's encoding.
    pub fn attach<T>(self, mut response: tonic::Response<T>) -> tonic::Response<T> {
        response.extensions_mut().insert(self);
        response
    }

    /// The gzip form, compressing the encoding once (on the blocking pool: it takes milliseconds).
    async fn gzip(&self) -> Result<Bytes, Status> {
        if let Some(compressed) = self.gzip.get() {
            return Ok(compressed.clone());
        }
        let encoded = self.encoded.clone();
        let compressed = tokio::task::spawn_blocking(move || gzip(&encoded))
            .await
            .map_err(|error| Status::internal(format!("compressing the response failed: {error}")))?
            .map_err(|error| Status::internal(format!("Error compressing: {error}")))?;
        // Two requests may have compressed it at once: both forms are the same bytes, one is kept.
        Ok(self.gzip.get_or_init(|| compressed).clone())
    }
}

/// `encoded` compressed as tonic compresses a message for gzip.
fn gzip(encoded: &[u8]) -> std::io::Result<Bytes> {
    let mut compressed = Vec::with_capacity(encoded.len() / 4);
    flate2::read::GzEncoder::new(encoded, flate2::Compression::new(GZIP_LEVEL)).read_to_end(&mut compressed)?;
    Ok(Bytes::from(compressed))
}

/// Wraps the generated query server so report responses are sent from their [`ReportBody`].
#[derive(Clone, Copy, Debug)]
pub struct ReportBodyLayer {
    max_message_bytes: usize,
}

impl ReportBodyLayer {
    /// Sends report bodies of at most `max_message_bytes` (the server's encoding limit): a larger one is
    /// left to tonic, which answers it with its error.
    pub fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes }
    }
}

impl<S> Layer<S> for ReportBodyLayer {
    type Service = ReportBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReportBodyService { inner, max_message_bytes: self.max_message_bytes }
    }
}

/// The service [`ReportBodyLayer`] makes.
#[derive(Clone, Debug)]
pub struct ReportBodyService<S> {
    inner: S,
    max_message_bytes: usize,
}

impl<S: NamedService> NamedService for ReportBodyService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, RequestBody> Service<http::Request<RequestBody>> for ReportBodyService<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let response = self.inner.call(request);
        let max_message_bytes = self.max_message_bytes;
        Box::pin(async move { Ok(with_report_body(response.await?, max_message_bytes).await) })
    }
}

/// `response` with its [`ReportBody`] as the body, if it has one, in the encoding tonic chose for it.
async fn with_report_body(mut response: http::Response<Body>, max_message_bytes: usize) -> http::Response<Body> {
    let Some(report_body) = response.extensions_mut().remove::<ReportBody>() else {
        return response;
    };
    let compressed = match response.headers().get("grpc-encoding") {
        None => false,
        Some(encoding) if encoding == "gzip" => true,
        // An encoding no body is kept in: tonic's own body encodes it.
        Some(_) => return response,
    };
    let message = match compressed {
        false => report_body.encoded.clone(),
        true => match report_body.gzip().await {
            Ok(message) => message,
            Err(status) => return status.into_http(),
        },
    };
    if message.len() > max_message_bytes || u32::try_from(message.len()).is_err() {
        return response;
    }
    let (parts, _tonic_body) = response.into_parts();
    http::Response::from_parts(parts, Body::new(MessageBody::new(compressed, message)))
}

/// One gRPC message and the success trailers: the prefix, the message's bytes as they are, `grpc-status: 0`.
#[derive(Debug)]
struct MessageBody {
    prefix: Option<Bytes>,
    message: Option<Bytes>,
    trailers_sent: bool,
}

impl MessageBody {
    fn new(compressed: bool, message: Bytes) -> Self {
        let mut prefix = BytesMut::with_capacity(MESSAGE_PREFIX_BYTES);
        prefix.put_u8(u8::from(compressed));
        prefix.put_u32(u32::try_from(message.len()).expect("the caller checked the length"));
        Self { prefix: Some(prefix.freeze()), message: Some(message), trailers_sent: false }
    }
}

impl HttpBody for MessageBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if !self.trailers_sent {
            self.trailers_sent = true;
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert("grpc-status", HeaderValue::from(Code::Ok as i32));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_sent
    }

    /// A lower bound only, never exact: tonic-web passes the hint on and turns the trailers into one more
    /// data frame after the message, so an exact hint became a Content-Length that cut that frame off
    /// over HTTP/1.1 (the console saw "missing trailer"). Tonic's own bodies give no size either.
    fn size_hint(&self) -> SizeHint {
        let remaining = self.prefix.as_ref().map_or(0, Bytes::len) + self.message.as_ref().map_or(0, Bytes::len);
        let mut hint = SizeHint::new();
        hint.set_lower(remaining as u64);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(mut body: MessageBody) -> (Vec<u8>, Vec<HeaderMap>) {
        let (mut data, mut trailers) = (Vec::new(), Vec::new());
        while let Some(frame) = std::future::poll_fn(|context| Pin::new(&mut body).poll_frame(context)).await {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers.push(frame.into_trailers().unwrap()),
            }
        }
        assert!(body.is_end_stream());
        (data, trailers)
    }

    #[tokio::test]
    async fn a_message_body_is_the_prefixed_message_then_the_success_trailers() {
        let body = MessageBody::new(false, Bytes::from_static(b"abc"));
        // At least the 8 data bytes, and no exact size: over gRPC-Web it would become a Content-Length
        // that leaves out the trailers' frame (size_hint's doc).
        assert_eq!((body.size_hint().lower(), body.size_hint().exact()), (8, None));
        let (data, trailers) = frames(body).await;
        assert_eq!(data, [0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(trailers.len(), 1);
        assert_eq!(trailers[0].len(), 1);
        assert_eq!(trailers[0]["grpc-status"], "0");

        let (data, _) = frames(MessageBody::new(true, Bytes::from(vec![7; 300]))).await;
        assert_eq!(data[..5], [1, 0, 0, 1, 44]);
        assert_eq!(data.len(), 305);
    }

    #[tokio::test]
    async fn the_gzip_form_is_computed_once_and_decompresses_to_the_encoding() {
        let encoded = Bytes::from((0..100_000_u32).flat_map(|index| (index % 251).to_le_bytes()).collect::<Vec<u8>>());
        let body = ReportBody::new(encoded.clone());
        let first = body.gzip().await.unwrap();
        let second = body.clone().gzip().await.unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr(), "compressed once, shared by clones");
        assert!(first.len() <= body.max_bytes() - encoded.len());
        let mut decompressed = Vec::new();
        flate2::read::GzDecoder::new(&first[..]).read_to_end(&mut decompressed).unwrap();
        assert_eq!(decompressed, encoded);
    }
}
