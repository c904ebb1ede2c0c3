//! The embedded metadata store (`meta.db`) against the key store, job queue and rollup conformance suites,
//! each test on a fresh data directory.

use hourglass_conformance::{erasure, key_store, rollups};
use hourglass_embedded::meta::SqliteMetaStore;
use tempfile::TempDir;

/// A store in a new temporary data directory, which lives as long as the returned guard.
async fn store() -> (TempDir, SqliteMetaStore) {
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let store = SqliteMetaStore::open(data_dir.path()).await.expect("open meta.db");
    (data_dir, store)
}

#[tokio::test]
async fn key_store_conformance() {
    let (_data_dir, store) = store().await;
    key_store::suite(&store).await;
}

#[tokio::test]
async fn erasure_store_conformance() {
    let (_data_dir, store) = store().await;
    erasure::suite(&store).await;
    erasure::applied_erasures(&store, &store).await;
}

#[tokio::test]
async fn admin_keys_conformance() {
    let (_data_dir, store) = store().await;
    key_store::admin_keys(&store).await;
}

#[tokio::test]
async fn plan_store_conformance() {
    let (_data_dir, store) = store().await;
    hourglass_conformance::plan_store::suite(&store).await;
}

#[tokio::test]
async fn jobs_and_completion_conformance() {
    let (_data_dir, store) = store().await;
    rollups::jobs_and_completion(&store, &store).await;
}

#[tokio::test]
async fn leases_conformance() {
    let (_data_dir, store) = store().await;
    rollups::leases(&store, &store).await;
}

#[tokio::test]
async fn one_worker_id_two_leases_conformance() {
    let (_data_dir, store) = store().await;
    rollups::one_worker_id_two_leases(&store, &store).await;
}

#[tokio::test]
async fn expired_lease_writes_nothing_conformance() {
    let (_data_dir, store) = store().await;
    rollups::expired_lease_writes_nothing(&store, &store).await;
}

#[tokio::test]
async fn stale_holder_after_reaggregation_conformance() {
    let (_data_dir, store) = store().await;
    rollups::stale_holder_after_reaggregation(&store, &store).await;
}

#[tokio::test]
async fn refused_hours_conformance() {
    let (_data_dir, store) = store().await;
    rollups::refused_hours(&store, &store).await;
}

#[tokio::test]
async fn reader_conformance() {
    let (_data_dir, store) = store().await;
    rollups::reader(&store, &store).await;
}

#[tokio::test]
async fn customer_isolation_conformance() {
    let (_data_dir, store) = store().await;
    rollups::customer_isolation(&store, &store).await;
}

#[tokio::test]
async fn ledger_and_recount_conformance() {
    let (_data_dir, store) = store().await;
    rollups::ledger_and_recount(&store, &store).await;
}

#[tokio::test]
async fn extreme_numbers_conformance() {
    let (_data_dir, store) = store().await;
    rollups::extreme_numbers(&store, &store).await;
}

/// What was written survives closing the store and opening the data directory again.
#[tokio::test]
async fn reopening_the_data_directory_keeps_keys_and_rollups() {
    use hourglass_core::api_key::Scope;
    use hourglass_core::customer::CustomerId;
    use hourglass_core::job_queue::{CustomerHour, JobQueue};
    use hourglass_core::key_store::KeyStore;
    use hourglass_core::rollup_reader::RollupReader;

    let (data_dir, store) = store().await;
    let acme = CustomerId::new("acme").unwrap();
    let key = store.create_key(&acme, Scope::Ingest, "web").await.unwrap();
    let hour_start = 1_767_225_600;
    store.mark_dirty(&[CustomerHour { customer_id: acme.clone(), hour_start }]).await.unwrap();
    drop(store);

    let reopened = SqliteMetaStore::open(data_dir.path()).await.expect("reopen meta.db");
    let grant = reopened.find_key(key.hash()).await.unwrap().expect("the key survives a reopen");
    assert_eq!(grant.customer_id, acme);
    let statuses = reopened.hour_statuses("acme", hour_start, hour_start + 3600).await.unwrap();
    assert_eq!(statuses.len(), 1, "the dirty hour survives a reopen");
    assert!(statuses[0].pending);
}

