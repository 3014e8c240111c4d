//! Recovery of a member that was cut off: its pending local changes are offered to the
//! captain once it is reachable again, but only if the two still share a common commit (this
//! member's last applied entry is still in the captain's log). If the history it needs was
//! purged, pending changes cannot be replayed: the member reports the seed's error and waits
//! for `tandem cluster resync --destructive`. (Without pending changes, raft installs the
//! captain's snapshot by itself.)

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::error::ClusterError;
use super::limits;
use super::node::{ClusterNode, Joined};
use super::rpc::{RpcRequest, RpcResponse};
use super::types::{LogId, Request};

impl ClusterNode {
    /// Offers the outbox to the captain every `retry_ms` until `shutdown`.
    pub async fn run_recovery(&self, shutdown: CancellationToken) {
        self.every(Duration::from_millis(self.config.retry_ms), shutdown, |j| async move {
            if self.shared.outbox.is_empty() || self.shared.needs_resync() {
                return;
            }
            match self.push_outbox(&j).await {
                Ok(0) => {}
                Ok(n) => info!(batches = n, "pending local changes committed by the captain"),
                Err(e) => self.shared.set_error(format!("pending changes not pushed yet: {e}")),
            }
        })
        .await
    }

    async fn push_outbox(&self, j: &Joined) -> Result<usize, ClusterError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.retry_ms);
        let Some((captain, member)) = self.wait_captain(j, deadline).await else { return Ok(0) };
        let _one = self.push_lock.lock().await;
        let applied = j.sm.applied();
        let (common, captain_last) = if captain == j.identity.node_id {
            (true, None)
        } else {
            match self.call(&member.peer, &RpcRequest::SyncCheck { applied }).await? {
                RpcResponse::SyncCheck { common, captain_last, .. } => (common, captain_last),
                other => return Err(ClusterError::Unexpected(format!("{other:?}"))),
            }
        };
        if !common {
            warn!(applied = ?applied, "the captain no longer holds this member's last commit");
            self.shared.require_resync();
            return Ok(0);
        }
        // Catch up first: a batch whose proposal committed after its answer was lost shows up
        // in the log and leaves the outbox when applied, instead of being offered again.
        if let Some(last) = captain_last
            && !self.shared.wait_applied(last, self.config.commit_timeout()).await
        {
            return Ok(0);
        }
        let mut pushed = 0;
        let mut dropped = None;
        for pending in self.shared.outbox.pending() {
            let req = Request::Changes {
                origin: j.identity.node_id,
                at_ms: pending.at_ms,
                batch: pending.batch,
                changes: pending.changes,
            };
            if let Err(too_large) = limits::check(&req) {
                // Kept by an older version, which accepted changes the log cannot hold:
                // offering it would fail on every captain, forever. It goes, loudly; it
                // stays applied here only, until a resync or a new change of that file.
                self.shared.outbox.remove(pending.id)?;
                error!(outbox_id = pending.id, %too_large, "a pending change no captain can take was dropped from the outbox");
                dropped = Some(format!(
                    "a pending change was dropped from the outbox and applies on this member only: {too_large}"
                ));
                continue;
            }
            self.propose(req).await?;
            self.shared.outbox.remove(pending.id)?;
            pushed += 1;
        }
        self.shared.clear_error();
        if let Some(message) = dropped {
            self.shared.set_error(message);
        }
        Ok(pushed)
    }

    /// The captain's side of the common-commit check.
    pub(super) fn shares_commit(&self, j: &Joined, applied: Option<LogId>) -> bool {
        let purged = j.log.purged();
        match (applied, purged) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(p)) if a.index < p.index => false,
            (Some(a), Some(p)) if a == p => true,
            (Some(a), _) => j.log.contains(&a),
        }
    }

    /// Destructive resync: discards pending local changes and replaces the replicated
    /// configuration with the captain's.
    pub async fn resync_destructive(&self) -> Result<usize, ClusterError> {
        let j = self.require_joined().await?;
        let _one = self.push_lock.lock().await;
        let download = self.dir.join(super::node::DOWNLOAD_FILE);
        let snapshot = if j.sm.in_shadow() {
            None
        } else {
            let deadline = tokio::time::Instant::now() + self.config.commit_timeout();
            let (_, captain) = self.wait_captain(&j, deadline).await.ok_or(ClusterError::NoCaptain)?;
            if let Err(e) = self.download_snapshot(&captain.peer, &download).await {
                let _ = std::fs::remove_file(&download);
                return Err(e);
            }
            Some(download.clone())
        };
        // All or nothing: the outbox is cleared only once the captain's configuration is
        // installed; a failed install leaves the pending changes (and the tree) as they were.
        let sm = j.sm.clone();
        let installed =
            tokio::task::spawn_blocking(move || sm.resync(snapshot.as_deref()).map_err(|e| e.to_string()))
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()));
        let _ = std::fs::remove_file(&download);
        let installed = installed?;
        if let Err(e) = installed {
            let pending = self.shared.outbox.len();
            warn!(error = %e, pending, "destructive resync failed; nothing was discarded");
            return Err(ClusterError::ResyncFailed { pending, cause: e });
        }
        let discarded = self.shared.outbox.clear()?;
        self.shared.base.discard();
        warn!(discarded, "destructive resync: pending local changes discarded");
        Ok(discarded)
    }
}
