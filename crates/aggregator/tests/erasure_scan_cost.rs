//! What finding a user's hours by scanning costs, against what an aggregation of the same hour costs
//! (README "Erasure" has the figures): one realistic hour written to each raw store, then timed: the
//! fold an aggregation does, the scan of an erasure (`count_user_events`, which hashes each event's user
//! with the salt), and the deletion. Prints figures and asserts only what was counted, never a duration.
//! Ignored by default (it writes a million events); run with
//! `cargo test -p hourglass-aggregator --test erasure_scan_cost -- --ignored --nocapture`.

use std::collections::HashSet;
use std::time::Instant;

use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureSalt, UserHash, UserMatcher};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, property_value};

const HOUR: i64 = 1_764_075_600;
/// The aggregator's default (`--aggregator-bucket-concurrency`).
const BUCKET_CONCURRENCY: usize = 4;
const EVENTS_PER_RECORD: usize = 100;
const USERS: usize = 50_000;

/// `events` events of `USERS` users in 100-event records, ~200 bytes each as the benchmarks send.
fn records(events: usize) -> Vec<EventBatchRecord> {
    (0..events / EVENTS_PER_RECORD)
        .map(|record_index| {
            let events = (0..EVENTS_PER_RECORD)
                .map(|index| {
                    let number = record_index * EVENTS_PER_RECORD + index;
                    let properties = [
                        (
                            "page".to_owned(),
                            PropertyValue {
                                kind: Some(property_value::Kind::StringValue(format!("/p/{}", number % 500))),
                            },
                        ),
                        (
                            "price".to_owned(),
                            PropertyValue { kind: Some(property_value::Kind::NumberValue((number % 97) as f64)) },
                        ),
                    ];
                    Event {
                        event_id: format!("evt-{number:012}"),
                        event_type: ["view", "click", "buy", "signup"][number % 4].into(),
                        occurred_at: Some(Timestamp { seconds: HOUR + (number % 3600) as i64, nanos: 0 }),
                        user_id: Some(format!("user-{:08}", (number * 7919) % USERS)),
                        properties: properties.into_iter().collect(),
                    }
                })
                .collect();
            EventBatchRecord {
                customer_id: "acme".into(),
                received_at_unix_ms: HOUR * 1000 + record_index as i64,
                batch_id: format!("batch-{record_index}"),
                collector_id: "bench".into(),
                events,
                outcomes: vec![OutcomeCount {
                    hour_start_unix_secs: HOUR,
                    outcome: Outcome::Accepted as i32,
                    reason: 0,
                    count: EVENTS_PER_RECORD as u32,
                }],
                plan_checks: Vec::new(),
            }
        })
        .collect()
}

