//! A property test of exact counting (invariant 2 of docs/architecture.md): whatever the duplication, the
//! client resends with other content and the redelivery order, the rollup of every customer-hour equals a
//! brute-force count of its distinct events, through a real raw store and the aggregator's own fold
//! ([`hourglass_aggregator::aggregate_hour`]).
//!
//! A case is a few customers' batches over one to three hours, event ids drawn from a small pool (so ids
//! repeat within a batch, across batches and across hours), users from a small pool, numbers from small
//! quarters to `±f64::MAX` and a few NaN and infinities; then a delivery plan: every batch written at least
//! once, some twice, in shuffled order, several to a write. The brute force keeps one copy per (customer,
//! hour of `occurred_at`, event id): the last written, where "last" is what each store documents
//! (docs/architecture.md, "The raw store's layout"): in `raw.db` the record written last (a redelivered
//! record rewrites its row, so it becomes the newest); in CQL the copy in the block whose newest record was
//! received last, where one write's records share a block per customer-hour-bucket (so a record written
//! again beside newer ones takes their place: the corner that document names); within a block or a
//! record, the later copy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use hourglass_aggregator::aggregate_hour;
use hourglass_core::hll::HyperLogLog;
use hourglass_core::raw_block::group_block_id;
use hourglass_core::raw_store::{HourOutcomes, RawStore, bucket_of};
use hourglass_core::record_view::RecordView;
use hourglass_core::rollup_store::{EventTypeRollup, HourRollup, NumericRollup};
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, RejectionReason, property_value};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

/// 2026-01-01T00:00:00Z, the first of the (up to) three hours.
const FIRST_HOUR: i64 = 1_767_225_600;
const HOURS: u8 = 3;
const CUSTOMERS: u8 = 3;
/// Few buckets, so that a bucket holds blocks of several records and the fold merges several buckets.
const BUCKETS: u32 = 4;
const EVENT_TYPES: [&str; 3] = ["view", "click", "buy"];
const PROPERTIES: [&str; 2] = ["price", "quantity"];
/// Huge values are whole multiples of this (2^971, the unit of `f64::MAX`'s last bit), so their sums
/// are exact integers of units until they pass `f64::MAX`, which is `2^53 - 1` units.
const HUGE_UNIT: f64 = f64::from_bits((971 + 1023) << 52);
const MAX_UNITS: i128 = (1 << 53) - 1;

#[derive(Clone, Debug)]
struct GeneratedEvent {
    id: u8,
    hour: u8,
    second: u16,
    event_type: usize,
    user: Option<u8>,
    /// By property index; an event has each property at most once (the proto's map).
    numbers: BTreeMap<usize, f64>,
}

#[derive(Clone, Debug)]
struct Batch {
    customer: u8,
    events: Vec<GeneratedEvent>,
    /// Events the collector rejected from this batch (counted in the first hour's outcomes).
    rejected: u32,
}

/// The batches in the order the collectors received them, and the writes that deliver them: each a list
/// of batch indexes, every batch in at least one.
#[derive(Clone, Debug)]
struct Plan {
    batches: Vec<Batch>,
    writes: Vec<Vec<usize>>,
}

fn value() -> impl Strategy<Value = f64> {
    let huge = prop::sample::select(vec![
        f64::MAX,
        -f64::MAX,
        2f64.powi(1023),
        -(2f64.powi(1023)),
        1.5 * 2f64.powi(1023),
        -1.5 * 2f64.powi(1023),
        2f64.powi(1022),
        -(2f64.powi(1022)),
    ]);
    let non_finite = prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
    prop_oneof![
        6 => (-4_000i32..4_000).prop_map(|quarters| f64::from(quarters) / 4.0),
        3 => huge,
        1 => non_finite,
    ]
}

fn event() -> impl Strategy<Value = GeneratedEvent> {
    (
        0u8..10,
        0..HOURS,
        0u16..3600,
        0..EVENT_TYPES.len(),
        prop::option::weighted(0.8, 0u8..5),
        prop::collection::btree_map(0..PROPERTIES.len(), value(), 0..=PROPERTIES.len()),
    )
        .prop_map(|(id, hour, second, event_type, user, numbers)| GeneratedEvent {
            id,
            hour,
            second,
            event_type,
            user,
            numbers,
        })
}

