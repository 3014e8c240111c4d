//! The receiver's disk thread: owns the `ArchiveWriter`, takes WAL from the network task over a
//! bounded channel, and flushes whenever it has caught up with what arrived (group commit: one
//! fsync covers every message queued meanwhile, as `pg_receivewal --synchronous` does). Readers
//! (the walsender, the network task's status updates) learn the flushed LSN from the archive's
//! own watch.
//!
//! A full disk (ENOSPC, EDQUOT) is treated like the archive's disk cap: appends are dropped
//! from the failed one on (the receiver ends its session; the primary's slot holds the WAL),
//! the archive is reopened in place (recovery drops what the cut-short write left, a segment
//! half zero-filled included), and WAL is taken again once the filesystem has room for a
//! segment, which the receiver asks with [`Disk::retry`] (with backoff). No restart, no gap.
//!
//! Must never: report anything flushed itself (the archive does, after the fsync), or go on
//! after any other archive error (the writer may be poisoned; the network task stops and the
//! status says why).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::wal::archive::{ArchiveError, ArchiveWriter, RetentionReport};
use crate::wal::lsn::{Lsn, TimeLineId};

/// Messages queued for the disk thread (each XLogData is at most 128 KiB from PostgreSQL).
pub const QUEUE: usize = 256;

/// Work for the disk thread.
#[derive(Debug)]
pub enum DiskCmd {
    /// WAL of `timeline` from `start`.
    Append { timeline: TimeLineId, start: Lsn, data: Bytes },
    /// A timeline history file; answered once it is durable.
    History { timeline: TimeLineId, content: Bytes, done: oneshot::Sender<Result<(), String>> },
    /// The standby PostgreSQL replayed up to here: retention may remove older segments.
    Replayed(Lsn),
    /// A new session starts: appends are taken again (after the cap or a full disk, every
    /// append queued by the old session is dropped until this arrives, since it would leave a
    /// gap).
    Resume(oneshot::Sender<()>),
    /// After a full disk: recover the archive if a write was cut short, and answer whether WAL
    /// can be taken again (the filesystem has room for a segment, and the cap too).
    Retry(oneshot::Sender<bool>),
}

/// The flags shared with the network task.
#[derive(Debug, Default)]
struct Cap {
    /// Appends are dropped (the cap was hit, or the disk filled up, in this session).
    dropping: AtomicBool,
    /// The archive has room for another segment under its cap (retention frees it).
    room: AtomicBool,
    /// Why the archive's disk is full, while it is (the filesystem said ENOSPC or EDQUOT).
    full: Mutex<Option<String>>,
}

impl Cap {
    fn full(&self) -> Option<String> {
        self.full.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_full(&self, why: Option<String>) {
        *self.full.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }
}

/// The handle the network task holds.
#[derive(Debug)]
pub struct Disk {
    tx: mpsc::Sender<DiskCmd>,
    error: Arc<Mutex<Option<String>>>,
    cap: Arc<Cap>,
    thread: Option<JoinHandle<()>>,
}

impl Disk {
    /// Starts the thread over `writer`.
    pub fn spawn(writer: ArchiveWriter) -> std::io::Result<Disk> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let error = Arc::new(Mutex::new(None));
        let err = error.clone();
        let cap = Arc::new(Cap { room: AtomicBool::new(writer.accepting()), ..Cap::default() });
        let shared = cap.clone();
        let thread = std::thread::Builder::new().name("wal-disk".into()).spawn(move || {
            let thread = DiskThread { writer, flags: &shared, reopen: false, replayed: Lsn::INVALID };
            if let Err(e) = thread.run(rx) {
                tracing::error!(error = %e, "WAL archive writer stopped");
                *err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        })?;
        Ok(Disk { tx, error, cap, thread: Some(thread) })
    }

    /// Queues `cmd`; waits while the queue is full (the primary then waits on us: back
    /// pressure). Fails once the thread has stopped, with its error.
    pub async fn send(&self, cmd: DiskCmd) -> Result<(), String> {
        self.tx.send(cmd).await.map_err(|_| self.failure())
    }

    /// Stores a history file durably.
    pub async fn history(&self, timeline: TimeLineId, content: Bytes) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.send(DiskCmd::History { timeline, content, done }).await?;
        wait.await.map_err(|_| self.failure())?
    }

