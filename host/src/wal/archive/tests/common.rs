//! Shared helpers: a deterministic WAL-like byte stream, archive set-up and read-back.

use std::path::Path;

use super::super::{ArchiveConfig, ArchiveReader, ArchiveWriter};
use crate::wal::{Lsn, TimeLineId};

pub const MIB: u64 = 1024 * 1024;

/// The stream's byte at `lsn` for a timeline seeded `seed`: position-dependent, so a byte
/// written at the wrong offset or left over from an older write shows up.
pub fn wal_byte(seed: u64, lsn: u64) -> u8 {
    let mut z = (lsn / 8).wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> ((lsn % 8) * 8)) as u8
}

/// `len` stream bytes from `start` (seed 0: timeline 1's content).
pub fn wal(start: Lsn, len: usize) -> Vec<u8> {
    wal_seeded(0, start, len)
}

pub fn wal_seeded(seed: u64, start: Lsn, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| wal_byte(seed, start.0 + i)).collect()
}

pub fn open(dir: &Path) -> ArchiveWriter {
    ArchiveWriter::open(dir, ArchiveConfig::for_test()).expect("open archive")
}

/// Reads `from..to` of `timeline` through the reader, in walsender-sized pieces.
pub fn read_range(reader: &ArchiveReader, timeline: TimeLineId, from: Lsn, to: Lsn) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        let max = (to.0 - pos.0).min(128 * 1024) as usize;
        let chunk = reader.read(timeline, pos, max).expect("read");
        assert!(!chunk.is_empty(), "read at {pos} returned nothing before {to}");
        pos = Lsn(pos.0 + chunk.len() as u64);
        out.extend_from_slice(&chunk);
    }
    out
}

/// Sorted file names in `dir`, leaving out the archive's own state and lock files.
pub fn wal_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("tandem-wal-archive."))
        .collect();
    names.sort();
    names
}

/// Appends the stream from the writer's end in `chunk`-sized pieces until `to`.
pub fn append_until(w: &mut ArchiveWriter, timeline: TimeLineId, to: Lsn, chunk: usize) {
    let mut pos = w.written_lsn();
    while pos < to {
        let n = ((to.0 - pos.0) as usize).min(chunk);
        w.append(timeline, pos, &wal(pos, n)).expect("append");
        pos = Lsn(pos.0 + n as u64);
    }
}
