//! [`SqliteEventLog`]: the standalone [`EventLog`], a table of `log.db`, with group commit.
//!
//! # Durability and throughput
//! An append resolves `Ok` only once its record is committed with `synchronous = FULL`, that is fsynced.
//! One fsync per record would cap the log at a few hundred records a second, so appends are committed
//! in groups: every append goes over a bounded channel to one writer task, which takes everything queued
//! (up to [`MAX_COMMANDS_PER_GROUP`]), inserts it in one transaction, commits, and only then resolves
//! every append of the group with its offset. While a group is being fsynced the next one queues, so the
//! throughput follows the number of appends in flight (the collector keeps many), not the fsync latency.
//! When the channel is full an append waits for room: that wait is the collector's backpressure.
//!
//! Every write to `log.db` goes through the writer (appends, consumer commits, trims), so the database
//! never sees two writers and nobody waits on SQLite's busy timeout. Readers use other connections of
//! the pool; in WAL mode they never block the writer.
//!
//! # Layout
//! Both topics live in one table with a topic column; offsets are one increasing sequence over both
//! (the log has one partition, 0), never reused, even after a trim emptied the table (`AUTOINCREMENT`
//! keeps the highest offset ever given). Payloads are stored LZ4-compressed (compressed by the appender,
//! not the writer), a column telling them from those of an older `log.db`. Only one [`SqliteEventLog`] may have a data directory open:
//! the writer hands out offsets from memory.
//!
//! # Consumers
//! The read side is [`SqliteEventLogConsumer`] ([`consumer`]), the
//! [`EventLogConsumer`](hourglass_core::event_log::EventLogConsumer) of the Events topic that
//! standalone's ingest loop (`hourglass-ingestor`) reads from, under a name ([`INGEST_CONSUMER`]) whose
//! committed offset is a row of `log.db`. It is built on inherent methods, which tests and tools use
//! too: [`SqliteEventLog::read_after`] an offset, [`SqliteEventLog::wait_for_records_after`] it (woken
//! by the writer, never polling), [`SqliteEventLog::commit_offset`] and
//! [`SqliteEventLog::trim_events`] to delete what the ingestion has passed. Dead letters are never
//! trimmed: they wait for an operator.
//!
//! # Refusing appends
//! [`SqliteEventLog::refuse_appends`] makes every later append fail as unavailable: standalone calls it
//! when its ingestion has stopped, so that no client is acknowledged a batch nothing will ingest.
//!
//! # A full disk
//! A group that cannot be committed for want of space fails every write in it (appends as unavailable,
//! naming the file: nothing is acknowledged that is not on disk) and puts the log in the disk-full state
//! of [`crate::disk_full`]: one error logged, readiness failing, each readiness check probing for room
//! through the writer; a probe that commits, with room to spare, ends the state. The writer keeps taking
//! groups meanwhile, so no append is refused without being tried. The consumer's commits and trims fail
//! the same way and are retried ([`consumer`]), so a full disk stops nothing for good.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use hourglass_core::event_log::{Appended, ConsumedRecord, EventLog, EventLogError, LogRecord, Topic};
use hourglass_core::raw_block::{self, Decompressor};
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch};

use crate::disk_full::{self, DiskFull, WriteError};
use crate::sqlite::{self, OpenError};

pub mod consumer;

pub use consumer::{LogTrimConfig, SqliteEventLogConsumer};

/// The name standalone's ingestion commits its offset under.
pub const INGEST_CONSUMER: &str = "ingest";

/// The database file of the log, in the data directory.
pub const FILE_NAME: &str = "log.db";

/// Appends (and other writes) waiting for the writer. A full queue makes `append` wait.
pub const QUEUE_CAPACITY: usize = 8_192;

/// Most writes the writer commits in one transaction. Bounds the transaction's size (and the memory of
/// one group); beyond it the queue waits for the next group.
pub const MAX_COMMANDS_PER_GROUP: usize = 2_048;

