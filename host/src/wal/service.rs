//! WAL streaming as one service of the daemon: learns (or loads) the primary's identity, opens
//! the archive, starts the disk thread, the receiver and the walsender, forwards the standby's
//! replay position to retention, and hands out a [`WalHandle`] for status.
//!
//! Owns the wiring and the order of start and stop. Must never open the archive before the
//! segment size is known from the primary (or from the identity stored on an earlier run).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::archive::{ArchiveReader, ArchiveWriter};
use super::client::ReplicationConn;
use super::config::WalConfig;
use super::lsn::Lsn;
use super::primary_sql::PrimaryFacts;
use super::receiver::Receiver;
use super::receiver::disk::{Disk, DiskCmd};
use super::receiver::state::{ArrivalTimes, ReceiverState};
use super::upstream::UpstreamIdentity;
use super::walsender::{self, SenderAuth, SenderContext, StandbyFeedback, WalSenderConfig};

/// How often the standby's replay position is passed to retention at most.
const RETENTION_EVERY: Duration = Duration::from_secs(1);
/// How often the positions are written to the log.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Wait between attempts to reach a primary whose identity is not known yet.
const LEARN_RETRY: Duration = Duration::from_secs(1);

/// Errors that stop the WAL service from starting.
#[derive(Debug, thiserror::Error)]
pub enum WalServiceError {
    #[error("wal config: {0}")]
    Config(String),
    #[error(transparent)]
    Upstream(#[from] super::upstream::UpstreamError),
    #[error(transparent)]
    Archive(#[from] super::archive::ArchiveError),
    #[error("binding the walsender on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("starting a WAL thread (disk, receiver or walsender): {0}")]
    Thread(std::io::Error),
}

/// What the rest of the host sees of a running WAL service.
#[derive(Clone)]
pub struct WalHandle {
    pub config: WalConfig,
    pub identity: UpstreamIdentity,
    pub reader: ArchiveReader,
    pub receiver: watch::Receiver<ReceiverState>,
    pub standby: watch::Receiver<Option<StandbyFeedback>>,
    pub arrivals: Arc<Mutex<ArrivalTimes>>,
    /// What SQL on the primary last said.
    pub primary: watch::Receiver<PrimaryFacts>,
    /// Where the walsender listens (the bound address).
    pub listen: std::net::SocketAddr,
}

/// Starts the service; returns its handle once the archive is open and the walsender listens,
/// with its tasks running until `shutdown`. Waits (retrying) for the primary when no identity
/// is stored yet. `None` if shut down before that.
pub async fn start(
    config: WalConfig,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<Option<WalHandle>, WalServiceError> {
    let conn = config.primary_conn().map_err(WalServiceError::Config)?;
    let state_dir = config.state_dir().to_owned();
    // The database's WAL lives here: the folder is private, as PostgreSQL keeps its own.
    crate::durable::create_private_dir(&state_dir)
        .map_err(|source| super::upstream::UpstreamError::Io { path: state_dir.clone(), source })?;
    let identity = match UpstreamIdentity::load(&state_dir)? {
        Some(id) => id,
        None => match learn(&conn, &shutdown).await {
            Some(id) => {
                id.store(&state_dir)?;
                id
            }
            None => return Ok(None),
        },
    };
    config.check_cap(identity.segment_size).map_err(WalServiceError::Config)?;
    let archive_dir = config.archive_dir();
    let archive_config = config.archive(identity.segment_size);
    let writer = tokio::task::spawn_blocking(move || ArchiveWriter::open(archive_dir, archive_config))
        .await
        .map_err(|e| WalServiceError::Config(format!("opening the archive: {e}")))??;
    let reader = writer.reader();
    let disk = Arc::new(Disk::spawn(writer).map_err(WalServiceError::Thread)?);

    let auth = match config.standby_password().map_err(WalServiceError::Config)? {
        Some(password) => SenderAuth::ScramSha256 { user: config.standby_user.clone(), password },
        None => SenderAuth::Trust,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| WalServiceError::Bind { addr: config.listen, source })?;
    let listen =
        listener.local_addr().map_err(|source| WalServiceError::Bind { addr: config.listen, source })?;
    let (feedback_tx, standby) = watch::channel(None);
    let (_identity_tx, identity_rx) = watch::channel(Some(identity.clone()));
    let ctx =
        Arc::new(SenderContext { reader: reader.clone(), identity: identity_rx, feedback: feedback_tx });
    let sender_config = WalSenderConfig { listen, auth, ..WalSenderConfig::default() };
    let stop = shutdown.clone();
    // The listener moves to the walsender's own runtime (a std listener carries no runtime).
    let listener = listener.into_std().map_err(|source| WalServiceError::Bind { addr: listen, source })?;
    own_thread("wal-sender", tasks, async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return tracing::error!(error = %e, "the walsender cannot take its listener"),
        };
        if let Err(e) = walsender::serve(listener, sender_config, ctx, stop).await {
            tracing::error!(error = %e, "the walsender stopped");
        }
    })?;

    let (applied_tx, applied) = watch::channel(Lsn::INVALID);
    tasks.spawn(forward_replay(standby.clone(), applied_tx, disk.clone(), reader.clone(), shutdown.clone()));

    let (facts_tx, primary) = watch::channel(PrimaryFacts::default());
    tasks.spawn(super::primary_sql::poll(conn.clone(), config.slot.clone(), facts_tx, shutdown.clone()));

    let (state_tx, receiver) = watch::channel(ReceiverState::default());
    let arrivals = Arc::new(Mutex::new(ArrivalTimes::default()));
    let task = Receiver {
        conn,
        slot: config.slot.clone(),
        state_dir,
        disk,
        reader: reader.clone(),
        applied,
        state: state_tx,
        arrivals: arrivals.clone(),
        status_interval: config.status_interval(),
        retry_max: config.retry_max(),
    };
    // The receiver runs on its own thread with a single-threaded runtime (see `own_thread`);
    // its disk I/O stays on the disk thread.
    own_thread("wal-receiver", tasks, task.run(shutdown.clone()))?;
    tracing::info!(%listen, primary = %config.primary_host.as_deref().unwrap_or(""), "WAL streaming started");
    let handle = WalHandle { config, identity, reader, receiver, standby, arrivals, primary, listen };
    tasks.spawn(log_positions(handle.clone(), shutdown));
    Ok(Some(handle))
}

/// One line with every position and lag in the WAL log, every [`LOG_EVERY`].
async fn log_positions(handle: WalHandle, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LOG_EVERY) => {}
        }
        let s = super::status::WalStatus::of(&handle);
        tracing::info!(
            state = %s.state, timeline = s.timeline,
            primary = s.primary_lsn.as_deref().unwrap_or("-"),
            flushed = s.flushed_lsn.as_deref().unwrap_or("-"),
            replayed = s.standby.as_ref().map_or("-", |v| v.replay_lsn.as_str()),
            receive_lag_bytes = s.receive_lag_bytes.unwrap_or(0),
            replay_lag_bytes = s.replay_lag_bytes.unwrap_or(0),
            replay_lag_s = s.replay_lag_seconds.unwrap_or(0.0),
            segments = s.segments_in_use,
            slot = s.slot_wal_status.as_deref().unwrap_or("-"),
            "WAL positions"
        );
    }
}

