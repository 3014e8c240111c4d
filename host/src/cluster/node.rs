//! One member of the configuration cluster: its identity (cluster id, node id, removed or
//! not), its raft instance once it belongs to a cluster, and the lifecycle steps `init`
//! (first member) and `join` (a captain brought us in: download the tarball, then follow the
//! log). Proposing, membership changes, recovery and purge live in their own files.
//!
//! Must never: reuse a node id, start raft for a member that was removed (it must be cleaned
//! first), or dial its own address.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{CallError, Dialer, PeerClient};
use super::config::ClusterConfig;
use super::error::ClusterError;
use super::log_store::{LogStore, LogStoreConfig};
use super::network::Network;
use super::outbox::Outbox;
use super::pending_base::PendingBase;
use super::rpc::{ProbeAnswer, RpcRequest, RpcResponse};
use super::shared::Shared;
use super::state_machine::{ReplicatedFiles, StateMachine};
use super::types::{Member, NodeId, Raft, TypeConfig};
use crate::conf::{ConfChangeKey, ConfTree, RelPath, TargetKind};
use crate::durable;
use crate::plugin::Plugins;

const MEMBER_FILE: &str = "member.json";
/// The captain's snapshot while a join or a destructive resync downloads it.
pub(super) const DOWNLOAD_FILE: &str = "download.tar.zst";

/// Who this host is in a cluster, saved in `<data>/cluster/member.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: NodeId,
    /// Removed members keep this file (so they cannot silently rejoin) until cleaned.
    pub removed: bool,
}

/// Raft and the parts it owns, present once this host belongs to a cluster.
#[derive(Clone)]
pub struct Joined {
    pub identity: Identity,
    pub raft: Raft,
    pub sm: StateMachine,
    pub log: LogStore<TypeConfig>,
}

pub struct ClusterNode {
    pub(super) config: ClusterConfig,
    pub(super) dir: PathBuf,
    pub(super) me: Member,
    pub(super) dialer: Dialer,
    pub(super) plugins: Plugins,
    pub(super) tree: ConfTree,
    pub(super) shared: Arc<Shared>,
    pub(super) identity: RwLock<Option<Identity>>,
    pub(super) joined: RwLock<Option<Joined>>,
    /// Idle clients per peer address, so concurrent forwards each get a connection.
    clients: Mutex<HashMap<String, Vec<PeerClient>>>,
    /// One outbox push or destructive resync at a time.
    pub(super) push_lock: Mutex<()>,
}