/// How long an append, a flush or a commit may wait for room in the queue plus its group's commit.
/// After it the caller gets [`EventLogError::Unavailable`]: the record may still be committed, which is
/// safe because consumers are idempotent by event id.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The pool's connections: one for the writer, the rest for readers.
const MAX_CONNECTIONS: u32 = 4;

/// `payload_format` of a payload stored as it was appended (every row written before compression).
const PAYLOAD_AS_APPENDED: i64 = 0;
/// `payload_format` of a payload stored as a `hourglass_core::raw_block` frame (LZ4).
const PAYLOAD_COMPRESSED: i64 = 1;

/// The log's schema. `topic` is [`topic_code`]; `headers` is [`encode_headers`]'s format; `payload_format`
/// is [`PAYLOAD_AS_APPENDED`] or [`PAYLOAD_COMPRESSED`]. A column rather than a format byte in the
/// payload, because a dead letter's payload is whatever bytes arrived, so no first byte is safe to
/// claim; [`SqliteEventLog::open`] adds it to a `log.db` created before it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_records (
    log_offset INTEGER PRIMARY KEY AUTOINCREMENT,
    topic INTEGER NOT NULL,
    record_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    headers BLOB NOT NULL,
    appended_at_ms INTEGER NOT NULL,
    payload_format INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS log_records_by_topic ON log_records (topic, log_offset);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer TEXT PRIMARY KEY,
    committed_offset INTEGER NOT NULL
);
";

/// Errors of the consumer side of the log.
#[derive(Debug, thiserror::Error)]
pub enum SqliteLogError {
    /// `log.db` could not be read or written.
    #[error("event log database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored record's headers are not in the log's format: the file was written by something else.
    #[error("record {offset} of the event log has unreadable headers")]
    CorruptHeaders {
        /// The record.
        offset: i64,
    },
    /// A stored record's payload could not be decompressed.
    #[error("record {offset} of the event log has an unreadable payload: {message}")]
    CorruptPayload {
        /// The record.
        offset: i64,
        /// Why.
        message: String,
    },
    /// The writer task has stopped (the runtime is shutting down), or did not answer in time, or its
    /// group failed for a reason other than space.
    #[error("event log writer unavailable: {0}")]
    WriterUnavailable(String),
    /// The write's group could not be committed for want of disk space; the same write succeeds once
    /// there is room.
    #[error("event log write refused: {0}")]
    DiskFull(String),
}

/// Why the writer did not commit a write.
#[derive(Clone, Debug)]
struct NotWritten {
    message: String,
    disk_full: bool,
}

impl NotWritten {
    fn other(message: impl Into<String>) -> Self {
        Self { message: message.into(), disk_full: false }
    }
}

impl From<NotWritten> for SqliteLogError {
    fn from(not_written: NotWritten) -> Self {
        if not_written.disk_full {
            SqliteLogError::DiskFull(not_written.message)
        } else {
            SqliteLogError::WriterUnavailable(not_written.message)
        }
    }
}

/// The embedded [`EventLog`] in `log.db`. See the module documentation.
pub struct SqliteEventLog {
    pool: SqlitePool,
    writer_tx: mpsc::Sender<WriteCommand>,
    last_offsets: Arc<LastOffsets>,
    /// Per consumer, the offset it last committed; the writer updates it after each commit.
    committed_offsets: Arc<CommittedOffsets>,
    /// Why appends are refused, once they are ([`Self::refuse_appends`]).
    appends_refused: Arc<OnceLock<String>>,
    /// Whether the writer's last group found the disk full.
    disk: Arc<DiskFull>,
}

/// Per topic, the highest committed offset; the writer bumps it after each commit and consumers wait
/// on it.
struct LastOffsets {
    events: watch::Sender<i64>,
    dead_letter: watch::Sender<i64>,
}

impl LastOffsets {
    fn of(&self, topic: Topic) -> &watch::Sender<i64> {
        match topic {
            Topic::Events => &self.events,
            Topic::DeadLetter => &self.dead_letter,
        }
    }
}

/// Per consumer name, the offset it committed last, as committed in `log.db`.
type CommittedOffsets = watch::Sender<HashMap<String, i64>>;

