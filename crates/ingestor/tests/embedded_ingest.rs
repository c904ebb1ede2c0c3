//! The ingest loop as standalone runs it, over the embedded log's consumer, raw store and job queue, in a
//! data directory of the test's own (with `--embedded-ingest-*` settings): records reach the raw store
//! once, their hours are marked, and only then is the offset committed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::{ConsumedRecord, EventLog, LogRecord, Topic};
use hourglass_core::hour;
use hourglass_core::job_queue::{CustomerHour, JobQueue, JobQueueError};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record;
use hourglass_core::rollup_store::RollupStore;
use hourglass_embedded::log::{INGEST_CONSUMER, LogTrimConfig, SqliteEventLog};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_ingestor::dead_letter::{REASON_HEADER, SOURCE_HEADER};
use hourglass_ingestor::{EmbeddedIngestConfig, IngestorError};
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, RejectionReason, property_value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const BUCKETS: u32 = 4;

/// The meta store's job queue, with a switch that makes `mark_dirty` fail as a store that is down does.
struct SwitchableJobQueue {
    meta: SqliteMetaStore,
    down: AtomicBool,
}

impl JobQueue for SwitchableJobQueue {
    async fn mark_dirty(&self, hours: &[CustomerHour]) -> Result<(), JobQueueError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(JobQueueError::Unavailable("switched off by the test".into()));
        }
        self.meta.mark_dirty(hours).await
    }

    async fn check_ready(&self) -> Result<(), JobQueueError> {
        self.meta.check_ready().await
    }
}

struct Stores {
    _data_dir: tempfile::TempDir,
    log: Arc<SqliteEventLog>,
    raw_store: Arc<SqliteRawStore>,
    job_queue: Arc<SwitchableJobQueue>,
}

async fn stores() -> Stores {
    let data_dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteEventLog::open(data_dir.path()).await.unwrap());
    let raw_store = Arc::new(SqliteRawStore::open(data_dir.path(), BUCKETS).await.unwrap());
    let meta = SqliteMetaStore::open(data_dir.path()).await.unwrap();
    let job_queue = Arc::new(SwitchableJobQueue { meta, down: AtomicBool::new(false) });
    Stores { _data_dir: data_dir, log, raw_store, job_queue }
}

impl Stores {
    /// Starts the ingest loop as standalone does: `config` mapped onto the loop, reading `log.db` as
    /// [`INGEST_CONSUMER`], trimming as `trim` says.
    async fn start_trimming(
        &self,
        config: EmbeddedIngestConfig,
        trim: LogTrimConfig,
    ) -> (CancellationToken, JoinHandle<Result<(), IngestorError>>) {
        let shutdown = CancellationToken::new();
        let consumer = self.log.events_consumer(INGEST_CONSUMER, Some(trim)).await.unwrap();
        let task = tokio::spawn(hourglass_ingestor::run(
            config.loop_config(),
            consumer,
            Arc::clone(&self.raw_store),
            Arc::clone(&self.job_queue),
            Arc::clone(&self.log),
            hourglass_ingestor::Suppression::none(),
            shutdown.clone(),
        ));
        (shutdown, task)
    }

    async fn start(&self, config: EmbeddedIngestConfig) -> (CancellationToken, JoinHandle<Result<(), IngestorError>>) {
        self.start_trimming(config, LogTrimConfig::with_defaults()).await
    }

    /// Waits until the loop has committed `offset`; fails the test after a minute.
    async fn wait_for_commit(&self, offset: i64) {
        wait_for(&format!("offset {offset} to be committed"), || async {
            self.log.committed_offset(INGEST_CONSUMER).await.unwrap() >= offset
        })
        .await;
    }

    /// The distinct event ids stored for a customer-hour, with how many rows each has (always 1).
    async fn stored_ids(&self, customer: &str, hour_start: i64) -> BTreeMap<String, usize> {
        let mut ids = BTreeMap::new();
        for bucket in 0..self.raw_store.bucket_count() {
            for event in self.raw_store.read_bucket(customer, hour_start, bucket).await.unwrap() {
                *ids.entry(event.event_id).or_insert(0) += 1;
            }
        }
        ids
    }

    async fn accepted(&self, customer: &str, hour_start: i64) -> u64 {
        self.raw_store.read_outcomes(customer, hour_start).await.unwrap().accepted
    }

    async fn marked_hours(&self, customer: &str) -> Vec<i64> {
        let hours = self.job_queue.meta.hours_with_data(Some(customer), 0, i64::MAX).await.unwrap();
        hours.into_iter().map(|hour| hour.hour_start).collect()
    }
}

