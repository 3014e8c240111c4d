//! The flush record: how far the head segment's WAL is durable, kept in the head `.partial`
//! itself, in a trailer past the WAL: the file is `segment_size + TRAILER_LEN` bytes, and the
//! trailer holds two alternating 4 KiB slots so a torn write can only damage the slot being
//! written, never the last complete record. Each flush pwrites a record into the slot not
//! holding the newest one, then ONE fdatasync of the file makes WAL and record durable together
//! (`head.rs`). A completed segment loses its trailer (truncated to `segment_size`) before it
//! gets its final name.
//!
//! Why in the segment file: with the record as a write-then-rename file a flush took 14 ms, as
//! a separate preallocated file with its own fdatasync 7 ms, against 3.7 ms for the WAL's
//! fdatasync alone (measured on this project's VM); one fdatasync per flush is what
//! `pg_receivewal` pays.
//!
//! One fdatasync does not order the WAL pages before the record page, so a record proves its
//! WAL: it carries a CRC32 of the WAL from the previous record's LSN (or the segment start) to
//! its own, and recovery (`prove`) trusts the newest record only if the WAL on disk matches.
//! Otherwise it takes the older slot: that record's fdatasync had returned before the newer
//! one was written. With neither, the segment is durable up to where it began (the previous
//! segment's end or the timeline's start, which the writer made durable before).
//!
//! Owns the record's format, slot choice and proof. Must never overwrite the newest valid
//! slot, nor vouch for WAL it did not checksum.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::wal::lsn::{Lsn, SegNo, TimeLineId, WalSegmentSize};

/// Slots sit in separate 4 KiB pages, so one torn page write cannot reach both.
const SLOT_STRIDE: u64 = 4096;
/// Bytes past the WAL in a head `.partial`: the two record slots.
pub(crate) const TRAILER_LEN: u64 = 2 * SLOT_STRIDE;
const MAGIC: &[u8; 8] = b"TWALTRLR";
const RECORD_LEN: usize = 48;
/// WAL is read back for checksumming in pieces of this size.
const READ_CHUNK: usize = 1024 * 1024;

/// One flush: the WAL of this segment is durable up to `lsn`; `prev..lsn` (clipped to the
/// segment) has checksum `wal_crc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) timeline: TimeLineId,
    pub(crate) lsn: Lsn,
    /// The flushed LSN before this flush: the previous record's, or the segment's durable start.
    pub(crate) prev: Lsn,
    pub(crate) wal_crc: u32,
}

impl Record {
    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let mut buf = [0u8; RECORD_LEN];
        buf[..8].copy_from_slice(MAGIC);
        buf[8..16].copy_from_slice(&self.seq.to_le_bytes());
        buf[16..20].copy_from_slice(&self.timeline.to_le_bytes());
        buf[20..24].copy_from_slice(&self.wal_crc.to_le_bytes());
        buf[24..32].copy_from_slice(&self.lsn.0.to_le_bytes());
        buf[32..40].copy_from_slice(&self.prev.0.to_le_bytes());
        let sum = crc32fast::hash(&buf[..40]);
        buf[40..44].copy_from_slice(&sum.to_le_bytes());
        buf
    }

    pub(crate) fn decode(buf: &[u8]) -> Option<Self> {
        let buf = buf.get(..RECORD_LEN)?;
        let le64 = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or([0; 8]));
        let le32 = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or([0; 4]));
        let valid = &buf[..8] == MAGIC && le32(40) == crc32fast::hash(&buf[..40]);
        valid.then(|| Record {
            seq: le64(8),
            timeline: le32(16),
            wal_crc: le32(20),
            lsn: Lsn(le64(24)),
            prev: Lsn(le64(32)),
        })
    }

    /// Whether this record can belong to segment `segno` of `timeline` at all.
    fn fits(&self, seg: WalSegmentSize, timeline: TimeLineId, segno: SegNo) -> bool {
        self.seq > 0
            && self.timeline == timeline
            && self.prev < self.lsn
            && self.lsn > seg.start(segno)
            && self.lsn <= seg.end(segno)
    }

    /// Offsets inside the segment of the WAL this record checksums.
    pub(crate) fn wal_range(&self, seg: WalSegmentSize, segno: SegNo) -> (u64, u64) {
        let base = seg.start(segno);
        (self.prev.max(base).bytes_since(base), self.lsn.bytes_since(base))
    }
}

/// The slot record `seq` goes into.
pub(crate) fn slot_of(seq: u64) -> usize {
    (seq % 2) as usize
}

/// Where slot `slot` starts in a head file.
pub(crate) fn slot_offset(seg: WalSegmentSize, slot: usize) -> u64 {
    seg.bytes() + slot as u64 * SLOT_STRIDE
}

/// The two slots' records, as far as their own checksums go (`None`: empty or torn).
pub(crate) fn read_slots(file: &File, seg: WalSegmentSize) -> io::Result<[Option<Record>; 2]> {
    let mut buf = vec![0u8; TRAILER_LEN as usize];
    let n = file.read_at(&mut buf, seg.bytes())?;
    buf.truncate(n);
    let slot = |i: usize| buf.get(i * SLOT_STRIDE as usize..).and_then(Record::decode);
    Ok([slot(0), slot(1)])
}

/// CRC32 of `from..to` of `file`.
pub(crate) fn wal_crc(file: &File, from: u64, to: u64) -> io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; READ_CHUNK.min(to.saturating_sub(from) as usize)];
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(READ_CHUNK);
        file.read_exact_at(&mut buf[..n], pos)?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher.finalize())
}