/// A write for the writer task, with where to send its result.
enum WriteCommand {
    Append {
        topic: Topic,
        record: LogRecord,
        done_tx: oneshot::Sender<Result<Appended, NotWritten>>,
    },
    CommitOffset {
        consumer: String,
        offset: i64,
        done_tx: oneshot::Sender<Result<(), NotWritten>>,
    },
    TrimEvents {
        up_to_offset: i64,
        keep_records: u64,
        done_tx: oneshot::Sender<Result<u64, NotWritten>>,
    },
    /// Resolved once every write queued before it is committed.
    Flush {
        done_tx: oneshot::Sender<()>,
    },
    /// Rewrites the disk-space probe's row: a write that needs room, for readiness while the disk is full.
    ProbeSpace {
        done_tx: oneshot::Sender<Result<(), NotWritten>>,
    },
}

impl SqliteEventLog {
    /// Opens (creating if needed) `log.db` in `data_dir` and starts its writer task (on the current
    /// Tokio runtime; it ends when the log is dropped).
    pub async fn open(data_dir: &Path) -> Result<Self, OpenError> {
        let pool = sqlite::open(data_dir, FILE_NAME, MAX_CONNECTIONS, SCHEMA).await?;
        let database_error = |source| OpenError::Database { path: data_dir.join(FILE_NAME), source };
        let has_payload_format: bool = sqlx::query_scalar(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('log_records') WHERE name = 'payload_format'",
        )
        .fetch_one(&pool)
        .await
        .map_err(database_error)?;
        if !has_payload_format {
            // Only one process opens a data directory (its lock), so no other writer races this.
            sqlx::query("ALTER TABLE log_records ADD COLUMN payload_format INTEGER NOT NULL DEFAULT 0")
                .execute(&pool)
                .await
                .map_err(database_error)?;
        }
        // The highest offset ever given: AUTOINCREMENT's sequence survives a trim that emptied the table.
        let next_offset: i64 = sqlx::query_scalar(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'log_records'), 0),
                        COALESCE((SELECT MAX(log_offset) FROM log_records), 0)) + 1",
        )
        .fetch_one(&pool)
        .await
        .map_err(database_error)?;
        let mut last_offset_of = HashMap::new();
        for topic in [Topic::Events, Topic::DeadLetter] {
            let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(log_offset), 0) FROM log_records WHERE topic = ?")
                .bind(topic_code(topic))
                .fetch_one(&pool)
                .await
                .map_err(database_error)?;
            last_offset_of.insert(topic, last);
        }
        let last_offsets = Arc::new(LastOffsets {
            events: watch::Sender::new(last_offset_of.get(&Topic::Events).copied().unwrap_or(0)),
            dead_letter: watch::Sender::new(last_offset_of.get(&Topic::DeadLetter).copied().unwrap_or(0)),
        });
        let committed: Vec<(String, i64)> = sqlx::query_as("SELECT consumer, committed_offset FROM consumer_offsets")
            .fetch_all(&pool)
            .await
            .map_err(database_error)?;
        let committed_offsets = Arc::new(watch::Sender::new(committed.into_iter().collect()));
        let (writer_tx, writer_rx) = mpsc::channel(QUEUE_CAPACITY);
        let disk = Arc::new(DiskFull::new(data_dir, FILE_NAME));
        let writer = Writer {
            pool: pool.clone(),
            next_offset,
            last_offsets: Arc::clone(&last_offsets),
            committed_offsets: Arc::clone(&committed_offsets),
            disk: Arc::clone(&disk),
        };
        tokio::spawn(writer.run(writer_rx));
        Ok(Self { pool, writer_tx, last_offsets, committed_offsets, appends_refused: Arc::new(OnceLock::new()), disk })
    }

    /// From now on, every append fails with [`EventLogError::Unavailable`] naming `reason`, and
    /// readiness fails too; appends already queued are still committed. For good: only a restart (a
    /// new [`SqliteEventLog`]) accepts appends again. The first reason given is kept.
    pub fn refuse_appends(&self, reason: &str) {
        let _ = self.appends_refused.set(reason.to_owned());
    }

    /// At most `max_records` records of `topic` with an offset above `after_offset`, oldest first, in
    /// partition 0, their source named `events/0/<offset>` or `dead_letter/0/<offset>`.
    pub async fn read_after(
        &self,
        topic: Topic,
        after_offset: i64,
        max_records: usize,
    ) -> Result<Vec<ConsumedRecord>, SqliteLogError> {
        let rows = sqlx::query(
            "SELECT log_offset, record_key, payload, headers, payload_format FROM log_records
             WHERE topic = ? AND log_offset > ? ORDER BY log_offset LIMIT ?",
        )
        .bind(topic_code(topic))
        .bind(after_offset)
        .bind(i64::try_from(max_records).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut decompressor = Decompressor::new();
        rows.into_iter()
            .map(|row| {
                let offset: i64 = row.try_get("log_offset")?;
                let encoded_headers: Vec<u8> = row.try_get("headers")?;
                let headers = decode_headers(&encoded_headers).ok_or(SqliteLogError::CorruptHeaders { offset })?;
                let stored: &[u8] = row.try_get("payload")?;
                let payload = match row.try_get::<i64, _>("payload_format")? {
                    PAYLOAD_AS_APPENDED => stored.to_vec(),
                    PAYLOAD_COMPRESSED => decompressor
                        .frame(stored)
                        .map_err(|error| SqliteLogError::CorruptPayload { offset, message: error.to_string() })?
                        .to_vec(),
                    format => {
                        let message = format!("unknown payload format {format}");
                        return Err(SqliteLogError::CorruptPayload { offset, message });
                    }
                };
                Ok(ConsumedRecord {
                    partition: 0,
                    offset,
                    key: row.try_get("record_key")?,
                    payload,
                    headers,
                    source: format!("{}/0/{offset}", topic_label(topic)),
                })
            })
            .collect()
    }

    /// The offset of `topic`'s last committed record (0 if it has none yet).
    pub fn last_offset(&self, topic: Topic) -> i64 {
        *self.last_offsets.of(topic).borrow()
    }

    /// Resolves once `topic` has a committed record with an offset above `after_offset` (at once if it
    /// already has). The writer wakes it after each commit: no polling.
    pub async fn wait_for_records_after(&self, topic: Topic, after_offset: i64) {
        let mut last_offset_rx = self.last_offsets.of(topic).subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = last_offset_rx.wait_for(|last| *last > after_offset).await;
    }

    /// Resolves once `consumer` has committed every Events record appended after `after_offset` and the
    /// log has then gone `idle` without a new one; returns the last offset it had committed (above
    /// `after_offset`). Dead letters are not waited for.
    ///
    /// Standalone's ingestion marks a record's hours dirty before it commits the record, so when this
    /// resolves for its consumer, every hour of every event acknowledged so far is marked: what
    /// standalone waits for before it has the aggregator roll up the open hours at once rather than at
    /// its next provisional interval (`crates/cli/src/standalone.rs`). Woken by the writer, never
    /// polling; `idle` is measured from when the consumer caught up.
    pub async fn wait_until_consumed_and_idle(&self, consumer: &str, after_offset: i64, idle: Duration) -> i64 {
        let mut committed_rx = self.committed_offsets.subscribe();
        let mut last_offset_rx = self.last_offsets.of(Topic::Events).subscribe();
        // The senders live in `self`, so neither channel can close while we wait: the `Err` arms only
        // end a wait that could never resolve.
        loop {
            let Ok(last) = last_offset_rx.wait_for(|last| *last > after_offset).await.map(|last| *last) else {
                return after_offset;
            };
            let caught_up = committed_rx
                .wait_for(|committed| committed.get(consumer).is_some_and(|offset| *offset >= last))
                .await
                // The guard would hold the writer's next update of the offsets.
                .map(drop);
            if caught_up.is_err() {
                return after_offset;
            }
            // Caught up with `last`; settled unless a record was appended since `last` was read (then
            // `changed` resolves at once) or during `idle`.
            if tokio::time::timeout(idle, last_offset_rx.changed()).await.is_err() {
                return last;
            }
        }
    }

    /// The offset `consumer` committed last (the last record it is done with: the stored form of a
    /// commit, one below the seam's [`CommitPosition`](hourglass_core::event_log::CommitPosition)), 0 if
    /// it never did.
    pub async fn committed_offset(&self, consumer: &str) -> Result<i64, SqliteLogError> {
        let committed: Option<i64> =
            sqlx::query_scalar("SELECT committed_offset FROM consumer_offsets WHERE consumer = ?")
                .bind(consumer)
                .fetch_optional(&self.pool)
                .await?;
        Ok(committed.unwrap_or(0))
    }

    /// Durably records that `consumer` is done with every record up to `offset`. Goes through the
    /// writer, so it shares a group commit with the appends queued meanwhile.
    pub async fn commit_offset(&self, consumer: &str, offset: i64) -> Result<(), SqliteLogError> {
        let (done_tx, done_rx) = oneshot::channel();
        let command = WriteCommand::CommitOffset { consumer: consumer.to_owned(), offset, done_tx };
        Ok(self.write(command, done_rx).await?)
    }

    /// Deletes the Events records at or below `up_to_offset` (a consumer's committed offset), except
    /// the newest `keep_records` of them. Returns how many it deleted. Dead letters are never trimmed.
    pub async fn trim_events(&self, up_to_offset: i64, keep_records: u64) -> Result<u64, SqliteLogError> {
        let (done_tx, done_rx) = oneshot::channel();
        let command = WriteCommand::TrimEvents { up_to_offset, keep_records, done_tx };
        Ok(self.write(command, done_rx).await?)
    }

    /// Whether the writer's last group found the disk full (see the module documentation).
    pub fn is_disk_full(&self) -> bool {
        self.disk.is_full()
    }

    /// Queues a write and waits for its result, both within [`WRITE_TIMEOUT`].
    async fn write<T>(
        &self,
        command: WriteCommand,
        done_rx: oneshot::Receiver<Result<T, NotWritten>>,
    ) -> Result<T, NotWritten> {
        queue_and_wait(self.writer_tx.clone(), command, done_rx).await
    }
}

