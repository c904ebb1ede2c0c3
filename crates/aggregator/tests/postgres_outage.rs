//! The aggregator while Postgres is down (tier b: a Postgres cluster of the test's own, crashed and
//! restarted; the raw store is the shared Cassandra).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hourglass_aggregator::AggregatorConfig;
use hourglass_core::customer::CustomerId;
use hourglass_core::hour;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_core::rollup_reader::RollupReader;
use hourglass_core::rollup_store::{JobKind, RollupStore};
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresRollupStore, migrate};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;

use hourglass_postgres::testing::FaultCluster;

const NAME: &str = "aggregator_outage";
const PORT: u16 = 5443;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn with_postgres_down_jobs_fail_write_nothing_and_are_retried_after() {
    let cluster = FaultCluster::start(NAME, PORT);
    let url = format!("postgres://hourglass:hourglass@127.0.0.1:{PORT}/hourglass");
    let pool = PostgresConfig::for_url(&url).connect_lazy().unwrap();
    sqlx::query("DROP SCHEMA public CASCADE").execute(&pool).await.unwrap();
    sqlx::query("CREATE SCHEMA public").execute(&pool).await.unwrap();
    migrate::run(&pool).await.unwrap();
    let job_queue = PostgresJobQueue::new(pool.clone());
    let rollups = PostgresRollupStore::new(pool);
    let (cql, raw_store) = hourglass_cql::testing::create_test_store("pg_outage", 4).await;

    let closed_hour = hour::hour_start(now()) - 2 * 3600;
    let events: Vec<Event> = (0..25)
        .map(|index| Event {
            event_id: format!("p{index}"),
            event_type: "view".into(),
            occurred_at: Some(Timestamp { seconds: closed_hour + index, nanos: 0 }),
            ..Default::default()
        })
        .collect();
    let record = EventBatchRecord { customer_id: "acme".into(), batch_id: "p".into(), events, ..Default::default() };
    raw_store.write_records(&RecordView::from_records(&[record])).await.unwrap();
    let customer_hour = CustomerHour { customer_id: CustomerId::new("acme").unwrap(), hour_start: closed_hour };
    job_queue.mark_dirty(std::slice::from_ref(&customer_hour)).await.unwrap();

    // A worker leases the job, reads the raw rows... and Postgres goes down before it commits.
    let jobs =
        rollups.lease_jobs("w1", 1, Duration::from_secs(2), JobKind::Final { hours_before_unix: now() }).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let rollup = hourglass_aggregator::aggregate_hour(&raw_store, "acme", closed_hour, true, 4).await.unwrap();
    cluster.run("kill");
    assert!(rollups.complete(&jobs[0], &rollup).await.is_err(), "completing fails while postgres is down");
    let config = AggregatorConfig { provisional_interval_secs: 0, ..AggregatorConfig::with_defaults() };
    assert!(hourglass_aggregator::run_once(&config, "w2", &raw_store, &rollups, now()).await.is_err());

    cluster.run("start");
    assert!(rollups.hour("acme", closed_hour).await.unwrap().is_none(), "nothing was half-written");
    assert!(rollups.ledger(None, closed_hour, closed_hour + 3600).await.unwrap().is_empty());

    // The job comes back once w1's lease expires, and completes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hourglass_aggregator::run_once(&config, "w2", &raw_store, &rollups, now()).await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the job was never retried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = rollups.hour("acme", closed_hour).await.unwrap().expect("aggregated after the outage");
    assert_eq!((stored.events, stored.revision), (25, 1));
    hourglass_cql::testing::drop_test_keyspace(&cql).await;
    drop(cluster);
}