/// The standalone process's load: aggregation workers leasing and completing while the ingestion loop
/// marks hours dirty, all at once on one store. No call fails (no "database is locked"), and each
/// hour's revisions come out 1, 2, 3, … with none handed out twice, so no two completions interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_and_marks_never_fail_nor_interleave() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use hourglass_core::customer::CustomerId;
    use hourglass_core::job_queue::{CustomerHour, JobQueue};
    use hourglass_core::raw_store::HourOutcomes;
    use hourglass_core::rollup_reader::RollupReader;
    use hourglass_core::rollup_store::{Completion, EventTypeRollup, HourRollup, JobKind, RollupStore};

    const HOURS: i64 = 12;
    const MARK_ROUNDS: i64 = 30;
    const FIRST_HOUR: i64 = 1_767_225_600;
    let (_data_dir, store) = store().await;
    let customer_hour = |index: i64| CustomerHour {
        customer_id: CustomerId::new("acme").unwrap(),
        hour_start: FIRST_HOUR + (index % HOURS) * 3600,
    };
    let marking_done = Arc::new(AtomicBool::new(false));
    let marker = tokio::spawn({
        let store = store.clone();
        let marking_done = marking_done.clone();
        async move {
            for round in 0..MARK_ROUNDS {
                let batch: Vec<CustomerHour> = (round..round + 4).map(customer_hour).collect();
                store.mark_dirty(&batch).await.expect("mark dirty while workers run");
                tokio::task::yield_now().await;
            }
            marking_done.store(true, Ordering::Release);
        }
    });
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let store = store.clone();
            let marking_done = marking_done.clone();
            tokio::spawn(async move {
                let owner = format!("worker-{worker}");
                let mut revisions: Vec<(i64, u32)> = Vec::new();
                loop {
                    // Read before leasing: an empty lease after the last mark means nothing is left.
                    let last_mark_done = marking_done.load(Ordering::Acquire);
                    let kind = JobKind::Final { hours_before_unix: FIRST_HOUR + HOURS * 3600 };
                    let jobs = store.lease_jobs(&owner, 3, Duration::from_secs(600), kind).await.expect("lease");
                    if jobs.is_empty() {
                        if last_mark_done {
                            break;
                        }
                        tokio::task::yield_now().await;
                        continue;
                    }
                    for job in jobs {
                        let rollup = HourRollup {
                            event_types: vec![EventTypeRollup {
                                event_type: "view".into(),
                                events: job.generation as u64,
                                distinct_users: 1,
                                users_sketch: vec![1, 2, 3],
                            }],
                            numeric: vec![],
                            events: job.generation as u64,
                            distinct_users: 1,
                            users_sketch: vec![1, 2, 3],
                            outcomes: HourOutcomes::default(),
                            logic_version: 1,
                            is_final: true,
                        };
                        match store.complete(&job, &rollup).await.expect("complete") {
                            Completion::Replaced { revision } => {
                                revisions.push((job.customer_hour.hour_start, revision))
                            }
                            Completion::LeaseLost => panic!("a 10-minute lease was lost: {job:?}"),
                        }
                    }
                }
                revisions
            })
        })
        .collect();
    marker.await.expect("the marker task");
    let mut revisions_by_hour: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for worker in workers {
        for (hour_start, revision) in worker.await.expect("a worker task") {
            revisions_by_hour.entry(hour_start).or_default().push(revision);
        }
    }
    assert_eq!(revisions_by_hour.len(), HOURS as usize, "every marked hour was aggregated");
    for (hour_start, revisions) in &mut revisions_by_hour {
        revisions.sort_unstable();
        let expected: Vec<u32> = (1..=revisions.len() as u32).collect();
        assert_eq!(*revisions, expected, "hour {hour_start}: each completion got the next revision, once");
    }
    let statuses = store.hour_statuses("acme", FIRST_HOUR, FIRST_HOUR + HOURS * 3600).await.unwrap();
    assert!(statuses.iter().all(|status| !status.pending), "the last marks were all aggregated: {statuses:?}");
}

#[tokio::test]
async fn a_meta_db_from_before_hour_totals_is_upgraded_in_place() {
    use hourglass_core::rollup_reader::RollupReader;
    let data_dir = TempDir::new().unwrap();
    // hour_revisions as the first release created it, with one aggregated hour.
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.path().join("meta.db")).create_if_missing(true);
    let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE hour_revisions (customer_id TEXT NOT NULL, hour_start INTEGER NOT NULL, \
         revision INTEGER NOT NULL, logic_version INTEGER NOT NULL, events INTEGER NOT NULL, \
         computed_at_us INTEGER NOT NULL, is_final INTEGER NOT NULL DEFAULT 0, final_as_of_us INTEGER, \
         PRIMARY KEY (customer_id, hour_start)) STRICT; \
         INSERT INTO hour_revisions VALUES ('acme', 7200, 1, 1, 5, 0, 1, 0);",
    )
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let store = SqliteMetaStore::open(data_dir.path()).await.unwrap();
    let totals = store.hourly_totals("acme", 0, 36_000, true).await.unwrap();
    assert_eq!(totals.len(), 1, "the old hour is readable");
    assert_eq!((totals[0].events, totals[0].distinct_users), (5, 0), "its totals wait for a reprocess");
    drop(store);
    SqliteMetaStore::open(data_dir.path()).await.expect("opening an upgraded database again changes nothing");
}

