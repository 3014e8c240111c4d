//! The raft type configuration of the captain commit log: what an entry carries (a batch of
//! conf changes, or a node-id allocation), what applying it answers, and what a member is.
//!
//! Must never: use serde attributes a non-self-describing format cannot carry (entries and
//! RPCs travel as postcard).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::conf::ConfChange;

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The commit log's types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = super::snapshot_file::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Where a member is reached. Identity is the node id (and the cluster secret); addresses
/// are only where to connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's peer transport address (`host:port`).
    pub peer: String,
    /// The member's REST API address (`host:port`), for status and operators.
    pub api: String,
    /// The member's configured name, for humans.
    pub name: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (peer {}, api {})", self.name, self.peer, self.api)
    }
}

/// One commit-log entry's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Conf changes made on member `origin` at `at_ms` (unix ms), applied in order. `batch`
    /// is random per submission and the same on every retry, so a batch proposed twice (a
    /// retry after a lost answer, an outbox push of a batch that had committed after all) is
    /// applied once.
    Changes { origin: NodeId, at_ms: u64, batch: u64, changes: Vec<ConfChange> },
    /// Reserves the next node id for a joining member; ids are never reused.
    AllocateNodeId { at_ms: u64 },
}

impl Request {
    /// When the entry was proposed, if it says.
    pub fn at_ms(&self) -> u64 {
        match self {
            Request::Changes { at_ms, .. } | Request::AllocateNodeId { at_ms } => *at_ms,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Changes { origin, changes, .. } => {
                write!(f, "{} change(s) from node {origin}", changes.len())
            }
            Request::AllocateNodeId { .. } => write!(f, "allocate a node id"),
        }
    }
}

/// What applying an entry answers to its proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// For `AllocateNodeId`: the id reserved.
    pub node_id: Option<NodeId>,
    /// For `Changes`: how many of them changed a file (the rest were already in effect or
    /// refused; refusals are logged).
    pub changed: u32,
    /// Per refused change: its index in the batch and why.
    pub refused: Vec<(u32, String)>,
}
