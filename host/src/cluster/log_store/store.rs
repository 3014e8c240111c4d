//! [`LogStore`]: the handle openraft and the owner share. Owns the in-memory copy of the log
//! (what every read is served from), the vote/committed/purged values, and the order in which
//! writes reach the writer thread.
//!
//! It never touches segment files itself: disk writes go through `writer.rs`, and the files
//! are read only by `recovery.rs` at open.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::{LogId, LogState, RaftLogId, RaftTypeConfig, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::config::LogStoreConfig;
use super::error::LogStoreError;
use super::meta::{self, COMMITTED_FILE, MetaState, VOTE_FILE};
use super::record;
use super::recovery;
use super::writer::{AppendBatch, Command, WriterHandle};

/// Held (with an OS file lock) for as long as a store has the directory open.
const LOCK_FILE: &str = "LOCK";

/// The durable raft log. Cloning is cheap and shares everything: the owner keeps one handle for
/// queries while openraft owns another.
pub struct LogStore<C: RaftTypeConfig> {
    inner: Arc<Inner<C>>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

/// Size of the log on disk and in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStoreStats {
    /// Entries held (after the purged id).
    pub entries: usize,
    /// Segment files.
    pub segments: usize,
    /// Bytes of records in the segment files.
    pub bytes_on_disk: u64,
    /// `fdatasync` calls on segment files since open.
    pub fsyncs: u64,
}

struct Inner<C: RaftTypeConfig> {
    dir: PathBuf,
    config: LogStoreConfig,
    state: Mutex<State<C>>,
    /// Declared before `_lock` so the writer is joined before the directory is unlocked.
    writer: WriterHandle,
    _lock: File,
}

struct State<C: RaftTypeConfig> {
    /// Entries after `purged`, by index; consecutive unless `lenient_appends`.
    entries: BTreeMap<u64, C::Entry>,
    purged: Option<LogId<C::NodeId>>,
    vote: Option<Vote<C::NodeId>>,
    committed: Option<LogId<C::NodeId>>,
}

impl<C: RaftTypeConfig> State<C> {
    fn first_index(&self) -> Option<u64> {
        self.entries.first_key_value().map(|(index, _)| *index)
    }

    fn last_log_id(&self) -> Option<LogId<C::NodeId>> {
        self.entries.last_key_value().map(|(_, e)| e.get_log_id().clone()).or_else(|| self.purged.clone())
    }

