//! `hourglass.admin.v1.AdminService` over gRPC on standalone's stores (tier b: real SQLite files, a real
//! server on a free port): only admin keys of the customer are served (missing key UNAUTHENTICATED, ingest
//! and query keys PERMISSION_DENIED, another customer PERMISSION_DENIED or NOT_FOUND); a dry run lists the
//! hours and counts and records nothing; a request is recorded once per person, run by the aggregator's
//! erasure job, and GetErasure follows it to `done` with each hour's revision; ListErasures pages; without
//! a salt RequestErasure is FAILED_PRECONDITION naming the flag. The user id appears in no response.

use std::net::SocketAddr;
use std::sync::Arc;

use hourglass_aggregator::AggregatorConfig;
use hourglass_aggregator::erasure;
use hourglass_config::ErasureConfig;
use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::ErasureSalt;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_core::retention::RawRetention;
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_grpc::GrpcServer;
use hourglass_grpc::auth::{Authenticator, KeyCacheConfig};
use hourglass_grpc::server::ServerConfig;
use hourglass_proto::admin::v1::admin_service_client::AdminServiceClient;
use hourglass_proto::admin::v1::{
    ErasureState, GetErasureRequest, ListErasuresRequest, RequestErasureRequest, RequestErasureResponse,
};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;
use hourglass_query::admin::AdminServiceImpl;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

const SALT: &str = "the admin service test's salt";
const ERASED_USER: &str = "jane-doe-4471";

struct Stores {
    _data_dir: tempfile::TempDir,
    meta: Arc<SqliteMetaStore>,
    raw: Arc<SqliteRawStore>,
}

async fn stores() -> Stores {
    let data_dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(SqliteMetaStore::open(data_dir.path()).await.unwrap());
    let raw = Arc::new(SqliteRawStore::open(data_dir.path(), 2).await.unwrap());
    Stores { _data_dir: data_dir, meta, raw }
}

/// Serves the admin service alone on a free port; `salt` as `--erasure-salt`.
async fn serve(stores: &Stores, salt: Option<&str>, shutdown: &CancellationToken) -> SocketAddr {
    let key_cache = hourglass_config::defaults::<KeyCacheConfig>();
    let erasure_config = ErasureConfig { salt: salt.map(str::to_owned), suppress_days: 30 };
    let admin = AdminServiceImpl::new(
        Arc::new(Authenticator::new(Arc::clone(&stores.meta), key_cache)),
        Arc::clone(&stores.meta),
        Arc::clone(&stores.raw),
        Arc::clone(&stores.meta),
        &erasure_config,
        RawRetention::from_days(30),
    )
    .unwrap();
    let server = hourglass_query::add_admin(GrpcServer::new(hourglass_config::defaults::<ServerConfig>()), admin);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = shutdown.clone();
    tokio::spawn(async move { server.serve(listener, shutdown).await });
    addr
}

