//! Raw retention and the late-data window: how long raw rows live, how late an event may arrive, and
//! which hours the aggregator may still rewrite.
//!
//! A rollup is a pure function of its hour's raw rows, recomputed whole, and raw rows do not live for
//! ever: the CQL store's table TTL (`--cql-ttl-days`) drops each row that long after it was *written*,
//! and standalone deletes whole hours older than `--raw-retention-days` once an hour. Recomputing an
//! hour once some of its rows are gone replaces a correct rollup with an undercount, silently. Three
//! numbers keep that from happening:
//!
//! - **the raw retention R** (30 days by default);
//! - **the expiry margin M** ([`EXPIRY_MARGIN_SECS`], 1 day): the aggregator rewrites no hour that
//!   started R − M or longer ago, the hour's *horizon* ([`RawRetention::is_past_horizon`]). Why the
//!   hour's start and nothing else: the first rows of hour H can be written as early as
//!   H − `--max-future-skew-secs` (a client whose clock runs ahead), so in CQL they expire from
//!   H − skew + R; standalone deletes H at H + R + 1 h at the soonest. Either way every row of H is
//!   still there while now < H − skew + R. The rollup's `computed_at` bounds nothing: the rows written
//!   before it are exactly the ones that expire first. M covers the skew (at most
//!   [`MAX_FUTURE_SKEW_SECS`]), the minutes a job takes to read an hour, and clock differences between
//!   the aggregator and the store;
//! - **the late-data window L** (`--late-data-days`, [`DEFAULT_LATE_DATA_DAYS`] = 7 days): the collector
//!   refuses events that occurred longer ago. An event accepted at time r lies in an hour that started
//!   after r − L − 1 h, so that hour stays inside its horizon until R − M − L − 1 h after the event was
//!   accepted: 22 days less an hour at the defaults. That is the time the pipeline (Kafka, the
//!   ingestor, the allowed lateness, the aggregator's backlog, a replay) has to aggregate it; past it
//!   the event is refused by the aggregator instead of counted, visibly (see `hourglass-aggregator`).
//!   Start-up requires L + [`LATE_DATA_MARGIN_SECS`] (2 days: M plus at least a day for the pipeline)
//!   ≤ R ([`check_late_data_window`]).
//!
//! Why 7 days: it takes the events of a device that was offline for a week, while leaving three weeks
//! for outages of the ingestor or the aggregator, and a replay of a Kafka topic kept for Kafka's default
//! 7 days can only bring events accepted within those 7 days, of hours at most 14 days old: all well
//! inside the horizon.

/// Seconds in a day.
const SECONDS_PER_DAY: i64 = 86_400;

/// The raw retention by default, in days (`--raw-retention-days`, `--cql-ttl-days`).
pub const DEFAULT_RAW_RETENTION_DAYS: i64 = 30;

/// The late-data window by default, in days (`--late-data-days`).
pub const DEFAULT_LATE_DATA_DAYS: i64 = 7;

/// How long before an hour's first raw rows may expire the aggregator stops rewriting it: 1 day.
pub const EXPIRY_MARGIN_SECS: i64 = SECONDS_PER_DAY;

/// How far the late-data window must end before the raw retention: the expiry margin plus at least a day
/// for the pipeline to aggregate the latest accepted event.
pub const LATE_DATA_MARGIN_SECS: i64 = EXPIRY_MARGIN_SECS + SECONDS_PER_DAY;

/// The largest `--max-future-skew-secs` the expiry margin covers: half of it, so at least 12 hours of the
/// margin remain for reading the hour and for clock differences.
pub const MAX_FUTURE_SKEW_SECS: i64 = EXPIRY_MARGIN_SECS / 2;

/// How long the raw store keeps an hour's rows, and how long before that the hour stops being rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRetention {
    /// How long a raw row lives after it is written (the CQL TTL, standalone's retention), in seconds.
    pub retention_secs: i64,
    /// How long before its first rows may expire an hour stops being rewritten, in seconds.
    pub expiry_margin_secs: i64,
}

