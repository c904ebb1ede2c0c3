//! [`GrpcServer`] over real loopback connections, with tonic's own health and reflection clients: the
//! ordered shutdown (NOT_SERVING while still accepting, then no longer accepting and streams told to
//! drain, calls past the drain timeout cut, the flush last), health following readiness, a stop event,
//! and reflection listing exactly the services served.
//!
//! The service behind the server is a small `IngestService` of the test's own that reports what happens
//! to its calls; the server, the connections and the clients are the real ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use hourglass_grpc::server::ServerConfig;
use hourglass_grpc::{GrpcServer, Stopped};
use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
use hourglass_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use hourglass_proto::v1::{
    BatchAck, IngestBatchRequest, IngestBatchResponse, IngestRequest, IngestResponse, IngestStreamRequest,
    IngestStreamResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const INGEST: &str = "hourglass.v1.IngestService";
/// The sequence number of the ack a stream sends when told to drain.
const DRAINED_ACK_SEQUENCE: u64 = 7;
/// Bound of every wait for a condition; never the expected duration of anything.
const PATIENCE: Duration = Duration::from_secs(60);

/// What happened, in order, as the service and the flush step saw it.
#[derive(Clone, Default)]
struct Happenings(Arc<Mutex<Vec<&'static str>>>);

impl Happenings {
    fn record(&self, what: &'static str) {
        self.0.lock().unwrap().push(what);
    }

    fn list(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: &'static str) {
        let started = Instant::now();
        while !self.list().contains(&what) {
            assert!(started.elapsed() < PATIENCE, "{what:?} never happened: {:?}", self.list());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A stream that stays open until the server's drain signal, then sends one ack and ends; a unary call
/// that never answers (so only the cut after the drain timeout ends it).
struct TestIngest {
    drain: CancellationToken,
    happenings: Happenings,
}

#[tonic::async_trait]
impl IngestService for TestIngest {
    async fn ingest(&self, _request: Request<Streaming<IngestRequest>>) -> Result<Response<IngestResponse>, Status> {
        Err(Status::unimplemented("not used by these tests"))
    }

    type IngestStreamStream = BoxStream<'static, Result<IngestStreamResponse, Status>>;

    async fn ingest_stream(
        &self,
        _request: Request<Streaming<IngestStreamRequest>>,
    ) -> Result<Response<Self::IngestStreamStream>, Status> {
        let (drain, happenings) = (self.drain.clone(), self.happenings.clone());
        let acks = futures::stream::once(async move {
            drain.cancelled().await;
            happenings.record("stream told to drain");
            Ok(IngestStreamResponse { ack: Some(BatchAck { sequence: DRAINED_ACK_SEQUENCE, ..Default::default() }) })
        });
        Ok(Response::new(Box::pin(acks)))
    }

    async fn ingest_batch(
        &self,
        _request: Request<IngestBatchRequest>,
    ) -> Result<Response<IngestBatchResponse>, Status> {
        self.happenings.record("unary call started");
        std::future::pending().await
    }
}

fn config(shutdown_delay_ms: u64, drain_timeout_secs: u64, readiness_interval_ms: u64) -> ServerConfig {
    ServerConfig { shutdown_delay_ms, drain_timeout_secs, readiness_interval_ms, ..hourglass_config::defaults() }
}

/// `server` with the test's ingest service on it.
fn with_test_ingest(server: GrpcServer<'static>, happenings: &Happenings) -> GrpcServer<'static> {
    let service = TestIngest { drain: server.drain_signal(), happenings: happenings.clone() };
    server.add_service(IngestServiceServer::new(service))
}

/// A server serving on a free loopback port: its address, its shutdown token, and its task.
struct Serving {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<Stopped, hourglass_grpc::server::GrpcServerError>>,
}

async fn serve(server: GrpcServer<'static>) -> Serving {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(listener, shutdown.clone()));
    Serving { addr, shutdown, task }
}

impl Serving {
    /// What `serve` returned.
    async fn stopped(self) -> Stopped {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the server returns once its shutdown is done")
            .unwrap()
            .expect("the server stopped without an error")
    }
}

/// A channel on a new connection to `addr`.
async fn connect(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

async fn health(channel: Channel, service: &str) -> i32 {
    let request = HealthCheckRequest { service: service.to_owned() };
    HealthClient::new(channel).check(request).await.unwrap().into_inner().status
}

/// Waits until health reports `expected` for `service`.
async fn wait_for_health(channel: &Channel, service: &str, expected: ServingStatus) {
    let started = Instant::now();
    loop {
        let status = health(channel.clone(), service).await;
        if status == expected as i32 {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "{service:?} never reported {expected:?} (last: {status})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn shutdown_reports_not_serving_while_accepting_then_drains_streams_cuts_calls_and_flushes_last() {
    // The delay is the window in which the test checks that the server still accepts while NOT_SERVING:
    // seconds, for a few local round trips. The drain timeout is what the never-answering call waits.
    let happenings = Happenings::default();
    let flushed = happenings.clone();
    let server = with_test_ingest(GrpcServer::new(config(5_000, 1, 5_000)), &happenings).flush_after_drain(
        "the test's log",
        Duration::from_secs(30),
        move |_deadline| async move {
            flushed.record("flushed");
            Ok::<(), String>(())
        },
    );
    let serving = serve(server).await;
    let channel = connect(serving.addr).await;
    wait_for_health(&channel, "", ServingStatus::Serving).await;

    let mut ingest = IngestServiceClient::new(channel.clone());
    let mut acks = ingest.ingest_stream(futures::stream::pending::<IngestStreamRequest>()).await.unwrap().into_inner();
    let mut unary_client = IngestServiceClient::new(connect(serving.addr).await);
    let unary = tokio::spawn(async move { unary_client.ingest_batch(IngestBatchRequest::default()).await });
    happenings.wait_for("unary call started").await;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest { service: INGEST.to_owned() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);

    serving.shutdown.cancel();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    // NOT_SERVING, and still accepting: a new connection is answered, with NOT_SERVING for every name.
    let late = connect(serving.addr).await;
    assert_eq!(health(late.clone(), "").await, ServingStatus::NotServing as i32);
    assert_eq!(health(late, INGEST).await, ServingStatus::NotServing as i32);
    assert!(!happenings.list().contains(&"stream told to drain"), "drained before the delay: {:?}", happenings.list());

    // Then the stream is told to drain: it acks what it holds and ends cleanly.
    let last_ack = acks.message().await.expect("the stream ends cleanly").expect("an ack before the end");
    assert_eq!(last_ack.ack.unwrap().sequence, DRAINED_ACK_SEQUENCE);
    assert!(acks.message().await.unwrap().is_none(), "the stream ends after draining");
    // And the listener no longer accepts.
    let started = Instant::now();
    while tokio::net::TcpStream::connect(serving.addr).await.is_ok() {
        assert!(started.elapsed() < PATIENCE, "the server still accepts connections after the drain began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The call that ignored the drain is cut once the drain timeout has passed; then the flush runs.
    let cut = tokio::time::timeout(PATIENCE, unary).await.expect("the open call is cut").unwrap();
    assert!(cut.is_err(), "a call still open after the drain timeout is cut: {cut:?}");
    assert_eq!(serving.stopped().await, Stopped::Shutdown);
    assert_eq!(happenings.list(), ["unary call started", "stream told to drain", "flushed"]);
}

#[tokio::test]
async fn a_flush_that_overruns_its_deadline_is_cut_and_the_server_still_returns() {
    let server = GrpcServer::new(config(0, 1, 5_000)).flush_after_drain(
        "a log that never flushes",
        Duration::from_millis(100),
        |_deadline| std::future::pending::<Result<(), String>>(),
    );
    let serving = serve(server).await;
    wait_for_health(&connect(serving.addr).await, "", ServingStatus::Serving).await;
    serving.shutdown.cancel();
    assert_eq!(serving.stopped().await, Stopped::Shutdown);
}

#[tokio::test]
async fn health_follows_a_readiness_check_that_flips() {
    let ready = Arc::new(AtomicBool::new(false));
    let checked = Arc::clone(&ready);
    let happenings = Happenings::default();
    let server = with_test_ingest(GrpcServer::new(config(0, 1, 20)), &happenings).readiness(move || {
        let ready = checked.load(Ordering::SeqCst);
        async move { if ready { Ok(()) } else { Err("the test's backend is down") } }
    });
    let serving = serve(server).await;
    let channel = connect(serving.addr).await;

    for (backend_up, expected) in
        [(false, ServingStatus::NotServing), (true, ServingStatus::Serving), (false, ServingStatus::NotServing)]
    {
        ready.store(backend_up, Ordering::SeqCst);
        wait_for_health(&channel, "", expected).await;
        wait_for_health(&channel, INGEST, expected).await;
    }
    serving.shutdown.cancel();
    assert_eq!(serving.stopped().await, Stopped::Shutdown);
}

#[tokio::test]
async fn every_readiness_check_must_pass() {
    let second_ready = Arc::new(AtomicBool::new(false));
    let checked = Arc::clone(&second_ready);
    let server = GrpcServer::new(config(0, 1, 20)).readiness(|| async { Ok::<(), String>(()) }).readiness(move || {
        let ready = checked.load(Ordering::SeqCst);
        async move { if ready { Ok(()) } else { Err("the second backend is down") } }
    });
    let serving = serve(server).await;
    let channel = connect(serving.addr).await;
    wait_for_health(&channel, "", ServingStatus::NotServing).await;
    second_ready.store(true, Ordering::SeqCst);
    wait_for_health(&channel, "", ServingStatus::Serving).await;
    serving.shutdown.cancel();
    serving.stopped().await;
}

#[tokio::test]
async fn a_stop_event_starts_the_same_shutdown_and_is_reported() {
    let (event_tx, event_rx) = tokio::sync::oneshot::channel::<()>();
    let happenings = Happenings::default();
    // A delay long enough to see NOT_SERVING on a new connection before the server stops accepting.
    let server = with_test_ingest(GrpcServer::new(config(5_000, 1, 5_000)), &happenings).stop_when(async move {
        event_rx.await.unwrap();
        "the test's backend stopped".to_owned()
    });
    let serving = serve(server).await;
    wait_for_health(&connect(serving.addr).await, "", ServingStatus::Serving).await;

    event_tx.send(()).unwrap();
    wait_for_health(&connect(serving.addr).await, INGEST, ServingStatus::NotServing).await;
    assert!(!serving.shutdown.is_cancelled(), "the event, not the shutdown token, stopped it");
    assert_eq!(serving.stopped().await, Stopped::Event("the test's backend stopped".to_owned()));
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_exactly_the_services_served() {
    // The descriptor set also describes the query service, which this server must not offer (grpcurl
    // would then offer calls that fail UNIMPLEMENTED); a health-only name is no service either.
    let happenings = Happenings::default();
    let server = with_test_ingest(GrpcServer::new(config(0, 1, 5_000)), &happenings).health_name("hourglass.test");
    let serving = serve(server).await;
    let channel = connect(serving.addr).await;
    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "hourglass.v1.IngestService",
    ];
    assert_eq!(hourglass_grpc::testing::listed_services_v1(channel.clone()).await, expected);
    assert_eq!(hourglass_grpc::testing::listed_services_v1alpha(channel.clone()).await, expected);
    // Health answers for the health-only name all the same.
    wait_for_health(&channel, "hourglass.test", ServingStatus::Serving).await;
    serving.shutdown.cancel();
    serving.stopped().await;
}

/// One HTTP/1.1 GET of `path` on a new connection, the whole answer as text ("" if the server closed
/// the connection without one).
async fn http1_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A server speaking HTTP/2 only may reset the connection rather than close it: no answer either way.
    let _ =
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await.expect("the server answers or closes");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn web_routes_are_served_over_http1_beside_the_grpc_services_on_http2() {
    let happenings = Happenings::default();
    let page = axum::Router::new().route("/page/", axum::routing::get(|| async { "the page" }));
    let server = with_test_ingest(GrpcServer::new(config(0, 1, 5_000)), &happenings).add_web_routes(page);
    let serving = serve(server).await;

    let answer = http1_get(serving.addr, "/page/").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nthe page"), "{answer}");
    // gRPC on the same port is untouched, and reflection lists no web route.
    let channel = connect(serving.addr).await;
    wait_for_health(&channel, "hourglass.v1.IngestService", ServingStatus::Serving).await;
    assert_eq!(
        hourglass_grpc::testing::listed_services_v1(channel).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "hourglass.v1.IngestService",
        ]
    );
    serving.shutdown.cancel();
    serving.stopped().await;
}

#[tokio::test]
async fn without_web_routes_a_server_speaks_http2_only() {
    let happenings = Happenings::default();
    let serving = serve(with_test_ingest(GrpcServer::new(config(0, 1, 5_000)), &happenings)).await;
    let answer = http1_get(serving.addr, "/page/").await;
    assert!(!answer.starts_with("HTTP/1.1"), "an HTTP/1.1 request got an HTTP/1.1 answer: {answer}");
    serving.shutdown.cancel();
    serving.stopped().await;
}
