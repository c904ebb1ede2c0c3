//! A full disk under the data directory: telling it from other failures, and what a database does while
//! its disk is full.
//!
//! A full disk is a condition an operator fixes (deletes files, grows the volume), not a fault of the
//! data: SQLite rolls back the transaction that hit it, so nothing committed is lost and nothing half
//! written is visible, and the same write succeeds once there is room. So each database keeps a
//! [`DiskFull`] state that its writes report to: the first write refused for space logs one error
//! naming the file and sets `hourglass_embedded_disk_full{database}` to 1; while it lasts, readiness
//! fails with that message (standalone's health is NOT_SERVING) and every readiness check probes for
//! room. Callers retry their writes as they retry any unavailable store; nothing here retries on its own.
//!
//! Only the probe ends the condition, and only with room to spare: a one-row write must commit *and*
//! the file system must have [`RESUME_FREE_BYTES`] available. A write that succeeds is no evidence of
//! room: one that changed nothing (a lease finding no job) writes nothing, and SQLite reuses space its
//! files already hold (a WAL restarted from its beginning, freed pages), so writes can succeed for a
//! while on a full disk. Ending the condition on those would flap between full and not full, logging
//! each time; a write that does succeed meanwhile is durable all the same.
//!
//! Any other failure (a corrupt or unreadable file, an I/O error other than no space) is not this
//! condition and keeps its own handling.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::telemetry;

/// The table every database of the data directory has for [`DiskFull::probe`]: one row, rewritten.
pub(crate) const PROBE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS disk_space_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at_ms INTEGER NOT NULL
);
";

/// Free space the file system must have, besides a probe's write succeeding, for a full disk to count
/// as having room again.
pub const RESUME_FREE_BYTES: u64 = 8 * 1024 * 1024;

/// The statement of a probe: a committed write of one row, which needs room in the WAL as any write does.
pub(crate) const PROBE_STATEMENT: &str = "INSERT INTO disk_space_probe (id, probed_at_ms) VALUES (1, ?1) \
     ON CONFLICT (id) DO UPDATE SET probed_at_ms = excluded.probed_at_ms";

/// SQLite's primary result code for "database or disk is full" (`SQLITE_FULL`): what a write gets when
/// the file system answers ENOSPC (SQLite's unix VFS maps it so) or the database reached its maximum size.
const SQLITE_FULL: i32 = 13;
/// `SQLITE_IOERR_SHMSIZE`: the WAL index (`-shm`) could not be extended, which on a local file system
/// means no space for it.
const SQLITE_IOERR_SHMSIZE: i32 = 10 | (19 << 8);

/// Whether `error` is SQLite refusing a write for want of space.
pub fn is_disk_full(error: &sqlx::Error) -> bool {
    let Some(code) = error.as_database_error().and_then(|database_error| database_error.code()) else {
        return false;
    };
    // sqlx gives SQLite's extended result code; its low byte is the primary code.
    code.parse::<i32>().is_ok_and(|code| code & 0xff == SQLITE_FULL || code == SQLITE_IOERR_SHMSIZE)
}

/// A write refused for want of space, naming the file; what clients and the health check are told.
#[derive(Debug, thiserror::Error)]
#[error(
    "no space left on the disk of {path}: free space in the data directory's file system; writes resume by \
     themselves once there is room ({reason})"
)]
pub struct DiskFullError {
    /// The database file.
    pub path: PathBuf,
    /// What found no room: SQLite's error, or the free space a probe measured.
    pub reason: String,
}

/// Whether one database's disk is full, as its last write found it. See the module documentation.
#[derive(Debug)]
pub(crate) struct DiskFull {
    /// The file's name in the data directory (`log.db`, `raw.db`, `meta.db`): the metric's label.
    database: &'static str,
    path: PathBuf,
    full: AtomicBool,
}

impl DiskFull {
    /// The state of `file_name` in `data_dir`: not full.
    pub(crate) fn new(data_dir: &Path, file_name: &'static str) -> Self {
        telemetry::describe();
        metrics::gauge!(telemetry::DISK_FULL, "database" => file_name).set(0.0);
        Self { database: file_name, path: data_dir.join(file_name), full: AtomicBool::new(false) }
    }

