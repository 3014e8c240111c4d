//! Bytes on the wire, pure (no I/O): the plaintext greeting, length-prefixed records, and the
//! header that starts every frame inside the encrypted stream.
//!
//! ```text
//! greeting   "TNDM" | version u16 | reserved u16            (plaintext, each side, first)
//! record     length u16 | bytes                              (handshake message or ciphertext)
//! frame      length u32 | kind u16 | reserved u16 | body     (plaintext inside records;
//!                                                             a frame starts a record)
//! ```
//! All integers are big-endian.

use super::error::PeerError;

pub const MAGIC: &[u8; 4] = b"TNDM";
/// The transport protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
pub const GREETING_LEN: usize = 8;
pub const RECORD_PREFIX: usize = 2;
/// Noise messages are at most 65535 bytes, 16 of which are the AEAD tag.
pub const MAX_RECORD: usize = u16::MAX as usize;
pub const TAG_LEN: usize = 16;
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;
pub const FRAME_HEADER_LEN: usize = 8;

pub fn encode_greeting() -> [u8; GREETING_LEN] {
    let mut out = [0u8; GREETING_LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out
}

/// Checks the peer's greeting.
pub fn decode_greeting(buf: &[u8; GREETING_LEN]) -> Result<(), PeerError> {
    if &buf[..4] != MAGIC {
        return Err(PeerError::NotTandem);
    }
    let theirs = u16::from_be_bytes([buf[4], buf[5]]);
    if theirs != PROTOCOL_VERSION {
        return Err(PeerError::Version { ours: PROTOCOL_VERSION, theirs });
    }
    Ok(())
}

/// The length prefix of a record.
pub fn record_prefix(len: usize) -> [u8; RECORD_PREFIX] {
    debug_assert!(len <= MAX_RECORD);
    (len as u16).to_be_bytes()
}

/// The header that starts a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u16,
}

impl FrameHeader {
    pub fn encode(self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[..4].copy_from_slice(&self.len.to_be_bytes());
        out[4..6].copy_from_slice(&self.kind.to_be_bytes());
        out
    }

    /// Reads a header from the start of a record's plaintext, refusing frames over `max`.
    pub fn decode(plain: &[u8], max: u64) -> Result<Self, PeerError> {
        let Some(h) = plain.get(..FRAME_HEADER_LEN) else {
            return Err(PeerError::Malformed("a frame's first record is shorter than its header"));
        };
        if h[6..8] != [0, 0] {
            return Err(PeerError::Malformed("reserved header bits are set"));
        }
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if u64::from(len) > max {
            return Err(PeerError::Oversized { len: len.into(), max });
        }
        Ok(Self { len, kind: u16::from_be_bytes([h[4], h[5]]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trips_and_refuses_strangers() {
        let g = encode_greeting();
        decode_greeting(&g).unwrap();
        assert!(matches!(decode_greeting(b"GET / HT"), Err(PeerError::NotTandem)));
        let mut v2 = g;
        v2[5] = 2;
        assert!(matches!(decode_greeting(&v2), Err(PeerError::Version { ours: 1, theirs: 2 })));
    }

    #[test]
    fn frame_headers_round_trip_and_enforce_the_limit() {
        let h = FrameHeader { len: 1000, kind: 7 };
        assert_eq!(FrameHeader::decode(&h.encode(), 1000).unwrap(), h);
        assert!(matches!(
            FrameHeader::decode(&h.encode(), 999),
            Err(PeerError::Oversized { len: 1000, max: 999 })
        ));
        assert!(matches!(FrameHeader::decode(&[0; 7], 10), Err(PeerError::Malformed(_))));
        let mut bad = h.encode();
        bad[7] = 1;
        assert!(matches!(FrameHeader::decode(&bad, 1000), Err(PeerError::Malformed(_))));
    }
}
