//! Event blocks: how both raw stores (CQL and `raw.db`) hold the events of one batch record that fall in
//! one customer-hour and bucket, and how they read them back without allocating per event.
//!
//! - [`record_blocks`] builds the uncompressed blocks of a record, each the bytes of an
//!   `EventBatchRecord` holding only its `events` field, the events copied as the record holds them
//!   ([`push_encoded_event`]; [`push_event`] encodes an owned one) ([`wire`] decodes it borrowed: [`block_events`], [`EventView`]).
//! - [`compress`] turns it (or any payload) into a frame: one format byte, then the compressed bytes.
//!   [`Decompressor::block`] reads a stored block whichever way it was written: blocks from before
//!   compression start with the key of field 5 (`0x2a`) or are empty, and are used as they are; a frame
//!   starts with a format byte below `0x08`, which no protobuf message can start with (field 0 does
//!   not exist), so the two never mix up.
//! - [`PageWindow`] builds one page of a bucket in event-id order from a scan of its blocks in write
//!   order, in memory bounded by the page; [`SeenEventIds`] de-duplicates a bucket's ids when it is
//!   folded newest first.
//! - [`grouped_blocks`] puts the events of several records written together that share a customer-hour
//!   and bucket into one block (the CQL store's rows), with [`BlockBatches`] naming each event's batch.
//! - [`collect_user_event_ids`] and [`without_events`] erase one person's events from a block (a block is
//!   rewritten whole, its other events' bytes copied as they were).
//!
//! The codec is LZ4 (`lz4_flex`'s block format, pure Rust). Measured on the benchmark's ~200-byte events
//! in blocks of 6 events (a 100-event record over 16 buckets; docs/capacity.md has the table): LZ4 3.0x
//! at 0.17 CPU-s per million events to compress and 0.02 to decompress, zstd level 1 3.2x at 0.97 and
//! 0.22. zstd only pulls ahead on large blocks (100 events: 11.5x against 6.7x); the aggregator reads
//! every block of an hour, so decompression speed is what counts, and both are far under the target.

use crate::record_view::RecordView;

mod erase;
mod group;
mod page;
mod seen;
mod wire;

pub use erase::{BlockRewrite, collect_user_event_ids, without_events, without_events_at};
pub use group::{BlockBatches, GroupedBlock, batch_of_each_event, group_block_id, grouped_blocks};
pub use page::{PageScans, PageWindow, ScannedWindow};
pub use seen::SeenEventIds;
pub use wire::{DecodeError, EventView, PropertyRef, block_events, push_encoded_event, push_event};

/// The format byte of an LZ4 frame: then the uncompressed length (`u32`, little-endian) and the LZ4
/// block.
const FORMAT_LZ4: u8 = 0x01;

/// The first byte of every uncompressed block that holds an event: the key of field 5, length-delimited.
const UNCOMPRESSED_BLOCK_START: u8 = ((wire::EVENTS_FIELD << 3) | 2) as u8;

/// A frame stating more than this is corrupt: a block holds one record's events (a record is at most a
/// few MiB), so a larger length would only make a reader allocate what a bad row asks for.
const MAX_UNCOMPRESSED_BYTES: usize = 256 << 20;

/// The most an LZ4 block expands: a sequence's match length grows by 255 per byte that encodes it, so no
/// block decompresses to more than 255 times its size plus a sequence's fixed part. A frame stating more
/// than that for its bytes is corrupt and is refused before its buffer is allocated (fuzz/'s raw_block
/// target found rows of six bytes that made a reader allocate and zero 160 MiB each).
const LZ4_MAX_EXPANSION: usize = 255;
const LZ4_SEQUENCE_BYTES: usize = 64;

/// The compressed block of one batch record's events that fall in one customer-hour and bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBlock {
    /// The hour of the events' `occurred_at` (an event without a time counts as at 0).
    pub hour_start: i64,
    /// Their bucket ([`bucket_of`](crate::raw_store::bucket_of)).
    pub bucket: u32,
    /// The events, in record order, as a [`compress`]ed block.
    pub block: Vec<u8>,
}

/// The blocks of `record`: one per (hour, bucket) its events touch, in the order first touched. Each
/// event's bytes are copied into its block as the record holds them.
pub fn record_blocks(record: &RecordView<'_>, bucket_count: u32) -> Vec<RecordBlock> {
    group::record_pieces(record, bucket_count)
        .into_iter()
        .map(|((hour_start, bucket), raw, _)| RecordBlock { hour_start, bucket, block: compress(&raw) })
        .collect()
}

