//! The commit log's state machine: applies committed conf changes to the member's conf tree
//! through the conf model, allocates node ids, keeps the membership and the batch ids that
//! make a re-proposed batch apply once. Snapshots (build, install, shadow tree, resync) are in
//! `snapshot.rs`.
//!
//! Durability: the commit log is the durable record, so applies write the tree without
//! fsyncs; a checkpoint (every `checkpoint_ms`, before every snapshot, at shutdown) makes the
//! files touched since the last one durable and only then records the applied id. After a
//! crash the entries after the recorded id are applied again, which is harmless: conf ops are
//! idempotent assignments and node ids are the allocating entry's log index.
//!
//! Must never: record an applied id whose effects are not durable, or write outside the tree.

// openraft's storage traits return its `StorageError` (large); the inherent methods share it
// so errors pass through unchanged.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, Snapshot, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::shared::{Shared, now_ms};
use super::snapshot::{INCOMING_PREFIX, SHADOW_DIR, remove_incoming};
use super::snapshot_file::SnapshotFile;
use super::types::{
    Entry, LogId, NodeId, Request, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::conf::{self, ConfChangeKey, ConfTree, RelPath};
use crate::durable;

/// Which files of the tree replicate (the whitelist plugin's verdict per file).
pub type ReplicatedFiles = Arc<dyn Fn(&RelPath, &ConfChangeKey) -> bool + Send + Sync>;

/// First wait before a failed apply is tried again; doubled up to [`APPLY_RETRY_MAX`].
const APPLY_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const APPLY_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a waiting retry looks whether the member is stopping.
const APPLY_STOP_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// How many recent batch ids every member remembers to apply a re-proposed batch once.
pub const DEDUP_WINDOW: usize = 4_096;

/// The replicated state beside the conf files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmData {
    pub cluster_id: String,
    /// Batch ids of the most recent `Changes` entries, oldest first.
    pub recent_batches: std::collections::VecDeque<u64>,
    #[serde(skip)]
    seen: std::collections::HashSet<u64>,
}

impl SmData {
    /// The set form of `recent_batches`, rebuilt after a load (serde skips it).
    fn seen(&mut self) -> &mut std::collections::HashSet<u64> {
        if self.seen.len() != self.recent_batches.len() {
            self.seen = self.recent_batches.iter().copied().collect();
        }
        &mut self.seen
    }

    fn has_seen(&mut self, batch: u64) -> bool {
        self.seen().contains(&batch)
    }

