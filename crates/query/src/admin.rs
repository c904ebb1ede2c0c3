//! The `hourglass.admin.v1.AdminService` implementation: erasure requests over gRPC (issue 28).
//!
//! Every call authenticates first with scope `admin`. Keys belong to one customer (`api_key`,
//! `keys create --customer C --scope admin`), so an admin key acts on its own customer only: a request
//! naming another customer is refused with PERMISSION_DENIED, and a request id of another customer is
//! answered NOT_FOUND, as if it did not exist. Ingest and query keys are refused with PERMISSION_DENIED,
//! a missing or unknown key with UNAUTHENTICATED, as the query service does.
//!
//! The service only records a request ([`ErasureStore::request_erasure`]); the aggregator role, or
//! standalone's aggregator, leases and runs it in the background (`hourglass_aggregator::erasure`), and
//! `GetErasure` follows it. A dry run scans the customer's hours here
//! ([`find_user_hours`]) and records nothing. The user id is hashed with the salt as soon as the request
//! is read, and is neither stored nor logged.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use hourglass_config::ErasureConfig;
use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{
    ErasureHour, ErasureRequest, ErasureSalt, ErasureState, ErasureStore, SaltTooShort, UserHash, UserMatcher,
    find_user_hours,
};
use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::RawStore;
use hourglass_core::retention::RawRetention;
use hourglass_core::rollup_store::RollupStore;
use hourglass_grpc::auth::{Authenticator, Principal};
use hourglass_proto::admin::v1::admin_service_server::{AdminService, AdminServiceServer};
use hourglass_proto::admin::v1::{
    Erasure, ErasureHour as ProtoErasureHour, ErasureState as ProtoErasureState, GetErasureRequest, GetErasureResponse,
    ListErasuresRequest, ListErasuresResponse, RequestErasureRequest, RequestErasureResponse,
};
use hourglass_proto::prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::error::QueryError;

/// `ListErasures`'s page size when a request leaves it 0.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// `ListErasures`'s largest page.
const MAX_PAGE_SIZE: u32 = 1_000;

/// The service name health is reported under and reflection lists.
pub const ADMIN_SERVICE_NAME: &str = hourglass_proto::admin::v1::admin_service_server::SERVICE_NAME;

/// The admin service over a key store, the erasure store, and the raw and rollup stores a dry run scans.
pub struct AdminServiceImpl<K, E, W, S> {
    authenticator: Arc<Authenticator<K>>,
    erasure_store: Arc<E>,
    raw_store: Arc<W>,
    rollup_store: Arc<S>,
    salt: Option<ErasureSalt>,
    suppress_days: u32,
    raw_retention: RawRetention,
}

impl<K: KeyStore, E: ErasureStore, W: RawStore, S: RollupStore> AdminServiceImpl<K, E, W, S> {
    /// The service with `erasure`'s salt (refused when set but too short; when unset, erasure requests
    /// are answered FAILED_PRECONDITION) and the raw store's retention, which decides the hours a dry run
    /// lists as past their horizon.
    pub fn new(
        authenticator: Arc<Authenticator<K>>,
        erasure_store: Arc<E>,
        raw_store: Arc<W>,
        rollup_store: Arc<S>,
        erasure: &ErasureConfig,
        raw_retention: RawRetention,
    ) -> Result<Self, SaltTooShort> {
        let salt = erasure.salt.as_deref().map(ErasureSalt::new).transpose()?;
        if salt.is_none() {
            tracing::warn!("no --erasure-salt: the admin service refuses erasure requests (FAILED_PRECONDITION)");
        }
        Ok(Self {
            authenticator,
            erasure_store,
            raw_store,
            rollup_store,
            salt,
            suppress_days: erasure.suppress_days,
            raw_retention,
        })
    }

    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Arc<Principal>, QueryError> {
        Ok(self.authenticator.authenticate(request.metadata(), Scope::Admin).await?)
    }

    async fn request_erasure(
        &self,
        request: Request<RequestErasureRequest>,
    ) -> Result<RequestErasureResponse, QueryError> {
        let principal = self.authenticate(&request).await?;
        let RequestErasureRequest { customer_id, user_id, dry_run } = request.into_inner();
        let customer_id = own_customer(&principal, &customer_id)?;
        if user_id.is_empty() {
            return Err(QueryError::invalid("user_id", "is required"));
        }
        let salt = self.salt.as_ref().ok_or(QueryError::NoErasureSalt)?;
        // From here on only the hash names the person.
        let user_hash = UserHash::of(salt, customer_id.as_str(), &user_id);
        drop(user_id);
        if dry_run {
            let matcher = UserMatcher::new(salt, customer_id, user_hash);
            let now_unix = Utc::now().timestamp();
            let found = find_user_hours(
                &*self.raw_store,
                &*self.rollup_store,
                &self.raw_retention,
                &matcher,
                now_unix,
                |_, _| {},
            )
            .await?;
            return Ok(RequestErasureResponse {
                erasure: None,
                dry_run_hours: found.hours.iter().map(proto_hour).collect(),
                dry_run_past_horizon_hours: found.past_horizon.iter().map(proto_hour).collect(),
            });
        }
        let suppress_until = Utc::now() + TimeDelta::days(i64::from(self.suppress_days));
        let recorded = self.erasure_store.request_erasure(&customer_id, user_hash, suppress_until).await?;
        tracing::info!(
            request_id = %recorded.id,
            customer_id = %recorded.customer_id,
            key_id = %principal.key_id,
            state = %recorded.state,
            "erasure requested"
        );
        Ok(RequestErasureResponse {
            erasure: Some(proto_erasure(&recorded)),
            dry_run_hours: Vec::new(),
            dry_run_past_horizon_hours: Vec::new(),
        })
    }

