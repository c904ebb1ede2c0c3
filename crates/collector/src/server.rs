//! Serving: the gRPC server with health and reflection, readiness, and the ordered shutdown.
//!
//! Shutdown, when `shutdown` is cancelled: health goes NOT_SERVING → wait `--shutdown-delay-ms` (so
//! balancers stop routing here) → streams stop reading, ack what they hold and close; the server stops
//! accepting and waits for calls to end, at most `--drain-timeout-secs` → the event log flushes, at most
//! `--flush-timeout-secs`. Nothing acked is ever at stake: an ack is only sent once Kafka has the batch.

use std::sync::Arc;
use std::time::Duration;

use hourglass_core::api_key::Scope;
use hourglass_core::event_log::EventLog;
use hourglass_core::key_store::KeyStore;
use hourglass_grpc::authenticated::Authenticated;
use hourglass_grpc::server::{self, ServerConfig, set_health};
use hourglass_proto::v1::ingest_service_server::IngestServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic_health::ServingStatus;

use crate::batch::Collector;
use crate::config::CollectorConfig;
use crate::error::CollectorError;
use crate::service::IngestServiceImpl;
use crate::telemetry;

/// The service name health is reported under (besides the empty name, the whole server).
pub const INGEST_SERVICE_NAME: &str = "hourglass.v1.IngestService";

/// Room above `--max-batch-bytes` for a message's own fields and framing.
const BATCH_FRAMING_BYTES: usize = 64 * 1024;

/// The gRPC service, ready to add to a router (the standalone server adds it beside the query service).
/// Every call is authenticated from its headers before its message is read or decoded. Cancelling
/// `drain` makes its streams stop reading, ack what they hold and close.
pub fn ingest_service<K: KeyStore, L: EventLog>(
    collector: Arc<Collector<K, L>>,
    drain: CancellationToken,
    server_config: &ServerConfig,
) -> Authenticated<IngestServiceServer<IngestServiceImpl<K, L>>, K> {
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

/// Runs the collector on `listener` until `shutdown` is cancelled, then shuts down in order.
pub async fn run<K: KeyStore, L: EventLog>(
    config: CollectorConfig,
    key_store: Arc<K>,
    event_log: Arc<L>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), CollectorError> {
    telemetry::describe();
    let server_config = config.server.clone();
    let config_flush_timeout_secs = config.streams.flush_timeout_secs;
    let local_addr = listener.local_addr().ok();
    let collector = Arc::new(Collector::new(config, Arc::clone(&key_store), Arc::clone(&event_log)));
    let drain = CancellationToken::new();

    let (health_reporter, router) = server::router_with_health(&server_config, &[INGEST_SERVICE_NAME]).await?;
    let readiness = {
        let (key_store, event_log) = (Arc::clone(&key_store), Arc::clone(&event_log));
        let (health_reporter, readiness_stop) = (health_reporter.clone(), drain.clone());
        let interval = Duration::from_millis(server_config.readiness_interval_ms);
        tokio::spawn(async move {
            let check = || async {
                event_log.check_ready().await.map_err(|error| error.to_string())?;
                key_store.check_ready().await.map_err(|error| error.to_string())
            };
            server::follow_readiness(health_reporter, &[INGEST_SERVICE_NAME], interval, readiness_stop, check).await;
        })
    };

    let ingest = ingest_service(collector, drain.clone(), &server_config);

    let router = router.add_service(ingest);
    let serve = router.serve_with_incoming_shutdown(server::incoming(listener), drain.clone().cancelled_owned());
    let mut serve = std::pin::pin!(serve);
    tracing::info!(listen_addr = ?local_addr, "collector serving");

    tokio::select! {
        result = &mut serve => {
            drain.cancel();
            result?;
            return Ok(());
        }
        () = shutdown.cancelled() => {}
    }

    tracing::info!("shutdown: reporting NOT_SERVING");
    set_health(&health_reporter, &[INGEST_SERVICE_NAME], ServingStatus::NotServing).await;
    readiness.abort();
    tokio::time::sleep(Duration::from_millis(server_config.shutdown_delay_ms)).await;
    tracing::info!("shutdown: draining streams");
    drain.cancel();
    match tokio::time::timeout(Duration::from_secs(server_config.drain_timeout_secs), &mut serve).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!(
            drain_timeout_secs = server_config.drain_timeout_secs,
            "shutdown: calls still open after the drain timeout are cut; their unacked batches are the clients' to resend"
        ),
    }
    tracing::info!("shutdown: flushing the event log");
    if let Err(error) = event_log.flush(Duration::from_secs(config_flush_timeout_secs)).await {
        tracing::warn!(%error, "shutdown: event log flush incomplete (no acked batch is affected)");
    }
    tracing::info!("shutdown complete");
    Ok(())
}
