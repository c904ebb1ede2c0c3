//! Hourglass's query service: gRPC reports over the hourly rollups, for apps, grpcurl and generated SDKs.
//!
//! - [`service`]: `hourglass.v1.QueryService`. The customer comes from the API key (scope `query`) and
//!   nowhere else, so a key can never read another customer's data.
//! - [`admin`]: `hourglass.admin.v1.AdminService`, erasure requests (scope `admin`), served beside the
//!   query service by the query role and standalone; the aggregator runs what it records.
//! - [`report`]: hourly rows summed over event types and into days, ISO weeks and months; distinct
//!   users of merged rows come from merged HyperLogLog sketches and say they are estimates.
//! - [`cache`]: report responses kept in memory, encoded, and used only while the range's rollups are
//!   unchanged; the service is `hourglass_proto::query_server`'s, whose report responses are encoded ones.
//! - [`report_body`]: a report response sent from the bytes the cache keeps (and their gzip form,
//!   compressed once), instead of tonic copying, and compressing, them for every request.
//! - [`page_token`]: opaque, signed page tokens bound to the query they continue.
//! - [`console`]: the web console's files (built from `console/` and embedded), served under `/console/`
//!   beside the service, which answers the page over gRPC-Web.
//! - [`server`]: [`run`], the service on its own [`GrpcServer`](hourglass_grpc::GrpcServer) (health
//!   following readiness, reflection, the ordered shutdown), and [`add_query`], the same on a server shared
//!   with ingest (standalone's).
//!
//! It reads through the [`RollupReader`](hourglass_core::rollup_reader::RollupReader) seam, which the
//! binary points at a Postgres read replica when one is configured, and the
//! [`RawStore`](hourglass_core::raw_store::RawStore) for raw-event lookups.

#![warn(missing_docs)]

pub mod admin;
pub mod cache;
pub mod config;
pub mod console;
pub mod error;
pub mod page_token;
pub mod report;
pub mod report_body;
pub mod server;
pub mod service;
pub mod telemetry;

pub use config::{QueryConfig, QueryServerConfig};
pub use server::{add_admin, add_query, query_server, query_service, run, run_with_admin};
