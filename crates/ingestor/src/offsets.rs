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
    ///
    /// A record below the position last committed was written before (the commit said so) and is being
    /// written again: a rebalance reset the read position to where the group was, and the loop committed
    /// further before reading the record again. It is not tracked, as tracking it would make the next
    /// commit go back below the position committed.
    pub fn start(&mut self, partition: i32, offset: i64) {
        let offsets = self.partitions.entry(partition).or_default();
        if offsets.committed.is_some_and(|committed| offset < committed) {
            return;
        }
        offsets.in_flight.insert(offset);
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
    fn a_record_redelivered_below_the_committed_position_does_not_move_the_commit_back() {
        let mut tracker = OffsetTracker::default();
        tracker.start(0, 0);
        tracker.finish(0, 0);
        // A rebalance resets the read position to the group's (nothing committed yet: offset 0), then a
        // commit interval commits what finished, then the loop reads offset 0 again.
        assert_eq!(tracker.take_committable(), vec![(0, 1)]);
        tracker.start(0, 0);
        assert_eq!(tracker.take_committable(), vec![], "not back to 0");
        tracker.start(0, 1);
        tracker.finish(0, 0);
        assert_eq!(tracker.take_committable(), vec![], "1 is in flight");
        tracker.finish(0, 1);
        assert_eq!(tracker.take_committable(), vec![(0, 2)]);
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

    /// A model of the consumer around the real tracker: records delivered in offset order per partition,
    /// written concurrently (finishing in any order), abandoned, redelivered from the committed position
    /// after a rebalance while earlier writes are still going on, and commits that succeed or fail.
    mod properties {
        use std::collections::BTreeSet;

        use proptest::prelude::*;
        use proptest::test_runner::TestCaseError;

        use super::*;

        #[derive(Clone, Debug)]
        enum Step {
            /// The consumer hands out the next `count` records of a partition.
            Deliver { partition: usize, count: usize },
            /// One write in flight finishes: the record is stored (or dead-lettered).
            Finish { partition: usize, pick: usize },
            /// One write in flight is abandoned (shutdown while it was still retrying): nothing stored.
            Abandon { partition: usize, pick: usize },
            /// A rebalance hands the partition back: it is read again from its committed position, while
            /// the writes of the records delivered before go on.
            Rebalance { partition: usize },
            /// A commit interval whose commit succeeds.
            Commit,
            /// A commit interval whose commit fails: nothing is marked committed.
            FailedCommit,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (0..3usize, 1..4usize).prop_map(|(partition, count)| Step::Deliver { partition, count }),
                4 => (0..3usize, any::<usize>()).prop_map(|(partition, pick)| Step::Finish { partition, pick }),
                1 => (0..3usize, any::<usize>()).prop_map(|(partition, pick)| Step::Abandon { partition, pick }),
                1 => (0..3usize).prop_map(|partition| Step::Rebalance { partition }),
                2 => Just(Step::Commit),
                1 => Just(Step::FailedCommit),
            ]
        }

        /// What the consumer and the store know of one partition, apart from the tracker.
        #[derive(Debug)]
        struct Partition {
            id: i32,
            /// The first offset this consumer reads, and one past the last record.
            first: i64,
            end: i64,
            next_to_deliver: i64,
            /// The group's committed position (None: never committed, so read from `first`).
            committed: Option<i64>,
            /// The writes going on, by offset (an offset twice when redelivered while in flight).
            writes: Vec<i64>,
            /// Offsets written durably at least once.
            stored: BTreeSet<i64>,
        }

        impl Partition {
            fn deliver(&mut self, tracker: &mut OffsetTracker) {
                tracker.start(self.id, self.next_to_deliver);
                self.writes.push(self.next_to_deliver);
                self.next_to_deliver += 1;
            }

            fn finish(&mut self, tracker: &mut OffsetTracker, pick: usize) {
                let offset = self.writes.swap_remove(pick % self.writes.len());
                tracker.finish(self.id, offset);
                self.stored.insert(offset);
            }
        }

        /// After every step: a committable offset is past only records written durably (so never past
        /// a record still in flight, abandoned or never delivered) and ahead of the committed position.
        fn check_committable(tracker: &OffsetTracker, partitions: &[Partition]) -> Result<(), TestCaseError> {
            let committable = tracker.committable();
            for (partition_id, offset) in &committable {
                let partition = partitions.iter().find(|partition| partition.id == *partition_id);
                let Some(partition) = partition else {
                    return Err(TestCaseError::fail(format!("committable for unknown partition {partition_id}")));
                };
                let unstored = (partition.first..*offset).find(|below| !partition.stored.contains(below));
                prop_assert_eq!(
                    unstored,
                    None,
                    "partition {} committable at {} past a record not yet written",
                    partition_id,
                    offset
                );
                prop_assert!(*offset <= partition.end, "partition {} committable past its end", partition_id);
                if let Some(committed) = partition.committed {
                    prop_assert!(
                        *offset > committed,
                        "partition {} committable at {} after committing {}: backwards or unmoved",
                        partition_id,
                        offset,
                        committed
                    );
                }
            }
            Ok(())
        }

        fn commit(tracker: &mut OffsetTracker, partitions: &mut [Partition]) {
            let committable = tracker.committable();
            tracker.mark_committed(&committable);
            for (partition_id, offset) in committable {
                if let Some(partition) = partitions.iter_mut().find(|partition| partition.id == partition_id) {
                    partition.committed = Some(offset);
                }
            }
        }

        fn partitions() -> impl Strategy<Value = Vec<Partition>> {
            prop::collection::btree_map(0i32..64, (0i64..10_000, 1i64..16), 1..=3).prop_map(|partitions| {
                partitions
                    .into_iter()
                    .map(|(id, (first, records))| Partition {
                        id,
                        first,
                        end: first + records,
                        next_to_deliver: first,
                        committed: None,
                        writes: Vec::new(),
                        stored: BTreeSet::new(),
                    })
                    .collect()
            })
        }

        proptest! {
            // 256 cases of up to 80 steps, about 4 ms each in a debug build: a second of `cargo test`. A
            // run of 20,000 cases found nothing these do not (the one failure found, a commit going back
            // after a redelivery, showed within the first few cases: its seed is in proptest-regressions).
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn commits_never_pass_an_unwritten_record_never_go_back_and_reach_the_end(
                mut partitions in partitions(),
                steps in prop::collection::vec(step(), 0..80),
            ) {
                let mut tracker = OffsetTracker::default();
                let count = partitions.len();
                let mut abandoned_any = false;
                for step in &steps {
                    match *step {
                        Step::Deliver { partition, count: records } => {
                            let partition = &mut partitions[partition % count];
                            for _ in 0..records {
                                if partition.next_to_deliver < partition.end {
                                    partition.deliver(&mut tracker);
                                }
                            }
                        }
                        Step::Finish { partition, pick } => {
                            let partition = &mut partitions[partition % count];
                            if !partition.writes.is_empty() {
                                partition.finish(&mut tracker, pick);
                            }
                        }
                        Step::Abandon { partition, pick } => {
                            let partition = &mut partitions[partition % count];
                            if !partition.writes.is_empty() {
                                let offset = partition.writes.swap_remove(pick % partition.writes.len());
                                tracker.abandon(partition.id, offset);
                                abandoned_any = true;
                            }
                        }
                        Step::Rebalance { partition } => {
                            let partition = &mut partitions[partition % count];
                            partition.next_to_deliver = partition.committed.unwrap_or(partition.first);
                        }
                        Step::Commit => commit(&mut tracker, &mut partitions),
                        Step::FailedCommit => {}
                    }
                    check_committable(&tracker, &partitions)?;
                }

                // Every record delivered and every write finished: unless a write was abandoned (which
                // pins its partition until the record is redelivered), the commit reaches the end.
                for partition in &mut partitions {
                    while partition.next_to_deliver < partition.end {
                        partition.deliver(&mut tracker);
                    }
                    while !partition.writes.is_empty() {
                        partition.finish(&mut tracker, 0);
                    }
                }
                check_committable(&tracker, &partitions)?;
                commit(&mut tracker, &mut partitions);
                if !abandoned_any {
                    for partition in &partitions {
                        prop_assert_eq!(partition.committed, Some(partition.end), "partition {}", partition.id);
                    }
                }

                // A rebalance redelivers from the committed position, abandoned records included; once
                // those finish too, every partition is committed to its end, and nothing more moves.
                for partition in &mut partitions {
                    partition.next_to_deliver = partition.committed.unwrap_or(partition.first);
                    while partition.next_to_deliver < partition.end {
                        partition.deliver(&mut tracker);
                    }
                    while !partition.writes.is_empty() {
                        partition.finish(&mut tracker, 0);
                    }
                }
                check_committable(&tracker, &partitions)?;
                commit(&mut tracker, &mut partitions);
                for partition in &partitions {
                    prop_assert_eq!(partition.committed, Some(partition.end), "partition {}", partition.id);
                }
                prop_assert_eq!(tracker.committable(), Vec::new());
                prop_assert_eq!(tracker.in_flight(), 0);
            }
        }
    }
}
