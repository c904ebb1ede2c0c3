//! The three databases of the data directory on a file system that fills up (a small tmpfs and a filler
//! file): a write whose transaction meets the full disk is refused naming the file, and once the filler is
//! deleted the same store (the same one-connection writer pool) writes again, durably.
//!
//! SQLite rolls such a transaction back by itself, which sqlx does not see: it still counts the transaction
//! as open on the pooled connection. Before the pool refused such connections (`sqlite::open`), meta.db's
//! next transaction failed "attempted to call begin_with at non-zero transaction depth", for good, and
//! raw.db's writer, whose plain `BEGIN` had become a savepoint, reported 42,000 events written that its
//! readers never saw; log.db's writer closes a failed group's connection itself. The standalone binary test
//! (`crates/cli/tests/standalone_binary.rs`) meets this only when its timing makes raw.db or meta.db hit the
//! full disk inside a transaction; these tests do it every time.
//!
//! They mount a tmpfs, so they need root or CAP_SYS_ADMIN (CI runs as root); without it they fail, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::{EventLog, LogRecord, Topic};
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::{HourOutcomes, RawStore};
use hourglass_core::record_view::RecordView;
use hourglass_core::rollup_store::{Completion, EventTypeRollup, HourRollup, JobKind, RollupStore};
use hourglass_embedded::log::SqliteEventLog;
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;

/// Room for the databases, the filler and, once the filler is gone, the free space a readiness probe
/// wants before it ends the condition (`hourglass_embedded::disk_full::RESUME_FREE_BYTES`, 8 MiB).
const TMPFS_SIZE: &str = "24m";

/// A tmpfs mounted on a fresh directory, unmounted (and the directory removed) when dropped, whether the
/// test passed or not.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Self {
        let dir = tempfile::Builder::new().prefix("hourglass-embedded-disk-full-").tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "this test mounts a small tmpfs to fill it up, which needs root or CAP_SYS_ADMIN (CI runs as root): \
             mount said {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Self { dir }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a pool's connection may still hold a file open while the test unwinds.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes `path` until the file system has no room left (ENOSPC), to the last page; returns the bytes
/// written.
fn fill_up(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => return written,
            Ok(bytes) => written += bytes as u64,
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => return written,
            Err(error) => panic!("cannot fill {}: {error}", path.display()),
        }
    }
}

/// Asserts that `error` is a write refused for want of space on `file`, not any other failure (such as
/// sqlx's "attempted to call begin_with at non-zero transaction depth").
fn assert_disk_full(error: &dyn std::fmt::Display, file: &str, what: &str) {
    let message = error.to_string();
    assert!(
        message.contains("no space left") && message.contains(file),
        "{what}: expected a refusal for want of space naming {file}, got: {message}"
    );
}

/// Bytes that LZ4 cannot shrink (splitmix64 as hex), so a write needs as many pages as it says.
fn incompressible_text(seed: u64, length: usize) -> String {
    let mut state = seed;
    let mut text = String::with_capacity(length + 16);
    while text.len() < length {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        text.push_str(&format!("{:016x}", mixed ^ (mixed >> 31)));
    }
    text.truncate(length);
    text
}

const HOUR: i64 = 1_764_075_600;

fn acme_hour(hour_start: i64) -> CustomerHour {
    CustomerHour { customer_id: CustomerId::new("acme").unwrap(), hour_start }
}

/// A rollup of `event_types` types, each with a 256-byte sketch that does not compress: hundreds of KiB
/// of pages to write in `complete`'s transaction.
fn big_rollup(event_types: usize) -> HourRollup {
    HourRollup {
        event_types: (0..event_types)
            .map(|index| EventTypeRollup {
                event_type: format!("type-{index:05}"),
                events: 1,
                distinct_users: 1,
                users_sketch: incompressible_text(index as u64, 256).into_bytes(),
            })
            .collect(),
        numeric: Vec::new(),
        events: event_types as u64,
        distinct_users: 1,
        users_sketch: Vec::new(),
        outcomes: HourOutcomes { accepted: event_types as u64, ..HourOutcomes::default() },
        logic_version: 1,
        is_final: true,
    }
}

