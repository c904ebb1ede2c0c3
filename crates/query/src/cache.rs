//! A cache of report responses, kept encoded and valid until the rollups of their range change.
//!
//! Reports are read far more often than hours are rolled up, and a month of hourly rows costs tens of
//! milliseconds to read and sum. An entry remembers the revision sum of its range
//! ([`RollupReader::revision_sum`](hourglass_core::rollup_reader::RollupReader::revision_sum)), which
//! grows with every rollup written in the range, and is used only while the sum is unchanged. So the
//! cache needs no expiry.
//!
//! Reading the sum is a database round trip per request, the largest part of a hit's cost. So the cache
//! also follows the store's announcements of changed customers
//! ([`RollupReader::watch_changes`](hourglass_core::rollup_reader::RollupReader::watch_changes), fed
//! into [`RollupChanges`]): an entry checked against the sum at a customer's [`ChangeStamp`] is used
//! without reading the sum again while the stamp is unchanged. While nothing listens (start-up, a lost
//! connection, a store that announces nothing) there is no stamp and every use reads the sum, as before.
//! The bound on staleness this adds is the announcement's delivery: a completion committed but not yet
//! heard by the listener (docs/architecture.md, "Query cache").
//!
//! An entry is the whole response as it goes on the wire
//! ([`Encoded`](hourglass_proto::encoded::Encoded)), not its rows: a 30-day report per
//! event type is 14,400 rows and 543 KiB, and encoding it again for every request cost ~3 ms of CPU, ten
//! times the revision-sum read. A hit now hands the transport a shared buffer, copied once into its frame.
//! Memory is bounded twice: by entries and by bytes (the responses, room for their gzip form and their
//! keys), as one large report weighs as much as thousands of small ones. An entry also keeps its response's
//! [`ReportBody`], which the transport sends as it is and which compresses it once for the clients that
//! accept gzip (`crate::report_body`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use hourglass_core::rollup_changes::{ChangeStamp, RollupChanges};
use hourglass_core::rollup_reader::RollupReader;
use hourglass_proto::query_server::{EncodedGetHourlyMetricsResponse, EncodedGetPeriodMetricsResponse};
use parking_lot::Mutex;

use crate::report::Period;
use crate::report_body::ReportBody;
use crate::telemetry;

/// What identifies a report: everything that decides its response.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReportKey {
    /// The customer (of the caller's key).
    pub customer_id: String,
    /// Start of the range, seconds since the Unix epoch.
    pub from: i64,
    /// End of the range, exclusive.
    pub to: i64,
    /// The event-type filter, as requested.
    pub event_types: Vec<String>,
    /// Rows per event type, or summed over the types.
    pub group_by_event_type: bool,
    /// The rows' period: hourly reports answer `GetHourlyMetrics`, the others `GetPeriodMetrics`.
    pub period: Period,
}

impl ReportKey {
    /// Bytes the key holds on the heap.
    fn heap_bytes(&self) -> usize {
        self.customer_id.len()
            + self.event_types.len() * size_of::<String>()
            + self.event_types.iter().map(String::len).sum::<usize>()
    }
}

/// A report's response, encoded once.
#[derive(Clone, Debug)]
pub enum EncodedReport {
    /// `GetHourlyMetrics`'s.
    Hourly(EncodedGetHourlyMetricsResponse),
    /// `GetPeriodMetrics`'s.
    Period(EncodedGetPeriodMetricsResponse),
}

impl EncodedReport {
    /// The encoded response.
    pub fn bytes(&self) -> &prost::bytes::Bytes {
        match self {
            Self::Hourly(response) => response.as_bytes(),
            Self::Period(response) => response.as_bytes(),
        }
    }

    /// Bytes of the encoded response.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the response is empty (no rows).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<EncodedGetHourlyMetricsResponse> for EncodedReport {
    fn from(response: EncodedGetHourlyMetricsResponse) -> Self {
        Self::Hourly(response)
    }
}

impl From<EncodedGetPeriodMetricsResponse> for EncodedReport {
    fn from(response: EncodedGetPeriodMetricsResponse) -> Self {
        Self::Period(response)
    }
}

impl TryFrom<EncodedReport> for EncodedGetHourlyMetricsResponse {
    type Error = EncodedReport;

    fn try_from(report: EncodedReport) -> Result<Self, EncodedReport> {
        match report {
            EncodedReport::Hourly(response) => Ok(response),
            other => Err(other),
        }
    }
}

impl TryFrom<EncodedReport> for EncodedGetPeriodMetricsResponse {
    type Error = EncodedReport;

