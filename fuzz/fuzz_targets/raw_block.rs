//! A stored event block as the raw stores read it back (`raw_block`: `Decompressor`, `block_events`,
//! `EventView`), for the rows a corrupted or foreign write could leave in `raw_event_blocks` or `raw.db`.
//!
//! Input: the stored bytes. Properties: reading them returns events or a typed error, never panics,
//! and a parsed event's properties iterate without error (parsing checked them); any bytes compressed
//! with `compress` decompress to themselves, also through a decompressor whose buffer held a larger
//! block before.

#![no_main]

use hourglass_core::raw_block::{Decompressor, EventView, compress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decompressor = Decompressor::new();
    if let Ok(events) = decompressor.events(data) {
        for encoded in events {
            if let Ok(view) = EventView::parse(encoded) {
                let stored = view.to_stored("batch");
                let properties =
                    stored.string_properties.len() + stored.number_properties.len() + stored.bool_properties.len();
                assert!(view.properties().count() >= properties, "a name seen twice is kept once");
                assert_eq!(
                    view.numbers().count(),
                    view.properties()
                        .filter(|(_, value)| matches!(value, hourglass_core::raw_block::PropertyRef::Number(_)))
                        .count()
                );
            }
        }
    }

    let frame = compress(data);
    assert_eq!(decompressor.frame(&frame).expect("a frame compress wrote"), data);
    let half = &data[..data.len() / 2];
    assert_eq!(decompressor.frame(&compress(half)).expect("a frame compress wrote"), half);
});