fn fast_config() -> EmbeddedIngestConfig {
    let mut config = EmbeddedIngestConfig::with_defaults();
    config.retry_backoff_ms = 10;
    config.max_retry_backoff_ms = 50;
    config.drain_timeout_secs = 1;
    config
}

async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn event_at(id: &str, seconds: i64) -> Event {
    Event {
        event_id: id.to_owned(),
        event_type: "purchase".to_owned(),
        occurred_at: Some(Timestamp { seconds, nanos: 0 }),
        user_id: Some(format!("user-{}", id.len() % 7)),
        properties: BTreeMap::from([
            ("sku".to_owned(), PropertyValue { kind: Some(property_value::Kind::StringValue(format!("sku-{id}"))) }),
            ("price".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(9.5)) }),
        ]),
    }
}

/// A batch encoded as the collector encodes it: its events and, per hour, the count of accepted ones.
fn batch_record(customer: &str, batch_id: &str, events: Vec<Event>) -> LogRecord {
    let mut accepted_per_hour: BTreeMap<i64, u32> = BTreeMap::new();
    for event in &events {
        *accepted_per_hour.entry(hour::hour_start(event.occurred_at.unwrap().seconds)).or_default() += 1;
    }
    let outcomes = accepted_per_hour
        .into_iter()
        .map(|(hour_start, count)| OutcomeCount {
            hour_start_unix_secs: hour_start,
            outcome: Outcome::Accepted.into(),
            reason: RejectionReason::Unspecified.into(),
            count,
        })
        .collect();
    let record = EventBatchRecord {
        customer_id: customer.to_owned(),
        received_at_unix_ms: now_secs() * 1000,
        batch_id: batch_id.to_owned(),
        collector_id: "test".to_owned(),
        events,
        outcomes,
        plan_checks: Vec::new(),
    };
    let key = record::partition_key(&CustomerId::new(customer).unwrap(), 1, 0);
    record::encode(key, &record)
}

/// `count` batches of `per_batch` events named `{prefix}{batch}-{index}`, spread over `hours`.
fn batches(
    customer: &str,
    prefix: &str,
    count: usize,
    per_batch: usize,
    hours: &[i64],
) -> (Vec<LogRecord>, BTreeMap<i64, BTreeSet<String>>) {
    let mut expected: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let records = (0..count)
        .map(|batch| {
            let events = (0..per_batch)
                .map(|index| {
                    let hour_start = hours[(batch + index) % hours.len()];
                    let id = format!("{prefix}{batch}-{index}");
                    expected.entry(hour_start).or_default().insert(id.clone());
                    event_at(&id, hour_start + index as i64)
                })
                .collect();
            batch_record(customer, &format!("{prefix}batch-{batch}"), events)
        })
        .collect();
    (records, expected)
}

async fn append_all(log: &SqliteEventLog, records: Vec<LogRecord>) -> i64 {
    let mut last_offset = 0;
    for record in records {
        last_offset = log.append(Topic::Events, record).await.unwrap().offset;
    }
    last_offset
}

#[tokio::test]
async fn appended_records_are_stored_marked_and_then_committed() {
    let stores = stores().await;
    let current_hour = hour::hour_start(now_secs());
    let hours = [current_hour - 7200, current_hour - 3600, current_hour];
    let (records, expected) = batches("acme", "a", 12, 10, &hours);
    let (other_records, other_expected) = batches("globex", "g", 3, 5, &[current_hour]);
    append_all(&stores.log, records).await;
    let last_offset = append_all(&stores.log, other_records).await;

    let mut config = fast_config();
    config.max_records_per_write = 5; // several groups, several commits
    let (shutdown, task) = stores.start(config).await;
    stores.wait_for_commit(last_offset).await;

    for (hour_start, ids) in &expected {
        let stored = stores.stored_ids("acme", *hour_start).await;
        assert_eq!(stored.keys().cloned().collect::<BTreeSet<_>>(), *ids, "hour {hour_start}");
        assert_eq!(stores.accepted("acme", *hour_start).await, ids.len() as u64, "outcomes of hour {hour_start}");
    }
    let globex = stores.stored_ids("globex", current_hour).await;
    assert_eq!(globex.keys().cloned().collect::<BTreeSet<_>>(), other_expected[&current_hour]);
    assert_eq!(stores.marked_hours("acme").await, hours.to_vec(), "every touched hour is marked");
    assert_eq!(stores.marked_hours("globex").await, vec![current_hour]);

    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(stores.log.committed_offset(INGEST_CONSUMER).await.unwrap(), last_offset);
}