    fn try_from(report: EncodedReport) -> Result<Self, EncodedReport> {
        match report {
            EncodedReport::Period(response) => Ok(response),
            other => Err(other),
        }
    }
}

/// What the cache keeps per report.
struct Entry {
    revision_sum: u64,
    /// The customer's stamp when the entry was last found at the range's current revision sum (read
    /// before the sum), if a listener was connected then.
    checked_at: Option<ChangeStamp>,
    report: EncodedReport,
    /// The response's body as sent, with its gzip form once a client asked for one.
    body: ReportBody,
    /// What the entry counts against the byte budget: [`entry_bytes`].
    bytes: usize,
}

/// An entry's weight: its response and the most its gzip form may take ([`ReportBody::max_bytes`], counted
/// up front so compressing later never passes the budget), its key's heap bytes and the map's slot.
fn entry_bytes(key: &ReportKey, body: &ReportBody) -> usize {
    body.max_bytes() + key.heap_bytes() + size_of::<(ReportKey, Entry)>()
}

struct Entries {
    by_key: HashMap<ReportKey, Entry>,
    /// Sum of the entries' [`Entry::bytes`].
    bytes: usize,
}

/// Encoded report responses by [`ReportKey`], each valid for one revision sum of its range; at most
/// `max_entries` of them and `max_bytes` together.
pub struct ReportCache {
    max_entries: usize,
    max_bytes: usize,
    entries: Mutex<Entries>,
    changes: Arc<RollupChanges>,
    /// The task feeding `changes`, started by the first [`watch`](Self::watch).
    watcher: OnceLock<AbortOnDrop>,
}

/// Stops the change watcher when the cache goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ReportCache {
    /// A cache of at most `max_entries` reports weighing at most `max_bytes` together; 0 for either
    /// disables it.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            entries: Mutex::new(Entries { by_key: HashMap::new(), bytes: 0 }),
            changes: Arc::new(RollupChanges::new()),
            watcher: OnceLock::new(),
        }
    }

    /// Starts following `reader`'s announcements, once per cache (the first call; later ones do nothing).
    /// Must be called in a Tokio runtime: it spawns the listener.
    pub fn watch<R: RollupReader>(&self, reader: &Arc<R>) {
        if !self.enabled() {
            return;
        }
        self.watcher.get_or_init(|| {
            let reader = Arc::clone(reader);
            let changes = Arc::clone(&self.changes);
            AbortOnDrop(tokio::spawn(async move { reader.watch_changes(changes).await }))
        });
    }

    /// The customer's stamp now, `None` while no listener is connected. Read it before the revision sum.
    pub fn stamp(&self, customer_id: &str) -> Option<ChangeStamp> {
        self.changes.stamp(customer_id)
    }

    /// The announcements this cache follows (for tests: whether a listener is connected).
    pub fn changes(&self) -> &RollupChanges {
        &self.changes
    }

    /// Whether the cache keeps anything (if not, callers skip reading the revision sum).
    pub fn enabled(&self) -> bool {
        self.max_entries > 0 && self.max_bytes > 0
    }

    /// The response of `key` if it was computed at `revision_sum`, as `T` (the response type of the
    /// method asking; a key's period decides which it is), and its body as sent. A hit remembers
    /// `stamp` (read before the sum), so that [`get_unchanged`](Self::get_unchanged) answers until it moves.
    pub fn get<T: TryFrom<EncodedReport>>(
        &self,
        key: &ReportKey,
        revision_sum: u64,
        stamp: Option<ChangeStamp>,
    ) -> Option<(T, ReportBody)> {
        let mut entries = self.entries.lock();
        let entry = entries.by_key.get_mut(key).filter(|entry| entry.revision_sum == revision_sum)?;
        let hit = (T::try_from(entry.report.clone()).ok()?, entry.body.clone());
        entry.checked_at = stamp;
        Some(hit)
    }

    /// The response of `key` without reading the revision sum: only if the entry was found current at
    /// `stamp` (the customer's stamp now), so no change of the customer was announced since.
    pub fn get_unchanged<T: TryFrom<EncodedReport>>(
        &self,
        key: &ReportKey,
        stamp: ChangeStamp,
    ) -> Option<(T, ReportBody)> {
        let entries = self.entries.lock();
        let entry = entries.by_key.get(key).filter(|entry| entry.checked_at == Some(stamp))?;
        Some((T::try_from(entry.report.clone()).ok()?, entry.body.clone()))
    }

    /// Remembers the response of `key`, read after its revision sum was `revision_sum` (and the customer's
    /// stamp `stamp`, read before the sum), and returns its body (the one kept, if it is). A response
    /// heavier than the whole budget is not kept (and the key's older entry goes, as it is stale).
    pub fn put(
        &self,
        key: ReportKey,
        revision_sum: u64,
        stamp: Option<ChangeStamp>,
        report: impl Into<EncodedReport>,
    ) -> ReportBody {
        let report = report.into();
        let body = ReportBody::new(report.bytes().clone());
        if !self.enabled() {
            return body;
        }
        let bytes = entry_bytes(&key, &body);
        let mut entries = self.entries.lock();
        if let Some(replaced) = entries.by_key.remove(&key) {
            entries.bytes -= replaced.bytes;
        }
        if bytes <= self.max_bytes {
            if entries.by_key.len() >= self.max_entries || entries.bytes + bytes > self.max_bytes {
                // Reports are cheap to recompute once; a full cache starts over rather than track recency.
                entries.by_key.clear();
                entries.bytes = 0;
            }
            entries.by_key.insert(key, Entry { revision_sum, checked_at: stamp, report, body: body.clone(), bytes });
            entries.bytes += bytes;
        }
        debug_assert!(entries.bytes <= self.max_bytes && entries.by_key.len() <= self.max_entries);
        metrics::gauge!(telemetry::CACHE_BYTES).set(entries.bytes as f64);
        body
    }

    /// Entries and bytes held now.
    pub fn usage(&self) -> (usize, usize) {
        let entries = self.entries.lock();
        (entries.by_key.len(), entries.bytes)
    }
}

