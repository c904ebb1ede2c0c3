//! The [`RawStore`] seam: where raw events live, idempotent by event id.
//!
//! Distributed mode uses a CQL store (ScyllaDB, or Apache Cassandra) in `hourglass-cql`; standalone mode
//! the SQLite store of `hourglass-embedded` (`raw.db`). The contract: writing a batch twice leaves the store as writing it once
//! (every row's key holds the customer, the hour and the event id), so consumers can be at-least-once.

use std::collections::BTreeMap;
use std::future::Future;

use hourglass_proto::log::v1::Outcome;
use hourglass_proto::v1::RejectionReason;

use crate::BoxError;
use crate::erasure::UserMatcher;
use crate::record_view::RecordView;

/// The bucket (sub-partition of a customer-hour) an event belongs to: the CRC-32 of its id modulo
/// `bucket_count`. Every store uses this, so an event lands in the same bucket whichever store holds it,
/// and a resend of an id always reaches the bucket holding its first copy.
///
/// `bucket_count` must not be zero (stores refuse a zero bucket count when they are created).
pub fn bucket_of(event_id: &str, bucket_count: u32) -> u32 {
    debug_assert!(bucket_count > 0, "a customer-hour has at least one bucket");
    crc32fast::hash(event_id.as_bytes()) % bucket_count
}

/// A raw event as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// The client's event id.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// When it happened, in milliseconds since the Unix epoch.
    pub occurred_at_ms: i64,
    /// The user, if any.
    pub user_id: Option<String>,
    /// String properties.
    pub string_properties: BTreeMap<String, String>,
    /// Number properties.
    pub number_properties: BTreeMap<String, f64>,
    /// Boolean properties.
    pub bool_properties: BTreeMap<String, bool>,
    /// The batch that stored it last.
    pub batch_id: String,
}

/// The outcome counts of one customer-hour, summed over every batch record that reached the store
/// (each batch counted once, however often it was redelivered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HourOutcomes {
    /// Events the collectors accepted (a client's resend of an accepted event counts again).
    pub accepted: u64,
    /// Events rejected, by `hourglass.v1.RejectionReason` number.
    pub rejected_by_reason: BTreeMap<i32, u64>,
    /// Events of throttled batches (the client was told to resend).
    pub throttled: u64,
    /// Of the accepted events, those the ingestor dropped before the raw store because their user was
    /// under suppression after an erasure request (`crate::erasure`): never stored, never counted.
    pub erased: u64,
    /// What the customer's tracking plan checked and found in the hour (`PlanCheckCount` rows summed).
    pub plan_checks: BTreeMap<PlanCheckKey, u64>,
}

/// What one stored tracking-plan count is about: the events a plan version checked (`rule` 0, no event
/// type), or those of one type that broke one rule, rejected or warned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct PlanCheckKey {
    /// The plan version the events were checked against.
    pub plan_version: u32,
    /// The events' type; empty for checked events.
    pub event_type: String,
    /// The broken rule's `hourglass.v1.RejectionReason` number; 0 for checked events.
    pub rule: i32,
    /// Whether the events were rejected (enforce) rather than accepted with a warning.
    pub rejected: bool,
}

/// One entry of a ledger's plan counts, as JSON keeps them.
#[derive(serde::Serialize, serde::Deserialize)]
struct PlanCheckEntry {
    #[serde(flatten)]
    key: PlanCheckKey,
    events: u64,
}

impl HourOutcomes {
    /// Every event the collectors saw: accepted + rejected + throttled. (`erased` is part of `accepted`:
    /// the collector accepted those events, the ingestor dropped them.)
    pub fn received(&self) -> u64 {
        self.accepted + self.rejected() + self.throttled
    }

    /// Every rejected event.
    pub fn rejected(&self) -> u64 {
        self.rejected_by_reason.values().sum()
    }

    /// Adds `count` events of one stored outcome row (`outcome` an [`Outcome`], `reason` a rejection
    /// reason); false, adding nothing, for an outcome this build does not know.
    pub fn add(&mut self, outcome: i32, reason: i32, count: u64) -> bool {
        match Outcome::try_from(outcome) {
            Ok(Outcome::Accepted) => self.accepted += count,
            Ok(Outcome::Rejected) => *self.rejected_by_reason.entry(reason).or_default() += count,
            Ok(Outcome::Throttled) => self.throttled += count,
            Ok(Outcome::Erased) => self.erased += count,
            Ok(Outcome::Unspecified) | Err(_) => return false,
        }
        true
    }

