//! Snapshots of the state machine (the seed's tarball): building one from the tree into a
//! file, installing one from a file (into the live tree, or into the shadow tree while this
//! member still holds pending changes), a new member's bootstrap from the captain's, and the
//! destructive resync that promotes the shadow tree.
//!
//! Must never: hold a snapshot in memory whole, install over pending local changes (they
//! would vanish without the operator asking), or record an applied id before the installed
//! files are durable.

// openraft's storage traits return its `StorageError` (large); these methods share it.
#![allow(clippy::result_large_err)]

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use openraft::{RaftSnapshotBuilder, Snapshot};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::shared::now_ms;
use super::snapshot_file::SnapshotFile;
use super::state_machine::{SmData, StateMachine, io_err};
use super::types::{SnapshotMeta, StorageError, TypeConfig};
use crate::conf::{self, ConfTree, RelPath};
use crate::durable;

/// The current snapshot, beside state.json.
pub(super) const SNAPSHOT_FILE: &str = "snapshot.tar.zst";
pub(super) const SHADOW_DIR: &str = "shadow";
/// Where an install stages the snapshot's files before it touches the tree.
const STAGING_DIR: &str = "staging";
/// Files of snapshots being received (by raft's chunks).
pub(super) const INCOMING_PREFIX: &str = "incoming.";
/// The live tree's replicated files, packed while a resync replaces them (put back if the
/// install stops halfway).
const BEFORE_RESYNC_FILE: &str = "before-resync.tar.zst";
/// The shadow tree packed for a resync to install.
const SHADOW_FILE: &str = "shadow.tar.zst";

#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotBlob {
    pub(super) meta: SnapshotMeta,
    pub(super) data: SmData,
}

impl StateMachine {
    /// Bootstrap of a new member: installs the captain's snapshot (the file at `path`, in the
    /// same file system as the state machine's folder) before raft starts here, so raft only
    /// sends the log after it.
    pub fn bootstrap(&self, path: &Path) -> Result<SnapshotMeta, StorageError> {
        let blob = read_blob(open(path)?, self.inner.max_snapshot_bytes)?;
        let meta = blob.meta.clone();
        self.install(&meta, path)?;
        Ok(meta)
    }

