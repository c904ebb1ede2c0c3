//! A query service over real Postgres and CQL, holding generated events rolled up by the real aggregator,
//! and brute-force answers computed from the same events.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::DateTime;
use hourglass_aggregator::AggregatorConfig;
use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::hll::HyperLogLog;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_grpc::auth::{Authenticator, KeyCacheConfig};
use hourglass_grpc::server::ServerConfig;
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresKeyStore, PostgresRollupStore, testing};
use hourglass_proto::log::v1::{EventBatchRecord, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::query_service_client::QueryServiceClient;
use hourglass_proto::v1::{Event, PropertyValue, RejectionReason, TimeRange, property_value};
use hourglass_query::page_token::PageTokens;
use hourglass_query::service::QueryServiceImpl;
use hourglass_query::{QueryConfig, QueryServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const EVENT_TYPES: [&str; 5] = ["checkout", "click", "search", "signup", "view"];

pub fn at(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text).unwrap().timestamp()
}

/// Hours with data: across a month boundary (October → November) and an ISO week boundary (Monday
/// 2026-11-02), so daily, weekly and monthly reports each cut somewhere.
pub fn data_hours() -> Vec<i64> {
    [
        "2026-10-31T23:00:00Z",
        "2026-11-01T00:00:00Z",
        "2026-11-01T23:00:00Z",
        "2026-11-02T00:00:00Z",
        "2026-11-02T01:00:00Z",
    ]
    .into_iter()
    .map(at)
    .collect()
}

/// The aggregator of these tests: its raw retention reaches back far enough that [`data_hours`], fixed
/// dates, are never past the aggregator's horizon (with the default 30 days they were, from 29 days after
/// the first of them, and every report came up an hour short). The rows themselves are written now, and
/// the CQL table's TTL counts from the write, so they are all there however old their hours are.
pub fn aggregator_config() -> AggregatorConfig {
    let mut config = AggregatorConfig::with_defaults();
    config.raw_retention = hourglass_core::retention::RawRetention::from_days(3650);
    config
}

pub fn range(start: i64, end: i64) -> Option<TimeRange> {
    Some(TimeRange {
        start: Some(Timestamp { seconds: start, nanos: 0 }),
        end: Some(Timestamp { seconds: end, nanos: 0 }),
    })
}

/// acme's rejected events, as (index in [`data_hours`], reason, events): two reasons in one hour, one in
/// another, the rest of the hours without rejections.
pub const ACME_REJECTIONS: [(usize, RejectionReason, u32); 4] = [
    (1, RejectionReason::EventTypeEmpty, 2),
    (1, RejectionReason::PropertyNameInvalid, 5),
    (2, RejectionReason::PropertyTypeMismatch, 3),
    (3, RejectionReason::OccurredAtTooOld, 1),
];

/// What acme's tracking plan (version 2) found, in the batch of `ACME_REJECTIONS`: (hour index, event
/// type, rule, rejected, events); the rejected ones are also in `ACME_REJECTIONS`. A rule of
/// REJECTION_REASON_UNSPECIFIED counts the events checked.
pub const ACME_PLAN_CHECKS: [(usize, &str, RejectionReason, bool, u32); 3] = [
    (2, "", RejectionReason::Unspecified, false, 7),
    (2, "checkout", RejectionReason::PropertyTypeMismatch, true, 3),
    (2, "view", RejectionReason::PropertyUndeclared, false, 4),
];

/// One event per (hour, n): types and users cycle with different periods so every (hour, type) has its
/// own counts; every third event has a price (multiples of 1/4, so sums are exact in any order).
pub fn generate(customer: &str, hours: &[i64], per_hour: u32) -> Vec<Event> {
    let mut events = Vec::new();
    for (hour_index, hour) in hours.iter().enumerate() {
        for n in 0..per_hour + hour_index as u32 * 17 {
            let event_type =
                if customer == "acme" { EVENT_TYPES[(n as usize * 7 + hour_index) % 5] } else { "globex_secret" };
            let mut properties = BTreeMap::new();
            if n % 3 == 0 {
                let price = f64::from(n % 41) / 4.0;
                properties
                    .insert("price".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(price)) });
            }
            properties.insert(
                "plan".to_owned(),
                PropertyValue { kind: Some(property_value::Kind::StringValue("pro".into())) },
            );
            events.push(Event {
                event_id: format!("{customer}-{hour_index}-{n}"),
                event_type: event_type.to_owned(),
                occurred_at: Some(Timestamp { seconds: hour + i64::from(n % 3600), nanos: 0 }),
                // Every 11th event has no user.
                user_id: (n % 11 != 0).then(|| format!("user-{}", (n * 13 + hour_index as u32) % 97)),
                properties,
            });
        }
    }
    events
}

