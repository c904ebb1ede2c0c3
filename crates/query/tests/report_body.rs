//! Report responses sent from their kept bodies (tier b: real Postgres and the real CQL server) are the
//! responses tonic writes itself, byte for byte: status, headers, the gRPC message and the trailers, with
//! and without gzip, on a cache miss and on a hit, with the cache off, and over gRPC-Web.

mod support;

use std::pin::Pin;
use std::task::{Context, Poll};

use hourglass_grpc::server::ServerConfig;
use hourglass_proto::v1::{GetHourlyMetricsRequest, GetPeriodMetricsRequest, Granularity};
use hourglass_query::QueryConfig;
use hourglass_query::report_body::ReportBodyLayer;
use http_body::{Body as HttpBody, Frame};
use prost::Message;
use prost::bytes::{BufMut, Bytes, BytesMut};
use support::{data_hours, range};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{self, HeaderMap, StatusCode};
use tower_layer::Layer;

/// A request body of one chunk.
struct Chunk(Option<Bytes>);

impl HttpBody for Chunk {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A gRPC call of `method` with `message`, as a client sends it, accepting gzip or not.
fn call(method: &str, message: &impl Message, key: &str, accept_gzip: bool) -> http::Request<Body> {
    let encoded = message.encode_to_vec();
    let mut framed = BytesMut::new();
    framed.put_u8(0);
    framed.put_u32(encoded.len() as u32);
    framed.put_slice(&encoded);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://query.test/hourglass.v1.QueryService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {key}"));
    if accept_gzip {
        request = request.header("grpc-accept-encoding", "gzip");
    }
    request.body(Body::new(Chunk(Some(framed.freeze())))).unwrap()
}

/// What a client receives: the status, the headers, the body's bytes and the trailers.
#[derive(Debug, PartialEq)]
struct Received {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: Vec<HeaderMap>,
    /// The body's exact size as it told the server before its first frame: hyper sends it as a
    /// Content-Length over HTTP/1.1, so it must be tonic's (none) for gRPC-Web, whose trailers come as
    /// one more data frame.
    exact_size: Option<u64>,
}

async fn receive<S>(service: &mut S, request: http::Request<Body>) -> Received
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: std::fmt::Debug,
{
    std::future::poll_fn(|context| service.poll_ready(context)).await.unwrap();
    let (parts, mut body) = service.call(request).await.unwrap().into_parts();
    let exact_size = HttpBody::size_hint(&body).exact();
    let mut received =
        Received { status: parts.status, headers: parts.headers, body: Vec::new(), trailers: Vec::new(), exact_size };
    while let Some(frame) = std::future::poll_fn(|context| Pin::new(&mut body).poll_frame(context)).await {
        match frame.unwrap().into_data() {
            Ok(data) => received.body.extend_from_slice(&data),
            Err(frame) => received.trailers.push(frame.into_trailers().unwrap()),
        }
    }
    received
}

#[tokio::test]
async fn report_bodies_are_the_bytes_tonic_sends_with_and_without_gzip() {
    let platform = support::start("query_report_body").await;
    let server_config = hourglass_config::defaults::<ServerConfig>();
    let layer = ReportBodyLayer::new(server_config.max_message_bytes);
    let mut tonic_encoded =
        hourglass_query::query_server(platform.service(QueryConfig::with_defaults()).await, &server_config);
    let mut cached = layer
        .layer(hourglass_query::query_server(platform.service(QueryConfig::with_defaults()).await, &server_config));
    let uncached_config = QueryConfig { cache_entries: 0, ..QueryConfig::with_defaults() };
    let mut uncached =
        layer.layer(hourglass_query::query_server(platform.service(uncached_config).await, &server_config));

    let hours = data_hours();
    let (from, to) = (hours[0], hours[hours.len() - 1] + 3600);
    let key = platform.acme_key.as_str();
    let hourly = GetHourlyMetricsRequest { range: range(from, to), event_types: vec![], group_by_event_type: true };
    let daily = GetPeriodMetricsRequest {
        range: range(from, to),
        granularity: Granularity::Day.into(),
        event_types: vec![],
        group_by_event_type: false,
    };
    let request = |method: &str, gzip: bool| match method {
        "GetHourlyMetrics" => call(method, &hourly, key, gzip),
        _ => call(method, &daily, key, gzip),
    };
    let mut compressed = 0;
    // Twice: the first round misses the cache (and compresses its entries' bodies), the second hits.
    for round in ["miss", "hit"] {
        for accept_gzip in [false, true] {
            for method in ["GetHourlyMetrics", "GetPeriodMetrics"] {
                let what = format!("{method} {round}, gzip accepted: {accept_gzip}");
                let expected = receive(&mut tonic_encoded, request(method, accept_gzip)).await;
                assert_eq!(expected.status, StatusCode::OK, "{what}");
                assert_eq!(expected.trailers.len(), 1, "{what}");
                assert_eq!(expected.trailers[0]["grpc-status"], "0", "{what}");
                assert!(expected.body.len() > 100, "{what}: a report with rows");
                assert_eq!(expected.body[0], u8::from(accept_gzip), "{what}: compressed when the client accepts gzip");
                compressed += usize::from(accept_gzip);
                assert_eq!(receive(&mut cached, request(method, accept_gzip)).await, expected, "{what}, cache on");
                assert_eq!(receive(&mut uncached, request(method, accept_gzip)).await, expected, "{what}, cache off");
            }
        }
    }
    assert_eq!(compressed, 4);

    // gRPC-Web, as the console calls it: the web layer frames the same body and its trailers.
    let mut web_expected = tonic_web::GrpcWebLayer::new().layer(tonic_encoded.clone());
    let mut web_sent = tonic_web::GrpcWebLayer::new().layer(cached.clone());
    for accept_gzip in [false, true] {
        let web_request = || {
            let mut web_request = call("GetHourlyMetrics", &hourly, key, accept_gzip);
            web_request.headers_mut().insert("content-type", "application/grpc-web+proto".parse().unwrap());
            web_request
        };
        let expected = receive(&mut web_expected, web_request()).await;
        assert_eq!(expected.status, StatusCode::OK);
        assert!(expected.body.len() > 100, "the message and the trailers in the body: {expected:?}");
        assert_eq!(receive(&mut web_sent, web_request()).await, expected, "gRPC-Web, gzip accepted: {accept_gzip}");
    }

    // An error is tonic's own response: nothing to replace.
    let refused = call("GetHourlyMetrics", &hourly, "hgk_not_a_key", false);
    let expected = receive(&mut tonic_encoded, call("GetHourlyMetrics", &hourly, "hgk_not_a_key", false)).await;
    assert_eq!(receive(&mut cached, refused).await, expected);
    assert!(expected.headers.contains_key("grpc-status"), "a trailers-only error: {expected:?}");
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}
