//! Membership changes, carried out by the captain (other members forward them): adding a
//! host (probe it, reserve a never-used node id through the log, have it join and download
//! the tarball, add it as a learner until it caught up, then as a voter) and removing one.

use std::collections::BTreeSet;

use openraft::ChangeMembers;
use tracing::info;

use super::error::ClusterError;
use super::node::{ClusterNode, Joined};
use super::rpc::{Refusal, RpcRequest, RpcResponse};
use super::shared::now_ms;
use super::status::UP_LAG_ENTRIES;
use super::types::{Member, NodeId, Request};

/// How often a joining member's progress is checked.
const CATCH_UP_POLL: std::time::Duration = std::time::Duration::from_millis(200);

impl ClusterNode {
    /// Adds the host listening at `peer`; returns its new node id.
    pub async fn add_member(&self, peer: String) -> Result<NodeId, ClusterError> {
        let j = self.require_joined().await?;
        if let Some(captain) = self.other_captain(&j).await? {
            return match self.call(&captain, &RpcRequest::AddMember { peer }).await? {
                RpcResponse::MemberAdded(r) => r.map_err(ClusterError::from),
                other => Err(ClusterError::Unexpected(format!("{other:?}"))),
            };
        }
        self.add_member_as_captain(&j, peer).await.map_err(ClusterError::from)
    }

    pub(super) async fn add_member_as_captain(&self, j: &Joined, peer: String) -> Result<NodeId, Refusal> {
        if peer == self.me.peer {
            return Err(Refusal::Refused("that is this member's own address".into()));
        }
        let probe = match self.call(&peer, &RpcRequest::Probe).await {
            Ok(RpcResponse::Probe(p)) => p,
            Ok(other) => return Err(Refusal::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(Refusal::Failed(format!("cannot reach the new member: {e}"))),
        };
        if let Some(cluster) = &probe.cluster_id {
            return Err(Refusal::Refused(if probe.removed {
                format!(
                    "`{}` was removed from cluster {cluster}; clean it (`tandem cluster clean`) before adding it again",
                    probe.name
                )
            } else {
                format!(
                    "`{}` already belongs to cluster {cluster} as node {}",
                    probe.name,
                    probe.node_id.unwrap_or(0)
                )
            }));
        }
        let (_, resp) = self.write_as_captain(j, Request::AllocateNodeId { at_ms: now_ms() }).await?;
        let node_id = resp.node_id.ok_or_else(|| Refusal::Failed("no node id allocated".into()))?;
        let member = Member { peer: peer.clone(), api: probe.api.clone(), name: probe.name.clone() };
        let join =
            RpcRequest::Join { cluster_id: j.identity.cluster_id.clone(), node_id, captain: self.me.clone() };
        match self.call(&peer, &join).await {
            Ok(RpcResponse::Joined(r)) => r?,
            Ok(other) => return Err(Refusal::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(Refusal::Failed(format!("the new member did not join: {e}"))),
        }
        // openraft's blocking add_learner gives up after its default wait and says nothing, so
        // a member still far behind would become a voter (and a 4-member cluster could then
        // not lose one): wait here until it has applied what the captain has.
        j.raft
            .add_learner(node_id, member.clone(), false)
            .await
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        self.wait_caught_up(&member, node_id).await?;
        j.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        info!(node_id, %peer, name = %probe.name, "member added");
        Ok(node_id)
    }

    /// Waits until learner `node_id` has applied within [`UP_LAG_ENTRIES`] of this member
    /// (the captain), as long as it keeps making progress.
    async fn wait_caught_up(&self, member: &Member, node_id: NodeId) -> Result<(), Refusal> {
        let stall = self.config.snapshot_timeout();
        let mut best = 0;
        let mut progress_at = tokio::time::Instant::now();
        loop {
            let theirs = match self.call(&member.peer, &RpcRequest::Report).await {
                Ok(RpcResponse::Report(r)) if r.node_id == Some(node_id) => r.applied,
                _ => best,
            };
            let ours = self.shared.applied_index();
            if theirs + UP_LAG_ENTRIES >= ours {
                return Ok(());
            }
            if theirs > best {
                best = theirs;
                progress_at = tokio::time::Instant::now();
            } else if progress_at.elapsed() > stall {
                return Err(Refusal::Failed(format!(
                    "node {node_id} joined but stopped catching up (applied {theirs} of {ours} for {} s); it stays a learner (it receives changes but does not vote): remove it, clean it and add it again",
                    stall.as_secs()
                )));
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    /// Removes member `node_id`; it must be cleaned before it can be added again.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<(), ClusterError> {
        let j = self.require_joined().await?;
        if let Some(captain) = self.other_captain(&j).await? {
            return match self.call(&captain, &RpcRequest::RemoveMember { node_id }).await? {
                RpcResponse::MemberRemoved(r) => r.map_err(ClusterError::from),
                other => Err(ClusterError::Unexpected(format!("{other:?}"))),
            };
        }
        self.remove_member_as_captain(&j, node_id).await.map_err(ClusterError::from)
    }

    pub(super) async fn remove_member_as_captain(&self, j: &Joined, node_id: NodeId) -> Result<(), Refusal> {
        let membership = j.raft.metrics().borrow().membership_config.membership().clone();
        let Some(member) = membership.get_node(&node_id).cloned() else {
            return Err(Refusal::Refused(format!("node {node_id} is not a member")));
        };
        let ids = BTreeSet::from([node_id]);
        // One membership change: a voter removed without `retain` leaves the node list too.
        // (A captain removing itself steps down once it commits; a second change would fail.)
        let change = if membership.voter_ids().any(|v| v == node_id) {
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        j.raft.change_membership(change, false).await.map_err(|e| Refusal::Failed(e.to_string()))?;
        info!(node_id, peer = %member.peer, "member removed");
        if node_id != j.identity.node_id {
            let removed = RpcRequest::Removed { cluster_id: j.identity.cluster_id.clone(), node_id };
            if let Err(e) = self.call(&member.peer, &removed).await {
                info!(node_id, error = %e, "could not tell the removed member; it will not be part of the cluster anyway");
            }
        } else {
            let _ = self.removed(&j.identity.cluster_id, node_id).await;
        }
        Ok(())
    }

    pub(super) async fn is_captain(&self, j: &Joined) -> bool {
        j.raft.current_leader().await == Some(j.identity.node_id)
    }

    /// The captain's peer address when it is another member; None when it is this one
    /// (right after `init` the election may still be under way: wait for it, never dial
    /// ourselves).
    async fn other_captain(&self, j: &Joined) -> Result<Option<String>, ClusterError> {
        let deadline = tokio::time::Instant::now() + self.config.commit_timeout();
        let (id, member) = self.wait_captain(j, deadline).await.ok_or(ClusterError::NoCaptain)?;
        Ok((id != j.identity.node_id).then_some(member.peer))
    }
}
