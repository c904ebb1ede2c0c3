//! [`CollectorError`]: every way the collector refuses a call or stops, and the one place each becomes a
//! gRPC status.
//!
//! The codes say what the client can do: UNAUTHENTICATED / PERMISSION_DENIED (the key),
//! RESOURCE_EXHAUSTED (the customer's own limits: its quota or its open streams; retry later or send
//! differently), UNAVAILABLE (this collector cannot take the batch now: its memory budget is full, it is
//! shutting down, or the event log did not confirm; resend, possibly to another replica), INVALID_ARGUMENT
//! (the batch itself), DEADLINE_EXCEEDED (an idle stream), FAILED_PRECONDITION (the key store's schema is
//! missing: an operator must migrate). Where the client should wait, a `RetryInfo` detail says how long.

use std::time::Duration;

use hourglass_core::customer::CustomerId;
use hourglass_grpc::auth::AuthError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why the collector refused a call, ended a stream, or could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The caller's key.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The customer already has `--max-streams-per-customer` streams open on this collector.
    #[error(
        "customer {customer_id} already has {open} streams open on this collector; the limit is {limit} \
         (--max-streams-per-customer): send more batches per stream instead"
    )]
    TooManyStreams {
        /// The customer.
        customer_id: CustomerId,
        /// Its streams open now.
        open: usize,
        /// The limit.
        limit: usize,
    },
    /// The process-wide budget of decoded batches stayed full for `--budget-wait-ms`.
    #[error("the collector's memory budget is full (--max-in-flight-bytes): retry after the delay")]
    MemoryBudgetFull,
    /// A unary batch was over the customer's events-per-second quota.
    #[error("over the events-per-second quota: retry after {retry_after_ms} ms")]
    Throttled {
        /// When the quota has room again.
        retry_after_ms: u32,
    },
    /// A unary batch was refused as a whole (empty, too large, too many events).
    #[error("{0}")]
    InvalidBatch(String),
    /// A unary batch could not be made durable (the event log did not confirm it in time, or the key
    /// store could not re-check the key); resending it is safe.
    #[error("{message}")]
    BatchUnavailable {
        /// What failed.
        message: String,
        /// When to resend.
        retry_after_ms: u32,
    },
    /// An event of a batch is no `hourglass.v1.Event` (prost's verdict on its bytes). The call fails with
    /// INTERNAL, as it did when tonic decoded the events with the request.
    #[error("event {index} of the batch: {source}")]
    UndecodableEvent {
        /// The event's position in its batch.
        index: usize,
        /// prost's error.
        #[source]
        source: prost::DecodeError,
    },
    /// A batch ended without a status: a bug.
    #[error("batch ended without a status")]
    NoBatchStatus,
    /// The collector is shutting down; the stream's acked batches are durable, the rest must be resent.
    #[error("collector is shutting down: reconnect and resend unacknowledged batches")]
    ShuttingDown,
    /// A stream sent no batch for `--idle-stream-timeout-secs`.
    #[error("no batch for {idle_secs} s (--idle-stream-timeout-secs)")]
    IdleStream {
        /// The timeout.
        idle_secs: u64,
    },
    /// The gRPC server could not start or failed.
    #[error(transparent)]
    Server(#[from] hourglass_grpc::server::GrpcServerError),
}

impl CollectorError {
    /// The status code a call refused for this reason gets.
    pub fn code(&self) -> Code {
        match self {
            CollectorError::Auth(error) => error.code(),
            CollectorError::TooManyStreams { .. } | CollectorError::Throttled { .. } => Code::ResourceExhausted,
            CollectorError::MemoryBudgetFull
            | CollectorError::BatchUnavailable { .. }
            | CollectorError::ShuttingDown => Code::Unavailable,
            CollectorError::InvalidBatch(_) => Code::InvalidArgument,
            CollectorError::IdleStream { .. } => Code::DeadlineExceeded,
            // Internal is what tonic answers a message it cannot decode.
            CollectorError::UndecodableEvent { .. } | CollectorError::NoBatchStatus | CollectorError::Server(_) => {
                Code::Internal
            }
        }
    }

    /// How long the client should wait before resending, where that is known.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            // The budget frees as batches are acked, within a second or so under load.
            CollectorError::MemoryBudgetFull => Some(Duration::from_millis(1000)),
            CollectorError::Throttled { retry_after_ms } | CollectorError::BatchUnavailable { retry_after_ms, .. } => {
                Some(Duration::from_millis((*retry_after_ms).into()))
            }
            _ => None,
        }
    }
}

impl From<CollectorError> for Status {
    fn from(error: CollectorError) -> Self {
        let code = error.code();
        let message = error.to_string();
        match error {
            CollectorError::Auth(error) => Status::from(error),
            _ => match error.retry_after() {
                Some(delay) => Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay))),
                None => Status::new(code, message),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_the_code_that_says_what_the_client_can_do() {
        let status = |error: CollectorError| Status::from(error);
        let throttled = status(CollectorError::Throttled { retry_after_ms: 250 });
        assert_eq!(throttled.code(), Code::ResourceExhausted);
        assert_eq!(throttled.get_details_retry_info().unwrap().retry_delay, Some(Duration::from_millis(250)));
        let budget = status(CollectorError::MemoryBudgetFull);
        assert_eq!(budget.code(), Code::Unavailable);
        assert!(budget.message().contains("--max-in-flight-bytes"), "{}", budget.message());
        assert!(budget.get_details_retry_info().is_some());
        let streams =
            status(CollectorError::TooManyStreams { customer_id: "acme".parse().unwrap(), open: 64, limit: 64 });
        assert_eq!(streams.code(), Code::ResourceExhausted);
        assert!(streams.message().contains("--max-streams-per-customer"), "{}", streams.message());
        assert_eq!(status(CollectorError::ShuttingDown).code(), Code::Unavailable);
        assert_eq!(status(CollectorError::IdleStream { idle_secs: 60 }).code(), Code::DeadlineExceeded);
        assert_eq!(status(CollectorError::InvalidBatch("batch is empty".into())).code(), Code::InvalidArgument);
        assert_eq!(status(AuthError::Unknown.into()).code(), Code::Unauthenticated);
        assert_eq!(status(CollectorError::NoBatchStatus).code(), Code::Internal);
    }
}
