//! [`PostgresRollupStore`]: hourly rollups and aggregation jobs in Postgres. This file is the write side,
//! the [`RollupStore`] the aggregator drives; what the query service reads of the same tables, through the
//! same pool, is the [`RollupReader`](hourglass_core::rollup_reader::RollupReader) in `reader.rs`.
//!
//! Jobs are the rows of `dirty_hours` whose `generation` is ahead of their `aggregated_generation` (and
//! of their `refused_generation`: an hour the aggregator refused, its raw data possibly expired, is not
//! a job until new data is marked).
//! Leasing uses `FOR UPDATE SKIP LOCKED` inside an `UPDATE`, so concurrent workers each take different
//! hours and never wait on each other, and gives each lease a new `lease_token` (`new_lease_token()`).
//! Completing locks the hour's row and checks its token and expiry, then replaces the hour's rows, bumps
//! its revision and records the generation that was aggregated, all in one transaction. While that lock
//! is held nobody can lease the hour again, so a lease is never taken over halfway through a completion.
//! The same transaction announces the customer on [`ROLLUP_CHANGES_CHANNEL`] for the query cache.

use std::time::Duration;

use hourglass_core::customer::CustomerId;
use hourglass_core::job_queue::CustomerHour;
use hourglass_core::raw_store::HourOutcomes;
use hourglass_core::rollup_store::{
    Completion, EventTypeRollup, HourRollup, JobKind, JobLease, LeaseToken, LedgerRow, NumericRollup, RollupBacklog,
    RollupStore, RollupStoreError,
};
use sqlx::PgPool;

use crate::errors::rollup_store_error;

/// The `NOTIFY` channel on which every completion announces its customer (the payload), in the completion's
/// transaction; the reader's [`watch_changes`](hourglass_core::rollup_reader::RollupReader::watch_changes)
/// listens on it.
pub const ROLLUP_CHANGES_CHANNEL: &str = "hourglass_rollup_changes";

/// The Postgres implementation of [`RollupStore`] and (in `reader.rs`) of
/// [`RollupReader`](hourglass_core::rollup_reader::RollupReader): one type over one pool, so the aggregator
/// and the query service of one process share its connections.
#[derive(Clone, Debug)]
pub struct PostgresRollupStore {
    /// Crate-visible because the reader's impl lives in a sibling module and queries the same pool.
    pub(crate) pool: PgPool,
}

/// An hour's rollup as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredHour {
    /// How many times the hour was aggregated.
    pub revision: u32,
    /// The aggregation logic's version.
    pub logic_version: u32,
    /// Distinct events counted.
    pub events: u64,
    /// Per event type, sorted by event type.
    pub event_types: Vec<EventTypeRollup>,
    /// Per event type and numeric property, sorted.
    pub numeric: Vec<NumericRollup>,
    /// Whether the rows are final.
    pub is_final: bool,
}

/// A stored customer id back to the seam's type. The schema only holds valid ids, so a failure means a
/// damaged row.
fn parse_customer(customer_id: &str) -> Result<CustomerId, RollupStoreError> {
    CustomerId::new(customer_id).map_err(|error| RollupStoreError::InvalidData(error.to_string()))
}

/// The ledger columns every ledger query selects (the recount here, the ledger read in `reader.rs`), in
/// [`LedgerTuple`] order.
pub(crate) const LEDGER_COLUMNS: &str = "customer_id, extract(epoch FROM hour_start)::bigint, received, accepted, \
                                         rejected, rejected_by_reason::text, throttled, stored, counted, is_final, \
                                         plan_checks::text, erased";

/// A ledger row as selected with [`LEDGER_COLUMNS`].
pub(crate) type LedgerTuple = (String, i64, i64, i64, i64, String, i64, i64, i64, bool, String, i64);

/// A selected ledger row as the seam's [`LedgerRow`].
pub(crate) fn ledger_row(row: LedgerTuple) -> Result<LedgerRow, RollupStoreError> {
    let (
        customer_id,
        hour_start,
        received,
        accepted,
        rejected,
        rejections_json,
        throttled,
        stored,
        counted,
        is_final,
        plan_checks_json,
        erased,
    ) = row;
    Ok(LedgerRow {
        customer_hour: CustomerHour { customer_id: parse_customer(&customer_id)?, hour_start },
        received: received as u64,
        accepted: accepted as u64,
        rejected: rejected as u64,
        rejected_by_reason: HourOutcomes::rejections_from_json(&rejections_json)
            .map_err(RollupStoreError::InvalidData)?,
        throttled: throttled as u64,
        erased: erased as u64,
        plan_checks: HourOutcomes::plan_checks_from_json(&plan_checks_json).map_err(RollupStoreError::InvalidData)?,
        stored: stored as u64,
        counted: counted as u64,
        is_final,
    })
}

