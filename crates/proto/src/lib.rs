//! Hourglass's public contract, generated from `proto/` at build time.
//!
//! - [`v1`]: the gRPC API that SDKs are generated from (events, ingest, query).
//! - [`log::v1`]: the format of the records Hourglass writes to its event log (Kafka), shared by the
//!   collector that writes them and the stages that read them.
//! - [`FILE_DESCRIPTOR_SET`]: every message and service, for gRPC server reflection.

#![warn(missing_docs)]

/// The public API, package `hourglass.v1`.
#[allow(missing_docs)]
pub mod v1 {
    tonic::include_proto!("hourglass.v1");
}

/// Formats of records in the event log.
pub mod log {
    /// Version 1 of the event-log record format, package `hourglass.log.v1`.
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("hourglass.log.v1");
    }
}

/// The encoded `FileDescriptorSet` of every file in `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hourglass_descriptor.bin"));

/// Well-known protobuf types used by the messages (timestamps).
pub use prost_types;
