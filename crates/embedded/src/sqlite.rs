//! Opening the SQLite databases of the data directory, all with the same durability settings.
//!
//! WAL journal with `synchronous = FULL`: a committed transaction is on disk (fsynced) before the commit
//! returns, so what the log acknowledged survives a power cut as well as a kill -9. Readers never block
//! the writer and the writer never blocks readers; writers queue on `busy_timeout`.
//!
//! The data directory and every database file (with its `-wal` and `-shm`) are their owner's alone
//! ([`data_dir`](crate::data_dir)).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

use crate::data_dir::{self, FILE_MODE};

/// Why a database of the data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A database file could not be created private, or its permissions tightened.
    #[error("cannot make {path} private to its owner: {source}")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or its schema created.
    #[error("cannot open {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
}

/// How long a writer waits for another writer of the same database before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens (creating if needed) the database `file_name` in `data_dir` with a pool of at most
/// `max_connections`, and runs `schema` (idempotent `CREATE ... IF NOT EXISTS` statements) on it.
pub async fn open(
    data_dir: &Path,
    file_name: &str,
    max_connections: u32,
    schema: &str,
) -> Result<SqlitePool, OpenError> {
    data_dir::create_private_directory(data_dir)
        .map_err(|source| OpenError::DataDir { path: data_dir.to_owned(), source })?;
    let path = data_dir.join(file_name);
    // SQLite would create the file with its default mode (0644 less the umask); created first, it stays
    // private, and SQLite gives the -wal and -shm files the same mode. Those left by an older build are
    // tightened before SQLite opens them.
    for suffix in ["", "-wal", "-shm"] {
        let file = data_dir.join(format!("{file_name}{suffix}"));
        let made_private =
            if suffix.is_empty() { data_dir::create_private_file(&file) } else { data_dir::restrict(&file, FILE_MODE) };
        made_private.map_err(|source| OpenError::Permissions { path: file, source })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        // Reading a whole bucket of a busy hour legitimately takes seconds; sqlx would log each such read
        // as a warning.
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections.max(1))
        // A transaction that SQLite rolled back by itself (SQLITE_FULL at a statement or at the commit does
        // that) leaves sqlx counting it as open on its connection: its rollback finds no transaction and
        // fails. On that connection every later `BEGIN IMMEDIATE` then fails ("attempted to call
        // begin_with at non-zero transaction depth": meta.db's one writer never wrote again), and a plain
        // `begin` becomes a savepoint, through which raw.db's writer reported writes committed that its
        // readers never saw. Such a connection is closed instead of handed out, and the pool opens a new
        // one (crates/embedded/tests/disk_full.rs fails without this).
        .before_acquire(|connection, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(connection)) }))
        .connect_with(options)
        .await
        .map_err(|source| OpenError::Database { path: path.clone(), source })?;
    // Every database also has the table a readiness check writes to while its disk is full.
    for statements in [schema, crate::disk_full::PROBE_SCHEMA] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_owned()))
            .execute(&pool)
            .await
            .map_err(|source| OpenError::Database { path: path.clone(), source })?;
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The power-loss guarantee of standalone (docs/guarantees.md) rests on these two settings holding on
    /// every connection of the pool, not only the first: SQLite applies them per connection.
    #[tokio::test]
    async fn every_connection_commits_through_the_wal_with_an_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(dir.path(), "durable.db", 3, "CREATE TABLE IF NOT EXISTS t (x INTEGER)").await.unwrap();
        let mut connections = Vec::new();
        for _ in 0..3 {
            connections.push(pool.acquire().await.unwrap());
        }
        for connection in &mut connections {
            let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut **connection).await.unwrap();
            assert_eq!(journal, "wal");
            // 2 is FULL: the WAL is fsynced before a commit returns (1, NORMAL, would not survive a power cut).
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut **connection).await.unwrap();
            assert_eq!(synchronous, 2);
        }
    }
}
