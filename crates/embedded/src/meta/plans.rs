//! The [`PlanStore`] of standalone mode: tracking plan versions in `meta.db`.

use chrono::{DateTime, Utc};
use hourglass_core::customer::CustomerId;
use hourglass_core::tracking_plan::PlanDocument;
use hourglass_core::tracking_plan::store::{self, PlanStore, PlanStoreError, PushOutcome, StoredPlan};

use super::{SqliteMetaStore, now_micros};

fn unavailable(error: sqlx::Error) -> PlanStoreError {
    PlanStoreError::Unavailable(Box::new(error))
}

fn stored(
    customer_id: &CustomerId,
    (version, document, created_at_us): (i64, String, i64),
) -> Result<StoredPlan, PlanStoreError> {
    let version = u32::try_from(version)
        .map_err(|_| PlanStoreError::InvalidData(format!("plan version {version} of {customer_id}")))?;
    let created_at = DateTime::<Utc>::from_timestamp_micros(created_at_us)
        .ok_or_else(|| PlanStoreError::InvalidData(format!("instant out of range: {created_at_us} µs")))?;
    Ok(StoredPlan { version, document: store::parse_stored(customer_id, version, &document)?, created_at })
}

impl PlanStore for SqliteMetaStore {
    async fn push_plan(
        &self,
        customer_id: &CustomerId,
        document: &PlanDocument,
    ) -> Result<PushOutcome, PlanStoreError> {
        let canonical = document.canonical_json();
        // `BEGIN IMMEDIATE` holds the write lock from here, so two pushes never read the same current
        // version (module doc of `meta`).
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let now_us = now_micros();
        sqlx::query("INSERT INTO customers (customer_id, created_at_us) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(customer_id.as_str())
            .bind(now_us)
            .execute(&mut *transaction)
            .await
            .map_err(unavailable)?;
        let current: Option<(i64, String)> = sqlx::query_as(
            "SELECT version, document FROM tracking_plans WHERE customer_id = ? ORDER BY version DESC LIMIT 1",
        )
        .bind(customer_id.as_str())
        .fetch_optional(&mut *transaction)
        .await
        .map_err(unavailable)?;
        let current_version = current.as_ref().map_or(0, |(version, _)| u32::try_from(*version).unwrap_or(0));
        if current.as_ref().is_some_and(|(_, stored)| *stored == canonical) {
            return Ok(PushOutcome::Unchanged(current_version));
        }
        let next_version = current_version + 1;
        sqlx::query("INSERT INTO tracking_plans (customer_id, version, document, created_at_us) VALUES (?, ?, ?, ?)")
            .bind(customer_id.as_str())
            .bind(i64::from(next_version))
            .bind(&canonical)
            .bind(now_us)
            .execute(&mut *transaction)
            .await
            .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(PushOutcome::Created(next_version))
    }

    async fn current_version(&self, customer_id: &CustomerId) -> Result<u32, PlanStoreError> {
        let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM tracking_plans WHERE customer_id = ?")
            .bind(customer_id.as_str())
            .fetch_one(&self.readers)
            .await
            .map_err(unavailable)?;
        Ok(version.and_then(|version| u32::try_from(version).ok()).unwrap_or(0))
    }

    async fn plan(&self, customer_id: &CustomerId, version: Option<u32>) -> Result<Option<StoredPlan>, PlanStoreError> {
        let row: Option<(i64, String, i64)> = sqlx::query_as(
            "SELECT version, document, created_at_us FROM tracking_plans \
             WHERE customer_id = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY version DESC LIMIT 1",
        )
        .bind(customer_id.as_str())
        .bind(version.map(i64::from))
        .fetch_optional(&self.readers)
        .await
        .map_err(unavailable)?;
        row.map(|row| stored(customer_id, row)).transpose()
    }

    async fn plan_history(&self, customer_id: &CustomerId) -> Result<Vec<StoredPlan>, PlanStoreError> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT version, document, created_at_us FROM tracking_plans WHERE customer_id = ? ORDER BY version",
        )
        .bind(customer_id.as_str())
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        rows.into_iter().map(|row| stored(customer_id, row)).collect()
    }
}
