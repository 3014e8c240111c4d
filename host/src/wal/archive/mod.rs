//! The durable WAL segment archive on the standby side of tandem's WAL streaming.
//!
//! WAL received from the primary (XLogData) lands here as PostgreSQL segment files, in a folder
//! that works directly as a `restore_command` source and reads like a `pg_receivewal`
//! directory: complete segments `TTTTTTTTXXXXXXXXYYYYYYYY`, the segment being written as
//! `<walfile>.partial` (preallocated with zeros, plus an 8 KiB trailer past the WAL holding the
//! flush record; completed segments are exactly the segment size), timeline history files
//! `TTTTTTTT.history`.
//! The archive reports a flushed LSN that never passes durable WAL (what the primary's slot is
//! told), serves durable WAL of any timeline it holds to the walsender side, removes what the
//! standby has replayed beyond a reserve, stops accepting at a disk cap, and recovers cleanly
//! from `kill -9` at any point.
//!
//! This module must never talk to the network or to PostgreSQL, and never report WAL as
//! flushed before it is durable on disk.
//!
//! LSNs, timelines, the segment size and file names are the shared [`crate::wal::lsn`].
//!
//! # Layout
//! - `config`: `ArchiveConfig`, `FlushPolicy`, `SegmentInit`, defaults, validation.
//! - `error`: the `ArchiveError` enum.
//! - `durability`: the sync calls behind a trait (real, and counting for tests).
//! - `dir`: the directory handle: atomic whole-file writes, renames, removals, zero-fill.
//! - `state`: the durable state file: the timelines and their extents.
//! - `flush_record`: the flushed LSN and the proof of its WAL, in the head segment's trailer.
//! - `listing`: the typed index of the archive's files.
//! - `recovery`: crash recovery on open (plan, then apply).
//! - `head`: the `.partial` segment being written: one fdatasync per flush, completion.
//! - `capacity`: disk cap accounting and the `accepting` flag.
//! - `writer`: `ArchiveWriter`: open, flush, segment completion, publishing.
//! - `append`: taking WAL in, timeline switches.
//! - `retention`: removing replayed segments.
//! - `history`: storing timeline history files.
//! - `reader`: `ArchiveReader` for the walsender: reads and waits.

#![warn(missing_docs)]

mod append;
mod capacity;
mod config;
mod dir;
mod durability;
mod error;
mod flush_record;
mod head;
mod history;
mod listing;
mod reader;
mod recovery;
mod retention;
mod state;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

pub use capacity::free_bytes;
pub use config::{
    ArchiveConfig, DEFAULT_DISK_CAP_BYTES, DEFAULT_GROUP_MAX_BYTES, DEFAULT_GROUP_MAX_DELAY,
    DEFAULT_RESERVE_SEGMENTS, FlushPolicy, MAX_GROUP_DELAY, SegmentInit,
};
pub use durability::{CountingDurability, Durability, FsDurability, SyncCounts};
pub use error::{ArchiveError, Result};
pub use reader::{ArchiveReader, FlushPoint};
pub use retention::RetentionReport;
pub use state::TimelineExtent;
pub use writer::ArchiveWriter;
