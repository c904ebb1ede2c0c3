//! Erasing one person's events from stored blocks (`RawStore::erase_user_events`): which ids are theirs,
//! and a block rewritten without them. Shared by both raw stores, which only read and write the rows.

use std::collections::HashSet;

use super::{DecodeError, Decompressor, EventView, compress, push_encoded_event};
use crate::erasure::UserMatcher;

/// What becomes of a stored block when some ids are erased from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockRewrite {
    /// It holds none of them: leave the row as it is.
    Unchanged,
    /// It held only them: delete the row.
    Emptied,
    /// The block without them, compressed, in the order its other events had.
    Rewritten(Vec<u8>),
}

/// Adds to `ids` the id of every event of the stored block `stored` whose user the matcher recognises.
pub fn collect_user_event_ids(
    decompressor: &mut Decompressor,
    stored: &[u8],
    matcher: &UserMatcher,
    ids: &mut HashSet<String>,
) -> Result<(), DecodeError> {
    for encoded_event in decompressor.events(stored)? {
        let event = EventView::parse(encoded_event)?;
        if event.user_id.is_some_and(|user_id| matcher.matches(user_id)) && !ids.contains(event.event_id) {
            ids.insert(event.event_id.to_owned());
        }
    }
    Ok(())
}

/// The stored block `stored` without the events whose id is in `ids`; each kept event's bytes are
/// copied as they were stored.
pub fn without_events(
    decompressor: &mut Decompressor,
    stored: &[u8],
    ids: &HashSet<String>,
) -> Result<BlockRewrite, DecodeError> {
    without_events_at(decompressor, stored, ids, &mut Vec::new())
}

/// [`without_events`], also setting `removed` to the block indexes of the events taken out, ascending
/// (a store that records which batch each event came from adjusts that with them).
pub fn without_events_at(
    decompressor: &mut Decompressor,
    stored: &[u8],
    ids: &HashSet<String>,
    removed: &mut Vec<usize>,
) -> Result<BlockRewrite, DecodeError> {
    removed.clear();
    let events = decompressor.events(stored)?;
    let mut kept = Vec::new();
    for (index, encoded_event) in events.iter().enumerate() {
        if ids.contains(EventView::parse(encoded_event)?.event_id) {
            removed.push(index);
        } else {
            push_encoded_event(&mut kept, encoded_event);
        }
    }
    Ok(match removed.len() {
        0 => BlockRewrite::Unchanged,
        count if count == events.len() => BlockRewrite::Emptied,
        _ => BlockRewrite::Rewritten(compress(&kept)),
    })
}

#[cfg(test)]
mod tests {
    use hourglass_proto::v1::Event;

    use super::*;
    use crate::customer::CustomerId;
    use crate::erasure::{ErasureSalt, UserHash};
    use crate::raw_block::push_event;

    fn block(events: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut raw = Vec::new();
        for (id, user) in events {
            let event = Event {
                event_id: (*id).into(),
                event_type: "view".into(),
                user_id: user.map(str::to_owned),
                ..Event::default()
            };
            push_event(&mut raw, &event);
        }
        compress(&raw)
    }

    fn ids_of(decompressor: &mut Decompressor, stored: &[u8]) -> Vec<String> {
        let events = decompressor.events(stored).unwrap();
        events.iter().map(|encoded| EventView::parse(encoded).unwrap().event_id.to_owned()).collect()
    }

    #[test]
    fn a_block_loses_exactly_the_persons_events() {
        let salt = ErasureSalt::new("a salt long enough to use").unwrap();
        let matcher = UserMatcher::new(&salt, CustomerId::new("acme").unwrap(), UserHash::of(&salt, "acme", "jane"));
        let stored = block(&[("a", Some("jane")), ("b", Some("john")), ("c", None), ("d", Some("jane"))]);
        let mut decompressor = Decompressor::new();
        let mut ids = HashSet::new();
        collect_user_event_ids(&mut decompressor, &stored, &matcher, &mut ids).unwrap();
        assert_eq!(ids, HashSet::from(["a".to_owned(), "d".to_owned()]));

        let BlockRewrite::Rewritten(rewritten) = without_events(&mut decompressor, &stored, &ids).unwrap() else {
            panic!("a block keeping two events is rewritten")
        };
        assert_eq!(ids_of(&mut decompressor, &rewritten), ["b", "c"], "the others keep their order");
        let untouched = block(&[("x", Some("john"))]);
        assert_eq!(without_events(&mut decompressor, &untouched, &ids).unwrap(), BlockRewrite::Unchanged);
        let only_hers = block(&[("d", Some("jane")), ("a", Some("someone else's copy"))]);
        assert_eq!(without_events(&mut decompressor, &only_hers, &ids).unwrap(), BlockRewrite::Emptied);
    }
}