/// Sends `command` to the writer (waiting for room: backpressure) and waits for its result, all within
/// [`WRITE_TIMEOUT`].
async fn queue_and_wait<T>(
    writer_tx: mpsc::Sender<WriteCommand>,
    command: WriteCommand,
    done_rx: oneshot::Receiver<Result<T, NotWritten>>,
) -> Result<T, NotWritten> {
    let queued_and_done = async move {
        writer_tx.send(command).await.map_err(|_| NotWritten::other("the log's writer has stopped"))?;
        done_rx.await.map_err(|_| NotWritten::other("the log's writer stopped before committing"))?
    };
    tokio::time::timeout(WRITE_TIMEOUT, queued_and_done)
        .await
        .unwrap_or_else(|_| Err(NotWritten::other(format!("not committed within {} s", WRITE_TIMEOUT.as_secs()))))
}

impl EventLog for SqliteEventLog {
    fn append(&self, topic: Topic, record: LogRecord) -> BoxFuture<'static, Result<Appended, EventLogError>> {
        if let Some(reason) = self.appends_refused.get() {
            let refused = EventLogError::Unavailable(format!("the event log refuses appends: {reason}").into());
            return Box::pin(std::future::ready(Err(refused)));
        }
        let writer_tx = self.writer_tx.clone();
        Box::pin(async move {
            // Compressed here, in the appender's task, so the single writer only inserts.
            let record = LogRecord { payload: raw_block::compress(&record.payload), ..record };
            let (done_tx, done_rx) = oneshot::channel();
            queue_and_wait(writer_tx, WriteCommand::Append { topic, record, done_tx }, done_rx)
                .await
                .map_err(|not_written| EventLogError::Unavailable(not_written.message.into()))
        })
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), EventLogError>> {
        Box::pin(async move {
            let (done_tx, done_rx) = oneshot::channel();
            let flushed = async {
                self.writer_tx.send(WriteCommand::Flush { done_tx }).await.ok()?;
                done_rx.await.ok()
            };
            match tokio::time::timeout(timeout, flushed).await {
                Ok(Some(())) => Ok(()),
                Ok(None) => Err(EventLogError::Unavailable("the log's writer has stopped".into())),
                Err(_) => {
                    Err(EventLogError::Unavailable(format!("not flushed within {} ms", timeout.as_millis()).into()))
                }
            }
        })
    }

    fn check_ready(&self) -> BoxFuture<'_, Result<(), EventLogError>> {
        Box::pin(async move {
            if self.writer_tx.is_closed() {
                return Err(EventLogError::Fatal("the log's writer has stopped".into()));
            }
            if let Some(reason) = self.appends_refused.get() {
                return Err(EventLogError::Unavailable(format!("the event log refuses appends: {reason}").into()));
            }
            if self.disk.is_full() {
                // Through the writer, the only writer of log.db; once it commits with room to spare, the
                // disk-full state ends.
                let (done_tx, done_rx) = oneshot::channel();
                self.write(WriteCommand::ProbeSpace { done_tx }, done_rx)
                    .await
                    .map_err(|not_written| EventLogError::Unavailable(not_written.message.into()))?;
                self.disk.probe_committed().map_err(|error| EventLogError::Unavailable(error.boxed()))?;
            }
            sqlx::query("SELECT 1 FROM log_records LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map(|_| ())
                .map_err(|error| EventLogError::Unavailable(Box::new(error)))
        })
    }
}

