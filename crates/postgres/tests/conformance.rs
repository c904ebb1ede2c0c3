//! The Postgres key store, job queue and rollup store against the conformance suites (tier b), each test
//! on a fresh database of the real Postgres that `scripts/test.sh` starts.

use hourglass_conformance::{key_store, rollups};
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresKeyStore, PostgresRollupStore, migrate, testing};
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
