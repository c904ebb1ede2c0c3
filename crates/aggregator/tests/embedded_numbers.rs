//! Huge and non-finite numbers through standalone's path, on the embedded stores of a data directory of
//! the test's own: log → the ingest loop (as standalone runs it) → raw store → aggregation → `meta.db`. The hour rolls up to
//! finite figures instead of failing at every retry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hourglass_aggregator::AggregatorConfig;
use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::{EventLog, Topic};
use hourglass_core::raw_store::{RawStore, bucket_of};
use hourglass_core::record;
use hourglass_core::rollup_reader::{HourlyNumericRow, RollupReader};
use hourglass_embedded::log::{INGEST_CONSUMER, LogTrimConfig, SqliteEventLog};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_ingestor::EmbeddedIngestConfig;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, property_value};
use tokio_util::sync::CancellationToken;

/// 2026-01-01T00:00:00Z.
const HOUR_START: i64 = 1_767_225_600;
const CUSTOMER: &str = "acme";
const BUCKETS: u32 = 4;

fn priced(id: &str, price: f64) -> Event {
    Event {
        event_id: id.to_owned(),
        event_type: "buy".to_owned(),
        occurred_at: Some(Timestamp { seconds: HOUR_START + 60, nanos: 0 }),
        user_id: None,
        properties: BTreeMap::from([
            ("price".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(price)) }),
            ("sku".to_owned(), PropertyValue { kind: Some(property_value::Kind::StringValue(format!("sku-{id}"))) }),
        ]),
    }
}

/// A record as a collector logs it, without asking whether its numbers are finite (as an old or buggy
/// collector would).
fn logged(batch_id: &str, events: Vec<Event>) -> hourglass_core::event_log::LogRecord {
    let accepted = OutcomeCount {
        hour_start_unix_secs: HOUR_START,
        outcome: Outcome::Accepted.into(),
        reason: 0,
        count: events.len() as u32,
    };
    let record = EventBatchRecord {
        customer_id: CUSTOMER.to_owned(),
        received_at_unix_ms: HOUR_START * 1000,
        batch_id: batch_id.to_owned(),
        collector_id: "test".to_owned(),
        events,
        outcomes: vec![accepted],
        plan_checks: Vec::new(),
    };
    record::encode(record::partition_key(&CustomerId::new(CUSTOMER).unwrap(), 1, 0), &record)
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

#[tokio::test]
async fn an_hour_of_huge_and_non_finite_numbers_rolls_up_on_the_embedded_stores() {
    let data_dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteEventLog::open(data_dir.path()).await.unwrap());
    let raw_store = Arc::new(SqliteRawStore::open(data_dir.path(), BUCKETS).await.unwrap());
    let meta = Arc::new(SqliteMetaStore::open(data_dir.path()).await.unwrap());

    // Three quarters of the largest f64, twice positive and four times negative: any two of a sign
    // overflow. The ids put the positive ones in one bucket and the negative ones in another, so plain
    // sums would make +inf of one bucket and -inf of the other, and NaN of their merge.
    let big = f64::MAX / 4.0 * 3.0;
    let prices =
        [("huge-0", big), ("huge-2", big), ("huge-1", -big), ("huge-3", -big), ("huge-8", -big), ("huge-10", -big)];
    for (id, price) in prices {
        let expected_bucket = if price > 0.0 { 1 } else { 3 };
        assert_eq!(bucket_of(id, BUCKETS), expected_bucket, "{id} is in the bucket of its sign");
    }
    let huge = logged("huge", prices.iter().map(|(id, price)| priced(id, *price)).collect());
    let non_finite = logged(
        "non-finite",
        vec![priced("nan", f64::NAN), priced("plus-inf", f64::INFINITY), priced("minus-inf", f64::NEG_INFINITY)],
    );
    log.append(Topic::Events, huge).await.unwrap();
    let last_offset = log.append(Topic::Events, non_finite).await.unwrap().offset;

    let stop_ingesting = CancellationToken::new();
    let consumer = log.events_consumer(INGEST_CONSUMER, Some(LogTrimConfig::with_defaults())).await.unwrap();
    let ingestion = tokio::spawn(hourglass_ingestor::run(
        EmbeddedIngestConfig::with_defaults().loop_config(),
        consumer,
        Arc::clone(&raw_store),
        Arc::clone(&meta),
        Arc::clone(&log),
        hourglass_ingestor::Suppression::none(),
        stop_ingesting.clone(),
    ));
    wait_for("the records to be ingested", || async {
        log.committed_offset(INGEST_CONSUMER).await.unwrap() >= last_offset
    })
    .await;
    stop_ingesting.cancel();
    ingestion.await.unwrap().unwrap();

    let mut stored_prices = BTreeMap::new();
    for bucket in 0..raw_store.bucket_count() {
        for event in raw_store.read_bucket(CUSTOMER, HOUR_START, bucket).await.unwrap() {
            assert!(event.string_properties.contains_key("sku"), "the rest of {} is stored", event.event_id);
            stored_prices.insert(event.event_id, event.number_properties.get("price").copied());
        }
    }
    assert_eq!(stored_prices.len(), 9, "every event is stored");
    for id in ["nan", "plus-inf", "minus-inf"] {
        assert_eq!(stored_prices[id], None, "the non-finite price of {id} is not stored");
    }

    // A day later the hour is closed: one pass leases its final job and completes it.
    let config = AggregatorConfig::with_defaults();
    let leased =
        hourglass_aggregator::run_once(&config, "worker", &*raw_store, &*meta, HOUR_START + 86_400).await.unwrap();
    assert_eq!(leased, 1, "the hour is a job");
    let status = &meta.hour_statuses(CUSTOMER, HOUR_START, HOUR_START + 3600).await.unwrap()[0];
    assert_eq!(
        (status.revision, status.is_final, status.pending, status.events),
        (Some(1), true, false, 9),
        "the hour rolled up: {status:?}"
    );
    let numeric = meta.hourly_numeric(CUSTOMER, HOUR_START, HOUR_START + 3600, &[]).await.unwrap();
    assert_eq!(
        numeric,
        vec![HourlyNumericRow {
            hour_start: HOUR_START,
            event_type: "buy".into(),
            property: "price".into(),
            count: 6,
            // The exact sum, 2 × big − 4 × big = −1.5 × f64::MAX, saturates with its sign.
            sum: -f64::MAX,
            min: -big,
            max: big,
        }]
    );
}
