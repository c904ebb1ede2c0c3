//! The [`ErasureStore`] of standalone mode: erasure requests and their planned hours in `meta.db`, with
//! the Postgres store's behaviour (`hourglass_postgres::erasure`): a request is leased with a random
//! token checked, with its expiry, by every write of the run holding it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{
    ErasureHour, ErasureLease, ErasureRequest, ErasureState, ErasureStore, ErasureStoreError, UserHash, new_request_id,
};
use hourglass_core::job_queue::CustomerHour;
use hourglass_core::rollup_store::LeaseToken;

use super::{SqliteMetaStore, count_from_sql, count_to_sql, duration_micros, now_micros};

fn unavailable(error: sqlx::Error) -> ErasureStoreError {
    ErasureStoreError::Unavailable(Box::new(error))
}

/// The columns of a request, in [`RequestRow`]'s order.
const REQUEST_COLUMNS: &str =
    "request_id, customer_id, user_hash, requested_at_us, suppress_until_us, state, finished_at_us";

type RequestRow = (String, String, Vec<u8>, i64, i64, String, Option<i64>);

fn invalid(id: &str, what: impl std::fmt::Display) -> ErasureStoreError {
    ErasureStoreError::InvalidData(format!("erasure request {id}: {what}"))
}

fn instant(id: &str, micros: i64) -> Result<DateTime<Utc>, ErasureStoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| invalid(id, format!("instant out of range: {micros} µs")))
}

fn user_hash_from_sql(id: &str, bytes: &[u8]) -> Result<UserHash, ErasureStoreError> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid(id, format!("a user hash of {} bytes", bytes.len())))?;
    Ok(UserHash(bytes))
}

fn request_from_row(row: RequestRow) -> Result<ErasureRequest, ErasureStoreError> {
    let (id, customer_id, user_hash, requested_at_us, suppress_until_us, state, finished_at_us) = row;
    Ok(ErasureRequest {
        customer_id: CustomerId::new(&customer_id).map_err(|error| invalid(&id, error))?,
        user_hash: user_hash_from_sql(&id, &user_hash)?,
        requested_at: instant(&id, requested_at_us)?,
        suppress_until: instant(&id, suppress_until_us)?,
        state: ErasureState::parse(&state).ok_or_else(|| invalid(&id, format!("unknown state {state:?}")))?,
        finished_at: finished_at_us.map(|micros| instant(&id, micros)).transpose()?,
        id,
    })
}

/// The lease `?1` (request id), `?2` (token) is current at `?3` (now, µs).
const LEASE_IS_CURRENT: &str = "request_id = ?1 AND lease_token = ?2 AND leased_until_us >= ?3";

impl SqliteMetaStore {
    /// Leases the oldest leasable request (`id`'s only, when given).
    async fn lease_request(
        &self,
        id: Option<&str>,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ErasureLease>, ErasureStoreError> {
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let now_us = now_micros();
        let row: Option<(String, i64)> = sqlx::query_as(
            "UPDATE erasure_requests SET lease_owner = ?2, lease_token = random(), leased_until_us = ?3 \
             WHERE request_id = (SELECT request_id FROM erasure_requests WHERE (?1 IS NULL OR request_id = ?1) \
                AND state <> 'done' AND (leased_until_us IS NULL OR leased_until_us < ?4) \
                ORDER BY requested_at_us, request_id LIMIT 1) \
             RETURNING request_id, lease_token",
        )
        .bind(id)
        .bind(owner)
        .bind(now_us.saturating_add(duration_micros(lease)))
        .bind(now_us)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(unavailable)?;
        let Some((request_id, token)) = row else {
            return Ok(None);
        };
        let request: RequestRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE request_id = ?1"
        )))
        .bind(&request_id)
        .fetch_one(&mut *transaction)
        .await
        .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(Some(ErasureLease { request: request_from_row(request)?, token: LeaseToken::from_stored(token) }))
    }
}

