//! Per-customer cardinality limits: distinct event types per customer-hour, and distinct property names
//! per event type within a customer-hour.
//!
//! Every distinct event type costs the aggregator a users sketch and a user set per bucket, and a row in
//! every report; every numeric property name a stats row. Without a limit one careless (or hostile)
//! client sending a random type per event makes each of its hours cost as much as millions of ordinary
//! ones. So the collector remembers, per customer and hour of `occurred_at`, the names it has accepted,
//! and rejects an event that would add a type past `max_event_types_per_hour`, or a property name past
//! `max_property_names_per_event_type` for its type, with its own rejection reason (counted in the
//! ledger like every rejection).
//!
//! Names are remembered as 64-bit keyed hashes (a random key per process, so no client can choose
//! colliding names). The memory is bounded by `--cardinality-tracker-max-names`: past it, the least
//! recently used customer-hours are forgotten and counted again from zero. Like the events-per-second
//! quota, the limits are per collector process; with N replicas a customer can reach up to N times them.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::ops::Range;

use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::CustomerLimits;
use hourglass_proto::v1::RejectionReason;
use lru::LruCache;
use parking_lot::Mutex;

use crate::event_view::EventFields;
use crate::validate::Rejection;

/// Defaults for customers without limits of their own, and the tracker's size.
#[derive(Clone, Debug, clap::Args)]
pub struct CardinalityConfig {
    /// Distinct event types one customer may send per hour (of `occurred_at`); events of further types
    /// are rejected with TOO_MANY_EVENT_TYPES. Per customer: `hourglass keys limits
    /// --max-event-types-per-hour`.
    #[arg(
        long = "default-max-event-types-per-hour",
        env = "HOURGLASS_DEFAULT_MAX_EVENT_TYPES_PER_HOUR",
        default_value_t = 1000
    )]
    pub default_max_event_types_per_hour: u32,

    /// Distinct property names one event type may carry per customer-hour; an event adding more is
    /// rejected with TOO_MANY_PROPERTY_NAMES. Per customer: `hourglass keys limits
    /// --max-property-names-per-event-type`.
    #[arg(
        long = "default-max-property-names-per-event-type",
        env = "HOURGLASS_DEFAULT_MAX_PROPERTY_NAMES_PER_EVENT_TYPE",
        default_value_t = 200
    )]
    pub default_max_property_names_per_event_type: u32,

    /// Names (event types and property names, over all customer-hours) the collector remembers; past
    /// it the least recently used customer-hours are forgotten. About 60 bytes each.
    #[arg(
        long = "cardinality-tracker-max-names",
        env = "HOURGLASS_CARDINALITY_TRACKER_MAX_NAMES",
        default_value_t = 2_000_000
    )]
    pub tracker_max_names: usize,
}

/// The limits that apply to one customer.
#[derive(Clone, Copy, Debug)]
pub struct CardinalityLimits {
    /// Distinct event types per hour.
    pub max_event_types_per_hour: usize,
    /// Distinct property names per event type per hour.
    pub max_property_names_per_event_type: usize,
}

impl CardinalityConfig {
    /// The customer's own limits where it has them, the defaults otherwise.
    pub fn limits_for(&self, customer: &CustomerLimits) -> CardinalityLimits {
        CardinalityLimits {
            max_event_types_per_hour: customer.max_event_types_per_hour.unwrap_or(self.default_max_event_types_per_hour)
                as usize,
            max_property_names_per_event_type: customer
                .max_property_names_per_event_type
                .unwrap_or(self.default_max_property_names_per_event_type)
                as usize,
        }
    }
}

/// The names accepted in one customer-hour: event type hash → its property name hashes.
#[derive(Default)]
struct HourNames {
    types: HashMap<u64, HashSet<u64>>,
    names: usize,
}

struct Tracked {
    hours: LruCache<(CustomerId, i64), HourNames>,
    names: usize,
}

/// What the collector remembers of each customer-hour's names.
pub struct CardinalityTracker {
    hasher: RandomState,
    max_names: usize,
    tracked: Mutex<Tracked>,
}

impl CardinalityTracker {
    /// A tracker remembering at most `max_names` names.
    pub fn new(max_names: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            max_names: max_names.max(1),
            tracked: Mutex::new(Tracked { hours: LruCache::unbounded(), names: 0 }),
        }
    }

    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    /// Checks a batch's valid events, in order, against `limits`: `Ok` for an event whose names fit
    /// (they are then remembered), the rejection otherwise. `events` pairs each event with its hour.
    pub fn check_batch<'a, E: EventFields + 'a>(
        &self,
        customer_id: &CustomerId,
        limits: CardinalityLimits,
        events: impl Iterator<Item = (&'a E, i64)>,
    ) -> Vec<Result<(), Rejection>> {
        // Names are hashed before the lock is taken: one lock serves every batch of the process. The
        // property names' hashes of every event share one vector, each event owning a range of it.
        let mut property_hashes = Vec::new();
        let hashed: Vec<(&E, i64, u64, Range<usize>)> = events
            .map(|(event, hour_start)| {
                let start = property_hashes.len();
                property_hashes.extend(event.properties().map(|(name, _)| self.hash(name)));
                (event, hour_start, self.hash(event.event_type()), start..property_hashes.len())
            })
            .collect();
        let mut tracked = self.tracked.lock();
        let Tracked { hours, names } = &mut *tracked;
        let results = hashed
            .iter()
            .map(|(event, hour_start, type_hash, hash_range)| {
                let hour = hours.get_or_insert_mut((customer_id.clone(), *hour_start), HourNames::default);
                let property_hashes = &property_hashes[hash_range.clone()];
                let added = admit(hour, *type_hash, property_hashes, limits, event.event_type(), *hour_start)?;
                *names += added;
                Ok(())
            })
            .collect();
        while *names > self.max_names {
            let Some((_, forgotten)) = hours.pop_lru() else { break };
            *names -= forgotten.names;
        }
        results
    }
}

