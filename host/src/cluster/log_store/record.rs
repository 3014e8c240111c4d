//! The on-disk record codec: `[u32 len LE][u32 crc32 LE of payload][payload]`, payload =
//! postcard(value).
//!
//! Pure bytes in, bytes out: no I/O, no policy. Whether a defect is a torn tail or corruption is
//! recovery's call, not the codec's.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::LogStoreError;

/// Bytes before the payload: length then CRC.
pub(crate) const HEADER_BYTES: usize = 8;

/// Appends one record holding `postcard(value)` to `out`; returns the record's length.
/// `index` only labels errors. `max_payload` bounds the payload so recovery can trust lengths.
/// postcard's encoded length of `value`, counted without keeping the bytes.
pub fn encoded_len<T: Serialize>(value: &T) -> u64 {
    struct Count(u64);
    impl Extend<u8> for Count {
        fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
            self.0 += iter.into_iter().count() as u64;
        }
    }
    postcard::to_extend(value, Count(0)).map_or(u64::MAX, |c| c.0)
}

pub(crate) fn encode_into<T: Serialize>(
    value: &T,
    index: u64,
    max_payload: u32,
    out: &mut Vec<u8>,
) -> Result<usize, LogStoreError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    // Serialize straight into the batch buffer: one allocation for a whole append.
    let buf = postcard::to_extend(value, std::mem::take(out));
    *out = match buf {
        Ok(buf) => buf,
        Err(source) => return Err(LogStoreError::Encode { index, source }),
    };
    let payload_len = out.len() - start - HEADER_BYTES;
    if payload_len > max_payload as usize {
        out.truncate(start);
        return Err(LogStoreError::EntryTooLarge { index, len: payload_len, max: max_payload });
    }
    let crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len() - start)
}

/// Decodes a payload produced by [`encode_into`].
pub(crate) fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(payload)
}

/// Result of looking at the bytes where a record should start.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A record whose CRC matches; `len` counts header and payload.
    Record { payload: &'a [u8], len: usize },
    /// No bytes at all: a clean end.
    End,
    /// Something that is not a whole, intact record.
    Defect(Defect),
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Defect {
    /// Fewer than [`HEADER_BYTES`] bytes left.
    ShortHeader { have: usize },
    /// The header promises more payload than there is.
    ShortPayload { need: usize, have: usize },
    /// The length field exceeds the payload bound.
    TooLarge { len: u32, max: u32 },
    /// The payload does not match its checksum.
    Crc { stored: u32, computed: u32 },
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::ShortHeader { have } => write!(f, "short header ({have} of {HEADER_BYTES} bytes)"),
            Defect::ShortPayload { need, have } => write!(f, "short payload ({have} of {need} bytes)"),
            Defect::TooLarge { len, max } => write!(f, "length {len} above the limit {max}"),
            Defect::Crc { stored, computed } => {
                write!(f, "crc mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
        }
    }
}

/// Looks at the record starting at `buf[0]`.
pub(crate) fn decode(buf: &[u8], max_payload: u32) -> Decoded<'_> {
    if buf.is_empty() {
        return Decoded::End;
    }
    if buf.len() < HEADER_BYTES {
        return Decoded::Defect(Defect::ShortHeader { have: buf.len() });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > max_payload {
        return Decoded::Defect(Defect::TooLarge { len, max: max_payload });
    }
    let need = len as usize;
    let have = buf.len() - HEADER_BYTES;
    if have < need {
        return Decoded::Defect(Defect::ShortPayload { need, have });
    }
    let payload = &buf[HEADER_BYTES..HEADER_BYTES + need];
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Decoded::Defect(Defect::Crc { stored, computed });
    }
    Decoded::Record { payload, len: HEADER_BYTES + need }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1 << 20;

    fn encoded(v: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&v.to_string(), 7, MAX, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_back_to_back_records() {
        let mut buf = encoded("hello");
        let first_len = buf.len();
        encode_into(&"world".to_string(), 8, MAX, &mut buf).unwrap();
        let Decoded::Record { payload, len } = decode(&buf, MAX) else { panic!() };
        assert_eq!(len, first_len);
        assert_eq!(decode_payload::<String>(payload).unwrap(), "hello");
        let Decoded::Record { payload, .. } = decode(&buf[len..], MAX) else { panic!() };
        assert_eq!(decode_payload::<String>(payload).unwrap(), "world");
        assert_eq!(decode(&buf[buf.len()..], MAX), Decoded::End);
    }

    #[test]
    fn every_truncation_is_a_short_header_or_payload() {
        let buf = encoded("some payload");
        for cut in 1..buf.len() {
            match decode(&buf[..cut], MAX) {
                Decoded::Defect(Defect::ShortHeader { .. } | Defect::ShortPayload { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let buf = encoded("some payload");
        for at in 0..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0x5a;
            assert!(matches!(decode(&bad, MAX), Decoded::Defect(_)), "flip at {at} went unnoticed");
        }
    }

    #[test]
    fn oversized_entries_are_refused_and_leave_the_buffer_untouched() {
        let mut out = vec![1, 2, 3];
        let err = encode_into(&"x".repeat(100), 3, 10, &mut out).unwrap_err();
        assert!(matches!(err, LogStoreError::EntryTooLarge { index: 3, .. }));
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn a_huge_length_field_is_too_large_not_short() {
        let mut buf = encoded("x");
        buf[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&buf, MAX), Decoded::Defect(Defect::TooLarge { .. })));
    }
}