    /// Why the thread stopped, if it did.
    pub fn failure(&self) -> String {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "the WAL disk thread stopped".into())
    }

    /// Whether this session hit the disk cap or a full disk: its appends are being dropped;
    /// end the session.
    pub fn capped(&self) -> bool {
        self.cap.dropping.load(Ordering::Acquire)
    }

    /// Whether the archive has room for another segment under its cap (retention frees it).
    pub fn has_room(&self) -> bool {
        self.cap.room.load(Ordering::Acquire)
    }

    /// Why the archive's disk is full, while it is.
    pub fn full(&self) -> Option<String> {
        self.cap.full()
    }

    /// After a full disk: whether WAL can be taken again (see [`DiskCmd::Retry`]).
    pub async fn retry(&self) -> Result<bool, String> {
        let (done, wait) = oneshot::channel();
        self.send(DiskCmd::Retry(done)).await?;
        wait.await.map_err(|_| self.failure())
    }

    /// Starts a session: waits until every append of the previous one is handled (dropped,
    /// if it hit the cap), then takes appends again.
    pub async fn resume(&self) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.send(DiskCmd::Resume(done)).await?;
        wait.await.map_err(|_| self.failure())
    }

    /// Whether the thread is still taking work.
    pub fn alive(&self) -> bool {
        !self.tx.is_closed()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Closing the only sender lets the thread drain, flush and close the archive.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed));
        if let Some(thread) = self.thread.take() {
            // Bounded: the queue is drained and flushed, nothing else waits.
            let _ = thread.join();
        }
    }
}

/// The thread's state.
struct DiskThread<'a> {
    writer: ArchiveWriter,
    flags: &'a Cap,
    /// A write failed on a full disk: the writer must be reopened before anything else.
    reopen: bool,
    /// The standby's replay position as last reported (retention runs on it after a reopen).
    replayed: Lsn,
}

