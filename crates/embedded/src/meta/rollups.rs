//! The [`RollupStore`] of standalone mode: leases on `dirty_hours`, and the completion that replaces an
//! hour's rollup, its ledger row and its job state in one `BEGIN IMMEDIATE` transaction.
//!
//! Where Postgres skips rows locked by another worker (`FOR UPDATE SKIP LOCKED`), SQLite has nothing to
//! skip: a lease is one `UPDATE … RETURNING` statement, and statements that write run one at a time, so
//! two workers can never pick the same hour. Each lease gets a new `lease_token` from SQLite's `random()`
//! (64 bits from a generator seeded by the operating system); renewing, failing and completing check the
//! token and that the lease has not expired, as Postgres does.

use std::time::Duration;

use hourglass_core::customer::CustomerId;
use hourglass_core::job_queue::CustomerHour;
use hourglass_core::raw_store::HourOutcomes;
use hourglass_core::rollup_store::{
    Completion, EventTypeRollup, HourRollup, JobKind, JobLease, LeaseToken, LedgerRow, RollupBacklog, RollupStore,
    RollupStoreError,
};

use super::{SqliteMetaStore, count_from_sql, count_to_sql, duration_micros, now_micros};
use crate::disk_full::WriteError;

pub(super) fn unavailable(error: sqlx::Error) -> RollupStoreError {
    RollupStoreError::Unavailable(Box::new(error))
}

/// A write observed for a full disk that failed: unavailable, naming the file when it was the disk.
pub(super) fn write_failed(error: WriteError) -> RollupStoreError {
    RollupStoreError::Unavailable(error.boxed())
}

pub(super) fn parse_customer(customer_id: &str) -> Result<CustomerId, RollupStoreError> {
    CustomerId::new(customer_id).map_err(|error| RollupStoreError::InvalidData(error.to_string()))
}

/// The ledger columns every ledger query selects, in [`LedgerTuple`] order.
pub(super) const LEDGER_COLUMNS: &str = "customer_id, hour_start, received, accepted, rejected, rejected_by_reason, throttled, stored, counted, is_final, \
     plan_checks, erased";

/// A ledger row as selected with [`LEDGER_COLUMNS`].
pub(super) type LedgerTuple = (String, i64, i64, i64, i64, String, i64, i64, i64, bool, String, i64);

pub(super) fn ledger_row(row: LedgerTuple) -> Result<LedgerRow, RollupStoreError> {
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
        received: count_from_sql(received),
        accepted: count_from_sql(accepted),
        rejected: count_from_sql(rejected),
        rejected_by_reason: HourOutcomes::rejections_from_json(&rejections_json)
            .map_err(RollupStoreError::InvalidData)?,
        throttled: count_from_sql(throttled),
        erased: count_from_sql(erased),
        plan_checks: HourOutcomes::plan_checks_from_json(&plan_checks_json).map_err(RollupStoreError::InvalidData)?,
        stored: count_from_sql(stored),
        counted: count_from_sql(counted),
        is_final,
    })
}

