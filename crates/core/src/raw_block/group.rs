//! Blocks that hold the events of several batch records: [`grouped_blocks`] puts the events that the
//! records of one write fall in the same customer-hour and bucket into one block, so a store writes a
//! row per (customer, hour, bucket) and write call instead of one per record there.
//!
//! A grouped block's bytes are those of a one-record block (the block format does not change); what is
//! new is that its events came from several records. [`BlockBatches`] says which: a run of events per
//! record, in block order, so a reader still names the batch that stored each copy.
//!
//! # Order, and which copy is the last written
//! The records of a group go into the block oldest first, ordered as the stores order one-record blocks
//! (received by the collector, then batch id), each record's events in record order. Walking a block
//! backwards therefore meets an id's copies in the order walking the records' own blocks newest first
//! would, and last-write-wins inside one call is exactly what it was with a block per record.
//! docs/architecture.md ("The raw store's layout") has what changes between calls.
//!
//! # Keys
//! A group of one record keeps the key a one-record block always had (its received time and batch
//! id), so a record written alone rewrites the row an older build wrote for it. A group of several is
//! keyed by its newest record's received time and a [`group_block_id`] derived from the batch ids it
//! holds: the same records (a redelivered poll) give the same key and rewrite the same row; grouped
//! differently they give another key, and the copies that row repeats are the ones read-time
//! de-duplication removes anyway.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{compress, push_encoded_event};
use crate::raw_store::bucket_of;
use crate::record_view::RecordView;

/// Between the newest batch id and the digest in a [`group_block_id`]. Below `-` and every
/// alphanumeric, so a group's id sorts right after its newest batch id among the collector's batch ids
/// (UUIDs: hex digits and `-`).
const GROUP_ID_SEPARATOR: char = '+';

/// Hex digits of the SHA-256 of a group's batch ids kept in its id: 64 bits, so two different groups
/// sharing a newest record (whose rows would overwrite each other) never meet in practice.
const GROUP_DIGEST_HEX_DIGITS: usize = 16;

/// The events of one or more records that fall in one customer-hour and bucket, as one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupedBlock<'a> {
    /// The customer.
    pub customer_id: &'a str,
    /// The hour of the events' `occurred_at` (an event without a time counts as at 0).
    pub hour_start: i64,
    /// Their bucket ([`bucket_of`]).
    pub bucket: u32,
    /// When the collector received the newest record in the block, in milliseconds since the epoch.
    pub received_at_unix_ms: i64,
    /// The block's id: the batch id of its record when it holds one record's events, else a
    /// [`group_block_id`].
    pub block_id: String,
    /// Which record each event came from.
    pub batches: BlockBatches<'a>,
    /// The events, oldest record first, each record's in record order, as a [`compress`]ed block.
    pub block: Vec<u8>,
}

/// Which batch stored each event of a block: runs of consecutive events, one per record, in block
/// order. One run means a one-record block, whose batch id its key holds already.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockBatches<'a> {
    runs: Vec<(&'a str, u32)>,
}

