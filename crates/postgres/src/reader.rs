//! The [`RollupReader`] of [`PostgresRollupStore`]: what the query service reads from the rollup tables
//! (hourly rows and totals, numeric stats, event types, hour status, revision sums, and the readiness
//! check), always scoped to one customer; the ledger may also be read for all customers, by operators.
//!
//! It is the same type as the [`RollupStore`](hourglass_core::rollup_store::RollupStore) in `rollups.rs`,
//! over the same pool, but a separate concern: every query here is a single `SELECT` that takes no row
//! locks and writes nothing, so nothing in this file bears on leases or on the completion transaction.
//! Each sees one committed state, so a completion is read whole or not at all. The exception is
//! [`watch_changes`](RollupReader::watch_changes), which holds one connection of the pool to `LISTEN` for
//! the completions' announcements.

use std::sync::Arc;
use std::time::Duration;

use hourglass_core::rollup_changes::RollupChanges;
use hourglass_core::rollup_reader::{
    AppliedErasure, EventTypeSeen, HourStatus, HourlyNumericRow, HourlyRollupRow, HourlyTotalsRow, RollupReader,
};
use hourglass_core::rollup_store::{LedgerRow, RollupStoreError};
use sqlx::postgres::PgListener;

use crate::errors::rollup_store_error;
use crate::rollups::{LEDGER_COLUMNS, LedgerTuple, PostgresRollupStore, ROLLUP_CHANGES_CHANNEL, ledger_row};

/// First wait before listening again after the connection failed; doubled per failure up to
/// [`LISTEN_RETRY_MAX`]. Meanwhile the cache reads revision sums, so waiting costs speed, not correctness.
const LISTEN_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between attempts to listen.
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Whether Postgres refused a statement for being read-only (SQLSTATE 25006), as a hot standby does `LISTEN`.
fn is_read_only(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|database| database.code()).is_some_and(|code| code == "25006")
}

impl PostgresRollupStore {
    /// Listens on [`ROLLUP_CHANGES_CHANNEL`] with one connection of the pool and passes each announced
    /// customer to `changes` until the connection is lost (`Ok`) or cannot be set up (`Err`).
    /// `changes` says it listens only once `LISTEN` succeeded: from then on no commit goes unheard.
    async fn listen_for_changes(&self, changes: &RollupChanges) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(ROLLUP_CHANGES_CHANNEL).await?;
        changes.listening();
        // `try_recv` answers `None` when the connection is lost, instead of reconnecting silently as `recv`
        // does: announcements sent meanwhile are lost, which `changes` must know of.
        while let Some(notification) = listener.try_recv().await? {
            changes.changed(notification.payload());
        }
        Ok(())
    }
}

impl RollupReader for PostgresRollupStore {
    async fn hourly_rollups(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
        event_types: &[String],
        with_sketches: bool,
    ) -> Result<Vec<HourlyRollupRow>, RollupStoreError> {
        // Without sketches the column is never read, so its (TOASTed) value is never fetched.
        let rows = sqlx::query!(
            r#"SELECT extract(epoch FROM hour_start)::bigint AS "hour_start!", event_type, events, distinct_users,
                      CASE WHEN $5 THEN users_sketch ELSE ''::bytea END AS "users_sketch!"
               FROM hourly_rollups
               WHERE customer_id = $1 AND hour_start >= to_timestamp($2) AND hour_start < to_timestamp($3)
               AND (cardinality($4::text[]) = 0 OR event_type = ANY($4))
               ORDER BY hour_start, event_type"#,
            customer_id,
            from_unix as f64,
            to_unix as f64,
            event_types,
            with_sketches
        )
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(rows
            .into_iter()
            .map(|row| HourlyRollupRow {
                hour_start: row.hour_start,
                event_type: row.event_type,
                events: row.events as u64,
                distinct_users: row.distinct_users as u64,
                users_sketch: row.users_sketch,
            })
            .collect())
    }

