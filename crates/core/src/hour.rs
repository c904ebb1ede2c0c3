//! Customer-hours: the unit of aggregation, re-aggregation and reconciliation.

/// Seconds in an hour.
pub const SECONDS_PER_HOUR: i64 = 3600;

/// The start of the UTC hour containing `unix_seconds`, in seconds since the Unix epoch.
///
/// Rounds towards negative infinity, so instants before 1970 still land in the hour that contains them.
pub fn hour_start(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(SECONDS_PER_HOUR) * SECONDS_PER_HOUR
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
}
