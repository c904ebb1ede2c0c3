//! [`QueryError`]: every way a query can fail, and the one place each becomes a gRPC status.
//!
//! The codes say what the caller can do: INVALID_ARGUMENT (fix the request; the field is named in a
//! `BadRequest` detail), UNAUTHENTICATED / PERMISSION_DENIED (the key), UNAVAILABLE (retry: a store could
//! not be reached), FAILED_PRECONDITION (the deployment is not ready: a store's schema is missing or
//! behind — retrying will not help until an operator migrates), INTERNAL (stored data this build cannot
//! read, or a bug).

use hourglass_core::erasure::{ErasureStoreError, FindHoursError};
use hourglass_core::hll::InvalidSketch;
use hourglass_core::raw_store::RawStoreError;
use hourglass_core::rollup_store::RollupStoreError;
use hourglass_grpc::auth::AuthError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A request field is missing or out of bounds.
    #[error("{field}: {description}")]
    InvalidArgument {
        /// The field, as the proto names it.
        field: String,
        /// What is wrong with it, naming the limit and its flag where there is one.
        description: String,
    },
    /// The caller's key.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Reading rollups, statuses or the ledger failed.
    #[error("rollup store: {0}")]
    Rollups(#[from] RollupStoreError),
    /// Reading raw events failed.
    #[error("raw store: {0}")]
    RawStore(#[from] RawStoreError),
    /// A stored sketch this build cannot read.
    #[error("stored rollup is unreadable: {0}")]
    UnreadableRollup(#[from] InvalidSketch),
    /// Reading or recording erasure requests failed.
    #[error("erasure store: {0}")]
    Erasures(#[from] ErasureStoreError),
    /// The serving role has no erasure salt, so it cannot name the person of a request.
    #[error(
        "no erasure salt: this role needs --erasure-salt (HOURGLASS_ERASURE_SALT), the same secret as the \
         aggregator's, to accept erasure requests"
    )]
    NoErasureSalt,
    /// The key may not act on what the request names.
    #[error("{0}")]
    PermissionDenied(String),
    /// What the request names does not exist (for the key's customer).
    #[error("{0}")]
    NotFound(String),
}

impl From<FindHoursError> for QueryError {
    fn from(error: FindHoursError) -> Self {
        match error {
            FindHoursError::RollupStore(error) => QueryError::Rollups(error),
            FindHoursError::RawStore(error) => QueryError::RawStore(error),
        }
    }
}

impl QueryError {
    /// An invalid `field`.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        QueryError::InvalidArgument { field: field.to_owned(), description: description.into() }
    }

    /// The status code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            QueryError::InvalidArgument { .. } => Code::InvalidArgument,
            QueryError::Auth(error) => error.code(),
            QueryError::Rollups(RollupStoreError::Unavailable(_)) => Code::Unavailable,
            QueryError::Rollups(RollupStoreError::Schema(_)) => Code::FailedPrecondition,
            QueryError::Rollups(RollupStoreError::NonFinite { .. } | RollupStoreError::InvalidData(_)) => {
                Code::Internal
            }
            QueryError::RawStore(RawStoreError::Unavailable(_)) => Code::Unavailable,
            QueryError::RawStore(RawStoreError::Schema(_)) => Code::FailedPrecondition,
            QueryError::UnreadableRollup(_) => Code::Internal,
            QueryError::Erasures(ErasureStoreError::Unavailable(_)) => Code::Unavailable,
            QueryError::Erasures(ErasureStoreError::Schema(_)) => Code::FailedPrecondition,
            QueryError::Erasures(ErasureStoreError::InvalidData(_)) => Code::Internal,
            QueryError::NoErasureSalt => Code::FailedPrecondition,
            QueryError::PermissionDenied(_) => Code::PermissionDenied,
            QueryError::NotFound(_) => Code::NotFound,
        }
    }
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        let code = error.code();
        match error {
            QueryError::InvalidArgument { field, description } => Status::with_error_details(
                Code::InvalidArgument,
                format!("{field}: {description}"),
                ErrorDetails::with_bad_request_violation(field, description),
            ),
            QueryError::Auth(error) => Status::from(error),
            QueryError::NoErasureSalt | QueryError::PermissionDenied(_) | QueryError::NotFound(_) => {
                Status::new(code, error.to_string())
            }
            other => {
                tracing::warn!(error = %other, ?code, "query failed");
                Status::new(code, other.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_the_code_that_says_what_the_caller_can_do() {
        let status = Status::from(QueryError::invalid("range", "is required"));
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "range: is required"));
        assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "range");
        let code = |error: QueryError| Status::from(error).code();
        assert_eq!(code(RollupStoreError::Unavailable("down".into()).into()), Code::Unavailable);
        assert_eq!(code(RawStoreError::Unavailable("down".into()).into()), Code::Unavailable);
        // A missing keyspace is for an operator to fix: retrying as UNAVAILABLE invites would not help.
        assert_eq!(
            code(RawStoreError::Schema("keyspace hourglass does not exist".into()).into()),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(RollupStoreError::Schema("relation \"rollups\" does not exist".into()).into()),
            Code::FailedPrecondition
        );
        assert_eq!(code(RollupStoreError::InvalidData("customer id \"\"".into()).into()), Code::Internal);
        assert_eq!(code(AuthError::Unknown.into()), Code::Unauthenticated);
        let non_finite =
            RollupStoreError::NonFinite { event_type: "t".into(), property: "p".into(), stat: "sum", value: f64::NAN };
        assert_eq!(code(non_finite.into()), Code::Internal);
        assert_eq!(code(ErasureStoreError::Unavailable("down".into()).into()), Code::Unavailable);
        let no_salt = Status::from(QueryError::NoErasureSalt);
        assert_eq!(no_salt.code(), Code::FailedPrecondition);
        assert!(no_salt.message().contains("--erasure-salt"), "{}", no_salt.message());
    }
}
