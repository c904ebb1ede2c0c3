//! The rollup of one customer-hour: a pure fold over its raw events, so recomputing it from the same
//! rows always gives the same result (invariant 2 of docs/architecture.md).
//!
//! Numeric properties get their count, sum, min and max, every one finite, so every store can keep them
//! and every reader use them:
//! - a value that is NaN or infinite is left out of all four (the collector refuses such values and
//!   decoding a log record drops them, so only rows stored before either could hold one); the hour's
//!   count of them is [`HourAccumulator::non_finite_values`];
//! - a sum beyond the range of `f64` saturates to `±f64::MAX`, with the sign of the exact sum
//!   ([`FiniteSum`]), rather than becoming infinite, or NaN once partial sums of both signs overflow.

use std::collections::{BTreeMap, HashMap, HashSet};

use hourglass_core::hll::HyperLogLog;
use hourglass_core::numeric::FiniteSum;
use hourglass_core::raw_store::{EventVisitor, HourOutcomes, StoredEvent};
use hourglass_core::rollup_store::{EventTypeRollup, HourRollup, NumericRollup};

/// The version of this aggregation logic, stored with every rollup row. Bump it when the logic changes,
/// so reprocessing can tell old rows from new. 2: hours also get their totals over all event types
/// (exact distinct users and a sketch); `hourglass reprocess` gives them to hours of version 1.
pub const LOGIC_VERSION: u32 = 2;

/// The exact set of an hour's user ids. Its order is never observed (only its size), so it uses a fast
/// hash with a fixed seed instead of SipHash: the ids are the customer's own, hashed in its own job, and a
/// fold spends most of its time in this set.
type UserIds = HashSet<String, foldhash::fast::FixedState>;

/// The figures of each event type seen. Looked up once per event, so by hash rather than in a sorted map
/// (a dozen string comparisons per event); [`HourAccumulator::finish`] sorts the rows.
type EventTypes = HashMap<String, EventTypeFigures, foldhash::fast::FixedState>;

#[derive(Default)]
struct EventTypeFigures {
    events: u64,
    /// The type's distinct users; their sketch is made from them once, by
    /// [`HourAccumulator::finish`] (a sketch of a set is the same whatever the order it is filled in).
    users: UserIds,
    /// By property name: looked up by `&str`, so a known property costs no allocation per event.
    numeric: BTreeMap<String, NumericFigures>,
}

impl EventTypeFigures {
    fn add_user(&mut self, user_id: &str) {
        if !self.users.contains(user_id) {
            self.users.insert(user_id.to_owned());
        }
    }

    /// The sketch of the type's distinct users.
    fn users_sketch(&self) -> HyperLogLog {
        let mut sketch = HyperLogLog::new();
        for user_id in &self.users {
            sketch.insert(user_id.as_bytes());
        }
        sketch
    }

    /// Adds a finite value of `property`.
    fn add_number(&mut self, property: &str, value: f64) {
        match self.numeric.get_mut(property) {
            Some(figures) => figures.add(value),
            None => {
                self.numeric.insert(property.to_owned(), NumericFigures::of(value));
            }
        }
    }
}

/// The figures of one numeric property, over finite values only.
struct NumericFigures {
    count: u64,
    sum: FiniteSum,
    min: f64,
    max: f64,
}

impl NumericFigures {
    fn of(value: f64) -> Self {
        debug_assert!(value.is_finite());
        let mut sum = FiniteSum::default();
        sum.add(value);
        NumericFigures { count: 1, sum, min: value, max: value }
    }

