//! `ArchiveWriter`: the one writer of an archive directory. This file owns opening (lock,
//! scan, recovery), flushing under the flush policy, completing segments and publishing the
//! flush point; `append.rs`, `retention.rs` and `history.rs` add the rest of its methods.
//!
//! The flushed LSN it reports must never pass durable WAL: it moves only after one fdatasync of
//! the head segment made its WAL and the flush record proving it (in the head's trailer,
//! `flush_record.rs`) durable together. After a failed fsync the
//! writer refuses all further work (PostgreSQL's lesson: a retried fsync can report success for
//! data the kernel already dropped); reopening re-establishes the durable end from disk.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::capacity::Capacity;
use super::config::{ArchiveConfig, FlushPolicy};
use super::dir::Dir;
use super::durability::{Durability, FsDurability};
use super::error::{ArchiveError, Result};
use super::head::Head;
use super::listing::{Listing, SegState};
use super::reader::{ArchiveReader, FlushPoint, Shared};
use super::recovery;
use super::state::{self, ArchiveState};
use crate::wal::lsn::{Lsn, SegNo, TimeLineId, WalSegmentSize};

/// Lock file held (flock) by the open writer; not a WAL name.
pub(crate) const LOCK_FILE: &str = "tandem-wal-archive.lock";
/// How long `open` waits for the writer lock before reporting `ArchiveError::Locked`.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Writes WAL into a segment archive directory. Synchronous, blocking file I/O: run it on a
/// dedicated disk thread or in `spawn_blocking`, fed by a bounded channel from the network task.
///
/// Dropping it without `close` is like a crash: WAL not yet flushed is lost, which is safe
/// because it was never reported as flushed.
#[derive(Debug)]
pub struct ArchiveWriter {
    pub(crate) dir: Dir,
    _lock: File,
    pub(crate) config: ArchiveConfig,
    pub(crate) seg: WalSegmentSize,
    /// Durable state: the current timeline's `end` is the flushed LSN (in memory; on disk the
    /// head segments' flush records and complete segments carry it between state writes).
    pub(crate) state: ArchiveState,
    pub(crate) listing: Listing,
    /// The `.partial` segment being written on the current timeline.
    pub(crate) head: Option<Head>,
    /// End of WAL written on the current timeline (flushed or not).
    pub(crate) written: Lsn,
    pub(crate) unflushed_since: Option<Instant>,
    pub(crate) capacity: Capacity,
    poisoned: bool,
    pub(crate) shared: Arc<Shared>,
    flushed_tx: watch::Sender<FlushPoint>,
}

impl ArchiveWriter {
    /// Opens the archive at `dir` (creating it if needed) and recovers it from a crash.
    pub fn open(dir: impl AsRef<Path>, config: ArchiveConfig) -> Result<Self> {
        Self::open_with(dir, config, Arc::new(FsDurability))
    }

    /// `open` with the sync calls going through `durability` (tests count or fail them).
    pub fn open_with(
        dir: impl AsRef<Path>,
        config: ArchiveConfig,
        durability: Arc<dyn Durability>,
    ) -> Result<Self> {
        let seg = config.validate()?;
        let dir = Dir::open(dir.as_ref(), durability)?;
        let lock = lock(&dir)?;
        dir.make_files_private()?;
        let Recovered { state, listing, head } = recover(&dir, seg)?;
        let point = flush_point(&state);
        let capacity = Capacity::new(config.disk_cap_bytes, seg.bytes(), listing.bytes(seg));
        let shared = Arc::new(Shared {
            dir: dir.path().to_owned(),
            seg,
            timelines: RwLock::new(state.timelines.clone()),
        });
        tracing::info!(
            dir = %dir.path().display(), timeline = point.timeline, flushed = %point.lsn,
            bytes = capacity.bytes(), "WAL archive opened"
        );
        Ok(ArchiveWriter {
            dir,
            _lock: lock,
            config,
            seg,
            state,
            listing,
            head,
            written: point.lsn,
            unflushed_since: None,
            capacity,
            poisoned: false,
            shared,
            flushed_tx: watch::Sender::new(point),
        })
    }

