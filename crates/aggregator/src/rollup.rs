//! The rollup of one customer-hour: a pure fold over its raw events, so recomputing it from the same
//! rows always gives the same result (invariant 2 of DESIGN.md).

use std::collections::{BTreeMap, HashSet};

use hourglass_core::hll::HyperLogLog;
use hourglass_core::raw_store::{EventVisitor, HourOutcomes, StoredEvent};
use hourglass_core::rollup_store::{EventTypeRollup, HourRollup, NumericRollup};

/// The version of this aggregation logic, stored with every rollup row. Bump it when the logic changes,
/// so reprocessing can tell old rows from new. 2: hours also get their totals over all event types
/// (exact distinct users and a sketch); `hourglass reprocess` gives them to hours of version 1.
pub const LOGIC_VERSION: u32 = 2;

#[derive(Default)]
struct EventTypeFigures {
    events: u64,
    users: HashSet<String>,
    users_sketch: HyperLogLog,
}

struct NumericFigures {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

/// Accumulates the raw events of one customer-hour.
#[derive(Default)]
pub struct HourAccumulator {
    event_types: BTreeMap<String, EventTypeFigures>,
    numeric: BTreeMap<(String, String), NumericFigures>,
    events: u64,
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
        if let Some(user_id) = user_id
            && !figures.users.contains(user_id)
        {
            figures.users_sketch.insert(user_id.as_bytes());
            figures.users.insert(user_id.to_owned());
        }
        for (property, value) in numbers {
            let key = (event_type.to_owned(), property.to_owned());
            let stats =
                self.numeric.entry(key).or_insert(NumericFigures { count: 0, sum: 0.0, min: value, max: value });
            stats.count += 1;
            stats.sum += value;
            stats.min = stats.min.min(value);
            stats.max = stats.max.max(value);
        }
    }
}

impl HourAccumulator {
    /// Events added so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Adds everything another accumulator saw (of other events: buckets never share an event).
    pub fn merge(&mut self, other: HourAccumulator) {
        self.events += other.events;
        for (event_type, theirs) in other.event_types {
            let mine = self.event_types.entry(event_type).or_default();
            mine.events += theirs.events;
            mine.users_sketch.merge(&theirs.users_sketch);
            if mine.users.is_empty() {
                mine.users = theirs.users;
            } else {
                mine.users.extend(theirs.users);
            }
        }
        for (key, theirs) in other.numeric {
            match self.numeric.get_mut(&key) {
                Some(mine) => {
                    mine.count += theirs.count;
                    mine.sum += theirs.sum;
                    mine.min = mine.min.min(theirs.min);
                    mine.max = mine.max.max(theirs.max);
                }
                None => {
                    self.numeric.insert(key, theirs);
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
        if let Some(user_id) = &event.user_id
            && !figures.users.contains(user_id)
        {
            figures.users_sketch.insert(user_id.as_bytes());
            figures.users.insert(user_id.clone());
        }
        for (property, value) in &event.number_properties {
            let key = (event.event_type.clone(), property.clone());
            let stats =
                self.numeric.entry(key).or_insert(NumericFigures { count: 0, sum: 0.0, min: *value, max: *value });
            stats.count += 1;
            stats.sum += value;
            stats.min = stats.min.min(*value);
            stats.max = stats.max.max(*value);
        }
    }

    /// The finished rollup, with the hour's outcome counts for the ledger.
    pub fn finish(self, outcomes: HourOutcomes, is_final: bool) -> HourRollup {
        // The hour's users over all types: the union of the per-type sets, and the merge of their sketches
        // (which equals the sketch of the union).
        let mut all_users: HashSet<&str> = HashSet::new();
        let mut users_sketch = HyperLogLog::new();
        for figures in self.event_types.values() {
            all_users.extend(figures.users.iter().map(String::as_str));
            users_sketch.merge(&figures.users_sketch);
        }
        let distinct_users = all_users.len() as u64;
        drop(all_users);
        HourRollup {
            distinct_users,
            users_sketch: users_sketch.to_bytes(),
            event_types: self
                .event_types
                .into_iter()
                .map(|(event_type, figures)| EventTypeRollup {
                    event_type,
                    events: figures.events,
                    distinct_users: figures.users.len() as u64,
                    users_sketch: figures.users_sketch.to_bytes(),
                })
                .collect(),
            numeric: self
                .numeric
                .into_iter()
                .map(|((event_type, property), stats)| NumericRollup {
                    event_type,
                    property,
                    count: stats.count,
                    sum: stats.sum,
                    min: stats.min,
                    max: stats.max,
                })
                .collect(),
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
        let mut whole = HourAccumulator::default();
        events.iter().for_each(|event| whole.add(event));
        let mut merged = HourAccumulator::default();
        for bucket in events.chunks(9) {
            let mut part = HourAccumulator::default();
            bucket.iter().for_each(|event| part.add(event));
            merged.merge(part);
        }
        assert_eq!(merged.finish(HourOutcomes::default(), true), whole.finish(HourOutcomes::default(), true));
    }

    #[test]
    fn an_empty_hour_rolls_up_to_nothing() {
        let rollup = HourAccumulator::default().finish(HourOutcomes::default(), false);
        assert_eq!(rollup.events, 0);
        assert!(rollup.event_types.is_empty());
    }
}