/// meta.db: the aggregator's completion and the ingestion's dirty-hour marks, both `BEGIN IMMEDIATE`
/// transactions on the one writer connection, meet the full disk; once there is room the same store
/// completes the job and marks the hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_db_writes_again_after_a_transaction_met_the_full_disk() {
    let tmpfs = Tmpfs::mount();
    let store = SqliteMetaStore::open(&tmpfs.data_dir()).await.unwrap();
    store.mark_dirty(&[acme_hour(HOUR)]).await.expect("room on the disk");
    let jobs = store
        .lease_jobs("worker", 1, Duration::from_secs(3600), JobKind::Final { hours_before_unix: HOUR + 3600 })
        .await
        .unwrap();
    let [job] = jobs.as_slice() else { panic!("one job leased: {jobs:?}") };
    // Many hours: thousands of rows and their index, far more than the WAL holds already.
    let many_hours: Vec<CustomerHour> = (1..=5_000).map(|index| acme_hour(HOUR - index * 3600)).collect();
    let rollup = big_rollup(3_000);

    let filled = fill_up(&tmpfs.filler());
    assert!(filled > 0, "the tmpfs had no room for the filler");
    let refused = store.complete(job, &rollup).await.expect_err("no room for the rollup");
    assert_disk_full(&refused, "meta.db", "completing on a full disk");
    // The next transaction on the same connection, still on a full disk: refused for space again, not
    // for the state the last one left the connection in.
    let refused = store.mark_dirty(&many_hours).await.expect_err("no room for the marks");
    assert_disk_full(&refused, "meta.db", "marking on a full disk");
    assert_disk_full(&JobQueue::check_ready(&store).await.expect_err("not ready"), "meta.db", "readiness");

    std::fs::remove_file(tmpfs.filler()).unwrap();
    JobQueue::check_ready(&store).await.expect("room again: ready");
    let completed = store.complete(job, &rollup).await.expect("room again: the aggregator completes");
    assert!(matches!(completed, Completion::Replaced { revision: 1 }), "{completed:?}");
    assert_eq!(store.current_rollup(&job.customer_hour).await.unwrap().len(), 3_000);
    store.mark_dirty(&many_hours).await.expect("room again: the ingestion marks");
    let marked = store.hours_with_data(Some("acme"), HOUR - 5_000 * 3600, HOUR + 3600).await.unwrap();
    assert_eq!(marked.len(), 5_001, "every hour marked, the one rolled up too");
    drop(store);

    // Committed, not only visible to the connection that wrote it.
    let reopened = SqliteMetaStore::open(&tmpfs.data_dir()).await.unwrap();
    assert_eq!(reopened.current_rollup(&job.customer_hour).await.unwrap().len(), 3_000);
    assert_eq!(reopened.hours_with_data(Some("acme"), HOUR - 5_000 * 3600, HOUR + 3600).await.unwrap().len(), 5_001);
}

/// A batch of `events` events in HOUR whose ids do not compress, so its block needs about 100 bytes a
/// event on disk.
fn big_record(batch_id: &str, events: usize) -> EventBatchRecord {
    EventBatchRecord {
        customer_id: "acme".to_owned(),
        received_at_unix_ms: HOUR * 1000,
        batch_id: batch_id.to_owned(),
        collector_id: "test".to_owned(),
        events: (0..events)
            .map(|index| Event {
                event_id: format!("{batch_id}-{index:06}-{}", incompressible_text(index as u64, 80)),
                event_type: "view".to_owned(),
                occurred_at: Some(Timestamp { seconds: HOUR + 10, nanos: 0 }),
                user_id: None,
                properties: Default::default(),
            })
            .collect(),
        outcomes: vec![OutcomeCount {
            hour_start_unix_secs: HOUR,
            outcome: Outcome::Accepted as i32,
            reason: 0,
            count: events as u32,
        }],
        plan_checks: Vec::new(),
    }
}

async fn stored_event_count(store: &SqliteRawStore) -> usize {
    let mut count = 0;
    for bucket in 0..store.bucket_count() {
        count += store.read_bucket("acme", HOUR, bucket).await.unwrap().len();
    }
    count
}