/// The writer task: the only writer of `log.db`.
struct Writer {
    pool: SqlitePool,
    /// The offset the next append gets.
    next_offset: i64,
    last_offsets: Arc<LastOffsets>,
    committed_offsets: Arc<CommittedOffsets>,
    disk: Arc<DiskFull>,
}

/// What one group's transaction gives back to each of its commands, in order.
enum Written {
    Appended(Appended),
    Committed,
    Trimmed(u64),
    Flushed,
    Probed,
}

impl Writer {
    async fn run(mut self, mut commands_rx: mpsc::Receiver<WriteCommand>) {
        let mut group = Vec::with_capacity(MAX_COMMANDS_PER_GROUP);
        // `recv_many` waits for one command, then takes whatever else is queued: the group.
        while commands_rx.recv_many(&mut group, MAX_COMMANDS_PER_GROUP).await > 0 {
            let first_offset = self.next_offset;
            let committed = self.write_group(&group).await;
            match self.disk.observe(committed) {
                Ok((written, last_of_topic)) => {
                    // Wake the consumers before the appenders: by the time a collector acks, the
                    // ingestion loop is already on its way.
                    for (topic, last) in last_of_topic {
                        self.last_offsets.of(topic).send_replace(last);
                    }
                    self.committed_offsets.send_if_modified(|committed_offsets| {
                        let mut modified = false;
                        for command in &group {
                            if let WriteCommand::CommitOffset { consumer, offset, .. } = command {
                                committed_offsets.insert(consumer.clone(), *offset);
                                modified = true;
                            }
                        }
                        modified
                    });
                    for (command, result) in group.drain(..).zip(written) {
                        resolve(command, result);
                    }
                }
                Err(error) => {
                    // Rolled back: none of the group is in the log, its offsets are free again.
                    self.next_offset = first_offset;
                    let not_written = match error {
                        // Logged once for the whole condition by `DiskFull`, not once per group.
                        WriteError::DiskFull(error) => NotWritten { message: error.to_string(), disk_full: true },
                        WriteError::Database(error) => {
                            tracing::warn!(%error, commands = group.len(), "event log group commit failed");
                            NotWritten::other(format!("event log commit failed: {error}"))
                        }
                    };
                    for command in group.drain(..) {
                        fail(command, &not_written);
                    }
                }
            }
        }
    }

