//! Turning hourly rows into report rows: summing over event types and over the hours of a day, week or
//! month. Counts add up exactly; distinct users do not (a user active in two hours is one user), so
//! they come from merging the hourly HyperLogLog sketches, and such a row says it is an estimate. A row
//! built from one hourly row keeps that hour's exact count. Sums of numeric properties saturate at
//! `±f64::MAX` as the hourly sums do ([`FiniteSum`]), so a month of large hourly sums is still a number.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use hourglass_core::hll::{HyperLogLog, InvalidSketch};
use hourglass_core::numeric::FiniteSum;
use hourglass_core::rollup_reader::{HourlyNumericRow, HourlyRollupRow};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Granularity, MetricsRow, NumericStats};

const SECONDS_PER_DAY: i64 = 86_400;

/// A reporting period's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
    /// One ISO week (Monday to Sunday, UTC).
    Week,
    /// One calendar month (UTC).
    Month,
}

impl Period {
    /// The period of a request's granularity; `None` for an unspecified one.
    pub fn of(granularity: Granularity) -> Option<Self> {
        match granularity {
            Granularity::Unspecified => None,
            Granularity::Day => Some(Self::Day),
            Granularity::Week => Some(Self::Week),
            Granularity::Month => Some(Self::Month),
        }
    }

    /// The start of the period containing `unix` (seconds).
    pub fn start(self, unix: i64) -> i64 {
        match self {
            Self::Hour => hourglass_core::hour::hour_start(unix),
            Self::Day => unix.div_euclid(SECONDS_PER_DAY) * SECONDS_PER_DAY,
            Self::Week => {
                let days = unix.div_euclid(SECONDS_PER_DAY);
                // 1970-01-01 was a Thursday: three days after a Monday.
                let since_monday = (days + 3).rem_euclid(7);
                (days - since_monday) * SECONDS_PER_DAY
            }
            Self::Month => {
                let date = utc(unix).date_naive();
                let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1).expect("day 1 exists in every month");
                Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).expect("midnight exists")).timestamp()
            }
        }
    }

    /// The start of the next period after the one starting at `start`.
    pub fn end(self, start: i64) -> i64 {
        match self {
            Self::Hour => start + 3600,
            Self::Day => start + SECONDS_PER_DAY,
            Self::Week => start + 7 * SECONDS_PER_DAY,
            Self::Month => (utc(start) + Months::new(1)).timestamp(),
        }
    }
}

fn utc(unix: i64) -> DateTime<Utc> {
    // Callers pass validated ranges (years 1970 to 9999), always representable.
    DateTime::from_timestamp(unix, 0).expect("a validated timestamp")
}

/// A protobuf timestamp of `unix` seconds.
pub fn timestamp(unix: i64) -> Timestamp {
    Timestamp { seconds: unix, nanos: 0 }
}

#[derive(Default)]
struct Accumulator {
    events: u64,
    /// The count of the only hourly row so far, while there is just one.
    single_row_users: Option<u64>,
    rows: u32,
    users: Option<HyperLogLog>,
    /// By property: its figures so far, with their sum kept apart until [`Self::into_row`].
    numeric: BTreeMap<String, (NumericStats, FiniteSum)>,
}

impl Accumulator {
    fn add_row(&mut self, row: &HourlyRollupRow) -> Result<(), InvalidSketch> {
        self.events += row.events;
        self.rows += 1;
        self.single_row_users = if self.rows == 1 { Some(row.distinct_users) } else { None };
        if !row.users_sketch.is_empty() {
            let sketch = HyperLogLog::from_bytes(&row.users_sketch)?;
            match &mut self.users {
                Some(users) => users.merge(&sketch),
                None => self.users = Some(sketch),
            }
        }
        Ok(())
    }

    fn add_numeric(&mut self, row: &HourlyNumericRow) {
        let (stats, sum) = self.numeric.entry(row.property.clone()).or_insert_with(|| {
            let stats = NumericStats {
                property: row.property.clone(),
                count: 0,
                sum: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
            };
            (stats, FiniteSum::default())
        });
        stats.count += row.count;
        sum.add(row.sum);
        stats.min = stats.min.min(row.min);
        stats.max = stats.max.max(row.max);
    }

    fn into_row(self, period_start: i64, event_type: String) -> MetricsRow {
        let (distinct_users, estimated) = match (self.single_row_users, &self.users) {
            (Some(exact), _) => (exact, false),
            (None, Some(users)) => (users.estimate(), true),
            // Several rows, none with a user: nobody to count.
            (None, None) => (0, false),
        };
        MetricsRow {
            period_start: Some(timestamp(period_start)),
            event_type,
            events: self.events,
            distinct_users,
            distinct_users_estimated: estimated,
            numeric: self
                .numeric
                .into_values()
                .map(|(stats, sum)| NumericStats { sum: sum.value(), ..stats })
                .collect(),
        }
    }
}