/// `raw` compressed into a frame (format byte, uncompressed length, LZ4 block).
pub fn compress(raw: &[u8]) -> Vec<u8> {
    // The length is bounded by a record's size, far below 4 GiB; a longer input is a bug upstream.
    let length = u32::try_from(raw.len()).expect("a block is smaller than 4 GiB");
    let mut frame = Vec::with_capacity(5 + lz4_flex::block::get_maximum_output_size(raw.len()));
    frame.push(FORMAT_LZ4);
    frame.extend_from_slice(&length.to_le_bytes());
    frame.resize(5 + lz4_flex::block::get_maximum_output_size(raw.len()), 0);
    // The output was sized by the crate's own bound, so compressing into it cannot run out of room.
    let written = lz4_flex::block::compress_into(raw, &mut frame[5..]).expect("output sized by lz4_flex's bound");
    frame.truncate(5 + written);
    frame
}

/// Decompresses frames into one buffer it reuses, so reading a bucket allocates per block at most (and
/// once the buffer has grown to the largest block, not at all); what it returns borrows that buffer or
/// the stored bytes.
#[derive(Debug, Default)]
pub struct Decompressor {
    buffer: Vec<u8>,
}

impl Decompressor {
    /// A decompressor with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The uncompressed block of a stored one: a block written before compression as it is, a frame
    /// decompressed.
    pub fn block<'a>(&'a mut self, stored: &'a [u8]) -> Result<&'a [u8], DecodeError> {
        match stored.first() {
            None => Ok(stored),
            Some(&UNCOMPRESSED_BLOCK_START) => Ok(stored),
            Some(_) => self.frame(stored),
        }
    }

    /// The bytes a [`compress`]ed frame holds.
    pub fn frame<'a>(&'a mut self, frame: &[u8]) -> Result<&'a [u8], DecodeError> {
        let (&format, rest) = frame.split_first().ok_or(DecodeError::Truncated)?;
        if format != FORMAT_LZ4 {
            return Err(DecodeError::UnknownFormat(format));
        }
        let (length, compressed) = rest.split_first_chunk::<4>().ok_or(DecodeError::Truncated)?;
        let length = u32::from_le_bytes(*length) as usize;
        let most_possible = compressed.len().saturating_mul(LZ4_MAX_EXPANSION).saturating_add(LZ4_SEQUENCE_BYTES);
        if length > MAX_UNCOMPRESSED_BYTES.min(most_possible) {
            return Err(DecodeError::Decompress(format!(
                "a frame of {} compressed bytes states {length} bytes",
                compressed.len()
            )));
        }
        self.buffer.resize(length, 0);
        let written = lz4_flex::block::decompress_into(compressed, &mut self.buffer)
            .map_err(|error| DecodeError::Decompress(error.to_string()))?;
        if written != length {
            return Err(DecodeError::Decompress(format!("{written} bytes where the frame states {length}")));
        }
        Ok(&self.buffer)
    }

    /// The encoded events of a stored block, in write order (see [`block`](Self::block)).
    pub fn events<'a>(&'a mut self, stored: &'a [u8]) -> Result<Vec<&'a [u8]>, DecodeError> {
        block_events(self.block(stored)?)
    }
}

#[cfg(test)]
mod tests {
    use hourglass_proto::v1::Event;

    use super::*;
    use crate::raw_store::bucket_of;

    fn block_of(ids: &[&str]) -> Vec<u8> {
        let mut block = Vec::new();
        for id in ids {
            push_event(
                &mut block,
                &Event { event_id: (*id).to_owned(), event_type: "view".into(), ..Event::default() },
            );
        }
        block
    }

    fn ids_of(decompressor: &mut Decompressor, stored: &[u8]) -> Vec<String> {
        let events = decompressor.events(stored).expect("a readable block");
        events.iter().map(|encoded| EventView::parse(encoded).expect("an event").event_id.to_owned()).collect()
    }

