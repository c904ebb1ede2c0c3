//! The [`JobQueue`] of standalone mode: the ingestion loop marks customer-hours dirty in `meta.db`.

use std::collections::BTreeSet;

use hourglass_core::job_queue::{CustomerHour, JobQueue, JobQueueError};

use super::{SqliteMetaStore, now_micros};
use crate::disk_full::WriteError;

fn unavailable(error: sqlx::Error) -> JobQueueError {
    JobQueueError::Unavailable(Box::new(error))
}

fn write_failed(error: WriteError) -> JobQueueError {
    JobQueueError::Unavailable(error.boxed())
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
        let marked = async {
            let mut transaction = self.begin_write().await?;
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
                .await?;
            }
            transaction.commit().await
        };
        self.disk.observe(marked.await).map_err(write_failed)
    }

    async fn check_ready(&self) -> Result<(), JobQueueError> {
        self.check_space().await.map_err(write_failed)?;
        sqlx::query("SELECT 1 FROM dirty_hours WHERE 0").fetch_optional(&self.readers).await.map_err(unavailable)?;
        Ok(())
    }
}
