//! The primary's side: streams the new file against the standby's signature and produces the
//! ops (copy base blocks / send literal bytes) that rebuild it.
//!
//! Memory is bounded by the block length and the literal cap, never by the file: the window
//! buffer holds only the pending literal, the current block window and one read chunk. Must
//! never: emit a literal longer than [`MAX_LITERAL`] (ops are framed one by one) or a copy not
//! confirmed by the strong hash.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use crate::sync::block_index::BlockIndex;
use crate::sync::error::SyncError;
use crate::sync::rolling::Rolling;
use crate::sync::signature::{Signature, strong_hash};

/// Largest literal op: bounds a frame on the wire and the delta's buffer.
pub const MAX_LITERAL: usize = 256 * 1024;
/// How much of the new file is read at a time.
const READ_CHUNK: usize = 64 * 1024;

/// One instruction for rebuilding the new file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaOp {
    /// Copy `count` consecutive base blocks starting at `block`.
    Copy { block: u32, count: u32 },
    /// Bytes the base does not have, at most [`MAX_LITERAL`] of them.
    Literal(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// A whole delta, as built by [`delta`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The signature's block length: copies are in these units. Carried so the delta can be
    /// applied on its own.
    pub block_len: u32,
    /// The ops in file order.
    pub ops: Vec<DeltaOp>,
    /// Length of the new file.
    pub new_len: u64,
    /// blake3 of the whole new file.
    pub new_hash: [u8; 32],
}

impl Delta {
    /// Bytes sent as literals (what the delta saves is `new_len` minus this).
    pub fn literal_bytes(&self) -> u64 {
        self.ops.iter().map(|op| if let DeltaOp::Literal(b) = op { b.len() as u64 } else { 0 }).sum()
    }
}

/// Streams `new` against `sig` and collects the ops.
///
/// Reading is memory bounded; the returned [`Delta`] holds the literals, so for a file unlike
/// its base it is as large as the file. Use [`delta_each`] to pipeline big files.
pub fn delta(sig: &Signature, new: impl Read) -> Result<Delta, SyncError> {
    let mut ops = Vec::new();
    let (new_len, new_hash) = delta_each(sig, new, |op| {
        ops.push(op);
        Ok(())
    })?;
    Ok(Delta { block_len: sig.block_len, ops, new_len, new_hash })
}

/// Streams `new` against `sig`, handing each op to `emit` as soon as it is final, and returns
/// the new file's length and blake3. Adjacent copies are merged and literals coalesced (up to
/// [`MAX_LITERAL`]) before they are emitted; an error from `emit` stops the scan.
pub fn delta_each(
    sig: &Signature,
    mut new: impl Read,
    emit: impl FnMut(DeltaOp) -> Result<(), SyncError>,
) -> Result<(u64, [u8; 32]), SyncError> {
    sig.validate()?;
    let bl = sig.block_len as usize;
    let mut m = Matcher {
        sig,
        index: BlockIndex::new(sig),
        bl,
        full_blocks: sig.full_blocks() as u32,
        // Live bytes never exceed MAX_LITERAL + bl + READ_CHUNK; the slack makes compaction rare.
        buf: Vec::with_capacity(2 * (MAX_LITERAL + bl) + READ_CHUNK),
        lit_start: 0,
        pos: 0,
        eof: false,
        next_block: None,
        pending_copy: None,
        hasher: blake3::Hasher::new(),
        new_len: 0,
        literal_bytes: 0,
        emit,
    };
    m.run(&mut new)?;
    let hash = *m.hasher.finalize().as_bytes();
    tracing::debug!(new_len = m.new_len, literal_bytes = m.literal_bytes, "delta computed");
    Ok((m.new_len, hash))
}

/// The scanning state. `buf[lit_start..pos]` is the pending literal, `buf[pos..pos + bl]`
/// the window being matched, and anything after it read ahead.
struct Matcher<'a, E> {
    sig: &'a Signature,
    index: BlockIndex,
    bl: usize,
    full_blocks: u32,
    buf: Vec<u8>,
    lit_start: usize,
    pos: usize,
    eof: bool,
    /// The block after the last copy: tried first, so runs of copies stay one op.
    next_block: Option<u32>,
    pending_copy: Option<(u32, u32)>,
    hasher: blake3::Hasher,
    new_len: u64,
    literal_bytes: u64,
    emit: E,
}