impl Default for RawRetention {
    /// [`DEFAULT_RAW_RETENTION_DAYS`] with the [`EXPIRY_MARGIN_SECS`] margin.
    fn default() -> Self {
        Self::from_days(DEFAULT_RAW_RETENTION_DAYS)
    }
}

impl RawRetention {
    /// A retention of `days` with the [`EXPIRY_MARGIN_SECS`] margin.
    pub fn from_days(days: i64) -> Self {
        Self { retention_secs: days.saturating_mul(SECONDS_PER_DAY), expiry_margin_secs: EXPIRY_MARGIN_SECS }
    }

    /// How long after an hour starts it may still be rewritten: the retention less the margin.
    pub fn rewritable_secs(&self) -> i64 {
        self.retention_secs.saturating_sub(self.expiry_margin_secs)
    }

    /// Whether the hour starting at `hour_start` is past its horizon at `now_unix`: some of its raw rows
    /// may be gone (or go while a job reads them), so no rollup of it may be computed any more.
    pub fn is_past_horizon(&self, hour_start: i64, now_unix: i64) -> bool {
        hour_start.saturating_add(self.rewritable_secs()) <= now_unix
    }

    /// Why an hour past its horizon is not rewritten, for logs, errors and the hour's status.
    pub fn past_horizon_reason(&self) -> String {
        format!(
            "its raw data may have partly expired: the hour started more than {} ago (raw retention {} less a \
             {} safety margin)",
            duration_text(self.rewritable_secs()),
            duration_text(self.retention_secs),
            duration_text(self.expiry_margin_secs)
        )
    }
}

/// Why a late-data window, a raw retention and a clock-skew allowance cannot go together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetentionConfigError {
    /// The late-data window ends too close to the raw retention.
    #[error(
        "--late-data-days {late_data_days} plus a {margin_days}-day safety margin exceeds --raw-retention-days \
         {raw_retention_days}: a late event's hour could lose raw rows before it is aggregated, and the \
         aggregator would have to refuse it; set --late-data-days to at most {largest_late_data_days} or raise \
         the retention"
    )]
    LateWindowTooLong {
        /// The configured window.
        late_data_days: i64,
        /// The configured retention.
        raw_retention_days: i64,
        /// [`LATE_DATA_MARGIN_SECS`] in days.
        margin_days: i64,
        /// The longest window this retention allows.
        largest_late_data_days: i64,
    },
    /// The late-data window is empty or negative.
    #[error("--late-data-days is {0}; it must be at least 1")]
    LateWindowEmpty(i64),
    /// Events so far ahead of their hour expire before the margin protects them.
    #[error(
        "--max-future-skew-secs {max_future_skew_secs} is more than {limit_secs}: rows written that long before \
         their hour starts expire that much sooner, beyond what the aggregator's safety margin covers"
    )]
    FutureSkewTooLarge {
        /// The configured skew.
        max_future_skew_secs: i64,
        /// [`MAX_FUTURE_SKEW_SECS`].
        limit_secs: i64,
    },
}

/// Checks, at start-up, that late events can be aggregated before their hour's raw rows may expire:
/// `late_data_days` + [`LATE_DATA_MARGIN_SECS`] ≤ `raw_retention_days`, and the future skew within
/// [`MAX_FUTURE_SKEW_SECS`].
pub fn check_late_data_window(
    late_data_days: i64,
    raw_retention_days: i64,
    max_future_skew_secs: i64,
) -> Result<(), RetentionConfigError> {
    if late_data_days < 1 {
        return Err(RetentionConfigError::LateWindowEmpty(late_data_days));
    }
    let margin_days = LATE_DATA_MARGIN_SECS / SECONDS_PER_DAY;
    if late_data_days.saturating_add(margin_days) > raw_retention_days {
        return Err(RetentionConfigError::LateWindowTooLong {
            late_data_days,
            raw_retention_days,
            margin_days,
            largest_late_data_days: raw_retention_days.saturating_sub(margin_days),
        });
    }
    if max_future_skew_secs > MAX_FUTURE_SKEW_SECS {
        return Err(RetentionConfigError::FutureSkewTooLarge {
            max_future_skew_secs,
            limit_secs: MAX_FUTURE_SKEW_SECS,
        });
    }
    Ok(())
}

