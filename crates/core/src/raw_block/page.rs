//! [`PageWindow`]: one page of a bucket gathered from a scan of its blocks, in memory bounded by the
//! page's size rather than the bucket's.
//!
//! A bucket's events are spread over blocks in write order, not in event-id order, and an id can have
//! several copies (a client resending it in another batch), the last written winning. A page (the
//! `limit` smallest ids above a cursor whose last copy passes the type filter) therefore needs a scan of
//! every block, and the scan must not remember every id it passes. The window is offered every copy in
//! write order, oldest first, and keeps:
//!
//! - `events`: for every id in the window's range, its latest copy so far if that copy passes the
//!   filter; a later copy replaces it, or removes it when it fails the filter;
//! - `upper`: once more than `limit` ids pass, the largest is dropped and `upper` becomes that id, so
//!   the window covers only ids below it (a later copy at or above `upper` is ignored, and so cannot
//!   resurrect a dropped id).
//!
//! So `events` never exceeds `limit` + 1 entries, and at the end of a scan `events` is exact for the
//! ids between the cursor and `upper`. If a later copy removed an id after something was dropped,
//! `events` can hold fewer than `limit` while ids at or above `upper` were skipped: the page continues
//! with another scan from `upper` (inclusive) for the rest. That takes an id whose type changed between
//! copies, so a page needs one scan in practice, and each further scan starts above the last.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::raw_store::StoredEvent;

/// The events of one page gathered so far by one scan of a bucket.
pub struct PageWindow {
    /// Ids at or below (or only below) this are outside the window.
    lower: Bound<String>,
    /// Most events the window returns.
    limit: usize,
    /// Ids at or above this were dropped or ignored; `None` while none were.
    upper: Option<String>,
    /// For each id in the window whose latest copy so far passes the filter, that copy.
    events: BTreeMap<String, StoredEvent>,
}

/// What a finished scan yields.
pub struct ScannedWindow {
    /// The window's events, in id order.
    pub events: Vec<StoredEvent>,
    /// Where a further scan must resume (inclusive) to fill the page, if the page may go on there.
    pub resume_at: Option<String>,
}

impl PageWindow {
    /// A window of at most `limit` (at least 1) events with ids within `lower`.
    pub fn new(lower: Bound<String>, limit: usize) -> Self {
        debug_assert!(limit > 0, "an empty page needs no scan");
        Self { lower, limit, upper: None, events: BTreeMap::new() }
    }

    /// Offers the next copy, in write order, of `event_id`: `passes_filter` tells whether this copy is
    /// of the wanted type, and `stored` makes it, called only if the window keeps it.
    pub fn offer(&mut self, event_id: &str, passes_filter: bool, stored: impl FnOnce() -> StoredEvent) {
        let above_lower = match &self.lower {
            Bound::Excluded(after) => event_id > after.as_str(),
            Bound::Included(from) => event_id >= from.as_str(),
            Bound::Unbounded => true,
        };
        let below_upper = self.upper.as_deref().is_none_or(|upper| event_id < upper);
        if !above_lower || !below_upper {
            return;
        }
        if !passes_filter {
            // The latest copy decides: an earlier copy of the wanted type no longer counts.
            self.events.remove(event_id);
            return;
        }
        if let Some(kept) = self.events.get_mut(event_id) {
            *kept = stored();
            return;
        }
        let full = self.events.len() == self.limit;
        let above_largest = self.events.last_key_value().is_some_and(|(largest, _)| event_id > largest.as_str());
        if full && above_largest {
            // It would be dropped at once: narrow the window without copying the event.
            self.upper = Some(event_id.to_owned());
            return;
        }
        self.events.insert(event_id.to_owned(), stored());
        if self.events.len() > self.limit {
            let (dropped_id, _) = self.events.pop_last().expect("the window holds more than its limit");
            self.upper = Some(dropped_id);
        }
    }

    /// The window after a scan of every block.
    pub fn finish(self) -> ScannedWindow {
        let full = self.events.len() == self.limit;
        let resume_at = if full { None } else { self.upper };
        ScannedWindow { events: self.events.into_values().collect(), resume_at }
    }
}

/// The scans that make one page of a bucket: at most `limit` events with ids above `after_event_id`,
/// in id order. A store asks for a window, offers it every copy of the bucket oldest first, and hands it
/// back; another window comes only while the page is short and more ids may follow (in practice none).
/// Both raw stores page this way; only their scan differs.
pub struct PageScans {
    page: Vec<StoredEvent>,
    limit: usize,
    /// Where the next scan starts; `None` once the page is done.
    next_lower: Option<Bound<String>>,
}

impl PageScans {
    /// The scans of the page after `after_event_id` (`""` for the start of the bucket).
    pub fn new(after_event_id: &str, limit: usize) -> Self {
        Self { page: Vec::new(), limit, next_lower: Some(Bound::Excluded(after_event_id.to_owned())) }
    }