    async fn hourly_totals(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
        with_sketches: bool,
    ) -> Result<Vec<HourlyTotalsRow>, RollupStoreError> {
        let rows = sqlx::query!(
            r#"SELECT extract(epoch FROM hour_start)::bigint AS "hour_start!", events, distinct_users,
                      CASE WHEN $4 THEN users_sketch ELSE ''::bytea END AS "users_sketch!"
               FROM hour_revisions
               WHERE customer_id = $1 AND hour_start >= to_timestamp($2) AND hour_start < to_timestamp($3)
               AND events > 0
               ORDER BY hour_start"#,
            customer_id,
            from_unix as f64,
            to_unix as f64,
            with_sketches
        )
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(rows
            .into_iter()
            .map(|row| HourlyTotalsRow {
                hour_start: row.hour_start,
                events: row.events as u64,
                distinct_users: row.distinct_users as u64,
                users_sketch: row.users_sketch,
            })
            .collect())
    }

    async fn hourly_numeric(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
        event_types: &[String],
    ) -> Result<Vec<HourlyNumericRow>, RollupStoreError> {
        let rows = sqlx::query!(
            r#"SELECT extract(epoch FROM hour_start)::bigint AS "hour_start!", event_type, property, count, sum, min, max
               FROM hourly_numeric_stats
               WHERE customer_id = $1 AND hour_start >= to_timestamp($2) AND hour_start < to_timestamp($3)
               AND (cardinality($4::text[]) = 0 OR event_type = ANY($4))
               ORDER BY hour_start, event_type, property"#,
            customer_id,
            from_unix as f64,
            to_unix as f64,
            event_types
        )
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(rows
            .into_iter()
            .map(|row| HourlyNumericRow {
                hour_start: row.hour_start,
                event_type: row.event_type,
                property: row.property,
                count: row.count as u64,
                sum: row.sum,
                min: row.min,
                max: row.max,
            })
            .collect())
    }

    async fn event_types(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> Result<Vec<EventTypeSeen>, RollupStoreError> {
        let rows = sqlx::query!(
            r#"SELECT event_type, sum(events)::bigint AS "events!",
                      extract(epoch FROM min(hour_start))::bigint AS "first_hour!",
                      extract(epoch FROM max(hour_start))::bigint AS "last_hour!"
               FROM hourly_rollups
               WHERE customer_id = $1 AND hour_start >= to_timestamp($2) AND hour_start < to_timestamp($3)
               AND events > 0
               GROUP BY event_type ORDER BY event_type"#,
            customer_id,
            from_unix as f64,
            to_unix as f64
        )
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(rows
            .into_iter()
            .map(|row| EventTypeSeen {
                event_type: row.event_type,
                events: row.events as u64,
                first_hour: row.first_hour,
                last_hour: row.last_hour,
            })
            .collect())
    }

    async fn hour_statuses(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> Result<Vec<HourStatus>, RollupStoreError> {
        let rows = sqlx::query!(
            r#"SELECT extract(epoch FROM hours.hour_start)::bigint AS "hour_start!",
                      revisions.revision AS "revision?", revisions.logic_version AS "logic_version?",
                      revisions.is_final AS "is_final?",
                      extract(epoch FROM revisions.final_as_of)::bigint AS final_as_of,
                      extract(epoch FROM revisions.computed_at)::bigint AS computed_at,
                      revisions.events AS "events?",
                      (hours.generation > GREATEST(hours.aggregated_generation, hours.refused_generation))
                          AS "pending!",
                      CASE WHEN hours.refused_generation > hours.aggregated_generation
                           THEN hours.refused_reason END AS refused
               FROM dirty_hours AS hours
               LEFT JOIN hour_revisions AS revisions
                    ON revisions.customer_id = hours.customer_id AND revisions.hour_start = hours.hour_start
               WHERE hours.customer_id = $1 AND hours.hour_start >= to_timestamp($2)
               AND hours.hour_start < to_timestamp($3)
               ORDER BY hours.hour_start"#,
            customer_id,
            from_unix as f64,
            to_unix as f64
        )
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(rows
            .into_iter()
            .map(|row| HourStatus {
                hour_start: row.hour_start,
                revision: row.revision.map(|revision| revision as u32),
                logic_version: row.logic_version.map(|version| version as u32),
                is_final: row.is_final.unwrap_or(false),
                final_as_of: row.final_as_of,
                computed_at: row.computed_at,
                events: row.events.unwrap_or(0) as u64,
                pending: row.pending,
                refused: row.refused,
            })
            .collect())
    }

    async fn applied_erasures(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> Result<Vec<AppliedErasure>, RollupStoreError> {
        let rows = sqlx::query!(
            r#"SELECT extract(epoch FROM hour_start)::bigint AS "hour_start!", request_id, events, revision,
                      extract(epoch FROM erased_at)::bigint AS erased_at
               FROM erasure_hours
               WHERE customer_id = $1 AND hour_start >= to_timestamp($2) AND hour_start < to_timestamp($3)
               ORDER BY hour_start, request_id"#,
            customer_id,
            from_unix as f64,
            to_unix as f64
        )
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(rows
            .into_iter()
            .map(|row| AppliedErasure {
                hour_start: row.hour_start,
                request_id: row.request_id,
                events: u64::try_from(row.events).unwrap_or(0),
                revision: row.revision.map(|revision| u32::try_from(revision).unwrap_or(u32::MAX)),
                erased_at: row.erased_at,
            })
            .collect())
    }

    async fn ledger(
        &self,
        customer_id: Option<&str>,
        from_unix: i64,
        to_unix: i64,
    ) -> Result<Vec<LedgerRow>, RollupStoreError> {
        let rows: Vec<LedgerTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger \
             WHERE hour_start >= to_timestamp($1) AND hour_start < to_timestamp($2) AND ($3::text IS NULL OR customer_id = $3) \
             ORDER BY hour_start, customer_id"
        )))
        .bind(from_unix as f64)
        .bind(to_unix as f64)
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        rows.into_iter().map(ledger_row).collect()
    }

