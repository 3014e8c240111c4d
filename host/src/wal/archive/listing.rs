//! The archive's files by kind: a typed index of the segments and history files in the
//! directory, built by one scan and kept current by the writer as it creates, completes and
//! removes files.
//!
//! Owns the scan and the size arithmetic. Must never change the directory.

use std::collections::BTreeMap;
use std::fs;

use super::dir::{Dir, TEMP_SUFFIX};
use super::error::{ArchiveError, Result};
use super::state::STATE_FILE;
use crate::wal::lsn::{SegNo, TimeLineId, WalFileName, WalSegmentSize};

/// Where a segment stands on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegState {
    Partial,
    Complete,
}

/// The archive's files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    pub(crate) segments: BTreeMap<(TimeLineId, SegNo), SegState>,
    /// History files and their sizes.
    pub(crate) histories: BTreeMap<TimeLineId, u64>,
    /// Left-over temp files of interrupted whole-file writes.
    pub(crate) temp: Vec<String>,
}

impl Listing {
    /// Scans `dir`. Files that are not the archive's are left alone and logged.
    pub(crate) fn scan(dir: &Dir, seg: WalSegmentSize) -> Result<Self> {
        let mut listing = Listing::default();
        let entries = fs::read_dir(dir.path()).map_err(ArchiveError::io("list", dir.path()))?;
        for entry in entries {
            let entry = entry.map_err(ArchiveError::io("list", dir.path()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!(name = ?entry.file_name(), "ignoring non-UTF-8 file in WAL archive");
                continue;
            };
            match seg.parse_name(name) {
                Some(WalFileName::Segment { timeline, segno, partial }) => {
                    let state = if partial { SegState::Partial } else { SegState::Complete };
                    if listing.segments.insert((timeline, segno), state).is_some() {
                        return Err(ArchiveError::Corrupt {
                            dir: dir.path().to_owned(),
                            reason: format!(
                                "segment {} is there both complete and partial",
                                seg.file_name(timeline, segno)
                            ),
                        });
                    }
                }
                Some(WalFileName::History { timeline }) => {
                    let len = entry.metadata().map_err(ArchiveError::io("stat", dir.join(name)))?.len();
                    listing.histories.insert(timeline, len);
                }
                None if name.ends_with(TEMP_SUFFIX) => listing.temp.push(name.to_owned()),
                None if [STATE_FILE, super::writer::LOCK_FILE].contains(&name) => {}
                None => {
                    tracing::warn!(name, dir = %dir.path().display(), "ignoring unknown file in WAL archive")
                }
            }
        }
        Ok(listing)
    }

    /// Segment files of `timeline`, oldest first.
    pub(crate) fn of_timeline(&self, timeline: TimeLineId) -> impl Iterator<Item = (SegNo, SegState)> + '_ {
        self.segments
            .range((timeline, 0)..=(timeline, SegNo::MAX))
            .map(|(&(_, segno), &state)| (segno, state))
    }

    /// Bytes the archive's files take (segments count at full size: they are preallocated; a
    /// head `.partial`'s 8 KiB flush-record trailer is left out, one per timeline at most).
    pub(crate) fn bytes(&self, seg: WalSegmentSize) -> u64 {
        let segments = self.segments.len() as u64 * seg.bytes();
        segments + self.histories.values().sum::<u64>()
    }
}