impl<'a> BlockBatches<'a> {
    /// Runs of (batch id, events), in block order.
    pub fn new(runs: Vec<(&'a str, u32)>) -> Self {
        Self { runs }
    }

    /// The runs, in block order.
    pub fn runs(&self) -> &[(&'a str, u32)] {
        &self.runs
    }

    /// Whether the block holds the events of more than one record.
    pub fn is_grouped(&self) -> bool {
        self.runs.len() > 1
    }

    /// How many events the runs cover.
    pub fn event_count(&self) -> usize {
        self.runs.iter().map(|(_, events)| *events as usize).sum()
    }

    /// The batch id of every event, in block order: `block_id` (the row's own) for a block without runs.
    /// `None` when the runs do not cover exactly `event_count` events (a damaged row).
    pub fn per_event(&self, block_id: &'a str, event_count: usize) -> Option<Vec<&'a str>> {
        let mut batch_ids = Vec::new();
        batch_of_each_event(block_id, self.runs.iter().copied(), event_count, &mut batch_ids).ok()?;
        Some(batch_ids)
    }

    /// The runs left when the events at `removed` (block indexes, ascending) are taken out of the
    /// block; runs left empty disappear.
    pub fn without(&self, removed: &[usize]) -> Vec<(&'a str, u32)> {
        let mut removed = removed.iter().peekable();
        let mut start = 0usize;
        let mut kept_runs = Vec::with_capacity(self.runs.len());
        for (batch_id, events) in &self.runs {
            let end = start + *events as usize;
            let mut kept = *events;
            while removed.next_if(|index| **index < end).is_some() {
                kept -= 1;
            }
            if kept > 0 {
                kept_runs.push((*batch_id, kept));
            }
            start = end;
        }
        kept_runs
    }
}

/// Fills `batch_ids` with the batch id of each of a block's `event_count` events, in block order, from
/// its runs (as stored: [`BlockBatches::runs`]); every event gets `block_id` (the row's own) when there
/// are none. On runs that do not cover exactly `event_count` events (a damaged row), the number they
/// cover. `batch_ids` is cleared first, so a reader reuses one buffer for a page of blocks.
pub fn batch_of_each_event<'a>(
    block_id: &'a str,
    runs: impl IntoIterator<Item = (&'a str, u32)>,
    event_count: usize,
    batch_ids: &mut Vec<&'a str>,
) -> Result<(), usize> {
    batch_ids.clear();
    for (batch_id, events) in runs {
        batch_ids.extend(std::iter::repeat_n(batch_id, events as usize));
    }
    match batch_ids.len() {
        0 => {
            batch_ids.extend(std::iter::repeat_n(block_id, event_count));
            Ok(())
        }
        covered if covered == event_count => Ok(()),
        covered => Err(covered),
    }
}

/// The id of a block holding several records' events: the newest record's batch id, `+`, and 16 hex
/// digits of the SHA-256 of every batch id in it (oldest first, each followed by a newline).
pub fn group_block_id<'a>(batch_ids_oldest_first: impl IntoIterator<Item = &'a str>) -> String {
    let mut digest = Sha256::new();
    let mut newest = "";
    for batch_id in batch_ids_oldest_first {
        digest.update(batch_id.as_bytes());
        digest.update(b"\n");
        newest = batch_id;
    }
    let hex: String = digest.finalize().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{newest}{GROUP_ID_SEPARATOR}{}", &hex[..GROUP_DIGEST_HEX_DIGITS])
}

/// One record's events in one (hour, bucket), uncompressed.
struct Piece<'a> {
    batch_id: &'a str,
    received_at_unix_ms: i64,
    raw: Vec<u8>,
    events: u32,
}

/// The blocks of `records` written together: one per customer, hour and bucket their events touch,
/// unless its events would pass `max_block_bytes` uncompressed, in which case it is cut between records
/// into blocks of at most that (a single record's events in one place stay in one block whatever
/// their size, as they always did; 0 gives every record blocks of its own). Records are taken in the
/// order the stores rank one-record blocks (received time, then batch id); one record given twice (a
/// redelivery in the same call: the same customer, batch id and received time) is taken once.
pub fn grouped_blocks<'a>(
    records: &'a [RecordView<'a>],
    bucket_count: u32,
    max_block_bytes: usize,
) -> Vec<GroupedBlock<'a>> {
    let mut order: Vec<&RecordView<'_>> = records.iter().filter(|record| !record.events.is_empty()).collect();
    // Stable, so of one record given twice the later copy is kept (they are the same bytes).
    order.sort_by(|left, right| {
        (left.customer_id.as_str(), left.received_at_unix_ms, left.batch_id.as_str()).cmp(&(
            right.customer_id.as_str(),
            right.received_at_unix_ms,
            right.batch_id.as_str(),
        ))
    });
    order.dedup_by(|later, earlier| {
        later.customer_id == earlier.customer_id
            && later.batch_id == earlier.batch_id
            && later.received_at_unix_ms == earlier.received_at_unix_ms
    });

    let mut blocks = Vec::new();
    // Per customer, the pieces of each place in record order; places in the order first touched.
    let mut places: Vec<(i64, u32)> = Vec::new();
    let mut pieces_by_place: HashMap<(i64, u32), Vec<Piece<'a>>> = HashMap::new();
    let mut current_customer: Option<&str> = None;
    for record in order {
        if current_customer.is_some_and(|customer| customer != record.customer_id) {
            flush_customer(
                current_customer.unwrap_or_default(),
                &mut places,
                &mut pieces_by_place,
                max_block_bytes,
                &mut blocks,
            );
        }
        current_customer = Some(record.customer_id.as_str());
        for (place, raw, events) in record_pieces(record, bucket_count) {
            let pieces = pieces_by_place.entry(place).or_insert_with(|| {
                places.push(place);
                Vec::new()
            });
            pieces.push(Piece {
                batch_id: record.batch_id.as_str(),
                received_at_unix_ms: record.received_at_unix_ms,
                raw,
                events,
            });
        }
    }
    if let Some(customer_id) = current_customer {
        flush_customer(customer_id, &mut places, &mut pieces_by_place, max_block_bytes, &mut blocks);
    }
    blocks
}

