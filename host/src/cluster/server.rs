//! The member's side of the peer transport: answers pings and cluster requests on each
//! authenticated connection, one request at a time (a peer opens one connection per stream).
//!
//! Must never: let one bad request end the listener (errors end only that connection).

use std::sync::Arc;

use openraft::error::{Fatal, RaftError};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::node::ClusterNode;
use super::rpc::{self, RPC_REQUEST, Refusal, RpcRequest, RpcResponse};
use crate::peer::ping::{PING, PONG};
use crate::peer::{Frame, PeerConnection, PeerError};

/// Serves one connection until the peer leaves or `shutdown`; `first` is a frame already
/// read from it (by the daemon's dispatcher), if any.
pub async fn serve_connection(
    node: Arc<ClusterNode>,
    mut conn: PeerConnection,
    mut first: Option<Frame>,
    shutdown: CancellationToken,
) -> Result<(), PeerError> {
    loop {
        let frame = match first.take() {
            Some(f) => Some(f),
            None => tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                frame = conn.read_frame() => frame?,
            },
        };
        let answer = match frame {
            None => return Ok(()),
            Some(Frame { kind: PING, body }) => Frame::new(PONG, body),
            Some(Frame { kind: RPC_REQUEST, body }) => {
                let req = rpc::decode_request(&body)
                    .map_err(|_| PeerError::Malformed("undecodable cluster request"))?;
                let resp = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    resp = node.handle(req) => resp,
                };
                rpc::response_frame(&resp).map_err(|_| PeerError::Malformed("unencodable cluster answer"))?
            }
            Some(_) => return Err(PeerError::Malformed("unexpected frame kind")),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            written = conn.write_frame(&answer) => written?,
        }
    }
}

fn stopped<E: std::error::Error>() -> RaftError<u64, E> {
    RaftError::Fatal(Fatal::Stopped)
}

impl ClusterNode {
    /// Answers one request.
    pub async fn handle(&self, req: RpcRequest) -> RpcResponse {
        let joined = self.joined().await;
        match req {
            RpcRequest::AppendEntries(r) => RpcResponse::AppendEntries(match &joined {
                Some(j) => j.raft.append_entries(r).await,
                None => Err(stopped()),
            }),
            RpcRequest::Vote(r) => RpcResponse::Vote(match &joined {
                Some(j) => j.raft.vote(r).await,
                None => Err(stopped()),
            }),
            RpcRequest::InstallSnapshot(r) => RpcResponse::InstallSnapshot(match &joined {
                // The chunks go to a file that refuses a gap or growth past this member's
                // limit (`SnapshotFile`), so a hostile offset costs no memory.
                Some(j) => j.raft.install_snapshot(r).await,
                None => Err(stopped()),
            }),
            RpcRequest::Propose(r) => RpcResponse::Proposed(match &joined {
                Some(j) => self.write_as_captain(j, r).await,
                None => Err(Refusal::Refused("not in a cluster".into())),
            }),
            RpcRequest::SyncCheck { applied } => match &joined {
                Some(j) => RpcResponse::SyncCheck {
                    common: self.shares_commit(j, applied),
                    captain_first: j.log.first_index(),
                    captain_last: j.log.last_log_id().map(|l| l.index),
                },
                None => RpcResponse::SyncCheck { common: false, captain_first: None, captain_last: None },
            },
            RpcRequest::Probe => RpcResponse::Probe(self.probe_answer().await),
            RpcRequest::Join { cluster_id, node_id, captain } => {
                debug!(%cluster_id, node_id, captain = %captain, "asked to join");
                RpcResponse::Joined(self.join(cluster_id, node_id, captain).await.map_err(|e| match e {
                    super::error::ClusterError::Refused(r) => r,
                    other => Refusal::Refused(other.to_string()),
                }))
            }
            RpcRequest::AddMember { peer } => RpcResponse::MemberAdded(match &joined {
                Some(j) if self.is_captain(j).await => self.add_member_as_captain(j, peer).await,
                _ => Err(Refusal::NotCaptain { leader: None }),
            }),
            RpcRequest::RemoveMember { node_id } => RpcResponse::MemberRemoved(match &joined {
                Some(j) if self.is_captain(j).await => self.remove_member_as_captain(j, node_id).await,
                _ => Err(Refusal::NotCaptain { leader: None }),
            }),
            RpcRequest::Removed { cluster_id, node_id } => {
                let _ = self.removed(&cluster_id, node_id).await;
                RpcResponse::Ack
            }
            RpcRequest::FetchSnapshot { snapshot_id, offset } => RpcResponse::SnapshotChunk(match &joined {
                Some(j) => self.snapshot_chunk(j, snapshot_id, offset).await,
                None => Err(Refusal::Refused("not in a cluster".into())),
            }),
            RpcRequest::Report => RpcResponse::Report(Box::new(self.report().await)),
        }
    }
}
