//! A small read-only map from the names a plan declares (event types, property names, enum values) to
//! their index, built for the collector's per-property look-up.
//!
//! A general hash map hashes the whole name, then compares it with `memcmp` against a key kept in a
//! bucket beside its value. Here a name is first reduced to a [`NameKey`] of its length and its first and
//! last eight bytes, read with at most two loads; for a name of up to 16 bytes (nearly every name a
//! plan has) equal keys mean equal names, so the look-up is one multiply and a compare of three words
//! in a dense slot array, with no `memcmp`. Only a longer name also compares its middle bytes.
//!
//! Slots are open-addressed (linear probing) at most half full; the hash is seeded at random per
//! table, so which names share a probe run cannot be chosen from outside.

use std::hash::BuildHasher;

/// A name reduced to what its look-up compares: its length and two words that, with the length, fix
/// every byte of a name of up to 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NameKey {
    head: u64,
    tail: u64,
    len: usize,
}

impl NameKey {
    /// The key of `name`: from 8 bytes on, its first and last eight (overlapping when shorter than
    /// 16); from 4, its first and last four in one word; below that, its first, middle and last byte.
    /// The loads overlap, but with the length fixed each byte lands in a known place, so two names of
    /// the same length up to 16 bytes have equal keys only when they are equal.
    #[inline]
    fn of(name: &[u8]) -> Self {
        let len = name.len();
        let (head, tail) = if len >= 8 {
            (read_u64(name, 0), read_u64(name, len - 8))
        } else if len >= 4 {
            (u64::from(read_u32(name, 0)) | (u64::from(read_u32(name, len - 4)) << 32), 0)
        } else if len > 0 {
            (u64::from(name[0]) | (u64::from(name[len / 2]) << 8) | (u64::from(name[len - 1]) << 16), 0)
        } else {
            (0, 0)
        };
        Self { head, tail, len }
    }
}

#[inline]
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

#[inline]
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

/// Names up to this long are fixed by their [`NameKey`]; longer ones compare their middle too.
const KEY_EXACT_BYTES: usize = 16;

/// One slot: a name's key and its index, or empty (`index == EMPTY`).
#[derive(Clone, Copy)]
struct Slot {
    key: NameKey,
    index: u32,
}

const EMPTY: u32 = u32::MAX;

/// Names mapped to their place in the list they were built from.
pub(super) struct NameTable {
    slots: Box<[Slot]>,
    /// `slots.len() - 1`; the length is a power of two.
    mask: usize,
    seed: u64,
    /// The names, by index: for the middle bytes of names longer than [`KEY_EXACT_BYTES`].
    names: Box<[Box<str>]>,
}

impl NameTable {
    /// A table of `names`, each mapped to its position (a name listed twice, to one of them).
    pub(super) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let names: Box<[Box<str>]> = names.into_iter().map(Box::from).collect();
        assert!(names.len() < EMPTY as usize, "a plan's names fit a u32 index");
        // At most half full, so an absent name's probe ends at an empty slot within a step or two.
        let capacity = (names.len() * 2).next_power_of_two().max(8);
        let empty = Slot { key: NameKey { head: 0, tail: 0, len: 0 }, index: EMPTY };
        let mut slots = vec![empty; capacity].into_boxed_slice();
        let seed = foldhash::fast::RandomState::default().hash_one(capacity) | 1;
        let mask = capacity - 1;
        for (index, name) in names.iter().enumerate() {
            let key = NameKey::of(name.as_bytes());
            let mut at = slot_of(key, seed, mask);
            while slots[at].index != EMPTY {
                at = (at + 1) & mask;
            }
            slots[at] = Slot { key, index: index as u32 };
        }
        Self { slots, mask, seed, names }
    }

    /// The index of `name`, if the table has it.
    #[inline]
    pub(super) fn get(&self, name: &str) -> Option<usize> {
        let bytes = name.as_bytes();
        let key = NameKey::of(bytes);
        let mut at = slot_of(key, self.seed, self.mask);
        loop {
            let slot = self.slots[at];
            if slot.index == EMPTY {
                return None;
            }
            if slot.key == key
                && (key.len <= KEY_EXACT_BYTES
                    || self.names[slot.index as usize].as_bytes()[8..key.len - 8] == bytes[8..key.len - 8])
            {
                return Some(slot.index as usize);
            }
            at = (at + 1) & self.mask;
        }
    }

    /// The names, in the order they were given.
    pub(super) fn names(&self) -> &[Box<str>] {
        &self.names
    }
}

/// The first slot to probe for `key`: the high bits of a seeded multiply of its words.
#[inline]
fn slot_of(key: NameKey, seed: u64, mask: usize) -> usize {
    let mixed = folded_multiply(key.head ^ seed, key.tail ^ (key.len as u64).rotate_right(8) ^ 0x9E37_79B9_7F4A_7C15);
    (mixed as usize) & mask
}

/// The two halves of a 128-bit product, xored: every input bit reaches the low bits.
#[inline]
fn folded_multiply(left: u64, right: u64) -> u64 {
    let product = u128::from(left) * u128::from(right);
    (product as u64) ^ ((product >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_name_is_found_at_its_index_and_others_are_not() {
        let names = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "session_id",
            "platform",
            "app_version",
            "checkout_completed",
            "a_name_of_exactly_16",
            "a name longer than sixteen bytes, with a middle",
            "a name longer than sixteen bytes, with a widdle",
            "é",
            "日本語の名前",
        ];
        let table = NameTable::new(names);
        assert_eq!(table.names().len(), names.len());
        for (index, name) in names.iter().enumerate() {
            assert_eq!(table.get(name), Some(index), "{name:?}");
        }
        for absent in [
            "b",
            "abce",
            "session_ie",
            "Platform",
            "checkout_complete",
            "a name longer than sixteen bytes, with a riddle",
            "日本語の名",
        ] {
            assert_eq!(table.get(absent), None, "{absent:?}");
        }
        assert_eq!(NameTable::new([]).get("anything"), None);
    }

    proptest! {
        /// Names that differ in one byte anywhere, and names of every length up to and past the exact
        /// key, are told apart as a hash map tells them apart.
        #[test]
        fn it_finds_what_a_hash_map_finds(
            names in prop::collection::btree_set("[ab_]{0,24}", 0..40),
            probes in prop::collection::vec("[ab_]{0,24}", 0..80),
        ) {
            let names: Vec<String> = names.into_iter().collect();
            let table = NameTable::new(names.iter().map(String::as_str));
            let map: std::collections::HashMap<&str, usize> =
                names.iter().enumerate().map(|(index, name)| (name.as_str(), index)).collect();
            for probe in names.iter().chain(&probes) {
                prop_assert_eq!(table.get(probe), map.get(probe.as_str()).copied(), "{:?}", probe);
            }
        }
    }
}
