//! The primary's file workers: one thread per core takes files from a shared queue, reads
//! them (never through a symlink at the file's own name), hashes and compresses them, and
//! hands finished frames to the connection's writer. Small files are packed many to a frame;
//! large ones go in chunks (holes as `Hole`s, never as zeros); files the standby has a
//! signature for go as delta ops, their holes announced first.
//!
//! Must never: send content under a stat it was not read under. A file whose size or mtime
//! moves while it is read is dropped from this pass (`FileAbort`, or left out of its batch)
//! and counted in `changed`, so the next pass sends it.

use std::collections::VecDeque;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::mpsc::Sender;
use tracing::debug;

use crate::peer::Frame;
use crate::sync::delta::{DeltaOp, delta_each};
use crate::sync::entry::{Entry, MODE_BITS, NO_ID, mtime_ns};
use crate::sync::error::SyncError;
use crate::sync::names::RelName;
use crate::sync::protocol::{
    self, CHUNK_BYTES, FILES_BATCH_BYTES, ProtocolError, SMALL_FILE_BYTES, SmallFile, SyncMsg, entry_bytes,
};
use crate::sync::signature::{Signature, read_full};
use crate::sync::sparse::{hash_zeros, holes, looks_sparse};

/// Delta ops per message.
const OPS_BATCH: usize = 256;
/// Files per packed batch at most.
const FILES_BATCH_COUNT: usize = 4_096;

/// Bytes of one file [`prefetch`] asks the kernel to read ahead at most.
const PREFETCH_MAX: i64 = 256 << 20;

/// Asks the kernel to start reading `path` below `root` into the page cache, while the
/// standby computes its signature: the delta then reads from memory instead of waiting on the
/// disk. A hint only (never through a symlink at the file's name); failures are ignored.
pub(super) fn prefetch(root: &Path, path: &RelName) {
    let full = root.join(path.to_path());
    let opened = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(full);
    if let Ok(file) = opened {
        // SAFETY: the descriptor is valid for the call; WILLNEED only schedules reads.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, PREFETCH_MAX, libc::POSIX_FADV_WILLNEED) };
    }
}

/// One file to send.
pub(super) enum Job {
    Whole(Entry),
    Delta { entry: Entry, sig: Signature },
}

/// What the workers did, summed.
#[derive(Debug, Default)]
pub(super) struct WorkerStats {
    pub whole: u64,
    pub delta: u64,
    pub content_bytes: u64,
    /// Files that changed or went while being read: left for the next pass.
    pub changed: Vec<RelName>,
    /// Files that could not be opened or read (permission, I/O error), and why: reported,
    /// left as the standby has them, tried again next pass.
    pub unreadable: Vec<(RelName, String)>,
    /// The content hash of every file sent (whole or as a delta), for the journal's record of
    /// what the standby holds: a later change of its metadata alone then sends no content.
    pub hashes: Vec<(RelName, [u8; 32])>,
}

/// The pool: jobs in, frames out.
pub(super) struct Workers {
    queue: Arc<Queue>,
    threads: Vec<std::thread::JoinHandle<WorkerStats>>,
}

