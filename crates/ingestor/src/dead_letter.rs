//! Poison records: ones the ingestor cannot decode (garbage, an unknown schema version) go to the
//! dead-letter topic with the reason and their origin in headers, so their partition keeps moving and
//! nothing is dropped silently. `hourglass dlq` lists and re-injects them.

use hourglass_core::event_log::LogRecord;
use hourglass_core::record::SCHEMA_VERSION_HEADER;

/// Header: why the record was dead-lettered.
pub const REASON_HEADER: &str = "hg-dlq-reason";
/// Header: where it came from, as `topic/partition/offset`.
pub const SOURCE_HEADER: &str = "hg-dlq-source";
/// Header: when it was dead-lettered, in milliseconds since the Unix epoch.
pub const DEAD_LETTERED_AT_HEADER: &str = "hg-dlq-at-ms";

/// The dead-letter copy of a record: same key and payload, its schema header if it had one, and why.
pub fn dead_letter_record(
    key: &[u8],
    payload: &[u8],
    schema_version: Option<&[u8]>,
    reason: &str,
    source: &str,
    now_ms: i64,
) -> LogRecord {
    let mut headers = vec![
        (REASON_HEADER, reason.as_bytes().to_vec()),
        (SOURCE_HEADER, source.as_bytes().to_vec()),
        (DEAD_LETTERED_AT_HEADER, now_ms.to_string().into_bytes()),
    ];
    if let Some(version) = schema_version {
        headers.push((SCHEMA_VERSION_HEADER, version.to_vec()));
    }
    LogRecord { key: String::from_utf8_lossy(key).into_owned(), payload: payload.to_vec(), headers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_payload_and_says_why() {
        let record = dead_letter_record(b"acme", b"\x01\x02", Some(b"9"), "unknown schema version 9", "t/3/42", 7);
        assert_eq!(record.key, "acme");
        assert_eq!(record.payload, vec![1, 2]);
        let header = |name: &str| record.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone());
        assert_eq!(header(REASON_HEADER).unwrap(), b"unknown schema version 9");
        assert_eq!(header(SOURCE_HEADER).unwrap(), b"t/3/42");
        assert_eq!(header(SCHEMA_VERSION_HEADER).unwrap(), b"9");
    }
}
