//! openraft's network over the peer transport: one [`Sender`] per replication stream or
//! vote, raft RPCs as cluster messages. Unreachable members back off; a member's own address
//! is never dialled (the transport also refuses a connection to itself).

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::append::Sender;
use super::client::{CallError, Dialer};
use super::rpc::{RpcRequest, RpcResponse};
use super::types::{Member, NodeId, TypeConfig};

/// Makes a client per target.
#[derive(Clone)]
pub struct Network {
    pub dialer: Dialer,
    /// Entry bytes per AppendEntries.
    pub max_append_bytes: u64,
    /// How long one AppendEntries with entries may take.
    pub append_timeout: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = RaftClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> RaftClient {
        RaftClient {
            target,
            node: node.clone(),
            sender: Sender::new(
                node.peer.clone(),
                self.dialer.clone(),
                self.max_append_bytes,
                self.append_timeout,
            ),
        }
    }
}

pub struct RaftClient {
    target: NodeId,
    node: Member,
    sender: Sender,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

fn rpc_error<E: std::error::Error>(e: CallError) -> RpcErr<E> {
    match e {
        // Nobody there: let openraft back off rather than spin.
        CallError::Resolve(_)
        | CallError::Ourselves(_)
        | CallError::Peer { .. }
        | CallError::Closed { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Timeout { .. }
        | CallError::Codec { .. }
        | CallError::Unexpected { .. }
        | CallError::Lost { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftClient {
    fn remote<E: std::error::Error>(&self, e: RaftError<NodeId, E>) -> RpcErr<E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e))
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
        match self.sender.append(rpc, option.hard_ttl()).await.map_err(rpc_error)? {
            RpcResponse::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected("append-entries", &other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let req = RpcRequest::InstallSnapshot(rpc);
        match self.sender.call(req, option.hard_ttl()).await.map_err(rpc_error)? {
            RpcResponse::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected("install-snapshot", &other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.sender.call(RpcRequest::Vote(rpc), option.hard_ttl()).await.map_err(rpc_error)? {
            RpcResponse::Vote(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected("vote", &other)),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // A member that is down is retried a few times a second, not in a tight loop.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
