//! The [`Authenticator`](super::Authenticator)'s cache: the key store's answers by key hash, bounded, with
//! one look-up at a time per key.
//!
//! - **Bounded.** At most `max_entries` answers, in two least-recently-used lists: keys found and keys
//!   unknown. An answer that needs room evicts the least recently used unknown key, and a found key only
//!   when no unknown key is cached. So a flood of distinct bad keys evicts at most one valid key (when
//!   the cache is full of valid keys, the flood's first miss takes one's place), then only its own
//!   misses: the keys of real clients stay cached.
//! - **Single flight.** The first caller to miss a key leads its look-up; callers that miss the same key
//!   meanwhile wait for the leader's answer, or its error, instead of asking the store too. A leading
//!   caller dropped before the answer (its client went away) wakes its waiters, and one of them leads a
//!   new look-up.
//! - **Invalidation.** Each look-up is a flight with an id. Invalidating a key forgets its answer and
//!   detaches its flight: the flight's answer, when it comes, still reaches the callers already waiting
//!   on it (they asked before the invalidation) but not the cache, since it may predate the revocation
//!   that caused the invalidation. A caller after the invalidation starts a new look-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hourglass_core::api_key::{KeyHash, Scope};
use hourglass_core::key_store::KeyStoreError;
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{KeyCacheConfig, Principal};

/// What the key store said about a key.
#[derive(Clone)]
pub(super) enum CachedLookup {
    Found { principal: Arc<Principal>, scope: Scope, revoked: bool },
    Unknown,
}

/// What a look-up gives every caller waiting on it. The error is shared: the store failed for all of them.
pub(super) type SharedAnswer = Result<CachedLookup, Arc<KeyStoreError>>;

struct CacheEntry {
    lookup: CachedLookup,
    expires_at: Instant,
}

/// A look-up under way, as the cache knows it: waiters subscribe to its answer.
struct FlightRecord {
    id: u64,
    answer_rx: watch::Receiver<Option<SharedAnswer>>,
}

struct CacheState {
    found: LruCache<KeyHash, CacheEntry>,
    unknown: LruCache<KeyHash, CacheEntry>,
    flights: HashMap<KeyHash, FlightRecord>,
    next_flight_id: u64,
}

impl CacheState {
    fn len(&self) -> usize {
        self.found.len() + self.unknown.len()
    }

    fn fresh(&mut self, key_hash: KeyHash, now: Instant) -> Option<CachedLookup> {
        let list = if self.found.contains(&key_hash) { &mut self.found } else { &mut self.unknown };
        let entry = list.get(&key_hash)?;
        if entry.expires_at > now {
            return Some(entry.lookup.clone());
        }
        list.pop(&key_hash);
        None
    }

    fn insert(&mut self, key_hash: KeyHash, entry: CacheEntry, max_entries: usize) {
        self.found.pop(&key_hash);
        self.unknown.pop(&key_hash);
        if max_entries == 0 {
            return;
        }
        while self.len() >= max_entries {
            // A cached miss is cheaper to lose than a valid key: its client is not a real one, or soon
            // will be and then costs one look-up.
            if self.unknown.pop_lru().is_none() {
                self.found.pop_lru();
            }
        }
        match entry.lookup {
            CachedLookup::Found { .. } => self.found.put(key_hash, entry),
            CachedLookup::Unknown => self.unknown.put(key_hash, entry),
        };
        debug_assert!(self.len() <= max_entries);
    }

    /// Forgets flight `id` of `key_hash`; false if it is no longer the key's flight (it was detached by
    /// an invalidation, and maybe replaced by a newer one).
    fn end_flight(&mut self, key_hash: KeyHash, id: u64) -> bool {
        let is_current = self.flights.get(&key_hash).is_some_and(|flight| flight.id == id);
        if is_current {
            self.flights.remove(&key_hash);
        }
        is_current
    }
}

/// The key store's answers, bounded, with one look-up at a time per key.
pub(super) struct KeyCache {
    ttl: Duration,
    negative_ttl: Duration,
    max_entries: usize,
    state: Mutex<CacheState>,
}

