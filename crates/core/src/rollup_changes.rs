//! [`RollupChanges`]: which customers' rollups changed, as the rollup store announces them.
//!
//! A cache of reports must not answer with rows older than the store's. Asking the store for the range's
//! revision sum before every use is always right but costs a database round trip per request, most of a
//! cached report's cost. A store that announces every committed completion (Postgres `NOTIFY` sent by
//! the completion transaction itself, so it is delivered only after the rows are visible) lets the cache
//! skip that read: an entry checked at a customer's [`ChangeStamp`] stays valid until the stamp moves.
//!
//! Announcements can be lost while the listening connection is down, so a stamp exists only while it is
//! up ([`RollupChanges::stamp`] is `None` otherwise) and each new connection starts a new epoch, which no
//! earlier stamp matches: entries checked before it are checked again against the revision sum. The
//! cost of this is a bound on staleness, documented in docs/architecture.md ("Query cache"): a hit may
//! be served from a range changed by a completion whose announcement is still in flight (committed, not
//! yet received by the listener), and never after the listener has received it.

use std::collections::HashMap;
use std::sync::Mutex;

/// A customer's position in the announcements: equal stamps mean no announced change between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeStamp {
    /// The listening connection's epoch (new for every connection).
    epoch: u64,
    /// The customer's announcements received in that epoch.
    changes: u64,
}

#[derive(Default)]
struct State {
    /// The current connection's epoch; `None` while nothing listens.
    epoch: Option<u64>,
    /// Epochs started so far, so each connection's is new.
    epochs_started: u64,
    /// Announcements per customer in the current epoch (customers never announced have 0).
    changes_by_customer: HashMap<String, u64>,
}

/// Announced changes per customer, fed by a store's listener, read by caches.
#[derive(Default)]
pub struct RollupChanges {
    state: Mutex<State>,
}

impl RollupChanges {
    /// Nothing listening yet: every [`stamp`](Self::stamp) is `None`.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few integers updated in place: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The customer's stamp, or `None` while no listener is connected (announcements may be missed, so
    /// only the store itself can say whether rows changed). Read it before reading what it vouches for.
    pub fn stamp(&self, customer_id: &str) -> Option<ChangeStamp> {
        let state = self.state();
        let epoch = state.epoch?;
        Some(ChangeStamp { epoch, changes: state.changes_by_customer.get(customer_id).copied().unwrap_or(0) })
    }

    /// A listener is connected and listening from now on: a new epoch, which no earlier stamp matches.
    pub fn listening(&self) {
        let mut state = self.state();
        state.epochs_started += 1;
        state.epoch = Some(state.epochs_started);
        state.changes_by_customer.clear();
    }

    /// The listener's connection is gone: no stamps until the next [`listening`](Self::listening).
    pub fn not_listening(&self) {
        let mut state = self.state();
        state.epoch = None;
        state.changes_by_customer.clear();
    }

    /// The store announced a committed change to the customer's rollups.
    pub fn changed(&self, customer_id: &str) {
        let mut state = self.state();
        if state.epoch.is_none() {
            return;
        }
        match state.changes_by_customer.get_mut(customer_id) {
            Some(changes) => *changes += 1,
            None => {
                state.changes_by_customer.insert(customer_id.to_owned(), 1);
            }
        }
    }

    /// Whether a listener is connected.
    pub fn is_listening(&self) -> bool {
        self.state().epoch.is_some()
    }

    /// Connections listened on so far (for tests: a lost connection was noticed and replaced).
    pub fn epochs_started(&self) -> u64 {
        self.state().epochs_started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_moves_with_its_customers_announcements_only() {
        let changes = RollupChanges::new();
        assert_eq!(changes.stamp("acme"), None, "nothing listens yet");
        changes.listening();
        let acme = changes.stamp("acme").unwrap();
        changes.changed("globex");
        assert_eq!(changes.stamp("acme"), Some(acme), "another customer's change");
        changes.changed("acme");
        assert_ne!(changes.stamp("acme"), Some(acme));
    }

    #[test]
    fn a_lost_connection_ends_every_stamp_and_the_next_one_matches_none_before_it() {
        let changes = RollupChanges::new();
        changes.listening();
        let before = changes.stamp("acme").unwrap();
        changes.not_listening();
        assert_eq!(changes.stamp("acme"), None);
        changes.changed("acme");
        assert_eq!(changes.stamp("acme"), None, "announcements without a listener count for nothing");
        changes.listening();
        assert!(changes.is_listening());
        assert_eq!(changes.epochs_started(), 2);
        assert_ne!(changes.stamp("acme"), Some(before), "a change may have been missed in between");
    }
}
