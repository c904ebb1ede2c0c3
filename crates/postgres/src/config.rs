//! Postgres connection settings, from flags and `HOURGLASS_DATABASE_*` environment variables.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

/// How Hourglass connects to Postgres.
#[derive(Clone, Debug, clap::Args)]
pub struct PostgresConfig {
    /// Postgres URL. The default is the database `e2e/servers/postgres.sh` creates.
    #[arg(
        long = "database-url",
        env = "HOURGLASS_DATABASE_URL",
        default_value = "postgres://hourglass:hourglass@127.0.0.1:5432/hourglass",
        hide_env_values = true
    )]
    pub url: String,

    /// The most connections this process opens.
    #[arg(long = "database-max-connections", env = "HOURGLASS_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub max_connections: u32,

    /// How long to wait for a connection before failing the request.
    #[arg(
        long = "database-acquire-timeout-ms",
        env = "HOURGLASS_DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub acquire_timeout_ms: u64,

    /// Apply pending schema migrations at start-up. Deployments that run `hourglass migrate postgres`
    /// as a separate step set this to false.
    #[arg(
        long = "database-migrate",
        env = "HOURGLASS_DATABASE_MIGRATE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub migrate: bool,
}

impl PostgresConfig {
    /// A configuration for `url` with every other setting at its default.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..hourglass_core::config::defaults() }
    }

    /// Opens a pool and, unless `--database-migrate false`, applies pending migrations: what every
    /// command that uses Postgres does first.
    pub async fn open(&self) -> Result<PgPool, OpenError> {
        let pool = self.connect_lazy().map_err(OpenError::Url)?;
        if self.migrate {
            crate::migrate::run(&pool).await.map_err(OpenError::Migrate)?;
        }
        Ok(pool)
    }

    /// Opens a pool. Connections are made lazily, so this succeeds while the database is down; the
    /// first query tells.
    pub fn connect_lazy(&self) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            .connect_lazy(&self.url)
    }
}

/// Why [`PostgresConfig::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not a valid Postgres URL.
    #[error("invalid database url: {0}")]
    Url(#[source] sqlx::Error),
    /// Migrations could not be applied (the database may be down).
    #[error("failed to apply postgres migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}