fn plan() -> impl Strategy<Value = Plan> {
    let batch = (0..CUSTOMERS, prop::collection::vec(event(), 0..8), 0u32..3)
        .prop_map(|(customer, events, rejected)| Batch { customer, events, rejected });
    prop::collection::vec(batch, 1..10)
        .prop_flat_map(|batches| {
            let count = batches.len();
            (Just(batches), prop::collection::vec(0..count, 0..=count))
        })
        .prop_flat_map(|(batches, redelivered)| {
            let deliveries: Vec<usize> = (0..batches.len()).chain(redelivered).collect();
            let write_sizes = prop::collection::vec(1..4usize, deliveries.len());
            (Just(batches), Just(deliveries).prop_shuffle(), write_sizes)
        })
        .prop_map(|(batches, deliveries, write_sizes)| {
            let mut writes = Vec::new();
            let mut rest = deliveries.as_slice();
            for size in write_sizes {
                if rest.is_empty() {
                    break;
                }
                let (write, after) = rest.split_at(size.min(rest.len()));
                writes.push(write.to_vec());
                rest = after;
            }
            Plan { batches, writes }
        })
}

/// Which stored copy of an event id a store keeps (docs/architecture.md, "The raw store's layout").
#[derive(Clone, Copy, Debug)]
enum LastCopy {
    /// `raw.db`: the copy in the record written last (a redelivery rewrites the record's row anew).
    WrittenLast,
    /// CQL: the copy in the block whose newest record was received last (`received_at`, then the block's
    /// id: a record's batch id, or a group's, which sorts right after its newest batch id); in a block, the
    /// later record's; in a record, the later copy.
    GroupReceivedLast,
}

fn hour_start(hour: u8) -> i64 {
    FIRST_HOUR + i64::from(hour) * 3600
}

fn customer_id(case: &str, customer: u8) -> String {
    format!("{case}-customer-{customer}")
}

fn user_id(user: u8) -> String {
    format!("user-{user}")
}

/// The batch as a collector logs it: received in batch order, after every hour it holds events of.
fn record(case: &str, index: usize, batch: &Batch) -> EventBatchRecord {
    let events = batch
        .events
        .iter()
        .map(|event| Event {
            event_id: event_id(event.id),
            event_type: EVENT_TYPES[event.event_type].to_owned(),
            occurred_at: Some(Timestamp { seconds: hour_start(event.hour) + i64::from(event.second), nanos: 0 }),
            user_id: event.user.map(user_id),
            properties: event
                .numbers
                .iter()
                .map(|(property, value)| {
                    let value = PropertyValue { kind: Some(property_value::Kind::NumberValue(*value)) };
                    (PROPERTIES[*property].to_owned(), value)
                })
                .collect(),
        })
        .collect();
    let mut accepted_per_hour: BTreeMap<u8, u32> = BTreeMap::new();
    for event in &batch.events {
        *accepted_per_hour.entry(event.hour).or_default() += 1;
    }
    let mut outcomes: Vec<OutcomeCount> = accepted_per_hour
        .into_iter()
        .map(|(hour, count)| OutcomeCount {
            hour_start_unix_secs: hour_start(hour),
            outcome: Outcome::Accepted as i32,
            reason: 0,
            count,
        })
        .collect();
    if batch.rejected > 0 {
        outcomes.push(OutcomeCount {
            hour_start_unix_secs: hour_start(0),
            outcome: Outcome::Rejected as i32,
            reason: RejectionReason::EventTypeEmpty as i32,
            count: batch.rejected,
        });
    }
    EventBatchRecord {
        customer_id: customer_id(case, batch.customer),
        received_at_unix_ms: (hour_start(HOURS) + 60) * 1000 + index as i64,
        batch_id: batch_id(index),
        collector_id: "proptest".to_owned(),
        events,
        outcomes,
        plan_checks: Vec::new(),
    }
}

