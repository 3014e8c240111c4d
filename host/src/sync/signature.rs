//! The standby's signature of its copy of a file: per block, a weak rolling digest to find
//! candidates cheaply and a strong hash to confirm them.
//!
//! Owns the block-length rule and the limits a signature must meet before the delta engine
//! trusts it. Must never: read more of the base than its declared length plus one byte (the
//! probe that notices a base that grew while it was being signed).

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use crate::sync::error::SyncError;
use crate::sync::rolling::Rolling;

/// Smallest block length `block_len_for` picks: below this the signature grows faster than
/// the delta shrinks.
pub const MIN_BLOCK_LEN: u32 = 2 * 1024;
/// Largest block length `block_len_for` picks: bounds the literal cost of one small edit.
pub const MAX_BLOCK_LEN: u32 = 128 * 1024;
/// Largest block length accepted at all (from a peer's signature or a caller): the delta
/// window and the patch buffer are sized from it.
pub const MAX_ACCEPTED_BLOCK_LEN: u32 = 1024 * 1024;
/// `block_len_for` rounds up to this, so blocks line up with common page and chunk sizes.
const BLOCK_LEN_ALIGN: u64 = 64;
/// Bytes of blake3 kept per block: 128 bits is far past accidental collisions, and the whole
/// file's full blake3 is checked after patching anyway.
pub const STRONG_LEN: usize = 16;

/// The signature of a base file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Length of every block but possibly the last, which holds the remainder.
    pub block_len: u32,
    /// Length of the signed base.
    pub file_len: u64,
    /// One entry per block, in file order.
    pub blocks: Vec<BlockSig>,
}

/// The weak and strong digests of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSig {
    /// [`Rolling`] digest of the block.
    pub weak: u32,
    /// blake3 of the block, truncated to [`STRONG_LEN`] bytes.
    pub strong: [u8; STRONG_LEN],
}

/// The block length for a file of `file_len` bytes: rsync's square-root rule (signature size
/// and per-edit literal cost grow alike), rounded up to a multiple of 64 and clamped to
/// [`MIN_BLOCK_LEN`]`..=`[`MAX_BLOCK_LEN`].
pub fn block_len_for(file_len: u64) -> u32 {
    let aligned = file_len.isqrt().div_ceil(BLOCK_LEN_ALIGN) * BLOCK_LEN_ALIGN;
    // The clamp makes the value fit in u32.
    aligned.clamp(u64::from(MIN_BLOCK_LEN), u64::from(MAX_BLOCK_LEN)) as u32
}

/// The strong hash of one block.
pub fn strong_hash(block: &[u8]) -> [u8; STRONG_LEN] {
    let mut strong = [0u8; STRONG_LEN];
    strong.copy_from_slice(&blake3::hash(block).as_bytes()[..STRONG_LEN]);
    strong
}

/// Refuses a block length of zero or past [`MAX_ACCEPTED_BLOCK_LEN`].
pub fn check_block_len(block_len: u32) -> Result<(), SyncError> {
    if block_len == 0 || block_len > MAX_ACCEPTED_BLOCK_LEN {
        return Err(SyncError::InvalidBlockLen(block_len));
    }
    Ok(())
}

/// How many blocks of `block_len` cover `file_len` bytes.
pub fn block_count(file_len: u64, block_len: u32) -> u64 {
    file_len.div_ceil(u64::from(block_len))
}

impl Signature {
    /// Checks the block length and that the block list covers exactly `file_len` bytes; the
    /// delta engine relies on both, and a signature may come from a peer.
    pub fn validate(&self) -> Result<(), SyncError> {
        check_block_len(self.block_len)?;
        let expected = block_count(self.file_len, self.block_len);
        let actual = self.blocks.len() as u64;
        // Block numbers travel as u32 in copies.
        if expected != actual || expected > u64::from(u32::MAX) {
            return Err(SyncError::BlockCount { expected, actual });
        }
        Ok(())
    }

    /// Number of blocks of exactly `block_len` bytes (all but a short last block).
    pub fn full_blocks(&self) -> u64 {
        self.file_len / u64::from(self.block_len)
    }

    /// Length of the short last block, or 0 when the file is a whole number of blocks.
    pub fn tail_len(&self) -> u32 {
        // Less than block_len, so it fits.
        (self.file_len % u64::from(self.block_len)) as u32
    }
}

