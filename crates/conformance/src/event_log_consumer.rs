//! The [`EventLogConsumer`] suite: what the ingest loop relies on from the read side of any event log.
//!
//! - appended records come back each once, with key, payload and headers intact and a source naming
//!   their partition and offset; offsets increase within a partition, and one key's records come in
//!   append order;
//! - a group holds at most the maximum asked for, and records already waiting are taken together;
//! - a consumer that has read everything waits, and wakes up for the next append;
//! - a commit is honoured by the next consumer of the same group: it gets every record at or after the
//!   committed position of each partition, and none before it;
//! - cancelling `next_records` loses no record;
//! - groups are independent: a new group reads from the start;
//! - the lag a consumer reports comes to the records at or after its group's committed positions,
//!   per partition (eventually: it may be a few seconds old), and to 0 once everything is committed.
//!
//! The suite appends to the Events topic of the log it is given, so give it a fresh topic (or a fresh
//! data directory), and consumers that read that topic.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;
use std::time::Duration;

use futures::future::BoxFuture;
use hourglass_core::event_log::{
    Appended, CommitPosition, ConsumedRecord, EventLog, EventLogConsumer, LogRecord, PartitionLag, Topic,
};

/// Records appended before the first consumer starts.
const FIRST_RECORDS: usize = 40;

/// The group size the suite asks for while reading them.
const MAX_GROUP: usize = 7;