/// A sum known exactly: huge values in units of [`HUGE_UNIT`], the others in quarters.
#[derive(Default)]
struct ExactSum {
    units: i128,
    quarters: i128,
    positive_units: i128,
    negative_units: i128,
    huge_values: u64,
    other_values: u64,
    /// The sum of the magnitudes, in units (the bound on rounding errors is relative to it).
    magnitude_units: f64,
}

impl ExactSum {
    fn add(&mut self, value: f64) {
        self.magnitude_units += value.abs() / HUGE_UNIT;
        if value.abs() >= HUGE_UNIT {
            let units = (value / HUGE_UNIT) as i128;
            assert_eq!(units as f64 * HUGE_UNIT, value, "a huge test value is a whole number of units");
            self.units += units;
            if units > 0 {
                self.positive_units += units;
            } else {
                self.negative_units += units;
            }
            self.huge_values += 1;
        } else {
            let quarters = (value * 4.0) as i128;
            assert_eq!(quarters as f64 / 4.0, value, "a small test value is a whole number of quarters");
            self.quarters += quarters;
            self.other_values += 1;
        }
    }

    /// Checks the fold's `sum` against what is exactly defined: the exact sum where every partial sum,
    /// in any order, is exact; `±f64::MAX` where the exact sum is beyond it by more than any rounding
    /// (crates/core/src/numeric.rs saturates with the exact sum's sign); else the exact sum within the
    /// rounding error bound of a sum of `count` terms.
    fn check(&self, sum: f64, context: &str) -> Result<(), TestCaseError> {
        prop_assert!(sum.is_finite(), "{context}: sum {sum} not finite");
        if self.huge_values == 0 {
            prop_assert_eq!(sum, self.quarters as f64 / 4.0, "{}: a sum of quarters is exact", context);
            return Ok(());
        }
        if self.other_values == 0 && self.positive_units <= MAX_UNITS && -self.negative_units <= MAX_UNITS {
            prop_assert_eq!(sum, self.units as f64 * HUGE_UNIT, "{}: no partial sum overflows or rounds", context);
            return Ok(());
        }
        let exact_units = self.units as f64 + (self.quarters as f64 / 4.0) / HUGE_UNIT;
        let terms = (self.huge_values + self.other_values) as f64;
        let rounding_units = terms * f64::EPSILON * self.magnitude_units;
        if exact_units.abs() - MAX_UNITS as f64 > rounding_units {
            prop_assert_eq!(sum, f64::MAX.copysign(exact_units), "{}: beyond f64::MAX, saturated", context);
            return Ok(());
        }
        let error_units = (sum / HUGE_UNIT - exact_units).abs();
        prop_assert!(
            error_units <= rounding_units,
            "{context}: sum {sum} is {error_units} units from the exact sum {exact_units} units, more than {rounding_units}"
        );
        Ok(())
    }
}

/// Where a stored copy ranks among the copies of its id; the highest is the one read: (the write, or the
/// block's newest record; the block's id; the record's place in the block; the copy's place).
type CopyRank = (usize, String, usize, usize);

/// Keeps `event` as its id's copy if it ranks above the one kept so far.
fn keep<'p>(kept: &mut BTreeMap<u8, (CopyRank, &'p GeneratedEvent)>, rank: CopyRank, event: &'p GeneratedEvent) {
    if kept.get(&event.id).is_none_or(|(known, _)| *known < rank) {
        kept.insert(event.id, (rank, event));
    }
}

fn event_id(id: u8) -> String {
    format!("event-{id}")
}

fn batch_id(index: usize) -> String {
    format!("batch-{index:03}")
}