impl PostgresRollupStore {
    /// A rollup store over an existing pool (whose schema is migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The stored rollup of a customer-hour, if it was ever aggregated.
    pub async fn hour(&self, customer_id: &str, hour_start: i64) -> Result<Option<StoredHour>, RollupStoreError> {
        let header = sqlx::query!(
            "SELECT revision, logic_version, events FROM hour_revisions WHERE customer_id = $1 AND hour_start = to_timestamp($2)",
            customer_id,
            hour_start as f64
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(rollup_store_error)?
        .map(|row| (row.revision, row.logic_version, row.events));
        let Some((revision, logic_version, events)) = header else { return Ok(None) };
        let rows = sqlx::query!(
            "SELECT event_type, events, distinct_users, users_sketch, is_final FROM hourly_rollups \
             WHERE customer_id = $1 AND hour_start = to_timestamp($2) ORDER BY event_type",
            customer_id,
            hour_start as f64
        )
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        let numeric = sqlx::query!(
            "SELECT event_type, property, count, sum, min, max FROM hourly_numeric_stats \
             WHERE customer_id = $1 AND hour_start = to_timestamp($2) ORDER BY event_type, property",
            customer_id,
            hour_start as f64
        )
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        let is_final = rows.iter().all(|row| row.is_final);
        Ok(Some(StoredHour {
            revision: revision as u32,
            logic_version: logic_version as u32,
            events: events as u64,
            event_types: rows
                .into_iter()
                .map(|row| EventTypeRollup {
                    event_type: row.event_type,
                    events: row.events as u64,
                    distinct_users: row.distinct_users as u64,
                    users_sketch: row.users_sketch,
                })
                .collect(),
            numeric: numeric
                .into_iter()
                .map(|row| NumericRollup {
                    event_type: row.event_type,
                    property: row.property,
                    count: row.count as u64,
                    sum: row.sum,
                    min: row.min,
                    max: row.max,
                })
                .collect(),
            is_final,
        }))
    }
}

impl RollupStore for PostgresRollupStore {
    async fn lease_jobs(
        &self,
        owner: &str,
        max: usize,
        lease: Duration,
        kind: JobKind,
    ) -> Result<Vec<JobLease>, RollupStoreError> {
        // The two kinds differ only in which hours are due.
        let (due, instant, min_interval_secs) = match kind {
            JobKind::Final { hours_before_unix } => (
                "generation > finalized_generation AND generation > refused_generation \
                     AND hour_start < to_timestamp($3)",
                hours_before_unix,
                None,
            ),
            JobKind::Provisional { hours_from_unix, min_interval } => (
                "generation > aggregated_generation AND generation > refused_generation \
                 AND hour_start >= to_timestamp($3) \
                 AND (provisional_at IS NULL OR provisional_at < now() - make_interval(secs => $5))",
                hours_from_unix,
                Some(min_interval.as_secs_f64()),
            ),
        };
        let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE dirty_hours AS job \
             SET lease_owner = $1, lease_token = new_lease_token(), leased_until = now() + make_interval(secs => $2), \
                 attempts = job.attempts + 1 \
             FROM ( \
                 SELECT customer_id, hour_start FROM dirty_hours \
                 WHERE {due} AND (leased_until IS NULL OR leased_until < now()) \
                 ORDER BY hour_start \
                 LIMIT $4 \
                 FOR UPDATE SKIP LOCKED \
             ) AS picked \
             WHERE job.customer_id = picked.customer_id AND job.hour_start = picked.hour_start \
             RETURNING job.customer_id, extract(epoch FROM job.hour_start)::bigint, job.generation, job.lease_token"
        )))
        .bind(owner)
        .bind(lease.as_secs_f64())
        .bind(instant as f64)
        .bind(max as i64);
        let query = match min_interval_secs {
            Some(seconds) => query.bind(seconds),
            None => query,
        };
        let rows: Vec<(String, i64, i64, i64)> = query.fetch_all(&self.pool).await.map_err(rollup_store_error)?;
        rows.into_iter()
            .map(|(customer_id, hour_start, generation, token)| {
                Ok(JobLease {
                    customer_hour: CustomerHour { customer_id: parse_customer(&customer_id)?, hour_start },
                    generation,
                    owner: owner.to_owned(),
                    token: LeaseToken::from_stored(token),
                })
            })
            .collect()
    }

    async fn renew_lease(&self, job: &JobLease, lease: Duration) -> Result<bool, RollupStoreError> {
        let result = sqlx::query!(
            "UPDATE dirty_hours SET leased_until = now() + make_interval(secs => $4) \
             WHERE customer_id = $1 AND hour_start = to_timestamp($2) AND lease_token = $3 AND leased_until >= now()",
            job.customer_hour.customer_id.as_str(),
            job.customer_hour.hour_start as f64,
            job.token.stored(),
            lease.as_secs_f64()
        )
        .execute(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn complete(&self, job: &JobLease, rollup: &HourRollup) -> Result<Completion, RollupStoreError> {
        // Postgres would keep NaN and infinity as they are, for every reader to trip over.
        rollup.check_finite()?;
        let customer_id = job.customer_hour.customer_id.as_str();
        let hour_start = job.customer_hour.hour_start as f64;
        let mut transaction = self.pool.begin().await.map_err(rollup_store_error)?;
        // The check is the transaction's first statement, so `now()` (the transaction's start) is when it
        // ran. The row lock it takes holds off any new lease of the hour until this transaction ends; a
        // new lease taken before the lock changed the token, which the check sees (waiting for the lease's
        // transaction to commit if need be).
        let still_ours = sqlx::query_scalar!(
            "SELECT 1 FROM dirty_hours WHERE customer_id = $1 AND hour_start = to_timestamp($2) \
             AND lease_token = $3 AND leased_until >= now() FOR UPDATE",
            customer_id,
            hour_start,
            job.token.stored()
        )
        .fetch_optional(&mut *transaction)
        .await
        .map_err(rollup_store_error)?;
        if still_ours.is_none() {
            return Ok(Completion::LeaseLost);
        }
        let revision = sqlx::query_scalar!(
            "INSERT INTO hour_revisions (customer_id, hour_start, revision, logic_version, events, is_final, final_as_of, \
             distinct_users, users_sketch) \
             VALUES ($1, to_timestamp($2), 1, $3, $4, $5, CASE WHEN $5 THEN now() END, $6, $7) \
             ON CONFLICT (customer_id, hour_start) DO UPDATE SET revision = hour_revisions.revision + 1, \
             logic_version = excluded.logic_version, events = excluded.events, computed_at = now(), \
             is_final = excluded.is_final, final_as_of = excluded.final_as_of, \
             distinct_users = excluded.distinct_users, users_sketch = excluded.users_sketch \
             RETURNING revision",
            customer_id,
            hour_start,
            rollup.logic_version as i32,
            rollup.events as i64,
            rollup.is_final,
            rollup.distinct_users as i64,
            rollup.users_sketch.as_slice()
        )
        .fetch_one(&mut *transaction)
        .await
        .map_err(rollup_store_error)?;
        sqlx::query!(
            "DELETE FROM hourly_rollups WHERE customer_id = $1 AND hour_start = to_timestamp($2)",
            customer_id,
            hour_start
        )
        .execute(&mut *transaction)
        .await
        .map_err(rollup_store_error)?;
        sqlx::query!(
            "DELETE FROM hourly_numeric_stats WHERE customer_id = $1 AND hour_start = to_timestamp($2)",
            customer_id,
            hour_start
        )
        .execute(&mut *transaction)
        .await
        .map_err(rollup_store_error)?;
        let event_types: Vec<&str> = rollup.event_types.iter().map(|row| row.event_type.as_str()).collect();
        let events: Vec<i64> = rollup.event_types.iter().map(|row| row.events as i64).collect();
        let users: Vec<i64> = rollup.event_types.iter().map(|row| row.distinct_users as i64).collect();
        let sketches: Vec<&[u8]> = rollup.event_types.iter().map(|row| row.users_sketch.as_slice()).collect();
        sqlx::query!(
            "INSERT INTO hourly_rollups (customer_id, hour_start, event_type, events, distinct_users, users_sketch, \
             revision, logic_version, is_final, final_as_of) \
             SELECT $1, to_timestamp($2), rows.event_type, rows.events, rows.users, rows.sketch, $3, $4, $5, \
                    CASE WHEN $5 THEN now() END \
             FROM unnest($6::text[], $7::bigint[], $8::bigint[], $9::bytea[]) AS rows(event_type, events, users, sketch)",
            customer_id,
            hour_start,
            revision,
            rollup.logic_version as i32,
            rollup.is_final,
            &event_types as &[&str],
            &events,
            &users,
            &sketches as &[&[u8]]
        )
        .execute(&mut *transaction)
        .await
        .map_err(rollup_store_error)?;
        let numeric = &rollup.numeric;
        let numeric_types: Vec<&str> = numeric.iter().map(|row| row.event_type.as_str()).collect();
        let numeric_properties: Vec<&str> = numeric.iter().map(|row| row.property.as_str()).collect();
        let numeric_counts: Vec<i64> = numeric.iter().map(|row| row.count as i64).collect();
        let numeric_sums: Vec<f64> = numeric.iter().map(|row| row.sum).collect();
        let numeric_mins: Vec<f64> = numeric.iter().map(|row| row.min).collect();
        let numeric_maxes: Vec<f64> = numeric.iter().map(|row| row.max).collect();
        sqlx::query!(
            "INSERT INTO hourly_numeric_stats (customer_id, hour_start, event_type, property, count, sum, min, max, \
             revision, logic_version) \
             SELECT $1, to_timestamp($2), stats.event_type, stats.property, stats.count, stats.sum, stats.min, \
                    stats.max, $3, $4 \
             FROM unnest($5::text[], $6::text[], $7::bigint[], $8::float8[], $9::float8[], $10::float8[]) \
                  AS stats(event_type, property, count, sum, min, max)",
            customer_id,
            hour_start,
            revision,
            rollup.logic_version as i32,
            &numeric_types as &[&str],
            &numeric_properties as &[&str],
            &numeric_counts,
            &numeric_sums,
            &numeric_mins,
            &numeric_maxes
        )
        .execute(&mut *transaction)
        .await
        .map_err(rollup_store_error)?;
        let outcomes = &rollup.outcomes;
        sqlx::query!(
            "INSERT INTO ledger (customer_id, hour_start, received, accepted, rejected, rejected_by_reason, throttled, \
             stored, counted, is_final, plan_checks, erased) \
             VALUES ($1, to_timestamp($2), $3, $4, $5, $6::text::jsonb, $7, $8, $8, $9, $10::text::jsonb, $11) \
             ON CONFLICT (customer_id, hour_start) DO UPDATE SET received = excluded.received, \
             accepted = excluded.accepted, rejected = excluded.rejected, rejected_by_reason = excluded.rejected_by_reason, \
             throttled = excluded.throttled, stored = excluded.stored, counted = excluded.counted, \
             is_final = excluded.is_final, plan_checks = excluded.plan_checks, erased = excluded.erased, \
             counted_at = now()",
            customer_id,
            hour_start,
            outcomes.received() as i64,
            outcomes.accepted as i64,
            outcomes.rejected() as i64,
            outcomes.rejections_json(),
            outcomes.throttled as i64,
            rollup.events as i64,
            rollup.is_final,
            HourOutcomes::plan_checks_json(&outcomes.plan_checks),
            outcomes.erased as i64
        )
        .execute(&mut *transaction)
        .await
        .map_err(rollup_store_error)?;
        sqlx::query!(
            "UPDATE dirty_hours SET aggregated_generation = GREATEST(aggregated_generation, $3), \
             finalized_generation = CASE WHEN $4 THEN GREATEST(finalized_generation, $3) ELSE finalized_generation END, \
             provisional_at = CASE WHEN $4 THEN provisional_at ELSE now() END, \
             lease_owner = NULL, lease_token = NULL, leased_until = NULL, attempts = 0, last_error = NULL \
             WHERE customer_id = $1 AND hour_start = to_timestamp($2)",
            customer_id,
            hour_start,
            job.generation,
            rollup.is_final
        )
        .execute(&mut *transaction)
        .await
        .map_err(rollup_store_error)?;
        // Sent by this transaction, the announcement is delivered at its commit and never before it (and
        // not at all if it rolls back), so a listener that hears it can read the new rows (`reader.rs`).
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ROLLUP_CHANGES_CHANNEL)
            .bind(customer_id)
            .execute(&mut *transaction)
            .await
            .map_err(rollup_store_error)?;
        transaction.commit().await.map_err(rollup_store_error)?;
        Ok(Completion::Replaced { revision: revision as u32 })
    }

    async fn record_recount(
        &self,
        customer_hour: &CustomerHour,
        stored: u64,
    ) -> Result<Option<LedgerRow>, RollupStoreError> {
        let row: Option<LedgerTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE ledger SET stored = $3, verified_at = now() \
             WHERE customer_id = $1 AND hour_start = to_timestamp($2) RETURNING {LEDGER_COLUMNS}"
        )))
        .bind(customer_hour.customer_id.as_str())
        .bind(customer_hour.hour_start as f64)
        .bind(stored as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        row.map(ledger_row).transpose()
    }

    async fn hours_with_data(
        &self,
        customer_id: Option<&str>,
        from_unix: i64,
        to_unix: i64,
    ) -> Result<Vec<CustomerHour>, RollupStoreError> {
        let rows = sqlx::query!(
            r#"SELECT customer_id, extract(epoch FROM hour_start)::bigint AS "hour_start!" FROM dirty_hours
               WHERE hour_start >= to_timestamp($1) AND hour_start < to_timestamp($2)
               AND ($3::text IS NULL OR customer_id = $3) ORDER BY hour_start, customer_id"#,
            from_unix as f64,
            to_unix as f64,
            customer_id
        )
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        rows.into_iter()
            .map(|row| Ok(CustomerHour { customer_id: parse_customer(&row.customer_id)?, hour_start: row.hour_start }))
            .collect()
    }

    async fn lease_hour(
        &self,
        customer_hour: &CustomerHour,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<JobLease>, RollupStoreError> {
        let leased = sqlx::query!(
            r#"UPDATE dirty_hours SET lease_owner = $3, lease_token = new_lease_token(),
                   leased_until = now() + make_interval(secs => $4)
               WHERE customer_id = $1 AND hour_start = to_timestamp($2)
               AND (leased_until IS NULL OR leased_until < now() OR lease_owner IS NULL)
               RETURNING generation, lease_token AS "lease_token!""#,
            customer_hour.customer_id.as_str(),
            customer_hour.hour_start as f64,
            owner,
            lease.as_secs_f64()
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(leased.map(|row| JobLease {
            customer_hour: customer_hour.clone(),
            generation: row.generation,
            owner: owner.to_owned(),
            token: LeaseToken::from_stored(row.lease_token),
        }))
    }

    async fn current_rollup(&self, customer_hour: &CustomerHour) -> Result<Vec<EventTypeRollup>, RollupStoreError> {
        Ok(self
            .hour(customer_hour.customer_id.as_str(), customer_hour.hour_start)
            .await?
            .map(|stored| stored.event_types)
            .unwrap_or_default())
    }

    async fn backlog(&self) -> Result<RollupBacklog, RollupStoreError> {
        // Only unfinalized hours are read (the dirty_hours_unfinalized partial index): stale hours are
        // among them, as a rollup that finalizes an hour also aggregates it.
        let row = sqlx::query!(
            r#"SELECT extract(epoch FROM min(hour_start))::bigint AS oldest, count(*) AS "unfinalized!",
                      count(*) FILTER (WHERE generation > aggregated_generation) AS "stale!"
               FROM dirty_hours
               WHERE generation > finalized_generation AND generation > refused_generation"#
        )
        .fetch_one(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(RollupBacklog {
            oldest_unfinalized_hour: row.oldest,
            unfinalized_hours: u64::try_from(row.unfinalized).unwrap_or(0),
            stale_hours: u64::try_from(row.stale).unwrap_or(0),
        })
    }

    async fn fail(&self, job: &JobLease, error: &str, retry_after: Duration) -> Result<bool, RollupStoreError> {
        let result = sqlx::query!(
            "UPDATE dirty_hours SET lease_owner = NULL, lease_token = NULL, \
             leased_until = now() + make_interval(secs => $4), last_error = $5 \
             WHERE customer_id = $1 AND hour_start = to_timestamp($2) AND lease_token = $3 AND leased_until >= now()",
            job.customer_hour.customer_id.as_str(),
            job.customer_hour.hour_start as f64,
            job.token.stored(),
            retry_after.as_secs_f64(),
            error
        )
        .execute(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn refuse(&self, job: &JobLease, reason: &str) -> Result<bool, RollupStoreError> {
        let result = sqlx::query!(
            "UPDATE dirty_hours SET refused_generation = GREATEST(refused_generation, $4), refused_reason = $5, \
             refused_at = now(), lease_owner = NULL, lease_token = NULL, leased_until = NULL, attempts = 0, \
             last_error = NULL \
             WHERE customer_id = $1 AND hour_start = to_timestamp($2) AND lease_token = $3 AND leased_until >= now()",
            job.customer_hour.customer_id.as_str(),
            job.customer_hour.hour_start as f64,
            job.token.stored(),
            job.generation,
            reason
        )
        .execute(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(result.rows_affected() > 0)
    }
}
