//! What Hourglass's gRPC servers (collector, query, standalone) share.
//!
//! - [`auth`]: API-key authentication (`authorization: Bearer hgk_…`) with a short-lived cache. The
//!   customer of every call comes from its key, never from a request (invariant 4 of docs/architecture.md).
//! - [`authenticated`]: a service wrapper that authenticates each call from its headers, before its
//!   body is read or decoded.
//! - [`server`]: hardened HTTP/2 settings, optional TLS, reflection and health helpers.

#![warn(missing_docs)]

pub mod auth;
pub mod authenticated;
pub mod server;