/// Signs `file_len` bytes of `base` in blocks of `block_len`.
///
/// Errors with [`SyncError::BaseLenMismatch`] if `base` holds fewer or more bytes than
/// `file_len`, since a signature of a moving file would make every delta fail its hash check.
pub fn signature(mut base: impl Read, file_len: u64, block_len: u32) -> Result<Signature, SyncError> {
    check_block_len(block_len)?;
    let count = block_count(file_len, block_len);
    if count > u64::from(u32::MAX) {
        return Err(SyncError::BlockCount { expected: count, actual: u64::from(u32::MAX) });
    }
    // A declared length is not yet proven by the reader; cap the up-front reservation.
    let mut blocks = Vec::with_capacity(count.min(1 << 16) as usize);
    let mut buf = vec![0u8; block_len as usize];
    let mut remaining = file_len;
    while remaining > 0 {
        let want = remaining.min(u64::from(block_len)) as usize;
        let got = read_full(&mut base, &mut buf[..want])?;
        if got < want {
            return Err(SyncError::BaseLenMismatch {
                expected: file_len,
                read: file_len - remaining + got as u64,
            });
        }
        let block = &buf[..want];
        blocks.push(BlockSig { weak: Rolling::new(block).digest(), strong: strong_hash(block) });
        remaining -= want as u64;
    }
    if read_full(&mut base, &mut buf[..1])? != 0 {
        return Err(SyncError::BaseLenMismatch { expected: file_len, read: file_len + 1 });
    }
    tracing::debug!(file_len, block_len, blocks = blocks.len(), "signed base");
    Ok(Signature { block_len, file_len, blocks })
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_len_rule_is_aligned_and_clamped() {
        assert_eq!(block_len_for(0), MIN_BLOCK_LEN);
        assert_eq!(block_len_for(1 << 20), MIN_BLOCK_LEN);
        // sqrt(50 MiB) = 7240.8 -> 7240 -> next multiple of 64.
        assert_eq!(block_len_for(50 << 20), 7296);
        assert_eq!(block_len_for(1 << 40), MAX_BLOCK_LEN);
        assert_eq!(block_len_for(u64::MAX), MAX_BLOCK_LEN);
        for len in [3u64 << 20, 77 << 20, 5 << 30] {
            assert_eq!(block_len_for(len) % 64, 0);
        }
    }

    #[test]
    fn signs_whole_and_partial_blocks() {
        let data: Vec<u8> = (0..10u8).collect();
        let sig = signature(&data[..], 10, 4).unwrap();
        assert_eq!(sig.blocks.len(), 3);
        assert_eq!(sig.full_blocks(), 2);
        assert_eq!(sig.tail_len(), 2);
        assert_eq!(sig.blocks[2].strong, strong_hash(&data[8..]));
        assert_eq!(sig.blocks[1].weak, Rolling::new(&data[4..8]).digest());
        sig.validate().unwrap();
    }

    #[test]
    fn empty_base_has_no_blocks() {
        let sig = signature(&[][..], 0, MIN_BLOCK_LEN).unwrap();
        assert!(sig.blocks.is_empty());
        sig.validate().unwrap();
    }

    #[test]
    fn base_shorter_than_one_block_is_one_short_block() {
        let sig = signature(&b"tiny"[..], 4, MIN_BLOCK_LEN).unwrap();
        assert_eq!(sig.blocks.len(), 1);
        assert_eq!((sig.full_blocks(), sig.tail_len()), (0, 4));
    }

    #[test]
    fn base_length_must_match_declared() {
        let short = signature(&b"abc"[..], 5, 2).unwrap_err();
        assert!(matches!(short, SyncError::BaseLenMismatch { expected: 5, read: 3 }), "{short}");
        let long = signature(&b"abcdef"[..], 5, 2).unwrap_err();
        assert!(matches!(long, SyncError::BaseLenMismatch { expected: 5, read: 6 }), "{long}");
    }

    #[test]
    fn bad_block_len_and_block_count_are_refused() {
        assert!(matches!(signature(&[][..], 0, 0), Err(SyncError::InvalidBlockLen(0))));
        let too_big = MAX_ACCEPTED_BLOCK_LEN + 1;
        assert!(matches!(signature(&[][..], 0, too_big), Err(SyncError::InvalidBlockLen(_))));
        let mut sig = signature(&[7u8; 9][..], 9, 4).unwrap();
        sig.blocks.pop();
        assert!(matches!(sig.validate(), Err(SyncError::BlockCount { expected: 3, actual: 2 })));
    }

    #[test]
    fn serde_round_trip_is_compact() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let sig = signature(&data[..], data.len() as u64, 2048).unwrap();
        let bytes = postcard::to_allocvec(&sig).unwrap();
        // 16-byte strong hash + up to 5 varint bytes of weak hash per block, little else.
        assert!(bytes.len() <= 16 + sig.blocks.len() * (STRONG_LEN + 5), "{} bytes", bytes.len());
        assert_eq!(postcard::from_bytes::<Signature>(&bytes).unwrap(), sig);
    }
}
