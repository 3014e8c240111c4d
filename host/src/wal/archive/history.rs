//! Timeline history files (`TTTTTTTT.history`), as TIMELINE_HISTORY returns them: stored whole
//! and atomically (temp file, fsync, rename, fsync directory, as `pg_receivewal` writes them).
//!
//! Owns storing them. Must never change an existing history file: PostgreSQL never does, so a
//! different content for the same timeline is refused. Retention never removes them.

use std::fs;
use std::io;

use super::error::{ArchiveError, Result};
use super::writer::ArchiveWriter;
use crate::wal::lsn::{TimeLineId, history_file_name};

impl ArchiveWriter {
    /// Stores the history file of `timeline`. Storing the same content again is a no-op.
    pub fn write_history(&mut self, timeline: TimeLineId, content: &[u8]) -> Result<()> {
        self.check_poisoned()?;
        if timeline == 0 {
            return Err(ArchiveError::InvalidTimeline);
        }
        let name = history_file_name(timeline);
        let path = self.dir.join(&name);
        match fs::read(&path) {
            Ok(existing) if existing == content => return Ok(()),
            Ok(_) => return Err(ArchiveError::HistoryMismatch(timeline)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ArchiveError::io("read", &path)(e)),
        }
        self.dir.write_atomic(&name, content)?;
        let len = content.len() as u64;
        self.listing.histories.insert(timeline, len);
        self.capacity.grow(len);
        tracing::info!(timeline, file = name, "WAL archive stored timeline history");
        Ok(())
    }
}
