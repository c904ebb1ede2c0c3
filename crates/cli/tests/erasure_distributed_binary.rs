//! Erasure in distributed mode with the built binary, against the real Cassandra and Postgres: a request
//! made over gRPC to `hourglass query` (an admin key) is run by `hourglass aggregator`; the aggregator is
//! killed (SIGKILL) while the request is `erasing` with some hours done, and a second aggregator takes the
//! request over once the dead one's lease expires and finishes it. Afterwards raw reads hold none of the
//! user's events, rollups equal a brute-force recount without them (events and exact distinct users), and
//! `verify` balances.
//!
//! The kill comes while the test holds a lock on `erasure_hours` (taken once GetErasure shows an hour
//! done): the run then waits at its next record, so it is caught part-way whatever the machine's speed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hourglass_aggregator::AggregatorConfig;
use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_core::retention::RawRetention;
use hourglass_core::rollup_store::RollupStore;
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresKeyStore, PostgresRollupStore, migrate};
use hourglass_proto::admin::v1::admin_service_client::AdminServiceClient;
use hourglass_proto::admin::v1::{ErasureState, GetErasureRequest, GetErasureResponse, RequestErasureRequest};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;
use support::KillOnDrop;
use tonic::transport::Channel;

const HOURGLASS: &str = env!("CARGO_BIN_EXE_hourglass");
const SALT: &str = "erasure-distributed-test-salt-0123";
const USER: &str = "person-to-forget-distributed-9e0d";
const CUSTOMER: &str = "erasure-dist-acme";
const HOURS: i64 = 12;
const TIMEOUT: Duration = Duration::from_secs(120);

fn records(hours: &[i64]) -> Vec<EventBatchRecord> {
    hours
        .iter()
        .enumerate()
        .map(|(hour_index, hour_start)| {
            let events: Vec<Event> = (0..120)
                .map(|index| Event {
                    event_id: format!("{hour_index}-{index}"),
                    event_type: ["view", "buy"][(index % 2) as usize].into(),
                    occurred_at: Some(Timestamp { seconds: hour_start + index * 20, nanos: 0 }),
                    user_id: match index % 5 {
                        0 => Some(USER.to_owned()),
                        other => Some(format!("user-{}", (index + other) % 13)),
                    },
                    properties: Default::default(),
                })
                .collect();
            support::accepted_record(CUSTOMER, *hour_start, 3000, format!("batch-{hour_index}"), events)
        })
        .collect()
}

