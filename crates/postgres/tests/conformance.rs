//! The Postgres key store, job queue and rollup store against the conformance suites (tier b), each test
//! on a fresh database of the real Postgres that `scripts/test.sh` starts.

use hourglass_conformance::{erasure, key_store, plan_store, rollups};
use hourglass_postgres::{
    PostgresConfig, PostgresErasureStore, PostgresJobQueue, PostgresKeyStore, PostgresPlanStore, PostgresRollupStore,
    migrate, testing,
};
use sqlx::PgPool;

async fn migrated_pool(test_name: &str) -> PgPool {
    let url = testing::create_test_database(test_name).await;
    let pool = PostgresConfig::for_url(url).connect_lazy().expect("a valid test database url");
    migrate::run(&pool).await.expect("migrate the test database");
    pool
}

async fn jobs_and_rollups(test_name: &str) -> (PostgresJobQueue, PostgresRollupStore) {
    let pool = migrated_pool(test_name).await;
    (PostgresJobQueue::new(pool.clone()), PostgresRollupStore::new(pool))
}

#[tokio::test]
async fn key_store_conformance() {
    let store = PostgresKeyStore::new(migrated_pool("conformance_keys").await);
    key_store::suite(&store).await;
}

#[tokio::test]
async fn erasure_store_conformance() {
    let pool = migrated_pool("conformance_erasure").await;
    let store = PostgresErasureStore::new(pool.clone());
    erasure::suite(&store).await;
    erasure::applied_erasures(&store, &PostgresRollupStore::new(pool)).await;
}

#[tokio::test]
async fn admin_keys_conformance() {
    let store = PostgresKeyStore::new(migrated_pool("conformance_admin_keys").await);
    key_store::admin_keys(&store).await;
}

#[tokio::test]
async fn plan_store_conformance() {
    let store = PostgresPlanStore::new(migrated_pool("conformance_plans").await);
    plan_store::suite(&store).await;
}

#[tokio::test]
async fn jobs_and_completion_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_jobs").await;
    rollups::jobs_and_completion(&jobs, &rollups).await;
}

#[tokio::test]
async fn leases_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_leases").await;
    rollups::leases(&jobs, &rollups).await;
}

#[tokio::test]
async fn one_worker_id_two_leases_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_lease_twins").await;
    rollups::one_worker_id_two_leases(&jobs, &rollups).await;
}

#[tokio::test]
async fn expired_lease_writes_nothing_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_lease_expiry").await;
    rollups::expired_lease_writes_nothing(&jobs, &rollups).await;
}

#[tokio::test]
async fn stale_holder_after_reaggregation_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_lease_stale").await;
    rollups::stale_holder_after_reaggregation(&jobs, &rollups).await;
}

#[tokio::test]
async fn refused_hours_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_refused").await;
    rollups::refused_hours(&jobs, &rollups).await;
}

#[tokio::test]
async fn reader_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_reader").await;
    rollups::reader(&jobs, &rollups).await;
}

#[tokio::test]
async fn customer_isolation_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_isolation").await;
    rollups::customer_isolation(&jobs, &rollups).await;
}

#[tokio::test]
async fn extreme_numbers_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_numbers").await;
    rollups::extreme_numbers(&jobs, &rollups).await;
}

#[tokio::test]
async fn ledger_and_recount_conformance() {
    let (jobs, rollups) = jobs_and_rollups("conformance_ledger").await;
    rollups::ledger_and_recount(&jobs, &rollups).await;
}

/// A database whose schema is missing (never migrated, or a table dropped by hand) is an operator's
/// problem, not a reason to retry: every store reports it as a schema error, which the gRPC services
/// answer with FAILED_PRECONDITION, and keeps the database's own error as the cause.
#[tokio::test]
async fn a_missing_schema_is_reported_as_such_not_as_unavailable() {
    use hourglass_core::job_queue::{CustomerHour, JobQueue, JobQueueError};
    use hourglass_core::key_store::{KeyStore, KeyStoreError};
    use hourglass_core::rollup_reader::RollupReader;
    use hourglass_core::rollup_store::RollupStoreError;

    let url = testing::create_test_database("schema_missing").await;
    let pool = PostgresConfig::for_url(url).connect_lazy().expect("a valid test database url");

    let read = PostgresRollupStore::new(pool.clone()).hourly_totals("acme", 0, 3_600, false).await;
    let Err(RollupStoreError::Schema(cause)) = read else { panic!("expected a schema error, got {read:?}") };
    assert!(cause.to_string().contains("does not exist"), "the database's own words are kept: {cause}");
    assert!(cause.downcast_ref::<sqlx::Error>().is_some(), "the cause is the sqlx error itself: {cause:?}");

    let hour = CustomerHour { customer_id: "acme".parse().unwrap(), hour_start: 0 };
    let marked = PostgresJobQueue::new(pool.clone()).mark_dirty(&[hour]).await;
    assert!(matches!(marked, Err(JobQueueError::Schema(_))), "{marked:?}");

    let keys = PostgresKeyStore::new(pool.clone());
    let ready = keys.check_ready().await;
    assert!(matches!(ready, Err(KeyStoreError::Schema(_))), "{ready:?}");
    let ready = PostgresJobQueue::new(pool).check_ready().await;
    assert!(matches!(ready, Err(JobQueueError::Schema(_))), "{ready:?}");
}
