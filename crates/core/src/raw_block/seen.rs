//! [`SeenEventIds`]: the ids already visited while a bucket is folded newest copy first, so each id is
//! visited once, as its last written copy.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// Hashes client-chosen ids with a per-process random seed (so no client can aim collisions at a fold),
/// but several times faster than the standard library's SipHash on short ids; a collision costs only
/// correctness-neutral work ([`SeenEventIds::insert`] compares the ids themselves).
type RandomState = foldhash::quality::RandomState;

/// The event ids seen so far in one bucket, copied into one arena: no allocation per event, and the
/// rows they came from need not stay in memory.
#[derive(Default)]
pub struct SeenEventIds<S = RandomState> {
    /// Hashes ids (a parameter so that tests can make every id collide).
    hasher: S,
    /// By hash, the arena span of the first id seen with it.
    first_by_hash: HashMap<u64, (usize, usize), PrehashedBuildHasher>,
    arena: String,
    /// Ids whose hash another id took first (rare), kept whole.
    collided: HashSet<String>,
}

impl SeenEventIds {
    /// An empty set, hashing with a random key (ids come from clients).
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S: BuildHasher> SeenEventIds<S> {
    /// Records `event_id`; `true` if it had not been seen.
    pub fn insert(&mut self, event_id: &str) -> bool {
        match self.first_by_hash.entry(self.hasher.hash_one(event_id)) {
            Entry::Vacant(vacant) => {
                let start = self.arena.len();
                self.arena.push_str(event_id);
                vacant.insert((start, event_id.len()));
                true
            }
            Entry::Occupied(occupied) => {
                let (start, length) = *occupied.get();
                if &self.arena[start..start + length] == event_id {
                    false
                } else {
                    self.collided.insert(event_id.to_owned())
                }
            }
        }
    }
}

/// Keys that are already hashes are used as they are.
#[derive(Clone, Copy, Default)]
struct PrehashedBuildHasher;

impl BuildHasher for PrehashedBuildHasher {
    type Hasher = PrehashedHasher;

    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with this; bytes are folded in all the same, for completeness.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_are_exact() {
        let mut seen = SeenEventIds::<RandomState>::default();
        assert!(seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(!seen.insert("a"));
        assert!(seen.insert(""));
        assert!(!seen.insert(""));
    }

    /// Hashes every id to the same value, so every id after the first collides.
    #[derive(Default)]
    struct OneHash;

    impl BuildHasher for OneHash {
        type Hasher = OneHash;

        fn build_hasher(&self) -> OneHash {
            OneHash
        }
    }

    impl Hasher for OneHash {
        fn finish(&self) -> u64 {
            7
        }

        fn write(&mut self, _bytes: &[u8]) {}
    }

    #[test]
    fn colliding_hashes_keep_ids_apart() {
        let mut seen = SeenEventIds::<OneHash>::default();
        assert!(seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(seen.insert("c"));
        assert!(!seen.insert("a"));
        assert!(!seen.insert("b"));
        assert!(!seen.insert("c"));
    }
}