    /// Adds `count` events of one stored tracking-plan row.
    pub fn add_plan_check(&mut self, key: PlanCheckKey, count: u64) {
        *self.plan_checks.entry(key).or_default() += count;
    }

    /// The plan counts as the ledgers keep them: a JSON array of `{plan_version, event_type, rule,
    /// rejected, events}` (read back by [`plan_checks_from_json`](Self::plan_checks_from_json)).
    pub fn plan_checks_json(plan_checks: &BTreeMap<PlanCheckKey, u64>) -> String {
        let entries: Vec<PlanCheckEntry> =
            plan_checks.iter().map(|(key, events)| PlanCheckEntry { key: key.clone(), events: *events }).collect();
        serde_json::to_string(&entries).expect("plan counts always serialize")
    }

    /// Plan counts from a ledger's JSON, as [`plan_checks_json`](Self::plan_checks_json) writes it.
    pub fn plan_checks_from_json(json: &str) -> Result<BTreeMap<PlanCheckKey, u64>, String> {
        let entries: Vec<PlanCheckEntry> = serde_json::from_str(json)
            .map_err(|error| format!("plan counts are not a JSON array of counts ({error}): {json}"))?;
        let mut plan_checks = BTreeMap::new();
        for entry in entries {
            *plan_checks.entry(entry.key).or_default() += entry.events;
        }
        Ok(plan_checks)
    }

    /// Rejections by reason as a JSON object keyed by the reason's proto name, as the ledgers keep them
    /// (read back by [`rejections_from_json`](Self::rejections_from_json)). A reason this build does not
    /// know (a newer collector's) is keyed by its number, so every reason keeps a key of its own and the
    /// counts still sum to the hour's rejected events.
    pub fn rejections_json(&self) -> String {
        let pairs: Vec<String> = self
            .rejected_by_reason
            .iter()
            .map(|(reason, count)| match RejectionReason::try_from(*reason) {
                Ok(known) => format!("\"{}\":{count}", known.as_str_name()),
                Err(_) => format!("\"{reason}\":{count}"),
            })
            .collect();
        format!("{{{}}}", pairs.join(","))
    }

    /// Rejections by reason number from a ledger's JSON (as [`rejections_json`](Self::rejections_json)
    /// writes it; any JSON spacing). A key that is neither a reason name this build knows nor a number
    /// (a newer build's reason name, or `UNKNOWN` from builds that wrote unknown reasons so) counts under
    /// `REJECTION_REASON_UNSPECIFIED`, which no collector sends, so the counts still sum to the hour's
    /// rejected events. Errors on anything but an object of non-negative integers.
    pub fn rejections_from_json(json: &str) -> Result<BTreeMap<i32, u64>, String> {
        let by_name: BTreeMap<String, u64> = serde_json::from_str(json)
            .map_err(|error| format!("rejections by reason are not a JSON object of counts ({error}): {json}"))?;
        let mut by_reason = BTreeMap::new();
        for (name, count) in by_name {
            let reason = RejectionReason::from_str_name(&name)
                .map(|known| known as i32)
                .or_else(|| name.parse::<i32>().ok())
                .unwrap_or(RejectionReason::Unspecified as i32);
            *by_reason.entry(reason).or_default() += count;
        }
        Ok(by_reason)
    }
}