/// How long any one expected record may take to arrive (a Kafka consumer first joins its group).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs the suite. `new_consumer(group)` starts a consumer of the log's Events topic in `group`, from
/// the group's committed positions (from the start for a new group); the implementation makes group
/// names unique to its test if its groups outlive it (Kafka's).
pub async fn suite<L, C>(log: &L, new_consumer: impl Fn(&'static str) -> BoxFuture<'static, C>)
where
    L: EventLog,
    C: EventLogConsumer,
{
    let mut appended: BTreeMap<(i32, i64), LogRecord> = BTreeMap::new();
    for index in 0..FIRST_RECORDS {
        append(log, &mut appended, index).await;
    }

    // The first consumer reads everything, in groups of at most MAX_GROUP.
    let mut first = new_consumer("readers").await;
    let (read, group_sizes) = read_exactly(&mut first, FIRST_RECORDS, MAX_GROUP).await;
    assert!(group_sizes.iter().all(|size| (1..=MAX_GROUP).contains(size)), "group sizes {group_sizes:?}");
    assert!(group_sizes.iter().any(|size| *size > 1), "records already waiting are taken together: {group_sizes:?}");
    check_records(&read, &appended);

    // It commits each partition up to the middle of what it read there, and leaves.
    let mut read_by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for record in &read {
        read_by_partition.entry(record.partition).or_default().push(record.offset);
    }
    let committed: Vec<CommitPosition> = read_by_partition
        .iter()
        .map(|(partition, offsets)| CommitPosition { partition: *partition, next_offset: offsets[offsets.len() / 2] })
        .collect();
    first.commit(&committed).await.expect("a commit resolves Ok");
    first.close().await.expect("close resolves Ok");

    // The next consumer of the group gets exactly what was not committed.
    let mut second = new_consumer("readers").await;
    let not_committed: BTreeSet<(i32, i64)> = committed
        .iter()
        .flat_map(|position| {
            read_by_partition[&position.partition]
                .iter()
                .filter(move |offset| **offset >= position.next_offset)
                .map(move |offset| (position.partition, *offset))
        })
        .collect();
    let (redelivered, _) = read_exactly(&mut second, not_committed.len(), MAX_GROUP).await;
    check_records(&redelivered, &appended);
    let redelivered_positions: BTreeSet<(i32, i64)> =
        redelivered.iter().map(|record| (record.partition, record.offset)).collect();
    assert_eq!(redelivered_positions, not_committed, "a new member of the group resumes at the committed positions");
    // Its lag is what the group has not committed, partition by partition.
    let behind: BTreeMap<i32, i64> = not_committed.iter().fold(BTreeMap::new(), |mut behind, (partition, _)| {
        *behind.entry(*partition).or_default() += 1;
        behind
    });
    wait_for_lag(&mut second, &behind).await;
    let all_read: Vec<CommitPosition> = read_by_partition
        .iter()
        .map(|(partition, offsets)| CommitPosition {
            partition: *partition,
            next_offset: offsets[offsets.len() - 1] + 1,
        })
        .collect();
    second.commit(&all_read).await.expect("a commit resolves Ok");
    let caught_up: BTreeMap<i32, i64> = read_by_partition.keys().map(|partition| (*partition, 0)).collect();
    wait_for_lag(&mut second, &caught_up).await;

    // Caught up, it waits, and the next append wakes it.
    let (position, woken) = {
        let mut waiting = pin!(second.next_records(MAX_GROUP));
        let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
        assert!(early.is_err(), "a caught-up consumer waits for the next record, got {early:?}");
        let position = append(log, &mut appended, FIRST_RECORDS).await;
        let woken = tokio::time::timeout(ARRIVAL_TIMEOUT, waiting)
            .await
            .expect("the next append wakes a waiting consumer")
            .expect("next_records resolves Ok");
        (position, woken)
    };
    assert_eq!(woken.iter().map(|record| (record.partition, record.offset)).collect::<Vec<_>>(), vec![position]);
    check_records(&woken, &appended);
    let after_it = CommitPosition { partition: position.0, next_offset: position.1 + 1 };
    second.commit(&[after_it]).await.expect("a commit resolves Ok");
    second.close().await.expect("close resolves Ok");

    // With everything committed, the next member gets only new records, however often its reads are
    // cancelled.
    let mut new_positions = BTreeSet::new();
    for index in FIRST_RECORDS + 1..FIRST_RECORDS + 11 {
        new_positions.insert(append(log, &mut appended, index).await);
    }
    let mut third = new_consumer("readers").await;
    let read = read_cancelling(&mut third, new_positions.len()).await;
    check_records(&read, &appended);
    let read_positions: BTreeSet<(i32, i64)> = read.iter().map(|record| (record.partition, record.offset)).collect();
    assert_eq!(read_positions, new_positions, "only what was appended after the last commit, each once");
    third.close().await.expect("close resolves Ok");

    // Another group is independent: it reads everything from the start.
    let mut other_group = new_consumer("others").await;
    let (everything, _) = read_exactly(&mut other_group, appended.len(), 1000).await;
    check_records(&everything, &appended);
    let positions: BTreeSet<(i32, i64)> = everything.iter().map(|record| (record.partition, record.offset)).collect();
    assert_eq!(positions, appended.keys().copied().collect(), "a new group reads every record");
    other_group.close().await.expect("close resolves Ok");
}

/// Waits until `consumer` reports `expected` lag for each partition, and 0 (or nothing) for any other,
/// while it has nothing to read. It keeps a read pending meanwhile: a Kafka client delivers its
/// statistics, where the lag comes from, only while it is polled.
async fn wait_for_lag<C: EventLogConsumer>(consumer: &mut C, expected: &BTreeMap<i32, i64>) {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    let matches = |lag: &[PartitionLag]| {
        expected.iter().all(|(partition, records)| {
            lag.iter().any(|reported| reported.partition == *partition && reported.records == *records)
        }) && lag.iter().all(|reported| expected.contains_key(&reported.partition) || reported.records == 0)
    };
    loop {
        let lag = consumer.lag();
        if matches(&lag) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag should come to {expected:?} (partition → records), reported {lag:?}"
        );
        let read = tokio::time::timeout(Duration::from_millis(200), consumer.next_records(1)).await;
        assert!(read.is_err(), "nothing is left to read, got {read:?}");
    }
}