    #[test]
    fn compressed_and_uncompressed_blocks_read_the_same() {
        let raw = block_of(&["a", "b", "c"]);
        let compressed = compress(&raw);
        assert_eq!(compressed[0], FORMAT_LZ4);
        let mut decompressor = Decompressor::new();
        assert_eq!(ids_of(&mut decompressor, &compressed), ["a", "b", "c"]);
        assert_eq!(ids_of(&mut decompressor, &raw), ["a", "b", "c"], "a block from before compression");
        assert!(ids_of(&mut decompressor, &[]).is_empty());
        assert!(ids_of(&mut decompressor, &compress(&[])).is_empty());
        // The buffer is reused: a smaller block after a larger one reads only its own events.
        assert_eq!(ids_of(&mut decompressor, &compress(&block_of(&["z"]))), ["z"]);
        // An event copied from one block into another as it was encoded.
        let mut copied = Vec::new();
        for encoded in block_events(&raw).unwrap().into_iter().rev() {
            push_encoded_event(&mut copied, encoded);
        }
        assert_eq!(ids_of(&mut decompressor, &compress(&copied)), ["c", "b", "a"]);
    }

    #[test]
    fn a_record_becomes_one_block_per_hour_and_bucket() {
        use hourglass_proto::prost_types::Timestamp;
        let at = |seconds: i64| Some(Timestamp { seconds, nanos: 0 });
        let events: Vec<Event> = [("a", 3600), ("b", 3601), ("c", 7200), ("d", 3602)]
            .into_iter()
            .map(|(id, seconds)| Event { event_id: id.into(), occurred_at: at(seconds), ..Event::default() })
            .chain([Event { event_id: "timeless".into(), ..Event::default() }])
            .collect();
        let owned = hourglass_proto::log::v1::EventBatchRecord { events, ..Default::default() };
        let record = RecordView::from_record(&owned);
        let mut decompressor = Decompressor::new();
        let placed: Vec<(i64, u32, Vec<String>)> = record_blocks(&record, 1)
            .iter()
            .map(|block| (block.hour_start, block.bucket, ids_of(&mut decompressor, &block.block)))
            .collect();
        let ids = |list: &[&str]| list.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
        assert_eq!(placed, vec![(3600, 0, ids(&["a", "b", "d"])), (7200, 0, ids(&["c"])), (0, 0, ids(&["timeless"]))]);
        let by_bucket = record_blocks(&record, 4);
        for block in &by_bucket {
            for id in ids_of(&mut decompressor, &block.block) {
                assert_eq!(bucket_of(&id, 4), block.bucket, "{id} is in its bucket's block");
            }
        }
        let total: usize = by_bucket.iter().map(|block| ids_of(&mut decompressor, &block.block).len()).sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn a_frame_stating_more_than_its_bytes_can_hold_is_refused_unallocated() {
        let mut decompressor = Decompressor::new();
        // Found by fuzz/ (raw_block, fuzz/corpus/raw_block/regression-oversized-frame): one byte of LZ4
        // stating 168 MB.
        let frame = [FORMAT_LZ4, 0x00, 0xd1, 0x0a, 0x0a, 0x01];
        assert!(matches!(decompressor.frame(&frame), Err(DecodeError::Decompress(_))));
        assert_eq!(decompressor.buffer.capacity(), 0, "nothing was allocated for it");
        // The most repetitive block there is still reads: LZ4 expands it about 250 times.
        let zeros = vec![0u8; 1 << 20];
        let compressed = compress(&zeros);
        assert!(compressed.len() * 200 < zeros.len(), "{} bytes", compressed.len());
        assert_eq!(decompressor.frame(&compressed).unwrap(), zeros.as_slice());
    }

    #[test]
    fn repetitive_events_shrink() {
        let raw = block_of(&["event-000001", "event-000002", "event-000003", "event-000004"]);
        assert!(compress(&raw).len() < raw.len(), "{} vs {}", compress(&raw).len(), raw.len());
    }

    #[test]
    fn corrupt_frames_are_errors() {
        let mut decompressor = Decompressor::new();
        let frame = compress(&block_of(&["a", "b"]));
        assert!(matches!(decompressor.block(&[0x07, 1, 2]), Err(DecodeError::UnknownFormat(0x07))));
        assert!(matches!(decompressor.frame(&frame[..3]), Err(DecodeError::Truncated)));
        assert!(matches!(decompressor.frame(&frame[..frame.len() - 1]), Err(DecodeError::Decompress(_))));
        let mut too_long = frame.clone();
        too_long[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decompressor.frame(&too_long), Err(DecodeError::Decompress(_))));
        let mut wrong_length = frame;
        wrong_length[1] = wrong_length[1].wrapping_sub(1);
        assert!(decompressor.frame(&wrong_length).is_err());
    }
}
