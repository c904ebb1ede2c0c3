//! Poison records: ones the ingestor cannot decode (garbage, an unknown schema version) go to the
//! dead-letter topic with the reason and their origin in headers, so their partition keeps moving and
//! nothing is dropped silently. `hourglass dlq` lists them and re-injects them into the events topic
//! once they can be read (after an ingestor upgrade, or with a corrected schema-version header). A
//! re-injected record takes the same idempotent path as any other, so re-injecting twice stores its
//! events once and counts its outcomes once (they are keyed by batch id).
//!
//! This module knows the dead-letter headers; reading the dead-letter topic is the log's business
//! (`hourglass dlq` reads it with `hourglass-kafka` and hands the records to [`DeadLetter::from_record`]).

use hourglass_core::event_log::{ConsumedRecord, EventLog, EventLogError, LogRecord, Topic};
use hourglass_core::record::SCHEMA_VERSION_HEADER;

/// Header: why the record was dead-lettered.
pub const REASON_HEADER: &str = "hg-dlq-reason";
/// Header: where it came from, as `topic/partition/offset`.
pub const SOURCE_HEADER: &str = "hg-dlq-source";
/// Header: when it was dead-lettered, in milliseconds since the Unix epoch.
pub const DEAD_LETTERED_AT_HEADER: &str = "hg-dlq-at-ms";

/// Header on a re-injected record: the dead-letter record it came from, as `topic/partition/offset`.
pub const REINJECTED_FROM_HEADER: &str = "hg-reinjected-from";

/// A record of the dead-letter topic.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Its partition in the dead-letter topic.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The original Kafka key (the customer).
    pub key: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Where it came from, `topic/partition/offset`.
    pub source: String,
    /// When, in milliseconds since the Unix epoch.
    pub dead_lettered_at_ms: Option<i64>,
    /// Its schema-version header, if it had one.
    pub schema_version: Option<String>,
    /// The original payload.
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// A record read from the dead-letter topic, with what its headers say.
    pub fn from_record(record: ConsumedRecord) -> Self {
        let text = |name: &str| record.header(name).map(|value| String::from_utf8_lossy(value).into_owned());
        Self {
            partition: record.partition,
            offset: record.offset,
            reason: text(REASON_HEADER).unwrap_or_default(),
            source: text(SOURCE_HEADER).unwrap_or_default(),
            dead_lettered_at_ms: text(DEAD_LETTERED_AT_HEADER).and_then(|value| value.parse().ok()),
            schema_version: text(SCHEMA_VERSION_HEADER),
            key: record.key,
            payload: record.payload,
        }
    }
}

/// Appends dead letters back to the events topic with their original key and payload, and their
/// schema-version header, or `schema_version_override` when given. Returns how many were re-injected.
pub async fn reinject<L: EventLog>(
    event_log: &L,
    dead_letter_topic: &str,
    dead_letters: &[DeadLetter],
    schema_version_override: Option<u32>,
) -> Result<usize, EventLogError> {
    for dead_letter in dead_letters {
        let schema_version =
            schema_version_override.map(|version| version.to_string()).or_else(|| dead_letter.schema_version.clone());
        let mut headers = vec![(
            REINJECTED_FROM_HEADER,
            format!("{dead_letter_topic}/{}/{}", dead_letter.partition, dead_letter.offset).into_bytes(),
        )];
        if let Some(version) = schema_version {
            headers.push((SCHEMA_VERSION_HEADER, version.into_bytes()));
        }
        let record = LogRecord { key: dead_letter.key.clone(), payload: dead_letter.payload.clone(), headers };
        event_log.append(Topic::Events, record).await?;
    }
    Ok(dead_letters.len())
}

/// The dead-letter copy of a consumed record: same key and payload, its schema header if it had one,
/// why, and where it came from.
pub fn dead_letter_record(consumed: &ConsumedRecord, reason: &str, now_ms: i64) -> LogRecord {
    let mut headers = vec![
        (REASON_HEADER, reason.as_bytes().to_vec()),
        (SOURCE_HEADER, consumed.source.as_bytes().to_vec()),
        (DEAD_LETTERED_AT_HEADER, now_ms.to_string().into_bytes()),
    ];
    if let Some(version) = consumed.header(SCHEMA_VERSION_HEADER) {
        headers.push((SCHEMA_VERSION_HEADER, version.to_vec()));
    }
    LogRecord { key: consumed.key.clone(), payload: consumed.payload.clone(), headers }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumed(headers: Vec<(String, Vec<u8>)>) -> ConsumedRecord {
        ConsumedRecord {
            partition: 3,
            offset: 42,
            key: "acme".to_owned(),
            payload: vec![1, 2],
            headers,
            source: "t/3/42".to_owned(),
        }
    }

    #[test]
    fn keeps_payload_and_says_why() {
        let poison = consumed(vec![(SCHEMA_VERSION_HEADER.to_owned(), b"9".to_vec())]);
        let record = dead_letter_record(&poison, "unknown schema version 9", 7);
        assert_eq!(record.key, "acme");
        assert_eq!(record.payload, vec![1, 2]);
        let header = |name: &str| record.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone());
        assert_eq!(header(REASON_HEADER).unwrap(), b"unknown schema version 9");
        assert_eq!(header(SOURCE_HEADER).unwrap(), b"t/3/42");
        assert_eq!(header(DEAD_LETTERED_AT_HEADER).unwrap(), b"7");
        assert_eq!(header(SCHEMA_VERSION_HEADER).unwrap(), b"9");
    }

    #[test]
    fn a_dead_letter_read_back_says_why_and_from_where() {
        let read_back = consumed(vec![
            (REASON_HEADER.to_owned(), b"undecodable payload".to_vec()),
            (SOURCE_HEADER.to_owned(), b"events/1/7".to_vec()),
            (DEAD_LETTERED_AT_HEADER.to_owned(), b"1700000000000".to_vec()),
            (SCHEMA_VERSION_HEADER.to_owned(), b"1".to_vec()),
        ]);
        let dead_letter = DeadLetter::from_record(read_back);
        assert_eq!((dead_letter.partition, dead_letter.offset), (3, 42));
        assert_eq!(dead_letter.key, "acme");
        assert_eq!(dead_letter.reason, "undecodable payload");
        assert_eq!(dead_letter.source, "events/1/7");
        assert_eq!(dead_letter.dead_lettered_at_ms, Some(1_700_000_000_000));
        assert_eq!(dead_letter.schema_version.as_deref(), Some("1"));
        assert_eq!(dead_letter.payload, vec![1, 2]);
    }
}