/// Admits one event's names into its hour; `Ok` carries how many names were new.
fn admit(
    hour: &mut HourNames,
    type_hash: u64,
    property_hashes: &[u64],
    limits: CardinalityLimits,
    event_type: &str,
    hour_start: i64,
) -> Result<usize, Rejection> {
    // The common case, on the hot path: a known type with known property names adds nothing.
    if let Some(known) = hour.types.get(&type_hash)
        && property_hashes.iter().all(|hash| known.contains(hash))
    {
        return Ok(0);
    }
    let known_type = hour.types.contains_key(&type_hash);
    if !known_type && hour.types.len() >= limits.max_event_types_per_hour {
        return Err(Rejection {
            reason: RejectionReason::TooManyEventTypes,
            message: format!(
                "event type {:?} would be this hour's type number {}; the limit is {} distinct types per hour \
                 (keys limits --max-event-types-per-hour)",
                event_type,
                hour.types.len() + 1,
                limits.max_event_types_per_hour
            ),
            hour_start: Some(hour_start),
        });
    }
    let known_properties = hour.types.get(&type_hash);
    let new_properties: HashSet<u64> = property_hashes
        .iter()
        .copied()
        .filter(|hash| known_properties.is_none_or(|known| !known.contains(hash)))
        .collect();
    let property_count = known_properties.map_or(0, HashSet::len) + new_properties.len();
    if property_count > limits.max_property_names_per_event_type {
        return Err(Rejection {
            reason: RejectionReason::TooManyPropertyNames,
            message: format!(
                "event type {:?} would have {property_count} distinct property names this hour; the limit is {} \
                 (keys limits --max-property-names-per-event-type)",
                event_type, limits.max_property_names_per_event_type
            ),
            hour_start: Some(hour_start),
        });
    }
    let added = usize::from(!known_type) + new_properties.len();
    hour.types.entry(type_hash).or_default().extend(new_properties);
    hour.names += added;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use hourglass_proto::v1::{Event, PropertyValue};

    use super::*;

    const HOUR: i64 = 1_764_075_600;

    fn event(event_type: &str, properties: &[&str]) -> Event {
        Event {
            event_type: event_type.into(),
            properties: properties.iter().map(|name| ((*name).to_owned(), PropertyValue::default())).collect(),
            ..Event::default()
        }
    }

    fn limits(types: usize, properties: usize) -> CardinalityLimits {
        CardinalityLimits { max_event_types_per_hour: types, max_property_names_per_event_type: properties }
    }

    fn reasons(results: &[Result<(), Rejection>]) -> Vec<Option<RejectionReason>> {
        results.iter().map(|result| result.as_ref().err().map(|rejection| rejection.reason)).collect()
    }

    #[test]
    fn types_past_the_hours_limit_are_rejected_and_known_ones_still_pass() {
        let tracker = CardinalityTracker::new(1000);
        let acme = CustomerId::new("acme").unwrap();
        let events = [event("a", &[]), event("b", &[]), event("c", &[]), event("a", &[]), event("b", &[])];
        let results = tracker.check_batch(&acme, limits(2, 10), events.iter().map(|event| (event, HOUR)));
        assert_eq!(reasons(&results), [None, None, Some(RejectionReason::TooManyEventTypes), None, None]);
        let message = &results[2].as_ref().unwrap_err().message;
        assert!(message.contains("--max-event-types-per-hour"), "{message}");
        // Another hour, another customer: their own counts.
        let next_hour = tracker.check_batch(&acme, limits(2, 10), [(&events[2], HOUR + 3600)].into_iter());
        assert_eq!(reasons(&next_hour), [None]);
        let other = CustomerId::new("other").unwrap();
        assert_eq!(reasons(&tracker.check_batch(&other, limits(2, 10), [(&events[2], HOUR)].into_iter())), [None]);
    }

    #[test]
    fn property_names_past_the_types_limit_are_rejected_and_a_rejected_event_adds_nothing() {
        let tracker = CardinalityTracker::new(1000);
        let acme = CustomerId::new("acme").unwrap();
        let events = [
            event("view", &["a", "b"]),
            event("view", &["b", "c", "d"]), // 4 names: over 3
            event("view", &["c"]),           // 3 names: the rejected event added none
            event("view", &["a", "b", "c"]),
            event("click", &["x", "y", "z"]), // per type
        ];
        let results = tracker.check_batch(&acme, limits(10, 3), events.iter().map(|event| (event, HOUR)));
        assert_eq!(reasons(&results), [None, Some(RejectionReason::TooManyPropertyNames), None, None, None]);
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_least_recently_used_hours() {
        let tracker = CardinalityTracker::new(10);
        let acme = CustomerId::new("acme").unwrap();
        let many: Vec<Event> = (0..100).map(|index| event(&format!("type-{index}"), &[])).collect();
        for (index, event) in many.iter().enumerate() {
            tracker.check_batch(&acme, limits(1000, 10), [(event, HOUR + 3600 * index as i64)].into_iter());
        }
        let tracked = tracker.tracked.lock();
        assert!(tracked.names <= 10 && tracked.hours.len() <= 10, "{} names", tracked.names);
    }
}