    /// Writes a group in one transaction. Returns each command's result, and the last offset appended
    /// per topic.
    async fn write_group(&mut self, group: &[WriteCommand]) -> Result<(Vec<Written>, Vec<(Topic, i64)>), sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        let written = self.write_group_on(&mut connection, group).await;
        if written.is_err() {
            // Returned to the pool, the connection of a group that hit a full disk left every later group
            // failing at once with "database is locked" (seen on a full tmpfs): SQLite may roll such a
            // transaction back itself, and sqlx's own count of the connection's open transactions, which
            // decides what its next `begin` and rollback send, need not follow. A new connection for the
            // next group costs little next to that.
            connection.close_on_drop();
        }
        written
    }

    async fn write_group_on(
        &mut self,
        connection: &mut sqlx::SqliteConnection,
        group: &[WriteCommand],
    ) -> Result<(Vec<Written>, Vec<(Topic, i64)>), sqlx::Error> {
        let appended_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        let mut transaction = sqlx::Connection::begin(connection).await?;
        let mut written = Vec::with_capacity(group.len());
        let mut last_of_topic: Vec<(Topic, i64)> = Vec::with_capacity(2);
        for command in group {
            match command {
                WriteCommand::Append { topic, record, .. } => {
                    let offset = self.next_offset;
                    self.next_offset += 1;
                    sqlx::query(
                        "INSERT INTO log_records (log_offset, topic, record_key, payload, headers, appended_at_ms, \
                         payload_format) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(offset)
                    .bind(topic_code(*topic))
                    .bind(record.key.as_str())
                    .bind(record.payload.as_slice())
                    .bind(encode_headers(&record.headers))
                    .bind(appended_at_ms)
                    .bind(PAYLOAD_COMPRESSED)
                    .execute(&mut *transaction)
                    .await?;
                    match last_of_topic.iter_mut().find(|(known, _)| known == topic) {
                        Some((_, last)) => *last = offset,
                        None => last_of_topic.push((*topic, offset)),
                    }
                    written.push(Written::Appended(Appended { partition: 0, offset }));
                }
                WriteCommand::CommitOffset { consumer, offset, .. } => {
                    sqlx::query(
                        "INSERT INTO consumer_offsets (consumer, committed_offset) VALUES (?, ?)
                         ON CONFLICT (consumer) DO UPDATE SET committed_offset = excluded.committed_offset",
                    )
                    .bind(consumer.as_str())
                    .bind(*offset)
                    .execute(&mut *transaction)
                    .await?;
                    written.push(Written::Committed);
                }
                WriteCommand::TrimEvents { up_to_offset, keep_records, .. } => {
                    // The newest consumed record to delete: `keep_records` below the newest consumed one.
                    let deleted = sqlx::query(
                        "DELETE FROM log_records WHERE topic = ?1 AND log_offset <= (
                             SELECT log_offset FROM log_records WHERE topic = ?1 AND log_offset <= ?2
                             ORDER BY log_offset DESC LIMIT 1 OFFSET ?3)",
                    )
                    .bind(topic_code(Topic::Events))
                    .bind(*up_to_offset)
                    .bind(i64::try_from(*keep_records).unwrap_or(i64::MAX))
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                    written.push(Written::Trimmed(deleted));
                }
                WriteCommand::Flush { .. } => written.push(Written::Flushed),
                WriteCommand::ProbeSpace { .. } => {
                    sqlx::query(disk_full::PROBE_STATEMENT).bind(appended_at_ms).execute(&mut *transaction).await?;
                    written.push(Written::Probed);
                }
            }
        }
        // synchronous = FULL: the commit returns once the WAL is fsynced.
        transaction.commit().await?;
        Ok((written, last_of_topic))
    }
}

