//! The ingestor's health for Kubernetes probes: a [`GrpcServer`] with no service of its own, so only
//! `grpc.health.v1` and reflection (v1 and v1alpha, listing exactly those), with the same hardened settings
//! and ordered shutdown as every Hourglass server. It reports SERVING, for the whole server and for
//! [`INGESTOR_SERVICE_NAME`], while the raw store and the job queue answer (the Kafka client reconnects on
//! its own, and a consumer that cannot reach Kafka simply makes no progress, which lag alerts catch), and
//! NOT_SERVING from the moment shutdown begins.

use std::sync::Arc;

use hourglass_core::job_queue::JobQueue;
use hourglass_core::raw_store::RawStore;
use hourglass_grpc::GrpcServer;
use hourglass_grpc::server::{GrpcServerError, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The name health also reports under (besides the empty name, the whole server). No service has it:
/// reflection does not list it.
pub const INGESTOR_SERVICE_NAME: &str = "hourglass.ingestor";

/// Whether the ingestor's stores answer: the raw store and the job queue.
pub async fn readiness<S: RawStore, Q: JobQueue>(raw_store: Arc<S>, job_queue: Arc<Q>) -> Result<(), String> {
    raw_store.check_ready().await.map_err(|error| error.to_string())?;
    job_queue.check_ready().await.map_err(|error| error.to_string())
}

/// Serves health on `listener` until `shutdown` is cancelled, then shuts down in order.
pub async fn run<S: RawStore, Q: JobQueue>(
    config: ServerConfig,
    raw_store: Arc<S>,
    job_queue: Arc<Q>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GrpcServerError> {
    GrpcServer::new(config)
        .health_name(INGESTOR_SERVICE_NAME)
        .readiness(move || readiness(Arc::clone(&raw_store), Arc::clone(&job_queue)))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
