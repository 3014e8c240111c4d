//! One sync pass over an established peer connection, both sides running as pipelines.
//!
//! The standby pulls ([`pull_pass`]): it opens the pass with where it stands (`since`), sends
//! its index when the primary asks for it, and applies what arrives on a thread of its own
//! (decompress, write, hash check, batched durable commit) while its network task keeps
//! reading and answers signature requests on the side. The primary ([`serve_pass`]) scans, or
//! takes the changed paths from its journal, diffs against the standby, and feeds its file
//! workers (read, hash, compress: one per core) whose frames a writer task seals and sends;
//! small files travel packed many to a frame, large ones in chunks, changed large ones as
//! deltas whose signatures are all requested up front.
//!
//! Must never: delete at the standby what the primary could not read, or leave a half-written
//! file under its real name (the applier's temp files and batch commit see to that).

mod apply_loop;
mod moves;
mod pull;
mod serve;
mod workers;

use serde::{Deserialize, Serialize};

pub use pull::Progress;
pub use pull::{PullMode, PullState, pull_pass};
pub use serve::{Filter, Outcome, ServeTree, serve_pass};

use super::error::SyncError;
use super::protocol::{self, ProtocolError, SyncMsg, UnreadablePath};
use super::tree_error::TreeError;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::peer::{Frame, PeerError, PeerReader, PeerWriter};

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Delta(#[from] SyncError),
    #[error("a sync worker stopped: {0}")]
    Worker(String),
    #[error("the peer sent or took nothing for {0:?}")]
    Silent(std::time::Duration),
}

/// What a pass moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PassStats {
    pub files_whole: u64,
    pub files_delta: u64,
    /// Bytes of file content the pass carried (whole files and delta literals, uncompressed).
    pub content_bytes: u64,
    /// Bytes of sync messages the primary sent (after compression, before encryption).
    pub wire_bytes: u64,
    pub deleted: u64,
    /// Files that arrived as renames of the standby's own files (no content sent).
    #[serde(default)]
    pub moved: u64,
    /// Files whose metadata alone changed (mode, owner, attributes, a new hard link): the
    /// standby kept its copy and took the new metadata (no content sent).
    pub meta_only: u64,
    pub dirs_links: u64,
    /// Files the standby could not apply (reported, the rest of the pass went on).
    pub failed: u64,
    /// Hard-link members made links to their leaders (no content sent for them).
    pub hard_links: u64,
    /// Sockets, FIFOs and device nodes the primary's scan met and skipped (never replicated).
    pub skipped_special: u64,
    /// Paths the primary could not read (left as the standby has them), and the first of them
    /// with the reason.
    pub unreadable: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable_paths: Vec<UnreadablePath>,
    /// The primary said nothing changed: no pass ran.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub current: bool,
    /// True when the pass compared whole trees (no usable journal), false when it took the
    /// changed paths from the primary's journal.
    pub full: bool,
}

async fn recv(reader: &mut PeerReader) -> Result<SyncMsg, PassError> {
    Ok(protocol::decode(reader.read_frame().await?)?)
}

/// [`recv`], giving the peer `idle` to send its next message: a peer silent that long in the
/// middle of a pass (stopped, or its host gone with the connection half-open) is taken for gone.
async fn recv_within(reader: &mut PeerReader, idle: Duration) -> Result<SyncMsg, PassError> {
    tokio::time::timeout(idle, recv(reader)).await.map_err(|_| PassError::Silent(idle))?
}

/// [`recv`], adding the frame's size to `wire`.
async fn recv_counted(reader: &mut PeerReader, wire: &mut u64) -> Result<SyncMsg, PassError> {
    let frame = reader.read_frame().await?;
    *wire += frame.as_ref().map_or(0, |f| f.body.len() as u64);
    Ok(protocol::decode(frame)?)
}

/// Sends every frame queued on `rx`, in order, until all senders are gone; the bytes sent. A
/// frame the peer does not take within `idle` (it stopped reading) fails the pass.
async fn write_all(
    writer: &mut PeerWriter,
    mut rx: mpsc::Receiver<Frame>,
    idle: Duration,
) -> Result<u64, PassError> {
    let mut wire = 0;
    while let Some(frame) = rx.recv().await {
        wire += frame.body.len() as u64;
        tokio::time::timeout(idle, writer.write_frame(&frame))
            .await
            .map_err(|_| PassError::Silent(idle))??;
    }
    Ok(wire)
}

fn unexpected(got: &SyncMsg, wanted: &'static str) -> PassError {
    // The name only: formatting a whole message could mean a 64 MiB string.
    let got = got.name().to_string();
    PassError::Protocol(ProtocolError::Unexpected { got, wanted })
}
