//! Runtime changes entering the cluster: the whitelist splits them into local-only and
//! replicated; replicated ones go to the captain (this member, or forwarded) and are
//! acknowledged once committed on a majority; when no captain can commit them in time they
//! are applied here and kept in the durable outbox.
//!
//! Must never: acknowledge a change as committed before raft says so, or drop a change it
//! answered as pending (the outbox is durable before the answer).

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use serde::Serialize;
use tracing::{debug, warn};

use super::error::ClusterError;
use super::limits;
use super::node::{ClusterNode, Joined};
use super::rpc::{Refusal, RpcRequest, RpcResponse};
use super::shared::now_ms;
use super::types::{LogId, Member, NodeId, Request, Response};
use super::whitelist;
use crate::conf::ConfChange;

/// How a submitted change ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Committed on a majority (and applied here).
    Committed,
    /// Not a replicated type: applied on this member only.
    Local,
    /// Replicated type, but no captain could commit it: applied here, in the outbox.
    Pending,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    pub change: String,
    pub disposition: Disposition,
    /// Whether the file changed here.
    pub changed: bool,
    pub log_index: Option<u64>,
    pub message: String,
}

impl ClusterNode {
    /// Takes runtime changes from the API or CLI. Every change is validated first; an invalid
    /// one fails the whole request and nothing is applied.
    pub async fn submit(&self, changes: Vec<ConfChange>) -> Result<Vec<ChangeReport>, ClusterError> {
        for change in &changes {
            change.validate()?;
        }
        let plugins = self.plugins.clone();
        let classified = {
            let changes = changes.clone();
            tokio::task::spawn_blocking(move || {
                changes.iter().map(|c| whitelist::replicates(&plugins, c)).collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))??
        };
        let (mut replicated, mut local) = (Vec::new(), Vec::new());
        for (change, rep) in changes.into_iter().zip(classified) {
            if rep { replicated.push(change) } else { local.push(change) }
        }
        let mut reports = Vec::new();
        if !local.is_empty() {
            let changed = self.apply_local(local.clone()).await?;
            for (c, changed) in local.iter().zip(changed) {
                reports.push(ChangeReport {
                    change: c.to_string(),
                    disposition: Disposition::Local,
                    changed,
                    log_index: None,
                    message: format!(
                        "`{}` is not a replicated type: applied on this member only",
                        c.conf_type
                    ),
                });
            }
        }
        if !replicated.is_empty() {
            reports.extend(self.submit_replicated(replicated).await?);
        }
        Ok(reports)
    }

    async fn submit_replicated(&self, changes: Vec<ConfChange>) -> Result<Vec<ChangeReport>, ClusterError> {
        let at_ms = now_ms();
        let batch = random_batch_id();
        let Some(j) = self.joined().await else {
            // A standalone host: there is nothing to replicate to (joining a cluster later
            // installs the captain's configuration).
            let changed = self.apply_local(changes.clone()).await?;
            return Ok(reports(
                &changes,
                changed,
                Disposition::Local,
                None,
                "this host is not in a cluster: applied here only",
            ));
        };
        let req = Request::Changes { origin: j.identity.node_id, at_ms, batch, changes: changes.clone() };
        // Refused where it enters: the commit log could never hold it, and the outbox must
        // not keep what no captain can take.
        limits::check(&req)?;
        let reason = if self.shared.needs_resync() {
            "this member needs a destructive resync".to_string()
        } else if !self.shared.outbox.is_empty() {
            // Earlier changes from here still wait: this one queues behind them, so the
            // captain commits them in the order they were made.
            "earlier changes from this member are still waiting".to_string()
        } else {
            match self.propose(req).await {
                Ok((log_id, resp)) => return Ok(self.committed(&changes, log_id, &resp).await),
                Err(ClusterError::Refused(Refusal::Refused(why))) => return Err(ClusterError::Invalid(why)),
                Err(e) => e.to_string(),
            }
        };
        // No captain could take it: keep it here and in the outbox. If the proposal above did
        // commit after all (its answer was lost), the entry carries the same batch id: it
        // leaves the outbox when it is applied here, and a second proposal of it is applied once.
        let id = self.shared.outbox.push(batch, at_ms, changes.clone())?;
        // Checked and applied under the state machine's lock: if the batch committed
        // meanwhile, it is not applied again out of log order over newer changes.
        let (sm, tree, shared, local) =
            (j.sm.clone(), self.tree.clone(), self.shared.clone(), changes.clone());
        let applied = tokio::task::spawn_blocking(move || {
            sm.unless_applied(batch, || {
                let _lock = shared.tree_lock.lock().expect("tree lock");
                shared.base.cover(&tree, &local);
                tree.apply_batch(&local, true)
            })
        })
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let Some(results) = applied else {
            self.shared.outbox.remove_batch(batch)?;
            let changed = vec![true; changes.len()];
            return Ok(reports(
                &changes,
                changed,
                Disposition::Committed,
                None,
                "committed on a majority (its answer was late)",
            ));
        };
        let changed = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        warn!(outbox_id = id, %reason, "change kept in the outbox");
        let message = format!("applied here and kept in the outbox until a captain commits it ({reason})");
        Ok(reports(&changes, changed, Disposition::Pending, None, &message))
    }