/// Exact figures of one (hour, event type), from the events themselves.
#[derive(Debug, Default)]
pub struct Expected {
    pub event_ids: BTreeSet<String>,
    pub users: BTreeSet<String>,
    pub prices: BTreeMap<String, f64>,
}

pub fn brute_force(events: &[Event]) -> BTreeMap<(i64, String), Expected> {
    let mut expected: BTreeMap<(i64, String), Expected> = BTreeMap::new();
    for event in events {
        let hour = hourglass_core::hour::hour_start(event.occurred_at.as_ref().unwrap().seconds);
        let entry = expected.entry((hour, event.event_type.clone())).or_default();
        entry.event_ids.insert(event.event_id.clone());
        entry.users.extend(event.user_id.clone());
        if let Some(property_value::Kind::NumberValue(price)) =
            event.properties.get("price").and_then(|value| value.kind.clone())
        {
            entry.prices.insert(event.event_id.clone(), price);
        }
    }
    expected
}

pub fn sketch_estimate(users: &BTreeSet<String>) -> u64 {
    let mut sketch = HyperLogLog::new();
    users.iter().for_each(|user| sketch.insert(user.as_bytes()));
    sketch.estimate()
}

pub struct Platform {
    pub addr: SocketAddr,
    pub acme_events: Vec<Event>,
    pub globex_events: Vec<Event>,
    pub acme_key: String,
    pub acme_ingest_key: String,
    pub globex_key: String,
    pub shutdown: CancellationToken,
    pub cql: hourglass_cql::CqlConfig,
    pub database_url: String,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn record(customer: &str, batch: usize, events: Vec<Event>, outcomes: Vec<OutcomeCount>) -> EventBatchRecord {
    EventBatchRecord {
        customer_id: customer.into(),
        received_at_unix_ms: 0,
        batch_id: format!("{customer}-batch-{batch}"),
        collector_id: "test".into(),
        events,
        outcomes,
        plan_checks: Vec::new(),
    }
}

/// Stores generated events of two customers (with a redelivered batch and resent events), rolls them up
/// with the real aggregator, and serves queries on a free port.
pub async fn start(test_name: &str) -> Platform {
    let (cql, raw_store) = hourglass_cql::testing::create_test_store(test_name, 4).await;
    let database_url = testing::create_test_database(test_name).await;
    let pool = PostgresConfig::for_url(database_url.clone()).open().await.unwrap();
    let key_store = PostgresKeyStore::new(pool.clone());
    let job_queue = PostgresJobQueue::new(pool.clone());
    let rollups = PostgresRollupStore::new(pool.clone());

    let hours = data_hours();
    let acme_events = generate("acme", &hours, 120);
    let globex_events = generate("globex", &hours, 30);
    let mut records = Vec::new();
    for (customer, events) in [("acme", &acme_events), ("globex", &globex_events)] {
        for (index, chunk) in events.chunks(50).enumerate() {
            let accepted: Vec<OutcomeCount> = chunk
                .iter()
                .map(|event| hourglass_core::hour::hour_start(event.occurred_at.as_ref().unwrap().seconds))
                .fold(BTreeMap::<i64, u32>::new(), |mut by_hour, hour| {
                    *by_hour.entry(hour).or_default() += 1;
                    by_hour
                })
                .into_iter()
                .map(|(hour_start_unix_secs, count)| OutcomeCount {
                    hour_start_unix_secs,
                    outcome: hourglass_proto::log::v1::Outcome::Accepted.into(),
                    count,
                    ..Default::default()
                })
                .collect();
            records.push(record(customer, index, chunk.to_vec(), accepted));
        }
    }
    // A batch whose events were all rejected: nothing stored, its outcomes in the ledger.
    let rejections = ACME_REJECTIONS
        .iter()
        .map(|(hour_index, reason, count)| OutcomeCount {
            hour_start_unix_secs: hours[*hour_index],
            outcome: hourglass_proto::log::v1::Outcome::Rejected.into(),
            reason: (*reason).into(),
            count: *count,
        })
        .collect();
    let plan_checks = ACME_PLAN_CHECKS
        .iter()
        .map(|(hour_index, event_type, rule, rejected, count)| hourglass_proto::log::v1::PlanCheckCount {
            hour_start_unix_secs: hours[*hour_index],
            plan_version: 2,
            event_type: (*event_type).to_owned(),
            rule: (*rule).into(),
            rejected: *rejected,
            count: *count,
        })
        .collect();
    records.push(EventBatchRecord { plan_checks, ..record("acme", 998, vec![], rejections) });
    // A redelivered record, and a client resend of a few events in a new batch: counted once.
    records.push(records[0].clone());
    records.push(record("acme", 999, acme_events[10..15].to_vec(), vec![]));
    raw_store.write_records(&RecordView::from_records(&records)).await.unwrap();

    let mut dirty = BTreeSet::new();
    for customer in ["acme", "globex"] {
        for hour in &hours {
            dirty.insert(CustomerHour { customer_id: CustomerId::new(customer).unwrap(), hour_start: *hour });
        }
    }
    job_queue.mark_dirty(&dirty.into_iter().collect::<Vec<_>>()).await.unwrap();
    let config = aggregator_config();
    let now = chrono::Utc::now().timestamp();
    while hourglass_aggregator::run_once(&config, "test-worker", &raw_store, &rollups, now).await.unwrap() > 0 {}

    let acme_key = key_store.create_key(&CustomerId::new("acme").unwrap(), Scope::Query, "reports").await.unwrap();
    let acme_ingest_key = key_store.create_key(&CustomerId::new("acme").unwrap(), Scope::Ingest, "app").await.unwrap();
    let globex_key = key_store.create_key(&CustomerId::new("globex").unwrap(), Scope::Query, "reports").await.unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let config = QueryServerConfig {
        query: QueryConfig { page_token_secret: Some("test secret".into()), ..QueryConfig::with_defaults() },
        server: hourglass_config::defaults::<ServerConfig>(),
        key_cache: hourglass_config::defaults::<KeyCacheConfig>(),
    };
    tokio::spawn(hourglass_query::run(
        config,
        Arc::new(key_store),
        Arc::new(rollups),
        Arc::new(raw_store),
        listener,
        shutdown.clone(),
    ));
    Platform {
        addr,
        acme_events,
        globex_events,
        acme_key: acme_key.expose_secret().to_owned(),
        acme_ingest_key: acme_ingest_key.expose_secret().to_owned(),
        globex_key: globex_key.expose_secret().to_owned(),
        shutdown,
        cql,
        database_url,
    }
}

impl Platform {
    /// Stores late events of `customer` (ids not seen before) and rolls their hours up again, as the
    /// ingestor and the aggregator would.
    pub async fn ingest_late(&self, customer: &str, events: Vec<Event>) {
        let raw_store = hourglass_cql::CqlRawStore::connect(&self.cql).await.unwrap();
        let pool = PostgresConfig::for_url(self.database_url.clone()).open().await.unwrap();
        let hours: BTreeSet<i64> = events
            .iter()
            .map(|event| hourglass_core::hour::hour_start(event.occurred_at.as_ref().unwrap().seconds))
            .collect();
        raw_store.write_records(&RecordView::from_records(&[record(customer, 5000, events, vec![])])).await.unwrap();
        let marks: Vec<CustomerHour> = hours
            .into_iter()
            .map(|hour_start| CustomerHour { customer_id: CustomerId::new(customer).unwrap(), hour_start })
            .collect();
        PostgresJobQueue::new(pool.clone()).mark_dirty(&marks).await.unwrap();
        let rollups = PostgresRollupStore::new(pool);
        let config = aggregator_config();
        let now = chrono::Utc::now().timestamp();
        while hourglass_aggregator::run_once(&config, "late-worker", &raw_store, &rollups, now).await.unwrap() > 0 {}
    }

