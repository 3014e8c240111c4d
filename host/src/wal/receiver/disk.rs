//! The receiver's disk thread: owns the `ArchiveWriter`, takes WAL from the network task over a
//! bounded channel, and flushes whenever it has caught up with what arrived (group commit: one
//! fsync covers every message queued meanwhile, as `pg_receivewal --synchronous` does). Readers
//! (the walsender, the network task's status updates) learn the flushed LSN from the archive's
//! own watch.
//!
//! Must never: report anything flushed itself (the archive does, after the fsync), or go on
//! after an archive error (the writer may be poisoned; the network task reconnects and the
//! daemon reopens).

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
    /// A new session starts: appends are taken again (after the cap, every append queued by
    /// the old session is dropped until this arrives, since it would leave a gap).
    Resume(oneshot::Sender<()>),
}

/// The cap flags shared with the network task.
#[derive(Debug, Default)]
struct Cap {
    /// Appends are dropped (the cap was hit in this session).
    dropping: AtomicBool,
    /// The archive has room for another segment.
    room: AtomicBool,
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
        let cap =
            Arc::new(Cap { dropping: AtomicBool::new(false), room: AtomicBool::new(writer.accepting()) });
        let shared = cap.clone();
        let thread = std::thread::Builder::new().name("wal-disk".into()).spawn(move || {
            if let Err(e) = run(writer, rx, &shared) {
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

    /// Whether this session hit the disk cap: its appends are being dropped; end the session.
    pub fn capped(&self) -> bool {
        self.cap.dropping.load(Ordering::Acquire)
    }

    /// Whether the archive has room for another segment (retention frees it).
    pub fn has_room(&self) -> bool {
        self.cap.room.load(Ordering::Acquire)
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

/// The thread: append what comes, flush when caught up.
fn run(mut writer: ArchiveWriter, mut rx: mpsc::Receiver<DiskCmd>, flags: &Cap) -> Result<(), ArchiveError> {
    let mut pending = false;
    loop {
        let cmd = match rx.try_recv() {
            Ok(cmd) => cmd,
            Err(mpsc::error::TryRecvError::Empty) => {
                if pending {
                    writer.flush()?;
                    pending = false;
                }
                match rx.blocking_recv() {
                    Some(cmd) => cmd,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        match cmd {
            // At the cap, WAL queued behind the refused append would leave a gap: dropped, and
            // the receiver restarts from the flushed LSN once there is room.
            DiskCmd::Append { .. } if flags.dropping.load(Ordering::Acquire) => {}
            DiskCmd::Append { timeline, start, data } => {
                match writer.append(timeline, start, &data) {
                    Err(ArchiveError::CapReached { size, cap }) => {
                        writer.flush()?;
                        flags.dropping.store(true, Ordering::Release);
                        flags.room.store(false, Ordering::Release);
                        tracing::error!(
                            size, cap, flushed = %writer.flushed_lsn(),
                            "WAL archive disk cap reached: tandem stops taking WAL and the primary's slot \
                             holds it (max_slot_wal_keep_size is the last safety net) until the standby \
                             replays and retention frees room"
                        );
                    }
                    other => other?,
                }
                pending = writer.written_lsn() != writer.flushed_lsn();
            }
            DiskCmd::History { timeline, content, done } => {
                let stored = writer.write_history(timeline, &content);
                let _ = done.send(stored.as_ref().map(drop).map_err(ToString::to_string));
                stored?;
            }
            DiskCmd::Resume(done) => {
                flags.dropping.store(false, Ordering::Release);
                let _ = done.send(());
            }
            DiskCmd::Replayed(lsn) => {
                let RetentionReport { removed, freed_bytes } = writer.set_replayed_lsn(lsn)?;
                if !removed.is_empty() {
                    tracing::info!(replayed = %lsn, segments = removed.len(), freed_bytes, "WAL archive retention");
                }
                if !flags.room.load(Ordering::Acquire) && writer.accepting() {
                    flags.room.store(true, Ordering::Release);
                    tracing::warn!(size = writer.size_bytes(), "WAL archive has room again: taking WAL");
                }
            }
        }
    }
    writer.close()?;
    Ok(())
}