impl ClusterNode {
    /// Opens the member state under `dir` and, if this host already belongs to a cluster,
    /// starts raft.
    pub async fn open(
        config: ClusterConfig,
        dir: &Path,
        tree: ConfTree,
        me: Member,
        dialer: Dialer,
        plugins: Plugins,
    ) -> Result<Arc<Self>, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::io(dir, e))?;
        let outbox = Outbox::open(dir.join("outbox.json"))?;
        let shared = Arc::new(Shared::new(outbox, PendingBase::open(dir), false));
        if shared.outbox.is_empty() {
            // Settling was cut short (a crash): finish it.
            let _lock = shared.tree_lock.lock().expect("tree lock");
            if let Err(e) = shared.base.settle(&tree) {
                warn!(error = %e, "files with committed pending changes keep their order for now");
            }
        }
        let identity = read_identity(dir)?;
        let node = Arc::new(Self {
            config,
            dir: dir.to_path_buf(),
            me,
            dialer,
            plugins,
            tree,
            shared,
            identity: RwLock::new(identity.clone()),
            joined: RwLock::new(None),
            clients: Mutex::new(HashMap::new()),
            push_lock: Mutex::new(()),
        });
        match identity {
            Some(id) if id.removed => {
                info!(
                    node_id = id.node_id,
                    "this member was removed from its cluster; run `tandem cluster clean` before adding it again"
                );
            }
            Some(id) => {
                node.start_raft(id).await?;
            }
            None => info!(
                "not in a cluster yet: `tandem cluster init` here, or `tandem cluster add-member` on a member"
            ),
        }
        Ok(node)
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn tree(&self) -> &ConfTree {
        &self.tree
    }

    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    pub async fn joined(&self) -> Option<Joined> {
        self.joined.read().await.clone()
    }

    pub async fn identity(&self) -> Option<Identity> {
        self.identity.read().await.clone()
    }

    pub(super) async fn require_joined(&self) -> Result<Joined, ClusterError> {
        self.joined().await.ok_or(ClusterError::NotInCluster)
    }

    /// The files a snapshot carries: what the whitelist plugin replicates.
    pub fn replicated_files(plugins: Plugins) -> ReplicatedFiles {
        Arc::new(move |_path: &RelPath, key: &ConfChangeKey| {
            if key.target_kind == TargetKind::Meta {
                // Permission files hold objects of many types; they travel whole.
                return true;
            }
            let change = crate::plugin::ConfChange {
                conf_type: key.conf_type.clone(),
                scope: super::whitelist::plugin_scope(&key.scope),
                meta: false,
            };
            plugins.replicates(&change).unwrap_or(false)
        })
    }

    async fn start_raft(&self, identity: Identity) -> Result<Joined, ClusterError> {
        // A replication read clones no more entries than one append message carries.
        let log_config =
            LogStoreConfig { max_read_bytes: self.config.max_append_bytes, ..LogStoreConfig::default() };
        let log = LogStore::open(&self.dir.join("log"), log_config)?;
        let sm = StateMachine::open(
            &self.dir.join("sm"),
            self.tree.clone(),
            self.shared.clone(),
            Self::replicated_files(self.plugins.clone()),
            identity.node_id,
            self.config.max_snapshot_bytes,
        )?;
        let raft_config = self.config.raft(&identity.cluster_id).map_err(ClusterError::Config)?;
        let network = Network {
            dialer: self.dialer.clone(),
            max_append_bytes: self.config.max_append_bytes,
            append_timeout: self.config.append_timeout(),
        };
        let raft = Raft::new(identity.node_id, Arc::new(raft_config), network, log.clone(), sm.clone())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let joined = Joined { identity: identity.clone(), raft, sm, log };
        *self.joined.write().await = Some(joined.clone());
        info!(cluster = %identity.cluster_id, node_id = identity.node_id, "commit log started");
        Ok(joined)
    }

    /// Makes this host the first member of a new cluster (node id 1).
    pub async fn init(&self) -> Result<Identity, ClusterError> {
        let mut guard = self.identity.write().await;
        if let Some(id) = guard.as_ref() {
            return Err(ClusterError::AlreadyMember {
                cluster_id: id.cluster_id.clone(),
                removed: id.removed,
            });
        }
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).expect("the OS random source works");
        let identity = Identity { cluster_id: hex(&raw), node_id: 1, removed: false };
        write_identity(&self.dir, &identity)?;
        *guard = Some(identity.clone());
        drop(guard);
        let joined = self.start_raft(identity.clone()).await?;
        joined.sm.set_cluster(&identity.cluster_id)?;
        let members = std::collections::BTreeMap::from([(1, self.me.clone())]);
        joined.raft.initialize(members).await.map_err(|e| ClusterError::Raft(e.to_string()))?;
        info!(cluster = %identity.cluster_id, "initialised a new cluster; this member is node 1");
        Ok(identity)
    }

    /// Called by a captain: become node `node_id` of `cluster_id`. Downloads the captain's
    /// tarball and installs it before raft starts, so only the log after it is replayed.
    pub async fn join(
        &self,
        cluster_id: String,
        node_id: NodeId,
        captain: Member,
    ) -> Result<(), ClusterError> {
        let mut guard = self.identity.write().await;
        if let Some(id) = guard.as_ref() {
            return Err(ClusterError::AlreadyMember {
                cluster_id: id.cluster_id.clone(),
                removed: id.removed,
            });
        }
        // Leftovers of an earlier membership (an interrupted clean or join) must not be
        // taken for this one's log or vote.
        for name in ["log", "sm"] {
            let _ = std::fs::remove_dir_all(self.dir.join(name));
        }
        // Downloaded beside `sm/` (one file system: installing moves it there), chunk by chunk.
        let download = self.dir.join(DOWNLOAD_FILE);
        let size = match self.download_snapshot(&captain.peer, &download).await {
            Ok(size) => size,
            Err(e) => {
                let _ = std::fs::remove_file(&download);
                return Err(e);
            }
        };
        let sm = StateMachine::open(
            &self.dir.join("sm"),
            self.tree.clone(),
            self.shared.clone(),
            Self::replicated_files(self.plugins.clone()),
            node_id,
            self.config.max_snapshot_bytes,
        )?;
        let path = download.clone();
        let meta = tokio::task::spawn_blocking(move || sm.bootstrap(&path).map_err(ClusterError::from))
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()));
        let _ = std::fs::remove_file(&download);
        let meta = meta??;
        info!(bytes = size, last = ?meta.last_log_id, "installed the captain's snapshot");
        let identity = Identity { cluster_id, node_id, removed: false };
        write_identity(&self.dir, &identity)?;
        *guard = Some(identity.clone());
        drop(guard);
        self.start_raft(identity).await?;
        Ok(())
    }

    /// Marks this member removed and stops its raft; it keeps its files.
    pub async fn removed(&self, cluster_id: &str, node_id: NodeId) -> Result<(), ClusterError> {
        let mut guard = self.identity.write().await;
        match guard.as_mut() {
            Some(id) if id.cluster_id == cluster_id && id.node_id == node_id => {
                id.removed = true;
                write_identity(&self.dir, id)?;
            }
            _ => return Ok(()),
        }
        drop(guard);
        if let Some(j) = self.joined.write().await.take() {
            j.sm.stop();
            let _ = j.raft.shutdown().await;
        }
        info!(node_id, "removed from the cluster; run `tandem cluster clean` before adding this host again");
        Ok(())
    }

    /// Forgets the cluster (commit log, snapshot, outbox) so the host can be added again. The
    /// conf tree stays; a new join replaces its replicated files with the captain's.
    /// `force` cleans a member that was removed without being told (it was down then).
    pub async fn clean(&self, force: bool) -> Result<(), ClusterError> {
        let mut guard = self.identity.write().await;
        if let Some(id) = guard.as_ref()
            && !id.removed
            && !force
        {
            // Wiping a voter's log (and its vote) while the cluster counts on it would cost
            // the cluster a vote, or let it vote twice in one term.
            return Err(ClusterError::Invalid(format!(
                "this host is node {} of cluster {}: remove it first (`tandem cluster remove-member {}` on a member), then clean it (`--force` if it was removed while down)",
                id.node_id, id.cluster_id, id.node_id
            )));
        }
        if let Some(j) = self.joined.write().await.take() {
            j.sm.stop();
            let _ = j.raft.shutdown().await;
        }
        // The identity goes first: a crash midway leaves an unjoined host with leftovers,
        // never a member without its log.
        for name in [MEMBER_FILE, "log", "sm", "outbox.json", DOWNLOAD_FILE] {
            let path = self.dir.join(name);
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
        self.shared.outbox.clear()?;
        self.shared.base.discard();
        self.shared.resynced();
        *guard = None;
        info!("cluster state cleaned; this host can be added to a cluster again");
        Ok(())
    }

    pub async fn probe_answer(&self) -> ProbeAnswer {
        let id = self.identity().await;
        ProbeAnswer {
            name: self.me.name.clone(),
            api: self.me.api.clone(),
            cluster_id: id.as_ref().map(|i| i.cluster_id.clone()),
            node_id: id.as_ref().map(|i| i.node_id),
            removed: id.is_some_and(|i| i.removed),
        }
    }

    /// One request to the member at `addr`, on a pooled connection.
    pub(super) async fn call(&self, addr: &str, req: &RpcRequest) -> Result<RpcResponse, CallError> {
        let timeout = match req {
            // Joining downloads and installs the whole snapshot, chunk by chunk.
            RpcRequest::Join { .. } | RpcRequest::AddMember { .. } => self.config.join_timeout(),
            // A chunk; the first one of a download waits for the snapshot to be built.
            RpcRequest::FetchSnapshot { .. } => self.config.snapshot_timeout(),
            _ => self.config.commit_timeout(),
        };
        if addr == self.me.peer {
            return Err(CallError::Ourselves(addr.to_string()));
        }
        let pooled = self.clients.lock().await.get_mut(addr).and_then(Vec::pop);
        let was_pooled = pooled.is_some();
        let mut client = pooled.unwrap_or_else(|| PeerClient::new(addr, self.dialer.clone()));
        let mut result = client.call(req, timeout).await;
        if was_pooled && matches!(result, Err(CallError::Peer { .. } | CallError::Closed { .. })) {
            // The pooled connection went stale (the peer restarted): once more on a new one.
            result = client.call(req, timeout).await;
        }
        if result.is_ok() {
            self.clients.lock().await.entry(addr.to_string()).or_default().push(client);
        }
        result
    }

    /// Makes applied changes durable every `checkpoint_ms` until `shutdown`.
    pub async fn run_checkpoints(&self, shutdown: CancellationToken) {
        let period = std::time::Duration::from_millis(self.config.checkpoint_ms);
        self.every(period, shutdown, |j| async move {
            let sm = j.sm.clone();
            match tokio::task::spawn_blocking(move || sm.checkpoint().map_err(ClusterError::from)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "checkpoint failed; applied changes stay in the log"),
                Err(e) => warn!(error = %e, "checkpoint task failed"),
            }
        })
        .await
    }

    /// Runs `round` every `period` until `shutdown`; rounds are skipped while this host is not
    /// in a cluster. (The member's background jobs: recovery, purge, checkpoints.)
    pub(super) async fn every<F, Fut>(
        &self,
        period: std::time::Duration,
        shutdown: CancellationToken,
        mut round: F,
    ) where
        F: FnMut(Joined) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if let Some(j) = self.joined().await {
                round(j).await;
            }
        }
    }

    /// Stops raft and records a last checkpoint (daemon shutdown).
    pub async fn shutdown(&self) {
        if let Some(j) = self.joined.write().await.take() {
            j.sm.stop();
            let _ = j.raft.shutdown().await;
            let sm = j.sm.clone();
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || sm.checkpoint().map_err(ClusterError::from)).await
            {
                warn!(error = %e, "last checkpoint failed");
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_identity(dir: &Path) -> Result<Option<Identity>, ClusterError> {
    let path = dir.join(MEMBER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClusterError::Damaged { path, message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClusterError::io(&path, e)),
    }
}

fn write_identity(dir: &Path, identity: &Identity) -> Result<(), ClusterError> {
    let path = dir.join(MEMBER_FILE);
    let bytes = serde_json::to_vec_pretty(identity).expect("identity serializes");
    durable::write_private(&path, &bytes).map_err(|e| ClusterError::io(&path, e))
}