/// The workers' job queue: deltas go to the front (a standby is waiting on them, and they
/// are few and long), whole files to the back.
#[derive(Default)]
struct Queue {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Job>, bool)> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: Job) {
        let mut q = self.lock();
        match job {
            Job::Delta { .. } => q.0.push_front(job),
            Job::Whole(_) => q.0.push_back(job),
        }
        drop(q);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().1 = true;
        self.ready.notify_all();
    }

    /// The next job; `None` once the queue is closed and empty.
    fn pop(&self) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if let Some(job) = q.0.pop_front() {
                return Some(job);
            }
            if q.1 {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What became of a small file.
enum Small {
    /// Read whole, to go packed with others.
    Read(SmallFile),
    /// It has holes: it goes on its own, in chunks and holes.
    Sparse,
    /// Gone, changed or unreadable: counted in `changed` or `unreadable`, left for the next pass.
    Skipped,
}

/// Why a worker stopped early: the writer is gone (the pass failed elsewhere).
#[derive(Debug)]
struct WriterGone;

impl Workers {
    /// Starts `n` workers reading below `root`, sending frames to `frames`.
    pub fn start(n: usize, root: &Path, frames: Sender<Frame>) -> Workers {
        let queue = Arc::new(Queue::default());
        let ids = Arc::new(AtomicU32::new(1));
        let threads = (0..n.max(1))
            .map(|i| {
                let (q, frames, ids, root) = (queue.clone(), frames.clone(), ids.clone(), root.to_path_buf());
                std::thread::Builder::new()
                    .name(format!("sync-send-{i}"))
                    .spawn(move || Worker { root, frames, ids, stats: WorkerStats::default() }.run(&q))
                    .expect("spawning a sync worker thread")
            })
            .collect();
        Workers { queue, threads }
    }

    pub fn push(&self, job: Job) {
        self.queue.push(job);
    }

    /// No more jobs: waits for the workers to drain the queue and returns their sums.
    pub async fn finish(mut self) -> Result<WorkerStats, String> {
        self.queue.close();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            let mut sum = WorkerStats::default();
            for t in threads {
                let s = t.join().map_err(|_| "a sync worker panicked".to_string())?;
                sum.whole += s.whole;
                sum.delta += s.delta;
                sum.content_bytes += s.content_bytes;
                sum.changed.extend(s.changed);
                sum.unreadable.extend(s.unreadable);
                sum.hashes.extend(s.hashes);
            }
            Ok(sum)
        });
        joined.await.map_err(|e| e.to_string())?
    }
}

impl Drop for Workers {
    /// A pass that fails midway drops its pool: the workers stop after their current job.
    fn drop(&mut self) {
        self.queue.lock().0.clear();
        self.queue.close();
    }
}

struct Worker {
    root: PathBuf,
    frames: Sender<Frame>,
    ids: Arc<AtomicU32>,
    stats: WorkerStats,
}

impl Worker {
    fn run(mut self, queue: &Queue) -> WorkerStats {
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        while let Some(job) = queue.pop() {
            let done = match job {
                Job::Whole(e) if e.size < SMALL_FILE_BYTES => match self.read_small(&e) {
                    Small::Read(file) => {
                        // Content plus what an entry costs (path, stat, hash, attributes), so a
                        // batch of many empty files stays far below what the standby accepts.
                        batch_bytes += file.data.len() + entry_bytes(&file.entry);
                        batch.push(file);
                        if batch_bytes >= FILES_BATCH_BYTES || batch.len() >= FILES_BATCH_COUNT {
                            batch_bytes = 0;
                            self.flush(&mut batch)
                        } else {
                            Ok(())
                        }
                    }
                    Small::Skipped => Ok(()),
                    // Its holes go as holes, which only the chunked form carries.
                    Small::Sparse => self.send_large(&e),
                },
                Job::Whole(e) => self.send_large(&e),
                Job::Delta { entry, sig } => self.send_delta(&entry, &sig),
            };
            if done.is_err() {
                return self.stats;
            }
        }
        let _ = self.flush(&mut batch);
        self.stats
    }

    fn emit(&self, msg: &SyncMsg) -> Result<(), WriterGone> {
        let frame = protocol::encode(msg).map_err(|_| WriterGone)?;
        self.frames.blocking_send(frame).map_err(|_| WriterGone)
    }

    fn flush(&mut self, batch: &mut Vec<SmallFile>) -> Result<(), WriterGone> {
        if batch.is_empty() {
            return Ok(());
        }
        let msg = protocol::pack(batch).map_err(|_: ProtocolError| WriterGone)?;
        self.stats.whole += batch.len() as u64;
        batch.clear();
        self.emit(&msg)
    }

