//! Retention: removes segments the standby has replayed, beyond a reserve.
//!
//! Owns which segments go: every segment (complete, or an old timeline's `.partial`) wholly
//! before `segment(min(replayed, flushed)) - reserve`. Must never remove a history file, the
//! segment being written, or anything at or past the replay point's segment; nor remove a
//! file before the state file records the flushed LSN: recovery proves the newest timeline's
//! end from its complete segments onward, so the state must reach past the ones removed.

use super::error::Result;
use super::listing::{Listing, SegState};
use super::state;
use super::writer::ArchiveWriter;
use crate::wal::lsn::{Lsn, SegNo, TimeLineId};

/// What one retention pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// File names removed.
    pub removed: Vec<String>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

impl ArchiveWriter {
    /// Records that the standby PostgreSQL has replayed up to `replayed` and removes segments
    /// no longer needed (keeping `reserve_segments` more). Retention only ever acts on what the
    /// caller reports: before the first call nothing is removed.
    pub fn set_replayed_lsn(&mut self, replayed: Lsn) -> Result<RetentionReport> {
        self.check_poisoned()?;
        let keep_from = replayed.min(self.flushed_lsn());
        let cutoff = self.seg.segno(keep_from).saturating_sub(self.config.reserve_segments);
        let head = self.head.as_ref().map(|h| (h.timeline, h.segno));
        let victims = removable(&self.listing, cutoff, head);
        if victims.is_empty() {
            return Ok(RetentionReport::default());
        }
        // Readers learn the new starts before the files go.
        for (timeline, segno, _) in &victims {
            self.listing.segments.remove(&(*timeline, *segno));
        }
        for extent in &mut self.state.timelines {
            let oldest = self.listing.of_timeline(extent.timeline).next().map(|(segno, _)| segno);
            extent.start = match oldest {
                Some(segno) => extent.start.max(self.seg.start(segno)),
                None => extent.end,
            };
        }
        let stored = state::store(&self.dir, &self.state);
        self.poison_on_err(stored)?;
        self.shared.publish(&self.state.timelines);
        let mut report = RetentionReport::default();
        for (timeline, segno, state) in victims {
            let name = match state {
                SegState::Complete => self.seg.file_name(timeline, segno),
                SegState::Partial => self.seg.partial_name(timeline, segno),
            };
            self.dir.remove(&name)?;
            report.freed_bytes += self.seg.bytes();
            report.removed.push(name);
        }
        self.dir.sync()?;
        self.capacity.shrink(report.freed_bytes);
        tracing::info!(
            %replayed, removed = report.removed.len(), oldest_kept_segno = cutoff,
            "WAL archive retention removed replayed segments"
        );
        Ok(report)
    }
}

/// Segments before `cutoff`, except `head`.
fn removable(
    listing: &Listing,
    cutoff: SegNo,
    head: Option<(TimeLineId, SegNo)>,
) -> Vec<(TimeLineId, SegNo, SegState)> {
    listing
        .segments
        .iter()
        .filter(|&(&key, _)| key.1 < cutoff && Some(key) != head)
        .map(|(&(t, s), &state)| (t, s, state))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_segments_before_the_cutoff_go_and_never_the_head() {
        let mut l = Listing::default();
        for (t, s, st) in [
            (1, 1, SegState::Complete),
            (1, 2, SegState::Partial),
            (2, 2, SegState::Complete),
            (2, 3, SegState::Complete),
            (2, 4, SegState::Partial),
        ] {
            l.segments.insert((t, s), st);
        }
        l.histories.insert(2, 40);
        let got = removable(&l, 3, Some((2, 4)));
        assert_eq!(
            got,
            vec![(1, 1, SegState::Complete), (1, 2, SegState::Partial), (2, 2, SegState::Complete)]
        );
        assert!(removable(&l, 0, None).is_empty());
        assert_eq!(removable(&l, 99, Some((2, 4))).len(), 4);
    }
}
