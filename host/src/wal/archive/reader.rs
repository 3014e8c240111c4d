//! The walsender's side of the archive: reads durable WAL of a requested timeline from complete
//! and partial segments, and waits for more.
//!
//! Owns the mapping from (timeline, LSN) to the file that holds it: a timeline's own segments,
//! or, before the timeline began, its parent's (up to where the child's copy takes over).
//! Must never return a byte past the flushed LSN, nor a byte of a parent timeline past the
//! point where the requested timeline branched off, nor a byte of a `.partial`'s flush-record
//! trailer: reads stop at the segment size (`read_chain` never crosses a segment's end).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::error::{ArchiveError, Result};
use super::state::TimelineExtent;
use crate::wal::lsn::{Lsn, SegNo, TimeLineId, WalSegmentSize, history_file_name};

/// The newest durable WAL: what the primary's slot is told and what readers may serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushPoint {
    /// Timeline being written; 0 while the archive is empty.
    pub timeline: TimeLineId,
    /// Flushed LSN on that timeline; `Lsn::INVALID` while the archive is empty.
    pub lsn: Lsn,
}

/// What the writer publishes to readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) seg: WalSegmentSize,
    /// Durable extents only: the newest one ends at the flushed LSN.
    pub(crate) timelines: RwLock<Vec<TimelineExtent>>,
}

impl Shared {
    pub(crate) fn snapshot(&self) -> Vec<TimelineExtent> {
        self.timelines.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn publish(&self, timelines: &[TimelineExtent]) {
        *self.timelines.write().unwrap_or_else(|e| e.into_inner()) = timelines.to_vec();
    }
}

/// A handle for reading the archive; cheap to clone, usable from any thread.
///
/// `read` does blocking file I/O (page-cache reads, usually): call it from `spawn_blocking` or a
/// disk thread. A reader made by a writer that was since dropped still reads what is on disk but
/// sees no new flushes (its watch is closed).
#[derive(Clone, Debug)]
pub struct ArchiveReader {
    pub(crate) shared: Arc<Shared>,
    pub(crate) flushed: watch::Receiver<FlushPoint>,
}

impl ArchiveReader {
    /// Up to `max` bytes of `timeline`'s WAL from `lsn`, crossing segments as needed. Empty when
    /// nothing durable lies past `lsn` yet (wait with `wait_past`) or the (historic) timeline
    /// ends there.
    pub fn read(&self, timeline: TimeLineId, lsn: Lsn, max: usize) -> Result<Bytes> {
        read_chain(&self.shared, &self.shared.snapshot(), timeline, lsn, max)
    }

    /// The archive's segment size.
    pub fn segment_size(&self) -> WalSegmentSize {
        self.shared.seg
    }

    /// The current flush point.
    pub fn flush_point(&self) -> FlushPoint {
        *self.flushed.borrow()
    }

    /// A watch of the flush point, for a `select!` loop.
    pub fn subscribe(&self) -> watch::Receiver<FlushPoint> {
        self.flushed.clone()
    }

    /// Waits until WAL past `lsn` on `timeline` is durable or the archive moved on to a newer
    /// timeline; `None` once the writer is gone. Cancel-safe.
    pub async fn wait_past(&mut self, timeline: TimeLineId, lsn: Lsn) -> Option<FlushPoint> {
        let ready = |p: &FlushPoint| p.timeline > timeline || (p.timeline == timeline && p.lsn > lsn);
        self.flushed.wait_for(ready).await.ok().map(|p| *p)
    }

    /// The timelines the archive holds, oldest first, with their durable ranges.
    pub fn timelines(&self) -> Vec<TimelineExtent> {
        self.shared.snapshot()
    }