/// Errors from a raw store.
#[derive(Debug, thiserror::Error)]
pub enum RawStoreError {
    /// The store could not be reached or did not confirm the write; retrying is safe.
    #[error("raw store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store's schema is missing or not what this build expects: an operator must migrate;
    /// retrying alone will not help.
    #[error("raw store schema problem: {0}")]
    Schema(#[source] BoxError),
}

/// Receives the events of a bucket, one at a time, borrowed from the store's pages.
pub trait EventVisitor: Send {
    /// One event: its type, its user if any, and its numeric properties.
    fn visit(&mut self, event_type: &str, user_id: Option<&str>, numbers: &mut dyn Iterator<Item = (&str, f64)>);
}

/// Durable, idempotent storage of raw events. A value is a handle: its clones share the store's
/// connections, so a clone is cheap and tasks of their own (the aggregator's bucket folds) each take one.
pub trait RawStore: Clone + Send + Sync + 'static {
    /// Stores every accepted event and the outcome counts of these batch records. Resolves `Ok` only
    /// once all of them are durable; on error, some may be stored and the call may be repeated. Writing
    /// several records in one call lets the store merge rows that share a partition. Each event is
    /// stored as the bytes its [`RecordView`] holds (a record decoded by the ingestor, or
    /// [`RecordView::from_record`] of an owned one).
    fn write_records(&self, records: &[RecordView<'_>]) -> impl Future<Output = Result<(), RawStoreError>> + Send;

    /// Checks the store answers, for readiness.
    fn check_ready(&self) -> impl Future<Output = Result<(), RawStoreError>> + Send;

    /// How many buckets (sub-partitions) each customer-hour is split into.
    fn bucket_count(&self) -> u32;

    /// The outcome counts stored for a customer-hour.
    fn read_outcomes(
        &self,
        customer_id: &str,
        hour_start: i64,
    ) -> impl Future<Output = Result<HourOutcomes, RawStoreError>> + Send;

    /// Visits what a rollup needs of every event of one bucket (event type, user, numeric properties),
    /// borrowed from the store's pages, so folding a bucket allocates nothing per event. Returns
    /// `visitor`.
    fn fold_bucket<V: EventVisitor>(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        visitor: V,
    ) -> impl Future<Output = Result<V, RawStoreError>> + Send;

    /// Every event of one bucket of a customer-hour, in one `Vec`: the whole bucket in memory, which for a
    /// busy customer-hour is millions of events. For tests and small hours; a reader serving requests
    /// pages with [`read_bucket_page`](Self::read_bucket_page).
    fn read_bucket(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, RawStoreError>> + Send;

    /// How many distinct events of one customer-hour (of the matcher's customer) belong to the matcher's
    /// user: event ids with at least one stored copy whose user matches, whichever copy is the last
    /// written. What an erasure plans and [`erase_user_events`](Self::erase_user_events) deletes; reads
    /// the hour block by block, like a fold.
    fn count_user_events(
        &self,
        matcher: &UserMatcher,
        hour_start: i64,
    ) -> impl Future<Output = Result<u64, RawStoreError>> + Send;

    /// Deletes every stored copy of every event id of the customer-hour that
    /// [`count_user_events`](Self::count_user_events) counts, and returns how many ids that was. Each block
    /// holding one is rewritten without it, in its place in the write order (so last-write-wins between
    /// the copies of other ids is unchanged), or deleted when nothing is left of it; other events, other
    /// hours, other customers and the outcome counts are untouched. Idempotent: a second call finds
    /// nothing and returns 0. A copy attributed to another user of an id that the person's copy shares is
    /// deleted too: an id is one event, and a copy of the person's event must not come back as the last
    /// written one.
    ///
    /// The caller holds the hour's aggregation lease, so no rollup reads the hour half rewritten. A record
    /// written again afterwards (redelivered, replayed) writes its events back as they were.
    fn erase_user_events(
        &self,
        matcher: &UserMatcher,
        hour_start: i64,
    ) -> impl Future<Output = Result<u64, RawStoreError>> + Send;

    /// One page of a bucket: at most `limit` events with an id above `after_event_id` (`""` for the
    /// start of the bucket) and, when `event_type` is given, of that type, in ascending event-id order.
    /// Each id appears once, as its last written copy (as in [`read_bucket`](Self::read_bucket)); the
    /// type filter applies to that copy. Fewer than `limit` events means the bucket holds no more.
    ///
    /// The store's memory for a call is bounded by `limit` and its own read unit (a driver page, a
    /// stored block), never by the size of the bucket, so a page of a huge bucket stays small; the
    /// next page starts after the last id returned.
    fn read_bucket_page(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        after_event_id: &str,
        event_type: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, RawStoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_of_an_id_never_changes() {
        // Pinned: stored events stay in the bucket they were written to only while this holds.
        assert_eq!(crc32fast::hash(b"a"), 3_904_355_907);
        assert_eq!(bucket_of("a", 10), 7);
        assert_eq!(bucket_of("a", 8), 3);
        assert_eq!(bucket_of("0190a7c2-event", 10), 8);
        assert_eq!(bucket_of("0190a7c2-event", 1), 0);
    }

    #[test]
    fn outcome_rows_add_up_by_kind_and_reason_and_unknown_ones_are_refused() {
        let mut outcomes = HourOutcomes::default();
        assert!(outcomes.add(Outcome::Accepted as i32, 0, 5));
        assert!(outcomes.add(Outcome::Rejected as i32, RejectionReason::EventTypeEmpty as i32, 2));
        assert!(outcomes.add(Outcome::Rejected as i32, RejectionReason::EventTypeEmpty as i32, 1));
        assert!(outcomes.add(Outcome::Throttled as i32, 0, 4));
        assert!(outcomes.add(Outcome::Erased as i32, 0, 2));
        assert!(!outcomes.add(Outcome::Unspecified as i32, 0, 100));
        assert!(!outcomes.add(99, 0, 100));
        assert_eq!((outcomes.accepted, outcomes.rejected(), outcomes.throttled, outcomes.received()), (5, 3, 4, 12));
        assert_eq!(outcomes.erased, 2, "erased events are part of the accepted ones, not received again");
        assert_eq!(outcomes.rejections_json(), r#"{"REJECTION_REASON_EVENT_TYPE_EMPTY":3}"#);
        assert_eq!(HourOutcomes::default().rejections_json(), "{}");
    }

    #[test]
    fn plan_counts_read_back_as_written() {
        let mut outcomes = HourOutcomes::default();
        let checked = PlanCheckKey { plan_version: 3, event_type: String::new(), rule: 0, rejected: false };
        let mismatch = PlanCheckKey {
            plan_version: 3,
            event_type: "purchase".into(),
            rule: RejectionReason::PropertyTypeMismatch as i32,
            rejected: true,
        };
        outcomes.add_plan_check(checked.clone(), 10);
        outcomes.add_plan_check(mismatch.clone(), 2);
        outcomes.add_plan_check(mismatch.clone(), 1);
        let json = HourOutcomes::plan_checks_json(&outcomes.plan_checks);
        assert_eq!(
            json,
            r#"[{"plan_version":3,"event_type":"","rule":0,"rejected":false,"events":10},{"plan_version":3,"event_type":"purchase","rule":18,"rejected":true,"events":3}]"#
        );
        assert_eq!(HourOutcomes::plan_checks_from_json(&json), Ok(BTreeMap::from([(checked, 10), (mismatch, 3)])));
        assert_eq!(HourOutcomes::plan_checks_from_json("[]"), Ok(BTreeMap::new()));
        assert!(HourOutcomes::plan_checks_from_json("{}").is_err());
    }

    #[test]
    fn rejections_by_reason_read_back_as_written_whatever_their_reasons() {
        let future = RejectionReason::OccurredAtInFuture as i32;
        let property_name = RejectionReason::PropertyNameInvalid as i32;
        let outcomes = HourOutcomes {
            accepted: 0,
            // 99 and 100: reasons of a newer collector, each keeping its own count.
            rejected_by_reason: BTreeMap::from([(future, 2), (property_name, 5), (99, 1), (100, 3)]),
            throttled: 0,
            erased: 0,
            plan_checks: BTreeMap::new(),
        };
        let json = outcomes.rejections_json();
        assert_eq!(
            json,
            r#"{"REJECTION_REASON_OCCURRED_AT_IN_FUTURE":2,"REJECTION_REASON_PROPERTY_NAME_INVALID":5,"99":1,"100":3}"#
        );
        assert_eq!(HourOutcomes::rejections_from_json(&json), Ok(outcomes.rejected_by_reason.clone()));
        assert_eq!(HourOutcomes::rejections_from_json("{}"), Ok(BTreeMap::new()));

        // Postgres gives jsonb back with spaces and its own key order.
        let spaced = r#"{"99": 1, "REJECTION_REASON_OCCURRED_AT_IN_FUTURE": 2}"#;
        assert_eq!(HourOutcomes::rejections_from_json(spaced), Ok(BTreeMap::from([(future, 2), (99, 1)])));
        // Names this build does not know count under UNSPECIFIED, so the sum still equals the rejected total.
        let unknown_names =
            r#"{"UNKNOWN": 4, "REJECTION_REASON_FROM_THE_FUTURE": 1, "REJECTION_REASON_UNSPECIFIED": 2}"#;
        assert_eq!(HourOutcomes::rejections_from_json(unknown_names), Ok(BTreeMap::from([(0, 7)])));

        for damaged in
            ["", "[]", r#"{"REJECTION_REASON_EVENT_ID_EMPTY": -1}"#, r#"{"REJECTION_REASON_EVENT_ID_EMPTY": "1"}"#]
        {
            let error = HourOutcomes::rejections_from_json(damaged).expect_err(damaged);
            assert!(error.contains("not a JSON object of counts"), "{error}");
        }
    }
}
