//! [`PostgresErasureStore`]: per-user erasure requests and their planned hours, in Postgres
//! (`erasure_requests`, `erasure_hours`). Requests are leased like aggregation jobs: a new
//! `new_lease_token()` per lease, checked with its expiry by every write of the run holding it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{
    ErasureHour, ErasureLease, ErasureRequest, ErasureState, ErasureStore, ErasureStoreError, UserHash, new_request_id,
};
use hourglass_core::job_queue::CustomerHour;
use hourglass_core::rollup_store::LeaseToken;
use sqlx::PgPool;

use crate::errors::erasure_store_error;

/// The Postgres implementation of [`ErasureStore`].
#[derive(Clone, Debug)]
pub struct PostgresErasureStore {
    pool: PgPool,
}

impl PostgresErasureStore {
    /// An erasure store over an existing pool (whose schema is migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The columns of a request, in [`RequestRow`]'s order.
const REQUEST_COLUMNS: &str = "request_id, customer_id, user_hash, requested_at, suppress_until, state, finished_at";

type RequestRow = (String, String, Vec<u8>, DateTime<Utc>, DateTime<Utc>, String, Option<DateTime<Utc>>);

/// A leased request's row: [`RequestRow`]'s columns, then the lease's token.
type LeasedRow = (String, String, Vec<u8>, DateTime<Utc>, DateTime<Utc>, String, Option<DateTime<Utc>>, i64);

fn request_from_row(row: RequestRow) -> Result<ErasureRequest, ErasureStoreError> {
    let (id, customer_id, user_hash, requested_at, suppress_until, state, finished_at) = row;
    Ok(ErasureRequest {
        customer_id: CustomerId::new(&customer_id)
            .map_err(|error| ErasureStoreError::InvalidData(format!("erasure request {id}: {error}")))?,
        user_hash: user_hash_from_sql(&id, &user_hash)?,
        state: ErasureState::parse(&state)
            .ok_or_else(|| ErasureStoreError::InvalidData(format!("erasure request {id}: unknown state {state:?}")))?,
        id,
        requested_at,
        suppress_until,
        finished_at,
    })
}

fn user_hash_from_sql(id: &str, bytes: &[u8]) -> Result<UserHash, ErasureStoreError> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
        ErasureStoreError::InvalidData(format!("erasure request {id}: a user hash of {} bytes", bytes.len()))
    })?;
    Ok(UserHash(bytes))
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl PostgresErasureStore {
    /// Leases the oldest request [`LEASABLE`] finds (`id`'s only, when given).
    async fn lease_where(
        &self,
        id: Option<&str>,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ErasureLease>, ErasureStoreError> {
        let sql = format!(
            "UPDATE erasure_requests SET lease_owner = $2, lease_token = new_lease_token(), \
             leased_until = now() + make_interval(secs => $3) WHERE request_id = ({LEASABLE}) \
             RETURNING {REQUEST_COLUMNS}, lease_token"
        );
        let row: Option<LeasedRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(owner)
            .bind(seconds(lease))
            .fetch_optional(&self.pool)
            .await
            .map_err(erasure_store_error)?;
        let Some((request_id, customer_id, user_hash, requested_at, suppress_until, state, finished_at, token)) = row
        else {
            return Ok(None);
        };
        let request =
            request_from_row((request_id, customer_id, user_hash, requested_at, suppress_until, state, finished_at))?;
        Ok(Some(ErasureLease { request, token: LeaseToken::from_stored(token) }))
    }
}

/// A request that is not done and whose lease, if any, has expired; `$1` its id, or any when NULL.
const LEASABLE: &str = "SELECT request_id FROM erasure_requests WHERE ($1::text IS NULL OR request_id = $1) \
                        AND state <> 'done' AND (leased_until IS NULL OR leased_until < now()) \
                        ORDER BY requested_at, request_id LIMIT 1 FOR UPDATE SKIP LOCKED";

/// The lease `$1` (request id), `$2` (token) is current.
const LEASE_IS_CURRENT: &str = "request_id = $1 AND lease_token = $2 AND leased_until >= now()";

impl ErasureStore for PostgresErasureStore {
    async fn request_erasure(
        &self,
        customer_id: &CustomerId,
        user_hash: UserHash,
        suppress_until: DateTime<Utc>,
    ) -> Result<ErasureRequest, ErasureStoreError> {
        // Insert unless an open request for the person exists (the partial unique index), then read
        // whichever request is open: two concurrent requests for one person record one.
        sqlx::query(
            "INSERT INTO erasure_requests (request_id, customer_id, user_hash, suppress_until) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (customer_id, user_hash) WHERE state <> 'done' DO NOTHING",
        )
        .bind(new_request_id())
        .bind(customer_id.as_str())
        .bind(user_hash.0.as_slice())
        .bind(suppress_until)
        .execute(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        let row: RequestRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE customer_id = $1 AND user_hash = $2 \
             AND state <> 'done'"
        )))
        .bind(customer_id.as_str())
        .bind(user_hash.0.as_slice())
        .fetch_one(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        request_from_row(row)
    }

    async fn erasure(&self, id: &str) -> Result<Option<ErasureRequest>, ErasureStoreError> {
        let row: Option<RequestRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE request_id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        row.map(request_from_row).transpose()
    }

    async fn list_erasures(&self, customer_id: Option<&CustomerId>) -> Result<Vec<ErasureRequest>, ErasureStoreError> {
        let rows: Vec<RequestRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE $1::text IS NULL OR customer_id = $1 \
             ORDER BY requested_at, request_id"
        )))
        .bind(customer_id.map(CustomerId::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        rows.into_iter().map(request_from_row).collect()
    }

    async fn lease_erasure(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ErasureLease>, ErasureStoreError> {
        self.lease_where(Some(id), owner, lease).await
    }

    async fn lease_next_erasure(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ErasureLease>, ErasureStoreError> {
        self.lease_where(None, owner, lease).await
    }

    async fn renew_erasure(&self, lease: &ErasureLease, duration: Duration) -> Result<bool, ErasureStoreError> {
        let renewed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_requests SET leased_until = now() + make_interval(secs => $3) WHERE {LEASE_IS_CURRENT}"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .bind(seconds(duration))
        .execute(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        Ok(renewed.rows_affected() > 0)
    }

    async fn plan_erasure(&self, lease: &ErasureLease, hours: &[ErasureHour]) -> Result<bool, ErasureStoreError> {
        let mut transaction = self.pool.begin().await.map_err(erasure_store_error)?;
        let planned = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_requests SET state = 'erasing' WHERE {LEASE_IS_CURRENT} AND state = 'pending'"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .execute(&mut *transaction)
        .await
        .map_err(erasure_store_error)?;
        if planned.rows_affected() == 0 {
            return Ok(false);
        }
        let starts: Vec<i64> = hours.iter().map(|hour| hour.customer_hour.hour_start).collect();
        let events: Vec<i64> = hours.iter().map(|hour| i64::try_from(hour.events).unwrap_or(i64::MAX)).collect();
        sqlx::query(
            "INSERT INTO erasure_hours (request_id, customer_id, hour_start, events) \
             SELECT $1, $2, to_timestamp(hour_start), events FROM unnest($3::bigint[], $4::bigint[]) AS plan(hour_start, events)",
        )
        .bind(&lease.request.id)
        .bind(lease.request.customer_id.as_str())
        .bind(&starts)
        .bind(&events)
        .execute(&mut *transaction)
        .await
        .map_err(erasure_store_error)?;
        transaction.commit().await.map_err(erasure_store_error)?;
        Ok(true)
    }

    async fn erasure_hours(&self, id: &str) -> Result<Vec<ErasureHour>, ErasureStoreError> {
        let rows: Vec<(String, i64, i64, Option<i32>)> = sqlx::query_as(
            "SELECT customer_id, extract(epoch FROM hour_start)::bigint, events, revision FROM erasure_hours \
             WHERE request_id = $1 ORDER BY hour_start",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        rows.into_iter()
            .map(|(customer_id, hour_start, events, revision)| {
                let customer_id = CustomerId::new(&customer_id)
                    .map_err(|error| ErasureStoreError::InvalidData(format!("erasure request {id}: {error}")))?;
                Ok(ErasureHour {
                    customer_hour: CustomerHour { customer_id, hour_start },
                    events: u64::try_from(events).unwrap_or(0),
                    revision: revision.and_then(|revision| u32::try_from(revision).ok()),
                })
            })
            .collect()
    }

    async fn record_erased_hour(
        &self,
        lease: &ErasureLease,
        customer_hour: &CustomerHour,
        revision: u32,
    ) -> Result<bool, ErasureStoreError> {
        let recorded = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_hours SET revision = $4, erased_at = now() \
             WHERE request_id = $1 AND hour_start = to_timestamp($3) \
             AND EXISTS (SELECT 1 FROM erasure_requests WHERE {LEASE_IS_CURRENT})"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .bind(customer_hour.hour_start)
        .bind(i32::try_from(revision).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        Ok(recorded.rows_affected() > 0)
    }

    async fn finish_erasure(&self, lease: &ErasureLease) -> Result<bool, ErasureStoreError> {
        let finished = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_requests SET state = 'done', finished_at = now(), lease_owner = NULL, lease_token = NULL, \
             leased_until = NULL WHERE {LEASE_IS_CURRENT} AND state = 'erasing'"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .execute(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        Ok(finished.rows_affected() > 0)
    }

    async fn release_erasure(&self, lease: &ErasureLease) -> Result<bool, ErasureStoreError> {
        let released = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_requests SET lease_owner = NULL, lease_token = NULL, leased_until = NULL \
             WHERE {LEASE_IS_CURRENT}"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .execute(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        Ok(released.rows_affected() > 0)
    }

    async fn suppressed_users(&self, now: DateTime<Utc>) -> Result<Vec<(CustomerId, UserHash)>, ErasureStoreError> {
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT request_id, customer_id, user_hash FROM erasure_requests WHERE suppress_until > $1 \
             ORDER BY customer_id, user_hash",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(erasure_store_error)?;
        rows.into_iter()
            .map(|(id, customer_id, user_hash)| {
                let customer_id = CustomerId::new(&customer_id)
                    .map_err(|error| ErasureStoreError::InvalidData(format!("erasure request {id}: {error}")))?;
                Ok((customer_id, user_hash_from_sql(&id, &user_hash)?))
            })
            .collect()
    }
}