/// Sends a committed command its result. A caller that gave up (timeout, dropped future) is not an
/// error: its write is committed all the same.
fn resolve(command: WriteCommand, written: Written) {
    match (command, written) {
        (WriteCommand::Append { done_tx, .. }, Written::Appended(appended)) => {
            let _ = done_tx.send(Ok(appended));
        }
        (WriteCommand::CommitOffset { done_tx, .. }, Written::Committed) => {
            let _ = done_tx.send(Ok(()));
        }
        (WriteCommand::TrimEvents { done_tx, .. }, Written::Trimmed(deleted)) => {
            let _ = done_tx.send(Ok(deleted));
        }
        (WriteCommand::Flush { done_tx }, Written::Flushed) => {
            let _ = done_tx.send(());
        }
        (WriteCommand::ProbeSpace { done_tx }, Written::Probed) => {
            let _ = done_tx.send(Ok(()));
        }
        // write_group gives one result per command, of the command's own kind.
        (command, _) => fail(command, &NotWritten::other("event log writer mismatched a result (bug)")),
    }
}

/// Sends a command of a failed group its error. A flush resolves anyway: nothing queued before it is
/// still pending (it failed, and its appender was told).
fn fail(command: WriteCommand, reason: &NotWritten) {
    match command {
        WriteCommand::Append { done_tx, .. } => {
            let _ = done_tx.send(Err(reason.clone()));
        }
        WriteCommand::CommitOffset { done_tx, .. } => {
            let _ = done_tx.send(Err(reason.clone()));
        }
        WriteCommand::TrimEvents { done_tx, .. } => {
            let _ = done_tx.send(Err(reason.clone()));
        }
        WriteCommand::Flush { done_tx } => {
            let _ = done_tx.send(());
        }
        WriteCommand::ProbeSpace { done_tx } => {
            let _ = done_tx.send(Err(reason.clone()));
        }
    }
}

