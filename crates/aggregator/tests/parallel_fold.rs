//! Buckets folded in tasks of their own, several at once on a multi-threaded runtime, give the rollup a
//! sequential fold gives, to the last bit of every floating-point sum: the accumulators are merged in
//! bucket order whichever finishes first (`hourglass_aggregator::aggregate_hour`). On the embedded raw
//! store of a directory of the test's own.

use std::collections::BTreeMap;

use hourglass_aggregator::aggregate_hour;
use hourglass_aggregator::rollup::HourAccumulator;
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_core::rollup_store::HourRollup;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, property_value};

/// 2026-01-01T00:00:00Z.
const HOUR_START: i64 = 1_767_225_600;
const CUSTOMER: &str = "acme";
const BUCKETS: u32 = 16;

/// An event whose price is of a magnitude chosen by its number, so that sums depend on the order they
/// are added in: 1e16 + 1 + 1 is not 1 + 1 + 1e16 in `f64`.
fn event(number: usize) -> Event {
    let price = match number % 5 {
        0 => 1e16,
        1 => -1e16,
        2 => 1.0,
        3 => 0.1 * number as f64,
        _ => -3.3e-3 * number as f64,
    };
    Event {
        event_id: format!("event-{number:05}"),
        event_type: ["view", "buy", "share"][number % 3].to_owned(),
        occurred_at: Some(Timestamp { seconds: HOUR_START + (number % 3600) as i64, nanos: 0 }),
        user_id: Some(format!("user-{}", number % 97)),
        properties: BTreeMap::from([
            ("price".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(price)) }),
            ("page".to_owned(), PropertyValue { kind: Some(property_value::Kind::StringValue("/cart".into())) }),
        ]),
    }
}

async fn store_with_events(data_dir: &std::path::Path) -> SqliteRawStore {
    let store = SqliteRawStore::open(data_dir, BUCKETS).await.unwrap();
    let records: Vec<EventBatchRecord> = (0..40)
        .map(|batch| EventBatchRecord {
            customer_id: CUSTOMER.to_owned(),
            batch_id: format!("batch-{batch}"),
            received_at_unix_ms: HOUR_START * 1000 + batch,
            events: (0..100).map(|offset| event(batch as usize * 100 + offset)).collect(),
            ..Default::default()
        })
        .collect();
    store.write_records(&RecordView::from_records(&records)).await.unwrap();
    store
}

/// Folds the buckets one after the other in this task, merged in `order`.
async fn fold_in_order(store: &SqliteRawStore, order: impl Iterator<Item = u32>) -> HourRollup {
    let mut accumulator = HourAccumulator::default();
    for bucket in order {
        accumulator.merge(store.fold_bucket(CUSTOMER, HOUR_START, bucket, HourAccumulator::default()).await.unwrap());
    }
    accumulator.finish(store.read_outcomes(CUSTOMER, HOUR_START).await.unwrap(), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_folded_at_once_roll_up_as_a_sequential_fold() {
    let data_dir = tempfile::tempdir().unwrap();
    let store = store_with_events(data_dir.path()).await;
    let sequential = fold_in_order(&store, 0..BUCKETS).await;
    assert_eq!(sequential.events, 4000);
    // The data can tell merge orders apart: another order sums to other bits.
    let reversed = fold_in_order(&store, (0..BUCKETS).rev()).await;
    let sums = |rollup: &HourRollup| rollup.numeric.iter().map(|row| row.sum.to_bits()).collect::<Vec<_>>();
    assert_ne!(sums(&sequential), sums(&reversed), "the test's sums depend on the merge order");

    for bucket_concurrency in [1, 2, 5, 16, 64] {
        for run in 0..3 {
            let folded = aggregate_hour(&store, CUSTOMER, HOUR_START, true, bucket_concurrency).await.unwrap();
            assert_eq!(folded, sequential, "{bucket_concurrency} buckets at once, run {run}");
            assert_eq!(sums(&folded), sums(&sequential), "{bucket_concurrency} buckets at once, run {run}");
        }
    }
    // 0 is taken as 1, not as a fold that never starts.
    assert_eq!(aggregate_hour(&store, CUSTOMER, HOUR_START, true, 0).await.unwrap(), sequential);
}
