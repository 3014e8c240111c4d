//! Moving the captain's snapshot to a member outside raft (a joining member's bootstrap, a
//! destructive resync): the captain answers chunks of its snapshot file, the member writes
//! them to a file of its own. A chunk that fails (a cut connection, a timeout) is asked for
//! again at the same offset, so a transfer resumes where it stopped; a snapshot the captain
//! replaced meanwhile is downloaded again from the start.
//!
//! Must never: hold more than a chunk in memory on either end, accept a snapshot over this
//! member's `cluster.max_snapshot_bytes`, or hand over a file that is not the whole snapshot.

use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;

use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tracing::{info, warn};

use super::client::{CallError, PeerClient};
use super::error::ClusterError;
use super::node::{ClusterNode, Joined};
use super::rpc::{Refusal, RpcRequest, RpcResponse, SnapshotChunk};
use crate::conf::snapshot::max_packed_bytes;

/// Failed chunk requests in a row before a download gives up.
const MAX_CHUNK_FAILURES: u32 = 8;
/// Times a download starts again because the captain replaced its snapshot.
const MAX_RESTARTS: u32 = 4;
/// Wait before asking again for a chunk that failed; doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

fn failed(e: impl std::fmt::Display) -> Refusal {
    Refusal::Failed(e.to_string())
}

impl ClusterNode {
    /// The captain's side: `len` bytes of snapshot `id` from `offset`; without an id, of the
    /// current snapshot if it holds everything applied here, else of a new one.
    pub(super) async fn snapshot_chunk(
        &self,
        j: &Joined,
        id: Option<String>,
        offset: u64,
    ) -> Result<SnapshotChunk, Refusal> {
        let mut sm = j.sm.clone();
        let current = sm.get_current_snapshot().await.map_err(failed)?;
        let mut snapshot = match (id, current) {
            (Some(id), Some(s)) if s.meta.snapshot_id == id => s,
            (Some(id), _) => return Err(Refusal::Gone(id)),
            // Several members downloading at once share one snapshot while nothing new applies.
            (None, Some(s)) if s.meta.last_log_id == sm.applied() => s,
            (None, _) => sm.build_snapshot().await.map_err(failed)?,
        };
        let total = snapshot.snapshot.len();
        if offset > total {
            return Err(Refusal::Refused(format!("offset {offset} is past the snapshot's {total} bytes")));
        }
        let want = (total - offset).min(self.config.snapshot_chunk_bytes);
        let mut data = vec![0u8; usize::try_from(want).map_err(failed)?];
        snapshot.snapshot.seek(SeekFrom::Start(offset)).await.map_err(failed)?;
        snapshot.snapshot.read_exact(&mut data).await.map_err(failed)?;
        Ok(SnapshotChunk { snapshot_id: snapshot.meta.snapshot_id, offset, total, data })
    }

    /// Downloads the snapshot of the captain at `peer` into `into` (replaced); returns its
    /// size.
    pub(super) async fn download_snapshot(&self, peer: &str, into: &Path) -> Result<u64, ClusterError> {
        let limit = max_packed_bytes(self.config.max_snapshot_bytes);
        let io = |e| ClusterError::io(into, e);
        let mut file = tokio::fs::File::create(into).await.map_err(io)?;
        let (mut id, mut offset) = (None::<String>, 0u64);
        let (mut failures, mut restarts) = (0u32, 0u32);
        let mut wait = RETRY_FIRST;
        if peer == self.me.peer {
            return Err(CallError::Ourselves(peer.to_string()).into());
        }
        // A connection of its own (not the pool's, which retries a failed call once out of
        // sight): every failed chunk is seen, logged and asked for again here.
        let mut client = PeerClient::new(peer, self.dialer.clone());
        loop {
            let req = RpcRequest::FetchSnapshot { snapshot_id: id.clone(), offset };
            let chunk = match client.call(&req, self.config.snapshot_timeout()).await {
                Ok(RpcResponse::SnapshotChunk(Ok(chunk))) => chunk,
                Ok(RpcResponse::SnapshotChunk(Err(Refusal::Gone(old)))) if restarts < MAX_RESTARTS => {
                    restarts += 1;
                    info!(snapshot = %old, offset, "the captain replaced its snapshot; downloading the new one");
                    (id, offset) = (None, 0);
                    file.set_len(0).await.map_err(io)?;
                    file.seek(SeekFrom::Start(0)).await.map_err(io)?;
                    continue;
                }
                Ok(RpcResponse::SnapshotChunk(Err(refusal))) => return Err(refusal.into()),
                Ok(other) => return Err(ClusterError::Unexpected(format!("{other:?}"))),
                Err(e) if failures + 1 < MAX_CHUNK_FAILURES => {
                    failures += 1;
                    warn!(error = %e, offset, failures, "a snapshot chunk failed; asking again from the same offset");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if chunk.total > limit {
                return Err(ClusterError::Invalid(format!(
                    "the captain's snapshot is {} bytes packed, over this member's limit of {limit} (cluster.max_snapshot_bytes = {} unpacked): raise it on every member",
                    chunk.total, self.config.max_snapshot_bytes
                )));
            }
            let end = chunk.offset.saturating_add(chunk.data.len() as u64);
            if chunk.offset != offset
                || id.as_ref().is_some_and(|id| *id != chunk.snapshot_id)
                || end > chunk.total
                || (chunk.data.is_empty() && end < chunk.total)
            {
                return Err(ClusterError::Unexpected(format!(
                    "snapshot chunk {} at {} ({} bytes of {}) when {offset} was asked",
                    chunk.snapshot_id,
                    chunk.offset,
                    chunk.data.len(),
                    chunk.total
                )));
            }
            if failures > 0 {
                info!(offset, "snapshot download resumed");
            }
            (failures, wait) = (0, RETRY_FIRST);
            file.write_all(&chunk.data).await.map_err(io)?;
            offset = end;
            if offset == chunk.total {
                file.sync_all().await.map_err(io)?;
                info!(snapshot = %chunk.snapshot_id, bytes = offset, "downloaded the captain's snapshot");
                return Ok(offset);
            }
            id = Some(chunk.snapshot_id);
        }
    }
}