/// Writes the rollup's rows, ledger and job state inside `transaction`, whose write lock is held and
/// whose lease check passed; returns the hour's new revision.
async fn replace_hour(
    transaction: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    job: &JobLease,
    rollup: &HourRollup,
    now_us: i64,
) -> Result<i64, sqlx::Error> {
    let customer_id = job.customer_hour.customer_id.as_str();
    let hour_start = job.customer_hour.hour_start;
    let logic_version = i64::from(rollup.logic_version);
    let final_as_of_us = rollup.is_final.then_some(now_us);
    let revision: i64 = sqlx::query_scalar(
        "INSERT INTO hour_revisions (customer_id, hour_start, revision, logic_version, events, computed_at_us, \
         is_final, final_as_of_us, distinct_users, users_sketch) \
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (customer_id, hour_start) DO UPDATE SET revision = revision + 1, \
         logic_version = excluded.logic_version, events = excluded.events, computed_at_us = excluded.computed_at_us, \
         is_final = excluded.is_final, final_as_of_us = excluded.final_as_of_us, \
         distinct_users = excluded.distinct_users, users_sketch = excluded.users_sketch \
         RETURNING revision",
    )
    .bind(customer_id)
    .bind(hour_start)
    .bind(logic_version)
    .bind(count_to_sql(rollup.events))
    .bind(now_us)
    .bind(rollup.is_final)
    .bind(final_as_of_us)
    .bind(count_to_sql(rollup.distinct_users))
    .bind(rollup.users_sketch.as_slice())
    .fetch_one(&mut **transaction)
    .await?;
    for table in ["hourly_rollups", "hourly_numeric_stats"] {
        // The table names are the two literals above, never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE customer_id = ? AND hour_start = ?")))
            .bind(customer_id)
            .bind(hour_start)
            .execute(&mut **transaction)
            .await?;
    }
    for row in &rollup.event_types {
        sqlx::query(
            "INSERT INTO hourly_rollups (customer_id, hour_start, event_type, events, distinct_users, users_sketch, \
             revision, logic_version, is_final, final_as_of_us, computed_at_us) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(customer_id)
        .bind(hour_start)
        .bind(&row.event_type)
        .bind(count_to_sql(row.events))
        .bind(count_to_sql(row.distinct_users))
        .bind(row.users_sketch.as_slice())
        .bind(revision)
        .bind(logic_version)
        .bind(rollup.is_final)
        .bind(final_as_of_us)
        .bind(now_us)
        .execute(&mut **transaction)
        .await?;
    }
    for row in &rollup.numeric {
        sqlx::query(
            "INSERT INTO hourly_numeric_stats (customer_id, hour_start, event_type, property, count, sum, min, max, \
             revision, logic_version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(customer_id)
        .bind(hour_start)
        .bind(&row.event_type)
        .bind(&row.property)
        .bind(count_to_sql(row.count))
        .bind(row.sum)
        .bind(row.min)
        .bind(row.max)
        .bind(revision)
        .bind(logic_version)
        .execute(&mut **transaction)
        .await?;
    }
    let outcomes = &rollup.outcomes;
    sqlx::query(
        "INSERT INTO ledger (customer_id, hour_start, received, accepted, rejected, rejected_by_reason, throttled, \
         stored, counted, is_final, counted_at_us, plan_checks, erased) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (customer_id, hour_start) DO UPDATE SET received = excluded.received, \
         accepted = excluded.accepted, rejected = excluded.rejected, rejected_by_reason = excluded.rejected_by_reason, \
         throttled = excluded.throttled, stored = excluded.stored, counted = excluded.counted, \
         is_final = excluded.is_final, counted_at_us = excluded.counted_at_us, plan_checks = excluded.plan_checks, \
         erased = excluded.erased",
    )
    .bind(customer_id)
    .bind(hour_start)
    .bind(count_to_sql(outcomes.received()))
    .bind(count_to_sql(outcomes.accepted))
    .bind(count_to_sql(outcomes.rejected()))
    .bind(outcomes.rejections_json())
    .bind(count_to_sql(outcomes.throttled))
    .bind(count_to_sql(rollup.events))
    .bind(rollup.is_final)
    .bind(now_us)
    .bind(HourOutcomes::plan_checks_json(&outcomes.plan_checks))
    .bind(count_to_sql(outcomes.erased))
    .execute(&mut **transaction)
    .await?;
    // A provisional rollup records the generation only as aggregated, so the hour still gets its final
    // rollup once it closes; data marked after the lease keeps the hour pending either way.
    sqlx::query(
        "UPDATE dirty_hours SET aggregated_generation = max(aggregated_generation, ?3), \
         finalized_generation = CASE WHEN ?4 THEN max(finalized_generation, ?3) ELSE finalized_generation END, \
         provisional_at_us = CASE WHEN ?4 THEN provisional_at_us ELSE ?5 END, \
         lease_owner = NULL, lease_token = NULL, leased_until_us = NULL, attempts = 0, last_error = NULL \
         WHERE customer_id = ?1 AND hour_start = ?2",
    )
    .bind(customer_id)
    .bind(hour_start)
    .bind(job.generation)
    .bind(rollup.is_final)
    .bind(now_us)
    .execute(&mut **transaction)
    .await?;
    Ok(revision)
}

impl SqliteMetaStore {
    /// Releases every lease held in `meta.db`, aggregation jobs' and erasure requests'; returns how many
    /// there were. Call it only while holding
    /// the data directory's lock, as standalone does at start: then no other process uses `meta.db`, so a
    /// lease found is a dead process's (kill -9, power loss), one nothing will renew or complete.
    /// Without this its hour (or erasure request) would wait out the lease (`--aggregator-lease-secs`, 5
    /// minutes by default) before it is rolled up (or resumed) again. The back-off after a failed attempt (a `leased_until_us` without a
    /// token) is kept: it is about the hour, not about the process.
    pub async fn release_leases_of_dead_processes(&self) -> Result<u64, RollupStoreError> {
        let released = sqlx::query(
            "UPDATE dirty_hours SET lease_owner = NULL, lease_token = NULL, leased_until_us = NULL \
             WHERE lease_token IS NOT NULL",
        )
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        let released_erasures = sqlx::query(
            "UPDATE erasure_requests SET lease_owner = NULL, lease_token = NULL, leased_until_us = NULL \
             WHERE lease_token IS NOT NULL",
        )
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(released.rows_affected() + released_erasures.rows_affected())
    }
}

impl RollupStore for SqliteMetaStore {
    async fn lease_jobs(
        &self,
        owner: &str,
        max: usize,
        lease: Duration,
        kind: JobKind,
    ) -> Result<Vec<JobLease>, RollupStoreError> {
        let now_us = now_micros();
        // The two kinds differ only in which hours are due: ?1 is now, ?5 the kind's instant and ?6 the
        // latest provisional rollup that is old enough to be redone.
        let (due, instant, provisional_before_us) = match kind {
            JobKind::Final { hours_before_unix } => (
                "generation > finalized_generation AND generation > refused_generation AND hour_start < ?5",
                hours_before_unix,
                None,
            ),
            JobKind::Provisional { hours_from_unix, min_interval } => (
                "generation > aggregated_generation AND generation > refused_generation AND hour_start >= ?5 \
                 AND (provisional_at_us IS NULL OR provisional_at_us < ?6)",
                hours_from_unix,
                Some(now_us.saturating_sub(duration_micros(min_interval))),
            ),
        };
        let rows: Result<Vec<(String, i64, i64, i64)>, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE dirty_hours SET lease_owner = ?2, lease_token = random(), leased_until_us = ?3, \
             attempts = attempts + 1 \
             WHERE (customer_id, hour_start) IN ( \
                 SELECT customer_id, hour_start FROM dirty_hours \
                 WHERE {due} AND (leased_until_us IS NULL OR leased_until_us < ?1) \
                 ORDER BY hour_start, customer_id \
                 LIMIT ?4 \
             ) \
             RETURNING customer_id, hour_start, generation, lease_token"
        )))
        .bind(now_us)
        .bind(owner)
        .bind(now_us.saturating_add(duration_micros(lease)))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .bind(instant)
        .bind(provisional_before_us)
        .fetch_all(&self.writer)
        .await;
        let rows = self.disk.observe(rows).map_err(write_failed)?;
        let mut leases = rows
            .into_iter()
            .map(|(customer_id, hour_start, generation, token)| {
                Ok(JobLease {
                    customer_hour: CustomerHour { customer_id: parse_customer(&customer_id)?, hour_start },
                    generation,
                    owner: owner.to_owned(),
                    token: LeaseToken::from_stored(token),
                })
            })
            .collect::<Result<Vec<_>, RollupStoreError>>()?;
        // RETURNING gives rows in no particular order; hand them out oldest first.
        leases.sort_by(|left, right| left.customer_hour.cmp(&right.customer_hour));
        Ok(leases)
    }

    async fn renew_lease(&self, job: &JobLease, lease: Duration) -> Result<bool, RollupStoreError> {
        let now_us = now_micros();
        let result = sqlx::query(
            "UPDATE dirty_hours SET leased_until_us = ?1 \
             WHERE customer_id = ?2 AND hour_start = ?3 AND lease_token = ?4 AND leased_until_us >= ?5",
        )
        .bind(now_us.saturating_add(duration_micros(lease)))
        .bind(job.customer_hour.customer_id.as_str())
        .bind(job.customer_hour.hour_start)
        .bind(job.token.stored())
        .bind(now_us)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(result.rows_affected() > 0)
    }

    async fn complete(&self, job: &JobLease, rollup: &HourRollup) -> Result<Completion, RollupStoreError> {
        // SQLite would store a NaN as NULL, which the table refuses with a message naming no number.
        rollup.check_finite()?;
        let completed = async {
            let mut transaction = self.begin_write().await?;
            let now_us = now_micros();
            let still_ours: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM dirty_hours \
                 WHERE customer_id = ? AND hour_start = ? AND lease_token = ? AND leased_until_us >= ?",
            )
            .bind(job.customer_hour.customer_id.as_str())
            .bind(job.customer_hour.hour_start)
            .bind(job.token.stored())
            .bind(now_us)
            .fetch_optional(&mut *transaction)
            .await?;
            if still_ours.is_none() {
                // Dropping the transaction rolls it back: nothing was written.
                return Ok(None);
            }
            let revision = replace_hour(&mut transaction, job, rollup, now_us).await?;
            transaction.commit().await?;
            Ok(Some(revision))
        };
        Ok(match self.disk.observe(completed.await).map_err(write_failed)? {
            None => Completion::LeaseLost,
            Some(revision) => Completion::Replaced { revision: u32::try_from(revision).unwrap_or(u32::MAX) },
        })
    }

    async fn record_recount(
        &self,
        customer_hour: &CustomerHour,
        stored: u64,
    ) -> Result<Option<LedgerRow>, RollupStoreError> {
        let row: Option<LedgerTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE ledger SET stored = ?, verified_at_us = ? WHERE customer_id = ? AND hour_start = ? \
             RETURNING {LEDGER_COLUMNS}"
        )))
        .bind(count_to_sql(stored))
        .bind(now_micros())
        .bind(customer_hour.customer_id.as_str())
        .bind(customer_hour.hour_start)
        .fetch_optional(&self.writer)
        .await
        .map_err(unavailable)?;
        row.map(ledger_row).transpose()
    }

    async fn hours_with_data(
        &self,
        customer_id: Option<&str>,
        from_unix: i64,
        to_unix: i64,
    ) -> Result<Vec<CustomerHour>, RollupStoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT customer_id, hour_start FROM dirty_hours \
             WHERE hour_start >= ?1 AND hour_start < ?2 AND (?3 IS NULL OR customer_id = ?3) \
             ORDER BY hour_start, customer_id",
        )
        .bind(from_unix)
        .bind(to_unix)
        .bind(customer_id)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        rows.into_iter()
            .map(|(customer_id, hour_start)| {
                Ok(CustomerHour { customer_id: parse_customer(&customer_id)?, hour_start })
            })
            .collect()
    }

    async fn lease_hour(
        &self,
        customer_hour: &CustomerHour,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<JobLease>, RollupStoreError> {
        let now_us = now_micros();
        let leased: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE dirty_hours SET lease_owner = ?3, lease_token = random(), leased_until_us = ?4 \
             WHERE customer_id = ?1 AND hour_start = ?2 \
             AND (leased_until_us IS NULL OR leased_until_us < ?5 OR lease_owner IS NULL) \
             RETURNING generation, lease_token",
        )
        .bind(customer_hour.customer_id.as_str())
        .bind(customer_hour.hour_start)
        .bind(owner)
        .bind(now_us.saturating_add(duration_micros(lease)))
        .bind(now_us)
        .fetch_optional(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(leased.map(|(generation, token)| JobLease {
            customer_hour: customer_hour.clone(),
            generation,
            owner: owner.to_owned(),
            token: LeaseToken::from_stored(token),
        }))
    }

    async fn current_rollup(&self, customer_hour: &CustomerHour) -> Result<Vec<EventTypeRollup>, RollupStoreError> {
        let rows: Vec<(String, i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT event_type, events, distinct_users, users_sketch FROM hourly_rollups \
             WHERE customer_id = ? AND hour_start = ? ORDER BY event_type",
        )
        .bind(customer_hour.customer_id.as_str())
        .bind(customer_hour.hour_start)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(event_type, events, distinct_users, users_sketch)| EventTypeRollup {
                event_type,
                events: count_from_sql(events),
                distinct_users: count_from_sql(distinct_users),
                users_sketch,
            })
            .collect())
    }

    async fn backlog(&self) -> Result<RollupBacklog, RollupStoreError> {
        // Stale hours are among the unfinalized ones: a rollup that finalizes an hour also aggregates it.
        let (oldest, unfinalized, stale): (Option<i64>, i64, i64) = sqlx::query_as(
            "SELECT min(hour_start), count(*), count(*) FILTER (WHERE generation > aggregated_generation) \
             FROM dirty_hours WHERE generation > finalized_generation AND generation > refused_generation",
        )
        .fetch_one(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(RollupBacklog {
            oldest_unfinalized_hour: oldest,
            unfinalized_hours: u64::try_from(unfinalized).unwrap_or(0),
            stale_hours: u64::try_from(stale).unwrap_or(0),
        })
    }

    async fn fail(&self, job: &JobLease, error: &str, retry_after: Duration) -> Result<bool, RollupStoreError> {
        // The lease is given up, but `leased_until` keeps the hour out of `lease_jobs` until the retry.
        let now_us = now_micros();
        let result = sqlx::query(
            "UPDATE dirty_hours SET lease_owner = NULL, lease_token = NULL, leased_until_us = ?1, last_error = ?2 \
             WHERE customer_id = ?3 AND hour_start = ?4 AND lease_token = ?5 AND leased_until_us >= ?6",
        )
        .bind(now_us.saturating_add(duration_micros(retry_after)))
        .bind(error)
        .bind(job.customer_hour.customer_id.as_str())
        .bind(job.customer_hour.hour_start)
        .bind(job.token.stored())
        .bind(now_us)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(result.rows_affected() > 0)
    }

    async fn refuse(&self, job: &JobLease, reason: &str) -> Result<bool, RollupStoreError> {
        let now_us = now_micros();
        let result = sqlx::query(
            "UPDATE dirty_hours SET refused_generation = max(refused_generation, ?1), refused_reason = ?2, \
             refused_at_us = ?3, lease_owner = NULL, lease_token = NULL, leased_until_us = NULL, attempts = 0, \
             last_error = NULL \
             WHERE customer_id = ?4 AND hour_start = ?5 AND lease_token = ?6 AND leased_until_us >= ?3",
        )
        .bind(job.generation)
        .bind(reason)
        .bind(now_us)
        .bind(job.customer_hour.customer_id.as_str())
        .bind(job.customer_hour.hour_start)
        .bind(job.token.stored())
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(result.rows_affected() > 0)
    }
}
