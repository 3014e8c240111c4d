//! The archive's error type: one enum a caller can match on. Owns no behaviour.

use std::io;
use std::path::PathBuf;

use crate::wal::lsn::{Lsn, TimeLineId};

/// Everything the archive can refuse or fail at.
// Fields are named for what they hold and spelled out in each variant's message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid WAL archive config: {0}")]
    Config(String),
    /// Another writer holds the archive.
    #[error("WAL archive {} is in use by another process", dir.display())]
    Locked { dir: PathBuf },
    /// The folder does not look like an archive this code wrote, or lost a file it needs.
    #[error("corrupt WAL archive {}: {reason}", dir.display())]
    Corrupt { dir: PathBuf, reason: String },
    /// Timeline 0 (PostgreSQL's invalid timeline) was given.
    #[error("timeline 0 is not a valid timeline")]
    InvalidTimeline,
    /// WAL would not follow on from the archive's end.
    #[error("WAL gap on timeline {timeline}: archive ends at {expected}, data starts at {got}")]
    Gap { timeline: TimeLineId, expected: Lsn, got: Lsn },
    /// Bytes already durable were sent again with different content.
    #[error("WAL at {lsn} on timeline {timeline} differs from the durable copy")]
    Mismatch { timeline: TimeLineId, lsn: Lsn },
    /// `start + len` runs past the end of the LSN space.
    #[error("WAL of {len} bytes at {start} runs past the end of the LSN space")]
    LsnOverflow { start: Lsn, len: u64 },
    /// WAL for a timeline older than the archive's current one.
    #[error("timeline {got} is older than the archive's current timeline {current}")]
    TimelineRegression { current: TimeLineId, got: TimeLineId },
    /// A new timeline must branch off inside the WAL the archive holds for the current one.
    #[error(
        "timeline {timeline} cannot start at {start}: the archive holds {parent_start}..{parent_end} \
         of timeline {parent}"
    )]
    TimelineStart { timeline: TimeLineId, start: Lsn, parent: TimeLineId, parent_start: Lsn, parent_end: Lsn },
    /// Taking more WAL would need a new segment past the configured disk cap.
    #[error("WAL archive disk cap reached: {size} of {cap} bytes used")]
    CapReached { size: u64, cap: u64 },
    /// An earlier fsync failed; what the kernel kept is unknown, so the writer stops.
    #[error("WAL archive writer stopped after an fsync failure; reopen the archive")]
    Poisoned,
    /// The timeline is not in the archive.
    #[error("timeline {0} is not in the WAL archive")]
    UnknownTimeline(TimeLineId),
    /// The WAL asked for is older than what the archive keeps.
    #[error("WAL at {lsn} on timeline {timeline} is not in the archive (removed or never received)")]
    Removed { timeline: TimeLineId, lsn: Lsn },
    /// A history file for the timeline exists with other content (they never change).
    #[error("history file for timeline {0} already exists with different content")]
    HistoryMismatch(TimeLineId),
}

impl ArchiveError {
    /// Whether the filesystem ran out of space or of the user's quota (ENOSPC, EDQUOT): no
    /// fault of the archive's; once there is room again `ArchiveWriter::reopen` recovers it.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, ArchiveError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)))
    }

    /// A `map_err` adapter naming the operation and the path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { op, path, source }
    }
}

/// The archive's result type.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
