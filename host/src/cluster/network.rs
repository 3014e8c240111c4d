//! openraft's network over the peer transport: one [`PeerClient`] per replication stream or
//! vote, raft RPCs as cluster messages. Unreachable members back off; a member's own address
//! is never dialled (the transport also refuses a connection to itself).

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::client::{CallError, Dialer, PeerClient};
use super::rpc::{RpcRequest, RpcResponse};
use super::types::{Member, NodeId, Request, TypeConfig};
use crate::conf::Op;

/// Makes a client per target.
#[derive(Clone)]
pub struct Network {
    pub dialer: Dialer,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = RaftClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> RaftClient {
        RaftClient {
            target,
            node: node.clone(),
            client: PeerClient::new(node.peer.clone(), self.dialer.clone()),
        }
    }
}

pub struct RaftClient {
    target: NodeId,
    node: Member,
    client: PeerClient,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

impl RaftClient {
    async fn call<E: std::error::Error>(
        &mut self,
        req: RpcRequest,
        option: &RPCOption,
    ) -> Result<RpcResponse, RpcErr<E>> {
        self.client.call(&req, option.hard_ttl()).await.map_err(|e| match e {
            // Nobody there: let openraft back off rather than spin.
            CallError::Resolve(_)
            | CallError::Ourselves(_)
            | CallError::Peer { .. }
            | CallError::Closed { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Timeout { .. } | CallError::Codec { .. } | CallError::Unexpected { .. } => {
                RPCError::Network(NetworkError::new(&e))
            }
        })
    }

    fn remote<E: std::error::Error>(&self, e: RaftError<NodeId, E>) -> RpcErr<E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e))
    }
}

/// A generous estimate of an entry's encoded size.
fn entry_weight(entry: &openraft::Entry<TypeConfig>) -> u64 {
    const OVERHEAD: u64 = 256;
    match &entry.payload {
        openraft::EntryPayload::Normal(Request::Changes { changes, .. }) => changes
            .iter()
            .map(|c| match &c.op {
                Op::PutFile { content } => content.len() as u64 + OVERHEAD,
                Op::SetKey { stanza, key, value } => {
                    (stanza.len() + key.len() + value.len()) as u64 + OVERHEAD
                }
                _ => OVERHEAD,
            })
            .sum(),
        _ => OVERHEAD,
    }
}

fn unexpected<E: std::error::Error>(what: &str, got: &RpcResponse) -> RpcErr<E> {
    let e = std::io::Error::other(format!("expected a {what} answer, got {got:?}"));
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for RaftClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        // Entries carrying whole files can outgrow a frame: ask openraft for fewer at a time
        // rather than have the member refuse the frame again and again.
        let weight: u64 = rpc.entries.iter().map(entry_weight).sum();
        if rpc.entries.len() > 1 && weight > self.client.max_frame() / 2 {
            let hint = (rpc.entries.len() as u64 / 2).max(1);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        match self.call(RpcRequest::AppendEntries(rpc), &option).await? {
            RpcResponse::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected("append-entries", &other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.call(RpcRequest::InstallSnapshot(rpc), &option).await? {
            RpcResponse::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected("install-snapshot", &other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.call(RpcRequest::Vote(rpc), &option).await? {
            RpcResponse::Vote(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected("vote", &other)),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // A member that is down is retried a few times a second, not in a tight loop.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