async fn measure<R: RawStore>(store_name: &str, raw_store: &R, events: usize) {
    let sent = records(events);
    let distinct_users: HashSet<&str> =
        sent.iter().flat_map(|record| record.events.iter().filter_map(|event| event.user_id.as_deref())).collect();
    for chunk in sent.chunks(50) {
        raw_store.write_records(&RecordView::from_records(chunk)).await.unwrap();
    }
    let salt = ErasureSalt::new("a salt for measuring, long enough").unwrap();
    let erased_user = "user-00000042";
    let matcher = UserMatcher::new(&salt, CustomerId::new("acme").unwrap(), UserHash::of(&salt, "acme", erased_user));
    let expected = sent
        .iter()
        .flat_map(|record| &record.events)
        .filter(|event| event.user_id.as_deref() == Some(erased_user))
        .count() as u64;

    let started = Instant::now();
    let rollup = hourglass_aggregator::aggregate_hour(raw_store, "acme", HOUR, true, BUCKET_CONCURRENCY).await.unwrap();
    let fold_secs = started.elapsed().as_secs_f64();
    assert_eq!(rollup.events, events as u64);

    let started = Instant::now();
    let found = raw_store.count_user_events(&matcher, HOUR).await.unwrap();
    let scan_secs = started.elapsed().as_secs_f64();
    assert_eq!(found, expected);

    let started = Instant::now();
    let erased = raw_store.erase_user_events(&matcher, HOUR).await.unwrap();
    let erase_secs = started.elapsed().as_secs_f64();
    assert_eq!(erased, expected);

    let started = Instant::now();
    for _ in 0..events {
        std::hint::black_box(matcher.matches(std::hint::black_box("user-00012345")));
    }
    let hash_secs = started.elapsed().as_secs_f64();

    println!(
        "{store_name}: an hour of {events} events, {} distinct users, {expected} of the erased user's\n  \
         aggregation fold {fold_secs:.2} s ({:.0}k events/s)\n  \
         erasure scan (count_user_events) {scan_secs:.2} s ({:.0}k events/s), of which hashing users {hash_secs:.2} s\n  \
         deletion (erase_user_events: two scans, then the blocks holding them rewritten) {erase_secs:.2} s\n  \
         an index (customer, user hash) -> hours would hold {} rows for this hour, written on the ingest path",
        distinct_users.len(),
        events as f64 / fold_secs / 1000.0,
        events as f64 / scan_secs / 1000.0,
        distinct_users.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: writes a million events"]
async fn scan_cost_on_standalone() {
    let data_dir = tempfile::tempdir().unwrap();
    let raw_store = hourglass_embedded::raw::SqliteRawStore::open(data_dir.path(), 4).await.unwrap();
    measure("raw.db (4 buckets)", &raw_store, 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: writes 300,000 events to the test Cassandra"]
async fn scan_cost_on_cassandra() {
    let (config, raw_store) = hourglass_cql::testing::create_test_store("erasure_scan_cost", 16).await;
    measure("Cassandra (16 buckets)", &raw_store, 300_000).await;
    hourglass_cql::testing::drop_test_keyspace(&config).await;
}

/// The alternative, measured: an index (customer, user hash, hour) that the ingestor would fill, one
/// insert of a record's distinct users per 100-event record (as marking dirty hours does per group), in
/// Postgres; and what a look-up of one user's hours then costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: writes 50,000 index rows for 300,000 events to the test Postgres"]
async fn index_cost_on_postgres() {
    use hourglass_postgres::{PostgresConfig, testing};
    let pool =
        PostgresConfig::for_url(testing::create_test_database("erasure_index_cost").await).connect_lazy().unwrap();
    sqlx::raw_sql(
        "CREATE TABLE user_hours (customer_id text NOT NULL, user_hash bytea NOT NULL, hour_start bigint NOT NULL, \
         PRIMARY KEY (customer_id, user_hash, hour_start))",
    )
    .execute(&pool)
    .await
    .unwrap();
    let salt = ErasureSalt::new("a salt for measuring, long enough").unwrap();
    let sent = records(300_000);
    let started = Instant::now();
    for record in &sent {
        let mut hashes: Vec<Vec<u8>> = record
            .events
            .iter()
            .filter_map(|event| event.user_id.as_deref())
            .map(|user| UserHash::of(&salt, "acme", user).0.to_vec())
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        sqlx::query(
            "INSERT INTO user_hours (customer_id, user_hash, hour_start) SELECT 'acme', hash, $2 FROM unnest($1::bytea[]) \
             AS hashes(hash) ON CONFLICT DO NOTHING",
        )
        .bind(&hashes)
        .bind(HOUR)
        .execute(&pool)
        .await
        .unwrap();
    }
    let write_secs = started.elapsed().as_secs_f64();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM user_hours").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, USERS as i64);
    let started = Instant::now();
    let hours: Vec<i64> =
        sqlx::query_scalar("SELECT hour_start FROM user_hours WHERE customer_id = 'acme' AND user_hash = $1")
            .bind(UserHash::of(&salt, "acme", "user-00000042").0.to_vec())
            .fetch_all(&pool)
            .await
            .unwrap();
    let lookup_secs = started.elapsed().as_secs_f64();
    assert_eq!(hours, [HOUR]);
    println!(
        "Postgres index: {} inserts (one per 100-event record) of {rows} rows for an hour of 300000 events: \
         {write_secs:.2} s on the ingest path ({:.0} µs per record); a user's hours then in {:.1} ms",
        sent.len(),
        write_secs / sent.len() as f64 * 1e6,
        lookup_secs * 1000.0
    );
}