    fn add(&mut self, value: f64) {
        debug_assert!(value.is_finite());
        self.count += 1;
        self.sum.add(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    fn merge(&mut self, other: &NumericFigures) {
        self.count += other.count;
        self.sum.merge(&other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Accumulates the raw events of one customer-hour.
#[derive(Default)]
pub struct HourAccumulator {
    event_types: EventTypes,
    events: u64,
    non_finite_values: u64,
}

impl EventVisitor for HourAccumulator {
    fn visit(&mut self, event_type: &str, user_id: Option<&str>, numbers: &mut dyn Iterator<Item = (&str, f64)>) {
        self.events += 1;
        // Look up before inserting: the common case allocates nothing.
        let figures = match self.event_types.get_mut(event_type) {
            Some(figures) => figures,
            None => self.event_types.entry(event_type.to_owned()).or_default(),
        };
        figures.events += 1;
        if let Some(user_id) = user_id {
            figures.add_user(user_id);
        }
        for (property, value) in numbers {
            if value.is_finite() {
                figures.add_number(property, value);
            } else {
                self.non_finite_values += 1;
            }
        }
    }
}

impl HourAccumulator {
    /// Events added so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// NaN or infinite property values met so far, which no figure includes.
    pub fn non_finite_values(&self) -> u64 {
        self.non_finite_values
    }

    /// Adds everything another accumulator saw (of other events: buckets never share an event).
    pub fn merge(&mut self, other: HourAccumulator) {
        self.events += other.events;
        self.non_finite_values += other.non_finite_values;
        for (event_type, theirs) in other.event_types {
            let mine = self.event_types.entry(event_type).or_default();
            mine.events += theirs.events;
            if mine.users.is_empty() {
                mine.users = theirs.users;
            } else {
                mine.users.extend(theirs.users);
            }
            for (property, their_figures) in theirs.numeric {
                match mine.numeric.get_mut(&property) {
                    Some(my_figures) => my_figures.merge(&their_figures),
                    None => {
                        mine.numeric.insert(property, their_figures);
                    }
                }
            }
        }
    }

    /// Adds one stored event (stored rows are already unique by event id).
    pub fn add(&mut self, event: &StoredEvent) {
        self.events += 1;
        let figures = match self.event_types.get_mut(&event.event_type) {
            Some(figures) => figures,
            None => self.event_types.entry(event.event_type.clone()).or_default(),
        };
        figures.events += 1;
        if let Some(user_id) = &event.user_id {
            figures.add_user(user_id);
        }
        for (property, value) in &event.number_properties {
            if value.is_finite() {
                figures.add_number(property, *value);
            } else {
                self.non_finite_values += 1;
            }
        }
    }

    /// The finished rollup, with the hour's outcome counts for the ledger.
    pub fn finish(self, outcomes: HourOutcomes, is_final: bool) -> HourRollup {
        // The hour's users over all types: the union of the per-type sets, and the merge of their sketches
        // (which equals the sketch of the union).
        let mut all_users: HashSet<&str, foldhash::fast::FixedState> = HashSet::default();
        let mut users_sketch = HyperLogLog::new();
        let mut sorted_types: Vec<(String, EventTypeFigures)> = self.event_types.into_iter().collect();
        sorted_types.sort_unstable_by(|(left, _), (right, _)| left.cmp(right));
        let type_sketches: Vec<HyperLogLog> = sorted_types.iter().map(|(_, figures)| figures.users_sketch()).collect();
        for ((_, figures), type_sketch) in sorted_types.iter().zip(&type_sketches) {
            all_users.extend(figures.users.iter().map(String::as_str));
            users_sketch.merge(type_sketch);
        }
        let distinct_users = all_users.len() as u64;
        drop(all_users);
        // Rows in (event type, property) order: types sorted, properties as their map iterates.
        let mut event_types = Vec::with_capacity(sorted_types.len());
        let mut numeric = Vec::new();
        for ((event_type, figures), type_sketch) in sorted_types.into_iter().zip(type_sketches) {
            for (property, stats) in figures.numeric {
                numeric.push(NumericRollup {
                    event_type: event_type.clone(),
                    property,
                    count: stats.count,
                    sum: stats.sum.value(),
                    min: stats.min,
                    max: stats.max,
                });
            }
            event_types.push(EventTypeRollup {
                distinct_users: figures.users.len() as u64,
                users_sketch: type_sketch.to_bytes(),
                events: figures.events,
                event_type,
            });
        }
        HourRollup {
            distinct_users,
            users_sketch: users_sketch.to_bytes(),
            event_types,
            numeric,
            events: self.events,
            outcomes,
            logic_version: LOGIC_VERSION,
            is_final,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str, event_type: &str, user: Option<&str>) -> StoredEvent {
        StoredEvent {
            event_id: id.into(),
            event_type: event_type.into(),
            occurred_at_ms: 0,
            user_id: user.map(str::to_owned),
            string_properties: Default::default(),
            number_properties: Default::default(),
            bool_properties: Default::default(),
            batch_id: "b".into(),
        }
    }

    #[test]
    fn counts_events_and_distinct_users_per_type() {
        let mut accumulator = HourAccumulator::default();
        for event in [
            stored("1", "view", Some("ann")),
            stored("2", "view", Some("ann")),
            stored("3", "view", Some("bob")),
            stored("4", "view", None),
            stored("5", "buy", Some("ann")),
        ] {
            accumulator.add(&event);
        }
        let rollup = accumulator.finish(HourOutcomes::default(), true);
        assert_eq!(rollup.events, 5);
        let figures: Vec<(&str, u64, u64)> =
            rollup.event_types.iter().map(|row| (row.event_type.as_str(), row.events, row.distinct_users)).collect();
        assert_eq!(figures, vec![("buy", 1, 1), ("view", 4, 2)]);
        let view_sketch = HyperLogLog::from_bytes(&rollup.event_types[1].users_sketch).unwrap();
        assert_eq!(view_sketch.estimate(), 2);
        // Over all types ann counts once: 2 users, not 1 + 2.
        assert_eq!(rollup.distinct_users, 2);
        assert_eq!(HyperLogLog::from_bytes(&rollup.users_sketch).unwrap().estimate(), 2);
        assert!(rollup.is_final);
        assert_eq!(rollup.logic_version, LOGIC_VERSION);
    }

    #[test]
    fn numeric_properties_get_count_sum_min_max() {
        let mut accumulator = HourAccumulator::default();
        for (id, price) in [("1", 5.0), ("2", -1.5), ("3", 10.0)] {
            let mut event = stored(id, "buy", None);
            event.number_properties.insert("price".into(), price);
            accumulator.add(&event);
        }
        accumulator.add(&stored("4", "buy", None));
        let rollup = accumulator.finish(HourOutcomes::default(), true);
        assert_eq!(
            rollup.numeric,
            vec![NumericRollup {
                event_type: "buy".into(),
                property: "price".into(),
                count: 3,
                sum: 13.5,
                min: -1.5,
                max: 10.0
            }]
        );
    }

    fn priced(id: &str, price: f64) -> StoredEvent {
        let mut event = stored(id, "buy", None);
        event.number_properties.insert("price".into(), price);
        event
    }

    #[test]
    fn sums_near_the_largest_f64_of_both_signs_saturate_and_stay_finite() {
        let big = f64::MAX / 2.0 * 1.5; // 3/4 of the largest f64: two of them overflow
        let mut accumulator = HourAccumulator::default();
        // Plain partial sums would reach +inf after the second event and NaN after the fourth.
        for (id, price) in [("1", big), ("2", big), ("3", -big), ("4", -big), ("5", -big), ("6", -big)] {
            accumulator.add(&priced(id, price));
        }
        let rollup = accumulator.finish(HourOutcomes::default(), true);
        assert_eq!(
            rollup.numeric,
            vec![NumericRollup {
                event_type: "buy".into(),
                property: "price".into(),
                count: 6,
                // The exact sum is -2 × big = -1.5 × f64::MAX: saturated, with its sign.
                sum: -f64::MAX,
                min: -big,
                max: big
            }]
        );
        assert!(rollup.check_finite().is_ok());

        let mut at_the_limits = HourAccumulator::default();
        for (id, price) in [("1", f64::MAX), ("2", f64::MAX), ("3", -f64::MAX)] {
            at_the_limits.add(&priced(id, price));
        }
        let rollup = at_the_limits.finish(HourOutcomes::default(), true);
        assert_eq!(
            (rollup.numeric[0].sum, rollup.numeric[0].min, rollup.numeric[0].max),
            (f64::MAX, -f64::MAX, f64::MAX)
        );
    }

    #[test]
    fn non_finite_values_are_left_out_of_every_figure_and_counted() {
        let mut accumulator = HourAccumulator::default();
        for (id, price) in [("1", f64::NAN), ("2", 2.0), ("3", f64::INFINITY), ("4", f64::NEG_INFINITY), ("5", 3.0)] {
            accumulator.add(&priced(id, price));
        }
        let only_non_finite = {
            let mut part = HourAccumulator::default();
            part.add(&priced("6", f64::NAN));
            part
        };
        accumulator.merge(only_non_finite);
        assert_eq!(accumulator.non_finite_values(), 4);
        let rollup = accumulator.finish(HourOutcomes::default(), true);
        assert_eq!(rollup.events, 6, "the events count, whatever their numbers");
        assert_eq!(
            rollup.numeric,
            vec![NumericRollup {
                event_type: "buy".into(),
                property: "price".into(),
                count: 2,
                sum: 5.0,
                min: 2.0,
                max: 3.0
            }]
        );
    }

    /// The rollup of `events` accumulated at once, and accumulated in buckets of `bucket_size` merged.
    fn whole_and_merged(events: &[StoredEvent], bucket_size: usize) -> (HourRollup, HourRollup) {
        let mut whole = HourAccumulator::default();
        events.iter().for_each(|event| whole.add(event));
        let mut merged = HourAccumulator::default();
        for bucket in events.chunks(bucket_size) {
            let mut part = HourAccumulator::default();
            bucket.iter().for_each(|event| part.add(event));
            merged.merge(part);
        }
        (whole.finish(HourOutcomes::default(), true), merged.finish(HourOutcomes::default(), true))
    }

    #[test]
    fn merging_saturated_buckets_equals_one_accumulator() {
        let events: Vec<StoredEvent> = (0..12)
            .map(|index| priced(&index.to_string(), if index % 3 == 0 { -f64::MAX } else { f64::MAX }))
            .collect();
        let (whole, merged) = whole_and_merged(&events, 5);
        assert_eq!(whole.numeric[0].sum, f64::MAX);
        assert_eq!(merged, whole);
    }

    #[test]
    fn merging_bucket_accumulators_equals_one_accumulator() {
        let events: Vec<StoredEvent> = (0..40)
            .map(|index| {
                let mut event =
                    stored(&index.to_string(), ["a", "b", "c"][index % 3], Some(&format!("u{}", index % 7)));
                event.number_properties.insert("n".into(), index as f64);
                event
            })
            .collect();
        let (whole, merged) = whole_and_merged(&events, 9);
        assert_eq!(merged, whole);
    }

    #[test]
    fn an_empty_hour_rolls_up_to_nothing() {
        let rollup = HourAccumulator::default().finish(HourOutcomes::default(), false);
        assert_eq!(rollup.events, 0);
        assert!(rollup.event_types.is_empty());
    }
}