/// Runs `work` on a thread of its own with a single-threaded runtime, joined by a task in
/// `tasks`. The receiver and the walsender are woken for every WAL message and every flush; on
/// the shared multi-threaded runtime each such wake-up also woke a second worker to look for
/// work (measured: receiving under a steady pgbench load took 1.47x pg_receivewal's CPU per MB
/// on the shared runtime, 1.30x on its own thread).
fn own_thread(
    name: &str,
    tasks: &mut tokio::task::JoinSet<()>,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WalServiceError> {
    let label = name.to_owned();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(work),
            Err(e) => tracing::error!(thread = %label, error = %e, "cannot start a runtime"),
        })
        .map_err(WalServiceError::Thread)?;
    tasks.spawn(async move {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    });
    Ok(())
}

/// Connects until the primary answers who it is.
async fn learn(conn: &super::client::ConnConfig, shutdown: &CancellationToken) -> Option<UpstreamIdentity> {
    loop {
        let attempt = async {
            let mut c = ReplicationConn::connect(conn).await?;
            let (_, id) = c.upstream_identity().await?;
            let _ = c.close().await;
            Ok::<_, super::client::WalClientError>(id)
        };
        match tokio::select! { _ = shutdown.cancelled() => return None, r = attempt => r } {
            Ok(id) => return Some(id),
            Err(e) => {
                tracing::warn!(primary = %conn.address(), error = %e, "cannot reach the primary to learn its identity")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(LEARN_RETRY) => {}
        }
    }
}

/// Passes the standby's replay position to the receiver (reported as `apply`) and to retention.
async fn forward_replay(
    mut standby: watch::Receiver<Option<StandbyFeedback>>,
    applied: watch::Sender<Lsn>,
    disk: Arc<Disk>,
    reader: ArchiveReader,
    shutdown: CancellationToken,
) {
    let mut last = Lsn::INVALID;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = standby.changed() => if changed.is_err() { break },
        }
        // Never past what the archive has: a client claiming more cannot make retention drop
        // WAL the standby still needs.
        let apply = standby
            .borrow_and_update()
            .as_ref()
            .map_or(Lsn::INVALID, |f| f.apply)
            .min(reader.flush_point().lsn);
        if apply > last {
            last = apply;
            applied.send_replace(apply);
            if disk.send(DiskCmd::Replayed(apply)).await.is_err() {
                break;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
        }
    }
}