    /// Builds a snapshot of what is applied now and returns it (its file, for reading).
    pub async fn fresh_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.build_snapshot().await
    }

    /// `cluster.max_snapshot_bytes`.
    pub fn max_snapshot_bytes(&self) -> u64 {
        self.inner.max_snapshot_bytes
    }

    /// Destructive resync: drops the shadow's pending state into the live tree (or, if no
    /// snapshot arrived yet, installs the captain's snapshot at `captain_snapshot` there),
    /// replacing every replicated file.
    pub fn resync(&self, captain_snapshot: Option<&Path>) -> Result<(), StorageError> {
        let inner = &self.inner;
        let cap = inner.max_snapshot_bytes;
        let mut saved_applied = inner.checkpointing.lock().expect("checkpoint lock");
        let mut st = inner.state.lock().expect("sm lock");
        let _tree = inner.shared.tree_lock.lock().expect("tree lock");
        let shadow_file = inner.dir.join(SHADOW_FILE);
        let source = if st.shadow {
            let shadow = ConfTree::open(inner.dir.join(SHADOW_DIR)).map_err(|e| io_err("shadow tree", e))?;
            let files: Vec<RelPath> = shadow
                .replicable_files()
                .map_err(|e| io_err("shadow tree", e))?
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            pack_file(&shadow, &files, b"{}", &shadow_file, cap)
                .map_err(|e| io_err("packing the shadow tree", e))?;
            shadow_file.clone()
        } else {
            let path =
                captain_snapshot.ok_or_else(|| io_err("resync", "no snapshot from the captain yet"))?;
            if read_blob(open(path)?, cap)?.meta.last_log_id < st.applied {
                return Err(io_err(
                    "resync",
                    "the captain's snapshot is older than what this member applied; try again",
                ));
            }
            path.to_path_buf()
        };
        // All or nothing: the live replicated files are kept aside first (in a file, not in
        // memory), and put back if the install stops halfway (a full disk), so a failed
        // resync leaves the member as it was.
        let live_files: Vec<RelPath> = inner
            .live
            .replicable_files()
            .map_err(|e| io_err("listing the live tree", e))?
            .into_iter()
            .filter(|(p, k)| (inner.replicated)(p, k))
            .map(|(p, _)| p)
            .collect();
        let before = inner.dir.join(BEFORE_RESYNC_FILE);
        pack_file(&inner.live, &live_files, b"{}", &before, cap)
            .map_err(|e| io_err("keeping the live tree aside", e))?;
        let staging = inner.dir.join(STAGING_DIR);
        let replicated = |p: &RelPath, k: &conf::ConfChangeKey| (inner.replicated)(p, k);
        let installed = open(&source).and_then(|src| {
            conf::snapshot::install(&inner.live, src, &staging, replicated, cap)
                .map_err(|e| io_err("installing the snapshot", e))
        });
        if let Err(e) = installed {
            let back = open(&before).and_then(|src| {
                conf::snapshot::install(&inner.live, src, &staging, replicated, cap)
                    .map_err(|e| io_err("putting the live tree back", e))
            });
            let _ = std::fs::remove_file(&before);
            let _ = std::fs::remove_file(&shadow_file);
            if let Err(back) = back {
                return Err(io_err(
                    "installing the snapshot",
                    format!("{e}; putting the live tree back also failed ({back}): run the resync again"),
                ));
            }
            return Err(e);
        }
        let _ = std::fs::remove_file(&before);
        let _ = std::fs::remove_file(&shadow_file);
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

    /// Installs the snapshot in the file at `path` (into the live tree, or the shadow tree
    /// while this member holds pending changes) and keeps it as this member's snapshot.
    pub(super) fn install(&self, meta: &SnapshotMeta, path: &Path) -> Result<(), StorageError> {
        let inner = &self.inner;
        let cap = inner.max_snapshot_bytes;
        let blob = read_blob(open(path)?, cap)?;
        let mut saved_applied = inner.checkpointing.lock().expect("checkpoint lock");
        let mut st = inner.state.lock().expect("sm lock");
        let shadow = !inner.shared.outbox.is_empty() || inner.shared.needs_resync();
        let staging = inner.dir.join(STAGING_DIR);
        if shadow {
            // Our own pending changes cannot be replayed onto this history: keep them live,
            // follow the cluster in the shadow tree, and ask for a destructive resync.
            let dir = inner.dir.join(SHADOW_DIR);
            let _ = std::fs::remove_dir_all(&dir);
            let tree = ConfTree::open(&dir).map_err(|e| io_err("shadow tree", e))?;
            conf::snapshot::install(&tree, open(path)?, &staging, |_, _| true, cap)
                .map_err(|e| io_err("installing the snapshot", e))?;
            inner.shared.require_resync();
        } else {
            let _tree = inner.shared.tree_lock.lock().expect("tree lock");
            conf::snapshot::install(&inner.live, open(path)?, &staging, |p, k| (inner.replicated)(p, k), cap)
                .map_err(|e| io_err("installing the snapshot", e))?;
            inner.shared.replicated_at(now_ms());
        }
        let kept = inner.dir.join(SNAPSHOT_FILE);
        if path != kept {
            File::open(path)
                .and_then(|f| f.sync_all())
                .and_then(|()| durable::rename_durable(path, &kept))
                .map_err(|e| io_err("keeping the snapshot", e))?;
        }
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

impl StateMachine {
    /// The snapshot file kept here, opened once: its meta and its bytes come from the same
    /// file even if a new snapshot replaces the path meanwhile.
    pub(super) fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        use std::io::Seek;
        let path = self.inner.dir.join(SNAPSHOT_FILE);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading the snapshot", e)),
        };
        let blob = read_blob(std::io::BufReader::new(&file), self.inner.max_snapshot_bytes)?;
        file.rewind().map_err(|e| io_err("reading the snapshot", e))?;
        let data = SnapshotFile::from_std(file, &path).map_err(|e| io_err("reading the snapshot", e))?;
        Ok(Some(Snapshot { meta: blob.meta, snapshot: Box::new(data) }))
    }
}

/// Removes files of snapshots that were being received (a stream replaced or cut off, or a
/// daemon that stopped meanwhile).
pub(super) fn remove_incoming(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(INCOMING_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A snapshot file, buffered for reading.
fn open(path: &Path) -> Result<BufReader<File>, StorageError> {
    File::open(path).map(BufReader::new).map_err(|e| io_err("opening the snapshot", e))
}

/// Packs `files` of `tree` into a new file replacing `path` (private, durable).
fn pack_file(tree: &ConfTree, files: &[RelPath], meta: &[u8], path: &Path, cap: u64) -> std::io::Result<()> {
    durable::write_private_with(path, |file| {
        let out = conf::snapshot::pack_to(tree, files, meta, BufWriter::new(file), cap)
            .map_err(std::io::Error::other)?;
        out.into_inner().map_err(|e| e.into_error())?.flush()
    })
}

/// The raft-layer metadata of the snapshot read from `src`.
pub(super) fn read_blob(src: impl Read, cap: u64) -> Result<SnapshotBlob, StorageError> {
    let meta = conf::snapshot::read_meta(src, cap).map_err(|e| io_err("reading the snapshot", e))?;
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
            let path = inner.dir.join(SNAPSHOT_FILE);
            pack_file(&tree, &files, &blob, &path, inner.max_snapshot_bytes)
                .map_err(|e| io_err("saving the snapshot", e))?;
            // Opened before the locks go: no newer snapshot can have replaced it yet.
            let file = File::open(&path).map_err(|e| io_err("reading the snapshot", e))?;
            let data = SnapshotFile::from_std(file, &path).map_err(|e| io_err("reading the snapshot", e))?;
            info!(files = files.len(), bytes = data.len(), last = ?last, "built a snapshot");
            Ok(Snapshot { meta, snapshot: Box::new(data) })
        })
        .await
        .map_err(|e| io_err("snapshot task", e))?
    }
}
