//! Page tokens of `ListRawEvents` (`hourglass_query::page_token`): a client sends back whatever string it
//! likes, altered or forged.
//!
//! Structure-aware (`arbitrary`): a secret, a cursor, another query, an edit and a free-form token.
//! Properties:
//! - decoding any string returns a cursor or a typed error, never panics; a token that decodes is the
//!   one its cursor encodes to (tokens are canonical: no second spelling of a cursor is accepted);
//! - a token decodes to its cursor for its own query, also with whitespace around it, and is refused as
//!   another query's for a different customer, hour or event-type filter;
//! - any one character changed, and any truncation, is refused as invalid.

#![no_main]

use arbitrary::Arbitrary;
use hourglass_query::page_token::{PageTokenError, PageTokens, RawEventsCursor};
use libfuzzer_sys::fuzz_target;

const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[derive(Arbitrary, Debug)]
struct Input {
    secret: Vec<u8>,
    customer_id: String,
    hour_start: i64,
    event_type: String,
    bucket: u32,
    after_event_id: String,
    other_query: (String, i64, String),
    edit_at: u16,
    edit_to: u8,
    cut_at: u16,
    token: String,
}

fuzz_target!(|input: Input| {
    let tokens = PageTokens::new(&input.secret);
    let cursor = RawEventsCursor {
        customer_id: input.customer_id,
        hour_start: input.hour_start,
        event_type: input.event_type,
        bucket: input.bucket,
        after_event_id: input.after_event_id,
    };

    if let Ok(decoded) = tokens.decode(&input.token, &cursor) {
        assert_eq!(tokens.encode(&decoded), input.token.trim(), "a token that decodes is its cursor's token");
    }

    let token = tokens.encode(&cursor);
    assert_eq!(tokens.decode(&token, &cursor), Ok(cursor.clone()));
    assert_eq!(tokens.decode(&format!(" {token}\n"), &cursor), Ok(cursor.clone()));
    // The position fields are not part of the query: a token continues whatever page it points at.
    let same_query = RawEventsCursor { bucket: 0, after_event_id: String::new(), ..cursor.clone() };
    assert_eq!(tokens.decode(&token, &same_query), Ok(cursor.clone()));

    let (other_customer, other_hour, other_type) = input.other_query;
    let other = RawEventsCursor {
        customer_id: other_customer,
        hour_start: other_hour,
        event_type: other_type,
        ..cursor.clone()
    };
    if (&other.customer_id, other.hour_start, &other.event_type)
        != (&cursor.customer_id, cursor.hour_start, &cursor.event_type)
    {
        assert_eq!(tokens.decode(&token, &other), Err(PageTokenError::OtherQuery));
    }

    let mut edited = token.clone().into_bytes();
    let at = usize::from(input.edit_at) % edited.len();
    let replacement = BASE64URL[usize::from(input.edit_to) % BASE64URL.len()];
    if edited[at] != replacement {
        edited[at] = replacement;
        let edited = String::from_utf8(edited).expect("base64url is ASCII");
        assert_eq!(tokens.decode(&edited, &cursor), Err(PageTokenError::Invalid), "{token} edited to {edited}");
    }
    let cut = usize::from(input.cut_at) % token.len();
    assert_eq!(tokens.decode(&token[..cut], &cursor), Err(PageTokenError::Invalid), "{token} cut at {cut}");
});
