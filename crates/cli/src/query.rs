//! `hourglass query`: wires the query service to Postgres (keys; rollups, from a read replica when one is
//! configured) and the CQL raw store (raw-event lookups).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hourglass_config::ErasureConfig;
use hourglass_core::retention::RawRetention;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_grpc::auth::Authenticator;
use hourglass_grpc::auth::KeyCacheConfig;
use hourglass_grpc::server::{ServerConfig, not_serving_while};
use hourglass_postgres::{PostgresConfig, PostgresErasureStore, PostgresKeyStore, PostgresRollupStore};
use hourglass_query::admin::{ADMIN_SERVICE_NAME, AdminServiceImpl};
use hourglass_query::{QueryConfig, QueryServerConfig};
use tokio::net::TcpListener;

use crate::{shutdown, startup};

/// Flags of `hourglass query`.
#[derive(clap::Args)]
pub struct QueryArgs {
    /// Address the gRPC server listens on.
    #[arg(long = "listen-addr", env = "HOURGLASS_QUERY_LISTEN_ADDR", default_value = "0.0.0.0:50052")]
    listen_addr: SocketAddr,
    /// Postgres URL of a read replica to serve reports from (rollups, statuses, ledger). API keys are
    /// always checked on the primary, so a revocation takes effect without replication lag.
    #[arg(long = "read-database-url", env = "HOURGLASS_READ_DATABASE_URL", hide_env_values = true)]
    read_database_url: Option<String>,
    #[command(flatten)]
    query: QueryConfig,
    #[command(flatten)]
    server: ServerConfig,
    #[command(flatten)]
    key_cache: KeyCacheConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
    #[command(flatten)]
    cql: CqlConfig,
    #[command(flatten)]
    erasure: ErasureConfig,
}

/// Runs the query service, and the admin service beside it, until SIGTERM. It listens at once and reports NOT_SERVING until Postgres and
/// the CQL keyspace are ready.
pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let listener = TcpListener::bind(args.listen_addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen_addr))?;
    println!("query service listening on {}", listener.local_addr()?);
    let opening = async {
        let primary = startup::open_with_retry("postgres", &shutdown, || args.postgres.open()).await?;
        let reader = match &args.read_database_url {
            Some(url) => {
                let replica = PostgresConfig { url: url.clone(), migrate: false, ..args.postgres.clone() };
                tracing::info!("reports read from the read replica");
                PostgresRollupStore::new(replica.connect_lazy().context("invalid --read-database-url")?)
            }
            None => PostgresRollupStore::new(primary.clone()),
        };
        let raw_store =
            startup::open_with_retry("the CQL raw store", &shutdown, || CqlRawStore::open(&args.cql)).await?;
        anyhow::Ok((primary, reader, raw_store))
    };
    let services = [hourglass_query::server::QUERY_SERVICE_NAME, ADMIN_SERVICE_NAME];
    let (listener, opened) = not_serving_while(listener, &args.server, &services, &[], opening).await?;
    let (primary, reader, raw_store) = opened?;
    let key_store = Arc::new(PostgresKeyStore::new(primary.clone()));
    let raw_store = Arc::new(raw_store);
    // Erasure requests are recorded on the primary, never the replica; a dry run lists hours from it too.
    let admin = AdminServiceImpl::new(
        Arc::new(Authenticator::new(Arc::clone(&key_store), args.key_cache.clone())),
        Arc::new(PostgresErasureStore::new(primary.clone())),
        Arc::clone(&raw_store),
        Arc::new(PostgresRollupStore::new(primary)),
        &args.erasure,
        RawRetention::from_days(i64::from(args.cql.ttl_days)),
    )
    .context("refusing to start")?;
    let config = QueryServerConfig { query: args.query, server: args.server, key_cache: args.key_cache };
    hourglass_query::run_with_admin(config, key_store, Arc::new(reader), raw_store, admin, listener, shutdown).await?;
    Ok(())
}
