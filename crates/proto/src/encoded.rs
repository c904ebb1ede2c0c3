//! A message kept as its encoding, for a server that answers the same large response many times.
//!
//! [`Encoded<M>`] holds the bytes of one `M` and is itself a [`prost::Message`] whose encoding is exactly
//! those bytes, so a generated server whose response type is `Encoded<M>` writes a cached answer with one
//! copy into the transport's buffer instead of walking and encoding every field again. The wire carries the
//! same bytes as `M` would: clients decode an `M` and cannot tell the difference.

use std::fmt;
use std::marker::PhantomData;

use prost::Message;
use prost::bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{DecodeContext, WireType};

/// The encoding of one `M`, cheap to clone (the bytes are shared).
pub struct Encoded<M> {
    bytes: Bytes,
    /// `fn() -> M` rather than `M`: an `Encoded<M>` holds no `M`, so it is `Send` and `Sync` whatever `M` is.
    message: PhantomData<fn() -> M>,
}

impl<M: Message> Encoded<M> {
    /// Encodes `message` once.
    pub fn new(message: &M) -> Self {
        Self { bytes: Bytes::from(message.encode_to_vec()), message: PhantomData }
    }

    /// The encoded message (without a length prefix).
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The message back, as a client would decode it.
    pub fn to_message(&self) -> Result<M, prost::DecodeError>
    where
        M: Default,
    {
        M::decode(self.bytes.clone())
    }
}

impl<M> Clone for Encoded<M> {
    fn clone(&self) -> Self {
        Self { bytes: self.bytes.clone(), message: PhantomData }
    }
}

/// No bytes: the encoding of a message with every field at its default.
impl<M> Default for Encoded<M> {
    fn default() -> Self {
        Self { bytes: Bytes::new(), message: PhantomData }
    }
}

impl<M> fmt::Debug for Encoded<M> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Encoded")
            .field("message", &std::any::type_name::<M>())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl<M> Message for Encoded<M> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    /// Appends the field's encoding as read: protobuf merges a concatenation of encodings field by field,
    /// so the bytes kept stay an encoding of the message that decoding them into `M` would have built.
    /// Servers never decode their responses; this keeps `Encoded<M>` a faithful message regardless.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut appended = BytesMut::from(std::mem::take(&mut self.bytes));
        let result = copy_field(tag, wire_type, buf, ctx, &mut appended);
        self.bytes = appended.freeze();
        result
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes = Bytes::new();
    }
}

/// Reads one field of `wire_type` from `buf` and writes it, key included, to `out`; prost's own field
/// codecs do the reading, so a truncated or malformed field is the error it would be for any message.
fn copy_field(
    tag: u32,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
    out: &mut BytesMut,
) -> Result<(), prost::DecodeError> {
    use prost::encoding::{bytes, fixed32, fixed64, group, skip_field, uint64};
    match wire_type {
        WireType::Varint => {
            let mut value = 0_u64;
            uint64::merge(wire_type, &mut value, buf, ctx)?;
            uint64::encode(tag, &value, out);
        }
        WireType::SixtyFourBit => {
            let mut value = 0_u64;
            fixed64::merge(wire_type, &mut value, buf, ctx)?;
            fixed64::encode(tag, &value, out);
        }
        WireType::ThirtyTwoBit => {
            let mut value = 0_u32;
            fixed32::merge(wire_type, &mut value, buf, ctx)?;
            fixed32::encode(tag, &value, out);
        }
        WireType::LengthDelimited => {
            let mut value = Bytes::new();
            bytes::merge(wire_type, &mut value, buf, ctx)?;
            bytes::encode(tag, &value, out);
        }
        WireType::StartGroup => {
            let mut fields = Encoded::<()>::default();
            group::merge(tag, wire_type, &mut fields, buf, ctx)?;
            group::encode(tag, &fields, out);
        }
        // An end with no start: the error it is for every message.
        WireType::EndGroup => skip_field(wire_type, tag, buf, ctx)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prost_types::Timestamp;
    use crate::v1::{GetHourlyMetricsResponse, MetricsRow, NumericStats};

    fn response() -> GetHourlyMetricsResponse {
        let row = |hour: i64, event_type: &str| MetricsRow {
            period_start: Some(Timestamp { seconds: hour * 3600, nanos: 0 }),
            event_type: event_type.into(),
            events: 40 + hour as u64,
            distinct_users: 7,
            distinct_users_estimated: hour % 2 == 0,
            numeric: vec![NumericStats { property: "price".into(), count: 3, sum: 14.5, min: -1.0, max: 9.0 }],
        };
        GetHourlyMetricsResponse { rows: (0..50).map(|hour| row(hour, ["click", "view"][hour as usize % 2])).collect() }
    }

    #[test]
    fn an_encoded_message_writes_the_bytes_the_message_would() {
        let message = response();
        let encoded = Encoded::new(&message);
        assert_eq!(encoded.encoded_len(), message.encoded_len());
        assert_eq!(encoded.encode_to_vec(), message.encode_to_vec());
        assert_eq!(encoded.to_message().unwrap(), message);
        let mut length_delimited = Vec::new();
        encoded.encode_length_delimited(&mut length_delimited).unwrap();
        assert_eq!(GetHourlyMetricsResponse::decode_length_delimited(&length_delimited[..]).unwrap(), message);
        assert_eq!(
            Encoded::<GetHourlyMetricsResponse>::default().to_message().unwrap(),
            GetHourlyMetricsResponse::default()
        );
    }

    #[test]
    fn decoding_into_an_encoded_message_keeps_every_field_and_merges_as_protobuf_does() {
        let message = response();
        let bytes = message.encode_to_vec();
        let decoded = Encoded::<GetHourlyMetricsResponse>::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.as_bytes().as_ref(), &bytes[..]);

        // Fields of every wire type, a group among them, and a field the message does not know: kept as read.
        let mut foreign = Vec::new();
        prost::encoding::uint64::encode(9, &u64::MAX, &mut foreign);
        prost::encoding::int32::encode(10, &-5, &mut foreign);
        prost::encoding::fixed32::encode(11, &7, &mut foreign);
        prost::encoding::double::encode(12, &2.5, &mut foreign);
        prost::encoding::group::encode(13, &Encoded::<GetHourlyMetricsResponse>::new(&message), &mut foreign);
        let decoded = Encoded::<()>::decode(&foreign[..]).unwrap();
        assert_eq!(decoded.as_bytes().as_ref(), &foreign[..]);

        // Merging two encodings is their concatenation, which decodes to the merged message.
        let mut merged = Encoded::new(&message);
        merged.merge(&bytes[..]).unwrap();
        let mut expected = message.clone();
        expected.rows.extend(message.rows.clone());
        assert_eq!(merged.to_message().unwrap(), expected);
    }

    #[test]
    fn a_malformed_encoding_is_an_error_as_for_the_message() {
        let bytes = response().encode_to_vec();
        let truncated = &bytes[..bytes.len() - 3];
        assert!(GetHourlyMetricsResponse::decode(truncated).is_err());
        assert!(Encoded::<GetHourlyMetricsResponse>::decode(truncated).is_err());
        let mut unmatched_end = Vec::new();
        prost::encoding::encode_key(4, WireType::EndGroup, &mut unmatched_end);
        assert!(Encoded::<()>::decode(&unmatched_end[..]).is_err());
    }
}