    async fn get_erasure(&self, request: Request<GetErasureRequest>) -> Result<GetErasureResponse, QueryError> {
        let principal = self.authenticate(&request).await?;
        let request_id = request.into_inner().request_id;
        if request_id.is_empty() {
            return Err(QueryError::invalid("request_id", "is required"));
        }
        let not_found = || QueryError::NotFound(format!("no erasure request {request_id} of this key's customer"));
        let recorded = self.erasure_store.erasure(&request_id).await?.ok_or_else(not_found)?;
        // Another customer's request is answered as one that does not exist: ids are not secrets, but
        // whether another customer asked for an erasure is not this key's business.
        if recorded.customer_id != principal.customer_id {
            return Err(not_found());
        }
        let hours = self.erasure_store.erasure_hours(&request_id).await?;
        let hours_done = hours.iter().filter(|hour| hour.revision.is_some()).count();
        Ok(GetErasureResponse {
            erasure: Some(proto_erasure(&recorded)),
            hours_done: u32::try_from(hours_done).unwrap_or(u32::MAX),
            events: hours.iter().map(|hour| hour.events).sum(),
            hours: hours.iter().map(proto_hour).collect(),
        })
    }

    async fn list_erasures(&self, request: Request<ListErasuresRequest>) -> Result<ListErasuresResponse, QueryError> {
        let principal = self.authenticate(&request).await?;
        let ListErasuresRequest { customer_id, page_size, page_token } = request.into_inner();
        let customer_id = own_customer(&principal, &customer_id)?;
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(QueryError::invalid("page_size", format!("must be at most {MAX_PAGE_SIZE}")));
            }
            size => size,
        } as usize;
        // Requests are never deleted and are listed in a fixed order (requested at, then id): the token
        // is the last id of the previous page, and the next page starts after it.
        let requests = self.erasure_store.list_erasures(Some(&customer_id)).await?;
        let start = match page_token.as_str() {
            "" => 0,
            last_id => requests
                .iter()
                .position(|recorded| recorded.id == last_id)
                .map(|position| position + 1)
                .ok_or_else(|| QueryError::invalid("page_token", "is not a token of this customer's requests"))?,
        };
        let after = requests.iter().skip(start);
        let page: Vec<&ErasureRequest> = after.take(page_size + 1).collect();
        let more = page.len() > page_size;
        let page = &page[..page.len().min(page_size)];
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        Ok(ListErasuresResponse {
            erasures: page.iter().map(|recorded| proto_erasure(recorded)).collect(),
            next_page_token,
        })
    }
}

/// The customer a call acts on: the key's, which an empty `customer_id` means; any other is refused.
fn own_customer(principal: &Principal, customer_id: &str) -> Result<CustomerId, QueryError> {
    if customer_id.is_empty() || customer_id == principal.customer_id.as_str() {
        return Ok(principal.customer_id.clone());
    }
    Err(QueryError::PermissionDenied(format!(
        "API key {} belongs to customer {}; an admin key acts on its own customer only",
        principal.key_id, principal.customer_id
    )))
}

fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

fn proto_state(state: ErasureState) -> ProtoErasureState {
    match state {
        ErasureState::Pending => ProtoErasureState::Pending,
        ErasureState::Erasing => ProtoErasureState::Erasing,
        ErasureState::Done => ProtoErasureState::Done,
    }
}

fn proto_erasure(request: &ErasureRequest) -> Erasure {
    Erasure {
        request_id: request.id.clone(),
        customer_id: request.customer_id.as_str().to_owned(),
        state: proto_state(request.state).into(),
        requested_at: Some(timestamp(request.requested_at)),
        suppress_until: Some(timestamp(request.suppress_until)),
        finished_at: request.finished_at.map(timestamp),
    }
}

fn proto_hour(hour: &ErasureHour) -> ProtoErasureHour {
    ProtoErasureHour {
        hour_start: Some(Timestamp { seconds: hour.customer_hour.hour_start, nanos: 0 }),
        events: hour.events,
        revision: hour.revision.unwrap_or(0),
        done: hour.revision.is_some(),
    }
}

#[tonic::async_trait]
impl<K: KeyStore, E: ErasureStore, W: RawStore, S: RollupStore> AdminService for AdminServiceImpl<K, E, W, S> {
    async fn request_erasure(
        &self,
        request: Request<RequestErasureRequest>,
    ) -> Result<Response<RequestErasureResponse>, Status> {
        crate::service::observed("RequestErasure", self.request_erasure(request)).await.map(Response::new)
    }

    async fn get_erasure(&self, request: Request<GetErasureRequest>) -> Result<Response<GetErasureResponse>, Status> {
        crate::service::observed("GetErasure", self.get_erasure(request)).await.map(Response::new)
    }

    async fn list_erasures(
        &self,
        request: Request<ListErasuresRequest>,
    ) -> Result<Response<ListErasuresResponse>, Status> {
        crate::service::observed("ListErasures", self.list_erasures(request)).await.map(Response::new)
    }
}

/// `service` as tonic serves it: the admin calls are small, so the server's message limits are the only
/// settings.
pub fn admin_server<K: KeyStore, E: ErasureStore, W: RawStore, S: RollupStore>(
    service: AdminServiceImpl<K, E, W, S>,
    max_message_bytes: usize,
) -> AdminServiceServer<AdminServiceImpl<K, E, W, S>> {
    AdminServiceServer::new(service)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}
