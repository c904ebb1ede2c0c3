//! Serving the query service: the service on a [`GrpcServer`] with its readiness (the key store, the
//! rollup reader and the raw store answer).
//!
//! [`add_query`] is the piece standalone shares; [`run`] is the query service on its own. Shutdown, when
//! `shutdown` is cancelled, is the server's ordered one (`hourglass_grpc::serve`): health NOT_SERVING →
//! wait `--shutdown-delay-ms` (so balancers stop routing here) → stop accepting and let open calls
//! finish, at most `--drain-timeout-secs`. Queries only read, so there is nothing to flush.

use std::sync::Arc;

use hourglass_core::erasure::ErasureStore;
use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::RawStore;
use hourglass_core::rollup_reader::RollupReader;
use hourglass_core::rollup_store::RollupStore;
use hourglass_grpc::GrpcServer;
use hourglass_grpc::auth::{Authenticator, KeyCacheConfig};
use hourglass_grpc::server::{GrpcServerError, ServerConfig};
use hourglass_proto::query_server::query_service_server::{QueryService, QueryServiceServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic_web::GrpcWebLayer;
use tower_layer::Layer;

use crate::admin::{AdminServiceImpl, admin_server};
use crate::config::{QueryConfig, QueryServerConfig};
use crate::console;
use crate::page_token::PageTokens;
use crate::report_body::{ReportBodyLayer, ReportBodyService};
use crate::service::QueryServiceImpl;
use crate::telemetry;

/// The service name health is reported under (besides the empty name, the whole server): the generated
/// service's own, which [`GrpcServer`] reports and lists for it, so the start-up server names it alike.
pub const QUERY_SERVICE_NAME: &str = hourglass_proto::query_server::query_service_server::SERVICE_NAME;

/// The page-token signer the configuration asks for: its secret, or a random one (with a warning, as
/// replicas then cannot continue each other's pages).
pub fn page_tokens(config: &QueryConfig) -> PageTokens {
    match &config.page_token_secret {
        Some(secret) if !secret.is_empty() => PageTokens::new(secret.as_bytes()),
        _ => {
            tracing::warn!(
                "no --page-token-secret: page tokens are signed with a random secret and only this process accepts them"
            );
            PageTokens::random()
        }
    }
}

/// The gRPC service ([`add_query`] adds it to a server with its readiness): [`query_server`] sending
/// report responses from their kept bodies ([`ReportBodyLayer`]).
pub fn query_service<K: KeyStore, R: RollupReader, W: RawStore>(
    config: QueryConfig,
    server_config: &ServerConfig,
    authenticator: Arc<Authenticator<K>>,
    reader: Arc<R>,
    raw_store: Arc<W>,
) -> ReportBodyService<QueryServiceServer<QueryServiceImpl<K, R, W>>> {
    telemetry::describe();
    let page_tokens = page_tokens(&config);
    let service = QueryServiceImpl::new(authenticator, reader, raw_store, config, page_tokens);
    ReportBodyLayer::new(server_config.max_message_bytes).layer(query_server(service, server_config))
}

/// `service` as tonic serves it, with the server's message limits and gzip both ways: what
/// [`query_service`] wraps, and what tests compare its responses with.
pub fn query_server<S: QueryService>(service: S, server_config: &ServerConfig) -> QueryServiceServer<S> {
    QueryServiceServer::new(service)
        .max_decoding_message_size(server_config.max_message_bytes)
        .max_encoding_message_size(server_config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
}

/// Whether the query service's backends answer: the key store, the rollup reader and the raw store.
pub async fn readiness<K: KeyStore, R: RollupReader, W: RawStore>(
    key_store: Arc<K>,
    reader: Arc<R>,
    raw_store: Arc<W>,
) -> Result<(), String> {
    key_store.check_ready().await.map_err(|error| error.to_string())?;
    reader.check_ready().await.map_err(|error| error.to_string())?;
    raw_store.check_ready().await.map_err(|error| error.to_string())
}

/// `server` with the query service on it (its keys checked through a cache of `key_cache`), and health
/// following [`readiness`]; the service also answers gRPC-Web (HTTP/1.1 or HTTP/2), for the web console
/// served beside it under [`CONSOLE_PATH`](crate::console::CONSOLE_PATH).
pub fn add_query<'a, K: KeyStore, R: RollupReader, W: RawStore>(
    server: GrpcServer<'a>,
    config: QueryConfig,
    key_cache: KeyCacheConfig,
    key_store: Arc<K>,
    reader: Arc<R>,
    raw_store: Arc<W>,
) -> GrpcServer<'a> {
    let authenticator = Arc::new(Authenticator::new(Arc::clone(&key_store), key_cache));
    let service = query_service(config, server.config(), authenticator, Arc::clone(&reader), Arc::clone(&raw_store));
    // gRPC-Web only for this service: the browser console calls nothing else. Plain gRPC still reaches the
    // service untouched (the layer passes HTTP/2 requests that are not gRPC-Web through).
    server
        .add_service(GrpcWebLayer::new().layer(service))
        .add_web_routes(console::console_routes())
        .readiness(move || readiness(Arc::clone(&key_store), Arc::clone(&reader), Arc::clone(&raw_store)))
}

/// `server` with the admin service on it. Its readiness is the query service's: the same key store, and the erasure store
/// lives in the same database.
pub fn add_admin<'a, K: KeyStore, E: ErasureStore, W: RawStore, S: RollupStore>(
    server: GrpcServer<'a>,
    service: AdminServiceImpl<K, E, W, S>,
) -> GrpcServer<'a> {
    let max_message_bytes = server.config().max_message_bytes;
    server.add_service(admin_server(service, max_message_bytes))
}

/// Runs the query service on `listener` until `shutdown` is cancelled, then shuts down in order.
pub async fn run<K: KeyStore, R: RollupReader, W: RawStore>(
    config: QueryServerConfig,
    key_store: Arc<K>,
    reader: Arc<R>,
    raw_store: Arc<W>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GrpcServerError> {
    let QueryServerConfig { query, server, key_cache } = config;
    let server = add_query(GrpcServer::new(server), query, key_cache, key_store, reader, raw_store);
    serve(server, listener, shutdown).await
}

/// [`run`] with the admin service beside the query service: the query role's server.
#[allow(clippy::too_many_arguments)]
pub async fn run_with_admin<K: KeyStore, R: RollupReader, W: RawStore, E: ErasureStore, S: RollupStore>(
    config: QueryServerConfig,
    key_store: Arc<K>,
    reader: Arc<R>,
    raw_store: Arc<W>,
    admin: AdminServiceImpl<K, E, W, S>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GrpcServerError> {
    let QueryServerConfig { query, server, key_cache } = config;
    let server = add_query(GrpcServer::new(server), query, key_cache, key_store, reader, raw_store);
    serve(add_admin(server, admin), listener, shutdown).await
}

async fn serve(
    server: GrpcServer<'_>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GrpcServerError> {
    let local_addr = listener.local_addr().ok();
    tracing::info!(listen_addr = ?local_addr, console_path = console::CONSOLE_PATH, "query service serving");
    server.serve(listener, shutdown).await?;
    tracing::info!("shutdown complete");
    Ok(())
}
