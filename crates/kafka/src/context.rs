//! How librdkafka's own logs and errors reach Hourglass's logs.
//!
//! librdkafka reports a broker that is down as an error, repeatedly, while it reconnects. For Hourglass
//! that is not data loss (nothing unconfirmed is ever acked) but a condition an operator should see, so
//! it is logged at WARN; ERROR stays reserved for data loss or required action (a fatal client error).

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The client context of every Hourglass Kafka client.
#[derive(Clone, Copy, Debug, Default)]
pub struct HourglassKafkaContext;

impl ClientContext for HourglassKafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(target: "librdkafka", %error, reason, "fatal kafka client error: restart the process");
        } else {
            tracing::warn!(target: "librdkafka", %error, reason, "kafka client error (retrying)");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for HourglassKafkaContext {}
