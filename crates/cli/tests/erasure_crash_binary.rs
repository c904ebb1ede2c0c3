//! A crash mid-erasure resumes to the same end state (issue 28), with the built binary: standalone on a
//! data directory of the test's own holding many aggregated hours of a user's events; the erasure is
//! requested over gRPC (`hourglass.admin.v1.AdminService`, an admin key) and run by standalone's own
//! aggregator; the process is killed (SIGKILL) while the request is `erasing` with some hours done, and
//! started again. Afterwards raw reads hold none of the user's events, every hour's rollup equals a
//! brute-force recount without them (events and exact distinct users) and the rollup of the same data
//! erased without a crash (`hourglass erase`, sketches included), and `verify` balances.
//!
//! The kill comes while the test holds `meta.db`'s write lock, taken once GetErasure shows an hour done:
//! the run then waits at its next write, so the request is caught part-way whatever the machine's speed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hourglass_aggregator::AggregatorConfig;
use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureState, ErasureStore};
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_core::retention::RawRetention;
use hourglass_core::rollup_store::{EventTypeRollup, RollupStore};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_proto::admin::v1::admin_service_client::AdminServiceClient;
use hourglass_proto::admin::v1::{
    ErasureState as ProtoState, GetErasureRequest, GetErasureResponse, RequestErasureRequest,
};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;
use sqlx::Connection;
use support::KillOnDrop;
use tonic::transport::Channel;

const BINARY: &str = env!("CARGO_BIN_EXE_hourglass");
const SALT: &str = "erasure-crash-test-salt-0123456789";
const USER: &str = "person-to-forget-crash-51c2";
const HOURS: i64 = 40;
const EVENTS_PER_HOUR: i64 = 300;
const TIMEOUT: Duration = Duration::from_secs(120);

/// `HOURS` closed hours of acme's events of three types and twenty users; `USER` sends every seventh.
fn records(hours: &[i64]) -> Vec<EventBatchRecord> {
    hours
        .iter()
        .enumerate()
        .map(|(hour_index, hour_start)| {
            let events: Vec<Event> = (0..EVENTS_PER_HOUR)
                .map(|index| Event {
                    event_id: format!("{hour_index}-{index}"),
                    event_type: ["view", "click", "buy"][(index % 3) as usize].into(),
                    occurred_at: Some(Timestamp { seconds: hour_start + index * 10, nanos: 0 }),
                    user_id: match index % 7 {
                        0 => Some(USER.to_owned()),
                        6 => None,
                        other => Some(format!("user-{}", (index + other + hour_index as i64) % 20)),
                    },
                    properties: Default::default(),
                })
                .collect();
            support::accepted_record("acme", *hour_start, 3000, format!("batch-{hour_index}"), events)
        })
        .collect()
}

/// Per hour and event type: events and distinct users of what was sent, without `USER`'s.
fn brute_force(records: &[EventBatchRecord]) -> BTreeMap<(i64, String), (u64, u64)> {
    let mut counts: BTreeMap<(i64, String), (u64, BTreeSet<String>)> = BTreeMap::new();
    for record in records {
        for event in record.events.iter().filter(|event| event.user_id.as_deref() != Some(USER)) {
            let hour_start = hourglass_core::hour::hour_start(event.occurred_at.unwrap().seconds);
            let entry = counts.entry((hour_start, event.event_type.clone())).or_default();
            entry.0 += 1;
            entry.1.extend(event.user_id.clone());
        }
    }
    counts.into_iter().map(|(key, (events, users))| (key, (events, users.len() as u64))).collect()
}

/// A data directory holding `records`, aggregated; returns an admin key of acme.
async fn prepare(data_dir: &Path, records: &[EventBatchRecord], hours: &[i64]) -> String {
    let raw_store = SqliteRawStore::open(data_dir, 4).await.unwrap();
    let meta = SqliteMetaStore::open(data_dir).await.unwrap();
    raw_store.write_records(&RecordView::from_records(records)).await.unwrap();
    let acme = CustomerId::new("acme").unwrap();
    let marks: Vec<CustomerHour> =
        hours.iter().map(|hour_start| CustomerHour { customer_id: acme.clone(), hour_start: *hour_start }).collect();
    meta.mark_dirty(&marks).await.unwrap();
    let config = AggregatorConfig::with_defaults();
    let (from, to) = (hours[0], hours[hours.len() - 1] + 3600);
    let now = chrono::Utc::now().timestamp();
    hourglass_aggregator::reprocess::reprocess(&config, &raw_store, &meta, None, from, to, false, now, |_, _| {})
        .await
        .unwrap();
    meta.create_key(&acme, Scope::Admin, "erasure test").await.unwrap().expose_secret().to_owned()
}

