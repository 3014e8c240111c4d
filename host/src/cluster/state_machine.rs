//! The commit log's state machine: applies committed conf changes to the member's conf tree
//! through the conf model, allocates node ids, keeps the membership, and builds / installs
//! snapshots (the seed's tarball).
//!
//! A snapshot that arrives while this member still holds pending local changes is not
//! applied over them: it goes to a shadow tree, later entries apply there too, and the member
//! reports that it needs a destructive resync; `resync` then promotes the shadow.
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
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::shared::{Shared, now_ms};
use super::types::{
    Entry, LogId, NodeId, Request, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::conf::{self, ConfChangeKey, ConfTree, RelPath};
use crate::durable;

/// Which files of the tree replicate (the whitelist plugin's verdict per file).
pub type ReplicatedFiles = Arc<dyn Fn(&RelPath, &ConfChangeKey) -> bool + Send + Sync>;

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
    /// True the first time `batch` is offered (and remembers it).
    fn first_time(&mut self, batch: u64) -> bool {
        if self.seen.len() != self.recent_batches.len() {
            self.seen = self.recent_batches.iter().copied().collect();
        }
        if !self.seen.insert(batch) {
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
struct Saved {
    applied: Option<LogId>,
    membership: StoredMembership,
    data: SmData,
    /// True while committed state goes to the shadow tree (needs a destructive resync).
    shadow: bool,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBlob {
    meta: SnapshotMeta,
    data: SmData,
}

struct Inner {
    dir: PathBuf,
    live: ConfTree,
    shared: Arc<Shared>,
    replicated: ReplicatedFiles,
    me: NodeId,
    state: Mutex<Saved>,
    /// Files (and their folders) written since the last checkpoint.
    dirty: Mutex<BTreeSet<PathBuf>>,
    /// Copies of `state.applied` / `state.shadow` for readers that must not wait on `state`.
    applied_id: Mutex<Option<LogId>>,
    shadow: std::sync::atomic::AtomicBool,
    /// Serialises writers of state.json (checkpoints, installs, resync) and holds the applied
    /// id it records. Lock order: this, then `state`, then the tree lock.
    checkpointing: Mutex<Option<LogId>>,
}

/// Cheap to clone; clones share everything (openraft takes one as the snapshot builder).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

const STATE_FILE: &str = "state.json";
const SNAPSHOT_FILE: &str = "snapshot.tar.zst";
const SHADOW_DIR: &str = "shadow";

fn io_err(subject: &str, e: impl std::fmt::Display) -> StorageError {
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
        };
        Ok(Self { inner: Arc::new(inner) })
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

    fn published(&self, st: &Saved) {
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

    /// Bootstrap of a new member: installs the captain's tarball before raft starts here, so
    /// raft only sends the log after it.
    pub fn bootstrap(&self, bytes: Vec<u8>) -> Result<SnapshotMeta, StorageError> {
        let blob = read_blob(&bytes)?;
        let meta = blob.meta.clone();
        self.install(&meta, bytes)?;
        Ok(meta)
    }

    /// The current snapshot's bytes, building one if there is none newer than `applied`.
    pub async fn snapshot_bytes(&mut self) -> Result<Vec<u8>, StorageError> {
        let snap = self.build_snapshot().await?;
        Ok(snap.snapshot.into_inner())
    }

    /// Destructive resync: drops the shadow's pending state into the live tree (or, if no
    /// snapshot arrived yet, installs `captain_snapshot` there), replacing every replicated file.
    pub fn resync(&self, captain_snapshot: Option<Vec<u8>>) -> Result<(), StorageError> {
        let inner = &self.inner;
        let mut saved_applied = inner.checkpointing.lock().expect("checkpoint lock");
        let mut st = inner.state.lock().expect("sm lock");
        let _tree = inner.shared.tree_lock.lock().expect("tree lock");
        let bytes = if st.shadow {
            let shadow = ConfTree::open(inner.dir.join(SHADOW_DIR)).map_err(|e| io_err("shadow tree", e))?;
            let files: Vec<RelPath> = shadow
                .replicable_files()
                .map_err(|e| io_err("shadow tree", e))?
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            conf::snapshot::pack(&shadow, &files, b"{}").map_err(|e| io_err("packing the shadow tree", e))?
        } else {
            let bytes =
                captain_snapshot.ok_or_else(|| io_err("resync", "no snapshot from the captain yet"))?;
            if read_blob(&bytes)?.meta.last_log_id < st.applied {
                return Err(io_err(
                    "resync",
                    "the captain's snapshot is older than what this member applied; try again",
                ));
            }
            bytes
        };
        conf::snapshot::install(&inner.live, &bytes, |p, k| (inner.replicated)(p, k))
            .map_err(|e| io_err("installing the snapshot", e))?;
        if st.shadow {
            st.shadow = false;
            self.save(&st)?;
            *saved_applied = st.applied;
            self.published(&st);
            let _ = std::fs::remove_dir_all(inner.dir.join(SHADOW_DIR));
        }
        inner.shared.resynced();
        info!("destructive resync done: the live tree now holds the captain's configuration");
        Ok(())
    }

    fn save(&self, st: &Saved) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(st).expect("state serializes");
        durable::write_private(&self.inner.dir.join(STATE_FILE), &bytes)
            .map_err(|e| io_err("saving state.json", e))
    }

    fn tree_for(&self, st: &Saved) -> Result<ConfTree, StorageError> {
        if st.shadow {
            ConfTree::open(self.inner.dir.join(SHADOW_DIR)).map_err(|e| io_err("shadow tree", e))
        } else {
            Ok(self.inner.live.clone())
        }
    }

    fn install(&self, meta: &SnapshotMeta, bytes: Vec<u8>) -> Result<(), StorageError> {
        let inner = &self.inner;
        let blob = read_blob(&bytes)?;
        let mut saved_applied = inner.checkpointing.lock().expect("checkpoint lock");
        let mut st = inner.state.lock().expect("sm lock");
        let shadow = !inner.shared.outbox.is_empty() || inner.shared.needs_resync();
        if shadow {
            // Our own pending changes cannot be replayed onto this history: keep them live,
            // follow the cluster in the shadow tree, and ask for a destructive resync.
            let dir = inner.dir.join(SHADOW_DIR);
            let _ = std::fs::remove_dir_all(&dir);
            let tree = ConfTree::open(&dir).map_err(|e| io_err("shadow tree", e))?;
            conf::snapshot::install(&tree, &bytes, |_, _| true)
                .map_err(|e| io_err("installing the snapshot", e))?;
            inner.shared.require_resync();
        } else {
            let _tree = inner.shared.tree_lock.lock().expect("tree lock");
            conf::snapshot::install(&inner.live, &bytes, |p, k| (inner.replicated)(p, k))
                .map_err(|e| io_err("installing the snapshot", e))?;
            inner.shared.replicated_at(now_ms());
        }
        durable::write_private(&inner.dir.join(SNAPSHOT_FILE), &bytes)
            .map_err(|e| io_err("keeping the snapshot", e))?;
        st.applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.data = blob.data;
        st.shadow = shadow;
        self.save(&st)?;
        *saved_applied = st.applied;
        self.published(&st);
        info!(last = ?meta.last_log_id, shadow, "installed a snapshot");
        Ok(())
    }
}

/// Errors that depend on this member's disk rather than on the change (which every member
/// would refuse alike).
fn is_local_failure(e: &conf::ConfError) -> bool {
    use conf::ConfError as E;
    !matches!(
        e,
        E::ConfType { .. }
            | E::AppName { .. }
            | E::UserName { .. }
            | E::FileName { .. }
            | E::Stanza { .. }
            | E::Key { .. }
            | E::Value { .. }
            | E::MetaStanza { .. }
            | E::TargetScope { .. }
            | E::OpTarget { .. }
            | E::ReservedFileType { .. }
            | E::RelPath { .. }
    )
}

fn read_blob(bytes: &[u8]) -> Result<SnapshotBlob, StorageError> {
    let meta = conf::snapshot::read_meta(bytes).map_err(|e| io_err("reading the snapshot", e))?;
    serde_json::from_slice(&meta).map_err(|e| io_err("reading the snapshot metadata", e))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // A snapshot lets the log be purged: the state it covers must be durable here too.
            this.checkpoint()?;
            let inner = &this.inner;
            let st = inner.state.lock().expect("sm lock");
            let tree = this.tree_for(&st)?;
            let _lock = inner.shared.tree_lock.lock().expect("tree lock");
            let files: Vec<RelPath> = tree
                .replicable_files()
                .map_err(|e| io_err("listing the tree", e))?
                .into_iter()
                .filter(|(p, k)| st.shadow || (inner.replicated)(p, k))
                .map(|(p, _)| p)
                .collect();
            let last = st.applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: st.membership.clone(),
                snapshot_id: format!(
                    "{}-{}-{}",
                    last.map_or(0, |l| l.leader_id.term),
                    last.map_or(0, |l| l.index),
                    now_ms()
                ),
            };
            let blob = serde_json::to_vec(&SnapshotBlob { meta: meta.clone(), data: st.data.clone() })
                .expect("snapshot metadata serializes");
            let bytes =
                conf::snapshot::pack(&tree, &files, &blob).map_err(|e| io_err("packing the snapshot", e))?;
            durable::write_private(&inner.dir.join(SNAPSHOT_FILE), &bytes)
                .map_err(|e| io_err("saving the snapshot", e))?;
            info!(files = files.len(), bytes = bytes.len(), last = ?last, "built a snapshot");
            Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
        })
        .await
        .map_err(|e| io_err("snapshot task", e))?
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.install(&meta, snapshot.into_inner()))
            .await
            .map_err(|e| io_err("install task", e))?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let bytes = match std::fs::read(self.inner.dir.join(SNAPSHOT_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading the snapshot", e)),
        };
        let blob = read_blob(&bytes)?;
        Ok(Some(Snapshot { meta: blob.meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

impl StateMachine {
    fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Response>, StorageError> {
        let inner = &self.inner;
        let mut st = inner.state.lock().expect("sm lock");
        let mut responses = Vec::with_capacity(entries.len());
        // All conf changes of the batch go to the tree in one pass (each file once, one
        // round of fsyncs); the other entries answer at once.
        let mut changes = Vec::new();
        let mut spans = Vec::with_capacity(entries.len());
        let mut remote_changes = false;
        let mut own_batches = Vec::new();
        for entry in &entries {
            let start = changes.len();
            let mut resp = Response::default();
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Request::Changes { origin, batch, changes: c, .. }) => {
                    if st.data.first_time(*batch) {
                        changes.extend(c.iter().cloned());
                        remote_changes |= *origin != inner.me;
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
                    st.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            spans.push((start, changes.len()));
            responses.push(resp);
            st.applied = Some(entry.log_id);
        }
        if !changes.is_empty() {
            let tree = self.tree_for(&st)?;
            let results = {
                let _lock = (!st.shadow).then(|| inner.shared.tree_lock.lock().expect("tree lock"));
                tree.apply_batch(&changes, false)
            };
            let mut dirty = inner.dirty.lock().expect("dirty lock");
            for change in &changes {
                if let Ok(rel) = change.rel_path() {
                    let path = tree.root().join(rel.as_path());
                    dirty.extend(path.parent().map(Path::to_path_buf));
                    dirty.insert(path);
                }
            }
            for ((start, end), resp) in spans.iter().zip(responses.iter_mut()) {
                for (i, result) in results[*start..*end].iter().enumerate() {
                    match result {
                        Ok(true) => resp.changed += 1,
                        Ok(false) => {}
                        Err(e) => {
                            warn!(change = %changes[start + i], error = %e, "a committed change could not be applied here");
                            if is_local_failure(e) {
                                // Not the change's fault (a disk error, a hand-broken file):
                                // this member now differs from the others; say so.
                                inner.shared.set_error(format!(
                                    "committed change `{}` could not be applied here: {e}",
                                    changes[start + i]
                                ));
                            }
                            resp.refused.push((i as u32, e.to_string()));
                        }
                    }
                }
            }
            if remote_changes && !st.shadow {
                inner.shared.replicated_at(now_ms());
            }
        }
        // Our own batches that were waiting in the outbox are committed now.
        for batch in own_batches {
            if let Err(e) = inner.shared.outbox.remove_batch(batch) {
                warn!(error = %e, "a committed batch could not leave the outbox; it will be offered again and applied once");
            }
        }
        self.published(&st);
        Ok(responses)
    }
}
