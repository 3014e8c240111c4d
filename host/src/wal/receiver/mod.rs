//! The WAL receiver: keeps a replication connection to the primary PostgreSQL, streams WAL on
//! tandem's own physical slot into the archive, and reports back only what the archive made
//! durable, so the primary's slot holds exactly the WAL the standby side does not have yet.
//! Reconnects with backoff after any failure, resuming from the archive's flushed LSN and
//! following timeline switches through TIMELINE_HISTORY. At the archive's disk cap or on a
//! full disk it stops taking WAL (the primary's slot holds it) and resumes once there is room.
//!
//! Must never: report a flush position past the archive's durable WAL, or write WAL of another
//! cluster into the archive.
//!
//! # Layout
//! - `disk`: the disk thread owning the archive writer (group commit).
//! - `state`: the published state and the WAL arrival times behind lag in seconds.
//! - `session`: one connection: identify, slot, histories, where to start, the stream loop.

pub mod disk;
mod session;
pub mod state;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::disk::Disk;
use self::state::{ArrivalTimes, Phase, ReceiverState};
use super::archive::ArchiveReader;
use super::client::{ConnConfig, WalClientError};
use super::lsn::Lsn;
use super::timeline_history::HistoryError;
use super::upstream::UpstreamError;

/// First wait before reconnecting; doubles up to the configured maximum.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// How often a capped archive is checked for room again (and the first wait after a full
/// disk, doubled up to the longest reconnect wait).
const CAP_RECHECK: Duration = Duration::from_millis(500);
/// A primary silent this long (no WAL, no keepalive) is given up on, as PostgreSQL's
/// `wal_receiver_timeout` does; its keepalives come every `wal_sender_timeout / 2` at most.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the primary to end the copy at shutdown.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);
/// A session that lasted this many times the longest retry wait resets the backoff.
const STABLE_FACTOR: u32 = 4;

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(transparent)]
    Client(#[from] WalClientError),
    #[error("WAL archive: {0}")]
    Disk(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{0}")]
    Timeline(String),
    #[error("nothing from the primary for {0} s; reconnecting")]
    Silent(u64),
    /// The primary is not one whose WAL this archive may take (another history, another
    /// segment size): an operator must act.
    #[error("{0}")]
    Refused(String),
}

impl ReceiverError {
    /// Errors no reconnection can fix: the operator must act.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            ReceiverError::Upstream(UpstreamError::OtherCluster { .. })
                | ReceiverError::Disk(_)
                | ReceiverError::Refused(_)
        )
    }
}

/// How a session ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    Shutdown,
    /// The primary ended the stream (it is shutting down).
    PrimaryEnded,
    /// The archive takes no WAL (its disk cap, or a full disk); reconnect once it has room.
    NoRoom,
}

/// The receiver task's inputs.
pub struct Receiver {
    pub conn: ConnConfig,
    pub slot: String,
    /// Where the upstream identity lives.
    pub state_dir: PathBuf,
    pub disk: Arc<Disk>,
    pub reader: ArchiveReader,
    /// The standby PostgreSQL's replay position (reported to the primary as `apply`).
    pub applied: watch::Receiver<Lsn>,
    pub state: watch::Sender<ReceiverState>,
    pub arrivals: Arc<Mutex<ArrivalTimes>>,
    pub status_interval: Duration,
    pub retry_max: Duration,
}

impl Receiver {
    /// Streams until `shutdown`; never returns early except on a fatal archive or identity
    /// error, which it logs and publishes.
    pub async fn run(self, shutdown: CancellationToken) {
        let address = self.conn.address();
        self.state.send_modify(|s| {
            s.primary = address.clone();
            s.slot = self.slot.clone();
        });
        let mut wait = RETRY_MIN;
        loop {
            self.state.send_modify(|s| s.phase = Phase::Connecting);
            let started = std::time::Instant::now();
            let outcome = self.session(&shutdown).await;
            self.state.send_modify(|s| s.connected_since = None);
            match outcome {
                Ok(SessionEnd::Shutdown) => break,
                Ok(SessionEnd::PrimaryEnded) => {
                    tracing::info!(primary = %address, "the primary ended streaming; reconnecting")
                }
                Ok(SessionEnd::NoRoom) => {
                    self.wait_for_room(&shutdown).await;
                    wait = RETRY_MIN;
                    continue;
                }
                // A history file the full disk refused: as full as a refused append.
                Err(_) if self.disk.full().is_some() => {
                    self.wait_for_room(&shutdown).await;
                    wait = RETRY_MIN;
                    continue;
                }
                Err(e) => {
                    let fatal = e.is_fatal() || !self.disk.alive();
                    let error = if self.disk.alive() { e.to_string() } else { self.disk.failure() };
                    tracing::warn!(primary = %address, error = %error, fatal, "WAL receiver");
                    self.state.send_modify(|s| {
                        s.set_error(error);
                        if fatal {
                            s.phase = Phase::Failed;
                        }
                    });
                    if fatal {
                        shutdown.cancelled().await;
                        break;
                    }
                }
            }
            if started.elapsed() > self.retry_max * STABLE_FACTOR {
                wait = RETRY_MIN;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(self.retry_max);
        }
        self.state.send_modify(|s| s.phase = Phase::Stopped);
    }

    /// Waits until the archive takes WAL again: the cap is checked every [`CAP_RECHECK`]
    /// (retention frees room as the standby replays); a full disk is retried with backoff up
    /// to the longest reconnect wait, and named in the state and the last error meanwhile.
    async fn wait_for_room(&self, shutdown: &CancellationToken) {
        let mut wait = CAP_RECHECK;
        while self.disk.alive() {
            match self.disk.full() {
                Some(why) => {
                    let error = format!(
                        "WAL archive disk full ({why}): not taking WAL until the filesystem has room \
                         for a segment; the primary's slot holds it meanwhile"
                    );
                    self.state.send_modify(|s| {
                        s.phase = Phase::DiskFull;
                        s.set_error(error);
                    });
                    if self.disk.retry().await.unwrap_or(false) {
                        tracing::warn!(primary = %self.conn.address(), "the WAL archive has room again: reconnecting");
                        return;
                    }
                }
                None if self.disk.has_room() => return,
                None => self.state.send_modify(|s| s.phase = Phase::CapReached),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if self.disk.full().is_some() {
                wait = (wait * 2).min(self.retry_max.max(CAP_RECHECK));
            }
        }
    }
}

#[cfg(test)]
mod tests;
