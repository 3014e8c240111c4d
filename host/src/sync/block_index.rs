//! The weak-digest lookup table over a signature's full-length blocks, probed at every byte
//! offset of the new file.
//!
//! Open addressing at load <= 1/2 so the usual answer, "no block has this weak digest", costs
//! one probe into a table small enough to stay in cache. Blocks with equal content are indexed
//! once (the lowest number); the delta engine prefers the next sequential block on its own.

use crate::sync::signature::{STRONG_LEN, Signature};

/// One distinct (weak, strong) block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Strong hash of the block.
    pub strong: [u8; STRONG_LEN],
    /// Lowest block number with this content.
    pub block: u32,
}

/// A slot of the table: all candidates sharing one weak digest. `len == 0` marks it empty.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    weak: u32,
    start: u32,
    len: u32,
}

/// Smallest table, so tiny signatures do not mask to zero bits.
const MIN_SLOTS: usize = 16;
/// Filter bits per distinct weak digest: ~3% false positives.
const FILTER_BITS_PER_WEAK: usize = 32;
/// Filter size bounds, in bits: at least one word, at most 128 KiB so it stays in cache.
const MIN_FILTER_BITS: usize = 64;
const MAX_FILTER_BITS: usize = 1 << 20;

/// Weak digest -> candidate blocks.
#[derive(Debug)]
pub struct BlockIndex {
    /// One bit per mixed weak digest, checked before the slots: the slot table of a big file
    /// falls out of L1, and a probe that missed cache at every byte offset made the scan of
    /// unmatched data several times slower.
    filter: Vec<u64>,
    filter_shift: u32,
    slots: Vec<Slot>,
    shift: u32,
    candidates: Vec<Candidate>,
}

impl BlockIndex {
    /// Indexes the full-length blocks of `sig` (the short last block, if any, can only match
    /// at the very end of the new file and is checked there directly, as rsync does).
    pub fn new(sig: &Signature) -> Self {
        let full = sig.full_blocks() as usize;
        let mut entries: Vec<(u32, [u8; STRONG_LEN], u32)> =
            sig.blocks[..full].iter().zip(0u32..).map(|(b, n)| (b.weak, b.strong, n)).collect();
        entries.sort_unstable();
        entries.dedup_by(|later, first| (later.0, later.1) == (first.0, first.1));

        let groups = entries.chunk_by(|x, y| x.0 == y.0).count();
        let n_slots = (groups * 2).next_power_of_two().max(MIN_SLOTS);
        let filter_bits =
            (groups * FILTER_BITS_PER_WEAK).next_power_of_two().clamp(MIN_FILTER_BITS, MAX_FILTER_BITS);
        let mut index = BlockIndex {
            filter: vec![0; filter_bits / 64],
            filter_shift: 64 - filter_bits.trailing_zeros(),
            slots: vec![Slot::default(); n_slots],
            shift: 64 - n_slots.trailing_zeros(),
            candidates: entries.iter().map(|&(_, strong, block)| Candidate { strong, block }).collect(),
        };
        let mut start = 0u32;
        for group in entries.chunk_by(|x, y| x.0 == y.0) {
            let len = group.len() as u32;
            let mut i = index.home(group[0].0);
            while index.slots[i].len != 0 {
                i = (i + 1) & (n_slots - 1);
            }
            index.slots[i] = Slot { weak: group[0].0, start, len };
            let bit = mix(group[0].0) >> index.filter_shift;
            index.filter[(bit / 64) as usize] |= 1 << (bit % 64);
            start += len;
        }
        index
    }

    /// True when no full-length block exists, so scanning the new file cannot find anything.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The distinct blocks whose weak digest is `weak`; usually empty.
    #[inline]
    pub fn candidates(&self, weak: u32) -> &[Candidate] {
        let bit = mix(weak) >> self.filter_shift;
        if self.filter[(bit / 64) as usize] & (1 << (bit % 64)) == 0 {
            return &[];
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(weak);
        loop {
            let slot = self.slots[i];
            if slot.len == 0 {
                return &[];
            }
            if slot.weak == weak {
                return &self.candidates[slot.start as usize..(slot.start + slot.len) as usize];
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn home(&self, weak: u32) -> usize {
        (mix(weak) >> self.shift) as usize
    }
}

/// Fibonacci hashing: rsync's sums are poorly spread in their low bits, so mix before taking
/// the top bits as a slot or filter bit.
#[inline]
fn mix(weak: u32) -> u64 {
    u64::from(weak).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::signature::signature;

    #[test]
    fn finds_every_full_block_and_skips_the_short_tail() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
        let sig = signature(&data[..], 1000, 64).unwrap();
        let index = BlockIndex::new(&sig);
        for (n, b) in sig.blocks.iter().enumerate().take(15) {
            assert!(index.candidates(b.weak).iter().any(|c| c.block == n as u32 && c.strong == b.strong));
        }
        let tail = sig.blocks[15];
        assert!(index.candidates(tail.weak).iter().all(|c| c.block != 15));
    }

    #[test]
    fn equal_blocks_are_indexed_once_at_the_lowest_number() {
        let sig = signature(&[5u8; 4 * 64][..], 256, 64).unwrap();
        let index = BlockIndex::new(&sig);
        assert_eq!(
            index.candidates(sig.blocks[0].weak),
            &[Candidate { strong: sig.blocks[0].strong, block: 0 }]
        );
    }

    #[test]
    fn empty_signature_has_empty_index() {
        let sig = signature(&b"short"[..], 5, 64).unwrap();
        let index = BlockIndex::new(&sig);
        assert!(index.is_empty());
        assert!(index.candidates(sig.blocks[0].weak).is_empty());
    }
}