#[tokio::test]
async fn a_meta_db_from_before_lease_tokens_is_upgraded_in_place() {
    use std::time::Duration;

    use hourglass_core::raw_store::HourOutcomes;
    use hourglass_core::rollup_store::{Completion, HourRollup, JobKind, RollupStore};

    let data_dir = TempDir::new().unwrap();
    // dirty_hours as releases before lease tokens created it, with one hour under a lease that has expired.
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.path().join("meta.db")).create_if_missing(true);
    let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE dirty_hours (customer_id TEXT NOT NULL, hour_start INTEGER NOT NULL, \
         generation INTEGER NOT NULL DEFAULT 1, first_marked_at_us INTEGER NOT NULL, \
         last_marked_at_us INTEGER NOT NULL, aggregated_generation INTEGER NOT NULL DEFAULT 0, \
         finalized_generation INTEGER NOT NULL DEFAULT 0, provisional_at_us INTEGER, lease_owner TEXT, \
         leased_until_us INTEGER, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, \
         PRIMARY KEY (customer_id, hour_start)) STRICT; \
         INSERT INTO dirty_hours (customer_id, hour_start, first_marked_at_us, last_marked_at_us, lease_owner, \
         leased_until_us, attempts) VALUES ('acme', 7200, 0, 0, 'old-worker', 1, 1);",
    )
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let store = SqliteMetaStore::open(data_dir.path()).await.unwrap();
    let kind = JobKind::Final { hours_before_unix: 36_000 };
    let jobs = store.lease_jobs("new-worker", 10, Duration::from_secs(600), kind).await.unwrap();
    assert_eq!(jobs.len(), 1, "the hour whose old lease expired is a job again");
    let rollup = HourRollup {
        event_types: vec![],
        numeric: vec![],
        events: 0,
        distinct_users: 0,
        users_sketch: vec![],
        outcomes: HourOutcomes::default(),
        logic_version: 1,
        is_final: true,
    };
    assert_eq!(store.complete(&jobs[0], &rollup).await.unwrap(), Completion::Replaced { revision: 1 });
    drop(store);
    SqliteMetaStore::open(data_dir.path()).await.expect("opening an upgraded database again changes nothing");
}

#[tokio::test]
async fn a_meta_db_from_before_refused_hours_is_upgraded_in_place() {
    use std::time::Duration;

    use hourglass_core::rollup_reader::RollupReader;
    use hourglass_core::rollup_store::{JobKind, RollupStore};

    let data_dir = TempDir::new().unwrap();
    // dirty_hours as releases before refused hours created it, with one pending hour.
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.path().join("meta.db")).create_if_missing(true);
    let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE dirty_hours (customer_id TEXT NOT NULL, hour_start INTEGER NOT NULL, \
         generation INTEGER NOT NULL DEFAULT 1, first_marked_at_us INTEGER NOT NULL, \
         last_marked_at_us INTEGER NOT NULL, aggregated_generation INTEGER NOT NULL DEFAULT 0, \
         finalized_generation INTEGER NOT NULL DEFAULT 0, provisional_at_us INTEGER, lease_owner TEXT, \
         lease_token INTEGER, leased_until_us INTEGER, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, \
         PRIMARY KEY (customer_id, hour_start)) STRICT; \
         INSERT INTO dirty_hours (customer_id, hour_start, first_marked_at_us, last_marked_at_us) \
         VALUES ('acme', 7200, 0, 0);",
    )
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let store = SqliteMetaStore::open(data_dir.path()).await.unwrap();
    let kind = JobKind::Final { hours_before_unix: 36_000 };
    let jobs = store.lease_jobs("worker", 10, Duration::from_secs(600), kind).await.unwrap();
    assert_eq!(jobs.len(), 1, "the old pending hour is a job, never refused");
    assert!(store.refuse(&jobs[0], "raw data expired").await.unwrap(), "and can be refused");
    let statuses = store.hour_statuses("acme", 0, 36_000).await.unwrap();
    assert_eq!(statuses[0].refused.as_deref(), Some("raw data expired"));
    drop(store);
    SqliteMetaStore::open(data_dir.path()).await.expect("opening an upgraded database again changes nothing");
}

