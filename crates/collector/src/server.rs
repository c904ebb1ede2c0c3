//! Serving the collector: the ingest service on a [`GrpcServer`], its readiness (the event log and the
//! key store answer) and its flush.
//!
//! [`add_ingest`] is the piece standalone shares; [`run`] is the collector on its own. Shutdown, when
//! `shutdown` is cancelled, is the server's ordered one (`hourglass_grpc::serve`): health NOT_SERVING →
//! wait `--shutdown-delay-ms` (so balancers stop routing here) → streams stop reading, ack what they hold
//! and close; the server stops accepting and waits for calls to end, at most `--drain-timeout-secs` →
//! the event log flushes, at most `--flush-timeout-secs`. Nothing acked is ever at stake: an ack is only
//! sent once the event log has the batch (invariant 1 of docs/architecture.md).

use std::sync::Arc;
use std::time::Duration;

use hourglass_core::api_key::Scope;
use hourglass_core::event_log::EventLog;
use hourglass_core::key_store::KeyStore;
use hourglass_core::tracking_plan::store::PlanStore;
use hourglass_grpc::GrpcServer;
use hourglass_grpc::authenticated::Authenticated;
use hourglass_grpc::server::ServerConfig;
use hourglass_proto::wire::v1::ingest_service_server::IngestServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

use crate::batch::Collector;
use crate::config::CollectorConfig;
use crate::error::CollectorError;
use crate::service::IngestServiceImpl;
use crate::telemetry;

/// The service name health is reported under (besides the empty name, the whole server): the generated
/// service's own, which [`GrpcServer`] reports and lists for it, so the start-up server names it alike.
/// The server is `hourglass_proto::wire`'s, whose name is the public service's (a test checks it).
pub const INGEST_SERVICE_NAME: &str = hourglass_proto::wire::v1::ingest_service_server::SERVICE_NAME;

/// Room above `--max-batch-bytes` for a message's own fields and framing.
const BATCH_FRAMING_BYTES: usize = 64 * 1024;

/// The gRPC service ([`add_ingest`] adds it to a server with its readiness and flush). Every call is
/// authenticated from its headers before its message is read or decoded. Cancelling `drain` makes its
/// streams stop reading, ack what they hold and close.
pub fn ingest_service<K: KeyStore, P: PlanStore, L: EventLog>(
    collector: Arc<Collector<K, P, L>>,
    drain: CancellationToken,
    server_config: &ServerConfig,
) -> Authenticated<IngestServiceServer<IngestServiceImpl<K, P, L>>, K> {
    telemetry::describe();
    let authenticator = Arc::clone(&collector.authenticator);
    // A message is bounded by the batch limit (plus framing), not only by the server-wide message
    // limit: what one call can make the collector decode is bounded by what a batch may be.
    let max_decoded_message_bytes = server_config
        .max_message_bytes
        .min(collector.config.limits.max_batch_bytes.saturating_add(BATCH_FRAMING_BYTES));
    let service = IngestServiceServer::new(IngestServiceImpl::new(collector, drain))
        .max_decoding_message_size(max_decoded_message_bytes)
        .max_encoding_message_size(server_config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    Authenticated::new(service, authenticator, Scope::Ingest, crate::service::count_refused)
}

/// Whether the collector's backends answer: the event log (the broker) and the key store.
pub async fn readiness<K: KeyStore, L: EventLog>(key_store: Arc<K>, event_log: Arc<L>) -> Result<(), String> {
    event_log.check_ready().await.map_err(|error| error.to_string())?;
    key_store.check_ready().await.map_err(|error| error.to_string())
}

/// `server` with the collector on it: the ingest service, whose streams drain with the server; health
/// following [`readiness`]; and, after the drain, the event log's flush within `--flush-timeout-secs`.
pub fn add_ingest<'a, K: KeyStore, P: PlanStore, L: EventLog>(
    server: GrpcServer<'a>,
    config: CollectorConfig,
    key_store: Arc<K>,
    plan_store: Arc<P>,
    event_log: Arc<L>,
) -> GrpcServer<'a> {
    let flush_timeout = Duration::from_secs(config.streams.flush_timeout_secs);
    let collector = Arc::new(Collector::new(config, Arc::clone(&key_store), plan_store, Arc::clone(&event_log)));
    let ingest = ingest_service(collector, server.drain_signal(), server.config());
    let readiness_event_log = Arc::clone(&event_log);
    server
        .add_service(ingest)
        .readiness(move || readiness(Arc::clone(&key_store), Arc::clone(&readiness_event_log)))
        .flush_after_drain(
            "the event log",
            flush_timeout,
            move |deadline| async move { event_log.flush(deadline).await },
        )
}

/// Runs the collector on `listener` until `shutdown` is cancelled, then shuts down in order.
pub async fn run<K: KeyStore, P: PlanStore, L: EventLog>(
    config: CollectorConfig,
    key_store: Arc<K>,
    plan_store: Arc<P>,
    event_log: Arc<L>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), CollectorError> {
    let local_addr = listener.local_addr().ok();
    let server = add_ingest(GrpcServer::new(config.server.clone()), config, key_store, plan_store, event_log);
    tracing::info!(listen_addr = ?local_addr, "collector serving");
    server.serve(listener, shutdown).await?;
    tracing::info!("shutdown complete");
    Ok(())
}
