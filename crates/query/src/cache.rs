//! A cache of report rows, checked against the rollups before every use.
//!
//! Reports are read far more often than hours are rolled up, and a month of hourly rows costs tens of
//! milliseconds to read and sum. An entry remembers the revision sum of its range
//! ([`RollupReader::revision_sum`](hourglass_core::rollup_reader::RollupReader::revision_sum)), which
//! grows with every rollup written in the range; a request first reads the current sum (one indexed
//! aggregate) and uses the entry only if it is unchanged. So the cache never answers with rows older than
//! the database's, and needs no expiry.

use std::collections::HashMap;
use std::sync::Arc;

use hourglass_proto::v1::MetricsRow;
use parking_lot::Mutex;

use crate::report::Period;

/// What identifies a report: everything that decides its rows.
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
    /// The rows' period.
    pub period: Period,
}

struct Entry {
    revision_sum: u64,
    rows: Arc<Vec<MetricsRow>>,
}

/// Report rows by [`ReportKey`], each valid for one revision sum of its range.
pub struct ReportCache {
    max_entries: usize,
    entries: Mutex<HashMap<ReportKey, Entry>>,
}

impl ReportCache {
    /// A cache of at most `max_entries` reports; 0 disables it.
    pub fn new(max_entries: usize) -> Self {
        Self { max_entries, entries: Mutex::new(HashMap::new()) }
    }

    /// Whether the cache keeps anything (if not, callers skip reading the revision sum).
    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }

    /// The rows of `key` if they were computed at `revision_sum`.
    pub fn get(&self, key: &ReportKey, revision_sum: u64) -> Option<Arc<Vec<MetricsRow>>> {
        let entries = self.entries.lock();
        entries.get(key).filter(|entry| entry.revision_sum == revision_sum).map(|entry| Arc::clone(&entry.rows))
    }

    /// Remembers the rows of `key`, read after its revision sum was `revision_sum`.
    pub fn put(&self, key: ReportKey, revision_sum: u64, rows: Arc<Vec<MetricsRow>>) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= self.max_entries && !entries.contains_key(&key) {
            // Reports are cheap to recompute once; a full cache starts over rather than track recency.
            entries.clear();
        }
        entries.insert(key, Entry { revision_sum, rows });
    }
}

#[cfg(test)]
mod tests {
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

    fn rows(events: u64) -> Arc<Vec<MetricsRow>> {
        Arc::new(vec![MetricsRow { events, ..MetricsRow::default() }])
    }

    #[test]
    fn an_entry_answers_only_for_its_revision_sum_and_key() {
        let cache = ReportCache::new(10);
        cache.put(key("acme"), 3, rows(7));
        assert_eq!(cache.get(&key("acme"), 3).unwrap()[0].events, 7);
        assert!(cache.get(&key("acme"), 4).is_none(), "a rollup written since makes the entry useless");
        assert!(cache.get(&key("globex"), 3).is_none(), "another customer's report is another key");
        cache.put(key("acme"), 4, rows(9));
        assert_eq!(cache.get(&key("acme"), 4).unwrap()[0].events, 9);
    }

    #[test]
    fn a_full_cache_starts_over_and_a_disabled_one_keeps_nothing() {
        let cache = ReportCache::new(2);
        cache.put(key("a"), 1, rows(1));
        cache.put(key("b"), 1, rows(1));
        cache.put(key("c"), 1, rows(1));
        assert!(cache.get(&key("a"), 1).is_none());
        assert!(cache.get(&key("c"), 1).is_some());
        let disabled = ReportCache::new(0);
        disabled.put(key("a"), 1, rows(1));
        assert!(!disabled.enabled() && disabled.get(&key("a"), 1).is_none());
    }
}