/// The blocks of one customer's pieces (places in order), cut at `max_block_bytes`.
fn flush_customer<'a>(
    customer_id: &'a str,
    places: &mut Vec<(i64, u32)>,
    pieces_by_place: &mut HashMap<(i64, u32), Vec<Piece<'a>>>,
    max_block_bytes: usize,
    blocks: &mut Vec<GroupedBlock<'a>>,
) {
    for (hour_start, bucket) in places.drain(..) {
        let pieces = pieces_by_place.remove(&(hour_start, bucket)).unwrap_or_default();
        let mut chunk: Vec<Piece<'a>> = Vec::new();
        let mut chunk_bytes = 0usize;
        for piece in pieces {
            if !chunk.is_empty() && chunk_bytes + piece.raw.len() > max_block_bytes {
                blocks.push(block_of(customer_id, hour_start, bucket, std::mem::take(&mut chunk)));
                chunk_bytes = 0;
            }
            chunk_bytes += piece.raw.len();
            chunk.push(piece);
        }
        if !chunk.is_empty() {
            blocks.push(block_of(customer_id, hour_start, bucket, chunk));
        }
    }
}

/// One block of `pieces` (at least one, oldest first).
fn block_of<'a>(customer_id: &'a str, hour_start: i64, bucket: u32, pieces: Vec<Piece<'a>>) -> GroupedBlock<'a> {
    debug_assert!(!pieces.is_empty(), "a block holds at least one record's events");
    let newest = pieces.last().map(|piece| (piece.batch_id, piece.received_at_unix_ms)).unwrap_or_default();
    let block_id = match pieces.as_slice() {
        [single] => single.batch_id.to_owned(),
        _ => group_block_id(pieces.iter().map(|piece| piece.batch_id)),
    };
    let runs = pieces.iter().map(|piece| (piece.batch_id, piece.events)).collect();
    let block = match pieces.as_slice() {
        [single] => compress(&single.raw),
        _ => {
            let mut raw = Vec::with_capacity(pieces.iter().map(|piece| piece.raw.len()).sum());
            for piece in &pieces {
                raw.extend_from_slice(&piece.raw);
            }
            compress(&raw)
        }
    };
    GroupedBlock {
        customer_id,
        hour_start,
        bucket,
        received_at_unix_ms: newest.1,
        block_id,
        batches: BlockBatches::new(runs),
        block,
    }
}

