//! The Postgres schema, embedded from `migrations/`.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// Every migration of the schema, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies pending migrations; a no-op when the schema is current.
pub async fn run(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// The newest migration this build knows.
pub fn latest_version() -> i64 {
    MIGRATOR.iter().map(|migration| migration.version).max().unwrap_or(0)
}

/// Whether the database has every migration this build knows.
pub async fn is_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?;
    Ok(applied.is_some_and(|version| version >= latest_version()))
}