/// Sums hourly rows into one row per period (and per event type if `group_by_event_type`), ordered by
/// period then event type. Merging needs the rows' sketches whenever a report row gathers more than one
/// hourly row.
pub fn summarize(
    rows: &[HourlyRollupRow],
    numeric: &[HourlyNumericRow],
    period: Period,
    group_by_event_type: bool,
) -> Result<Vec<MetricsRow>, InvalidSketch> {
    let key = |hour_start: i64, event_type: &str| {
        (period.start(hour_start), if group_by_event_type { event_type.to_owned() } else { String::new() })
    };
    let mut accumulators: BTreeMap<(i64, String), Accumulator> = BTreeMap::new();
    for row in rows {
        accumulators.entry(key(row.hour_start, &row.event_type)).or_default().add_row(row)?;
    }
    for row in numeric {
        // Numeric rows exist only beside a rollup row of the same hour and type.
        if let Some(accumulator) = accumulators.get_mut(&key(row.hour_start, &row.event_type)) {
            accumulator.add_numeric(row);
        }
    }
    Ok(accumulators
        .into_iter()
        .map(|((period_start, event_type), accumulator)| accumulator.into_row(period_start, event_type))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(users: std::ops::Range<u32>) -> Vec<u8> {
        let mut sketch = HyperLogLog::new();
        for user in users {
            sketch.insert(format!("user-{user}").as_bytes());
        }
        sketch.to_bytes()
    }

    fn row(hour_start: i64, event_type: &str, events: u64, users: std::ops::Range<u32>) -> HourlyRollupRow {
        HourlyRollupRow {
            hour_start,
            event_type: event_type.to_owned(),
            events,
            distinct_users: u64::from(users.end - users.start),
            users_sketch: sketch(users),
        }
    }

    #[test]
    fn period_starts_are_utc_days_iso_weeks_and_months() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().timestamp();
        let moment = at("2026-11-25T17:45:00Z"); // a Wednesday
        assert_eq!(Period::Hour.start(moment), at("2026-11-25T17:00:00Z"));
        assert_eq!(Period::Day.start(moment), at("2026-11-25T00:00:00Z"));
        assert_eq!(Period::Week.start(moment), at("2026-11-23T00:00:00Z"));
        assert_eq!(Period::Week.start(at("2026-11-23T00:00:00Z")), at("2026-11-23T00:00:00Z"));
        assert_eq!(Period::Week.start(at("2026-11-22T23:59:59Z")), at("2026-11-16T00:00:00Z"));
        assert_eq!(Period::Month.start(moment), at("2026-11-01T00:00:00Z"));
        assert_eq!(Period::Month.end(at("2026-12-01T00:00:00Z")), at("2027-01-01T00:00:00Z"));
        assert_eq!(Period::Month.end(at("2028-02-01T00:00:00Z")), at("2028-03-01T00:00:00Z"));
    }

    #[test]
    fn one_hourly_row_keeps_its_exact_users_and_several_merge_sketches() {
        let rows = [row(0, "click", 10, 0..7), row(0, "view", 5, 5..9), row(3600, "click", 3, 0..2)];
        let hourly = summarize(&rows, &[], Period::Hour, true).unwrap();
        assert_eq!(hourly.len(), 3);
        assert!(hourly.iter().all(|row| !row.distinct_users_estimated));
        assert_eq!(hourly[0].distinct_users, 7);

        let totals = summarize(&rows, &[], Period::Hour, false).unwrap();
        assert_eq!(totals.len(), 2);
        assert_eq!((totals[0].events, totals[0].distinct_users, totals[0].distinct_users_estimated), (15, 9, true));
        assert_eq!((totals[1].events, totals[1].distinct_users, totals[1].distinct_users_estimated), (3, 2, false));

        let daily = summarize(&rows, &[], Period::Day, true).unwrap();
        assert_eq!(daily.len(), 2);
        assert_eq!((daily[0].event_type.as_str(), daily[0].events, daily[0].distinct_users), ("click", 13, 7));
        assert!(daily[0].distinct_users_estimated);
    }

    #[test]
    fn numeric_stats_merge_over_hours_and_types() {
        let rows = [row(0, "buy", 2, 0..1), row(3600, "buy", 1, 0..1)];
        let numeric = [
            HourlyNumericRow {
                hour_start: 0,
                event_type: "buy".into(),
                property: "price".into(),
                count: 2,
                sum: 5.0,
                min: 1.0,
                max: 4.0,
            },
            HourlyNumericRow {
                hour_start: 3600,
                event_type: "buy".into(),
                property: "price".into(),
                count: 1,
                sum: 9.0,
                min: 9.0,
                max: 9.0,
            },
        ];
        let daily = summarize(&rows, &numeric, Period::Day, false).unwrap();
        assert_eq!(
            daily[0].numeric,
            vec![NumericStats { property: "price".into(), count: 3, sum: 14.0, min: 1.0, max: 9.0 }]
        );
    }

    #[test]
    fn sums_of_large_hourly_sums_saturate_and_stay_finite() {
        let rows = [row(0, "buy", 1, 0..1), row(3600, "buy", 1, 0..1), row(7200, "buy", 1, 0..1)];
        let hourly = |hour_start: i64, value: f64| HourlyNumericRow {
            hour_start,
            event_type: "buy".into(),
            property: "price".into(),
            count: 1,
            sum: value,
            min: value,
            max: value,
        };
        let numeric = [hourly(0, f64::MAX), hourly(3600, f64::MAX), hourly(7200, -f64::MAX)];
        let daily = summarize(&rows, &numeric, Period::Day, false).unwrap();
        assert_eq!(
            daily[0].numeric,
            vec![NumericStats { property: "price".into(), count: 3, sum: f64::MAX, min: -f64::MAX, max: f64::MAX }]
        );
    }

    #[test]
    fn a_corrupt_sketch_is_an_error_not_a_wrong_number() {
        let mut bad = row(0, "click", 1, 0..1);
        bad.users_sketch = vec![9, 9, 9];
        assert!(summarize(&[bad.clone(), bad], &[], Period::Day, false).is_err());
    }
}