    /// The service over this platform's stores in process, called directly rather than over gRPC, so a
    /// test can look at the encoded responses it hands the transport.
    pub async fn service(
        &self,
        config: QueryConfig,
    ) -> QueryServiceImpl<PostgresKeyStore, PostgresRollupStore, hourglass_cql::CqlRawStore> {
        let pool = PostgresConfig::for_url(self.database_url.clone()).open().await.unwrap();
        let key_store = Arc::new(PostgresKeyStore::new(pool.clone()));
        let authenticator = Arc::new(Authenticator::new(key_store, hourglass_config::defaults::<KeyCacheConfig>()));
        let raw_store = hourglass_cql::CqlRawStore::connect(&self.cql).await.unwrap();
        QueryServiceImpl::new(
            authenticator,
            Arc::new(PostgresRollupStore::new(pool)),
            Arc::new(raw_store),
            config,
            PageTokens::new(b"test secret"),
        )
    }

    pub async fn client(&self) -> QueryServiceClient<Channel> {
        let endpoint = format!("http://{}", self.addr);
        for _ in 0..50 {
            if let Ok(client) = QueryServiceClient::connect(endpoint.clone()).await {
                return client;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("query service did not start on {endpoint}");
    }
}

/// A query service with no data, on a database and keyspace of the test's own, for tests of what
/// surrounds the reports (keys, health) rather than the reports themselves.
pub struct EmptyService {
    pub addr: SocketAddr,
    pub key_store: PostgresKeyStore,
    pub cql: hourglass_cql::CqlConfig,
    pub shutdown: CancellationToken,
}

impl Drop for EmptyService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves queries on a free port from the Postgres at `database_url` (migrated here) and a fresh
/// keyspace, with the given key cache and server settings.
pub async fn start_empty(
    test_name: &str,
    database_url: &str,
    key_cache: KeyCacheConfig,
    server: ServerConfig,
) -> EmptyService {
    let (cql, raw_store) = hourglass_cql::testing::create_test_store(test_name, 4).await;
    let pool = PostgresConfig::for_url(database_url).open().await.unwrap();
    let key_store = PostgresKeyStore::new(pool.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let config = QueryServerConfig {
        query: QueryConfig { page_token_secret: Some("test secret".into()), ..QueryConfig::with_defaults() },
        server,
        key_cache,
    };
    tokio::spawn(hourglass_query::run(
        config,
        Arc::new(key_store.clone()),
        Arc::new(PostgresRollupStore::new(pool)),
        Arc::new(raw_store),
        listener,
        shutdown.clone(),
    ));
    EmptyService { addr, key_store, cql, shutdown }
}

impl EmptyService {
    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }
}

/// A channel to the service at `addr`, once it accepts connections.
async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..50 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("query service did not start on {addr}");
}

/// A request carrying `key` as its bearer token.
pub fn authorized<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// Waits until `condition` holds, failing after 30 s (a bound for a loaded machine, not a timing claim).
pub async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
