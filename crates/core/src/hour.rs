//! Customer-hours: the unit of aggregation, re-aggregation and reconciliation.
//!
//! Timestamps come from clients, so every conversion here is total: no input wraps or panics. Hours
//! that the stores can hold lie in [`EARLIEST_SUPPORTED_SECS`, `LATEST_SUPPORTED_SECS`]; the collector
//! accepts far less (raw retention back, clock skew ahead), and a record naming an hour outside the
//! supported range is refused whole by [`crate::record::decode`] (the consumer dead-letters it), so no
//! store ever sees one.

/// Seconds in an hour.
pub const SECONDS_PER_HOUR: i64 = 3600;

/// The earliest instant an event may have: 1970-01-01T00:00:00Z.
pub const EARLIEST_SUPPORTED_SECS: i64 = 0;

/// The latest instant an event may have: 9999-12-31T23:59:59Z, the end of the range every store's
/// timestamp type holds (CQL `timestamp` in milliseconds, Postgres `timestamptz`, SQLite integers) and
/// that RFC 3339 and protobuf JSON can write.
pub const LATEST_SUPPORTED_SECS: i64 = 253_402_300_799;

/// The start of the UTC hour containing `unix_seconds`, in seconds since the Unix epoch.
///
/// Rounds towards negative infinity, so instants before 1970 still land in the hour that contains them.
/// Total: for the few instants near `i64::MIN` whose hour starts before `i64::MIN`, it saturates to the
/// earliest whole hour an `i64` holds (such instants are never valid event times).
pub fn hour_start(unix_seconds: i64) -> i64 {
    unix_seconds
        .div_euclid(SECONDS_PER_HOUR)
        .checked_mul(SECONDS_PER_HOUR)
        .unwrap_or_else(|| (i64::MIN.div_euclid(SECONDS_PER_HOUR) + 1) * SECONDS_PER_HOUR)
}

/// The start of the hour containing `unix_seconds`, if that instant is within the supported range.
pub fn supported_hour_start(unix_seconds: i64) -> Option<i64> {
    is_supported(unix_seconds).then(|| hour_start(unix_seconds))
}

/// Whether `unix_seconds` is within [`EARLIEST_SUPPORTED_SECS`, `LATEST_SUPPORTED_SECS`].
pub fn is_supported(unix_seconds: i64) -> bool {
    (EARLIEST_SUPPORTED_SECS..=LATEST_SUPPORTED_SECS).contains(&unix_seconds)
}

/// Whether `hour_start` is the start of an hour within the supported range.
pub fn is_supported_hour(hour_start: i64) -> bool {
    is_supported(hour_start) && hour_start.rem_euclid(SECONDS_PER_HOUR) == 0
}

/// Milliseconds since the epoch of a protobuf timestamp's parts, saturating at the ends of `i64`
/// (callers check [`is_supported`] first; this only guarantees no wrap-around).
pub fn epoch_millis(seconds: i64, nanos: i32) -> i64 {
    seconds.saturating_mul(1000).saturating_add(i64::from(nanos.clamp(0, 999_999_999)) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_to_the_hour() {
        assert_eq!(hour_start(0), 0);
        assert_eq!(hour_start(3599), 0);
        assert_eq!(hour_start(3600), 3600);
        assert_eq!(hour_start(1_764_077_999), 1_764_075_600);
        assert_eq!(hour_start(-1), -3600);
    }

    #[test]
    fn extreme_instants_neither_wrap_nor_panic() {
        let earliest_hour = hour_start(i64::MIN);
        assert!(earliest_hour <= 0 && earliest_hour.rem_euclid(SECONDS_PER_HOUR) == 0);
        assert_eq!(hour_start(i64::MIN + 1), earliest_hour);
        assert_eq!(hour_start(i64::MAX), i64::MAX.div_euclid(3600) * 3600);
        assert_eq!(epoch_millis(i64::MAX, 999_999_999), i64::MAX);
        assert_eq!(epoch_millis(i64::MIN, 0), i64::MIN);
        assert_eq!(epoch_millis(1, 250_000_000), 1250);
    }

    #[test]
    fn the_supported_range_is_1970_to_9999() {
        assert_eq!(supported_hour_start(9_000_000_000_000_000), None);
        assert_eq!(supported_hour_start(-1), None);
        assert_eq!(supported_hour_start(LATEST_SUPPORTED_SECS), Some(253_402_297_200));
        assert!(is_supported_hour(253_402_297_200));
        assert!(!is_supported_hour(253_402_297_200 + 3600));
        assert!(!is_supported_hour(1800));
        assert!(is_supported_hour(0));
        let latest = chrono_free_rfc3339_year(LATEST_SUPPORTED_SECS);
        assert_eq!(latest, 9999);
    }

    /// The civil year of an instant (Howard Hinnant's days-to-civil), to pin the constant without a
    /// date library in core.
    fn chrono_free_rfc3339_year(unix_seconds: i64) -> i64 {
        let days = unix_seconds.div_euclid(86_400) + 719_468;
        let era = days.div_euclid(146_097);
        let day_of_era = days - era * 146_097;
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
        year_of_era + era * 400 + i64::from(month <= 2)
    }
}