async fn client(addr: SocketAddr) -> AdminServiceClient<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..50 {
        if let Ok(channel) = endpoint.connect().await {
            return AdminServiceClient::new(channel);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("admin service did not start on {addr}");
}

fn authorized<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn erase(user_id: &str, dry_run: bool) -> RequestErasureRequest {
    RequestErasureRequest { customer_id: String::new(), user_id: user_id.into(), dry_run }
}

/// Two closed hours of acme's events, 4 of them the erased user's in the first hour and 2 in the second.
async fn write_events(stores: &Stores, hours: [i64; 2]) {
    let mut records = Vec::new();
    for (hour_index, hour_start) in hours.iter().enumerate() {
        let events: Vec<Event> = (0..12)
            .map(|index| Event {
                event_id: format!("h{hour_index}-e{index}"),
                event_type: "view".into(),
                occurred_at: Some(Timestamp { seconds: hour_start + index * 60, nanos: 0 }),
                user_id: Some(match index % (3 * (hour_index as i64 + 1)) {
                    0 => ERASED_USER.to_owned(),
                    other => format!("user-{other}"),
                }),
                properties: Default::default(),
            })
            .collect();
        records.push(EventBatchRecord {
            customer_id: "acme".into(),
            received_at_unix_ms: (hour_start + 3000) * 1000,
            batch_id: format!("batch-{hour_index}"),
            collector_id: "test".into(),
            events,
            outcomes: Vec::new(),
            plan_checks: Vec::new(),
        });
    }
    stores.raw.write_records(&RecordView::from_records(&records)).await.unwrap();
    let acme = CustomerId::new("acme").unwrap();
    let marks: Vec<CustomerHour> =
        hours.iter().map(|hour_start| CustomerHour { customer_id: acme.clone(), hour_start: *hour_start }).collect();
    stores.meta.mark_dirty(&marks).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_requests_over_grpc_for_admin_keys_of_the_customer_only() {
    let stores = stores().await;
    let shutdown = CancellationToken::new();
    let addr = serve(&stores, Some(SALT), &shutdown).await;
    let mut admin = client(addr).await;
    let acme = CustomerId::new("acme").unwrap();
    let globex = CustomerId::new("globex").unwrap();
    let acme_admin = stores.meta.create_key(&acme, Scope::Admin, "admin").await.unwrap();
    let acme_query = stores.meta.create_key(&acme, Scope::Query, "query").await.unwrap();
    let acme_ingest = stores.meta.create_key(&acme, Scope::Ingest, "ingest").await.unwrap();
    let globex_admin = stores.meta.create_key(&globex, Scope::Admin, "admin").await.unwrap();
    let key = acme_admin.expose_secret();
    let now = chrono::Utc::now().timestamp();
    let current_hour = hourglass_core::hour::hour_start(now);
    let hours = [current_hour - 3 * 3600, current_hour - 2 * 3600];
    write_events(&stores, hours).await;

    // Keys: missing, other scopes, another customer.
    let missing = admin.request_erasure(tonic::Request::new(erase(ERASED_USER, true))).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    for other_scope in [&acme_query, &acme_ingest] {
        let refused = admin.request_erasure(authorized(other_scope.expose_secret(), erase(ERASED_USER, true))).await;
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
        let refused =
            admin.list_erasures(authorized(other_scope.expose_secret(), ListErasuresRequest::default())).await;
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    }
    let other_customer = RequestErasureRequest { customer_id: "globex".into(), ..erase(ERASED_USER, false) };
    let refused = admin.request_erasure(authorized(key, other_customer)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("own customer"), "{}", refused.message());
    let no_user = admin.request_erasure(authorized(key, erase("", false))).await.unwrap_err();
    assert_eq!(no_user.code(), Code::InvalidArgument);

    // A dry run lists the hours and counts, and records nothing.
    let dry = admin.request_erasure(authorized(key, erase(ERASED_USER, true))).await.unwrap().into_inner();
    let dry_hours: Vec<(i64, u64, bool)> =
        dry.dry_run_hours.iter().map(|hour| (hour.hour_start.unwrap().seconds, hour.events, hour.done)).collect();
    assert_eq!(dry_hours, [(hours[0], 4, false), (hours[1], 2, false)]);
    assert!(dry.erasure.is_none() && dry.dry_run_past_horizon_hours.is_empty(), "{dry:?}");
    let listed = admin.list_erasures(authorized(key, ListErasuresRequest::default())).await.unwrap().into_inner();
    assert!(listed.erasures.is_empty(), "a dry run records nothing: {listed:?}");

    // The request, recorded once per person, and nothing planned until a worker runs it.
    let requested = admin.request_erasure(authorized(key, erase(ERASED_USER, false))).await.unwrap().into_inner();
    let erasure_id = requested.erasure.as_ref().unwrap().request_id.clone();
    assert_eq!(requested.erasure.as_ref().unwrap().state(), ErasureState::Pending);
    assert_eq!(requested.erasure.as_ref().unwrap().customer_id, "acme");
    assert!(!format!("{requested:?}").contains(ERASED_USER), "the user id is never answered back");
    let again = admin.request_erasure(authorized(key, erase(ERASED_USER, false))).await.unwrap().into_inner();
    assert_eq!(again.erasure.unwrap().request_id, erasure_id, "asking twice erases once");
    let pending = get(&mut admin, key, &erasure_id).await;
    assert!(pending.hours.is_empty() && pending.hours_done == 0, "{pending:?}");
    let hidden = admin
        .get_erasure(authorized(globex_admin.expose_secret(), GetErasureRequest { request_id: erasure_id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "another customer's request does not exist for this key");

    // The aggregator's erasure job runs it; GetErasure follows it to the end.
    let config = AggregatorConfig { worker_id: Some("admin-test".into()), ..AggregatorConfig::with_defaults() };
    let salt = ErasureSalt::new(SALT).unwrap();
    let lease = erasure::lease_next(&config, &*stores.meta).await.unwrap().expect("the request waits for a worker");
    assert_eq!(lease.request.id, erasure_id);
    erasure::run_request(&config, &salt, &*stores.raw, &*stores.meta, &*stores.meta, &lease, now, |_| {})
        .await
        .unwrap();
    let done = get(&mut admin, key, &erasure_id).await;
    let erasure = done.erasure.as_ref().unwrap();
    assert_eq!(erasure.state(), ErasureState::Done);
    assert!(erasure.finished_at.is_some() && erasure.suppress_until.unwrap().seconds > now + 29 * 86_400);
    let done_hours: Vec<(i64, u64, bool)> =
        done.hours.iter().map(|hour| (hour.hour_start.unwrap().seconds, hour.events, hour.done)).collect();
    assert_eq!(done_hours, [(hours[0], 4, true), (hours[1], 2, true)]);
    assert!(done.hours.iter().all(|hour| hour.revision >= 1), "{done:?}");
    assert_eq!((done.hours_done, done.events), (2, 6));
    let dry_after = admin.request_erasure(authorized(key, erase(ERASED_USER, true))).await.unwrap().into_inner();
    assert!(dry_after.dry_run_hours.is_empty(), "nothing of the user is left: {dry_after:?}");

    // ListErasures pages through the customer's requests, oldest first, and shows no other customer's.
    let mut ids = vec![erasure_id];
    for user in ["user-1", "user-2"] {
        let recorded = admin.request_erasure(authorized(key, erase(user, false))).await.unwrap().into_inner();
        ids.push(recorded.erasure.unwrap().request_id);
    }
    let globex_request = admin
        .request_erasure(authorized(globex_admin.expose_secret(), erase(ERASED_USER, false)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(globex_request.erasure.unwrap().customer_id, "globex");
    let first = admin
        .list_erasures(authorized(key, ListErasuresRequest { page_size: 2, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let second = admin
        .list_erasures(authorized(
            key,
            ListErasuresRequest { page_size: 2, page_token: first.next_page_token.clone(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(second.next_page_token.is_empty(), "the last page");
    let listed: Vec<String> = first.erasures.iter().chain(&second.erasures).map(|e| e.request_id.clone()).collect();
    assert_eq!(listed, ids);
    let foreign_token = ListErasuresRequest { page_token: "not-a-request".into(), ..Default::default() };
    assert_eq!(admin.list_erasures(authorized(key, foreign_token)).await.unwrap_err().code(), Code::InvalidArgument);
    let too_big = ListErasuresRequest { page_size: 1_001, ..Default::default() };
    assert_eq!(admin.list_erasures(authorized(key, too_big)).await.unwrap_err().code(), Code::InvalidArgument);
    shutdown.cancel();
}

async fn get(
    admin: &mut AdminServiceClient<Channel>,
    key: &str,
    request_id: &str,
) -> hourglass_proto::admin::v1::GetErasureResponse {
    admin.get_erasure(authorized(key, GetErasureRequest { request_id: request_id.into() })).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_salt_erasure_requests_fail_naming_the_flag() {
    let stores = stores().await;
    let shutdown = CancellationToken::new();
    let addr = serve(&stores, None, &shutdown).await;
    let mut admin = client(addr).await;
    let key = stores.meta.create_key(&CustomerId::new("acme").unwrap(), Scope::Admin, "admin").await.unwrap();
    for dry_run in [true, false] {
        let refused: Result<tonic::Response<RequestErasureResponse>, _> =
            admin.request_erasure(authorized(key.expose_secret(), erase(ERASED_USER, dry_run))).await;
        let status = refused.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("--erasure-salt"), "{}", status.message());
    }
    // Reading needs no salt.
    let listed = admin.list_erasures(authorized(key.expose_secret(), ListErasuresRequest::default())).await.unwrap();
    assert!(listed.into_inner().erasures.is_empty());
    shutdown.cancel();
}
