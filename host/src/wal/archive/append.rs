//! Taking WAL in: `ArchiveWriter::append` for XLogData as it arrives, and the timeline switch
//! when WAL of a newer timeline starts.
//!
//! Owns the acceptance rules: WAL must continue the archive (no gap); bytes already durable may
//! be sent again (a reconnect restarts from an earlier point) but only with the same content;
//! bytes written and not yet flushed are replaced by what comes now; a new segment is refused
//! past the disk cap. Must never rewrite a durable byte, nor let a new timeline's files replace
//! an old timeline's (the old `.partial` stays, as with `pg_receivewal`).

use super::error::{ArchiveError, Result};
use super::reader::read_chain;
use super::state::{self, TimelineExtent};
use super::writer::ArchiveWriter;
use crate::wal::lsn::{Lsn, TimeLineId};

/// Durable bytes restated by an append are compared in chunks of this size.
const COMPARE_CHUNK: usize = 1024 * 1024;

impl ArchiveWriter {
    /// Takes `data`, the WAL of `timeline` from `start` on (an XLogData message), and flushes it
    /// if the flush policy says so. `start` may be anywhere up to the written end; a newer
    /// timeline must start within the current timeline's WAL.
    pub fn append(&mut self, timeline: TimeLineId, start: Lsn, data: &[u8]) -> Result<()> {
        self.check_poisoned()?;
        if timeline == 0 {
            return Err(ArchiveError::InvalidTimeline);
        }
        let len = data.len() as u64;
        let end = start.checked_add(len).ok_or(ArchiveError::LsnOverflow { start, len })?;
        match self.timeline() {
            None => self.begin_first_timeline(timeline, start)?,
            Some(current) if timeline < current => {
                return Err(ArchiveError::TimelineRegression { current, got: timeline });
            }
            Some(current) if timeline > current => self.switch_timeline(timeline, start)?,
            Some(_) => {}
        }
        let from = self.check_restated(timeline, start, data)?;
        if end <= from {
            return Ok(());
        }
        self.write_from(timeline, from, &data[from.bytes_since(start) as usize..])?;
        match self.config.flush {
            super::config::FlushPolicy::EveryAppend => self.flush().map(drop),
            super::config::FlushPolicy::Group { .. } => self.flush_if_due().map(drop),
        }
    }

    /// Checks `data` against the archive; returns where its new bytes begin.
    fn check_restated(&self, timeline: TimeLineId, start: Lsn, data: &[u8]) -> Result<Lsn> {
        let Some(cur) = self.state.current() else { return Ok(start) };
        if start > self.written {
            return Err(ArchiveError::Gap { timeline, expected: self.written, got: start });
        }
        // Durable bytes sent again: they must not change. Bytes the archive no longer keeps
        // (before `cur.start`) cannot be compared and are skipped.
        let end = Lsn(start.0 + data.len() as u64);
        let mut pos = start.max(cur.start);
        let stop = end.min(cur.end);
        while pos < stop {
            let n = (stop.bytes_since(pos) as usize).min(COMPARE_CHUNK);
            let have = read_chain(&self.shared, &self.state.timelines, timeline, pos, n)?;
            let sent = &data[pos.bytes_since(start) as usize..][..n];
            if let Some(i) = have.iter().zip(sent).position(|(a, b)| a != b) {
                return Err(ArchiveError::Mismatch { timeline, lsn: Lsn(pos.0 + i as u64) });
            }
            if have.len() < n {
                return Err(ArchiveError::Removed { timeline, lsn: Lsn(pos.0 + have.len() as u64) });
            }
            pos = Lsn(pos.0 + n as u64);
        }
        Ok(start.max(cur.end))
    }