/// "30 days", "5 h", "90 s": the largest whole unit.
fn duration_text(seconds: i64) -> String {
    if seconds != 0 && seconds % SECONDS_PER_DAY == 0 {
        let days = seconds / SECONDS_PER_DAY;
        if days == 1 { "1 day".to_owned() } else { format!("{days} days") }
    } else if seconds != 0 && seconds % 3600 == 0 {
        format!("{} h", seconds / 3600)
    } else {
        format!("{seconds} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    #[test]
    fn an_hour_is_past_its_horizon_from_retention_less_margin_after_it_starts() {
        let retention = RawRetention::default();
        assert_eq!(retention.rewritable_secs(), 29 * SECONDS_PER_DAY);
        let hour_start = 1_767_225_600;
        let horizon = hour_start + 29 * SECONDS_PER_DAY;
        assert!(!retention.is_past_horizon(hour_start, horizon - 1), "a second before, it may be rewritten");
        assert!(retention.is_past_horizon(hour_start, horizon), "from then on, it may not");
        assert!(!retention.is_past_horizon(hour_start, hour_start + 4 * HOUR), "a recent hour is not past it");
        let short = RawRetention { retention_secs: 6 * HOUR, expiry_margin_secs: HOUR };
        assert!(!short.is_past_horizon(hour_start, hour_start + 5 * HOUR - 1));
        assert!(short.is_past_horizon(hour_start, hour_start + 5 * HOUR));
        let huge = RawRetention::from_days(i64::MAX);
        assert!(!huge.is_past_horizon(hour_start, i64::MAX - 1), "no overflow, however long the retention");
    }

    #[test]
    fn the_reason_names_the_numbers() {
        let reason = RawRetention::default().past_horizon_reason();
        assert!(
            reason.contains("more than 29 days ago (raw retention 30 days less a 1 day safety margin)"),
            "{reason}"
        );
        let short = RawRetention { retention_secs: 6 * HOUR, expiry_margin_secs: HOUR }.past_horizon_reason();
        assert!(short.contains("more than 5 h ago (raw retention 6 h less a 1 h safety margin)"), "{short}");
    }

    #[test]
    fn the_late_data_window_must_end_two_days_before_the_retention() {
        assert_eq!(check_late_data_window(DEFAULT_LATE_DATA_DAYS, DEFAULT_RAW_RETENTION_DAYS, 900), Ok(()));
        assert_eq!(check_late_data_window(28, 30, 900), Ok(()), "exactly the margin is enough");
        let error = check_late_data_window(29, 30, 900).unwrap_err();
        assert_eq!(
            error,
            RetentionConfigError::LateWindowTooLong {
                late_data_days: 29,
                raw_retention_days: 30,
                margin_days: 2,
                largest_late_data_days: 28
            }
        );
        let message = error.to_string();
        assert!(message.contains("--late-data-days") && message.contains("--raw-retention-days"), "{message}");
        assert!(message.contains("at most 28"), "{message}");
        assert_eq!(check_late_data_window(0, 30, 900), Err(RetentionConfigError::LateWindowEmpty(0)));
        assert!(check_late_data_window(7, i64::MAX, 900).is_ok(), "no overflow");
        let skew = check_late_data_window(7, 30, MAX_FUTURE_SKEW_SECS + 1).unwrap_err().to_string();
        assert!(skew.contains("--max-future-skew-secs"), "{skew}");
        assert!(check_late_data_window(7, 30, MAX_FUTURE_SKEW_SECS).is_ok());
    }
}