    fn open(&mut self, e: &Entry) -> Option<(File, Metadata)> {
        let path = self.root.join(e.path.to_path());
        let opened =
            OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path);
        match opened.and_then(|f| f.metadata().map(|m| (f, m))) {
            Ok((f, m)) if m.is_file() => Some((f, m)),
            Err(err) if unreadable(&err) => {
                self.unreadable(e, &err);
                None
            }
            Ok(_) | Err(_) => {
                debug!(path = %e.path, "not a readable regular file any more; left for the next pass");
                self.stats.changed.push(e.path.clone());
                None
            }
        }
    }

    /// `e` could not be read: said in the pass's result, tried again next pass.
    fn unreadable(&mut self, e: &Entry, err: &io::Error) {
        debug!(path = %e.path, error = %err, "a file cannot be read; the standby keeps its copy");
        self.stats.unreadable.push((e.path.clone(), err.to_string()));
    }

    /// A read of `e` failed: unreadable, or changed under the reader.
    fn read_failed(&mut self, e: &Entry, err: &io::Error) {
        if unreadable(err) {
            self.unreadable(e, err);
        } else {
            self.stats.changed.push(e.path.clone());
        }
    }

    /// `e` with the stat the file was opened under (owner ids only where the scan kept them).
    fn stamped(e: &Entry, meta: &Metadata) -> Entry {
        let uid = if e.uid == NO_ID { NO_ID } else { meta.uid() };
        let gid = if e.gid == NO_ID { NO_ID } else { meta.gid() };
        Entry {
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            mode: meta.mode() & MODE_BITS,
            uid,
            gid,
            ..e.clone()
        }
    }

    /// True (and noted) when the file moved while it was read.
    fn moved(&mut self, e: &Entry, file: &File, before: &Metadata, read: u64) -> bool {
        let stable = file.metadata().is_ok_and(|after| {
            after.len() == before.len() && mtime_ns(&after) == mtime_ns(before) && read == before.len()
        });
        if !stable {
            debug!(path = %e.path, "changed while being read; left for the next pass");
            self.stats.changed.push(e.path.clone());
        }
        !stable
    }

    fn read_small(&mut self, e: &Entry) -> Small {
        let Some((mut file, before)) = self.open(e) else { return Small::Skipped };
        // Few blocks for its length: a file with inline data, or one with holes.
        if looks_sparse(&before) {
            match holes(&file, before.len()) {
                Ok(found) if !found.is_empty() => return Small::Sparse,
                _ => {}
            }
            if file.seek(SeekFrom::Start(0)).is_err() {
                self.stats.changed.push(e.path.clone());
                return Small::Skipped;
            }
        }
        // The file may have grown since the scan: never trust its size for an allocation.
        let mut data = Vec::with_capacity(before.len().min(SMALL_FILE_BYTES) as usize);
        if let Err(err) = file.by_ref().take(SMALL_FILE_BYTES * 4).read_to_end(&mut data) {
            self.read_failed(e, &err);
            return Small::Skipped;
        }
        if self.moved(e, &file, &before, data.len() as u64) {
            return Small::Skipped;
        }
        let mut entry = Self::stamped(e, &before);
        let hash = *blake3::hash(&data).as_bytes();
        entry.hash = Some(hash);
        self.stats.hashes.push((e.path.clone(), hash));
        self.stats.content_bytes += data.len() as u64;
        Small::Read(SmallFile { entry, data })
    }

    fn send_large(&mut self, e: &Entry) -> Result<(), WriterGone> {
        let Some((mut file, before)) = self.open(e) else { return Ok(()) };
        advise_sequential(&file);
        // Holes (asked only of a file with fewer blocks than its length needs) go as their
        // length; a file whose holes cannot be listed goes as data.
        let gaps =
            if looks_sparse(&before) { holes(&file, before.len()).unwrap_or_default() } else { Vec::new() };
        // Finding the holes moved the offset: reading starts at the start again.
        if file.seek(SeekFrom::Start(0)).is_err() {
            self.stats.changed.push(e.path.clone());
            return Ok(());
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        self.emit(&SyncMsg::FileStart { id, entry: Self::stamped(e, &before) })?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut read = 0u64;
        let mut gaps = gaps.into_iter().peekable();
        let mut failed = None;
        let ok = loop {
            if let Some(&(start, end)) = gaps.peek()
                && start <= read
            {
                gaps.next();
                let len = end - read;
                hash_zeros(&mut hasher, len);
                read = end;
                self.emit(&SyncMsg::Hole { id, len })?;
                if file.seek(SeekFrom::Start(read)).is_err() {
                    break false;
                }
                continue;
            }
            // Up to the next hole at most.
            let room =
                gaps.peek().map_or(buf.len() as u64, |&(start, _)| (start - read).min(buf.len() as u64));
            match read_full(&mut file, &mut buf[..room as usize]) {
                Ok(0) => break true,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    read += n as u64;
                    self.emit(&protocol::chunk(id, &buf[..n]))?;
                }
                Err(err) => {
                    failed = Some(err);
                    break false;
                }
            }
        };
        let dropped = if ok {
            self.moved(e, &file, &before, read)
        } else {
            match failed {
                Some(err) => self.read_failed(e, &err),
                None => self.stats.changed.push(e.path.clone()),
            }
            true
        };
        if dropped {
            return self.emit(&SyncMsg::FileAbort { id });
        }
        self.stats.whole += 1;
        self.stats.content_bytes += read;
        let hash = *hasher.finalize().as_bytes();
        self.stats.hashes.push((e.path.clone(), hash));
        self.emit(&SyncMsg::FileEnd { id, hash })
    }

    fn send_delta(&mut self, e: &Entry, sig: &Signature) -> Result<(), WriterGone> {
        let Some((mut file, before)) = self.open(e) else { return Ok(()) };
        advise_sequential(&file);
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        if looks_sparse(&before) {
            // The delta reads holes as zeros; the standby leaves zeros inside them unwritten.
            let gaps = holes(&file, before.len()).unwrap_or_default();
            if file.seek(SeekFrom::Start(0)).is_err() {
                self.stats.changed.push(e.path.clone());
                return Ok(());
            }
            if !gaps.is_empty() {
                self.emit(&SyncMsg::Holes { id, holes: gaps })?;
            }
        }
        self.emit(&SyncMsg::DeltaStart { id, entry: Self::stamped(e, &before), block_len: sig.block_len })?;
        let mut batch = Vec::with_capacity(OPS_BATCH);
        let mut literal = 0u64;
        let mut gone = false;
        let streamed = delta_each(sig, &file, |op| {
            if let DeltaOp::Literal(bytes) = &op {
                literal += bytes.len() as u64;
            }
            batch.push(op);
            if batch.len() >= OPS_BATCH {
                let ops = std::mem::replace(&mut batch, Vec::with_capacity(OPS_BATCH));
                if self.emit(&SyncMsg::Ops { id, ops }).is_err() {
                    gone = true;
                    return Err(SyncError::Io(io::Error::other("writer gone")));
                }
            }
            Ok(())
        });
        if gone {
            return Err(WriterGone);
        }
        if !batch.is_empty() {
            self.emit(&SyncMsg::Ops { id, ops: batch })?;
        }
        match streamed {
            Ok((new_len, new_hash)) if !self.moved(e, &file, &before, new_len) => {
                self.stats.delta += 1;
                self.stats.content_bytes += literal;
                self.stats.hashes.push((e.path.clone(), new_hash));
                self.emit(&SyncMsg::DeltaEnd { id, new_len, new_hash })
            }
            Ok(_) => self.emit(&SyncMsg::FileAbort { id }),
            Err(SyncError::Io(err)) if unreadable(&err) => {
                self.unreadable(e, &err);
                self.emit(&SyncMsg::FileAbort { id })
            }
            Err(err) => {
                debug!(path = %e.path, error = %err, "delta failed; left for the next pass");
                self.stats.changed.push(e.path.clone());
                self.emit(&SyncMsg::FileAbort { id })
            }
        }
    }
}

/// A failure that says the file cannot be read (as opposed to one that says it changed or
/// went): no permission, or the disk failed to read it.
fn unreadable(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::PermissionDenied || err.raw_os_error() == Some(libc::EIO)
}

/// Asks the kernel for aggressive read-ahead: large files are read start to end.
fn advise_sequential(file: &File) {
    // SAFETY: the descriptor is valid for the call; the advice has no memory effects.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}