    async fn revision_sum(&self, customer_id: &str, from_unix: i64, to_unix: i64) -> Result<u64, RollupStoreError> {
        let sum = sqlx::query_scalar!(
            r#"SELECT coalesce(sum(revision), 0)::bigint AS "sum!" FROM hour_revisions
               WHERE customer_id = $1 AND hour_start >= to_timestamp($2) AND hour_start < to_timestamp($3)"#,
            customer_id,
            from_unix as f64,
            to_unix as f64
        )
        .fetch_one(&self.pool)
        .await
        .map_err(rollup_store_error)?;
        Ok(sum as u64)
    }

    async fn watch_changes(&self, changes: Arc<RollupChanges>) {
        if self.pool.options().get_max_connections() < 2 {
            // The listener keeps its connection: with one in all, no request could read anything.
            tracing::info!("one database connection: the report cache checks every use against the rollups");
            return;
        }
        let mut retry_after = LISTEN_RETRY_FIRST;
        loop {
            let result = self.listen_for_changes(&changes).await;
            let was_listening = changes.is_listening();
            changes.not_listening();
            match result {
                Ok(()) => tracing::warn!("rollup change listener lost its connection, reconnecting"),
                // The pool closes at shutdown: nothing left to listen for.
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) if is_read_only(&error) => {
                    // A read replica (hot standby) refuses LISTEN, and its rows may lag the primary's
                    // announcements anyway: the cache reads revision sums there, as without a listener.
                    tracing::info!(%error, "rollup store is read-only, report cache checks every use against it");
                    return;
                }
                Err(error) => tracing::warn!(%error, "rollup change listener failed"),
            }
            if was_listening {
                retry_after = LISTEN_RETRY_FIRST;
            }
            tokio::time::sleep(retry_after).await;
            retry_after = (retry_after * 2).min(LISTEN_RETRY_MAX);
        }
    }

    async fn check_ready(&self) -> Result<(), RollupStoreError> {
        sqlx::query_scalar!("SELECT count(*) FROM hour_revisions WHERE false")
            .fetch_one(&self.pool)
            .await
            .map_err(rollup_store_error)?;
        Ok(())
    }
}