    /// Whether the last write found the disk full.
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Notes how a write ended (a whole transaction: a refusal may come at any statement or at the
    /// commit) and gives its result back, a refusal for space as a [`DiskFullError`] naming the file.
    /// A success changes nothing (see the module documentation).
    pub(crate) fn observe<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, WriteError> {
        match result {
            Ok(value) => Ok(value),
            Err(error) if is_disk_full(&error) => Err(self.refused(error.to_string())),
            Err(error) => Err(WriteError::Database(error)),
        }
    }

    /// Enters the condition (logging it if it is new) and gives the error for `reason`.
    fn refused(&self, reason: String) -> WriteError {
        let refused = DiskFullError { path: self.path.clone(), reason };
        if !self.full.swap(true, Ordering::AcqRel) {
            metrics::gauge!(telemetry::DISK_FULL, "database" => self.database).set(1.0);
            tracing::error!(
                        database = self.database,
                        error = %refused,
                "disk full: writes are refused until there is room (nothing committed is lost); health is \
                 NOT_SERVING meanwhile"
            );
        }
        WriteError::DiskFull(refused)
    }

    /// For readiness: `Ok` unless the disk was full; then a probe (see the module documentation) on
    /// `writer`, the database's writing connection, and `Ok` once it finds room, ending the condition.
    pub(crate) async fn check<'c, E>(&self, writer: E) -> Result<(), WriteError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
    {
        if !self.is_full() {
            return Ok(());
        }
        let probed = sqlx::query(PROBE_STATEMENT).bind(chrono::Utc::now().timestamp_millis()).execute(writer).await;
        self.observe(probed)?;
        self.probe_committed()
    }

    /// After a probe's write committed (the log's goes through its writer task, not through
    /// [`Self::check`]): ends the condition if the file system also has [`RESUME_FREE_BYTES`] available,
    /// else it goes on, with the space measured as the reason.
    pub(crate) fn probe_committed(&self) -> Result<(), WriteError> {
        let directory = self.path.parent().unwrap_or(Path::new("."));
        match available_bytes(directory) {
            Ok(available) if available >= RESUME_FREE_BYTES => {}
            Ok(available) => {
                return Err(self.refused(format!(
                    "{available} bytes available, {RESUME_FREE_BYTES} needed before writes count as resumed"
                )));
            }
            // No measure (an unusual file system): the probe's write is the evidence.
            Err(error) => tracing::debug!(%error, "cannot measure the free space of the data directory"),
        }
        if self.full.swap(false, Ordering::AcqRel) {
            metrics::gauge!(telemetry::DISK_FULL, "database" => self.database).set(0.0);
            tracing::info!(database = self.database, path = %self.path.display(), "disk has room again: writes resume");
        }
        Ok(())
    }
}

/// The bytes an unprivileged writer may still use on the file system of `directory` (statvfs(3)).
fn available_bytes(directory: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(directory.as_os_str().as_bytes())?;
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct it fills in.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the fields' widths differ between platforms
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

/// How a write observed by [`DiskFull::observe`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No space for it.
    #[error(transparent)]
    DiskFull(DiskFullError),
    /// Anything else.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl WriteError {
    /// The error boxed for a seam's `Unavailable` variant.
    pub(crate) fn boxed(self) -> Box<dyn std::error::Error + Send + Sync> {
        match self {
            WriteError::DiskFull(error) => Box::new(error),
            WriteError::Database(error) => Box::new(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_full_and_a_shm_that_cannot_grow_are_a_full_disk() {
        assert_eq!(SQLITE_IOERR_SHMSIZE, 4874, "sqlite3.h's value");
        assert!(!is_disk_full(&sqlx::Error::PoolTimedOut));
        assert!(!is_disk_full(&sqlx::Error::Protocol("no".into())));
    }

    /// A database that refuses writes for space, as a full disk does: `max_page_count` caps the file, and
    /// SQLite answers SQLITE_FULL past it.
    #[tokio::test]
    async fn a_refused_write_is_disk_full_until_a_probe_finds_room() {
        let dir = tempfile::tempdir().unwrap();
        let pool =
            crate::sqlite::open(dir.path(), "small.db", 1, "CREATE TABLE IF NOT EXISTS t (x BLOB)").await.unwrap();
        let disk = DiskFull::new(dir.path(), "small.db");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&pool).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}"))).execute(&pool).await.unwrap();

        let refused = sqlx::query("INSERT INTO t (x) VALUES (zeroblob(100000))").execute(&pool).await;
        let refused = disk.observe(refused).expect_err("the file may not grow");
        assert!(matches!(refused, WriteError::DiskFull(_)), "{refused:?}");
        assert!(refused.to_string().contains("small.db"), "names the file: {refused}");
        assert!(disk.is_full());
        // A write that succeeds proves no room (this one writes nothing): only the probe ends the condition.
        let wrote_nothing = sqlx::query("DELETE FROM t WHERE 0").execute(&pool).await;
        assert!(disk.observe(wrote_nothing).is_ok());
        assert!(disk.is_full());
        // Room again (the cap lifted, as when files are deleted): the probe's write succeeds.
        sqlx::query("PRAGMA max_page_count = 1000000").execute(&pool).await.unwrap();
        disk.check(&pool).await.expect("room again: the probe writes");
        assert!(!disk.is_full());

        let other = sqlx::query("INSERT INTO missing (x) VALUES (1)").execute(&pool).await;
        assert!(matches!(disk.observe(other), Err(WriteError::Database(_))));
        assert!(!disk.is_full(), "another failure is not a full disk");
    }
}
