//! The [`EventLog`] suite: what the collector and the ingestor rely on from any event log.
//!
//! - every append resolves `Ok` with where the record went, alone or with many others in flight;
//! - after `flush`, reading a topic back gives exactly the records appended to it (nothing lost,
//!   nothing duplicated, nothing in the other topic), with keys, payloads and headers intact;
//! - the records of one key are read back in append order, and offsets increase within a partition;
//! - `check_ready` answers `Ok`.
//!
//! The suite appends to the log it is given, so give it fresh topics (or a fresh data directory).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use hourglass_core::event_log::{Appended, EventLog, LogRecord, Topic};

/// A record as the implementation's reader gives it back, in the topic's order (per partition, by
/// offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBack {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key.
    pub key: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its headers, by name.
    pub headers: BTreeMap<String, Vec<u8>>,
}

/// How many records the concurrent part appends at once.
const CONCURRENT_APPENDS: usize = 200;

/// Keys the records are spread over (several per partition, so per-key order is really tested).
const KEYS: [&str; 5] = ["acme", "globex", "initech", "umbrella", "acme#1"];

/// Runs the suite. `read_back(topic)` returns every record now in `topic`, in the implementation's
/// order: by partition, then offset.
pub async fn suite<L: EventLog>(log: &L, read_back: impl Fn(Topic) -> BoxFuture<'static, Vec<ReadBack>>) {
    log.check_ready().await.expect("check_ready answers Ok");

    let mut expected: HashMap<Topic, Vec<(LogRecord, Appended)>> = HashMap::new();

    // One at a time: each resolves before the next starts, so their order is the append order.
    for index in 0..10 {
        for topic in [Topic::Events, Topic::DeadLetter] {
            let record = record(topic, index);
            let appended = log.append(topic, record.clone()).await.expect("a single append resolves Ok");
            expected.entry(topic).or_default().push((record, appended));
        }
    }

    // Many at once, to both topics: the collector keeps many batches in flight.
    let concurrent: Vec<(Topic, LogRecord)> = (10..10 + CONCURRENT_APPENDS)
        .map(|index| {
            let topic = if index % 4 == 0 { Topic::DeadLetter } else { Topic::Events };
            (topic, record(topic, index))
        })
        .collect();
    let results = join_all(concurrent.iter().map(|(topic, record)| log.append(*topic, record.clone()))).await;
    for ((topic, record), result) in concurrent.into_iter().zip(results) {
        let appended = result.unwrap_or_else(|error| panic!("concurrent append to {topic:?} failed: {error}"));
        expected.entry(topic).or_default().push((record, appended));
    }

    log.flush(Duration::from_secs(30)).await.expect("flush resolves Ok");
    log.check_ready().await.expect("check_ready answers Ok after appends");

    for topic in [Topic::Events, Topic::DeadLetter] {
        check_topic(topic, expected.remove(&topic).unwrap_or_default(), read_back(topic).await);
    }
}

/// Record `index` of `topic`: a key among [`KEYS`], a payload naming topic and index (binary bytes
/// included), and headers of the collector's kind plus an empty and a binary value.
pub(crate) fn record(topic: Topic, index: usize) -> LogRecord {
    let mut payload = format!("{topic:?}-{index}").into_bytes();
    payload.extend_from_slice(&[0, 255, (index % 251) as u8]);
    LogRecord {
        key: KEYS[index % KEYS.len()].to_owned(),
        payload,
        headers: vec![
            ("hg-schema-version", b"1".to_vec()),
            ("hg-index", index.to_string().into_bytes()),
            ("hg-empty", Vec::new()),
            ("hg-binary", vec![0, 1, 254, 255]),
        ],
    }
}

fn check_topic(topic: Topic, appended: Vec<(LogRecord, Appended)>, read: Vec<ReadBack>) {
    assert_eq!(read.len(), appended.len(), "{topic:?}: read back as many records as were appended");

    // Exactly the appended records, where the appends said they went.
    let mut read_by_position: HashMap<(i32, i64), &ReadBack> = HashMap::new();
    for record in &read {
        let duplicate = read_by_position.insert((record.partition, record.offset), record);
        assert!(duplicate.is_none(), "{topic:?}: two records at {}/{}", record.partition, record.offset);
    }
    for (record, position) in &appended {
        let found = read_by_position
            .get(&(position.partition, position.offset))
            .unwrap_or_else(|| panic!("{topic:?}: nothing read at {position:?}, where {} went", record.key));
        assert_eq!(found.key, record.key, "{topic:?} {position:?}: key intact");
        assert_eq!(found.payload, record.payload, "{topic:?} {position:?}: payload intact");
        let headers: BTreeMap<String, Vec<u8>> =
            record.headers.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect();
        assert_eq!(found.headers, headers, "{topic:?} {position:?}: headers intact");
    }

    // Offsets increase within a partition, in the order the reader gives.
    let mut last_offset_of_partition: HashMap<i32, i64> = HashMap::new();
    for record in &read {
        if let Some(previous) = last_offset_of_partition.insert(record.partition, record.offset) {
            assert!(record.offset > previous, "{topic:?}: partition {} offsets increase", record.partition);
        }
    }

    // One key's records come back in append order. The sequential appends have a known order; among
    // the concurrent ones, the offsets the appends resolved with are the order the log chose.
    let mut indexes_of_key: HashMap<&str, Vec<(i32, i64, usize)>> = HashMap::new();
    for record in &read {
        indexes_of_key.entry(record.key.as_str()).or_default().push((
            record.partition,
            record.offset,
            index_of(record),
        ));
    }
    for (key, records) in &indexes_of_key {
        let partitions: std::collections::BTreeSet<i32> = records.iter().map(|(partition, _, _)| *partition).collect();
        assert_eq!(partitions.len(), 1, "{topic:?}: all records of key {key} are in one partition");
        let sequential: Vec<usize> = records.iter().map(|(_, _, index)| *index).filter(|index| *index < 10).collect();
        assert!(sequential.is_sorted(), "{topic:?}: key {key}'s sequential appends read back in order");
        let first_concurrent = records.iter().position(|(_, _, index)| *index >= 10);
        if let Some(first_concurrent) = first_concurrent {
            assert!(
                records[first_concurrent..].iter().all(|(_, _, index)| *index >= 10),
                "{topic:?}: key {key}'s sequential appends come before the concurrent ones"
            );
        }
    }
}

/// The index a [`record`] carries in its `hg-index` header.
fn index_of(record: &ReadBack) -> usize {
    record
        .headers
        .get("hg-index")
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("record at {}/{} lost its hg-index header", record.partition, record.offset))
}