    /// Index the next append must start at; `None` while the log has never held anything.
    fn next_index(&self) -> Option<u64> {
        self.last_log_id().map(|l| l.index + 1)
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    /// Opens (creating if needed) the log in `dir` and recovers it. Blocking: reads every
    /// segment. Fails with [`LogStoreError::Corrupt`] on damage other than a torn tail, and
    /// with [`LogStoreError::Locked`] if another store has `dir` open.
    pub fn open(dir: &Path, config: LogStoreConfig) -> Result<Self, LogStoreError> {
        config.validate()?;
        crate::durable::private_dir(dir, 0o700).map_err(|e| LogStoreError::io("create", dir, e))?;
        let lock = lock_dir(dir)?;
        meta::remove_stale_temps(dir)?;
        let meta = MetaState::<C::NodeId>::load(dir)?;
        let recovered = recovery::recover::<C>(dir, &config, meta.purged.as_ref())?;
        let state = State::<C> {
            entries: recovered.entries,
            purged: meta.purged,
            vote: meta.vote,
            committed: meta.committed,
        };
        tracing::info!(
            dir = %dir.display(),
            segments = recovered.segments.len(),
            first = ?state.first_index(),
            last = ?state.last_log_id(),
            purged = ?state.purged,
            "opened raft log"
        );
        let writer = WriterHandle::spawn(dir.to_path_buf(), config.segment_bytes, recovered.segments)?;
        let inner = Inner { dir: dir.to_path_buf(), config, state: Mutex::new(state), writer, _lock: lock };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Index of the first entry still held.
    pub fn first_index(&self) -> Option<u64> {
        self.state().first_index()
    }

    /// Id of the last entry, or the purged id when no entry is held.
    pub fn last_log_id(&self) -> Option<LogId<C::NodeId>> {
        self.state().last_log_id()
    }

    /// The last purged log id.
    pub fn purged(&self) -> Option<LogId<C::NodeId>> {
        self.state().purged.clone()
    }

    /// Whether the entry with exactly this id (index and leader) is still in the log.
    pub fn contains(&self, log_id: &LogId<C::NodeId>) -> bool {
        self.state().entries.get(&log_id.index).is_some_and(|e| e.get_log_id() == log_id)
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Highest index known to be durable (its append callback has fired or is firing).
    pub fn flushed_index(&self) -> Option<u64> {
        self.inner.writer.shared.flushed_next.load(Ordering::Acquire).checked_sub(1)
    }

    pub fn stats(&self) -> LogStoreStats {
        let shared = &self.inner.writer.shared;
        LogStoreStats {
            entries: self.len(),
            segments: shared.segments.load(Ordering::Relaxed),
            bytes_on_disk: shared.bytes.load(Ordering::Relaxed),
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// The last saved vote.
    pub fn vote(&self) -> Option<Vote<C::NodeId>> {
        self.state().vote.clone()
    }

    /// The last saved committed id.
    pub fn committed(&self) -> Option<LogId<C::NodeId>> {
        self.state().committed.clone()
    }

    /// Purged id and last log id, as openraft's `get_log_state` wants them.
    pub fn log_state(&self) -> LogState<C> {
        let state = self.state();
        LogState { last_purged_log_id: state.purged.clone(), last_log_id: state.last_log_id() }
    }

    /// Clones of the held entries whose index is in `range`; indexes not held are skipped.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Vec<C::Entry> {
        // Normalised to [start, end) first: BTreeMap::range panics on an inverted range, and
        // the range comes from a peer's replication request.
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Bound::Included(e),
            Bound::Excluded(&e) => Bound::Excluded(e),
            Bound::Unbounded => Bound::Unbounded,
        };
        let empty = match end {
            Bound::Included(e) => e < start,
            Bound::Excluded(e) => e <= start,
            Bound::Unbounded => false,
        };
        if empty {
            return Vec::new();
        }
        self.state().entries.range((Bound::Included(start), end)).map(|(_, e)| e.clone()).collect()
    }

    /// Clones of the held entries from `start` (before `end`), stopping before the entry that
    /// would take them past [`LogStoreConfig::max_read_bytes`] encoded (one entry at least):
    /// a replication read costs a bounded amount of memory, not a range of large entries.
    pub fn entries_within(&self, start: u64, end: u64) -> Vec<C::Entry> {
        if end <= start {
            return Vec::new();
        }
        let budget = self.inner.config.max_read_bytes;
        let state = self.state();
        let mut taken = Vec::new();
        let mut bytes = 0u64;
        for (_, entry) in state.entries.range(start..end) {
            bytes = bytes.saturating_add(super::record::encoded_len(entry));
            if bytes > budget && !taken.is_empty() {
                break;
            }
            taken.push(entry.clone());
        }
        taken
    }

    /// Appends `entries` (consecutive, following the log) and returns once they are readable;
    /// `done` runs on the writer thread once they are durable, or with the error that stopped
    /// them. Never blocks on disk.
    pub fn append_with<I, F>(&self, entries: I, done: F) -> Result<(), LogStoreError>
    where
        I: IntoIterator<Item = C::Entry>,
        F: FnOnce(Result<(), io::Error>) + Send + 'static,
    {
        // Encode before taking the lock: readers should not wait on serialization.
        let mut bytes = Vec::new();
        let mut record_lens = Vec::new();
        let mut items = Vec::new();
        for entry in entries {
            let index = entry.get_log_id().index;
            if let Some(prev) = items.last().map(|e: &C::Entry| e.get_log_id().index)
                && index != prev + 1
            {
                return Err(LogStoreError::NotContiguous { expected: prev + 1, got: index });
            }
            record_lens.push(record::encode_into(
                &entry,
                index,
                self.inner.config.max_entry_bytes,
                &mut bytes,
            )?);
            items.push(entry);
        }
        let mut state = self.state();
        if let Some(e) = self.inner.writer.failure() {
            return Err(e);
        }
        let first = items.first().map(|e| e.get_log_id().index);
        if let (Some(got), Some(expected)) = (first, state.next_index())
            && got != expected
        {
            if !self.inner.config.lenient_appends {
                return Err(LogStoreError::NotContiguous { expected, got });
            }
            if got < expected {
                // Replace from `got` on, in memory and (queued first, so in order) on disk.
                state.entries.split_off(&got);
                let (reply, _ignored) = oneshot::channel();
                self.inner.writer.send(Command::Truncate { from: got, reply })?;
            }
        }
        // Sent under the state lock, so the writer's queue order is the log's order.
        let batch = AppendBatch {
            first: first.or(state.next_index()).unwrap_or(0),
            bytes,
            record_lens,
            done: Box::new(done),
        };
        self.inner.writer.send(Command::Append(batch))?;
        state.entries.extend(items.into_iter().map(|e| (e.get_log_id().index, e)));
        Ok(())
    }

    /// Deletes entries with index >= `log_id.index`; durable when this returns.
    /// Cancel safety: if dropped after the entries left memory, the disk side still completes.
    pub async fn truncate_from(&self, log_id: LogId<C::NodeId>) -> Result<(), LogStoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let mut state = self.state();
            state.entries.split_off(&log_id.index);
            self.inner.writer.send(Command::Truncate { from: log_id.index, reply })?;
        }
        tracing::debug!(from = log_id.index, "truncated raft log");
        rx.await.map_err(|_| LogStoreError::WriterStopped)?
    }

    /// Purges entries up to and including `log_id`: the purged id is durable before entries
    /// leave memory and whole segments at or below it are deleted.
    pub async fn purge_upto(&self, log_id: LogId<C::NodeId>) -> Result<(), LogStoreError> {
        let record = meta::encode(&log_id)?;
        let (reply, rx) = oneshot::channel();
        {
            let state = self.state();
            if state.purged.as_ref().is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            self.inner.writer.send(Command::Purge { upto: log_id.index, record, reply })?;
        }
        rx.await.map_err(|_| LogStoreError::WriterStopped)??;
        let mut state = self.state();
        state.entries = state.entries.split_off(&(log_id.index + 1));
        state.purged = Some(log_id);
        Ok(())
    }

    /// Durably saves the vote (after every earlier append is durable).
    pub async fn save_vote(&self, vote: &Vote<C::NodeId>) -> Result<(), LogStoreError> {
        self.write_meta(VOTE_FILE, meta::encode(vote)?).await?;
        self.state().vote = Some(vote.clone());
        Ok(())
    }

    /// Durably saves the committed id.
    pub async fn save_committed(&self, committed: Option<LogId<C::NodeId>>) -> Result<(), LogStoreError> {
        self.write_meta(COMMITTED_FILE, meta::encode(&committed)?).await?;
        self.state().committed = committed;
        Ok(())
    }

    async fn write_meta(&self, name: &'static str, record: Vec<u8>) -> Result<(), LogStoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner.writer.send(Command::Meta { name, record, reply })?;
        rx.await.map_err(|_| LogStoreError::WriterStopped)?
    }

    fn state(&self) -> MutexGuard<'_, State<C>> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than the panic itself; keep serving rather than cascade.
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Takes an exclusive OS lock on `dir/LOCK`: two stores appending to the same files would
/// interleave records.
fn lock_dir(dir: &Path) -> Result<File, LogStoreError> {
    let path = dir.join(LOCK_FILE);
    crate::durable::lock_exclusive(&path, Duration::ZERO)
        .map_err(|e| LogStoreError::io("lock", &path, e))?
        .ok_or_else(|| LogStoreError::Locked { dir: dir.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use openraft::Vote;

    use super::super::segment;
    use super::super::test_support::{TestConfig, append, entries, log_id, open};
    use super::*;

    /// 100-byte payloads in 4 KiB segments: ~36 entries per segment.
    const PAYLOAD: usize = 100;

    #[tokio::test]
    async fn reopen_returns_identical_entries_vote_committed_purged() {
        let dir = tempfile::tempdir().unwrap();
        let written = entries(1, 0..200, PAYLOAD);
        {
            let store = open(dir.path());
            for chunk in written.chunks(7) {
                append(&store, chunk.to_vec()).await;
            }
            store.save_vote(&Vote::new(3, 1)).await.unwrap();
            store.save_committed(Some(log_id(1, 150))).await.unwrap();
            store.purge_upto(log_id(1, 9)).await.unwrap();
            assert!(store.stats().segments > 3, "{:?}", store.stats());
        }
        let store = open(dir.path());
        assert_eq!(store.entries(..), written[10..]);
        assert_eq!(store.vote(), Some(Vote::new(3, 1)));
        assert_eq!(store.committed(), Some(log_id(1, 150)));
        assert_eq!(store.purged(), Some(log_id(1, 9)));
        assert_eq!((store.first_index(), store.last_log_id()), (Some(10), Some(log_id(1, 199))));
        assert_eq!(store.flushed_index(), Some(199));
    }

    #[tokio::test]
    async fn truncate_across_segments_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let written = entries(1, 0..200, PAYLOAD);
        {
            let store = open(dir.path());
            append(&store, written.clone()).await;
            let before = store.stats().segments;
            // Index 50 is inside the second segment: later segments go, that one is cut.
            store.truncate_from(log_id(1, 50)).await.unwrap();
            assert!(store.stats().segments < before);
            assert_eq!(store.last_log_id(), Some(log_id(1, 49)));
            assert_eq!(store.flushed_index(), Some(49));
            // The log continues from the cut, in a new term.
            append(&store, entries(2, 50..60, PAYLOAD)).await;
        }
        let store = open(dir.path());
        let want: Vec<_> = written[..50].iter().cloned().chain(entries(2, 50..60, PAYLOAD)).collect();
        assert_eq!(store.entries(..), want);
    }

    #[tokio::test]
    async fn truncate_at_a_segment_start_deletes_that_segment() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        append(&store, entries(1, 0..200, PAYLOAD)).await;
        let second = segment::list(dir.path()).unwrap()[1].0;
        store.truncate_from(log_id(1, second)).await.unwrap();
        assert_eq!(segment::list(dir.path()).unwrap().len(), 1);
        drop(store);
        assert_eq!(open(dir.path()).last_log_id(), Some(log_id(1, second - 1)));
    }

    #[tokio::test]
    async fn purge_deletes_whole_segments_only_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        append(&store, entries(1, 0..200, PAYLOAD)).await;
        let segs = segment::list(dir.path()).unwrap();
        // Purge into the middle of the third segment: the first two files go.
        let upto = segs[2].0 + 3;
        store.purge_upto(log_id(1, upto)).await.unwrap();
        assert_eq!(segment::list(dir.path()).unwrap(), segs[2..]);
        assert_eq!(store.first_index(), Some(upto + 1));
        assert!(!store.contains(&log_id(1, upto)));
        assert!(store.contains(&log_id(1, upto + 1)));
        assert!(!store.contains(&log_id(2, upto + 1)), "same index, other leader");
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.entries(..), entries(1, upto + 1..200, PAYLOAD));
        assert_eq!(store.log_state().last_purged_log_id, Some(log_id(1, upto)));
    }