impl ErasureStore for SqliteMetaStore {
    async fn request_erasure(
        &self,
        customer_id: &CustomerId,
        user_hash: UserHash,
        suppress_until: DateTime<Utc>,
    ) -> Result<ErasureRequest, ErasureStoreError> {
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO erasure_requests (request_id, customer_id, user_hash, requested_at_us, suppress_until_us) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (customer_id, user_hash) WHERE state <> 'done' DO NOTHING",
        )
        .bind(new_request_id())
        .bind(customer_id.as_str())
        .bind(user_hash.0.as_slice())
        .bind(now_micros())
        .bind(suppress_until.timestamp_micros())
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
        let row: RequestRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE customer_id = ?1 AND user_hash = ?2 \
             AND state <> 'done'"
        )))
        .bind(customer_id.as_str())
        .bind(user_hash.0.as_slice())
        .fetch_one(&mut *transaction)
        .await
        .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        request_from_row(row)
    }

    async fn erasure(&self, id: &str) -> Result<Option<ErasureRequest>, ErasureStoreError> {
        let row: Option<RequestRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE request_id = ?1"
        )))
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .map_err(unavailable)?;
        row.map(request_from_row).transpose()
    }

    async fn list_erasures(&self, customer_id: Option<&CustomerId>) -> Result<Vec<ErasureRequest>, ErasureStoreError> {
        let rows: Vec<RequestRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE ?1 IS NULL OR customer_id = ?1 \
             ORDER BY requested_at_us, request_id"
        )))
        .bind(customer_id.map(CustomerId::as_str))
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        rows.into_iter().map(request_from_row).collect()
    }

    async fn lease_erasure(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ErasureLease>, ErasureStoreError> {
        self.lease_request(Some(id), owner, lease).await
    }

    async fn lease_next_erasure(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ErasureLease>, ErasureStoreError> {
        self.lease_request(None, owner, lease).await
    }

    async fn renew_erasure(&self, lease: &ErasureLease, duration: Duration) -> Result<bool, ErasureStoreError> {
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let now_us = now_micros();
        let renewed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_requests SET leased_until_us = ?4 WHERE {LEASE_IS_CURRENT}"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .bind(now_us)
        .bind(now_us.saturating_add(duration_micros(duration)))
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(renewed.rows_affected() > 0)
    }

    async fn plan_erasure(&self, lease: &ErasureLease, hours: &[ErasureHour]) -> Result<bool, ErasureStoreError> {
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let planned = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_requests SET state = 'erasing' WHERE {LEASE_IS_CURRENT} AND state = 'pending'"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .bind(now_micros())
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
        if planned.rows_affected() == 0 {
            return Ok(false);
        }
        for hour in hours {
            sqlx::query(
                "INSERT INTO erasure_hours (request_id, customer_id, hour_start, events) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(&lease.request.id)
            .bind(lease.request.customer_id.as_str())
            .bind(hour.customer_hour.hour_start)
            .bind(count_to_sql(hour.events))
            .execute(&mut *transaction)
            .await
            .map_err(unavailable)?;
        }
        transaction.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn erasure_hours(&self, id: &str) -> Result<Vec<ErasureHour>, ErasureStoreError> {
        let rows: Vec<(String, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT customer_id, hour_start, events, revision FROM erasure_hours WHERE request_id = ?1 \
             ORDER BY hour_start",
        )
        .bind(id)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        rows.into_iter()
            .map(|(customer_id, hour_start, events, revision)| {
                let customer_id = CustomerId::new(&customer_id).map_err(|error| invalid(id, error))?;
                Ok(ErasureHour {
                    customer_hour: CustomerHour { customer_id, hour_start },
                    events: count_from_sql(events),
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
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let now_us = now_micros();
        let recorded = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_hours SET revision = ?5, erased_at_us = ?3 WHERE request_id = ?1 AND hour_start = ?4 \
             AND EXISTS (SELECT 1 FROM erasure_requests WHERE {LEASE_IS_CURRENT})"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .bind(now_us)
        .bind(customer_hour.hour_start)
        .bind(i64::from(revision))
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(recorded.rows_affected() > 0)
    }

    async fn finish_erasure(&self, lease: &ErasureLease) -> Result<bool, ErasureStoreError> {
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let finished = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_requests SET state = 'done', finished_at_us = ?3, lease_owner = NULL, lease_token = NULL, \
             leased_until_us = NULL WHERE {LEASE_IS_CURRENT} AND state = 'erasing'"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .bind(now_micros())
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(finished.rows_affected() > 0)
    }

    async fn release_erasure(&self, lease: &ErasureLease) -> Result<bool, ErasureStoreError> {
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let released = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE erasure_requests SET lease_owner = NULL, lease_token = NULL, leased_until_us = NULL \
             WHERE {LEASE_IS_CURRENT}"
        )))
        .bind(&lease.request.id)
        .bind(lease.token.stored())
        .bind(now_micros())
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(released.rows_affected() > 0)
    }

    async fn suppressed_users(&self, now: DateTime<Utc>) -> Result<Vec<(CustomerId, UserHash)>, ErasureStoreError> {
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT request_id, customer_id, user_hash FROM erasure_requests WHERE suppress_until_us > ?1 \
             ORDER BY customer_id, user_hash",
        )
        .bind(now.timestamp_micros())
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        rows.into_iter()
            .map(|(id, customer_id, user_hash)| {
                let customer_id = CustomerId::new(&customer_id).map_err(|error| invalid(&id, error))?;
                Ok((customer_id, user_hash_from_sql(&id, &user_hash)?))
            })
            .collect()
    }
}
