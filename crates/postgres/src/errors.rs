//! How a database error reaches the seams: a schema problem, which only an operator's migration fixes, or
//! the store being unavailable, which a retry may. The distinction becomes the gRPC code a caller sees
//! (FAILED_PRECONDITION vs UNAVAILABLE) and whether a stage keeps retrying quietly or says what to run.

use hourglass_core::BoxError;
use hourglass_core::erasure::ErasureStoreError;
use hourglass_core::job_queue::JobQueueError;
use hourglass_core::key_store::KeyStoreError;
use hourglass_core::rollup_store::RollupStoreError;

/// SQLSTATEs that mean the schema is missing or behind this build: undefined table, column, function or
/// schema, and a database that does not exist.
const SCHEMA_STATES: [&str; 5] = ["42P01", "42703", "42883", "3F000", "3D000"];

/// Whether `error` says the schema is missing or behind this build.
pub(crate) fn is_schema_problem(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database.code().is_some_and(|code| SCHEMA_STATES.contains(&code.as_ref())),
        _ => false,
    }
}

/// What `hourglass migrate` fixes, said the same way by every store.
pub(crate) const SCHEMA_BEHIND: &str = "postgres schema is behind this build: run `hourglass migrate postgres`";

/// `error` as a [`RollupStoreError`], its cause kept.
pub(crate) fn rollup_store_error(error: sqlx::Error) -> RollupStoreError {
    if is_schema_problem(&error) {
        RollupStoreError::Schema(Box::new(error))
    } else {
        RollupStoreError::Unavailable(Box::new(error))
    }
}

/// `error` as a [`JobQueueError`], its cause kept.
pub(crate) fn job_queue_error(error: sqlx::Error) -> JobQueueError {
    if is_schema_problem(&error) {
        JobQueueError::Schema(Box::new(error))
    } else {
        JobQueueError::Unavailable(Box::new(error))
    }
}

/// `error` as an [`ErasureStoreError`], its cause kept.
pub(crate) fn erasure_store_error(error: sqlx::Error) -> ErasureStoreError {
    if is_schema_problem(&error) {
        ErasureStoreError::Schema(Box::new(error))
    } else {
        ErasureStoreError::Unavailable(Box::new(error))
    }
}

/// `error` as a [`KeyStoreError`], its cause kept.
pub(crate) fn key_store_error(error: sqlx::Error) -> KeyStoreError {
    if is_schema_problem(&error) {
        KeyStoreError::Schema(Box::new(error))
    } else {
        KeyStoreError::Unavailable(Box::new(error))
    }
}

/// The cause a store's readiness check reports when migrations are missing.
pub(crate) fn schema_behind() -> BoxError {
    SCHEMA_BEHIND.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_without_a_schema_state_are_unavailable() {
        assert!(!is_schema_problem(&sqlx::Error::PoolTimedOut));
        assert!(matches!(rollup_store_error(sqlx::Error::PoolTimedOut), RollupStoreError::Unavailable(_)));
        assert!(matches!(job_queue_error(sqlx::Error::PoolClosed), JobQueueError::Unavailable(_)));
    }
}
