//! Snapshots of the state machine (the seed's tarball): building one from the tree, installing
//! one (into the live tree, or into the shadow tree while this member still holds pending
//! changes), a new member's bootstrap from the captain's, and the destructive resync that
//! promotes the shadow tree.
//!
//! Must never: install over pending local changes (they would vanish without the operator
//! asking), or record an applied id before the installed files are durable.

// openraft's storage traits return its `StorageError` (large); these methods share it.
#![allow(clippy::result_large_err)]

use std::io::Cursor;

use openraft::{RaftSnapshotBuilder, Snapshot};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::shared::now_ms;
use super::state_machine::{SmData, StateMachine, io_err};
use super::types::{SnapshotMeta, StorageError, TypeConfig};
use crate::conf::{self, ConfTree, RelPath};
use crate::durable;

pub(super) const SNAPSHOT_FILE: &str = "snapshot.tar.zst";
pub(super) const SHADOW_DIR: &str = "shadow";

#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotBlob {
    pub(super) meta: SnapshotMeta,
    pub(super) data: SmData,
}
impl StateMachine {
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
        // All or nothing: the live replicated files are kept aside first, and put back if the
        // install stops halfway (a full disk), so a failed resync leaves the member as it was.
        let live_files: Vec<RelPath> = inner
            .live
            .replicable_files()
            .map_err(|e| io_err("listing the live tree", e))?
            .into_iter()
            .filter(|(p, k)| (inner.replicated)(p, k))
            .map(|(p, _)| p)
            .collect();
        let before = conf::snapshot::pack(&inner.live, &live_files, b"{}")
            .map_err(|e| io_err("keeping the live tree aside", e))?;
        if let Err(e) = conf::snapshot::install(&inner.live, &bytes, |p, k| (inner.replicated)(p, k)) {
            if let Err(back) = conf::snapshot::install(&inner.live, &before, |p, k| (inner.replicated)(p, k))
            {
                return Err(io_err(
                    "installing the snapshot",
                    format!("{e}; putting the live tree back also failed ({back}): run the resync again"),
                ));
            }
            return Err(io_err("installing the snapshot", e));
        }
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

    pub(super) fn install(&self, meta: &SnapshotMeta, bytes: Vec<u8>) -> Result<(), StorageError> {
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

pub(super) fn read_blob(bytes: &[u8]) -> Result<SnapshotBlob, StorageError> {
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