impl<E: FnMut(DeltaOp) -> Result<(), SyncError>> Matcher<'_, E> {
    fn run(&mut self, new: &mut impl Read) -> Result<(), SyncError> {
        let bl = self.bl;
        // Valid for the window at `pos`; dropped whenever `pos` jumps past a match.
        let mut roll: Option<Rolling> = None;
        loop {
            // One byte past the window must be present to roll, unless the input has ended.
            if !self.eof && self.buf.len() <= self.pos + bl {
                self.fill(new)?;
                continue;
            }
            if self.buf.len() - self.pos < bl {
                break;
            }
            let last = self.buf.len() - bl;
            let stop = last.min(self.lit_start + MAX_LITERAL);
            if self.index.is_empty() {
                // Nothing full-length to find: skip the rolling entirely.
                self.pos = stop;
            } else {
                let mut r = roll.take().unwrap_or_else(|| Rolling::new(&self.buf[self.pos..self.pos + bl]));
                let (at, found) = self.scan(&mut r, self.pos, stop);
                self.pos = at;
                if let Some(block) = found {
                    self.flush_literal(at)?;
                    self.push_copy(block)?;
                    self.pos = at + bl;
                    self.lit_start = self.pos;
                    continue;
                }
                roll = Some(r);
            }
            if self.pos - self.lit_start >= MAX_LITERAL {
                self.flush_literal(self.pos)?;
            } else if self.eof {
                // The last full window did not match; only the short tail block can still.
                break;
            }
        }
        self.finish_tail()
    }

    /// Checks windows from `pos`, rolling forward, until a block matches or the window at
    /// `stop` has been checked. Returns where it stopped and the matched block.
    #[inline]
    fn scan(&self, r: &mut Rolling, mut pos: usize, stop: usize) -> (usize, Option<u32>) {
        let bl = self.bl;
        let buf = &self.buf[..];
        loop {
            if let Some(block) = self.lookup(r.digest(), &buf[pos..pos + bl]) {
                return (pos, Some(block));
            }
            if pos >= stop {
                return (pos, None);
            }
            r.roll(buf[pos], buf[pos + bl]);
            pos += 1;
        }
    }

    /// The full-length block equal to `window`, preferring the one after the last copy.
    #[inline]
    fn lookup(&self, weak: u32, window: &[u8]) -> Option<u32> {
        let mut strong = None;
        if let Some(next) = self.next_block.filter(|&n| n < self.full_blocks) {
            let sig = &self.sig.blocks[next as usize];
            if sig.weak == weak && *strong.insert(strong_hash(window)) == sig.strong {
                return Some(next);
            }
        }
        let candidates = self.index.candidates(weak);
        if candidates.is_empty() {
            return None;
        }
        let strong = strong.unwrap_or_else(|| strong_hash(window));
        candidates.iter().find(|c| c.strong == strong).map(|c| c.block)
    }

    /// At end of input: the base's short last block may match the new file's last bytes
    /// (rsync matches it only there); everything else still pending is literal.
    fn finish_tail(&mut self) -> Result<(), SyncError> {
        let end = self.buf.len();
        let tail = self.sig.tail_len() as usize;
        if tail > 0 && end - self.pos >= tail {
            let at = end - tail;
            let window = &self.buf[at..];
            let want = &self.sig.blocks[self.full_blocks as usize];
            if Rolling::new(window).digest() == want.weak && strong_hash(window) == want.strong {
                self.flush_literal(at)?;
                self.push_copy(self.full_blocks)?;
                self.lit_start = end;
            }
        }
        self.flush_literal(end)?;
        self.flush_copy()
    }

    /// Emits `buf[lit_start..upto]` as literals of at most [`MAX_LITERAL`], after any pending
    /// copy so ops stay in file order.
    fn flush_literal(&mut self, upto: usize) -> Result<(), SyncError> {
        if upto == self.lit_start {
            return Ok(());
        }
        self.flush_copy()?;
        for chunk in self.buf[self.lit_start..upto].chunks(MAX_LITERAL) {
            self.literal_bytes += chunk.len() as u64;
            (self.emit)(DeltaOp::Literal(chunk.to_vec()))?;
        }
        self.lit_start = upto;
        self.next_block = None;
        Ok(())
    }

    fn push_copy(&mut self, block: u32) -> Result<(), SyncError> {
        self.next_block = Some(block + 1);
        match &mut self.pending_copy {
            Some((first, count)) if *first + *count == block => *count += 1,
            _ => {
                self.flush_copy()?;
                self.pending_copy = Some((block, 1));
            }
        }
        Ok(())
    }

    fn flush_copy(&mut self) -> Result<(), SyncError> {
        match self.pending_copy.take() {
            Some((block, count)) => (self.emit)(DeltaOp::Copy { block, count }),
            None => Ok(()),
        }
    }

    /// Reads the next chunk of `new`, first dropping bytes already emitted if the buffer would
    /// otherwise have to grow.
    fn fill(&mut self, new: &mut impl Read) -> Result<(), SyncError> {
        if self.lit_start > 0 && self.buf.len() + READ_CHUNK > self.buf.capacity() {
            self.buf.drain(..self.lit_start);
            self.pos -= self.lit_start;
            self.lit_start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let got = loop {
            match new.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e.into());
                }
            }
        };
        self.buf.truncate(old + got);
        if got == 0 {
            self.eof = true;
        } else {
            self.hasher.update(&self.buf[old..]);
            self.new_len += got as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::signature::signature;

    fn sig_of(base: &[u8], bl: u32) -> Signature {
        signature(base, base.len() as u64, bl).unwrap()
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn unchanged_file_is_one_copy_including_short_tail() {
        let base = noise(1000, 1);
        let d = delta(&sig_of(&base, 64), &base[..]).unwrap();
        assert_eq!(d.ops, vec![DeltaOp::Copy { block: 0, count: 16 }]);
        assert_eq!((d.new_len, d.new_hash), (1000, *blake3::hash(&base).as_bytes()));
    }

    #[test]
    fn empty_new_has_no_ops() {
        let d = delta(&sig_of(&noise(300, 2), 64), &[][..]).unwrap();
        assert!(d.ops.is_empty());
        assert_eq!((d.new_len, d.new_hash), (0, *blake3::hash(b"").as_bytes()));
    }

    #[test]
    fn empty_base_makes_all_literal() {
        let new = noise(700_000, 3);
        let d = delta(&sig_of(&[], 64), &new[..]).unwrap();
        assert_eq!(d.literal_bytes(), 700_000);
        assert!(d.ops.iter().all(|op| matches!(op, DeltaOp::Literal(b) if b.len() <= MAX_LITERAL)));
        assert_eq!(d.ops.len(), 3, "literals are coalesced up to the cap");
    }

    #[test]
    fn base_shorter_than_a_block_matches_at_the_end_only() {
        let base = b"hello".to_vec();
        let d = delta(&sig_of(&base, 64), &b"say hello"[..]).unwrap();
        assert_eq!(d.ops, vec![DeltaOp::Literal(b"say ".to_vec()), DeltaOp::Copy { block: 0, count: 1 }]);
    }

    #[test]
    fn weak_collision_is_rejected_by_strong_hash() {
        // Same byte sum and same sum of prefix sums, different bytes.
        let (x, y) = ([1u8, 0, 0, 1], [0u8, 1, 1, 0]);
        assert_eq!(Rolling::new(&x).digest(), Rolling::new(&y).digest());
        let d = delta(&sig_of(&x, 4), &y[..]).unwrap();
        assert_eq!(d.ops, vec![DeltaOp::Literal(y.to_vec())]);
        let base = [x, y].concat();
        let d = delta(&sig_of(&base, 4), &[y, x].concat()[..]).unwrap();
        assert_eq!(d.ops, vec![DeltaOp::Copy { block: 1, count: 1 }, DeltaOp::Copy { block: 0, count: 1 }]);
    }

    #[test]
    fn equal_blocks_prefer_the_sequential_one() {
        let base = [7u8; 64 * 5];
        let d = delta(&sig_of(&base, 64), &base[..]).unwrap();
        assert_eq!(d.ops, vec![DeltaOp::Copy { block: 0, count: 5 }]);
    }

    #[test]
    fn edit_in_the_middle_costs_about_the_edit() {
        let base = noise(64 * 100, 4);
        let mut new = base.clone();
        new.splice(1000..1010, b"0123456789abcdef".iter().copied());
        let d = delta(&sig_of(&base, 64), &new[..]).unwrap();
        assert!(d.literal_bytes() <= 16 + 2 * 64, "{}", d.literal_bytes());
        assert_eq!(d.ops.len(), 3);
    }

    #[test]
    fn long_literal_between_matches_is_capped_and_scanning_resumes() {
        let base = noise(1000, 8);
        let new = [base.clone(), noise(600_000, 10), base.clone()].concat();
        let d = delta(&sig_of(&base, 64), &new[..]).unwrap();
        // The short last block (40 bytes) only matches at the very end, as in rsync.
        assert_eq!(d.ops.first(), Some(&DeltaOp::Copy { block: 0, count: 15 }));
        assert_eq!(d.ops.last(), Some(&DeltaOp::Copy { block: 0, count: 16 }));
        assert_eq!(d.literal_bytes(), 600_040);
        assert!(d.ops.iter().all(|op| !matches!(op, DeltaOp::Literal(b) if b.len() > MAX_LITERAL)));
    }

    #[test]
    fn emit_error_stops_the_scan() {
        let base = noise(1000, 5);
        let err = delta_each(&sig_of(&base, 64), &base[..], |_| Err(SyncError::HashMismatch)).unwrap_err();
        assert!(matches!(err, SyncError::HashMismatch));
    }

    #[test]
    fn invalid_signature_is_refused() {
        let mut sig = sig_of(&noise(100, 6), 64);
        sig.file_len = 1000;
        assert!(matches!(delta(&sig, &[][..]), Err(SyncError::BlockCount { .. })));
    }

    #[test]
    fn serde_round_trip() {
        let base = noise(5000, 7);
        let mut new = base.clone();
        new.extend_from_slice(b"tail");
        let d = delta(&sig_of(&base, 128), &new[..]).unwrap();
        let bytes = postcard::to_allocvec(&d).unwrap();
        assert_eq!(postcard::from_bytes::<Delta>(&bytes).unwrap(), d);
    }
}

#[cfg(test)]
#[path = "delta_props.rs"]
mod props;