/// The brute force: one copy per (customer, hour, event id), picked by `last_copy`, then counted.
fn check_hour(
    plan: &Plan,
    last_copy: LastCopy,
    customer: u8,
    hour: u8,
    rollup: &HourRollup,
) -> Result<(), TestCaseError> {
    let context = format!("customer {customer}, hour {hour}");
    let mut kept: BTreeMap<u8, (CopyRank, &GeneratedEvent)> = BTreeMap::new();
    let of_customer = |index: &usize| plan.batches[*index].customer == customer;
    match last_copy {
        LastCopy::WrittenLast => {
            // Where each batch's copies rank: the later the write, the higher.
            let mut written: BTreeMap<usize, usize> = BTreeMap::new();
            for (position, batch) in plan.writes.iter().flatten().enumerate() {
                written.insert(*batch, position);
            }
            for (&index, &position) in written.iter().filter(|(index, _)| of_customer(index)) {
                for (event_position, event) in plan.batches[index].events.iter().enumerate() {
                    if event.hour == hour {
                        keep(&mut kept, (position, String::new(), 0, event_position), event);
                    }
                }
            }
        }
        LastCopy::GroupReceivedLast => {
            for write in &plan.writes {
                // The write's records of this customer, each once, oldest received first (received in
                // batch order); then a block per bucket of the hour, of the records with events there.
                let records: BTreeSet<usize> = write.iter().copied().filter(|index| of_customer(index)).collect();
                for bucket in 0..BUCKETS {
                    let in_block = |event: &&GeneratedEvent| {
                        event.hour == hour && bucket_of(&event_id(event.id), BUCKETS) == bucket
                    };
                    let pieces: Vec<usize> = records
                        .iter()
                        .copied()
                        .filter(|index| plan.batches[*index].events.iter().any(|event| in_block(&event)))
                        .collect();
                    let Some(&newest) = pieces.last() else { continue };
                    let block_id = match pieces.as_slice() {
                        [single] => batch_id(*single),
                        _ => {
                            let batch_ids: Vec<String> = pieces.iter().map(|index| batch_id(*index)).collect();
                            group_block_id(batch_ids.iter().map(String::as_str))
                        }
                    };
                    for (piece, index) in pieces.iter().enumerate() {
                        let events = plan.batches[*index].events.iter().filter(in_block);
                        for (event_position, event) in events.enumerate() {
                            keep(&mut kept, (newest, block_id.clone(), piece, event_position), event);
                        }
                    }
                }
            }
        }
    }

    let mut events_per_type: BTreeMap<&str, u64> = BTreeMap::new();
    let mut users_per_type: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut numbers: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for (_, event) in kept.values() {
        let event_type = EVENT_TYPES[event.event_type];
        *events_per_type.entry(event_type).or_default() += 1;
        let users = users_per_type.entry(event_type).or_default();
        users.extend(event.user.map(user_id));
        for (property, value) in &event.numbers {
            let values = numbers.entry((event_type, PROPERTIES[*property])).or_default();
            if value.is_finite() {
                values.push(*value);
            }
        }
    }
    let sketch_of = |users: &mut dyn Iterator<Item = &String>| {
        let mut sketch = HyperLogLog::new();
        users.for_each(|user| sketch.insert(user.as_bytes()));
        sketch.to_bytes()
    };
    let all_users: BTreeSet<&String> = users_per_type.values().flatten().collect();

    prop_assert_eq!(rollup.events, kept.len() as u64, "{}: distinct events", &context);
    prop_assert_eq!(rollup.distinct_users, all_users.len() as u64, "{}: distinct users", &context);
    prop_assert_eq!(&rollup.users_sketch, &sketch_of(&mut all_users.iter().copied()), "{}: users sketch", &context);
    let expected_types: Vec<EventTypeRollup> = events_per_type
        .iter()
        .map(|(event_type, events)| EventTypeRollup {
            event_type: (*event_type).to_owned(),
            events: *events,
            distinct_users: users_per_type[event_type].len() as u64,
            users_sketch: sketch_of(&mut users_per_type[event_type].iter()),
        })
        .collect();
    prop_assert_eq!(&rollup.event_types, &expected_types, "{}: per event type", &context);

    // A property with only NaN or infinite values has no figures at all.
    let expected_numeric: Vec<(&str, &str)> =
        numbers.iter().filter(|(_, values)| !values.is_empty()).map(|(key, _)| *key).collect();
    let numeric: Vec<(&str, &str)> =
        rollup.numeric.iter().map(|row| (row.event_type.as_str(), row.property.as_str())).collect();
    prop_assert_eq!(numeric, expected_numeric, "{}: numeric properties", &context);
    for NumericRollup { event_type, property, count, sum, min, max } in &rollup.numeric {
        let values = &numbers[&(event_type.as_str(), property.as_str())];
        let context = format!("{context}, {event_type}.{property} of {values:?}");
        prop_assert_eq!(*count, values.len() as u64, "{}: count", &context);
        prop_assert_eq!(*min, values.iter().copied().fold(f64::INFINITY, f64::min), "{}: min", &context);
        prop_assert_eq!(*max, values.iter().copied().fold(f64::NEG_INFINITY, f64::max), "{}: max", &context);
        let mut exact = ExactSum::default();
        values.iter().for_each(|value| exact.add(*value));
        exact.check(*sum, &context)?;
    }

    // Each batch's outcomes count once, however often it was written.
    let mut outcomes = HourOutcomes::default();
    for batch in plan.batches.iter().filter(|batch| batch.customer == customer) {
        outcomes.accepted += batch.events.iter().filter(|event| event.hour == hour).count() as u64;
        if hour == 0 && batch.rejected > 0 {
            *outcomes.rejected_by_reason.entry(RejectionReason::EventTypeEmpty as i32).or_default() +=
                u64::from(batch.rejected);
        }
    }
    prop_assert_eq!(&rollup.outcomes, &outcomes, "{}: outcomes", &context);
    Ok(())
}