#[cfg(test)]
mod tests {
    use hourglass_proto::encoded::Encoded;
    use hourglass_proto::v1::{GetHourlyMetricsResponse, GetPeriodMetricsResponse, MetricsRow, PeriodMetricsRow};

    use super::*;

    fn key(customer: &str) -> ReportKey {
        ReportKey {
            customer_id: customer.into(),
            from: 0,
            to: 3600,
            event_types: vec![],
            group_by_event_type: true,
            period: Period::Hour,
        }
    }

    fn rows(events: u64, count: usize) -> Vec<MetricsRow> {
        vec![MetricsRow { events, event_type: "click".into(), ..MetricsRow::default() }; count]
    }

    fn hourly(events: u64) -> EncodedGetHourlyMetricsResponse {
        Encoded::new(&GetHourlyMetricsResponse { rows: rows(events, 1) })
    }

    fn events(response: EncodedGetHourlyMetricsResponse) -> u64 {
        response.to_message().unwrap().rows[0].events
    }

    #[test]
    fn an_entry_answers_only_for_its_revision_sum_and_key() {
        let cache = ReportCache::new(10, 1 << 20);
        cache.put(key("acme"), 3, None, hourly(7));
        assert_eq!(events(cache.get(&key("acme"), 3, None).unwrap().0), 7);
        assert!(
            cache.get::<EncodedGetHourlyMetricsResponse>(&key("acme"), 4, None).is_none(),
            "a rollup written since makes the entry useless"
        );
        assert!(
            cache.get::<EncodedGetHourlyMetricsResponse>(&key("globex"), 3, None).is_none(),
            "another customer's report is another key"
        );
        cache.put(key("acme"), 4, None, hourly(9));
        assert_eq!(events(cache.get(&key("acme"), 4, None).unwrap().0), 9);
        assert_eq!(cache.usage().0, 1, "the newer response replaced the older");
    }

    #[test]
    fn a_hit_shares_the_bytes_it_cached_and_answers_only_as_its_own_response_type() {
        let cache = ReportCache::new(10, 1 << 20);
        let response = hourly(7);
        let kept = cache.put(key("acme"), 1, None, response.clone());
        let (hit, body): (EncodedGetHourlyMetricsResponse, _) = cache.get(&key("acme"), 1, None).unwrap();
        assert_eq!(hit.as_bytes().as_ptr(), response.as_bytes().as_ptr(), "no copy, no encoding");
        assert_eq!(body.encoded().as_ptr(), response.as_bytes().as_ptr(), "the body sends the same bytes");
        assert_eq!(kept.encoded().as_ptr(), response.as_bytes().as_ptr());
        assert!(cache.get::<EncodedGetPeriodMetricsResponse>(&key("acme"), 1, None).is_none());

        let period = Encoded::new(&GetPeriodMetricsResponse {
            rows: vec![PeriodMetricsRow { metrics: Some(rows(3, 1).remove(0)), complete: true }],
        });
        let day = ReportKey { period: Period::Day, ..key("acme") };
        cache.put(day.clone(), 1, None, period.clone());
        let (hit, _): (EncodedGetPeriodMetricsResponse, _) = cache.get(&day, 1, None).unwrap();
        assert_eq!(hit.to_message().unwrap(), period.to_message().unwrap());
    }

