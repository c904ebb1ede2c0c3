//! The [`RollupReader`] of standalone mode: what the query service reads from `meta.db`, always scoped
//! to one customer (the ledger may also be read for all, by operators).

use hourglass_core::rollup_reader::{
    AppliedErasure, EventTypeSeen, HourStatus, HourlyNumericRow, HourlyRollupRow, HourlyTotalsRow, RollupReader,
};
use hourglass_core::rollup_store::{LedgerRow, RollupStoreError};

use super::rollups::{LEDGER_COLUMNS, LedgerTuple, ledger_row, unavailable};
use super::{SqliteMetaStore, count_from_sql, micros_to_seconds, placeholders};

/// `AND event_type IN (?, …)` for a non-empty filter; nothing (every type) for an empty one. Only
/// placeholders go into the SQL, the types are bound.
fn event_type_filter(event_types: &[String]) -> String {
    if event_types.is_empty() {
        String::new()
    } else {
        format!("AND event_type IN ({})", placeholders(event_types.len()))
    }
}

/// An hour status row: hour, revision, logic version, final, final as of (µs), computed at (µs),
/// events, pending, why later data was refused.
type StatusTuple =
    (i64, Option<i64>, Option<i64>, Option<bool>, Option<i64>, Option<i64>, Option<i64>, bool, Option<String>);

/// An `erasure_hours` row as `applied_erasures` selects it: hour, request id, events, revision, erased at
/// (microseconds).
type AppliedErasureTuple = (i64, String, i64, Option<i64>, Option<i64>);

