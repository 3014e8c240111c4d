//! The group-commit writer: ONE thread owns every segment file and the meta files, and runs
//! all disk writes in the order they were queued. Appends queued while it syncs are written
//! together and covered by one `fdatasync`, so N concurrent appends cost ~1 fsync.
//!
//! It must never complete an append callback with success before the bytes are durable, and
//! after any failed write or sync it refuses everything (what is on disk is then unknown;
//! reopening runs recovery). A thread rather than a tokio task: every call here blocks, and
//! the writer must outlive whichever runtime happened to open the store.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::error::LogStoreError;
use super::meta::{self, PURGED_FILE};
use super::segment::Segment;

/// Called once the append's bytes are durable, or with the error that prevented it.
pub(crate) type AppendDone = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

/// Reply to a command whose caller waits for it.
pub(crate) type Reply = oneshot::Sender<Result<(), LogStoreError>>;

/// Encoded records for consecutive indexes starting at `first`.
pub(crate) struct AppendBatch {
    pub first: u64,
    pub bytes: Vec<u8>,
    /// Length of each record in `bytes`, in order.
    pub record_lens: Vec<usize>,
    pub done: AppendDone,
}

/// Work for the writer thread.
pub(crate) enum Command {
    Append(AppendBatch),
    /// Durably delete entries with index >= `from`.
    Truncate {
        from: u64,
        reply: Reply,
    },
    /// Durably record the purged id (`record`, the file bytes), then delete segments holding
    /// only entries <= `upto`.
    Purge {
        upto: u64,
        record: Vec<u8>,
        reply: Reply,
    },
    /// Durably replace the meta file `name` with `record`.
    Meta {
        name: &'static str,
        record: Vec<u8>,
        reply: Reply,
    },
}

/// Counters the writer publishes for queries and tests.
#[derive(Debug, Default)]
pub(crate) struct WriterShared {
    /// `fdatasync` calls on segment files.
    pub fsyncs: AtomicU64,
    pub bytes: AtomicU64,
    pub segments: AtomicUsize,
    /// Last durable index + 1; 0 when nothing is durable.
    pub flushed_next: AtomicU64,
    /// Set on the first I/O failure; after that every write is refused.
    pub failed: OnceLock<String>,
}

/// The store's handle: sends commands, and on drop lets the thread finish and joins it, so the
/// files are closed when the store is gone (a reopen must not race a writer still running).
pub(crate) struct WriterHandle {
    tx: Option<Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    pub shared: Arc<WriterShared>,
}

impl WriterHandle {
    /// Starts the writer over the recovered `segments` (the last one is where appends go).
    pub(crate) fn spawn(
        dir: PathBuf,
        segment_bytes: u64,
        segments: Vec<Segment>,
    ) -> Result<Self, LogStoreError> {
        let shared = Arc::new(WriterShared::default());
        let (tx, rx) = mpsc::channel();
        let writer = Writer { dir: dir.clone(), segment_bytes, segments, shared: shared.clone() };
        writer.publish();
        let flushed = writer.segments.last().map_or(0, Segment::next_index);
        shared.flushed_next.store(flushed, Ordering::Release);
        let span = tracing::info_span!("raft_log_writer", dir = %dir.display());
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || span.in_scope(|| writer.run(rx)))
            .map_err(|e| LogStoreError::io("spawn writer for", dir, e))?;
        Ok(Self { tx: Some(tx), thread: Some(thread), shared })
    }

    /// Queues a command. The queue is unbounded on purpose: `append` must not block (openraft
    /// relies on it returning at once), and raft's own pipelining limit bounds the depth.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), LogStoreError> {
        let tx = self.tx.as_ref().ok_or(LogStoreError::WriterStopped)?;
        tx.send(cmd).map_err(|_| LogStoreError::WriterStopped)
    }

    pub(crate) fn failure(&self) -> Option<LogStoreError> {
        self.shared.failed.get().map(|m| LogStoreError::Failed(m.clone()))
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        // Closing the channel makes the thread write what is queued and exit.
        self.tx = None;
        let Some(thread) = self.thread.take() else { return };
        if thread.thread().id() == std::thread::current().id() {
            // The last handle was dropped by a callback running on the writer itself; it
            // exits on its own once it returns to the closed channel.
            return;
        }
        if thread.join().is_err() {
            tracing::error!("raft log writer thread panicked");
        }
    }
}

struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    /// In index order; the last is the active segment.
    segments: Vec<Segment>,
    shared: Arc<WriterShared>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Command>) {
        let mut appends = Vec::new();
        while let Ok(cmd) = rx.recv() {
            // Everything queued while the previous batch was syncing goes into this one.
            for cmd in std::iter::once(cmd).chain(rx.try_iter()) {
                match cmd {
                    Command::Append(batch) => appends.push(batch),
                    other => {
                        // Queue order is the log's order: earlier appends become durable first.
                        self.flush(&mut appends);
                        self.execute(other);
                    }
                }
            }
            self.flush(&mut appends);
        }
        tracing::debug!("raft log writer stopped");
    }

    /// Writes the queued appends, syncs once, then completes every callback.
    fn flush(&mut self, appends: &mut Vec<AppendBatch>) {
        if appends.is_empty() {
            return;
        }
        let result = self.guard().and_then(|()| self.write_batch(appends));
        let result = self.record_failure(result);
        for batch in appends.drain(..) {
            (batch.done)(result.as_ref().map_err(LogStoreError::to_io).copied());
        }
    }

    fn write_batch(&mut self, appends: &[AppendBatch]) -> Result<(), LogStoreError> {
        let mut buf = Vec::new();
        let mut lens = Vec::new();
        for batch in appends {
            let mut offset = 0;
            for (i, len) in batch.record_lens.iter().enumerate() {
                let index = batch.first + i as u64;
                if self.must_roll(index, &buf, &lens) {
                    self.write_active(&mut buf, &mut lens)?;
                    self.roll(index)?;
                }
                debug_assert_eq!(
                    self.segments.last().map(|s| s.next_index() + lens.len() as u64),
                    Some(index)
                );
                buf.extend_from_slice(&batch.bytes[offset..offset + len]);
                lens.push(*len);
                offset += len;
            }
        }
        if appends.iter().all(|b| b.record_lens.is_empty()) {
            // Only empty appends: everything before them is already durable.
            return Ok(());
        }
        self.write_active(&mut buf, &mut lens)?;
        if let Some(active) = self.segments.last_mut() {
            active.sync()?;
            self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.shared.flushed_next.store(active.next_index(), Ordering::Release);
        }
        self.publish();
        Ok(())
    }

    /// Whether record `index` needs a new segment, given what is buffered for the active one
    /// but not yet written: it is full, or `index` does not follow it (a gap, see
    /// `lenient_appends`; a segment's records are always consecutive).
    fn must_roll(&self, index: u64, buf: &[u8], lens: &[usize]) -> bool {
        self.segments.last().is_none_or(|s| {
            s.len + buf.len() as u64 >= self.segment_bytes || s.next_index() + lens.len() as u64 != index
        })
    }

    fn write_active(&mut self, buf: &mut Vec<u8>, lens: &mut Vec<usize>) -> Result<(), LogStoreError> {
        if lens.is_empty() {
            return Ok(());
        }
        let active = self.segments.last_mut().expect("a segment exists once records are buffered");
        active.write(buf, lens)?;
        buf.clear();
        lens.clear();
        Ok(())
    }

    /// Seals the active segment and starts one whose first record is `first`.
    fn roll(&mut self, first: u64) -> Result<(), LogStoreError> {
        if let Some(old) = self.segments.last_mut() {
            // Sync before the new file exists: recovery relies on every sealed segment being
            // whole, so only the last can hold a torn tail.
            old.sync()?;
            self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
            old.close();
        }
        let seg = Segment::create(&self.dir, first)?;
        meta::sync_dir(&self.dir)?;
        tracing::debug!(file = %seg.path.display(), "started segment");
        self.segments.push(seg);
        Ok(())
    }

    fn execute(&mut self, cmd: Command) {
        let (result, reply) = match cmd {
            Command::Append(_) => unreachable!("appends are batched by run"),
            Command::Truncate { from, reply } => (self.guard().and_then(|()| self.truncate(from)), reply),
            Command::Purge { upto, record, reply } => {
                (self.guard().and_then(|()| self.purge(upto, &record)), reply)
            }
            Command::Meta { name, record, reply } => {
                let r = self.guard().and_then(|()| meta::write_file_durable(&self.dir, name, &record));
                (r, reply)
            }
        };
        let result = self.record_failure(result);
        // The caller may have given up waiting (cancelled); the work is done regardless.
        let _ = reply.send(result);
    }

    fn truncate(&mut self, from: u64) -> Result<(), LogStoreError> {
        // Newest first, syncing the directory after each delete, so a crash part-way leaves a
        // shorter log, never one with a hole.
        while self.segments.last().is_some_and(|s| s.first >= from) {
            let seg = self.segments.pop().expect("checked above");
            tracing::debug!(file = %seg.path.display(), from, "deleting segment for truncate");
            seg.delete()?;
            meta::sync_dir(&self.dir)?;
        }
        if let Some(last) = self.segments.last_mut()
            && last.next_index() > from
        {
            last.truncate_from(from)?;
        }
        self.shared.flushed_next.fetch_min(from, Ordering::AcqRel);
        self.publish();
        Ok(())
    }

    fn purge(&mut self, upto: u64, record: &[u8]) -> Result<(), LogStoreError> {
        // The purged id is durable before any file goes: recovery then knows a missing prefix
        // is intended.
        meta::write_file_durable(&self.dir, PURGED_FILE, record)?;
        let dead = self.segments.iter().take_while(|s| s.last_index().is_some_and(|l| l <= upto)).count();
        for seg in self.segments.drain(..dead) {
            tracing::debug!(file = %seg.path.display(), upto, "deleting purged segment");
            seg.delete()?;
        }
        if dead > 0 {
            meta::sync_dir(&self.dir)?;
        }
        self.publish();
        Ok(())
    }

    fn guard(&self) -> Result<(), LogStoreError> {
        match self.shared.failed.get() {
            Some(msg) => Err(LogStoreError::Failed(msg.clone())),
            None => Ok(()),
        }
    }

    fn record_failure(&self, result: Result<(), LogStoreError>) -> Result<(), LogStoreError> {
        if let Err(e) = &result
            && !matches!(e, LogStoreError::Failed(_))
        {
            tracing::error!(error = %e, "raft log write failed; refusing further writes");
            let _ = self.shared.failed.set(e.to_string());
        }
        result
    }

    fn publish(&self) {
        let bytes = self.segments.iter().map(|s| s.len).sum();
        self.shared.bytes.store(bytes, Ordering::Relaxed);
        self.shared.segments.store(self.segments.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_support::{append, entries, entry, open};

    /// Group commit: 1000 appends queued back to back (as raft pipelines them) complete with
    /// far fewer fsyncs, every callback reports success, and in order.
    #[tokio::test]
    async fn concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..1000u64 {
            let tx = tx.clone();
            store.append_with([entry(1, i, 16)], move |r| tx.send((i, r.is_ok())).unwrap()).unwrap();
        }
        drop(tx);
        let mut done = Vec::new();
        while let Some(d) = rx.recv().await {
            done.push(d);
        }
        assert_eq!(done, (0..1000).map(|i| (i, true)).collect::<Vec<_>>());
        let fsyncs = store.stats().fsyncs;
        assert!(fsyncs < 100, "{fsyncs} fsyncs for 1000 appends");
        assert_eq!(store.flushed_index(), Some(999));
        drop(store);
        assert_eq!(open(dir.path()).len(), 1000);
    }

    /// A callback fires only after the sync: inside it, the fsync counter has already moved.
    #[tokio::test]
    async fn callbacks_fire_after_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let before = store.stats().fsyncs;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let probe = store.clone();
        store
            .append_with(entries(1, 0..3, 8), move |r| tx.send((r.is_ok(), probe.stats().fsyncs)).unwrap())
            .unwrap();
        let (ok, fsyncs_seen) = rx.await.unwrap();
        assert!(ok && fsyncs_seen > before);
    }

    /// Throughput of 100-byte entries on this machine's disk:
    /// `cargo test --release -- --ignored --nocapture bench_append`.
    #[tokio::test]
    #[ignore]
    async fn bench_append() {
        const TOTAL: u64 = 100_000;
        const PAYLOAD: usize = 84; // + log id and framing = ~100 bytes a record
        for batch in [1u64, 64] {
            let dir = tempfile::tempdir().unwrap();
            let store = super::super::LogStore::open(dir.path(), Default::default()).unwrap();
            // Waiting for each append: what one client sees.
            let n = (TOTAL / 10).min(2000);
            let t = Instant::now();
            let mut next = 0;
            while next < n {
                append(&store, entries(1, next..next + batch, PAYLOAD)).await;
                next += batch;
            }
            report("sequential", batch, next, t.elapsed(), &store);
            // Pipelined: appends queued without waiting, as raft does; group commit batches them.
            let start = next;
            let fsyncs = store.stats().fsyncs;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let t = Instant::now();
            while next < start + TOTAL {
                let tx = tx.clone();
                store
                    .append_with(entries(1, next..next + batch, PAYLOAD), move |r| tx.send(r).unwrap())
                    .unwrap();
                next += batch;
            }
            drop(tx);
            while let Some(r) = rx.recv().await {
                r.unwrap();
            }
            let elapsed = t.elapsed();
            report("pipelined", batch, next - start, elapsed, &store);
            eprintln!("    fsyncs while pipelined: {}", store.stats().fsyncs - fsyncs);
            let record = store.stats().bytes_on_disk / next;
            eprintln!("    bytes per record on disk: {record}");
        }
    }

    fn report<C: openraft::RaftTypeConfig>(
        mode: &str,
        batch: u64,
        n: u64,
        elapsed: Duration,
        store: &super::super::LogStore<C>,
    ) where
        C::Entry: Clone + serde::Serialize + serde::de::DeserializeOwned,
    {
        let per_sec = n as f64 / elapsed.as_secs_f64();
        eprintln!(
            "{mode:>10} appends of {batch:>2}: {n} entries in {elapsed:?} = {per_sec:.0} entries/s ({} fsyncs total)",
            store.stats().fsyncs
        );
    }
}
