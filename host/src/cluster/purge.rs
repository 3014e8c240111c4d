//! History purge: every purge period the purge plugin sees the history (entry count and the
//! times of the oldest entries) and says how many oldest entries may go. The host snapshots
//! first (so nothing is lost to a member that needs the state), then purges the log.

use std::time::Duration;

use openraft::{EntryPayload, RaftLogReader};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::error::ClusterError;
use super::node::{ClusterNode, Joined};
use super::shared::now_ms;
use crate::plugin::History;

/// At most this many entry times are shown to the plugin (it needs the oldest ones).
const MAX_AGES: u64 = 100_000;

impl ClusterNode {
    /// Runs the purge every `purge_period_ms` until `shutdown`.
    pub async fn run_purge(&self, shutdown: CancellationToken) {
        self.every(Duration::from_millis(self.config.purge_period_ms), shutdown, |j| async move {
            match self.purge_once(&j).await {
                Ok(0) => {}
                Ok(n) => info!(entries = n, "purged history"),
                Err(e) => warn!(error = %e, "history purge failed"),
            }
        })
        .await
    }

    /// One purge round; returns how many entries went.
    pub async fn purge_once(&self, j: &Joined) -> Result<u64, ClusterError> {
        let Some(first) = j.log.first_index() else { return Ok(0) };
        let applied = j.sm.applied().map_or(0, |l| l.index);
        if applied < first {
            return Ok(0);
        }
        // Only applied entries can be covered by a snapshot.
        let count = applied - first + 1;
        let mut reader = j.log.clone();
        let entries = reader
            .try_get_log_entries(first..first + count.min(MAX_AGES))
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let mut last_time = 0;
        let oldest: Vec<u64> = entries
            .iter()
            .map(|e| {
                if let EntryPayload::Normal(req) = &e.payload {
                    last_time = req.at_ms();
                }
                last_time
            })
            .collect();
        let plugins = self.plugins.clone();
        let history = History { count, oldest, now: now_ms() };
        let n = tokio::task::spawn_blocking(move || plugins.purgeable(&history))
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))??
            .min(count);
        if n == 0 {
            return Ok(0);
        }
        let upto = first + n - 1;
        j.raft.trigger().snapshot().await.map_err(|e| ClusterError::Raft(e.to_string()))?;
        let timeout = Duration::from_secs(30);
        j.raft
            .wait(Some(timeout))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= upto), "snapshot covers the purge")
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        j.raft.trigger().purge_log(upto).await.map_err(|e| ClusterError::Raft(e.to_string()))?;
        j.raft
            .wait(Some(timeout))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= upto), "log purged")
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(n)
    }
}
