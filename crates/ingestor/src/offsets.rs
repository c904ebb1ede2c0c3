//! Which offsets may be committed: only those below every record still being written.
//!
//! Records of a partition are written concurrently and finish out of order. Committing offset `n`
//! tells Kafka "everything before `n` is done", so the committable offset of a partition is the lowest
//! offset still in flight (or one past the highest finished when nothing is in flight). Committing any
//! further would lose the in-flight records if the process died now: this is what makes the ingestor
//! at-least-once (invariant 1 of docs/architecture.md), and the idempotent raw store makes the "more than once"
//! harmless.

use std::collections::{BTreeSet, HashMap};

/// Offsets in flight and finished, per partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionOffsets>,
}

#[derive(Debug, Default)]
struct PartitionOffsets {
    in_flight: BTreeSet<i64>,
    /// One past the highest finished offset.
    finished_through: Option<i64>,
    /// The offset last handed out for commit.
    committed: Option<i64>,
}

impl OffsetTracker {
    /// A record is being written.
    pub fn start(&mut self, partition: i32, offset: i64) {
        self.partitions.entry(partition).or_default().in_flight.insert(offset);
    }

    /// A record is durably written (or dead-lettered). A rebalance that hands a partition back while a
    /// record is in flight redelivers it, so the same offset may finish twice; the second is a no-op.
    pub fn finish(&mut self, partition: i32, offset: i64) {
        let offsets = self.partitions.entry(partition).or_default();
        offsets.in_flight.remove(&offset);
        offsets.finished_through = Some(offsets.finished_through.map_or(offset + 1, |through| through.max(offset + 1)));
    }

    /// A record was abandoned (shutdown while it was still retrying): it stays uncommitted. It is kept
    /// in flight, which pins its partition's commit below it: the point.
    pub fn abandon(&mut self, _partition: i32, _offset: i64) {}

    /// Offsets that could be committed now, per partition: those that moved since the last commit.
    pub fn committable(&self) -> Vec<(i32, i64)> {
        let mut committable = Vec::new();
        for (partition, offsets) in &self.partitions {
            let next = match offsets.in_flight.first() {
                Some(lowest_in_flight) => Some(*lowest_in_flight),
                None => offsets.finished_through,
            };
            if let Some(next) = next
                && offsets.committed != Some(next)
                && offsets.finished_through.is_some()
            {
                committable.push((*partition, next));
            }
        }
        committable.sort_unstable();
        committable
    }

    /// Records that these offsets were committed.
    pub fn mark_committed(&mut self, committed: &[(i32, i64)]) {
        for (partition, offset) in committed {
            self.partitions.entry(*partition).or_default().committed = Some(*offset);
        }
    }

    /// Records still being written.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|offsets| offsets.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl OffsetTracker {
        fn take_committable(&mut self) -> Vec<(i32, i64)> {
            let committable = self.committable();
            self.mark_committed(&committable);
            committable
        }
    }

    #[test]
    fn commits_only_below_the_lowest_record_in_flight() {
        let mut tracker = OffsetTracker::default();
        for offset in 10..15 {
            tracker.start(0, offset);
        }
        tracker.finish(0, 12);
        tracker.finish(0, 13);
        assert_eq!(tracker.take_committable(), vec![(0, 10)], "10 and 11 are still in flight");
        tracker.finish(0, 10);
        assert_eq!(tracker.take_committable(), vec![(0, 11)]);
        tracker.finish(0, 11);
        assert_eq!(tracker.take_committable(), vec![(0, 14)]);
        tracker.finish(0, 14);
        assert_eq!(tracker.take_committable(), vec![(0, 15)]);
        assert_eq!(tracker.take_committable(), vec![], "nothing moved");
    }

    #[test]
    fn nothing_is_committable_before_anything_finished() {
        let mut tracker = OffsetTracker::default();
        tracker.start(3, 100);
        assert_eq!(tracker.take_committable(), vec![]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut tracker = OffsetTracker::default();
        tracker.start(0, 5);
        tracker.start(1, 7);
        tracker.start(1, 8);
        tracker.finish(1, 8);
        tracker.finish(0, 5);
        assert_eq!(tracker.take_committable(), vec![(0, 6), (1, 7)]);
        assert_eq!(tracker.in_flight(), 1);
    }

    #[test]
    fn a_record_redelivered_while_in_flight_finishes_once() {
        let mut tracker = OffsetTracker::default();
        tracker.start(0, 4);
        tracker.start(0, 4);
        tracker.finish(0, 4);
        tracker.finish(0, 4);
        assert_eq!(tracker.take_committable(), vec![(0, 5)]);
        assert_eq!(tracker.in_flight(), 0);
    }

    #[test]
    fn an_abandoned_record_pins_its_partition() {
        let mut tracker = OffsetTracker::default();
        tracker.start(0, 1);
        tracker.start(0, 2);
        tracker.finish(0, 2);
        tracker.abandon(0, 1);
        assert_eq!(tracker.take_committable(), vec![(0, 1)]);
    }
}
