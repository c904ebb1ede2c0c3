//! Hourglass's public contract, generated from `proto/` at build time.
//!
//! - [`v1`]: the gRPC API that SDKs are generated from (events, ingest, query).
//! - [`log::v1`]: the format of the records Hourglass writes to its event log (Kafka), shared by the
//!   collector that writes them and the stages that read them.
//! - [`FILE_DESCRIPTOR_SET`]: every message and service, for gRPC server reflection.
//! - [`query_server`]: the query service's server with its report responses kept encoded
//!   ([`encoded::Encoded`]), for the service that caches them; same methods, same bytes on the wire.

#![warn(missing_docs)]

/// The public API, package `hourglass.v1`.
#[allow(missing_docs)]
pub mod v1 {
    tonic::include_proto!("hourglass.v1");
}

pub mod encoded;

/// `hourglass.v1.QueryService`'s server generated a second time, with the two report responses as
/// [`Encoded`](encoded::Encoded) messages: the query service hands the transport bytes it encoded once
/// (and cached), and clients ([`v1::query_service_client`], or any other) decode the same messages. The
/// other types are [`v1`]'s; [`v1::query_service_server`] stays as generated from the proto.
pub mod query_server {
    /// A `GetHourlyMetricsResponse` kept as its encoding.
    pub type EncodedGetHourlyMetricsResponse = crate::encoded::Encoded<crate::v1::GetHourlyMetricsResponse>;
    /// A `GetPeriodMetricsResponse` kept as its encoding.
    pub type EncodedGetPeriodMetricsResponse = crate::encoded::Encoded<crate::v1::GetPeriodMetricsResponse>;

    include!(concat!(env!("OUT_DIR"), "/query_server/hourglass.v1.rs"));
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
