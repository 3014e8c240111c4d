//! The standby's side: rebuilds the new file from its base and a delta, and proves the result
//! by length and blake3 before anyone may trust it.
//!
//! Must never: read outside the base (a copy past its end is refused, not clamped) or report
//! success for output that does not hash to the delta's hash. It writes to any `Write`; putting
//! the result under its real name only after [`Patcher::finish`] is the caller's job.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::sync::delta::{Delta, DeltaOp};
use crate::sync::error::SyncError;
use crate::sync::signature::{block_count, check_block_len};

/// Bytes copied from the base per read.
const COPY_CHUNK: usize = 128 * 1024;

/// Applies a whole delta: rebuilds the new file from `base` into `out` and verifies it.
///
/// Fails early with [`SyncError::LengthMismatch`] once the output passes `delta.new_len`.
pub fn patch(base: impl Read + Seek, delta: &Delta, out: impl Write) -> Result<(), SyncError> {
    let mut patcher = Patcher::new(base, delta.block_len, out)?;
    for op in &delta.ops {
        patcher.apply(op)?;
        if patcher.written() > delta.new_len {
            return Err(SyncError::LengthMismatch { expected: delta.new_len, actual: patcher.written() });
        }
    }
    patcher.finish(delta.new_len, &delta.new_hash)?;
    Ok(())
}

