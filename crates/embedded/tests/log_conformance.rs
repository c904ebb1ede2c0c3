//! The [`EventLog`](hourglass_core::event_log::EventLog) and
//! [`EventLogConsumer`](hourglass_core::event_log::EventLogConsumer) conformance suites against the
//! embedded log, in a data directory of the test's own; and what the embedded log adds: its stored
//! offsets, trimming, waking a waiting reader, refusing appends.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hourglass_conformance::event_log::{self, ReadBack};
use hourglass_conformance::event_log_consumer;
use hourglass_core::event_log::{CommitPosition, EventLog, EventLogConsumer, LogRecord, Topic};
use hourglass_embedded::log::{LogTrimConfig, SqliteEventLog};

fn record(key: &str, payload: &[u8]) -> LogRecord {
    LogRecord { key: key.to_owned(), payload: payload.to_vec(), headers: vec![("hg-test", b"x".to_vec())] }
}

#[tokio::test]
async fn sqlite_event_log_conforms() {
    let data_dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteEventLog::open(data_dir.path()).await.unwrap());
    let reader = Arc::clone(&log);
    event_log::suite(&*log, move |topic: Topic| {
        let reader = Arc::clone(&reader);
        async move {
            let records = reader.read_after(topic, 0, usize::MAX).await.unwrap();
            records
                .into_iter()
                .map(|record| ReadBack {
                    partition: 0,
                    offset: record.offset,
                    key: record.key,
                    payload: record.payload,
                    headers: record.headers.into_iter().collect(),
                })
                .collect()
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn sqlite_event_log_consumer_conforms() {
    let data_dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteEventLog::open(data_dir.path()).await.unwrap());
    let consumers_log = Arc::clone(&log);
    event_log_consumer::suite(&*log, move |name: &'static str| {
        let log = Arc::clone(&consumers_log);
        async move { log.events_consumer(name, None).await.unwrap() }.boxed()
    })
    .await;
}

/// A consumer's commit is stored as the last record done (what tools and tests read), survives a
/// reopen, and is where the consumer of that name resumes.
#[tokio::test]
async fn a_consumer_commit_is_stored_as_the_last_record_done_and_survives_a_reopen() {
    let data_dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteEventLog::open(data_dir.path()).await.unwrap());
    let mut offsets = Vec::new();
    for payload in [b"one", b"two", b"six"] {
        offsets.push(log.append(Topic::Events, record("acme", payload)).await.unwrap().offset);
    }
    let mut consumer = log.events_consumer("ingest", None).await.unwrap();
    let read = consumer.next_records(10).await.unwrap();
    assert_eq!(read.iter().map(|record| record.offset).collect::<Vec<_>>(), offsets);
    assert_eq!(read[0].source, format!("events/0/{}", offsets[0]));
    consumer.commit(&[CommitPosition { partition: 0, next_offset: offsets[2] }]).await.unwrap();
    assert!(
        consumer.commit(&[CommitPosition { partition: 1, next_offset: 1 }]).await.is_err(),
        "log.db has no partition 1"
    );
    consumer.close().await.unwrap();
    assert_eq!(log.committed_offset("ingest").await.unwrap(), offsets[1], "the last record done");
    drop(log);

    let reopened = Arc::new(SqliteEventLog::open(data_dir.path()).await.unwrap());
    let mut resumed = reopened.events_consumer("ingest", None).await.unwrap();
    let read = resumed.next_records(10).await.unwrap();
    assert_eq!(read.iter().map(|record| record.payload.as_slice()).collect::<Vec<_>>(), vec![&b"six"[..]]);
}

/// The consumer trims what it committed, every trim interval, also while it waits for records.
#[tokio::test]
async fn a_trimming_consumer_deletes_what_it_committed_but_the_kept_tail() {
    let data_dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteEventLog::open(data_dir.path()).await.unwrap());
    let mut offsets = Vec::new();
    for index in 0..5u8 {
        offsets.push(log.append(Topic::Events, record("acme", &[index])).await.unwrap().offset);
    }
    let dead_letter = log.append(Topic::DeadLetter, record("acme", b"poison")).await.unwrap();
    let trim = LogTrimConfig { trim_interval_secs: 1, keep_ingested_records: 1 };
    let mut consumer = log.events_consumer("ingest", Some(trim)).await.unwrap();
    assert_eq!(consumer.next_records(10).await.unwrap().len(), 5);
    consumer.commit(&[CommitPosition { partition: 0, next_offset: offsets[4] }]).await.unwrap();

    // Nothing more to read: the consumer waits, and trims when the interval has passed.
    let waiting = tokio::time::timeout(Duration::from_secs(3), consumer.next_records(10)).await;
    assert!(waiting.is_err(), "nothing was appended: {waiting:?}");
    let left: Vec<i64> = log.read_after(Topic::Events, 0, 100).await.unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(left, offsets[3..].to_vec(), "committed through the fourth; the newest committed one is kept");
    let dead_letters = log.read_after(Topic::DeadLetter, 0, 100).await.unwrap();
    assert_eq!(dead_letters.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![dead_letter.offset]);
}