/// After a crash, standalone (the only process using its data directory) takes back the dead process's
/// leases at once instead of waiting them out.
#[tokio::test]
async fn leases_of_a_dead_process_are_released_and_the_hours_leased_again_at_once() {
    use std::time::Duration;

    use hourglass_core::job_queue::{CustomerHour, JobQueue};
    use hourglass_core::rollup_store::{JobKind, RollupStore};

    let (data_dir, store) = store().await;
    let hour = CustomerHour { customer_id: "acme".parse().unwrap(), hour_start: 3_600 };
    store.mark_dirty(std::slice::from_ref(&hour)).await.unwrap();
    let due = JobKind::Final { hours_before_unix: 7_200 };
    let lease = Duration::from_secs(300);
    let leased = store.lease_jobs("dead-process", 10, lease, due).await.unwrap();
    assert_eq!(leased.len(), 1);
    drop(store);

    let store = SqliteMetaStore::open(data_dir.path()).await.unwrap();
    assert!(store.lease_jobs("new-process", 10, lease, due).await.unwrap().is_empty(), "the old lease still holds");
    assert_eq!(store.release_leases_of_dead_processes().await.unwrap(), 1);
    let leased_again = store.lease_jobs("new-process", 10, lease, due).await.unwrap();
    assert_eq!(leased_again.len(), 1, "the hour is leased again without waiting out the old lease");
    assert_eq!(store.release_leases_of_dead_processes().await.unwrap(), 1, "counts only held leases");
}

/// The same for an erasure request a dead process was running: it is resumed at once, not after its lease.
#[tokio::test]
async fn erasure_leases_of_a_dead_process_are_released_and_the_request_leased_again_at_once() {
    use std::time::Duration;

    use hourglass_core::erasure::{ErasureSalt, ErasureStore, UserHash};

    let (data_dir, store) = store().await;
    let salt = ErasureSalt::new("the meta tests' erasure salt").unwrap();
    let customer = "acme".parse().unwrap();
    let request =
        store.request_erasure(&customer, UserHash::of(&salt, "acme", "jane"), chrono::Utc::now()).await.unwrap();
    let lease = Duration::from_secs(300);
    assert!(store.lease_erasure(&request.id, "dead-process", lease).await.unwrap().is_some());
    drop(store);

    let store = SqliteMetaStore::open(data_dir.path()).await.unwrap();
    assert!(store.lease_next_erasure("new-process", lease).await.unwrap().is_none(), "the old lease still holds");
    assert_eq!(store.release_leases_of_dead_processes().await.unwrap(), 1);
    let leased_again = store.lease_next_erasure("new-process", lease).await.unwrap().expect("leased again at once");
    assert_eq!(leased_again.request.id, request.id);
}

#[tokio::test]
async fn a_meta_db_from_before_admin_keys_is_upgraded_in_place() {
    use hourglass_core::api_key::{ApiKey, Scope};
    use hourglass_core::key_store::KeyStore;
    let data_dir = TempDir::new().unwrap();
    // api_keys as the releases before erasure created it, with one ingest key.
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.path().join("meta.db")).create_if_missing(true);
    let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let ingest_key = ApiKey::generate();
    sqlx::raw_sql(
        "CREATE TABLE customers (customer_id TEXT PRIMARY KEY, created_at_us INTEGER NOT NULL) STRICT; \
         CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, \
         key_hash BLOB NOT NULL UNIQUE CHECK (length(key_hash) = 32), \
         customer_id TEXT NOT NULL REFERENCES customers (customer_id), \
         scope TEXT NOT NULL CHECK (scope IN ('ingest', 'query')), name TEXT NOT NULL DEFAULT '', \
         created_at_us INTEGER NOT NULL, revoked_at_us INTEGER) STRICT; \
         INSERT INTO customers VALUES ('acme', 0);",
    )
    .execute(&old)
    .await
    .unwrap();
    sqlx::query("INSERT INTO api_keys VALUES (?, ?, 'acme', 'ingest', 'web', 1, NULL)")
        .bind(ingest_key.id().as_str())
        .bind(ingest_key.hash().0.as_slice())
        .execute(&old)
        .await
        .unwrap();
    old.close().await;

    let store = SqliteMetaStore::open(data_dir.path()).await.unwrap();
    let grant = store.find_key(ingest_key.hash()).await.unwrap().expect("the old key is kept");
    assert_eq!((grant.scope, grant.customer_id.as_str()), (Scope::Ingest, "acme"));
    key_store::admin_keys(&store).await;
    drop(store);
    let reopened = SqliteMetaStore::open(data_dir.path()).await.expect("opening an upgraded database again");
    assert_eq!(reopened.list_keys(None).await.unwrap().len(), 2);
}
