//! Serving the query service: health following readiness, reflection, and the ordered shutdown.
//!
//! Shutdown, when `shutdown` is cancelled: health goes NOT_SERVING → wait `--shutdown-delay-ms` (so
//! balancers stop routing here) → stop accepting and let open calls finish, at most
//! `--drain-timeout-secs`. Queries only read, so nothing is at stake beyond the calls themselves.

use std::sync::Arc;
use std::time::Duration;

use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::RawStore;
use hourglass_core::rollup_reader::RollupReader;
use hourglass_grpc::auth::{Authenticator, KeyCacheConfig};
use hourglass_grpc::server::{self, GrpcServerError, ServerConfig, set_health};
use hourglass_proto::v1::query_service_server::QueryServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic_health::ServingStatus;

use crate::config::QueryConfig;
use crate::page_token::PageTokens;
use crate::service::QueryServiceImpl;
use crate::telemetry;

/// The service name health is reported under (besides the empty name, the whole server).
pub const QUERY_SERVICE_NAME: &str = "hourglass.v1.QueryService";

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

/// The gRPC service, ready to add to a router (the standalone server adds it beside ingest).
pub fn query_service<K: KeyStore, R: RollupReader, W: RawStore>(
    config: QueryConfig,
    server_config: &ServerConfig,
    authenticator: Arc<Authenticator<K>>,
    reader: Arc<R>,
    raw_store: Arc<W>,
) -> QueryServiceServer<QueryServiceImpl<K, R, W>> {
    telemetry::describe();
    let page_tokens = page_tokens(&config);
    QueryServiceServer::new(QueryServiceImpl::new(authenticator, reader, raw_store, config, page_tokens))
        .max_decoding_message_size(server_config.max_message_bytes)
        .max_encoding_message_size(server_config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
}

/// What the query service needs to run on its own.
pub struct QueryServer<K, R, W> {
    /// The service's limits and page-token secret.
    pub config: QueryConfig,
    /// HTTP/2 limits, TLS, drain timing.
    pub server: ServerConfig,
    /// How long a key look-up is trusted.
    pub key_cache: KeyCacheConfig,
    /// API keys.
    pub key_store: Arc<K>,
    /// Rollups, statuses and the ledger (a read replica, when there is one).
    pub reader: Arc<R>,
    /// Raw events, for ListRawEvents.
    pub raw_store: Arc<W>,
}

impl<K: KeyStore, R: RollupReader, W: RawStore> QueryServer<K, R, W> {
    /// Serves on `listener` until `shutdown` is cancelled, then shuts down in order.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> Result<(), GrpcServerError> {
        let local_addr = listener.local_addr().ok();
        let authenticator = Arc::new(Authenticator::new(Arc::clone(&self.key_store), self.key_cache.clone()));
        let (health_reporter, router) = server::router_with_health(&self.server, &[QUERY_SERVICE_NAME]).await?;
        let stop_readiness = CancellationToken::new();
        let readiness = {
            let (key_store, reader, raw_store) =
                (Arc::clone(&self.key_store), Arc::clone(&self.reader), Arc::clone(&self.raw_store));
            let (health_reporter, stop) = (health_reporter.clone(), stop_readiness.clone());
            let interval = Duration::from_millis(self.server.readiness_interval_ms);
            tokio::spawn(async move {
                let check = || async {
                    key_store.check_ready().await.map_err(|error| error.to_string())?;
                    reader.check_ready().await.map_err(|error| error.to_string())?;
                    raw_store.check_ready().await.map_err(|error| error.to_string())
                };
                server::follow_readiness(health_reporter, &[QUERY_SERVICE_NAME], interval, stop, check).await;
            })
        };
        let service = query_service(self.config, &self.server, authenticator, self.reader, self.raw_store);
        let stop_serving = CancellationToken::new();
        let serve = router
            .add_service(service)
            .serve_with_incoming_shutdown(server::incoming(listener), stop_serving.clone().cancelled_owned());
        let mut serve = std::pin::pin!(serve);
        tracing::info!(listen_addr = ?local_addr, "query service serving");

        tokio::select! {
            result = &mut serve => {
                stop_readiness.cancel();
                return Ok(result?);
            }
            () = shutdown.cancelled() => {}
        }
        tracing::info!("shutdown: reporting NOT_SERVING");
        stop_readiness.cancel();
        readiness.abort();
        set_health(&health_reporter, &[QUERY_SERVICE_NAME], ServingStatus::NotServing).await;
        tokio::time::sleep(Duration::from_millis(self.server.shutdown_delay_ms)).await;
        tracing::info!("shutdown: finishing open calls");
        stop_serving.cancel();
        match tokio::time::timeout(Duration::from_secs(self.server.drain_timeout_secs), &mut serve).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!("shutdown: calls still open after the drain timeout are cut"),
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}