/// Appends record `index` to Events and remembers where it went.
async fn append<L: EventLog>(log: &L, appended: &mut BTreeMap<(i32, i64), LogRecord>, index: usize) -> (i32, i64) {
    // The write side's records: several keys per partition (so per-key order is really tested), binary
    // payloads, and empty and binary header values.
    let record = crate::event_log::record(Topic::Events, index);
    let Appended { partition, offset } =
        log.append(Topic::Events, record.clone()).await.expect("an append resolves Ok");
    appended.insert((partition, offset), record);
    (partition, offset)
}

/// Reads until `count` records came, asking for at most `max_group` at a time. Returns them in delivery
/// order, with the size of each group.
async fn read_exactly<C: EventLogConsumer>(
    consumer: &mut C,
    count: usize,
    max_group: usize,
) -> (Vec<ConsumedRecord>, Vec<usize>) {
    let mut records = Vec::with_capacity(count);
    let mut group_sizes = Vec::new();
    while records.len() < count {
        let group = tokio::time::timeout(ARRIVAL_TIMEOUT, consumer.next_records(max_group))
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} records came", records.len()))
            .expect("next_records resolves Ok");
        assert!(!group.is_empty(), "a group is never empty");
        group_sizes.push(group.len());
        records.extend(group);
    }
    assert_eq!(records.len(), count, "no more records than appended: {records:?}");
    (records, group_sizes)
}

/// Reads until `count` records came, cancelling every other call after its first poll.
async fn read_cancelling<C: EventLogConsumer>(consumer: &mut C, count: usize) -> Vec<ConsumedRecord> {
    let mut records = Vec::with_capacity(count);
    let mut attempt = 0u32;
    while records.len() < count {
        attempt += 1;
        // A zero timeout polls the call once, then drops it if it is not ready.
        let patience = if attempt % 2 == 1 { Duration::ZERO } else { ARRIVAL_TIMEOUT };
        match tokio::time::timeout(patience, consumer.next_records(3)).await {
            Ok(group) => records.extend(group.expect("next_records resolves Ok")),
            Err(_) if patience.is_zero() => {}
            Err(_) => panic!("only {} of {count} records came", records.len()),
        }
    }
    assert_eq!(records.len(), count, "no more records than appended: {records:?}");
    records
}

/// Each record is one that was appended, intact, read once; offsets increase within a partition and
/// one key's records come in append order.
fn check_records(read: &[ConsumedRecord], appended: &BTreeMap<(i32, i64), LogRecord>) {
    let mut seen = BTreeSet::new();
    let mut last_offset_of_partition: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_index_of_key: BTreeMap<&str, usize> = BTreeMap::new();
    for record in read {
        let position = (record.partition, record.offset);
        assert!(seen.insert(position), "{position:?} delivered twice");
        let original =
            appended.get(&position).unwrap_or_else(|| panic!("{position:?} was delivered but never appended there"));
        assert_eq!(record.key, original.key, "{position:?}: key intact");
        assert_eq!(record.payload, original.payload, "{position:?}: payload intact");
        let headers: Vec<(String, Vec<u8>)> =
            original.headers.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect();
        assert_eq!(record.headers, headers, "{position:?}: headers intact, in order");
        assert_eq!(record.header("hg-index"), Some(headers[1].1.as_slice()), "{position:?}: header lookup");
        let suffix = format!("/{}/{}", record.partition, record.offset);
        assert!(record.source.ends_with(&suffix), "{position:?}: source {} names partition and offset", record.source);
        if let Some(previous) = last_offset_of_partition.insert(record.partition, record.offset) {
            assert!(record.offset > previous, "partition {} offsets increase", record.partition);
        }
        let index: usize = std::str::from_utf8(&headers[1].1).unwrap().parse().unwrap();
        if let Some(previous) = last_index_of_key.insert(original.key.as_str(), index) {
            assert!(index > previous, "key {}'s records come in append order", original.key);
        }
    }
}
