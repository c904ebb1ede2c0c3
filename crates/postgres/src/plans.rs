//! [`PostgresPlanStore`]: customers' tracking plans in Postgres, one row per version.

use hourglass_core::customer::CustomerId;
use hourglass_core::tracking_plan::PlanDocument;
use hourglass_core::tracking_plan::store::{self, PlanStore, PlanStoreError, PushOutcome, StoredPlan};
use sqlx::PgPool;

use crate::errors::is_schema_problem;

/// The Postgres implementation of [`PlanStore`].
#[derive(Clone, Debug)]
pub struct PostgresPlanStore {
    pool: PgPool,
}

impl PostgresPlanStore {
    /// A plan store over an existing pool (whose schema is migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn plan_store_error(error: sqlx::Error) -> PlanStoreError {
    if is_schema_problem(&error) {
        PlanStoreError::Schema(Box::new(error))
    } else {
        PlanStoreError::Unavailable(Box::new(error))
    }
}

fn version_from_sql(customer_id: &CustomerId, version: i32) -> Result<u32, PlanStoreError> {
    u32::try_from(version).map_err(|_| PlanStoreError::InvalidData(format!("plan version {version} of {customer_id}")))
}

fn stored(
    customer_id: &CustomerId,
    version: i32,
    document: &str,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Result<StoredPlan, PlanStoreError> {
    let version = version_from_sql(customer_id, version)?;
    Ok(StoredPlan { version, document: store::parse_stored(customer_id, version, document)?, created_at })
}

impl PlanStore for PostgresPlanStore {
    async fn push_plan(
        &self,
        customer_id: &CustomerId,
        document: &PlanDocument,
    ) -> Result<PushOutcome, PlanStoreError> {
        let canonical = document.canonical_json();
        let mut transaction = self.pool.begin().await.map_err(plan_store_error)?;
        sqlx::query!("INSERT INTO customers (customer_id) VALUES ($1) ON CONFLICT DO NOTHING", customer_id.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(plan_store_error)?;
        // The customer's row is the lock that serializes its pushes: the second waits here and then
        // sees the first's version.
        sqlx::query!("SELECT customer_id FROM customers WHERE customer_id = $1 FOR UPDATE", customer_id.as_str())
            .fetch_one(&mut *transaction)
            .await
            .map_err(plan_store_error)?;
        let current = sqlx::query!(
            "SELECT version, document FROM tracking_plans WHERE customer_id = $1 ORDER BY version DESC LIMIT 1",
            customer_id.as_str()
        )
        .fetch_optional(&mut *transaction)
        .await
        .map_err(plan_store_error)?;
        let current_version = match &current {
            Some(row) => version_from_sql(customer_id, row.version)?,
            None => 0,
        };
        if current.as_ref().is_some_and(|row| row.document == canonical) {
            return Ok(PushOutcome::Unchanged(current_version));
        }
        let next_version = current_version + 1;
        sqlx::query!(
            "INSERT INTO tracking_plans (customer_id, version, document) VALUES ($1, $2, $3)",
            customer_id.as_str(),
            i32::try_from(next_version).unwrap_or(i32::MAX),
            canonical
        )
        .execute(&mut *transaction)
        .await
        .map_err(plan_store_error)?;
        transaction.commit().await.map_err(plan_store_error)?;
        Ok(PushOutcome::Created(next_version))
    }

    async fn current_version(&self, customer_id: &CustomerId) -> Result<u32, PlanStoreError> {
        let version =
            sqlx::query_scalar!("SELECT max(version) FROM tracking_plans WHERE customer_id = $1", customer_id.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(plan_store_error)?;
        version.map_or(Ok(0), |version| version_from_sql(customer_id, version))
    }

    async fn plan(&self, customer_id: &CustomerId, version: Option<u32>) -> Result<Option<StoredPlan>, PlanStoreError> {
        let wanted = version.map(|version| i32::try_from(version).unwrap_or(i32::MAX));
        let row = sqlx::query!(
            "SELECT version, document, created_at FROM tracking_plans \
             WHERE customer_id = $1 AND ($2::integer IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
            customer_id.as_str(),
            wanted
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(plan_store_error)?;
        row.map(|row| stored(customer_id, row.version, &row.document, row.created_at)).transpose()
    }

    async fn plan_history(&self, customer_id: &CustomerId) -> Result<Vec<StoredPlan>, PlanStoreError> {
        let rows = sqlx::query!(
            "SELECT version, document, created_at FROM tracking_plans WHERE customer_id = $1 ORDER BY version",
            customer_id.as_str()
        )
        .fetch_all(&self.pool)
        .await
        .map_err(plan_store_error)?;
        rows.iter().map(|row| stored(customer_id, row.version, &row.document, row.created_at)).collect()
    }
}
