//! What Hourglass's gRPC servers (collector, query, the ingestor's health, standalone) share.
//!
//! - [`auth`]: API-key authentication (`authorization: Bearer hgk_…`) with a short-lived cache. The
//!   customer of every call comes from its key, never from a request (invariant 4 of docs/architecture.md).
//! - [`authenticated`]: a service wrapper that authenticates each call from its headers, before its
//!   body is read or decoded.
//! - [`server`]: the settings every server shares (hardened HTTP/2 limits, optional TLS), reflection and
//!   health helpers, and the start-up server a role shows while it waits for its backends.
//! - [`serve`]: [`GrpcServer`], the one way a server serves (health following
//!   readiness, reflection listing exactly its services) and shuts down in order (NOT_SERVING → delay →
//!   drain with a deadline → flush → return).
//! - `connections.rs` and `streams.rs`: the connections a server accepts, bounded in number, closed
//!   when idle (their open calls counted) and cut at shutdown.
//! - [`telemetry`]: the metric names of those connections.
//! - [`testing`]: for tests of such servers: what reflection lists, in both protocol versions.

#![warn(missing_docs)]

pub mod auth;
pub mod authenticated;
mod connections;
pub mod serve;
pub mod server;
mod streams;
pub mod telemetry;
pub mod testing;

pub use serve::{GrpcServer, Stopped};