    /// The window the next scan fills, or `None` when the page is complete.
    pub fn next_window(&mut self) -> Option<PageWindow> {
        if self.page.len() >= self.limit {
            return None;
        }
        let lower = self.next_lower.take()?;
        Some(PageWindow::new(lower, self.limit - self.page.len()))
    }

    /// Takes a window back after its scan of every copy.
    pub fn add(&mut self, window: PageWindow) {
        let scanned = window.finish();
        self.page.extend(scanned.events);
        self.next_lower = scanned.resume_at.map(Bound::Included);
    }

    /// The page.
    pub fn into_page(self) -> Vec<StoredEvent> {
        self.page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(event_id: &str, batch_id: &str) -> StoredEvent {
        StoredEvent {
            event_id: event_id.to_owned(),
            event_type: String::new(),
            occurred_at_ms: 0,
            user_id: None,
            string_properties: BTreeMap::new(),
            number_properties: BTreeMap::new(),
            bool_properties: BTreeMap::new(),
            batch_id: batch_id.to_owned(),
        }
    }

    /// Offers `(id, passes filter, batch)` copies in order and returns (ids with their batch, resume_at).
    fn scan(window: &mut Option<PageWindow>, copies: &[(&str, bool, &str)]) -> (Vec<(String, String)>, Option<String>) {
        let mut window = window.take().expect("a window to scan");
        for (event_id, passes_filter, batch_id) in copies {
            window.offer(event_id, *passes_filter, || stored(event_id, batch_id));
        }
        let scanned = window.finish();
        let events = scanned.events.into_iter().map(|event| (event.event_id, event.batch_id)).collect();
        (events, scanned.resume_at)
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected.iter().map(|(id, batch)| ((*id).to_owned(), (*batch).to_owned())).collect()
    }

    #[test]
    fn the_smallest_ids_above_the_cursor_in_id_order_with_their_last_copy() {
        let copies = [("d", true, "1"), ("b", true, "1"), ("a", true, "1"), ("e", true, "1"), ("b", true, "2")];
        let mut window = Some(PageWindow::new(Bound::Excluded("a".to_owned()), 2));
        let (events, resume_at) = scan(&mut window, &copies);
        assert_eq!(events, pairs(&[("b", "2"), ("d", "1")]));
        assert_eq!(resume_at, None, "a full page needs no further scan");

        let mut everything = Some(PageWindow::new(Bound::Excluded(String::new()), 10));
        let (events, resume_at) = scan(&mut everything, &copies);
        assert_eq!(events, pairs(&[("a", "1"), ("b", "2"), ("d", "1"), ("e", "1")]));
        assert_eq!(resume_at, None, "a short page that dropped nothing is the end of the bucket");
    }

    #[test]
    fn the_latest_copy_decides_the_filter() {
        // b was of the wanted type, then resent as another; c the other way round.
        let copies = [("b", true, "1"), ("c", false, "1"), ("b", false, "2"), ("c", true, "2"), ("a", true, "1")];
        let mut window = Some(PageWindow::new(Bound::Excluded(String::new()), 5));
        assert_eq!(scan(&mut window, &copies), (pairs(&[("a", "1"), ("c", "2")]), None));
    }

    #[test]
    fn ids_above_a_dropped_one_stay_out_even_when_the_window_empties() {
        // A page of one: c is dropped for b, b's later copy fails the filter, then d arrives. Taking d
        // would skip c, so the scan returns nothing and the page resumes at c.
        let copies = [("b", true, "1"), ("c", true, "1"), ("b", false, "2"), ("d", true, "1")];
        let mut window = Some(PageWindow::new(Bound::Excluded(String::new()), 1));
        assert_eq!(scan(&mut window, &copies), (Vec::new(), Some("c".to_owned())));

        let mut rest = Some(PageWindow::new(Bound::Included("c".to_owned()), 1));
        assert_eq!(scan(&mut rest, &copies), (pairs(&[("c", "1")]), None));
    }

    #[test]
    fn a_page_emptied_after_dropping_resumes_where_it_dropped() {
        // Page of two: d is dropped (upper = d), then b's later copy fails the filter. Ids from d on
        // were not tracked, so the page continues with a scan from d.
        let copies = [("a", true, "1"), ("b", true, "1"), ("d", true, "1"), ("b", false, "2"), ("e", true, "1")];
        let mut window = Some(PageWindow::new(Bound::Excluded(String::new()), 2));
        let (first, resume_at) = scan(&mut window, &copies);
        assert_eq!(first, pairs(&[("a", "1")]));
        assert_eq!(resume_at.as_deref(), Some("d"));

        let mut rest = Some(PageWindow::new(Bound::Included("d".to_owned()), 1));
        assert_eq!(scan(&mut rest, &copies), (pairs(&[("d", "1")]), None), "the rest starts at d, inclusive");
    }
}