    /// The content of `timeline`'s history file, if the archive has it (for TIMELINE_HISTORY).
    pub fn read_history(&self, timeline: TimeLineId) -> Result<Option<Bytes>> {
        let path = self.shared.dir.join(history_file_name(timeline));
        match std::fs::read(&path) {
            Ok(content) => Ok(Some(content.into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ArchiveError::io("read", &path)(e)),
        }
    }
}

/// Reads for a reader of `timeline` over the extents `timelines` (oldest first).
pub(crate) fn read_chain(
    shared: &Shared,
    timelines: &[TimelineExtent],
    timeline: TimeLineId,
    lsn: Lsn,
    max: usize,
) -> Result<Bytes> {
    let idx = timelines
        .iter()
        .position(|t| t.timeline == timeline)
        .ok_or(ArchiveError::UnknownTimeline(timeline))?;
    let seg = shared.seg;
    let mut out = BytesMut::new();
    let mut pos = lsn;
    while out.len() < max {
        let Some((source, limit)) = source_of(timelines, idx, pos)? else { break };
        let segno = seg.segno(pos);
        let n = (max - out.len()) as u64;
        let n = n.min(limit.bytes_since(pos)).min(seg.end(segno).bytes_since(pos)) as usize;
        let file = open_segment(shared, source, segno, pos)?;
        let at = out.len();
        out.resize(at + n, 0);
        let path = || shared.dir.join(seg.file_name(source, segno));
        file.read_exact_at(&mut out[at..], seg.offset(pos)).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ArchiveError::Corrupt {
                dir: shared.dir.clone(),
                reason: format!("segment {} is shorter than the segment size", path().display()),
            },
            _ => ArchiveError::io("read", path())(e),
        })?;
        pos = Lsn(pos.0 + n as u64);
    }
    Ok(out.freeze())
}

/// Which timeline's files hold `pos` for a reader of `timelines[idx]`, and how far they may be
/// read for it; `None` at or past the requested timeline's durable end.
fn source_of(timelines: &[TimelineExtent], idx: usize, pos: Lsn) -> Result<Option<(TimeLineId, Lsn)>> {
    let requested = &timelines[idx];
    if pos >= requested.end {
        return Ok(None);
    }
    // Walk back through the parents: each serves up to where its child's own copy begins.
    let mut bound = requested.end;
    for t in timelines[..=idx].iter().rev() {
        if pos >= t.start {
            let limit = t.end.min(bound);
            return if pos < limit {
                Ok(Some((t.timeline, limit)))
            } else {
                Err(ArchiveError::Removed { timeline: requested.timeline, lsn: pos })
            };
        }
        bound = t.start;
    }
    Err(ArchiveError::Removed { timeline: requested.timeline, lsn: pos })
}

/// Opens segment `segno` of `timeline` under whichever name it has right now: the writer may
/// rename `.partial` to complete between two attempts, and an open descriptor survives that.
fn open_segment(shared: &Shared, timeline: TimeLineId, segno: SegNo, pos: Lsn) -> Result<File> {
    let complete = shared.dir.join(shared.seg.file_name(timeline, segno));
    let partial = shared.dir.join(shared.seg.partial_name(timeline, segno));
    for path in [&complete, &partial, &complete] {
        match File::open(path) {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ArchiveError::io("open segment", path)(e)),
        }
    }
    // Retention removed it after the extents were read.
    Err(ArchiveError::Removed { timeline, lsn: pos })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(timeline: TimeLineId, start: u64, end: u64) -> TimelineExtent {
        TimelineExtent { timeline, start: Lsn(start), end: Lsn(end) }
    }

    #[test]
    fn source_walks_back_to_the_parent_up_to_the_branch() {
        // Timeline 1 holds 0..250 (its tail past 150 diverged); timeline 2 copied from 100 on.
        let tls = [ext(1, 0, 250), ext(2, 100, 400)];
        assert_eq!(source_of(&tls, 1, Lsn(50)).unwrap(), Some((1, Lsn(100))));
        assert_eq!(source_of(&tls, 1, Lsn(120)).unwrap(), Some((2, Lsn(400))));
        assert_eq!(source_of(&tls, 1, Lsn(400)).unwrap(), None);
        // A reader of timeline 1 gets timeline 1's own bytes, tail included.
        assert_eq!(source_of(&tls, 0, Lsn(200)).unwrap(), Some((1, Lsn(250))));
        assert_eq!(source_of(&tls, 0, Lsn(250)).unwrap(), None);
    }

    #[test]
    fn before_the_oldest_kept_wal_is_removed() {
        let tls = [ext(1, 1000, 2000)];
        assert!(matches!(
            source_of(&tls, 0, Lsn(999)),
            Err(ArchiveError::Removed { timeline: 1, lsn: Lsn(999) })
        ));
    }
}