/// A record's events by (hour, bucket), in the order first touched: the uncompressed block of each and
/// its number of events.
pub(super) fn record_pieces(record: &RecordView<'_>, bucket_count: u32) -> Vec<((i64, u32), Vec<u8>, u32)> {
    let mut pieces: Vec<((i64, u32), Vec<u8>, u32)> = Vec::new();
    for event in &record.events {
        let place = (event.hour_start(), bucket_of(&event.event_id, bucket_count));
        // A record touches few places (its hours times the buckets), so a scan beats a map.
        let index = match pieces.iter().position(|(known, _, _)| *known == place) {
            Some(index) => index,
            None => {
                pieces.push((place, Vec::new(), 0));
                pieces.len() - 1
            }
        };
        let (_, raw, events) = &mut pieces[index];
        push_encoded_event(raw, &event.encoded);
        *events += 1;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use hourglass_proto::log::v1::EventBatchRecord;
    use hourglass_proto::prost_types::Timestamp;
    use hourglass_proto::v1::Event;

    use super::*;
    use crate::raw_block::{Decompressor, EventView, record_blocks};

    const HOUR: i64 = 1_764_075_600;

    fn record(
        customer_id: &str,
        batch_id: &str,
        received_at_unix_ms: i64,
        events: &[(&str, &str)],
    ) -> EventBatchRecord {
        let events = events
            .iter()
            .map(|(id, event_type)| Event {
                event_id: (*id).into(),
                event_type: (*event_type).into(),
                occurred_at: Some(Timestamp { seconds: HOUR + 10, nanos: 0 }),
                ..Event::default()
            })
            .collect();
        EventBatchRecord {
            customer_id: customer_id.into(),
            received_at_unix_ms,
            batch_id: batch_id.into(),
            events,
            ..EventBatchRecord::default()
        }
    }

    /// (customer, bucket, id, ids and types in block order, per-event batch ids) of one block.
    type Contents = (String, u32, String, Vec<String>, Vec<String>);

    /// The [`Contents`] of each block.
    fn contents(blocks: &[GroupedBlock<'_>]) -> Vec<Contents> {
        let mut decompressor = Decompressor::new();
        blocks
            .iter()
            .map(|block| {
                let events = decompressor.events(&block.block).unwrap();
                let ids: Vec<String> = events
                    .iter()
                    .map(|encoded| {
                        let event = EventView::parse(encoded).unwrap();
                        format!("{}:{}", event.event_id, event.event_type)
                    })
                    .collect();
                let batches = block.batches.per_event(&block.block_id, ids.len()).expect("runs cover the block");
                (
                    block.customer_id.to_owned(),
                    block.bucket,
                    block.block_id.clone(),
                    ids,
                    batches.into_iter().map(str::to_owned).collect(),
                )
            })
            .collect()
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| (*value).to_owned()).collect()
    }

    #[test]
    fn the_records_of_a_customer_hour_bucket_share_a_block_oldest_first() {
        // Given out of received order (two collectors), with another customer between them.
        let records = [
            record("acme", "b-2", 2_000, &[("x", "second"), ("y", "second")]),
            record("other", "o-1", 1_500, &[("x", "theirs")]),
            record("acme", "b-1", 1_000, &[("x", "first"), ("z", "first")]),
        ];
        let views = RecordView::from_records(&records);
        let blocks = grouped_blocks(&views, 1, usize::MAX);
        let group_id = group_block_id(["b-1", "b-2"]);
        assert_eq!(
            contents(&blocks),
            vec![
                (
                    "acme".into(),
                    0,
                    group_id.clone(),
                    strings(&["x:first", "z:first", "x:second", "y:second"]),
                    strings(&["b-1", "b-1", "b-2", "b-2"]),
                ),
                ("other".into(), 0, "o-1".into(), strings(&["x:theirs"]), strings(&["o-1"])),
            ]
        );
        assert_eq!(blocks[0].received_at_unix_ms, 2_000, "keyed by the newest record");
        assert_eq!(blocks[0].batches.runs(), &[("b-1", 2), ("b-2", 2)]);
        assert!(group_id.starts_with("b-2+") && group_id.len() == "b-2+".len() + 16, "{group_id}");
        assert!(!blocks[1].batches.is_grouped(), "one record's block keeps its batch id as key");
    }

    #[test]
    fn the_same_records_give_the_same_keys_and_a_redelivery_in_the_call_counts_once() {
        let records = [
            record("acme", "b-1", 1_000, &[("a", "view"), ("b", "view"), ("c", "view")]),
            record("acme", "b-2", 2_000, &[("d", "view"), ("a", "click")]),
        ];
        let once = RecordView::from_records(&records);
        let delivered_twice = [records[1].clone(), records[0].clone(), records[1].clone()];
        let twice = RecordView::from_records(&delivered_twice);
        let keys = |blocks: &[GroupedBlock<'_>]| -> Vec<(i64, u32, i64, String)> {
            let mut keys: Vec<_> = blocks
                .iter()
                .map(|block| (block.hour_start, block.bucket, block.received_at_unix_ms, block.block_id.clone()))
                .collect();
            keys.sort();
            keys
        };
        let first = grouped_blocks(&once, 4, usize::MAX);
        let again = grouped_blocks(&twice, 4, usize::MAX);
        assert_eq!(keys(&first), keys(&again), "a redelivered poll rewrites the same rows");
        assert_eq!(contents(&first).len(), contents(&again).len());
        let events: usize = again.iter().map(|block| block.batches.event_count()).sum();
        assert_eq!(events, 5, "the record given twice is in the blocks once");
        // Grouped with another record, the same record's events get other keys.
        let third = record("acme", "b-3", 3_000, &[("e", "view")]);
        let regrouped_records = [records[0].clone(), third];
        let regrouped_views = RecordView::from_records(&regrouped_records);
        let regrouped = grouped_blocks(&regrouped_views, 1, usize::MAX);
        assert_ne!(regrouped[0].block_id, grouped_blocks(&once, 1, usize::MAX)[0].block_id);
    }

    #[test]
    fn a_block_is_cut_between_records_past_the_cap() {
        let records: Vec<EventBatchRecord> = (0..5)
            .map(|index| {
                let ids: Vec<String> = (0..4).map(|event| format!("r{index}-e{event}")).collect();
                let events: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "view")).collect();
                record("acme", &format!("b-{index}"), 1_000 + index, &events)
            })
            .collect();
        let views = RecordView::from_records(&records);
        let one_record_bytes = record_pieces(&views[0], 1)[0].1.len();
        let blocks = grouped_blocks(&views, 1, 2 * one_record_bytes);
        let runs: Vec<Vec<(&str, u32)>> = blocks.iter().map(|block| block.batches.runs().to_vec()).collect();
        assert_eq!(runs, vec![vec![("b-0", 4), ("b-1", 4)], vec![("b-2", 4), ("b-3", 4)], vec![("b-4", 4)]]);
        assert_eq!(blocks[2].block_id, "b-4");
        assert!(blocks[0].received_at_unix_ms < blocks[1].received_at_unix_ms);

        // A cap of 0: every record's blocks are its own, exactly the one-record blocks.
        let own = grouped_blocks(&views, 3, 0);
        let mut expected = Vec::new();
        for view in &views {
            for block in record_blocks(view, 3) {
                expected.push((
                    view.batch_id.clone(),
                    view.received_at_unix_ms,
                    block.hour_start,
                    block.bucket,
                    block.block,
                ));
            }
        }
        let mut got: Vec<_> = own
            .into_iter()
            .map(|block| (block.block_id, block.received_at_unix_ms, block.hour_start, block.bucket, block.block))
            .collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn runs_lose_the_events_taken_out() {
        let batches = BlockBatches::new(vec![("a", 2), ("b", 3), ("c", 1)]);
        assert_eq!(batches.per_event("key", 6), Some(vec!["a", "a", "b", "b", "b", "c"]));
        assert_eq!(batches.per_event("key", 5), None, "runs that do not cover the block");
        assert_eq!(BlockBatches::default().per_event("key", 2), Some(vec!["key", "key"]));
        assert_eq!(batches.without(&[0, 3]), vec![("a", 1), ("b", 2), ("c", 1)]);
        assert_eq!(batches.without(&[2, 3, 4]), vec![("a", 2), ("c", 1)]);
        assert_eq!(batches.without(&[]), batches.runs().to_vec());
    }
}