    #[tokio::test]
    async fn purge_past_the_end_empties_the_log_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            append(&store, entries(1, 0..10, PAYLOAD)).await;
            store.purge_upto(log_id(2, 20)).await.unwrap();
            assert!(store.is_empty());
            assert_eq!(store.last_log_id(), Some(log_id(2, 20)));
            assert_eq!(store.stats().segments, 0);
            append(&store, entries(2, 21..25, PAYLOAD)).await;
        }
        let store = open(dir.path());
        assert_eq!(store.entries(..), entries(2, 21..25, PAYLOAD));
        assert_eq!(store.purged(), Some(log_id(2, 20)));
    }

    #[tokio::test]
    async fn appends_that_leave_a_hole_or_overlap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        append(&store, entries(1, 0..5, PAYLOAD)).await;
        for bad in [
            entries(1, 6..7, 1),
            entries(1, 3..4, 1),
            vec![entries(1, 5..6, 1)[0].clone(), entries(1, 7..8, 1)[0].clone()],
        ] {
            let err = store.append_with(bad, |_| panic!("must not be queued")).unwrap_err();
            assert!(matches!(err, LogStoreError::NotContiguous { .. }), "{err}");
        }
        assert_eq!(store.len(), 5);
    }

    #[tokio::test]
    async fn ranges_are_clamped_and_inverted_ranges_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert!(store.entries(..).is_empty());
        append(&store, entries(1, 0..10, 1)).await;
        assert_eq!(store.entries(3..=4), entries(1, 3..5, 1));
        assert_eq!(store.entries((Bound::Excluded(7), Bound::Unbounded)), entries(1, 8..10, 1));
        assert_eq!(store.entries(8..100), entries(1, 8..10, 1));
        assert!(store.entries(5..5).is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = store.entries(6..2);
        assert!(inverted.is_empty());
    }

    #[tokio::test]
    async fn a_failed_store_refuses_writes_and_never_reports_them_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        append(&store, entries(1, 0..2, 1)).await;
        // What the writer records after a failed write or fsync.
        let _ = store.inner.writer.shared.failed.set("injected".into());
        let err = store.append_with(entries(1, 2..3, 1), |_| panic!("must not be queued")).unwrap_err();
        assert!(matches!(err, LogStoreError::Failed(_)), "{err}");
        // An append already queued when the failure happened gets the error, not success.
        let (tx, rx) = oneshot::channel();
        let batch = AppendBatch {
            first: 2,
            bytes: Vec::new(),
            record_lens: Vec::new(),
            done: Box::new(move |r| drop(tx.send(r))),
        };
        store.inner.writer.send(Command::Append(batch)).unwrap();
        assert!(rx.await.unwrap().is_err());
        assert!(matches!(store.save_vote(&Vote::new(1, 1)).await, Err(LogStoreError::Failed(_))));
    }

    #[tokio::test]
    async fn a_directory_is_opened_by_one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path());
        let err = LogStore::<TestConfig>::open(dir.path(), LogStoreConfig::for_test()).err().unwrap();
        assert!(matches!(err, LogStoreError::Locked { .. }), "{err}");
        drop(first);
        open(dir.path());
    }

    #[tokio::test]
    async fn clones_share_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let owner = store.clone();
        append(&store, entries(1, 0..3, 1)).await;
        assert_eq!(owner.len(), 3);
        assert_eq!(owner.stats().entries, 3);
        assert!(owner.stats().bytes_on_disk > 0);
    }
}
