//! The ingestor's health for Kubernetes probes: a gRPC server with `grpc.health.v1` (and reflection), reporting
//! SERVING while the raw store and the job queue answer (the Kafka client reconnects on its own, and a
//! consumer that cannot reach Kafka simply makes no progress, which lag alerts catch).

use std::sync::Arc;
use std::time::Duration;

use hourglass_core::job_queue::JobQueue;
use hourglass_core::raw_store::RawStore;
use hourglass_grpc::server::{follow_readiness, set_health};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// The service name health is reported under (besides the empty name, the whole server).
pub const INGESTOR_SERVICE_NAME: &str = "hourglass.ingestor";

/// Serves health on `listener` until `shutdown`; NOT_SERVING from the moment shutdown begins.
pub async fn serve<S: RawStore, Q: JobQueue>(
    listener: TcpListener,
    raw_store: Arc<S>,
    job_queue: Arc<Q>,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (reporter, service) = tonic_health::server::health_reporter();
    set_health(&reporter, &[INGESTOR_SERVICE_NAME], ServingStatus::NotServing).await;
    let checker_shutdown = shutdown.clone();
    let checker = tokio::spawn(async move {
        let check = || async {
            raw_store.check_ready().await.map_err(|error| error.to_string())?;
            job_queue.check_ready().await.map_err(|error| error.to_string())
        };
        follow_readiness(reporter.clone(), &[INGESTOR_SERVICE_NAME], interval, checker_shutdown, check).await;
        set_health(&reporter, &[INGESTOR_SERVICE_NAME], ServingStatus::NotServing).await;
    });
    // Reflection, so grpcurl can ask for health without proto files.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the health descriptor set is valid");
    let result = tonic::transport::Server::builder()
        .add_service(service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(hourglass_grpc::server::incoming(listener), shutdown.cancelled_owned())
        .await;
    let _ = checker.await;
    result
}