/// raw.db: the ingestion's writes (a transaction per call, on the one writer connection) meet the full
/// disk twice; once there is room the same store writes again, committed for its readers and a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_db_writes_again_after_a_transaction_met_the_full_disk() {
    let tmpfs = Tmpfs::mount();
    let store = SqliteRawStore::open(&tmpfs.data_dir(), 4).await.unwrap();
    store.write_records(&RecordView::from_records(&[big_record("before", 100)])).await.expect("room on the disk");

    let filled = fill_up(&tmpfs.filler());
    assert!(filled > 0, "the tmpfs had no room for the filler");
    // About 4 MiB: more than SQLite's page cache holds, so pages spill to the WAL inside the statement,
    // and more than the WAL has room for.
    let big = big_record("big", 40_000);
    let refused =
        store.write_records(&RecordView::from_records(std::slice::from_ref(&big))).await.expect_err("no room");
    assert_disk_full(&refused, "raw.db", "writing on a full disk");
    let small = big_record("small", 2_000);
    let refused =
        store.write_records(&RecordView::from_records(std::slice::from_ref(&small))).await.expect_err("no room");
    assert_disk_full(&refused, "raw.db", "writing again on a full disk");
    assert_disk_full(&store.check_ready().await.expect_err("not ready"), "raw.db", "readiness");

    std::fs::remove_file(tmpfs.filler()).unwrap();
    store.check_ready().await.expect("room again: ready");
    store.write_records(&RecordView::from_records(&[small, big])).await.expect("room again: written");
    // The readers are other connections: they see only what is committed.
    assert_eq!(stored_event_count(&store).await, 42_100);
    assert_eq!(store.read_outcomes("acme", HOUR).await.unwrap().accepted, 42_100);
    // And once more, as the next batch would be.
    store.write_records(&RecordView::from_records(&[big_record("after", 100)])).await.expect("room again: written");
    assert_eq!(stored_event_count(&store).await, 42_200);
    drop(store);

    let reopened = SqliteRawStore::open(&tmpfs.data_dir(), 4).await.unwrap();
    assert_eq!(stored_event_count(&reopened).await, 42_200, "committed, not only visible to its writer");
}

/// log.db: appends (group commits on the writer's connection) and a consumer's commit meet the full disk;
/// what was acknowledged is in the log, what was refused is not, and once there is room the same log
/// appends and commits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_db_writes_again_after_a_group_met_the_full_disk() {
    let tmpfs = Tmpfs::mount();
    let log = Arc::new(SqliteEventLog::open(&tmpfs.data_dir()).await.unwrap());
    let record = |key: String| LogRecord {
        payload: incompressible_text(key.len() as u64 * 7919, 64 * 1024).into_bytes(),
        key,
        headers: vec![("hg-test", b"x".to_vec())],
    };
    log.append(Topic::Events, record("before".to_owned())).await.expect("room on the disk");
    let mut acknowledged = vec!["before".to_owned()];

    let filled = fill_up(&tmpfs.filler());
    assert!(filled > 0, "the tmpfs had no room for the filler");
    // SQLite may find room it already holds (the WAL's own pages) for a few: append until refused.
    let refused = loop {
        let key = format!("filling-{}", acknowledged.len());
        match log.append(Topic::Events, record(key.clone())).await {
            Ok(_) => acknowledged.push(key),
            Err(error) => break error,
        }
        assert!(acknowledged.len() < 1_000, "still acknowledging appends on a full disk");
    };
    assert_disk_full(&refused, "log.db", "appending on a full disk");
    assert!(log.is_disk_full());
    let refused = log.commit_offset("ingest", 1).await.expect_err("no room for the commit");
    assert_disk_full(&refused, "log.db", "committing an offset on a full disk");
    assert_disk_full(&log.check_ready().await.expect_err("not ready"), "log.db", "readiness");

    std::fs::remove_file(tmpfs.filler()).unwrap();
    log.check_ready().await.expect("room again: ready");
    assert!(!log.is_disk_full());
    for key in ["after-1", "after-2"] {
        log.append(Topic::Events, record(key.to_owned())).await.expect("room again: appended");
        acknowledged.push(key.to_owned());
    }
    log.commit_offset("ingest", 1).await.expect("room again: committed");
    drop(log);

    // Exactly what was acknowledged, from a reopened log: committed, and nothing refused slipped in.
    let reopened = SqliteEventLog::open(&tmpfs.data_dir()).await.unwrap();
    let keys: Vec<String> =
        reopened.read_after(Topic::Events, 0, usize::MAX).await.unwrap().into_iter().map(|record| record.key).collect();
    assert_eq!(keys, acknowledged);
    assert_eq!(reopened.committed_offset("ingest").await.unwrap(), 1);
}
