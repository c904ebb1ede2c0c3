//! [`PostgresJobQueue`]: customer-hours awaiting aggregation, in Postgres.
//!
//! Why Postgres and not the CQL store: the aggregator leases jobs with `FOR UPDATE SKIP LOCKED` and
//! writes rollups in one Postgres transaction with the job's completion; keeping the marks in the same
//! database makes "mark done unless re-dirtied meanwhile" a single atomic statement.

use hourglass_core::job_queue::{CustomerHour, JobQueue, JobQueueError};
use sqlx::PgPool;

use crate::errors::{job_queue_error, schema_behind};

/// The Postgres implementation of [`JobQueue`].
#[derive(Clone, Debug)]
pub struct PostgresJobQueue {
    pool: PgPool,
}

impl PostgresJobQueue {
    /// A job queue over an existing pool (whose schema is migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Every dirty hour with its generation, oldest first (for tests and tools).
    pub async fn dirty_hours(&self) -> Result<Vec<(CustomerHour, i64)>, JobQueueError> {
        let rows = sqlx::query!(
            r#"SELECT customer_id, extract(epoch FROM hour_start)::bigint AS "hour_start!", generation FROM dirty_hours
               ORDER BY hour_start, customer_id"#
        )
        .fetch_all(&self.pool)
        .await
        .map_err(job_queue_error)?;
        rows.into_iter()
            .map(|row| {
                let customer_id = hourglass_core::customer::CustomerId::new(&row.customer_id)
                    .map_err(|error| JobQueueError::Unavailable(Box::new(error)))?;
                Ok((CustomerHour { customer_id, hour_start: row.hour_start }, row.generation))
            })
            .collect()
    }
}

impl JobQueue for PostgresJobQueue {
    async fn mark_dirty(&self, hours: &[CustomerHour]) -> Result<(), JobQueueError> {
        if hours.is_empty() {
            return Ok(());
        }
        let customers: Vec<&str> = hours.iter().map(|hour| hour.customer_id.as_str()).collect();
        let starts: Vec<i64> = hours.iter().map(|hour| hour.hour_start).collect();
        sqlx::query(
            "INSERT INTO dirty_hours (customer_id, hour_start) \
             SELECT DISTINCT customer_id, to_timestamp(hour_start) FROM unnest($1::text[], $2::bigint[]) AS marks(customer_id, hour_start) \
             ON CONFLICT (customer_id, hour_start) DO UPDATE \
             SET generation = dirty_hours.generation + 1, last_marked_at = now()",
        )
        .bind(&customers)
        .bind(&starts)
        .execute(&self.pool)
        .await
        .map_err(job_queue_error)?;
        Ok(())
    }

    async fn check_ready(&self) -> Result<(), JobQueueError> {
        let current = crate::migrate::is_current(&self.pool).await.map_err(job_queue_error)?;
        if current { Ok(()) } else { Err(JobQueueError::Schema(schema_behind())) }
    }
}