#[tokio::test]
async fn records_and_offsets_survive_a_reopen_and_a_trim_that_empties_the_topic() {
    let data_dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(data_dir.path()).await.unwrap();
    let first = log.append(Topic::Events, record("acme", b"one")).await.unwrap();
    let second = log.append(Topic::Events, record("acme", b"two")).await.unwrap();
    log.commit_offset("ingest", second.offset).await.unwrap();
    assert_eq!(log.trim_events(second.offset, 0).await.unwrap(), 2);
    assert!(log.read_after(Topic::Events, 0, 10).await.unwrap().is_empty());
    drop(log);

    let reopened = SqliteEventLog::open(data_dir.path()).await.unwrap();
    assert_eq!(reopened.committed_offset("ingest").await.unwrap(), second.offset, "the commit is durable");
    assert_eq!(reopened.committed_offset("someone-else").await.unwrap(), 0);
    let third = reopened.append(Topic::Events, record("acme", b"three")).await.unwrap();
    assert!(third.offset > second.offset && second.offset > first.offset, "offsets are never reused");
    let after_commit = reopened.read_after(Topic::Events, second.offset, 10).await.unwrap();
    assert_eq!(after_commit.len(), 1);
    assert_eq!(after_commit[0].payload, b"three");
    assert_eq!(after_commit[0].header("hg-test"), Some(&b"x"[..]));
}

#[tokio::test]
async fn trimming_keeps_dead_letters_unconsumed_records_and_the_requested_tail() {
    let data_dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(data_dir.path()).await.unwrap();
    let mut event_offsets = Vec::new();
    for index in 0..6u8 {
        event_offsets.push(log.append(Topic::Events, record("acme", &[index])).await.unwrap().offset);
    }
    let dead_letter = log.append(Topic::DeadLetter, record("acme", b"poison")).await.unwrap();

    // Consumed through the fourth record; keep the newest two consumed ones.
    assert_eq!(log.trim_events(event_offsets[3], 2).await.unwrap(), 2);
    let left: Vec<i64> = log.read_after(Topic::Events, 0, 100).await.unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(left, event_offsets[2..].to_vec());
    let dead_letters = log.read_after(Topic::DeadLetter, 0, 100).await.unwrap();
    assert_eq!(dead_letters.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![dead_letter.offset]);
    assert_eq!(log.read_after(Topic::Events, event_offsets[1], 2).await.unwrap().len(), 2, "at most n records");
}

#[tokio::test]
async fn a_waiting_consumer_wakes_for_its_topic_only() {
    let data_dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteEventLog::open(data_dir.path()).await.unwrap());
    let before = log.append(Topic::Events, record("acme", b"before")).await.unwrap();
    // Records after an offset that already exist: no wait.
    log.wait_for_records_after(Topic::Events, 0).await;

    let waiter = {
        let log = Arc::clone(&log);
        tokio::spawn(async move { log.wait_for_records_after(Topic::Events, before.offset).await })
    };
    log.append(Topic::DeadLetter, record("acme", b"poison")).await.unwrap();
    log.flush(Duration::from_secs(10)).await.unwrap();
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "a dead letter does not wake an Events consumer");
    let after = log.append(Topic::Events, record("acme", b"after")).await.unwrap();
    waiter.await.unwrap();
    let read = log.read_after(Topic::Events, before.offset, 10).await.unwrap();
    assert_eq!(read.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![after.offset]);
    log.check_ready().await.unwrap();
}

/// Waiting for a consumer to catch up resolves with the last Events offset once that consumer has
/// committed it, not while it has committed less, nor for another consumer's commit or a dead letter;
/// a commit stored before a reopen counts.
#[tokio::test]
async fn waiting_for_a_consumer_to_catch_up_needs_its_commit_of_the_last_event_record() {
    let data_dir = tempfile::tempdir().unwrap();
    let idle = Duration::from_millis(10);
    let log = SqliteEventLog::open(data_dir.path()).await.unwrap();
    let first = log.append(Topic::Events, record("acme", b"one")).await.unwrap();
    let second = log.append(Topic::Events, record("acme", b"two")).await.unwrap();
    assert!(log.wait_until_consumed_and_idle("ingest", 0, idle).now_or_never().is_none(), "nothing committed");

    log.commit_offset("ingest", first.offset).await.unwrap();
    log.commit_offset("other", second.offset).await.unwrap();
    log.append(Topic::DeadLetter, record("acme", b"poison")).await.unwrap();
    assert!(
        log.wait_until_consumed_and_idle("ingest", 0, idle).now_or_never().is_none(),
        "the consumer has not committed the last record"
    );

    log.commit_offset("ingest", second.offset).await.unwrap();
    assert_eq!(log.wait_until_consumed_and_idle("ingest", 0, idle).await, second.offset);
    assert!(
        log.wait_until_consumed_and_idle("ingest", second.offset, idle).now_or_never().is_none(),
        "no record after the offset waited from"
    );
    drop(log);

    let reopened = SqliteEventLog::open(data_dir.path()).await.unwrap();
    assert_eq!(reopened.wait_until_consumed_and_idle("ingest", first.offset, idle).await, second.offset);
}

/// Once appends are refused (standalone's ingestion stopped), an append fails as unavailable and is not
/// stored, readiness fails, and what was appended before can still be read.
#[tokio::test]
async fn refused_appends_fail_as_unavailable_and_store_nothing() {
    use hourglass_core::event_log::EventLogError;

    let data_dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(data_dir.path()).await.unwrap();
    let before = log.append(Topic::Events, record("k", b"before")).await.unwrap();
    log.check_ready().await.unwrap();

    log.refuse_appends("ingestion stopped");
    match log.append(Topic::Events, record("k", b"after")).await {
        Err(EventLogError::Unavailable(cause)) => assert!(cause.to_string().contains("ingestion stopped"), "{cause}"),
        other => panic!("a refused append must be unavailable, got {other:?}"),
    }
    assert!(log.check_ready().await.is_err(), "a log that refuses appends is not ready");
    let stored = log.read_after(Topic::Events, 0, usize::MAX).await.unwrap();
    assert_eq!(
        stored.iter().map(|record| (record.offset, record.payload.as_slice())).collect::<Vec<_>>(),
        vec![(before.offset, &b"before"[..])]
    );
}