    /// Writes `bytes` at `from` (at most the written end: unflushed bytes from there on are
    /// replaced), opening and completing segments on the way.
    fn write_from(&mut self, timeline: TimeLineId, from: Lsn, bytes: &[u8]) -> Result<()> {
        let seg = self.seg;
        let last = seg.segno(Lsn(from.0 + bytes.len() as u64 - 1));
        let first_new = match &self.head {
            Some(h) if h.segno == seg.segno(from) => seg.segno(from) + 1,
            _ => seg.segno(from),
        };
        if !self.capacity.fits((last + 1).saturating_sub(first_new)) {
            return Err(ArchiveError::CapReached {
                size: self.capacity.bytes(),
                cap: self.capacity.cap().unwrap_or(0),
            });
        }
        self.written = from;
        let mut pos = from;
        let mut rest = bytes;
        while !rest.is_empty() {
            let segno = seg.segno(pos);
            if self.head.as_ref().is_none_or(|h| h.segno != segno) {
                self.open_head(timeline, segno)?;
            }
            let offset = seg.offset(pos);
            let n = rest.len().min((seg.bytes() - offset) as usize);
            if let Some(head) = &mut self.head {
                head.write_at(offset, &rest[..n])?;
            }
            pos = Lsn(pos.0 + n as u64);
            rest = &rest[n..];
            self.written = pos;
            self.unflushed_since.get_or_insert_with(std::time::Instant::now);
            if seg.offset(pos) == 0 {
                self.complete_head()?;
            }
        }
        Ok(())
    }

    /// The archive's first WAL: records the timeline, starting (empty) at `start`.
    fn begin_first_timeline(&mut self, timeline: TimeLineId, start: Lsn) -> Result<()> {
        if self.seg.offset(start) != 0 {
            tracing::warn!(%start, "WAL archive starts mid-segment: its first segment is not restorable by itself");
        }
        self.record_timeline(TimelineExtent { timeline, start, end: start })
    }

    /// WAL of a newer timeline arrives from `start`: the current timeline is flushed and closed
    /// (its `.partial` keeps its name), and the new timeline's first segment gets the current
    /// timeline's bytes before `start`, as PostgreSQL's own copy of that segment has them.
    fn switch_timeline(&mut self, timeline: TimeLineId, start: Lsn) -> Result<()> {
        self.flush()?;
        let Some(&parent) = self.state.current() else { return Ok(()) };
        if start < parent.start || start > parent.end {
            return Err(ArchiveError::TimelineStart {
                timeline,
                start,
                parent: parent.timeline,
                parent_start: parent.start,
                parent_end: parent.end,
            });
        }
        let segno = self.seg.segno(start);
        let prefix_start = self.seg.start(segno).max(parent.start);
        if prefix_start < start && !self.capacity.fits(1) {
            return Err(ArchiveError::CapReached {
                size: self.capacity.bytes(),
                cap: self.capacity.cap().unwrap_or(0),
            });
        }
        self.head = None;
        if prefix_start < start {
            let len = start.bytes_since(prefix_start) as usize;
            let prefix = read_chain(&self.shared, &self.state.timelines, parent.timeline, prefix_start, len)?;
            if prefix.len() != len {
                return Err(ArchiveError::Removed {
                    timeline: parent.timeline,
                    lsn: Lsn(prefix_start.0 + prefix.len() as u64),
                });
            }
            self.open_head(timeline, segno)?;
            if let Some(head) = &mut self.head {
                head.write_at(self.seg.offset(prefix_start), &prefix)?;
                let synced = head.sync(&self.dir);
                self.poison_on_err(synced)?;
            }
        }
        tracing::info!(
            from = parent.timeline, to = timeline, %start, parent_end = %parent.end,
            "WAL archive switching timeline; the old timeline's partial segment is kept"
        );
        self.record_timeline(TimelineExtent { timeline, start: prefix_start, end: start })
    }

    /// Makes `extent` the current timeline, durably, and tells readers.
    fn record_timeline(&mut self, extent: TimelineExtent) -> Result<()> {
        let mut next = self.state.clone();
        next.timelines.push(extent);
        let stored = state::store(&self.dir, &next);
        self.poison_on_err(stored)?;
        self.state = next;
        self.written = extent.end;
        self.unflushed_since = None;
        self.publish();
        Ok(())
    }
}