fn start(data_dir: &Path, port: u16) -> KillOnDrop {
    let child = Command::new(BINARY)
        .args(["standalone", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-addr", &format!("127.0.0.1:{port}")])
        .env("HOURGLASS_ERASURE_SALT", SALT)
        .env("HOURGLASS_LOG", "info")
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hourglass standalone");
    KillOnDrop(child)
}

fn authorized<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

async fn get(admin: &mut AdminServiceClient<Channel>, key: &str, request_id: &str) -> GetErasureResponse {
    admin.get_erasure(authorized(key, GetErasureRequest { request_id: request_id.into() })).await.unwrap().into_inner()
}

/// Every hour's rollup rows, each sorted by event type.
async fn rollups(meta: &SqliteMetaStore, hours: &[i64]) -> Vec<(i64, Vec<EventTypeRollup>)> {
    let mut all = Vec::new();
    for hour_start in hours {
        let customer_hour = CustomerHour { customer_id: CustomerId::new("acme").unwrap(), hour_start: *hour_start };
        let mut rows = meta.current_rollup(&customer_hour).await.unwrap();
        rows.sort_by(|left, right| left.event_type.cmp(&right.event_type));
        all.push((*hour_start, rows));
    }
    all
}

/// Checks the end state of an erased data directory; returns its rollups.
async fn check_erased(
    data_dir: &Path,
    records: &[EventBatchRecord],
    hours: &[i64],
) -> Vec<(i64, Vec<EventTypeRollup>)> {
    let raw_store = SqliteRawStore::open(data_dir, 4).await.unwrap();
    let meta = SqliteMetaStore::open(data_dir).await.unwrap();
    let requests = meta.list_erasures(None).await.unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].state, ErasureState::Done);
    let planned = meta.erasure_hours(&requests[0].id).await.unwrap();
    assert_eq!(planned.len(), hours.len(), "every hour planned once");
    assert!(planned.iter().all(|hour| hour.revision.is_some_and(|revision| revision >= 2)), "{planned:?}");
    let (mut stored, mut hers) = (0, 0);
    for hour_start in hours {
        for bucket in 0..raw_store.bucket_count() {
            let events = raw_store.read_bucket("acme", *hour_start, bucket).await.unwrap();
            stored += events.len();
            hers += events.iter().filter(|event| event.user_id.as_deref() == Some(USER)).count();
        }
    }
    assert_eq!(hers, 0, "raw reads hold none of the user's events");
    let expected = brute_force(records);
    assert_eq!(stored as u64, expected.values().map(|(events, _)| events).sum::<u64>());
    let rollups = rollups(&meta, hours).await;
    let counted: BTreeMap<(i64, String), (u64, u64)> = rollups
        .iter()
        .flat_map(|(hour_start, rows)| {
            rows.iter().map(|row| ((*hour_start, row.event_type.clone()), (row.events, row.distinct_users)))
        })
        .collect();
    assert_eq!(counted, expected, "rollups equal a brute-force recount without the user");
    let now = chrono::Utc::now().timestamp();
    let (from, to) = (hours[0], hours[hours.len() - 1] + 3600);
    let verified = hourglass_aggregator::verify::verify(
        &raw_store,
        &meta,
        &RawRetention::from_days(30),
        None,
        from,
        to,
        now,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(verified.len(), hours.len());
    assert!(verified.iter().all(|hour| hour.recounted && hour.ledger.balances()), "{verified:?}");
    rollups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_erasure_resumes_to_the_end_state_of_a_run_without_the_crash() {
    let current_hour = hourglass_core::hour::hour_start(chrono::Utc::now().timestamp());
    let hours: Vec<i64> = (0..HOURS).map(|index| current_hour - (HOURS + 2 - index) * 3600).collect();
    let sent = records(&hours);

    // Without a crash: `hourglass erase` on a copy of the same data.
    let uncrashed_dir = tempfile::tempdir().unwrap();
    prepare(uncrashed_dir.path(), &sent, &hours).await;
    let erased = Command::new(BINARY)
        .args(["erase", "--data-dir"])
        .arg(uncrashed_dir.path())
        .args(["--customer", "acme", "--user-id", USER])
        .env("HOURGLASS_ERASURE_SALT", SALT)
        .output()
        .unwrap();
    assert!(erased.status.success(), "{}", String::from_utf8_lossy(&erased.stderr));
    let uncrashed = check_erased(uncrashed_dir.path(), &sent, &hours).await;

    // With a crash: requested over gRPC, run by standalone, killed part-way.
    let data_dir = tempfile::tempdir().unwrap();
    let key = prepare(data_dir.path(), &sent, &hours).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = format!("http://127.0.0.1:{port}");
    let mut standalone = start(data_dir.path(), port);
    let channel = support::wait_until_serving(&target, &mut standalone, TIMEOUT).await;
    // Read on a thread, so the process never blocks on a full pipe.
    let first_logs = support::collect_stderr(&mut standalone);
    let mut admin = AdminServiceClient::new(channel);
    let request = RequestErasureRequest { customer_id: "acme".into(), user_id: USER.into(), dry_run: false };
    let recorded = admin.request_erasure(authorized(&key, request)).await.unwrap().into_inner();
    let request_id = recorded.erasure.unwrap().request_id;

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let progress = get(&mut admin, &key, &request_id).await;
        if progress.hours_done >= 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no hour erased within {TIMEOUT:?}: {progress:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Hold meta.db's write lock: the run waits at its next write, so it is caught part-way.
    let meta_db = format!("sqlite://{}", data_dir.path().join("meta.db").display());
    let mut lock = sqlx::SqliteConnection::connect(&meta_db).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut lock).await.unwrap();
    let (state, done): (String, i64) = sqlx::query_as(
        "SELECT r.state, (SELECT count(*) FROM erasure_hours h WHERE h.request_id = r.request_id \
         AND h.revision IS NOT NULL) FROM erasure_requests r WHERE r.request_id = ?1",
    )
    .bind(&request_id)
    .fetch_one(&mut lock)
    .await
    .unwrap();
    assert_eq!(state, "erasing");
    assert!((1..HOURS).contains(&done), "caught part-way: {done} of {HOURS} hours done");
    eprintln!("killed with {done} of {HOURS} hours done");
    standalone.kill().unwrap();
    standalone.wait().unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    drop(standalone);

    // The restarted process resumes the request on the hours not done.
    let mut standalone = start(data_dir.path(), port);
    let channel = support::wait_until_serving(&target, &mut standalone, TIMEOUT).await;
    let logs = support::collect_stderr(&mut standalone);
    let mut admin = AdminServiceClient::new(channel);
    let finished = loop {
        let progress = get(&mut admin, &key, &request_id).await;
        if progress.erasure.as_ref().unwrap().state() == ProtoState::Done {
            break progress;
        }
        assert!(tokio::time::Instant::now() < deadline + TIMEOUT, "not resumed to the end: {progress:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished.hours_done as i64, HOURS);
    assert_eq!(
        finished.events,
        sent.iter().flat_map(|record| &record.events).filter(|e| e.user_id.as_deref() == Some(USER)).count() as u64
    );
    // The end is logged just after the request is recorded done.
    support::wait_for_log(&logs, "erasure request done", TIMEOUT).await;
    let (status, _) = support::sigterm_and_wait(&mut standalone).await;
    let logs = logs.lock().unwrap().clone();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("erasure request: hour erased and recomputed"), "progress is logged:\n{logs}");
    assert!(logs.contains("erasure request done"), "the end is logged:\n{logs}");
    let first_logs = first_logs.lock().unwrap().clone();
    for output in [&first_logs, &logs] {
        assert!(!output.contains(USER) && !output.contains(SALT), "the user id or the salt is logged");
    }

    let crashed = check_erased(data_dir.path(), &sent, &hours).await;
    assert_eq!(crashed, uncrashed, "the same rollups (sketches included) as the run without a crash");
}