    #[test]
    fn an_entry_found_current_at_a_stamp_answers_without_the_sum_until_the_stamp_moves() {
        let cache = ReportCache::new(10, 1 << 20);
        let changes = RollupChanges::new();
        changes.listening();
        let stamp = changes.stamp("acme").unwrap();
        cache.put(key("acme"), 3, Some(stamp), hourly(7));
        assert_eq!(events(cache.get_unchanged(&key("acme"), stamp).unwrap().0), 7);

        changes.changed("acme");
        let moved = changes.stamp("acme").unwrap();
        assert!(
            cache.get_unchanged::<EncodedGetHourlyMetricsResponse>(&key("acme"), moved).is_none(),
            "an announced change sends the request to the revision sum"
        );
        assert!(cache.get::<EncodedGetHourlyMetricsResponse>(&key("acme"), 3, Some(moved)).is_some());
        assert!(cache.get_unchanged::<EncodedGetHourlyMetricsResponse>(&key("acme"), moved).is_some(), "checked again");

        let unstamped = ReportCache::new(10, 1 << 20);
        unstamped.put(key("acme"), 3, None, hourly(7));
        assert!(
            unstamped.get_unchanged::<EncodedGetHourlyMetricsResponse>(&key("acme"), moved).is_none(),
            "an entry put while nothing listened was never vouched for"
        );
    }

    #[test]
    fn a_full_cache_starts_over_and_a_disabled_one_keeps_nothing() {
        let cache = ReportCache::new(2, 1 << 20);
        cache.put(key("a"), 1, None, hourly(1));
        cache.put(key("b"), 1, None, hourly(1));
        cache.put(key("c"), 1, None, hourly(1));
        assert!(cache.get::<EncodedGetHourlyMetricsResponse>(&key("a"), 1, None).is_none());
        assert!(cache.get::<EncodedGetHourlyMetricsResponse>(&key("c"), 1, None).is_some());
        for disabled in [ReportCache::new(0, 1 << 20), ReportCache::new(10, 0)] {
            disabled.put(key("a"), 1, None, hourly(1));
            assert!(
                !disabled.enabled() && disabled.get::<EncodedGetHourlyMetricsResponse>(&key("a"), 1, None).is_none()
            );
            assert_eq!(disabled.usage(), (0, 0));
        }
    }

    #[test]
    fn the_byte_budget_bounds_what_is_kept() {
        let large = Encoded::new(&GetHourlyMetricsResponse { rows: rows(5, 1000) });
        let large_bytes = entry_bytes(&key("a"), &ReportBody::new(large.as_bytes().clone()));
        assert!(large_bytes > 2 * large.as_bytes().len(), "room for the gzip form is counted");
        assert!(large.as_bytes().len() > 10_000, "{} bytes", large.as_bytes().len());

        // Room for two large responses, not three: the third starts the cache over.
        let cache = ReportCache::new(100, 2 * large_bytes + large_bytes / 2);
        cache.put(key("a"), 1, None, large.clone());
        cache.put(key("b"), 1, None, large.clone());
        assert_eq!(cache.usage(), (2, 2 * large_bytes));
        cache.put(key("c"), 1, None, large.clone());
        assert_eq!(cache.usage(), (1, large_bytes));
        assert!(cache.get::<EncodedGetHourlyMetricsResponse>(&key("c"), 1, None).is_some());

        // Replacing an entry frees its bytes first, so the same key at a new revision stays in place.
        cache.put(key("d"), 1, None, hourly(1));
        let (entries, bytes) = cache.usage();
        cache.put(key("d"), 2, None, hourly(2));
        assert_eq!(cache.usage(), (entries, bytes));

        // A response heavier than the whole budget is not kept, and its key's stale entry goes.
        let small = ReportCache::new(100, large_bytes - 1);
        small.put(key("a"), 1, None, hourly(1));
        small.put(key("a"), 2, None, large.clone());
        assert!(small.get::<EncodedGetHourlyMetricsResponse>(&key("a"), 2, None).is_none());
        assert!(small.get::<EncodedGetHourlyMetricsResponse>(&key("a"), 1, None).is_none());
        assert_eq!(small.usage(), (0, 0));

        // The key's own bytes count: a filter of many event types weighs its names.
        let filtered = ReportKey { event_types: vec!["x".repeat(1000); 10], ..key("a") };
        let body = ReportBody::new(hourly(1).as_bytes().clone());
        assert!(entry_bytes(&filtered, &body) >= entry_bytes(&key("a"), &body) + 10_000);
    }
}