fn role(args: &[&str], database_url: &str, cql: &hourglass_cql::CqlConfig) -> KillOnDrop {
    let child: Child = Command::new(HOURGLASS)
        .args(args)
        .env("HOURGLASS_DATABASE_URL", database_url)
        .env("HOURGLASS_CQL_NODES", cql.nodes.join(","))
        .env("HOURGLASS_CQL_KEYSPACE", &cql.keyspace)
        .env("HOURGLASS_CQL_BUCKETS", cql.buckets.to_string())
        .env("HOURGLASS_ERASURE_SALT", SALT)
        .env("HOURGLASS_LOG", "info")
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

fn aggregator(database_url: &str, cql: &hourglass_cql::CqlConfig, worker: &str) -> KillOnDrop {
    // A short lease, so the second aggregator takes over soon after the first dies.
    let args = ["aggregator", "--aggregator-lease-secs", "3", "--aggregator-worker-id", worker];
    role(&args, database_url, cql)
}

async fn get(admin: &mut AdminServiceClient<Channel>, key: &str, request_id: &str) -> GetErasureResponse {
    let mut request = tonic::Request::new(GetErasureRequest { request_id: request_id.into() });
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    admin.get_erasure(request).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_requested_from_the_query_role_is_run_by_aggregators_through_a_kill_9() {
    let database_url = hourglass_postgres::testing::create_test_database("erasure_dist").await;
    let (cql, raw_store) = hourglass_cql::testing::create_test_store("erasure_dist", 4).await;
    let pool = PostgresConfig::for_url(database_url.clone()).connect_lazy().unwrap();
    migrate::run(&pool).await.unwrap();
    let rollups = PostgresRollupStore::new(pool.clone());
    let current_hour = hourglass_core::hour::hour_start(chrono::Utc::now().timestamp());
    let hours: Vec<i64> = (0..HOURS).map(|index| current_hour - (HOURS + 2 - index) * 3600).collect();
    let sent = records(&hours);
    raw_store.write_records(&RecordView::from_records(&sent)).await.unwrap();
    let customer = CustomerId::new(CUSTOMER).unwrap();
    let marks: Vec<CustomerHour> = hours
        .iter()
        .map(|hour_start| CustomerHour { customer_id: customer.clone(), hour_start: *hour_start })
        .collect();
    PostgresJobQueue::new(pool.clone()).mark_dirty(&marks).await.unwrap();
    let config = AggregatorConfig::with_defaults();
    let (from, to) = (hours[0], hours[hours.len() - 1] + 3600);
    let now = chrono::Utc::now().timestamp();
    hourglass_aggregator::reprocess::reprocess(&config, &raw_store, &rollups, None, from, to, false, now, |_, _| {})
        .await
        .unwrap();
    let key = PostgresKeyStore::new(pool.clone()).create_key(&customer, Scope::Admin, "erasure test").await.unwrap();
    let key = key.expose_secret();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut query = role(&["query", "--listen-addr", &format!("127.0.0.1:{port}")], &database_url, &cql);
    let channel = support::wait_until_serving(&format!("http://127.0.0.1:{port}"), &mut query, TIMEOUT).await;
    let _query_logs = support::collect_stderr(&mut query);
    let mut admin = AdminServiceClient::new(channel);
    let mut request = tonic::Request::new(RequestErasureRequest {
        customer_id: CUSTOMER.into(),
        user_id: USER.into(),
        dry_run: false,
    });
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let request_id = admin.request_erasure(request).await.unwrap().into_inner().erasure.unwrap().request_id;

    // The first aggregator runs it; killed once an hour is done, while the test holds the hours' lock.
    let mut first = aggregator(&database_url, &cql, "erasure-first");
    let _first_logs = support::collect_stderr(&mut first);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while get(&mut admin, key, &request_id).await.hours_done < 1 {
        assert!(tokio::time::Instant::now() < deadline, "no hour erased within {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE erasure_hours IN EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM erasure_hours WHERE request_id = $1 AND revision IS NOT NULL")
            .bind(&request_id)
            .fetch_one(&mut *lock)
            .await
            .unwrap();
    assert!((1..HOURS).contains(&done), "caught part-way: {done} of {HOURS} hours done");
    eprintln!("killed the aggregator with {done} of {HOURS} hours done");
    first.kill().unwrap();
    first.wait().unwrap();
    lock.rollback().await.unwrap();

    // A second aggregator takes the request over once the dead one's lease expires.
    let mut second = aggregator(&database_url, &cql, "erasure-second");
    let second_logs = support::collect_stderr(&mut second);
    let finished = loop {
        let progress = get(&mut admin, key, &request_id).await;
        if progress.erasure.as_ref().unwrap().state() == ErasureState::Done {
            break progress;
        }
        assert!(tokio::time::Instant::now() < deadline + TIMEOUT, "not resumed to the end: {progress:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(finished.hours_done as i64, HOURS);
    // The end is logged just after the request is recorded done.
    support::wait_for_log(&second_logs, "erasure request done", TIMEOUT).await;
    let (status, _) = support::sigterm_and_wait(&mut second).await;
    assert!(status.success());
    let logs = second_logs.lock().unwrap().clone();
    assert!(logs.contains("erasure request done"), "{logs}");
    assert!(!logs.contains(USER) && !logs.contains(SALT), "the user id or the salt is logged");
    support::sigterm_and_wait(&mut query).await;

    // Raw reads, rollups against a brute-force recount, verify.
    let mut expected: BTreeMap<(i64, String), (u64, BTreeSet<String>)> = BTreeMap::new();
    for event in sent.iter().flat_map(|record| &record.events).filter(|event| event.user_id.as_deref() != Some(USER)) {
        let entry = expected
            .entry((hourglass_core::hour::hour_start(event.occurred_at.unwrap().seconds), event.event_type.clone()))
            .or_default();
        entry.0 += 1;
        entry.1.extend(event.user_id.clone());
    }
    let mut counted = BTreeMap::new();
    for hour_start in &hours {
        let mut hers = 0;
        for bucket in 0..raw_store.bucket_count() {
            let events = raw_store.read_bucket(CUSTOMER, *hour_start, bucket).await.unwrap();
            hers += events.iter().filter(|event| event.user_id.as_deref() == Some(USER)).count();
        }
        assert_eq!(hers, 0, "raw reads of hour {hour_start} hold none of the user's events");
        let customer_hour = CustomerHour { customer_id: customer.clone(), hour_start: *hour_start };
        for row in rollups.current_rollup(&customer_hour).await.unwrap() {
            counted.insert((*hour_start, row.event_type.clone()), (row.events, row.distinct_users));
        }
    }
    let expected: BTreeMap<(i64, String), (u64, u64)> =
        expected.into_iter().map(|(key, (events, users))| (key, (events, users.len() as u64))).collect();
    assert_eq!(counted, expected, "rollups equal a brute-force recount without the user");
    let now = chrono::Utc::now().timestamp();
    let verified = hourglass_aggregator::verify::verify(
        &raw_store,
        &rollups,
        &RawRetention::from_days(30),
        Some(CUSTOMER),
        from,
        to,
        now,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(verified.len(), hours.len());
    assert!(verified.iter().all(|hour| hour.recounted && hour.ledger.balances()), "{verified:?}");
    hourglass_cql::testing::drop_test_keyspace(&cql).await;
}