    /// True the first time `batch` is offered (and remembers it).
    fn first_time(&mut self, batch: u64) -> bool {
        if !self.seen().insert(batch) {
            return false;
        }
        self.recent_batches.push_back(batch);
        if self.recent_batches.len() > DEDUP_WINDOW
            && let Some(old) = self.recent_batches.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Saved {
    pub(super) applied: Option<LogId>,
    pub(super) membership: StoredMembership,
    pub(super) data: SmData,
    /// True while committed state goes to the shadow tree (needs a destructive resync).
    pub(super) shadow: bool,
}

pub(super) struct Inner {
    pub(super) dir: PathBuf,
    pub(super) live: ConfTree,
    pub(super) shared: Arc<Shared>,
    pub(super) replicated: ReplicatedFiles,
    pub(super) me: NodeId,
    pub(super) state: Mutex<Saved>,
    /// Files (and their folders) written since the last checkpoint.
    pub(super) dirty: Mutex<BTreeSet<PathBuf>>,
    /// Copies of `state.applied` / `state.shadow` for readers that must not wait on `state`.
    pub(super) applied_id: Mutex<Option<LogId>>,
    pub(super) shadow: std::sync::atomic::AtomicBool,
    /// Serialises writers of state.json (checkpoints, installs, resync) and holds the applied
    /// id it records. Lock order: this, then `state`, then the tree lock.
    pub(super) checkpointing: Mutex<Option<LogId>>,
    /// Set when raft stops here: an apply retrying a failed write gives up (recording nothing).
    pub(super) stop: CancellationToken,
    /// `cluster.max_snapshot_bytes`: the cap on snapshots built, received and installed here.
    pub(super) max_snapshot_bytes: u64,
}

/// Cheap to clone; clones share everything (openraft takes one as the snapshot builder).
#[derive(Clone)]
pub struct StateMachine {
    pub(super) inner: Arc<Inner>,
}

const STATE_FILE: &str = "state.json";
pub(super) fn io_err(subject: &str, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(format!("{subject}: {e}"))).into()
}

impl StateMachine {
    /// Opens the state machine kept in `dir` over the live tree.
    pub fn open(
        dir: &Path,
        live: ConfTree,
        shared: Arc<Shared>,
        replicated: ReplicatedFiles,
        me: NodeId,
        max_snapshot_bytes: u64,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("creating the state-machine folder", e))?;
        let saved: Saved = match std::fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io_err("reading state.json", e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(io_err("reading state.json", e)),
        };
        if saved.shadow {
            shared.require_resync();
        }
        remove_incoming(dir);
        shared.set_applied(saved.applied.map_or(0, |l| l.index));
        let inner = Inner {
            dir: dir.to_path_buf(),
            live,
            shared,
            replicated,
            me,
            checkpointing: Mutex::new(saved.applied),
            applied_id: Mutex::new(saved.applied),
            shadow: std::sync::atomic::AtomicBool::new(saved.shadow),
            state: Mutex::new(saved),
            dirty: Mutex::new(BTreeSet::new()),
            stop: CancellationToken::new(),
            max_snapshot_bytes,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Tells an apply that is retrying a failed write to give up: raft is stopping.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    pub fn data(&self) -> SmData {
        self.inner.state.lock().expect("sm lock").data.clone()
    }

    /// The last applied entry. Never waits for an apply, pack or install in progress.
    pub fn applied(&self) -> Option<LogId> {
        *self.inner.applied_id.lock().expect("applied lock")
    }

    pub fn in_shadow(&self) -> bool {
        self.inner.shadow.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs `f` unless batch `batch` was already applied from the log; holds the state lock
    /// meanwhile, so the batch's log entry, if it comes, is applied after `f`'s writes.
    pub fn unless_applied<T>(&self, batch: u64, f: impl FnOnce() -> T) -> Option<T> {
        let mut st = self.inner.state.lock().expect("sm lock");
        if st.data.has_seen(batch) { None } else { Some(f()) }
    }

    pub(super) fn published(&self, st: &Saved) {
        *self.inner.applied_id.lock().expect("applied lock") = st.applied;
        self.inner.shadow.store(st.shadow, std::sync::atomic::Ordering::SeqCst);
        self.inner.shared.set_applied(st.applied.map_or(0, |l| l.index));
    }

    /// Sets the cluster identity on the first member (`cluster init`).
    pub fn set_cluster(&self, cluster_id: &str) -> Result<(), StorageError> {
        let _saving = self.inner.checkpointing.lock().expect("checkpoint lock");
        let mut st = self.inner.state.lock().expect("sm lock");
        st.data.cluster_id = cluster_id.to_string();
        self.save(&st)
    }

    /// Makes every file written since the last checkpoint durable, then records the applied
    /// id (and membership) those writes reflect. Applies go on meanwhile.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        let inner = &self.inner;
        let mut saved_applied = inner.checkpointing.lock().expect("checkpoint lock");
        let (state, dirty) = {
            let st = inner.state.lock().expect("sm lock");
            (st.clone(), std::mem::take(&mut *inner.dirty.lock().expect("dirty lock")))
        };
        if dirty.is_empty() && *saved_applied == state.applied {
            return Ok(());
        }
        for path in &dirty {
            // A file deleted since is simply gone; its folder is in the set too.
            let synced = match std::fs::File::open(path) {
                Ok(f) => f.sync_all(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = synced {
                inner.dirty.lock().expect("dirty lock").extend(dirty.iter().cloned());
                return Err(io_err("syncing the conf tree", e));
            }
        }
        self.save(&state)?;
        *saved_applied = state.applied;
        Ok(())
    }

    pub(super) fn save(&self, st: &Saved) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(st).expect("state serializes");
        durable::write_private(&self.inner.dir.join(STATE_FILE), &bytes)
            .map_err(|e| io_err("saving state.json", e))
    }

    pub(super) fn tree_for(&self, st: &Saved) -> Result<ConfTree, StorageError> {
        if st.shadow {
            ConfTree::open(self.inner.dir.join(SHADOW_DIR)).map_err(|e| io_err("shadow tree", e))
        } else {
            Ok(self.inner.live.clone())
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.inner.state.lock().expect("sm lock");
        Ok((st.applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_blocking(entries))
            .await
            .map_err(|e| io_err("apply task", e))?
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        // One snapshot is received at a time: an earlier stream's file goes (openraft drops
        // its handle when it replaces the stream).
        let dir = self.inner.dir.clone();
        remove_incoming(&dir);
        static STREAMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{INCOMING_PREFIX}{n}"));
        let limit = conf::snapshot::max_packed_bytes(self.inner.max_snapshot_bytes);
        let file = SnapshotFile::create(&path, limit).await.map_err(|e| io_err("receiving a snapshot", e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let path = snapshot.finish().await.map_err(|e| io_err("keeping the received snapshot", e))?;
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            let installed = this.install(&meta, &path);
            let _ = std::fs::remove_file(&path);
            installed
        })
        .await
        .map_err(|e| io_err("install task", e))?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.current_snapshot())
            .await
            .map_err(|e| io_err("snapshot task", e))?
    }
}

impl StateMachine {
    /// Applies `entries`, all or none: a failure of this member's disk (full, out of
    /// descriptors, a hand-broken file) applies nothing and records nothing; the same entries
    /// are tried again with backoff until they apply (the member says meanwhile, in status,
    /// metrics and health, that it cannot apply) or the member stops. The applied index never
    /// moves past an entry whose changes are not in the tree.
    fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Response>, StorageError> {
        let shared = &self.inner.shared;
        let mut wait = APPLY_RETRY_FIRST;
        // Changes an earlier attempt did make (a retry finds them done: `changed` stays true).
        let mut changed_before = Vec::new();
        loop {
            match self.try_apply(&entries, &mut changed_before) {
                Ok(responses) => {
                    shared.apply_resumed();
                    return Ok(responses);
                }
                Err(message) => {
                    shared.cannot_apply(&message);
                    if self.inner.stop.is_cancelled() {
                        // Nothing was recorded: after a restart these entries apply again.
                        return Err(io_err("applying committed changes", message));
                    }
                    let deadline = std::time::Instant::now() + wait;
                    while std::time::Instant::now() < deadline && !self.inner.stop.is_cancelled() {
                        std::thread::sleep(APPLY_STOP_POLL.min(wait));
                    }
                    wait = (wait * 2).min(APPLY_RETRY_MAX);
                }
            }
        }
    }

    /// One attempt: `Err` (a message for status) when this member's disk failed a change;
    /// then neither the state nor the applied id changed.
    fn try_apply(&self, entries: &[Entry], changed_before: &mut Vec<bool>) -> Result<Vec<Response>, String> {
        let inner = &self.inner;
        let mut st = inner.state.lock().expect("sm lock");
        // Worked on a copy: it replaces the state only once the whole batch applied.
        let mut next = st.clone();
        let mut responses = Vec::with_capacity(entries.len());
        // All conf changes of the batch go to the tree in one pass (each file once, one
        // round of fsyncs); the other entries answer at once.
        let mut changes = Vec::new();
        let mut spans = Vec::with_capacity(entries.len());
        let mut own_batches = Vec::new();
        for entry in entries {
            let start = changes.len();
            let mut resp = Response::default();
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Request::Changes { origin, batch, changes: c, .. }) => {
                    if next.data.first_time(*batch) {
                        changes.extend(c.iter().cloned());
                    }
                    if *origin == inner.me {
                        own_batches.push(*batch);
                    }
                }
                EntryPayload::Normal(Request::AllocateNodeId { .. }) => {
                    // The entry's own index: unique, never reused, the same on every member
                    // and on every re-apply.
                    resp.node_id = Some(entry.log_id.index);
                }
                EntryPayload::Membership(m) => {
                    next.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            spans.push((start, changes.len()));
            responses.push(resp);
            next.applied = Some(entry.log_id);
        }
        if !changes.is_empty() {
            let tree = self.tree_for(&next).map_err(|e| e.to_string())?;
            let results = {
                let _lock = (!next.shadow).then(|| inner.shared.tree_lock.lock().expect("tree lock"));
                tree.apply_batch(&changes, false)
            };
            {
                let mut dirty = inner.dirty.lock().expect("dirty lock");
                for change in &changes {
                    if let Ok(rel) = change.rel_path() {
                        let path = tree.root().join(rel.as_path());
                        dirty.extend(path.parent().map(Path::to_path_buf));
                        dirty.insert(path);
                    }
                }
            }
            changed_before.resize(changes.len(), false);
            for (i, result) in results.iter().enumerate() {
                if matches!(result, Ok(true)) {
                    changed_before[i] = true;
                }
            }
            if let Some((i, e)) = results
                .iter()
                .enumerate()
                .find_map(|(i, r)| r.as_ref().err().filter(|e| e.is_local_failure()).map(|e| (i, e)))
            {
                // Not the change's fault: this member's disk. Nothing is recorded; the
                // caller tries these entries again.
                let message = format!("committed change `{}` cannot be applied here: {e}", changes[i]);
                warn!(error = %e, change = %changes[i], "a committed change cannot be applied here; retrying");
                return Err(message);
            }
            if !next.shadow {
                // The committed copies of files with pending changes take the change too.
                let written = {
                    let _lock = inner.shared.tree_lock.lock().expect("tree lock");
                    inner.shared.base.apply(&changes)
                };
                match written {
                    Ok(paths) => {
                        let mut dirty = inner.dirty.lock().expect("dirty lock");
                        for path in paths {
                            dirty.extend(path.parent().map(Path::to_path_buf));
                            dirty.insert(path);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "a committed change cannot be applied to a pending file's copy; retrying");
                        return Err(format!("committed changes cannot be applied here: {e}"));
                    }
                }
            }
            for ((start, end), resp) in spans.iter().zip(responses.iter_mut()) {
                for (i, result) in results[*start..*end].iter().enumerate() {
                    match result {
                        Ok(_) if changed_before[start + i] => resp.changed += 1,
                        Ok(_) => {}
                        Err(e) => {
                            // Every member refuses it alike (the change itself is invalid).
                            warn!(change = %changes[start + i], error = %e, "a committed change is not applicable");
                            resp.refused.push((i as u32, e.to_string()));
                        }
                    }
                }
            }
            if !next.shadow {
                inner.shared.replicated_at(now_ms());
            }
        }
        *st = next;
        // Our own batches that were waiting in the outbox are committed now.
        for batch in own_batches {
            if let Err(e) = inner.shared.outbox.remove_batch(batch) {
                warn!(error = %e, "a committed batch could not leave the outbox; it will be offered again and applied once");
            }
        }
        // Nothing from here pending any more: files it touched take the log's order.
        if !st.shadow && inner.shared.outbox.is_empty() {
            let _lock = inner.shared.tree_lock.lock().expect("tree lock");
            if let Err(e) = inner.shared.base.settle(&inner.live) {
                warn!(error = %e, "files with committed pending changes keep their order for now; trying again at the next apply");
            }
        }
        self.published(&st);
        Ok(responses)
    }
}
