//! Cluster status, as `tandem cluster status` and `GET /v1/cluster/status` show it: the
//! captain, and per member its id, addresses, state (up / down / out of sync / needs
//! resync / cannot apply), `last_conf_replication`, applied commit, pending outbox size and last error.
//! Each member reports on itself; a member that does not answer is down.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::node::ClusterNode;
use super::rpc::{RpcRequest, RpcResponse};
use super::shared::ApplyStall;
use super::types::NodeId;

/// How long status waits for a member's own report.
const REPORT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// A member further than this many entries behind the most advanced member is not up: it
/// is catching up (a member applying at line rate trails by an entry or two).
pub const UP_LAG_ENTRIES: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Up,
    /// Up, but more than [`UP_LAG_ENTRIES`] entries behind the most advanced member.
    CatchingUp,
    Down,
    /// Up, but holding changes the captain has not committed, or not hearing a captain.
    OutOfSync,
    /// Its pending changes can no longer be replayed: `tandem cluster resync --destructive`.
    NeedsResync,
    /// Committed changes fail to apply on this member's disk (full, out of descriptors): it
    /// retries them and its applied index waits; see `cannot_apply`.
    CannotApply,
    Removed,
    /// Not in a cluster.
    Unjoined,
}

/// A member's own view of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    pub node_id: Option<NodeId>,
    pub name: String,
    pub peer: String,
    pub api: String,
    pub state: MemberState,
    /// "captain", "member", "candidate", "learner" or "shut down" (raft's leader is the captain).
    pub role: String,
    pub captain: Option<NodeId>,
    pub term: u64,
    /// Index of the last entry applied here.
    pub applied: u64,
    /// Entries this member has still to apply to reach the most advanced member (filled in
    /// by the cluster status; 0 in a member's own report).
    #[serde(default)]
    pub lag: u64,
    /// First entry still in this member's log (older ones are purged).
    pub log_first: Option<u64>,
    pub log_last: Option<u64>,
    pub last_conf_replication_ms: Option<u64>,
    pub outbox: usize,
    pub last_error: Option<String>,
    /// Why and since when committed changes cannot be applied here, while they cannot.
    #[serde(default)]
    pub cannot_apply: Option<ApplyStall>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster_id: Option<String>,
    pub captain: Option<NodeId>,
    /// The member that answered this request.
    pub reporter: Option<NodeId>,
    pub members: Vec<MemberReport>,
}

impl ClusterNode {
    pub async fn report(&self) -> MemberReport {
        let id = self.identity().await;
        let facts = self.shared.facts();
        let joined = self.joined().await;
        let outbox = self.shared.outbox.len();
        let (role, captain, term) = match &joined {
            Some(j) => {
                let m = j.raft.metrics().borrow().clone();
                // The seed's words: the raft leader is the captain, its followers members.
                let role = match m.state {
                    openraft::ServerState::Leader => "captain",
                    openraft::ServerState::Follower => "member",
                    openraft::ServerState::Candidate => "candidate",
                    openraft::ServerState::Learner => "learner",
                    openraft::ServerState::Shutdown => "shut down",
                };
                (role.to_string(), m.current_leader, m.current_term)
            }
            None => ("none".into(), None, 0),
        };
        let state = match (&id, &joined) {
            (Some(i), _) if i.removed => MemberState::Removed,
            (None, _) | (_, None) => MemberState::Unjoined,
            _ if facts.cannot_apply.is_some() => MemberState::CannotApply,
            _ if self.shared.needs_resync() => MemberState::NeedsResync,
            _ if outbox > 0 || captain.is_none() => MemberState::OutOfSync,
            _ => MemberState::Up,
        };
        MemberReport {
            node_id: id.as_ref().map(|i| i.node_id),
            name: self.me.name.clone(),
            peer: self.me.peer.clone(),
            api: self.me.api.clone(),
            state,
            role,
            captain,
            term,
            applied: self.shared.applied_index(),
            lag: 0,
            log_first: joined.as_ref().and_then(|j| j.log.first_index()),
            log_last: joined.as_ref().and_then(|j| j.log.last_log_id()).map(|l| l.index),
            last_conf_replication_ms: facts.last_conf_replication_ms,
            outbox,
            last_error: facts.last_error,
            cannot_apply: facts.cannot_apply,
        }
    }

    /// Asks every member for its report (in parallel).
    pub async fn status(&self) -> ClusterStatus {
        let me = self.report().await;
        let Some(j) = self.joined().await else {
            return ClusterStatus {
                cluster_id: None,
                captain: None,
                reporter: me.node_id,
                members: vec![me],
            };
        };
        let metrics = j.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let asks = membership.nodes().map(|(id, member)| {
            let (id, member, me) = (*id, member.clone(), me.clone());
            async move {
                if Some(id) == me.node_id {
                    return me;
                }
                let mut client = super::client::PeerClient::new(member.peer.clone(), self.dialer.clone());
                match client.call(&RpcRequest::Report, REPORT_TIMEOUT).await {
                    Ok(RpcResponse::Report(r)) if r.node_id == Some(id) => *r,
                    _ => MemberReport {
                        node_id: Some(id),
                        name: member.name.clone(),
                        peer: member.peer.clone(),
                        api: member.api.clone(),
                        state: MemberState::Down,
                        role: "unknown".into(),
                        captain: None,
                        term: 0,
                        applied: 0,
                        lag: 0,
                        log_first: None,
                        log_last: None,
                        last_conf_replication_ms: None,
                        outbox: 0,
                        last_error: Some("did not answer".into()),
                        cannot_apply: None,
                    },
                }
            }
        });
        let mut members = futures::future::join_all(asks).await;
        mark_lag(&mut members);
        ClusterStatus {
            cluster_id: Some(j.identity.cluster_id.clone()),
            captain: metrics.current_leader,
            reporter: Some(j.identity.node_id),
            members,
        }
    }
}

/// Fills in each member's lag behind the most advanced member that answered, and calls a
/// member that is up but too far behind catching up.
fn mark_lag(members: &mut [MemberReport]) {
    let answered = |m: &MemberReport| !matches!(m.state, MemberState::Down | MemberState::Unjoined);
    let Some(head) = members.iter().filter(|m| answered(m)).map(|m| m.applied).max() else {
        return;
    };
    for m in members.iter_mut().filter(|m| answered(m)) {
        m.lag = head.saturating_sub(m.applied);
        if m.state == MemberState::Up && m.lag > UP_LAG_ENTRIES {
            m.state = MemberState::CatchingUp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(state: MemberState, applied: u64) -> MemberReport {
        MemberReport {
            node_id: Some(applied),
            name: String::new(),
            peer: String::new(),
            api: String::new(),
            state,
            role: String::new(),
            captain: None,
            term: 0,
            applied,
            lag: 0,
            log_first: None,
            log_last: None,
            last_conf_replication_ms: None,
            outbox: 0,
            last_error: None,
            cannot_apply: None,
        }
    }

    #[test]
    fn a_member_far_behind_is_catching_up_not_up() {
        let mut members = vec![
            member(MemberState::Up, 89),
            member(MemberState::Up, 88),
            member(MemberState::Up, 83),
            member(MemberState::Down, 0),
        ];
        mark_lag(&mut members);
        let seen: Vec<_> = members.iter().map(|m| (m.state, m.lag)).collect();
        assert_eq!(
            seen,
            [
                (MemberState::Up, 0),
                (MemberState::Up, 1),
                (MemberState::CatchingUp, 6),
                (MemberState::Down, 0)
            ]
        );
    }
}
