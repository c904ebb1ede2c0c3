//! Errors that stop the collector (start-up and serving). Per-call errors are gRPC statuses, mapped
//! where they arise (`auth.rs`, `service.rs`).

/// Why the collector could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The gRPC server could not start or failed.
    #[error(transparent)]
    Server(#[from] hourglass_grpc::server::GrpcServerError),
    /// The gRPC server failed while serving.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}