    /// Recovers the archive in place, as `open` would after a crash, keeping every reader:
    /// after a full disk (ENOSPC) left a write half done, a segment half zero-filled or the
    /// writer stopped. WAL not yet flushed is dropped (it was never reported); the flushed LSN
    /// never moves back. Until it succeeds the writer refuses all other work.
    pub fn reopen(&mut self) -> Result<()> {
        self.poisoned = true;
        self.head = None;
        let Recovered { state, listing, head } = recover(&self.dir, self.seg)?;
        let before = self.flush_point();
        let point = flush_point(&state);
        if point.timeline < before.timeline || (point.timeline == before.timeline && point.lsn < before.lsn) {
            return Err(ArchiveError::Corrupt {
                dir: self.dir.path().to_owned(),
                reason: format!(
                    "recovery found WAL up to {} of the {} reported flushed",
                    point.lsn, before.lsn
                ),
            });
        }
        self.capacity = Capacity::new(self.config.disk_cap_bytes, self.seg.bytes(), listing.bytes(self.seg));
        self.state = state;
        self.listing = listing;
        self.head = head;
        self.written = point.lsn;
        self.unflushed_since = None;
        self.poisoned = false;
        self.publish();
        tracing::info!(
            dir = %self.dir.path().display(), timeline = point.timeline, flushed = %point.lsn,
            bytes = self.capacity.bytes(), "WAL archive reopened"
        );
        Ok(())
    }

    /// Whether the archive's filesystem has room for another segment (the free space an
    /// unprivileged writer may use, with a margin for the small files).
    pub fn has_disk_room(&self) -> bool {
        super::capacity::disk_has_room(self.dir.path(), self.seg.bytes())
    }

    /// End of durable WAL on the current timeline: what to report to the primary's slot as
    /// flushed. `Lsn::INVALID` while the archive is empty.
    pub fn flushed_lsn(&self) -> Lsn {
        self.flushed_tx.borrow().lsn
    }

    /// The current timeline and its flushed LSN.
    pub fn flush_point(&self) -> FlushPoint {
        *self.flushed_tx.borrow()
    }

    /// End of WAL written (flushed or not) on the current timeline: the "write" position.
    pub fn written_lsn(&self) -> Lsn {
        self.written
    }

    /// The timeline being written, if any WAL arrived yet.
    pub fn timeline(&self) -> Option<TimeLineId> {
        self.state.current().map(|t| t.timeline)
    }

    /// False once the disk cap leaves no room for another segment: the caller should stop
    /// reading from the primary until retention frees space.
    pub fn accepting(&self) -> bool {
        self.capacity.accepting()
    }

    /// Bytes the archive's files take.
    pub fn size_bytes(&self) -> u64 {
        self.capacity.bytes()
    }

    /// The archive directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration the archive was opened with.
    pub fn config(&self) -> &ArchiveConfig {
        &self.config
    }

    /// A reader for the walsender side.
    pub fn reader(&self) -> ArchiveReader {
        ArchiveReader { shared: self.shared.clone(), flushed: self.flushed_tx.subscribe() }
    }

    /// Makes all written WAL durable and returns the flushed LSN.
    pub fn flush(&mut self) -> Result<Lsn> {
        self.check_poisoned()?;
        let Some(cur) = self.state.current() else { return Ok(Lsn::INVALID) };
        if self.written == cur.end {
            return Ok(self.written);
        }
        let prev = cur.end;
        let Some(head) = self.head.as_mut() else {
            // Every byte is written through the head, and a completed head was flushed first:
            // with no head nothing waits. Report only what is durable.
            tracing::error!(written = %self.written, flushed = %prev, "unflushed WAL without a head segment");
            return Ok(prev);
        };
        let flushed = head.flush(&self.dir, prev, self.written);
        self.poison_on_err(flushed)?;
        if let Some(cur) = self.state.current_mut() {
            cur.end = self.written;
        }
        self.unflushed_since = None;
        self.publish();
        Ok(self.written)
    }

    /// When the group-commit delay runs out for WAL written but not yet flushed; the caller
    /// calls `flush_if_due` then. `None` when nothing waits (or every append flushes).
    pub fn flush_deadline(&self) -> Option<Instant> {
        match self.config.flush {
            FlushPolicy::EveryAppend => None,
            FlushPolicy::Group { max_delay, .. } => self.unflushed_since.map(|t| t + max_delay),
        }
    }

    /// Flushes if the flush policy says it is time; returns the flushed LSN.
    pub fn flush_if_due(&mut self) -> Result<Lsn> {
        self.check_poisoned()?;
        let pending = self.written.bytes_since(self.state.current().map_or(Lsn::INVALID, |c| c.end));
        let due = match self.config.flush {
            FlushPolicy::EveryAppend => pending > 0,
            FlushPolicy::Group { max_bytes, .. } => {
                pending >= max_bytes || self.flush_deadline().is_some_and(|d| d <= Instant::now())
            }
        };
        if due { self.flush() } else { Ok(self.flushed_lsn()) }
    }

    /// Flushes and closes the archive.
    pub fn close(mut self) -> Result<Lsn> {
        let flushed = self.flush()?;
        tracing::info!(dir = %self.dir.path().display(), %flushed, "WAL archive closed");
        Ok(flushed)
    }

