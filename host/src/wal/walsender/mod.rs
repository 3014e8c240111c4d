//! The walsender: tandem speaking the server side of PostgreSQL's physical streaming
//! replication protocol, serving WAL from its archive to a standby PostgreSQL (15) exactly as
//! a primary's walsender would: `primary_conninfo` points at tandem, and PostgreSQL's own
//! walreceiver (or `pg_receivewal`) streams from it.
//!
//! Owns: the listening socket's connections, their authentication, and everything said to a
//! standby.
//!
//! Who may connect: by default only a client that knows the walsender's password (SCRAM-SHA-256,
//! so it never crosses the wire). tandem generates it (`wal.standby_password_file` names one
//! instead), keeps it 0600, and hands it to the standby PostgreSQL in a passfile (0600, owned by
//! the PostgreSQL user, in its data folder) that `primary_conninfo` names: the password is
//! neither in `postgresql.auto.conf` nor on a command line. A password rather than a Unix
//! socket checked with peer credentials because it works on the TCP listener the standby
//! already uses (and on another address, should the site move it), with the SCRAM server that
//! is verified against PostgreSQL's own libpq, and because peer credentials prove no more than
//! the password does: that the client runs as the PostgreSQL user, who can read the data folder
//! anyway. Trust (`wal.standby_auth = "trust"`, loopback only) only when the site asks for it. Must never: send a byte past the archive's flushed LSN (the reader guarantees it;
//! nothing here works around it), let a connection's failure stop the accept loop, or serve a
//! client before the upstream identity (whose WAL this is) is known.
//!
//! # Layout
//! - `config`: [`WalSenderConfig`], [`SenderAuth`], defaults, validation.
//! - `error`: [`WalSenderError`].
//! - `codec`: frontend messages off the wire (pure, capped; `Incomplete` is a variant).
//! - `backend`: backend messages onto the wire (pure) and [`SqlError`].
//! - `xlog`: the CopyData payloads 'w', 'k' (out) and 'r', 'h' (in) (pure).
//! - `auth`: SCRAM-SHA-256, server side, as a pure state machine.
//! - `command`: replication commands parsed into an enum (pure).
//! - `timeline`: where a historic timeline ends, from a history file (pure).
//! - `conn`: the socket and its buffers.
//! - `startup`: SSL refusal, StartupMessage, readiness, authentication, session parameters.
//! - `answer`: IDENTIFY_SYSTEM, SHOW, TIMELINE_HISTORY, READ_REPLICATION_SLOT.
//! - `stream`: START_REPLICATION's CopyBoth stream and the end-of-timeline handshake.
//! - `session`: one connection's life: startup, then the command loop.
//! - this file: [`SenderContext`], [`StandbyFeedback`] and the accept loop [`serve`].

mod answer;
mod auth;
mod backend;
pub(crate) mod codec;
pub(crate) mod command;
mod config;
mod conn;
mod error;
mod session;
mod startup;
mod stream;
mod timeline;
pub(crate) mod xlog;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use auth::random_password;
pub use backend::{Severity, SqlError};
pub use codec::CodecError;
pub use config::{
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE_LEN,
    DEFAULT_STANDBY_TIMEOUT, DEFAULT_STARTUP_TIMEOUT, MAX_SEND_SIZE, SenderAuth, WalSenderConfig,
};
pub use error::WalSenderError;

use crate::wal::archive::ArchiveReader;
use crate::wal::client::PgTime;
use crate::wal::lsn::Lsn;
use crate::wal::upstream::UpstreamIdentity;

/// First wait after a failed accept; doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// SQLSTATE `too_many_connections`.
const TOO_MANY_CONNECTIONS: &str = "53300";

/// What the walsender serves from, and what it reports back.
#[derive(Debug)]
pub struct SenderContext {
    /// The WAL archive.
    pub reader: ArchiveReader,
    /// Whose WAL it is; `None` until the receiver has reached the primary once (connections
    /// are refused with FATAL 57P03 until then).
    pub identity: watch::Receiver<Option<UpstreamIdentity>>,
    /// What the connected standby last reported.
    pub feedback: watch::Sender<Option<StandbyFeedback>>,
}

/// A standby's last status update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyFeedback {
    /// WAL written up to here.
    pub write: Lsn,
    /// WAL durable up to here.
    pub flush: Lsn,
    /// WAL replayed up to here.
    pub apply: Lsn,
    /// The standby's clock when it sent the update.
    pub reply_time: PgTime,
    /// Our clock when it arrived.
    pub received_at: SystemTime,
    /// The standby's `application_name`.
    pub application_name: String,
    /// Whether the standby is still streaming (false once its connection ended).
    pub streaming: bool,
}

/// Accepts standby connections on `listener` until `shutdown`, serving each in its own task;
/// a failed connection is logged with its peer and never stops the loop. Returns once every
/// connection has finished (streaming ones send their remaining durable WAL first). Fails only
/// on an invalid configuration.
pub async fn serve(
    listener: TcpListener,
    config: WalSenderConfig,
    ctx: Arc<SenderContext>,
    shutdown: CancellationToken,
) -> Result<(), WalSenderError> {
    config.validate()?;
    let auth = match &config.auth {
        SenderAuth::Trust => startup::PreparedAuth::Trust,
        SenderAuth::ScramSha256 { user, password } => {
            let password = password.clone();
            let verifier = tokio::task::spawn_blocking(move || auth::ScramVerifier::new(&password)).await??;
            startup::PreparedAuth::Scram { user: user.clone(), verifier }
        }
    };
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let shared = Arc::new(session::Shared { config, auth, ctx });
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listen = %local, "walsender: accepting standby connections");
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => {
                backoff = ACCEPT_BACKOFF_MIN;
                pair
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "walsender: accept failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        // Status updates and keepalives are small and latency-sensitive.
        let _ = socket.set_nodelay(true);
        let mut conn = conn::Conn::new(socket, peer, shared.config.max_message_len);
        let (shared, shutdown, slots) = (shared.clone(), shutdown.clone(), slots.clone());
        let span = tracing::info_span!("walsender", %peer);
        tasks.spawn(
            async move {
                let result = match slots.try_acquire_owned() {
                    Ok(_permit) => session::run(conn, shared, shutdown).await,
                    Err(_) => {
                        let e = SqlError::fatal(
                            TOO_MANY_CONNECTIONS,
                            "number of requested standby connections exceeds max_wal_senders",
                        );
                        Err(conn.fatal(e).await)
                    }
                };
                match result {
                    Ok(()) => tracing::info!("walsender: connection closed"),
                    // A walreceiver that stops just closes its socket.
                    Err(WalSenderError::Closed(how)) => {
                        tracing::info!("walsender: the client closed the connection {how}")
                    }
                    Err(e) => tracing::warn!(error = %e, "walsender: connection ended with an error"),
                }
            }
            .instrument(span),
        );
    }
    tracing::info!("walsender: shutting down; waiting for connections to finish");
    while tasks.join_next().await.is_some() {}
    Ok(())
}
