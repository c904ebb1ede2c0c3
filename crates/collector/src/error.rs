//! Errors that stop the collector (start-up and serving). Per-call errors are gRPC statuses, mapped
//! where they arise (`auth.rs`, `service.rs`).

/// Why the collector could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The TLS certificate or key could not be read.
    #[error("failed to read TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set.
    #[error("failed to build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}