/// The record recovery may trust, and the slot holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Proven {
    pub(crate) slot: usize,
    pub(crate) record: Record,
}

/// Reads the trailer of head file `file` (segment `segno` of `timeline`, full length) and
/// returns the newest record whose WAL is on disk as it checksummed, else the older valid
/// record, else `None`.
pub(crate) fn prove(
    file: &File,
    seg: WalSegmentSize,
    timeline: TimeLineId,
    segno: SegNo,
) -> io::Result<Option<Proven>> {
    let slots = read_slots(file, seg)?;
    let mut valid: Vec<Proven> = (0..2)
        .filter_map(|slot| slots[slot].map(|record| Proven { slot, record }))
        .filter(|p| p.record.fits(seg, timeline, segno))
        .collect();
    valid.sort_by_key(|p| std::cmp::Reverse(p.record.seq));
    let Some(newest) = valid.first().copied() else { return Ok(None) };
    let (from, to) = newest.record.wal_range(seg, segno);
    if wal_crc(file, from, to)? == newest.record.wal_crc {
        return Ok(Some(newest));
    }
    tracing::warn!(
        segment = seg.partial_name(timeline, segno), lsn = %newest.record.lsn,
        "newest flush record's WAL did not reach the disk; falling back to the record before it"
    );
    Ok(valid.get(1).copied().filter(|older| older.record.seq < newest.record.seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn seg() -> WalSegmentSize {
        WalSegmentSize::new(MIB).unwrap()
    }

    /// A head file of segment 1 with WAL bytes `wal` from the segment start.
    fn head_file(dir: &std::path::Path, wal: &[u8]) -> File {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("head"))
            .unwrap();
        file.set_len(MIB + TRAILER_LEN).unwrap();
        file.write_all_at(wal, 0).unwrap();
        file
    }

    fn put(file: &File, record: Record) {
        file.write_all_at(&record.encode(), slot_offset(seg(), slot_of(record.seq))).unwrap();
    }

    fn record(file: &File, seq: u64, prev: u64, lsn: u64) -> Record {
        let (from, to) = (prev.max(MIB) - MIB, lsn - MIB);
        let wal_crc = wal_crc(file, from, to).unwrap();
        Record { seq, timeline: 1, lsn: Lsn(lsn), prev: Lsn(prev), wal_crc }
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let r = Record { seq: 7, timeline: 3, lsn: Lsn(0x1234_5678), prev: Lsn(0x1200_0000), wal_crc: 99 };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        let mut torn = r.encode();
        torn[20..].fill(0);
        assert_eq!(Record::decode(&torn), None);
        assert_eq!(Record::decode(&[0u8; RECORD_LEN]), None);
    }

    #[test]
    fn newest_proven_record_wins_and_survives_a_torn_slot() {
        let tmp = tempfile::tempdir().unwrap();
        let wal: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8 + 1).collect();
        let file = head_file(tmp.path(), &wal);
        assert_eq!(prove(&file, seg(), 1, 1).unwrap(), None, "a fresh trailer vouches for nothing");
        for i in 1..=5u64 {
            put(&file, record(&file, i, MIB + (i - 1) * 1000, MIB + i * 1000));
        }
        let p = prove(&file, seg(), 1, 1).unwrap().unwrap();
        assert_eq!((p.record.seq, p.record.lsn), (5, Lsn(MIB + 5000)));
        // Not this segment's, or not this timeline's: nothing.
        assert_eq!(prove(&file, seg(), 2, 1).unwrap(), None);
        assert_eq!(prove(&file, seg(), 1, 2).unwrap(), None);

        // Record 6 torn half-way (slot 0): record 5 in slot 1 still stands.
        let mut torn =
            Record { seq: 6, timeline: 1, lsn: Lsn(MIB + 6000), prev: Lsn(MIB + 5000), wal_crc: 1 }.encode();
        torn[20..].fill(0);
        file.write_all_at(&torn, slot_offset(seg(), 0)).unwrap();
        assert_eq!(prove(&file, seg(), 1, 1).unwrap().unwrap().record.lsn, Lsn(MIB + 5000));
    }

    /// The torn flush one fdatasync allows: the record page reached the disk, a WAL page of its
    /// range did not.
    #[test]
    fn a_record_whose_wal_is_not_on_disk_falls_back_to_the_one_before() {
        let tmp = tempfile::tempdir().unwrap();
        let wal: Vec<u8> = (0..9000u32).map(|i| (i * 13 % 251) as u8 + 1).collect();
        let file = head_file(tmp.path(), &wal);
        put(&file, record(&file, 1, MIB - 10, MIB + 4000));
        put(&file, record(&file, 2, MIB + 4000, MIB + 9000));
        file.write_all_at(&[0], 8191).unwrap(); // a lost page inside record 2's range
        let p = prove(&file, seg(), 1, 1).unwrap().unwrap();
        assert_eq!((p.slot, p.record.lsn), (1, Lsn(MIB + 4000)));

        // The first record of a segment with its WAL lost: nothing is proven past the start.
        let file = head_file(tmp.path(), &wal);
        put(&file, record(&file, 1, MIB, MIB + 9000));
        file.write_all_at(&[0], 100).unwrap();
        assert_eq!(prove(&file, seg(), 1, 1).unwrap(), None);
    }
}
