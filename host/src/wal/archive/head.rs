//! The segment being written: a `<walfile>.partial` preallocated to the segment size, written in
//! place at each WAL byte's offset, fdatasynced on flush, renamed to `<walfile>` once full.
//!
//! Owns that one file's descriptor and the creation order that makes it crash-safe
//! (preallocate, fsync the file, fsync the directory, as `pg_receivewal` does). Must never
//! decide when to flush or rename: the writer does, after the flush record vouches for the bytes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::config::SegmentInit;
use super::dir::{Dir, zero_range};
use super::error::{ArchiveError, Result};
use crate::wal::lsn::{SegNo, TimeLineId, WalSegmentSize};

/// The open `.partial` segment.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) timeline: TimeLineId,
    pub(crate) segno: SegNo,
    file: File,
    path: PathBuf,
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
            .open(&path)
            .map_err(ArchiveError::io("create segment", &path))?;
        match init {
            SegmentInit::Zeroed => zero_range(&file, &path, 0, seg.bytes())?,
            SegmentInit::Sparse => file.set_len(seg.bytes()).map_err(ArchiveError::io("resize", &path))?,
        }
        dir.durability().sync_all(&file).map_err(ArchiveError::io("fsync", &path))?;
        dir.sync()?;
        Ok(Head { timeline, segno, file, path })
    }

    /// Opens an existing partial file (recovery made it full size with a zeroed tail).
    pub(crate) fn open(dir: &Dir, seg: WalSegmentSize, timeline: TimeLineId, segno: SegNo) -> Result<Self> {
        let path = dir.join(&seg.partial_name(timeline, segno));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(ArchiveError::io("open segment", &path))?;
        Ok(Head { timeline, segno, file, path })
    }

    /// Writes `data` at `offset` inside the segment.
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).map_err(ArchiveError::io("write", &self.path))
    }

    /// Makes everything written so far durable.
    pub(crate) fn sync(&self, dir: &Dir) -> Result<()> {
        dir.durability().sync_data(&self.file).map_err(ArchiveError::io("fdatasync", &self.path))
    }

    /// Renames the (synced, full) segment to its final name and makes the rename durable.
    pub(crate) fn complete(self, dir: &Dir, seg: WalSegmentSize) -> Result<()> {
        drop(self.file);
        dir.rename(&seg.partial_name(self.timeline, self.segno), &seg.file_name(self.timeline, self.segno))?;
        dir.sync()
    }
}