/// Writes each case's plan through `store` under customer ids of its own, folds every customer-hour with
/// the aggregator and compares it with the brute force.
fn rollups_equal_the_brute_force_count(
    runtime: &tokio::runtime::Runtime,
    store: &impl RawStore,
    last_copy: LastCopy,
    cases: u32,
) {
    static CASES: AtomicU64 = AtomicU64::new(0);
    // Failures persist beside the other crates' (proptest finds no lib.rs above a tests/ file to put
    // them parallel to); the path is relative to the crate, where cargo runs its tests.
    let persistence = FileFailurePersistence::Direct("proptest-regressions/rollup_properties.txt");
    let config = Config {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(persistence)),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&plan(), |plan| {
        let case = format!("proptest-{}-{}", std::process::id(), CASES.fetch_add(1, Ordering::Relaxed));
        runtime.block_on(async {
            let records: Vec<EventBatchRecord> =
                plan.batches.iter().enumerate().map(|(index, batch)| record(&case, index, batch)).collect();
            for write in &plan.writes {
                let write: Vec<EventBatchRecord> = write.iter().map(|index| records[*index].clone()).collect();
                store
                    .write_records(&RecordView::from_records(&write))
                    .await
                    .map_err(|error| TestCaseError::fail(error.to_string()))?;
            }
            for customer in 0..CUSTOMERS {
                for hour in 0..HOURS {
                    let rollup = aggregate_hour(store, &customer_id(&case, customer), hour_start(hour), true, 3)
                        .await
                        .map_err(|error| TestCaseError::fail(error.to_string()))?;
                    check_hour(&plan, last_copy, customer, hour, &rollup)?;
                }
            }
            Ok(())
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

// 64 cases: each writes up to 20 records to SQLite and folds 9 customer-hours (36 buckets), about
// 30 ms in a debug build, so two seconds of `cargo test`.
#[test]
fn rollups_of_any_duplication_and_redelivery_order_equal_a_brute_force_count_on_raw_db() {
    let runtime = runtime();
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let store = runtime.block_on(SqliteRawStore::open(data_dir.path(), BUCKETS)).expect("open raw.db");
    rollups_equal_the_brute_force_count(&runtime, &store, LastCopy::WrittenLast, 64);
}

// 16 cases: the same property against Cassandra, where each case is ~50 round trips; the fold and
// the brute force are the same as above, so these cases are for the store's own last-copy rule.
#[test]
fn rollups_of_any_duplication_and_redelivery_order_equal_a_brute_force_count_on_cql() {
    let runtime = runtime();
    let (config, store) = runtime.block_on(hourglass_cql::testing::create_test_store("rollup_properties", BUCKETS));
    rollups_equal_the_brute_force_count(&runtime, &store, LastCopy::GroupReceivedLast, 16);
    runtime.block_on(hourglass_cql::testing::drop_test_keyspace(&config));
}