/// Incremental patching, for ops that arrive one by one: [`Patcher::apply`] each, then
/// [`Patcher::finish`] with the new file's length and hash.
pub struct Patcher<R, W> {
    base: R,
    out: W,
    block_len: u64,
    base_len: u64,
    base_blocks: u64,
    /// Where the base's cursor is, so consecutive copies need no seek.
    base_pos: u64,
    written: u64,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl<R: Read + Seek, W: Write> Patcher<R, W> {
    /// Starts patching against `base`, whose signature used `block_len`.
    pub fn new(mut base: R, block_len: u32, out: W) -> Result<Self, SyncError> {
        check_block_len(block_len)?;
        let base_len = base.seek(SeekFrom::End(0))?;
        Ok(Patcher {
            base,
            out,
            block_len: u64::from(block_len),
            base_len,
            base_blocks: block_count(base_len, block_len),
            base_pos: base_len,
            written: 0,
            hasher: blake3::Hasher::new(),
            buf: Vec::new(),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Applies one op.
    pub fn apply(&mut self, op: &DeltaOp) -> Result<(), SyncError> {
        match op {
            DeltaOp::Literal(bytes) => self.write(bytes),
            &DeltaOp::Copy { block, count } => self.copy(block, count),
        }
    }

    /// Flushes the output and checks it is `new_len` bytes hashing to `new_hash`; returns the
    /// writer so the caller can sync and rename it.
    pub fn finish(mut self, new_len: u64, new_hash: &[u8; 32]) -> Result<W, SyncError> {
        self.out.flush()?;
        if self.written != new_len {
            return Err(SyncError::LengthMismatch { expected: new_len, actual: self.written });
        }
        if self.hasher.finalize().as_bytes() != new_hash {
            return Err(SyncError::HashMismatch);
        }
        tracing::debug!(new_len, "patch verified");
        Ok(self.out)
    }

    fn copy(&mut self, block: u32, count: u32) -> Result<(), SyncError> {
        let end_block = u64::from(block) + u64::from(count);
        if end_block > self.base_blocks {
            return Err(SyncError::CopyOutOfRange { block, count, base_blocks: self.base_blocks });
        }
        let start = u64::from(block) * self.block_len;
        // Only the base's last block may be short.
        let end = (end_block * self.block_len).min(self.base_len);
        if start >= end {
            return Ok(());
        }
        if self.base_pos != start {
            self.base.seek(SeekFrom::Start(start))?;
        }
        if self.buf.is_empty() {
            self.buf = vec![0u8; COPY_CHUNK];
        }
        let mut buf = std::mem::take(&mut self.buf);
        let mut at = start;
        let result = (|| {
            while at < end {
                let n = (end - at).min(COPY_CHUNK as u64) as usize;
                // A base shorter than when it was measured surfaces here as UnexpectedEof.
                self.base.read_exact(&mut buf[..n])?;
                at += n as u64;
                self.write(&buf[..n])?;
            }
            Ok(())
        })();
        self.buf = buf;
        // On error the cursor is unknown; force a seek next time.
        self.base_pos = if result.is_ok() { end } else { u64::MAX };
        result
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SyncError> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::sync::delta::delta;
    use crate::sync::signature::signature;

    fn round_trip(base: &[u8], new: &[u8], bl: u32) -> (Delta, Vec<u8>) {
        let sig = signature(base, base.len() as u64, bl).unwrap();
        let d = delta(&sig, new).unwrap();
        let mut out = Vec::new();
        patch(Cursor::new(base), &d, &mut out).unwrap();
        (d, out)
    }

    #[test]
    fn rebuilds_edge_cases() {
        let base: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (old, new) in [
            (&base[..], &base[..]),
            (&[][..], &base[..]),
            (&base[..], &[][..]),
            (&[][..], &[][..]),
            (&base[..10], &base[..]),
            (&base[..], &base[..10]),
            (&base[..], &base[500..]),
        ] {
            assert_eq!(round_trip(old, new, 64).1, new);
        }
    }

    #[test]
    fn wrong_hash_is_hash_mismatch() {
        let base = vec![3u8; 500];
        let sig = signature(&base[..], 500, 64).unwrap();
        let mut d = delta(&sig, &base[..]).unwrap();
        d.new_hash[0] ^= 1;
        assert!(matches!(patch(Cursor::new(&base), &d, Vec::new()), Err(SyncError::HashMismatch)));
    }

    #[test]
    fn changed_base_is_hash_mismatch() {
        let base = vec![3u8; 500];
        let sig = signature(&base[..], 500, 64).unwrap();
        let d = delta(&sig, &base[..]).unwrap();
        let mut moved = base.clone();
        moved[100] = 4;
        assert!(matches!(patch(Cursor::new(&moved), &d, Vec::new()), Err(SyncError::HashMismatch)));
    }

    #[test]
    fn copy_beyond_base_is_refused() {
        let base = vec![1u8; 100];
        let d = Delta {
            block_len: 64,
            ops: vec![DeltaOp::Copy { block: 1, count: 2 }],
            new_len: 100,
            new_hash: [0; 32],
        };
        let err = patch(Cursor::new(&base), &d, Vec::new()).unwrap_err();
        assert!(matches!(err, SyncError::CopyOutOfRange { block: 1, count: 2, base_blocks: 2 }), "{err}");
        let huge = DeltaOp::Copy { block: u32::MAX, count: u32::MAX };
        let mut p = Patcher::new(Cursor::new(&base), 64, Vec::new()).unwrap();
        assert!(matches!(p.apply(&huge), Err(SyncError::CopyOutOfRange { .. })));
    }

    #[test]
    fn output_past_announced_length_stops_early() {
        let d = Delta {
            block_len: 64,
            ops: vec![DeltaOp::Literal(vec![0; 10]), DeltaOp::Literal(vec![0; 10])],
            new_len: 5,
            new_hash: [0; 32],
        };
        let err = patch(Cursor::new(&[]), &d, Vec::new()).unwrap_err();
        assert!(matches!(err, SyncError::LengthMismatch { expected: 5, actual: 10 }), "{err}");
    }

    #[test]
    fn short_output_is_length_mismatch() {
        let d = Delta { block_len: 64, ops: vec![], new_len: 1, new_hash: *blake3::hash(b"").as_bytes() };
        assert!(matches!(patch(Cursor::new(&[]), &d, Vec::new()), Err(SyncError::LengthMismatch { .. })));
    }

    #[test]
    fn base_shrunk_after_signing_fails_verification() {
        let base = vec![9u8; 300];
        let sig = signature(&base[..], 300, 64).unwrap();
        let d = delta(&sig, &base[..]).unwrap();
        // Same block count, shorter last block: the copy reads past the new end.
        let err = patch(Cursor::new(&base[..260]), &d, Vec::new()).unwrap_err();
        assert!(matches!(err, SyncError::LengthMismatch { .. } | SyncError::HashMismatch), "{err}");
    }

    #[test]
    fn incremental_patcher_matches_patch_and_returns_writer() {
        let base: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
        let mut new = base.clone();
        new.truncate(4321);
        new.extend_from_slice(b"appended");
        let (d, whole) = round_trip(&base, &new, 128);
        let mut p = Patcher::new(Cursor::new(&base), d.block_len, Vec::new()).unwrap();
        for op in &d.ops {
            p.apply(op).unwrap();
        }
        assert_eq!(p.finish(d.new_len, &d.new_hash).unwrap(), whole);
    }

    #[test]
    fn patches_into_files() {
        let dir = tempfile::tempdir().unwrap();
        let base: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
        let mut new = base.clone();
        new[50_000..50_100].fill(0);
        std::fs::write(dir.path().join("base"), &base).unwrap();
        let sig = signature(std::fs::File::open(dir.path().join("base")).unwrap(), 100_000, 2048).unwrap();
        let d = delta(&sig, &new[..]).unwrap();
        let out = std::fs::File::create(dir.path().join("new")).unwrap();
        patch(std::fs::File::open(dir.path().join("base")).unwrap(), &d, out).unwrap();
        assert_eq!(std::fs::read(dir.path().join("new")).unwrap(), new);
    }
}