#[tokio::test]
async fn a_restart_resumes_after_the_commit_and_redelivers_what_was_not_committed_once() {
    let stores = stores().await;
    let current_hour = hour::hour_start(now_secs());
    // First run: a poison record and a good one, ingested and committed.
    let poison = LogRecord {
        key: "acme".into(),
        payload: b"\xff\xff not protobuf".to_vec(),
        headers: vec![(record::SCHEMA_VERSION_HEADER, b"1".to_vec())],
    };
    stores.log.append(Topic::Events, poison).await.unwrap();
    let (first_records, mut expected) = batches("acme", "first", 1, 5, &[current_hour]);
    let first_committed = append_all(&stores.log, first_records).await;
    let (shutdown, task) = stores.start(fast_config()).await;
    stores.wait_for_commit(first_committed).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // Second run: the job queue is down, so the new records are written to the raw store but their
    // hours cannot be marked and their offset is never committed.
    stores.job_queue.down.store(true, Ordering::SeqCst);
    let (second_records, second_expected) = batches("acme", "second", 4, 5, &[current_hour]);
    let second_last = append_all(&stores.log, second_records).await;
    let (shutdown, task) = stores.start(fast_config()).await;
    let second_ids = second_expected[&current_hour].clone();
    wait_for("the second records to reach the raw store", || async {
        let stored = stores.stored_ids("acme", current_hour).await;
        second_ids.iter().all(|id| stored.contains_key(id))
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        stores.log.committed_offset(INGEST_CONSUMER).await.unwrap(),
        first_committed,
        "nothing committed unmarked"
    );

    // Third run: the queue is back; the uncommitted records come again and land once.
    stores.job_queue.down.store(false, Ordering::SeqCst);
    let (shutdown, task) = stores.start(fast_config()).await;
    stores.wait_for_commit(second_last).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    expected.entry(current_hour).or_default().extend(second_ids);
    let stored = stores.stored_ids("acme", current_hour).await;
    assert_eq!(stored.keys().cloned().collect::<BTreeSet<_>>(), expected[&current_hour]);
    assert!(stored.values().all(|copies| *copies == 1), "each event once: {stored:?}");
    assert_eq!(stores.accepted("acme", current_hour).await, 25, "the redelivered batches' outcomes count once");
    assert_eq!(stores.marked_hours("acme").await, vec![current_hour]);
    let dead_letters = stores.log.read_after(Topic::DeadLetter, 0, 100).await.unwrap();
    assert_eq!(dead_letters.len(), 1, "the restarts resumed after the poison record, not from the start");
}

#[tokio::test]
async fn poison_records_go_to_the_dead_letter_topic_and_the_rest_moves_on() {
    let stores = stores().await;
    let current_hour = hour::hour_start(now_secs());
    let garbage = LogRecord {
        key: "victim".into(),
        payload: b"\xff\xff\xff not protobuf".to_vec(),
        headers: vec![(record::SCHEMA_VERSION_HEADER, b"1".to_vec())],
    };
    let mut from_the_future = batch_record("victim", "future", vec![event_at("future-1", current_hour)]);
    from_the_future.headers = vec![(record::SCHEMA_VERSION_HEADER, b"99".to_vec())];
    let good = batch_record("victim", "good", vec![event_at("good-1", current_hour + 1)]);
    let garbage_offset = stores.log.append(Topic::Events, garbage).await.unwrap().offset;
    let future_offset = stores.log.append(Topic::Events, from_the_future).await.unwrap().offset;
    let good_offset = stores.log.append(Topic::Events, good).await.unwrap().offset;

    let (shutdown, task) = stores.start(fast_config()).await;
    stores.wait_for_commit(good_offset).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    let stored = stores.stored_ids("victim", current_hour).await;
    assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), vec!["good-1".to_owned()]);
    let dead_letters = stores.log.read_after(Topic::DeadLetter, 0, 100).await.unwrap();
    assert_eq!(dead_letters.len(), 2);
    let text = |record: &ConsumedRecord, name: &str| {
        String::from_utf8(record.header(name).unwrap_or_default().to_vec()).unwrap()
    };
    assert!(text(&dead_letters[0], REASON_HEADER).contains("undecodable payload"));
    assert_eq!(text(&dead_letters[0], SOURCE_HEADER), format!("events/0/{garbage_offset}"));
    assert!(text(&dead_letters[1], REASON_HEADER).contains("unknown schema version 99"));
    assert_eq!(text(&dead_letters[1], SOURCE_HEADER), format!("events/0/{future_offset}"));
    assert_eq!(text(&dead_letters[1], record::SCHEMA_VERSION_HEADER), "99", "the original header is kept");
    assert!(dead_letters.iter().all(|record| record.key == "victim"));
}