/// What a caller who wants a key's answer does next.
pub(super) enum NextStep<'cache> {
    /// Use the cached answer.
    Cached(CachedLookup),
    /// Wait for the look-up another caller leads.
    Wait(FlightWaiter),
    /// Ask the store, then [`Flight::complete`].
    Lead(Flight<'cache>),
}

impl KeyCache {
    pub(super) fn new(config: &KeyCacheConfig) -> Self {
        let state = CacheState {
            found: LruCache::unbounded(),
            unknown: LruCache::unbounded(),
            flights: HashMap::new(),
            next_flight_id: 0,
        };
        Self {
            ttl: Duration::from_secs(config.ttl_secs),
            negative_ttl: Duration::from_secs(config.negative_ttl_secs),
            max_entries: config.max_entries,
            state: Mutex::new(state),
        }
    }

    /// The cached answer for `key_hash` if fresh, else the look-up under way to wait for, else a new
    /// look-up for the caller to lead.
    pub(super) fn next_step(&self, key_hash: KeyHash) -> NextStep<'_> {
        let mut state = self.state.lock();
        if let Some(lookup) = state.fresh(key_hash, Instant::now()) {
            return NextStep::Cached(lookup);
        }
        if let Some(flight) = state.flights.get(&key_hash) {
            return NextStep::Wait(FlightWaiter { answer_rx: flight.answer_rx.clone() });
        }
        let id = state.next_flight_id;
        state.next_flight_id += 1;
        let (answer_tx, answer_rx) = watch::channel(None);
        state.flights.insert(key_hash, FlightRecord { id, answer_rx });
        NextStep::Lead(Flight { cache: self, key_hash, id, answer_tx })
    }

    /// Forgets `key_hash`'s answer; a look-up of it under way will not be cached.
    pub(super) fn invalidate(&self, key_hash: KeyHash) {
        let mut state = self.state.lock();
        state.found.pop(&key_hash);
        state.unknown.pop(&key_hash);
        state.flights.remove(&key_hash);
    }

    /// Forgets every answer; no look-up under way will be cached.
    pub(super) fn invalidate_all(&self) {
        let mut state = self.state.lock();
        state.found.clear();
        state.unknown.clear();
        state.flights.clear();
    }

    /// Answers cached, fresh or expired.
    pub(super) fn len(&self) -> usize {
        self.state.lock().len()
    }
}

/// A look-up led by one caller. Dropping it unfinished wakes its waiters, for one of them to lead anew.
pub(super) struct Flight<'cache> {
    cache: &'cache KeyCache,
    key_hash: KeyHash,
    id: u64,
    answer_tx: watch::Sender<Option<SharedAnswer>>,
}

impl Flight<'_> {
    /// Caches the store's answer, unless the key was invalidated since the look-up began, and hands it
    /// to the waiters either way. Errors are not cached.
    pub(super) fn complete(self, answer: &SharedAnswer) {
        let now = Instant::now();
        {
            let mut state = self.cache.state.lock();
            let still_current = state.end_flight(self.key_hash, self.id);
            if let (true, Ok(lookup)) = (still_current, answer) {
                let ttl = match lookup {
                    CachedLookup::Found { .. } => self.cache.ttl,
                    CachedLookup::Unknown => self.cache.negative_ttl,
                };
                if !ttl.is_zero() {
                    let entry = CacheEntry { lookup: lookup.clone(), expires_at: now + ttl };
                    state.insert(self.key_hash, entry, self.cache.max_entries);
                }
            }
        }
        self.answer_tx.send_replace(Some(answer.clone()));
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // After `complete` this finds the flight gone already; unfinished, it lets the next caller lead.
        self.cache.state.lock().end_flight(self.key_hash, self.id);
    }
}

/// A caller's wait for a look-up another caller leads.
pub(super) struct FlightWaiter {
    answer_rx: watch::Receiver<Option<SharedAnswer>>,
}

impl FlightWaiter {
    /// The leader's answer, or `None` if the leading caller was dropped before the store answered.
    pub(super) async fn answer(mut self) -> Option<SharedAnswer> {
        loop {
            let answer = self.answer_rx.borrow_and_update().clone();
            if answer.is_some() {
                return answer;
            }
            if self.answer_rx.changed().await.is_err() {
                // The leader is gone; an answer it sent just before leaving is still there to read.
                return self.answer_rx.borrow().clone();
            }
        }
    }
}
