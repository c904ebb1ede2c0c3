//! Page tokens: opaque to clients, tamper-evident, and bound to the query they continue.
//!
//! A token is the cursor (where the next page starts) plus the query it belongs to (customer, hour,
//! event-type filter), encoded with protobuf and signed with HMAC-SHA256 under the service's secret, then
//! base64url'd. A token that was altered, forged, truncated, or taken from another customer's or another
//! query's response is refused with `INVALID_ARGUMENT`. Replicas behind a balancer must share the secret
//! (`--page-token-secret`), or a page fetched from another replica is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The token format's version, the first byte of every token.
const FORMAT_VERSION: u8 = 1;
/// Bytes of the HMAC kept in a token: 128 bits are plenty against forgery and keep tokens short.
const MAC_BYTES: usize = 16;

/// Where the next page of raw events starts, and the query it continues.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RawEventsCursor {
    /// The customer whose events are paged.
    #[prost(string, tag = "1")]
    pub customer_id: String,
    /// The hour being read.
    #[prost(int64, tag = "2")]
    pub hour_start: i64,
    /// The event-type filter ("" for none).
    #[prost(string, tag = "3")]
    pub event_type: String,
    /// The bucket the next page starts in.
    #[prost(uint32, tag = "4")]
    pub bucket: u32,
    /// Within that bucket, the next page starts after this event id.
    #[prost(string, tag = "5")]
    pub after_event_id: String,
}

/// Why a page token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageTokenError {
    /// Not base64url, too short, an unknown version, or a bad signature: not a token this service made.
    #[error("page_token is invalid: it was not issued by this service or was altered")]
    Invalid,
    /// A genuine token, but for another query (other customer, hour or filter).
    #[error("page_token belongs to a different query: repeat the request that returned it, changing only page_token")]
    OtherQuery,
}

/// Signs and checks page tokens with one secret.
#[derive(Clone)]
pub struct PageTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PageTokens(<secret>)")
    }
}

impl PageTokens {
    /// Tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self { key: secret.to_vec() }
    }

    /// Tokens signed with a random secret: valid only in this process.
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self::new(&secret)
    }

    fn mac(&self, payload: &[u8]) -> [u8; MAC_BYTES] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut truncated = [0u8; MAC_BYTES];
        truncated.copy_from_slice(&full[..MAC_BYTES]);
        truncated
    }

    /// The token for `cursor`.
    pub fn encode(&self, cursor: &RawEventsCursor) -> String {
        let mut bytes = vec![FORMAT_VERSION];
        prost::Message::encode(cursor, &mut bytes).expect("a Vec grows as needed");
        let mac = self.mac(&bytes);
        bytes.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor in `token`, if this service signed it and it continues `query` (a cursor whose
    /// position fields are ignored).
    pub fn decode(&self, token: &str, query: &RawEventsCursor) -> Result<RawEventsCursor, PageTokenError> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| PageTokenError::Invalid)?;
        if bytes.len() < 1 + MAC_BYTES || bytes[0] != FORMAT_VERSION {
            return Err(PageTokenError::Invalid);
        }
        let (signed, mac) = bytes.split_at(bytes.len() - MAC_BYTES);
        let mut verifier = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        verifier.update(signed);
        // verify_truncated_left compares in constant time.
        verifier.verify_truncated_left(mac).map_err(|_| PageTokenError::Invalid)?;
        let cursor: RawEventsCursor = prost::Message::decode(&signed[1..]).map_err(|_| PageTokenError::Invalid)?;
        if cursor.customer_id != query.customer_id
            || cursor.hour_start != query.hour_start
            || cursor.event_type != query.event_type
        {
            return Err(PageTokenError::OtherQuery);
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(customer: &str) -> RawEventsCursor {
        RawEventsCursor {
            customer_id: customer.to_owned(),
            hour_start: 3600 * 490_000,
            event_type: "click".to_owned(),
            bucket: 3,
            after_event_id: "evt-17".to_owned(),
        }
    }

    #[test]
    fn a_token_round_trips_for_its_own_query() {
        let tokens = PageTokens::new(b"secret");
        let token = tokens.encode(&cursor("acme"));
        assert_eq!(tokens.decode(&token, &cursor("acme")), Ok(cursor("acme")));
    }

    #[test]
    fn another_customers_query_is_refused() {
        let tokens = PageTokens::new(b"secret");
        let token = tokens.encode(&cursor("acme"));
        assert_eq!(tokens.decode(&token, &cursor("globex")), Err(PageTokenError::OtherQuery));
        let mut other_filter = cursor("acme");
        other_filter.event_type = "view".to_owned();
        assert_eq!(tokens.decode(&token, &other_filter), Err(PageTokenError::OtherQuery));
    }

    #[test]
    fn every_altered_byte_is_detected() {
        let tokens = PageTokens::new(b"secret");
        let token = tokens.encode(&cursor("acme"));
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for index in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[index] ^= 0x01;
            let altered = URL_SAFE_NO_PAD.encode(altered);
            assert_eq!(tokens.decode(&altered, &cursor("acme")), Err(PageTokenError::Invalid), "byte {index}");
        }
    }

    #[test]
    fn tokens_of_another_secret_garbage_and_truncations_are_invalid() {
        let token = PageTokens::new(b"other secret").encode(&cursor("acme"));
        let tokens = PageTokens::new(b"secret");
        assert_eq!(tokens.decode(&token, &cursor("acme")), Err(PageTokenError::Invalid));
        for garbage in ["", "!!!", "AAAA", &token[..token.len() - 2]] {
            assert_eq!(tokens.decode(garbage, &cursor("acme")), Err(PageTokenError::Invalid), "{garbage:?}");
        }
    }
}
