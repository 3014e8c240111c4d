//! The segment being written: a `<walfile>.partial` preallocated to the segment size plus the
//! flush record's trailer (`flush_record.rs`), WAL written in place at each byte's offset, the
//! record written past it on flush and both made durable by one fdatasync; once full and
//! flushed, truncated to exactly the segment size and renamed to `<walfile>`.
//!
//! Owns that one file's descriptor, the checksum of the WAL written since the last flush, and
//! the orders that make it crash-safe: creation (size first, zeros, fsync the file, fsync the
//! directory, as `pg_receivewal` does), flush (record into the older slot, then fdatasync),
//! completion (truncate, fsync, rename, fsync the directory). A `.partial` is exactly the
//! segment size only after a completion's truncate: recovery reads that as "flushed to its
//! end". Must never decide when to flush or complete: the writer does.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use super::config::SegmentInit;
use super::dir::{Dir, zero_range};
use super::error::{ArchiveError, Result};
use super::flush_record::{self, Record, TRAILER_LEN};
use crate::wal::lsn::{Lsn, SegNo, TimeLineId, WalSegmentSize};

/// The open `.partial` segment.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) timeline: TimeLineId,
    pub(crate) segno: SegNo,
    file: File,
    path: PathBuf,
    seg: WalSegmentSize,
    /// Sequence number of the newest record in the trailer; 0 while there is none.
    seq: u64,
    /// CRC32 of the latest contiguous run of bytes written, `from..to` (segment offsets): at
    /// flush it is the WAL's checksum whenever the run is exactly the flushed range, which
    /// spares reading the WAL back.
    run: Option<Run>,
}

#[derive(Debug)]
struct Run {
    from: u64,
    to: u64,
    crc: crc32fast::Hasher,
}

impl Head {
    /// Creates and preallocates the partial file of `segno`, durable (file and directory entry)
    /// before any WAL goes in.
    pub(crate) fn create(
        dir: &Dir,
        seg: WalSegmentSize,
        init: SegmentInit,
        timeline: TimeLineId,
        segno: SegNo,
    ) -> Result<Self> {
        let path = dir.join(&seg.partial_name(timeline, segno));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(super::dir::PRIVATE_FILE)
            .open(&path)
            .map_err(ArchiveError::io("create segment", &path))?;
        // Full length first, in one step: a crash during the zero-fill then never leaves a file
        // of exactly the segment size, which recovery would take for a completed segment.
        let len = seg.bytes() + TRAILER_LEN;
        file.set_len(len).map_err(ArchiveError::io("resize", &path))?;
        if init == SegmentInit::Zeroed {
            zero_range(&file, &path, 0, len)?;
        }
        dir.durability().sync_all(&file).map_err(ArchiveError::io("fsync", &path))?;
        dir.sync()?;
        Ok(Head { timeline, segno, file, path, seg, seq: 0, run: None })
    }

    /// Opens an existing partial file, which recovery made full length with only the trusted
    /// record (if any) left in its trailer.
    pub(crate) fn open(dir: &Dir, seg: WalSegmentSize, timeline: TimeLineId, segno: SegNo) -> Result<Self> {
        let path = dir.join(&seg.partial_name(timeline, segno));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(ArchiveError::io("open segment", &path))?;
        let slots = flush_record::read_slots(&file, seg).map_err(ArchiveError::io("read", &path))?;
        let seq = slots.iter().flatten().map(|r| r.seq).max().unwrap_or(0);
        Ok(Head { timeline, segno, file, path, seg, seq, run: None })
    }

    /// Writes `data` at `offset` inside the segment (never into the trailer).
    pub(crate) fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        debug_assert!(offset + data.len() as u64 <= self.seg.bytes());
        self.file.write_all_at(data, offset).map_err(ArchiveError::io("write", &self.path))?;
        let end = offset + data.len() as u64;
        match &mut self.run {
            Some(run) if run.to == offset => {
                run.crc.update(data);
                run.to = end;
            }
            run => {
                let mut crc = crc32fast::Hasher::new();
                crc.update(data);
                *run = Some(Run { from: offset, to: end, crc });
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable, without a record (a timeline switch's prefix,
    /// which the state file then vouches for).
    pub(crate) fn sync(&self, dir: &Dir) -> Result<()> {
        dir.durability().sync_data(&self.file).map_err(ArchiveError::io("fdatasync", &self.path))
    }

    /// Makes the WAL up to `lsn` durable with a record proving it, in one fdatasync. `prev` is
    /// the flushed LSN before this flush (durable already). After a failed fdatasync the record
    /// is wiped from the page cache, so that a reopen in this boot cannot trust WAL whose
    /// write-back failed.
    pub(crate) fn flush(&mut self, dir: &Dir, prev: Lsn, lsn: Lsn) -> Result<()> {
        let seq = self.seq + 1;
        let draft = Record { seq, timeline: self.timeline, lsn, prev, wal_crc: 0 };
        let (from, to) = draft.wal_range(self.seg, self.segno);
        let wal_crc = match self.run.take() {
            Some(run) if (run.from, run.to) == (from, to) => run.crc.finalize(),
            _ => flush_record::wal_crc(&self.file, from, to).map_err(ArchiveError::io("read", &self.path))?,
        };
        let record = Record { wal_crc, ..draft };
        let at = flush_record::slot_offset(self.seg, flush_record::slot_of(seq));
        self.file.write_all_at(&record.encode(), at).map_err(ArchiveError::io("write", &self.path))?;
        if let Err(e) = dir.durability().sync_data(&self.file) {
            if let Err(wipe) = self.file.write_all_at(&[0u8; 64], at) {
                tracing::error!(path = %self.path.display(), error = %wipe, "could not wipe an unsynced flush record");
            }
            return Err(ArchiveError::io("fdatasync", &self.path)(e));
        }
        self.seq = seq;
        self.run = Some(Run { from: to, to, crc: crc32fast::Hasher::new() });
        Ok(())
    }

    /// Gives the (flushed, full) segment its final form: truncated to exactly the segment size
    /// (no trailer: a complete segment is byte for byte the primary's), fsynced, renamed to its
    /// final name, the rename made durable.
    pub(crate) fn complete(self, dir: &Dir) -> Result<()> {
        self.file.set_len(self.seg.bytes()).map_err(ArchiveError::io("truncate", &self.path))?;
        dir.durability().sync_all(&self.file).map_err(ArchiveError::io("fsync", &self.path))?;
        drop(self.file);
        let seg = self.seg;
        dir.rename(&seg.partial_name(self.timeline, self.segno), &seg.file_name(self.timeline, self.segno))?;
        dir.sync()
    }
}
