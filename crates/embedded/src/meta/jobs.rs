//! The [`JobQueue`] of standalone mode: the ingestion loop marks customer-hours dirty in `meta.db`.

use std::collections::BTreeSet;

use hourglass_core::job_queue::{CustomerHour, JobQueue, JobQueueError};

use super::{SqliteMetaStore, now_micros};

fn unavailable(error: sqlx::Error) -> JobQueueError {
    JobQueueError::Unavailable(Box::new(error))
}

impl JobQueue for SqliteMetaStore {
    async fn mark_dirty(&self, hours: &[CustomerHour]) -> Result<(), JobQueueError> {
        // Each distinct hour is bumped once per call, however often the batch names it (as Postgres's
        // `SELECT DISTINCT` does): the generation counts marks, not events.
        let distinct_hours: BTreeSet<(&str, i64)> =
            hours.iter().map(|hour| (hour.customer_id.as_str(), hour.hour_start)).collect();
        if distinct_hours.is_empty() {
            return Ok(());
        }
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let now_us = now_micros();
        for (customer_id, hour_start) in distinct_hours {
            sqlx::query(
                "INSERT INTO dirty_hours (customer_id, hour_start, first_marked_at_us, last_marked_at_us) \
                 VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (customer_id, hour_start) DO UPDATE \
                 SET generation = generation + 1, last_marked_at_us = excluded.last_marked_at_us",
            )
            .bind(customer_id)
            .bind(hour_start)
            .bind(now_us)
            .execute(&mut *transaction)
            .await
            .map_err(unavailable)?;
        }
        transaction.commit().await.map_err(unavailable)
    }

    async fn check_ready(&self) -> Result<(), JobQueueError> {
        sqlx::query("SELECT 1 FROM dirty_hours WHERE 0").fetch_optional(&self.readers).await.map_err(unavailable)?;
        Ok(())
    }
}
