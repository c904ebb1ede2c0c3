//! Late data for hours whose raw rows may have expired (tier b): a job or a reprocessing run never
//! replaces an hour's rollup with one computed from what is left of its raw rows. Each scenario runs
//! against both implementations: the CQL raw store with Postgres, and standalone's embedded stores.
//!
//! The aggregator takes the instant it works at as a parameter, and the tests configure a raw retention of
//! 6 hours with a 1-hour margin, so an hour aggregated now is past its horizon 5 hours after it started.
//! The raw rows are then removed as expiry would remove them: in CQL by deleting rows (a TTL drops rows
//! one by one, as they were written), in the embedded store by its own retention deletion of whole hours.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use hourglass_aggregator::AggregatorConfig;
use hourglass_core::customer::CustomerId;
use hourglass_core::hour;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_core::retention::RawRetention;
use hourglass_core::rollup_reader::{HourStatus, RollupReader};
use hourglass_core::rollup_store::{EventTypeRollup, LedgerRow, RollupStore};
use hourglass_cql::CqlRawStore;
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresRollupStore, migrate, testing};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;

const HOUR: i64 = 3600;

/// Raw rows live 6 hours; hours are not rewritten from 5 hours after they start.
fn config() -> AggregatorConfig {
    AggregatorConfig {
        provisional_interval_secs: 0,
        raw_retention: RawRetention { retention_secs: 6 * HOUR, expiry_margin_secs: HOUR },
        ..AggregatorConfig::with_defaults()
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn acme_hour(hour_start: i64) -> CustomerHour {
    CustomerHour { customer_id: CustomerId::new("acme").unwrap(), hour_start }
}

fn events(prefix: &str, count: usize, hour_start: i64) -> Vec<Event> {
    (0..count)
        .map(|index| Event {
            event_id: format!("{prefix}{index}"),
            event_type: ["view", "buy"][index % 2].into(),
            occurred_at: Some(Timestamp { seconds: hour_start + index as i64, nanos: 0 }),
            user_id: Some(format!("user-{}", index % 7)),
            properties: Default::default(),
        })
        .collect()
}

fn record(batch_id: &str, events: Vec<Event>) -> EventBatchRecord {
    EventBatchRecord {
        customer_id: "acme".into(),
        received_at_unix_ms: now() * 1000,
        batch_id: batch_id.into(),
        collector_id: "test".into(),
        events,
        outcomes: vec![],
        plan_checks: Vec::new(),
    }
}

/// An hour's rollup as the reader and the ledger show it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    rows: Vec<(String, u64, u64)>,
    ledger: Vec<(u64, u64, bool)>,
    status: HourStatus,
}

async fn snapshot(rollups: &(impl RollupStore + RollupReader), hour_start: i64) -> Snapshot {
    let rows = rollups.hourly_rollups("acme", hour_start, hour_start + HOUR, &[], false).await.unwrap();
    let ledger: Vec<LedgerRow> = rollups.ledger(Some("acme"), hour_start, hour_start + HOUR).await.unwrap();
    let mut statuses = rollups.hour_statuses("acme", hour_start, hour_start + HOUR).await.unwrap();
    assert_eq!(statuses.len(), 1, "an hour that received data has one status");
    Snapshot {
        rows: rows.into_iter().map(|row| (row.event_type, row.events, row.distinct_users)).collect(),
        ledger: ledger.into_iter().map(|row| (row.stored, row.counted, row.is_final)).collect(),
        status: statuses.remove(0),
    }
}

fn event_counts(rows: &[EventTypeRollup]) -> u64 {
    rows.iter().map(|row| row.events).sum()
}

/// (a) An hour with a final rollup loses its raw rows to expiry, then late data marks it again: the job
/// is refused, the rollup and ledger stay as they were, the hour's status (and `verify`) says why, and
/// the job is not offered again. An hour past its horizon that was never aggregated is refused the same
/// way.
async fn late_data_for_an_expired_hour_is_refused(
    raw_store: &impl RawStore,
    jobs: &impl JobQueue,
    rollups: &(impl RollupStore + RollupReader),
    expire: impl AsyncFnOnce(i64, &[Event]),
) {
    let config = config();
    let started = now();
    let aggregated_hour = hour::hour_start(started) - 3 * HOUR;
    let never_aggregated_hour = aggregated_hour - HOUR;
    let on_time = events("on-time-", 40, aggregated_hour);
    raw_store.write_records(&RecordView::from_records(&[record("on-time", on_time.clone())])).await.unwrap();
    jobs.mark_dirty(&[acme_hour(aggregated_hour)]).await.unwrap();
    let leased = hourglass_aggregator::run_once(&config, "w", raw_store, rollups, started).await.unwrap();
    assert_eq!(leased, 1, "the closed hour, inside its horizon, is aggregated");
    let original = snapshot(rollups, aggregated_hour).await;
    assert_eq!(original.status.revision, Some(1));
    assert!(original.status.is_final && original.status.refused.is_none());
    assert_eq!(original.ledger, [(40, 40, true)]);

    // The hour's rows expire; a late event arrives for it, and data for an older hour never aggregated.
    expire(aggregated_hour, &on_time).await;
    raw_store
        .write_records(&RecordView::from_records(&[record("late", events("late-", 1, aggregated_hour + 3000))]))
        .await
        .unwrap();
    raw_store
        .write_records(&RecordView::from_records(&[record("older", events("older-", 5, never_aggregated_hour))]))
        .await
        .unwrap();
    jobs.mark_dirty(&[acme_hour(aggregated_hour), acme_hour(never_aggregated_hour)]).await.unwrap();

    let past_horizon = aggregated_hour + config.raw_retention.rewritable_secs();
    assert!(config.raw_retention.is_past_horizon(aggregated_hour, past_horizon));
    let leased = hourglass_aggregator::run_once(&config, "w", raw_store, rollups, past_horizon).await.unwrap();
    assert_eq!(leased, 2, "both hours are due, and both are refused");

    let after = snapshot(rollups, aggregated_hour).await;
    assert_eq!((&after.rows, &after.ledger), (&original.rows, &original.ledger), "the rollup and ledger stand");
    assert_eq!(
        (after.status.revision, after.status.is_final, after.status.computed_at, after.status.pending),
        (Some(1), true, original.status.computed_at, false),
        "still revision 1, final, computed when it was, and nothing pending any more"
    );
    let reason = after.status.refused.clone().expect("the hour's status says the late data was refused");
    assert!(reason.contains("raw data may have partly expired") && reason.contains("5 h ago"), "{reason}");
    let current = rollups.current_rollup(&acme_hour(aggregated_hour)).await.unwrap();
    assert_eq!(event_counts(&current), 40, "the 40 events counted before expiry are still counted");

    let never = snapshot(rollups, never_aggregated_hour).await;
    assert!(never.rows.is_empty() && never.ledger.is_empty(), "an hour refused before any rollup gets none");
    assert_eq!((never.status.revision, never.status.pending), (None, false));
    assert!(never.status.refused.is_some(), "its status says why it has no rollup");

    let leased = hourglass_aggregator::run_once(&config, "w", raw_store, rollups, past_horizon + HOUR).await.unwrap();
    assert_eq!(leased, 0, "a refused hour is not retried");
    assert_eq!(
        rollups.backlog().await.unwrap().oldest_unfinalized_hour,
        None,
        "nor counted as waiting (the lag alert)"
    );

    // Verification does not recount what expiry took, and shows the refusal.
    let verified = hourglass_aggregator::verify::verify(
        raw_store,
        rollups,
        &config.raw_retention,
        Some("acme"),
        never_aggregated_hour,
        aggregated_hour + HOUR,
        past_horizon,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(verified.len(), 1, "only the aggregated hour has a ledger row");
    assert!(!verified[0].recounted, "an hour past its horizon is not recounted");
    assert!(!verified[0].is_unbalanced_final(), "so it raises no alert");
    assert_eq!((verified[0].ledger.stored, verified[0].ledger.counted), (40, 40), "and its ledger stands");
    assert_eq!(verified[0].refused, after.status.refused, "it shows the refusal");
}

/// (b) Reprocessing a range with an hour past its horizon leaves that hour as it was, reports it as
/// refused, and reprocesses the others.
async fn reprocess_refuses_expired_hours_and_processes_the_others(
    raw_store: &impl RawStore,
    jobs: &impl JobQueue,
    rollups: &(impl RollupStore + RollupReader),
    expire: impl AsyncFnOnce(i64, &[Event]),
) {
    let config = config();
    let started = now();
    let expiring_hour = hour::hour_start(started) - 4 * HOUR;
    let recent_hour = expiring_hour + 2 * HOUR;
    let expiring_events = events("expiring-", 30, expiring_hour);
    raw_store.write_records(&RecordView::from_records(&[record("expiring", expiring_events.clone())])).await.unwrap();
    raw_store
        .write_records(&RecordView::from_records(&[record("recent", events("recent-", 20, recent_hour))]))
        .await
        .unwrap();
    jobs.mark_dirty(&[acme_hour(expiring_hour), acme_hour(recent_hour)]).await.unwrap();
    let leased = hourglass_aggregator::run_once(&config, "w", raw_store, rollups, started).await.unwrap();
    assert_eq!(leased, 2, "both closed hours are aggregated while inside their horizon");
    let expiring_before = snapshot(rollups, expiring_hour).await;

    // The older hour's rows expire. The recent hour gains a row that no job counted (as a logic fix
    // would find more), so reprocessing it shows a change.
    expire(expiring_hour, &expiring_events).await;
    raw_store
        .write_records(&RecordView::from_records(&[record("found", events("found-", 1, recent_hour + 60))]))
        .await
        .unwrap();
    let later = expiring_hour + config.raw_retention.rewritable_secs();
    assert!(!config.raw_retention.is_past_horizon(recent_hour, later), "the recent hour is inside its horizon");

    let run = |dry_run| {
        hourglass_aggregator::reprocess::reprocess(
            &config,
            raw_store,
            rollups,
            Some("acme"),
            expiring_hour,
            recent_hour + HOUR,
            dry_run,
            later,
            |_, _| {},
        )
    };
    let dry = run(true).await.unwrap();
    assert_eq!(dry.refused, [acme_hour(expiring_hour)], "a dry run refuses the expired hour too");
    let dry_hours: Vec<i64> = dry.diffs.iter().map(|diff| diff.customer_hour.hour_start).collect();
    assert_eq!(dry_hours, [recent_hour], "and recomputes only the other");

    let reprocessed = run(false).await.unwrap();
    assert_eq!(reprocessed.refused, [acme_hour(expiring_hour)], "the expired hour is refused");
    let reprocessed_hours: BTreeSet<i64> = reprocessed.diffs.iter().map(|diff| diff.customer_hour.hour_start).collect();
    assert_eq!(reprocessed_hours, BTreeSet::from([recent_hour]), "the other hour is reprocessed");
    assert!(reprocessed.diffs[0].changed() && reprocessed.diffs[0].revision == Some(2), "{:?}", reprocessed.diffs);
    let recent = rollups.current_rollup(&acme_hour(recent_hour)).await.unwrap();
    assert_eq!(event_counts(&recent), 21, "the reprocessed hour counts the row found");
    assert_eq!(snapshot(rollups, expiring_hour).await, expiring_before, "the refused hour is as it was");
}

struct Distributed {
    cql: hourglass_cql::CqlConfig,
    raw_store: CqlRawStore,
    jobs: PostgresJobQueue,
    rollups: PostgresRollupStore,
}

async fn distributed(test_name: &str) -> Distributed {
    let (cql, raw_store) = hourglass_cql::testing::create_test_store(test_name, 4).await;
    let database_url = testing::create_test_database(test_name).await;
    let pool = PostgresConfig::for_url(database_url).connect_lazy().unwrap();
    migrate::run(&pool).await.unwrap();
    Distributed { cql, raw_store, jobs: PostgresJobQueue::new(pool.clone()), rollups: PostgresRollupStore::new(pool) }
}

/// Deletes most of an hour's raw events, the first written, as the table's TTL would (in whole blocks,
/// a record's events of a bucket, but the test writes one record: removing events from it keeps the
/// same shape of loss).
async fn expire_cql_rows(stores: &Distributed, hour_start: i64, written: &[Event]) {
    let expired: Vec<&str> = written[..written.len() * 3 / 4].iter().map(|event| event.event_id.as_str()).collect();
    hourglass_cql::testing::delete_events(&stores.cql, "acme", hour_start, &expired).await;
}

struct Embedded {
    _data_dir: tempfile::TempDir,
    raw_store: SqliteRawStore,
    meta: SqliteMetaStore,
}

async fn embedded() -> Embedded {
    let data_dir = tempfile::tempdir().unwrap();
    let raw_store = SqliteRawStore::open(data_dir.path(), 4).await.unwrap();
    let meta = SqliteMetaStore::open(data_dir.path()).await.unwrap();
    Embedded { _data_dir: data_dir, raw_store, meta }
}

#[tokio::test]
async fn late_data_for_an_expired_hour_is_refused_on_cql_and_postgres() {
    let stores = distributed("late_refused").await;
    let expire = async |hour_start: i64, written: &[Event]| expire_cql_rows(&stores, hour_start, written).await;
    late_data_for_an_expired_hour_is_refused(&stores.raw_store, &stores.jobs, &stores.rollups, expire).await;
    hourglass_cql::testing::drop_test_keyspace(&stores.cql).await;
}

#[tokio::test]
async fn late_data_for_an_expired_hour_is_refused_on_the_embedded_stores() {
    let stores = embedded().await;
    // Standalone's retention deletes whole hours before a cutoff.
    let expire = async |hour_start: i64, _written: &[Event]| {
        assert!(stores.raw_store.delete_hours_before(hour_start + HOUR).await.unwrap() > 0);
    };
    late_data_for_an_expired_hour_is_refused(&stores.raw_store, &stores.meta, &stores.meta, expire).await;
}

#[tokio::test]
async fn reprocess_refuses_expired_hours_and_processes_the_others_on_cql_and_postgres() {
    let stores = distributed("late_reprocess").await;
    let expire = async |hour_start: i64, written: &[Event]| expire_cql_rows(&stores, hour_start, written).await;
    reprocess_refuses_expired_hours_and_processes_the_others(&stores.raw_store, &stores.jobs, &stores.rollups, expire)
        .await;
    hourglass_cql::testing::drop_test_keyspace(&stores.cql).await;
}

#[tokio::test]
async fn reprocess_refuses_expired_hours_and_processes_the_others_on_the_embedded_stores() {
    let stores = embedded().await;
    let expire = async |hour_start: i64, _written: &[Event]| {
        assert!(stores.raw_store.delete_hours_before(hour_start + HOUR).await.unwrap() > 0);
    };
    reprocess_refuses_expired_hours_and_processes_the_others(&stores.raw_store, &stores.meta, &stores.meta, expire)
        .await;
}