#[tokio::test]
async fn ingested_records_are_trimmed_from_the_log() {
    let stores = stores().await;
    let current_hour = hour::hour_start(now_secs());
    let (records, _) = batches("acme", "t", 6, 2, &[current_hour]);
    let last_offset = append_all(&stores.log, records).await;
    let trim = LogTrimConfig { trim_interval_secs: 1, keep_ingested_records: 2 };
    let (shutdown, task) = stores.start_trimming(fast_config(), trim).await;
    stores.wait_for_commit(last_offset).await;
    wait_for("the ingested records to be trimmed", || async {
        stores.log.read_after(Topic::Events, 0, 100).await.unwrap().len() == 2
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let left = stores.log.read_after(Topic::Events, 0, 100).await.unwrap();
    assert_eq!(left.last().map(|record| record.offset), Some(last_offset), "the newest ones are kept");
}

/// Throughput of the embedded path, for the record (not a pass/fail check):
/// `cargo test --release -p hourglass-ingestor --test embedded_ingest -- --ignored --nocapture throughput`.
/// `HOURGLASS_BENCH_DATA_DIR` chooses the disk (default: the system's temporary directory).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run in release and read its output"]
async fn throughput() {
    const RECORDS: usize = 4_000;
    const EVENTS_PER_RECORD: usize = 100;
    const IN_FLIGHT: usize = 256;
    let parent =
        std::env::var_os("HOURGLASS_BENCH_DATA_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let data_dir = tempfile::tempdir_in(&parent).unwrap();
    let log = Arc::new(SqliteEventLog::open(data_dir.path()).await.unwrap());
    let current_hour = hour::hour_start(now_secs());
    let records: Vec<LogRecord> = (0..RECORDS)
        .map(|batch| {
            let events = (0..EVENTS_PER_RECORD)
                .map(|index| event_at(&format!("{batch}-{index}"), current_hour + (index as i64 % 3600)))
                .collect();
            batch_record(&format!("customer-{}", batch % 10), &format!("batch-{batch}"), events)
        })
        .collect();
    let payload_bytes: usize = records.iter().map(|record| record.payload.len()).sum();

    let started = Instant::now();
    let mut appends = tokio::task::JoinSet::new();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut last_offset = 0;
    for record in records {
        let permit = Arc::clone(&semaphore).acquire_owned().await.unwrap();
        let log = Arc::clone(&log);
        appends.spawn(async move {
            let appended = log.append(Topic::Events, record).await.unwrap();
            drop(permit);
            appended.offset
        });
    }
    while let Some(offset) = appends.join_next().await {
        last_offset = last_offset.max(offset.unwrap());
    }
    let append_secs = started.elapsed().as_secs_f64();
    let events = (RECORDS * EVENTS_PER_RECORD) as f64;
    println!(
        "append: {RECORDS} records of {EVENTS_PER_RECORD} events ({} bytes each), {IN_FLIGHT} in flight: {:.0} events/s ({:.0} records/s) on {}",
        payload_bytes / RECORDS,
        events / append_secs,
        RECORDS as f64 / append_secs,
        parent.display()
    );

    let raw_store = Arc::new(SqliteRawStore::open(data_dir.path(), 16).await.unwrap());
    let job_queue = Arc::new(SqliteMetaStore::open(data_dir.path()).await.unwrap());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let consumer = log.events_consumer(INGEST_CONSUMER, Some(LogTrimConfig::with_defaults())).await.unwrap();
    let task = tokio::spawn(hourglass_ingestor::run(
        EmbeddedIngestConfig::with_defaults().loop_config(),
        consumer,
        raw_store,
        job_queue,
        Arc::clone(&log),
        hourglass_ingestor::Suppression::none(),
        shutdown.clone(),
    ));
    wait_for_commit_of(&log, last_offset).await;
    let ingest_secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    println!(
        "ingest: {:.0} events/s ({:.0} records/s, {} records per write)",
        events / ingest_secs,
        RECORDS as f64 / ingest_secs,
        EmbeddedIngestConfig::with_defaults().max_records_per_write
    );
}

async fn wait_for_commit_of(log: &SqliteEventLog, offset: i64) {
    loop {
        if log.committed_offset(INGEST_CONSUMER).await.unwrap() >= offset {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