impl RollupReader for SqliteMetaStore {
    async fn hourly_rollups(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
        event_types: &[String],
        with_sketches: bool,
    ) -> Result<Vec<HourlyRollupRow>, RollupStoreError> {
        // Without sketches the column is never read, so its pages (about 4 KiB a row) stay on disk.
        let sketch_column = if with_sketches { "users_sketch" } else { "X''" };
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT hour_start, event_type, events, distinct_users, {sketch_column} FROM hourly_rollups \
             WHERE customer_id = ? AND hour_start >= ? AND hour_start < ? {} \
             ORDER BY hour_start, event_type",
            event_type_filter(event_types)
        )))
        .bind(customer_id)
        .bind(from_unix)
        .bind(to_unix);
        for event_type in event_types {
            query = query.bind(event_type);
        }
        let rows: Vec<(i64, String, i64, i64, Vec<u8>)> = query.fetch_all(&self.readers).await.map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(hour_start, event_type, events, distinct_users, users_sketch)| HourlyRollupRow {
                hour_start,
                event_type,
                events: count_from_sql(events),
                distinct_users: count_from_sql(distinct_users),
                users_sketch,
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
        let sketch_column = if with_sketches { "users_sketch" } else { "X''" };
        let rows: Vec<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT hour_start, events, distinct_users, {sketch_column} FROM hour_revisions \
             WHERE customer_id = ? AND hour_start >= ? AND hour_start < ? AND events > 0 \
             ORDER BY hour_start"
        )))
        .bind(customer_id)
        .bind(from_unix)
        .bind(to_unix)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(hour_start, events, distinct_users, users_sketch)| HourlyTotalsRow {
                hour_start,
                events: count_from_sql(events),
                distinct_users: count_from_sql(distinct_users),
                users_sketch,
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
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT hour_start, event_type, property, count, sum, min, max FROM hourly_numeric_stats \
             WHERE customer_id = ? AND hour_start >= ? AND hour_start < ? {} \
             ORDER BY hour_start, event_type, property",
            event_type_filter(event_types)
        )))
        .bind(customer_id)
        .bind(from_unix)
        .bind(to_unix);
        for event_type in event_types {
            query = query.bind(event_type);
        }
        let rows: Vec<(i64, String, String, i64, f64, f64, f64)> =
            query.fetch_all(&self.readers).await.map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(hour_start, event_type, property, count, sum, min, max)| HourlyNumericRow {
                hour_start,
                event_type,
                property,
                count: count_from_sql(count),
                sum,
                min,
                max,
            })
            .collect())
    }

    async fn event_types(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> Result<Vec<EventTypeSeen>, RollupStoreError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT event_type, sum(events), min(hour_start), max(hour_start) FROM hourly_rollups \
             WHERE customer_id = ? AND hour_start >= ? AND hour_start < ? AND events > 0 \
             GROUP BY event_type ORDER BY event_type",
        )
        .bind(customer_id)
        .bind(from_unix)
        .bind(to_unix)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(event_type, events, first_hour, last_hour)| EventTypeSeen {
                event_type,
                events: count_from_sql(events),
                first_hour,
                last_hour,
            })
            .collect())
    }

    async fn hour_statuses(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> Result<Vec<HourStatus>, RollupStoreError> {
        let rows: Vec<StatusTuple> = sqlx::query_as(
            "SELECT hours.hour_start, revisions.revision, revisions.logic_version, revisions.is_final, \
                    revisions.final_as_of_us, revisions.computed_at_us, revisions.events, \
                    hours.generation > max(hours.aggregated_generation, hours.refused_generation), \
                    CASE WHEN hours.refused_generation > hours.aggregated_generation THEN hours.refused_reason END \
             FROM dirty_hours AS hours \
             LEFT JOIN hour_revisions AS revisions \
                  ON revisions.customer_id = hours.customer_id AND revisions.hour_start = hours.hour_start \
             WHERE hours.customer_id = ? AND hours.hour_start >= ? AND hours.hour_start < ? \
             ORDER BY hours.hour_start",
        )
        .bind(customer_id)
        .bind(from_unix)
        .bind(to_unix)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let (
                    hour_start,
                    revision,
                    logic_version,
                    is_final,
                    final_as_of_us,
                    computed_at_us,
                    events,
                    pending,
                    refused,
                ) = row;
                HourStatus {
                    hour_start,
                    revision: revision.map(|revision| u32::try_from(revision).unwrap_or(u32::MAX)),
                    logic_version: logic_version.map(|version| u32::try_from(version).unwrap_or(u32::MAX)),
                    is_final: is_final.unwrap_or(false),
                    final_as_of: final_as_of_us.map(micros_to_seconds),
                    computed_at: computed_at_us.map(micros_to_seconds),
                    events: count_from_sql(events.unwrap_or(0)),
                    pending,
                    refused,
                }
            })
            .collect())
    }

    async fn applied_erasures(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> Result<Vec<AppliedErasure>, RollupStoreError> {
        let rows: Vec<AppliedErasureTuple> = sqlx::query_as(
            "SELECT hour_start, request_id, events, revision, erased_at_us FROM erasure_hours \
             WHERE customer_id = ? AND hour_start >= ? AND hour_start < ? ORDER BY hour_start, request_id",
        )
        .bind(customer_id)
        .bind(from_unix)
        .bind(to_unix)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(hour_start, request_id, events, revision, erased_at_us)| AppliedErasure {
                hour_start,
                request_id,
                events: u64::try_from(events).unwrap_or(0),
                revision: revision.map(|revision| u32::try_from(revision).unwrap_or(u32::MAX)),
                erased_at: erased_at_us.map(|micros| micros.div_euclid(1_000_000)),
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
             WHERE hour_start >= ?1 AND hour_start < ?2 AND (?3 IS NULL OR customer_id = ?3) \
             ORDER BY hour_start, customer_id"
        )))
        .bind(from_unix)
        .bind(to_unix)
        .bind(customer_id)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        rows.into_iter().map(ledger_row).collect()
    }

    async fn revision_sum(&self, customer_id: &str, from_unix: i64, to_unix: i64) -> Result<u64, RollupStoreError> {
        let sum: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(revision), 0) FROM hour_revisions \
             WHERE customer_id = ? AND hour_start >= ? AND hour_start < ?",
        )
        .bind(customer_id)
        .bind(from_unix)
        .bind(to_unix)
        .fetch_one(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(count_from_sql(sum))
    }

    async fn check_ready(&self) -> Result<(), RollupStoreError> {
        self.check_space().await.map_err(super::rollups::write_failed)?;
        sqlx::query("SELECT 1 FROM hour_revisions WHERE 0").fetch_optional(&self.readers).await.map_err(unavailable)?;
        Ok(())
    }
}