impl DiskThread<'_> {
    /// Append what comes, flush when caught up. A full disk is not an error: it stops the
    /// taking of WAL until there is room again; any other archive error stops the thread.
    fn run(mut self, mut rx: mpsc::Receiver<DiskCmd>) -> Result<(), ArchiveError> {
        let mut pending = false;
        loop {
            let cmd = match rx.try_recv() {
                Ok(cmd) => cmd,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Never while a reopen is due: the writer refuses all else then.
                    if std::mem::take(&mut pending) && !self.reopen {
                        let flushed = self.writer.flush().map(drop);
                        self.full_disk_is_no_error(flushed)?;
                    }
                    match rx.blocking_recv() {
                        Some(cmd) => cmd,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            let done = self.handle(cmd);
            self.full_disk_is_no_error(done)?;
            pending = !self.reopen && self.writer.written_lsn() != self.writer.flushed_lsn();
        }
        if !self.reopen {
            self.writer.close()?;
        }
        Ok(())
    }

    fn handle(&mut self, cmd: DiskCmd) -> Result<(), ArchiveError> {
        match cmd {
            // At the cap or on a full disk, WAL queued behind the refused append would leave a
            // gap: dropped, and the receiver restarts from the flushed LSN once there is room.
            DiskCmd::Append { .. } if self.flags.dropping.load(Ordering::Acquire) => {}
            DiskCmd::Append { timeline, start, data } => match self.writer.append(timeline, start, &data) {
                Err(ArchiveError::CapReached { size, cap }) => {
                    self.writer.flush()?;
                    self.flags.dropping.store(true, Ordering::Release);
                    self.flags.room.store(false, Ordering::Release);
                    tracing::error!(
                        size, cap, flushed = %self.writer.flushed_lsn(),
                        "WAL archive disk cap reached: tandem stops taking WAL and the primary's slot \
                         holds it (max_slot_wal_keep_size is the last safety net) until the standby \
                         replays and retention frees room"
                    );
                }
                other => other?,
            },
            DiskCmd::History { done, .. } if self.flags.full().is_some() => {
                let _ = done.send(Err("the WAL archive's disk is full".into()));
            }
            DiskCmd::History { timeline, content, done } => {
                let stored = self.writer.write_history(timeline, &content);
                let _ = done.send(stored.as_ref().map(drop).map_err(ToString::to_string));
                stored?;
            }
            DiskCmd::Resume(done) => {
                if self.flags.full().is_none() {
                    self.flags.dropping.store(false, Ordering::Release);
                }
                let _ = done.send(());
            }
            DiskCmd::Replayed(lsn) => {
                self.replayed = lsn;
                self.retain()?;
            }
            DiskCmd::Retry(done) => {
                self.retain()?;
                if !self.reopen && self.flags.full().is_some() && self.writer.has_disk_room() {
                    self.flags.set_full(None);
                    self.flags.room.store(self.writer.accepting(), Ordering::Release);
                    tracing::warn!(free_bytes = ?free(&self.writer), "WAL archive disk has room again: taking WAL");
                }
                let _ = done.send(self.flags.full().is_none() && self.flags.room.load(Ordering::Acquire));
            }
        }
        Ok(())
    }

    /// Retention for the last replay position (reopening the archive first if a full disk
    /// cut a write short: removing what the standby replayed is how room comes back).
    fn retain(&mut self) -> Result<(), ArchiveError> {
        if self.reopen {
            match self.writer.reopen() {
                Ok(()) => self.reopen = false,
                Err(e) if e.is_disk_full() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if !self.replayed.is_valid() {
            return Ok(());
        }
        let RetentionReport { removed, freed_bytes } = self.writer.set_replayed_lsn(self.replayed)?;
        if !removed.is_empty() {
            tracing::info!(replayed = %self.replayed, segments = removed.len(), freed_bytes, "WAL archive retention");
        }
        let full = self.flags.full().is_some();
        if !full && !self.flags.room.load(Ordering::Acquire) && self.writer.accepting() {
            self.flags.room.store(true, Ordering::Release);
            tracing::warn!(size = self.writer.size_bytes(), "WAL archive has room again: taking WAL");
        }
        Ok(())
    }

    /// A full disk turns into the full state (see the module doc); other errors pass.
    fn full_disk_is_no_error(&mut self, result: Result<(), ArchiveError>) -> Result<(), ArchiveError> {
        let Err(e) = result else { return Ok(()) };
        if !e.is_disk_full() {
            return Err(e);
        }
        self.flags.dropping.store(true, Ordering::Release);
        self.flags.room.store(false, Ordering::Release);
        self.flags.set_full(Some(e.to_string()));
        tracing::error!(
            error = %e, flushed = %self.writer.flushed_lsn(),
            "WAL ARCHIVE DISK FULL: tandem stops taking WAL and the primary's slot holds it \
             (max_slot_wal_keep_size is the last safety net) until there is room again"
        );
        // At once: a segment whose creation the full disk cut short holds nothing durable and
        // goes, which gives its space back.
        self.reopen = true;
        self.retain()
    }
}

/// The archive filesystem's free bytes, for the log.
fn free(writer: &ArchiveWriter) -> Option<u64> {
    crate::wal::archive::free_bytes(writer.dir()).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wal::archive::ArchiveConfig;
    use crate::wal::archive::tests::common::{MIB, read_range, wal};
    use crate::wal::archive::tests::tmpfs::Tmpfs;

    async fn append(disk: &Disk, from: u64, to: u64) {
        let mut at = from;
        while at < to {
            let n = (to - at).min(100_000);
            let data = Bytes::from(wal(Lsn(at), n as usize));
            disk.send(DiskCmd::Append { timeline: 1, start: Lsn(at), data }).await.unwrap();
            at += n;
        }
    }

    async fn wait(what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Regression: ENOSPC zero-filling a new segment stopped the disk thread for good.
    #[tokio::test]
    async fn a_full_disk_stops_taking_wal_until_a_retry_finds_room() {
        let Some(fs) = Tmpfs::mount(8 * MIB) else { return };
        let writer = ArchiveWriter::open(fs.path().join("archive"), ArchiveConfig::for_test()).unwrap();
        let reader = writer.reader();
        let disk = Disk::spawn(writer).unwrap();
        append(&disk, 0, MIB + MIB / 2).await;
        wait("the first WAL flushed", || reader.flush_point().lsn == Lsn(MIB + MIB / 2)).await;

        fs.fill_leaving(MIB / 2);
        append(&disk, MIB + MIB / 2, 3 * MIB).await;
        wait("the full disk noticed", || disk.full().is_some()).await;
        assert!(disk.full().unwrap().contains("No space left on device"), "{:?}", disk.full());
        assert!(disk.alive() && disk.capped() && !disk.has_room());
        assert_eq!(reader.flush_point().lsn, Lsn(2 * MIB), "WAL up to the failed segment is durable");
        assert!(!disk.retry().await.unwrap(), "no room yet");
        disk.resume().await.unwrap();
        assert!(disk.capped(), "a new session takes no WAL while the disk is full");

        fs.free_filler();
        assert!(disk.retry().await.unwrap(), "room again");
        disk.resume().await.unwrap();
        assert!(!disk.capped() && disk.full().is_none());
        let from = reader.flush_point().lsn.0;
        append(&disk, from, 4 * MIB).await;
        wait("the rest flushed", || reader.flush_point().lsn == Lsn(4 * MIB)).await;
        assert_eq!(read_range(&reader, 1, Lsn(0), Lsn(4 * MIB)), wal(Lsn(0), 4 * MIB as usize));
    }
}
