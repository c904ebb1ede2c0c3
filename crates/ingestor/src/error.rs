//! Errors that stop the ingestor.

use hourglass_core::event_log::EventLogError;

/// Why the ingest loop stopped before it was told to. The raw store and the job queue being down is not
/// one (the loop retries them); the event log failing for good is: the loop cannot know what it has
/// ingested without it. Nothing past the last commit is lost: it is delivered again at the next start.
#[derive(Debug, thiserror::Error)]
pub enum IngestorError {
    /// The event log could not be read, or a commit failed fatally.
    #[error("event log failed: {0}")]
    Log(#[source] EventLogError),
}