    /// The full head segment: flush it (its flush record then holds its end), truncate off the
    /// trailer, give it its final name, make that durable.
    pub(crate) fn complete_head(&mut self) -> Result<()> {
        self.flush()?;
        let Some(head) = self.head.take() else { return Ok(()) };
        let key = (head.timeline, head.segno);
        let done = head.complete(&self.dir);
        self.poison_on_err(done)?;
        self.listing.segments.insert(key, SegState::Complete);
        tracing::debug!(segment = self.seg.file_name(key.0, key.1), "WAL segment complete");
        Ok(())
    }

    /// Creates the `.partial` file of `segno` on `timeline` as the new head.
    pub(crate) fn open_head(&mut self, timeline: TimeLineId, segno: SegNo) -> Result<()> {
        self.head = None;
        // Creating truncates: never let that touch a segment the archive already holds.
        if self.listing.segments.contains_key(&(timeline, segno)) {
            return Err(ArchiveError::Corrupt {
                dir: self.dir.path().to_owned(),
                reason: format!("segment {} already exists", self.seg.file_name(timeline, segno)),
            });
        }
        let head = Head::create(&self.dir, self.seg, self.config.segment_init, timeline, segno)?;
        self.listing.segments.insert((timeline, segno), SegState::Partial);
        self.capacity.grow(self.seg.bytes());
        self.head = Some(head);
        Ok(())
    }

    /// Tells readers about the durable extents and the flush point.
    pub(crate) fn publish(&self) {
        self.shared.publish(&self.state.timelines);
        self.flushed_tx.send_replace(flush_point(&self.state));
    }

    pub(crate) fn check_poisoned(&self) -> Result<()> {
        if self.poisoned { Err(ArchiveError::Poisoned) } else { Ok(()) }
    }

    /// Stops the writer for good if `result` is an error of a durability step.
    pub(crate) fn poison_on_err<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            tracing::error!(dir = %self.dir.path().display(), error = %e, "WAL archive durability step failed; writer stopped");
            self.poisoned = true;
        }
        result
    }
}

/// What recovery makes of the directory: the timelines, the files, the segment being written.
struct Recovered {
    state: ArchiveState,
    listing: Listing,
    head: Option<Head>,
}

/// Reads the state file, scans the directory and repairs it (see `recovery.rs`).
fn recover(dir: &Dir, seg: WalSegmentSize) -> Result<Recovered> {
    let mut listing = Listing::scan(dir, seg)?;
    let corrupt = |reason: String| ArchiveError::Corrupt { dir: dir.path().to_owned(), reason };
    let mut state = match state::load(dir)? {
        Some(s) if s.segment_size != seg.bytes() => {
            return Err(ArchiveError::Config(format!(
                "archive {} holds {}-byte segments, configured {}",
                dir.path().display(),
                s.segment_size,
                seg.bytes()
            )));
        }
        Some(s) => s,
        None if !listing.segments.is_empty() => {
            return Err(corrupt("segment files but no state file; not an archive written by tandem".into()));
        }
        None => {
            let s = ArchiveState::new(seg.bytes());
            state::store(dir, &s)?;
            s
        }
    };
    let probes = recovery::probe(dir, &state, &listing, seg)?;
    let plan = recovery::plan(&state, &listing, &probes, seg).map_err(corrupt)?;
    recovery::apply(dir, &plan, &mut listing, seg)?;
    state.timelines = plan.timelines;
    let head = match state.current() {
        Some(cur)
            if listing.segments.get(&(cur.timeline, seg.segno(cur.end))) == Some(&SegState::Partial) =>
        {
            Some(Head::open(dir, seg, cur.timeline, seg.segno(cur.end))?)
        }
        _ => None,
    };
    Ok(Recovered { state, listing, head })
}

fn flush_point(state: &ArchiveState) -> FlushPoint {
    state.current().map_or_else(FlushPoint::default, |c| FlushPoint { timeline: c.timeline, lsn: c.end })
}

/// Takes the archive's writer lock (released when the process dies, `kill -9` included).
///
/// Retries for `LOCK_WAIT`: a child process being spawned by any thread of this process holds
/// a copy of every descriptor, the lock's included, until its `exec`, so a writer reopened
/// right after a drop can find its own old lock still held for a moment.
fn lock(dir: &Dir) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    crate::durable::lock_exclusive(&path, LOCK_WAIT)
        .map_err(ArchiveError::io("lock", &path))?
        .ok_or_else(|| ArchiveError::Locked { dir: dir.path().to_owned() })
}