    /// Reports for a committed batch, once it is applied here (or the wait ran out).
    async fn committed(&self, changes: &[ConfChange], log_id: LogId, resp: &Response) -> Vec<ChangeReport> {
        let here = self.shared.wait_applied(log_id.index, self.config.commit_timeout()).await;
        let not_here = match self.shared.apply_stall() {
            Some(stall) => format!(
                "committed on a majority; NOT applied here: this member cannot apply ({})",
                stall.error
            ),
            None => "committed on a majority; not yet applied here".into(),
        };
        changes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let refused = resp.refused.iter().find(|(k, _)| *k as usize == i);
                ChangeReport {
                    change: c.to_string(),
                    disposition: Disposition::Committed,
                    changed: refused.is_none(),
                    log_index: Some(log_id.index),
                    message: match refused {
                        Some((_, why)) => format!("committed, but not applicable: {why}"),
                        None if here => "committed on a majority and applied here".into(),
                        None => not_here.clone(),
                    },
                }
            })
            .collect()
    }

    /// Applies changes to the live tree only.
    pub(super) async fn apply_local(&self, changes: Vec<ConfChange>) -> Result<Vec<bool>, ClusterError> {
        let tree = self.tree.clone();
        let shared = self.shared.clone();
        let results = tokio::task::spawn_blocking(move || {
            let _lock = shared.tree_lock.lock().expect("tree lock");
            // A local-only change to a file whose committed copy is kept (metadata files hold
            // replicated and local types alike) goes into the copy too, or settling would
            // drop it.
            if let Err(e) = shared.base.apply(&changes) {
                warn!(error = %e, "a local change cannot go into a pending file's copy; the copies are dropped");
                shared.base.discard();
            }
            tree.apply_batch(&changes, true)
        })
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        results.into_iter().map(|r| r.map_err(ClusterError::from)).collect()
    }

    /// Commits `req` through the captain, wherever it is.
    pub(super) async fn propose(&self, req: Request) -> Result<(LogId, Response), ClusterError> {
        limits::check(&req)?;
        let j = self.require_joined().await?;
        let deadline = tokio::time::Instant::now() + self.config.commit_timeout();
        loop {
            let captain = self.wait_captain(&j, deadline).await.ok_or(ClusterError::NoCaptain)?;
            let outcome = if captain.0 == j.identity.node_id {
                self.write_as_captain(&j, req.clone()).await
            } else {
                match self.call(&captain.1.peer, &RpcRequest::Propose(req.clone())).await {
                    Ok(RpcResponse::Proposed(r)) => r,
                    Ok(other) => return Err(ClusterError::Unexpected(format!("{other:?}"))),
                    // The captain we knew is gone; an election may be under way. (If it did
                    // commit before vanishing, proposing again is harmless: ops are idempotent.)
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        debug!(error = %e, "captain unreachable; waiting for a captain");
                        tokio::time::sleep(Duration::from_millis(self.config.heartbeat_ms)).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            match outcome {
                Ok(done) => return Ok(done),
                Err(Refusal::NotCaptain { .. }) if tokio::time::Instant::now() < deadline => {
                    debug!("captain moved; retrying");
                    tokio::time::sleep(Duration::from_millis(self.config.heartbeat_ms)).await;
                }
                Err(refusal) => return Err(refusal.into()),
            }
        }
    }

    /// Commits `req` on this member, which must be the captain (also serves forwarded
    /// proposals). Gives up after the commit timeout.
    pub(super) async fn write_as_captain(
        &self,
        j: &Joined,
        req: Request,
    ) -> Result<(LogId, Response), Refusal> {
        // A proposal forwarded by a member of an older version is measured here too: the log
        // store refusing an entry would stop raft on this member.
        limits::check(&req).map_err(|e| Refusal::Refused(e.to_string()))?;
        let write = tokio::time::timeout(self.config.commit_timeout(), j.raft.client_write(req)).await;
        match write {
            Err(_) => Err(Refusal::Failed(format!(
                "not committed within {} ms (no majority reachable?)",
                self.config.commit_timeout_ms
            ))),
            Ok(Ok(resp)) => Ok((resp.log_id, resp.data)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(Refusal::NotCaptain { leader: f.leader_id.zip(f.leader_node) })
            }
            Ok(Err(e)) => Err(Refusal::Failed(e.to_string())),
        }
    }

    /// The captain's id and address, waiting until `deadline` for one to be known.
    pub(super) async fn wait_captain(
        &self,
        j: &Joined,
        deadline: tokio::time::Instant,
    ) -> Option<(NodeId, Member)> {
        let mut metrics = j.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(leader) = m.current_leader
                    && let Some(node) = m.membership_config.membership().get_node(&leader)
                {
                    return Some((leader, node.clone()));
                }
            }
            if tokio::time::timeout_at(deadline, metrics.changed()).await.map_or(true, |r| r.is_err()) {
                return None;
            }
        }
    }
}

fn reports(
    changes: &[ConfChange],
    changed: Vec<bool>,
    disposition: Disposition,
    log_index: Option<u64>,
    message: &str,
) -> Vec<ChangeReport> {
    changes
        .iter()
        .zip(changed)
        .map(|(c, changed)| ChangeReport {
            change: c.to_string(),
            disposition: disposition.clone(),
            changed,
            log_index,
            message: message.to_string(),
        })
        .collect()
}

/// A random, non-zero batch id.
pub(super) fn random_batch_id() -> u64 {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).expect("the OS random source works");
    u64::from_le_bytes(raw).max(1)
}
