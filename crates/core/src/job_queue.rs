//! The [`JobQueue`] seam: customer-hours that need (re)aggregation.
//!
//! The ingestor marks every customer-hour it wrote to as dirty, after the write and before committing
//! its Kafka offsets; the aggregator (a later stage) turns dirty hours into jobs. Postgres in
//! distributed mode (`hourglass-postgres`), the embedded store in standalone mode.

use std::future::Future;

use crate::BoxError;
use crate::customer::CustomerId;

/// A customer and the start of one UTC hour, in seconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerHour {
    /// The customer.
    pub customer_id: CustomerId,
    /// The start of the hour, in seconds since the Unix epoch (a multiple of 3600).
    pub hour_start: i64,
}

/// Errors from a job queue.
#[derive(Debug, thiserror::Error)]
pub enum JobQueueError {
    /// The queue could not be reached; retrying is safe (marking is idempotent).
    #[error("job queue unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The queue's schema is missing or behind this build: an operator must migrate.
    #[error("job queue schema problem: {0}")]
    Schema(#[source] BoxError),
}

/// Customer-hours awaiting aggregation.
pub trait JobQueue: Send + Sync + 'static {
    /// Marks these customer-hours as needing (re)aggregation. Marking an hour again bumps its
    /// generation, so an aggregation that started before the new data saw it is redone.
    fn mark_dirty(&self, hours: &[CustomerHour]) -> impl Future<Output = Result<(), JobQueueError>> + Send;

    /// Checks the queue answers, for readiness.
    fn check_ready(&self) -> impl Future<Output = Result<(), JobQueueError>> + Send;
}