/// How a topic is stored: a number, so the log's file holds no topic names.
fn topic_code(topic: Topic) -> i64 {
    match topic {
        Topic::Events => 0,
        Topic::DeadLetter => 1,
    }
}

/// How a topic is named in a record's source (`events/0/42`), for logs and dead-letter headers.
fn topic_label(topic: Topic) -> &'static str {
    match topic {
        Topic::Events => "events",
        Topic::DeadLetter => "dead_letter",
    }
}

/// Headers as one blob: for each, the name's length (u32, little-endian), the name, the value's length,
/// the value. Simpler and smaller than a headers table, and read only whole.
fn encode_headers(headers: &[(&'static str, Vec<u8>)]) -> Vec<u8> {
    let size: usize = headers.iter().map(|(name, value)| 8 + name.len() + value.len()).sum();
    let mut encoded = Vec::with_capacity(size);
    for (name, value) in headers {
        for part in [name.as_bytes(), value.as_slice()] {
            // A header longer than 4 GiB cannot reach here: the collector's records are bounded far below.
            encoded.extend_from_slice(&(part.len() as u32).to_le_bytes());
            encoded.extend_from_slice(part);
        }
    }
    encoded
}

/// The inverse of [`encode_headers`]; `None` if `encoded` is not in that format.
fn decode_headers(mut encoded: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    fn take<'a>(encoded: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (length, rest) = encoded.split_first_chunk::<4>()?;
        let length = u32::from_le_bytes(*length) as usize;
        let part = rest.get(..length)?;
        *encoded = &rest[length..];
        Some(part)
    }
    let mut headers = Vec::new();
    while !encoded.is_empty() {
        let name = String::from_utf8(take(&mut encoded)?.to_vec()).ok()?;
        let value = take(&mut encoded)?.to_vec();
        headers.push((name, value));
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let headers: Vec<(&'static str, Vec<u8>)> =
            vec![("hg-schema-version", b"1".to_vec()), ("empty", Vec::new()), ("binary", vec![0, 255, 7])];
        let decoded = decode_headers(&encode_headers(&headers)).unwrap();
        let expected: Vec<(String, Vec<u8>)> =
            headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        assert_eq!(decoded, expected);
        assert_eq!(decode_headers(&[]).unwrap(), Vec::new());
    }

    #[test]
    fn refuses_truncated_headers() {
        let encoded = encode_headers(&[("name", b"value".to_vec())]);
        assert!(decode_headers(&encoded[..encoded.len() - 1]).is_none());
        assert!(decode_headers(&[1, 0]).is_none());
    }
}
