//! The messages members exchange over the peer transport: raft's three RPCs, and the
//! member-level requests around them (propose on the captain, common-commit check, join,
//! removal, snapshot download, status). One request frame, one response frame.
//!
//! Must never: panic on a body a peer sent (decoding errors are values).

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::status::MemberReport;
use super::types::{LogId, Member, NodeId, Request, Response, TypeConfig};
use crate::peer::Frame;

/// Room in a peer frame beyond a snapshot chunk's bytes (its ids, offsets and raft's snapshot
/// meta): `cluster.snapshot_chunk_bytes` must stay this far below `peer.max_frame_bytes`.
pub const CHUNK_FRAME_SLACK: u64 = 1 << 20;

/// Frame kinds owned by the cluster (the transport's ping uses 1 and 2).
pub const RPC_REQUEST: u16 = 16;
pub const RPC_RESPONSE: u16 = 17;

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Commit this entry (the receiver must be the captain).
    Propose(Request),
    /// Is `applied` (the asker's last applied entry) still in the captain's log?
    SyncCheck {
        applied: Option<LogId>,
    },
    /// What are you? (cluster, node id, membership state.)
    Probe,
    /// Join cluster `cluster_id` as `node_id`; the captain adds you as a learner next.
    Join {
        cluster_id: String,
        node_id: NodeId,
        captain: Member,
    },
    /// Add the host at `peer` as a member (the receiver must be the captain).
    AddMember {
        peer: String,
    },
    /// Remove member `node_id` (the receiver must be the captain).
    RemoveMember {
        node_id: NodeId,
    },
    /// You were removed from cluster `cluster_id`.
    Removed {
        cluster_id: String,
        node_id: NodeId,
    },
    /// A chunk of the captain's snapshot (the seed's tarball), at `offset`. Without
    /// `snapshot_id` (a download starting), the captain builds a fresh snapshot and answers
    /// with its id; with one, the chunk must come from that snapshot (else `Refusal::Gone`).
    FetchSnapshot {
        snapshot_id: Option<String>,
        offset: u64,
    },
    /// Your own view of yourself, for the cluster status.
    Report,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Proposed(Result<(LogId, Response), Refusal>),
    SyncCheck { common: bool, captain_first: Option<u64>, captain_last: Option<u64> },
    Probe(ProbeAnswer),
    Joined(Result<(), Refusal>),
    MemberAdded(Result<NodeId, Refusal>),
    MemberRemoved(Result<(), Refusal>),
    Ack,
    SnapshotChunk(Result<SnapshotChunk, Refusal>),
    Report(Box<MemberReport>),
}

/// Bytes of the captain's snapshot `snapshot_id` (`total` bytes long) from `offset`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub snapshot_id: String,
    pub offset: u64,
    pub total: u64,
    /// As bytes, not a sequence of numbers: one copy per chunk, not a call per byte.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Why a member-level request was not carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("not the captain (captain: {})", .leader.as_ref().map(|(id, m)| format!("node {id} at {}", m.peer)).unwrap_or_else(|| "unknown".into()))]
    NotCaptain { leader: Option<(NodeId, Member)> },
    #[error("{0}")]
    Refused(String),
    #[error("failed: {0}")]
    Failed(String),
    /// The snapshot a download was reading was replaced by a newer one: start again.
    #[error("snapshot {0} is no longer the captain's current one")]
    Gone(String),
}

/// What a host says about itself when probed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub name: String,
    /// Its REST API address.
    pub api: String,
    pub cluster_id: Option<String>,
    pub node_id: Option<NodeId>,
    pub removed: bool,
}

/// Decoding or encoding failed.
#[derive(Debug, thiserror::Error)]
#[error("cluster message: {0}")]
pub struct CodecError(#[from] postcard::Error);

pub fn request_frame(req: &RpcRequest) -> Result<Frame, CodecError> {
    Ok(Frame::new(RPC_REQUEST, postcard::to_stdvec(req)?))
}

pub fn response_frame(resp: &RpcResponse) -> Result<Frame, CodecError> {
    Ok(Frame::new(RPC_RESPONSE, postcard::to_stdvec(resp)?))
}

pub fn decode_request(body: &[u8]) -> Result<RpcRequest, CodecError> {
    Ok(postcard::from_bytes(body)?)
}

pub fn decode_response(body: &[u8]) -> Result<RpcResponse, CodecError> {
    Ok(postcard::from_bytes(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_an_error() {
        let req =
            RpcRequest::SyncCheck { applied: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 9)) };
        let frame = request_frame(&req).unwrap();
        match decode_request(&frame.body).unwrap() {
            RpcRequest::SyncCheck { applied } => assert_eq!(applied.unwrap().index, 9),
            other => panic!("{other:?}"),
        }
        assert!(decode_request(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_request(&frame.body[..frame.body.len() - 1]).is_err());
    }
}
