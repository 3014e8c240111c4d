//! One standby connection from accept to close: startup and authentication (`startup`), then
//! the command loop: each simple query parsed (`command`) and answered (`answer`, or `stream`
//! for START_REPLICATION), an ERROR leaving the session usable as PostgreSQL's does.
//!
//! Must never: leave the client without a ReadyForQuery after a command, or keep running after
//! shutdown.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::SenderContext;
use super::answer;
use super::backend::{self, SqlError};
use super::codec::FrontendMessage;
use super::command::{self, Command};
use super::config::WalSenderConfig;
use super::conn::Conn;
use super::error::{Failure, WalSenderError};
use super::startup::{self, Client, PreparedAuth, Started};
use super::stream::{self, Outcome, Request};
use crate::wal::lsn::WalSegmentSize;
use crate::wal::upstream::UpstreamIdentity;

/// SQLSTATEs of the command loop's refusals.
mod sqlstate {
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
}

/// Everything a session needs, shared by all sessions.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: WalSenderConfig,
    /// Prepared authentication.
    pub auth: PreparedAuth,
    /// The archive and the watches.
    pub ctx: Arc<SenderContext>,
}

/// Runs one connection to its end.
pub async fn run(
    mut conn: Conn,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), WalSenderError> {
    let timeout = shared.config.startup_timeout;
    let started = tokio::select! {
        started = tokio::time::timeout(timeout, startup::startup(&mut conn, &shared.auth, &shared.ctx.identity)) => {
            started.map_err(|_| WalSenderError::StartupTimeout(timeout))??
        }
        _ = shutdown.cancelled() => return Ok(()),
    };
    let (client, upstream) = match started {
        Started::Ready(client, upstream) => (client, upstream),
        Started::Cancel => return Ok(()),
    };
    tracing::info!(peer = %conn.peer, user = %client.user, application_name = %client.application_name, "walsender: standby connected");
    let result = commands(&mut conn, &shared, &client, &upstream, &shutdown).await;
    conn.close().await;
    result
}

async fn commands(
    conn: &mut Conn,
    shared: &Shared,
    client: &Client,
    upstream: &UpstreamIdentity,
    shutdown: &CancellationToken,
) -> Result<(), WalSenderError> {
    let seg = WalSegmentSize::new(upstream.segment_size)
        .map_err(|e| WalSenderError::Config(format!("upstream identity: {e}")))?;
    loop {
        let message = tokio::select! {
            m = conn.read_message() => m?,
            _ = shutdown.cancelled() => {
                let e = SqlError::fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection due to administrator command");
                let _ = conn.send_error(&e).await;
                return Ok(());
            }
        };
        let text = match message {
            FrontendMessage::Query(text) => text,
            FrontendMessage::Terminate => return Ok(()),
            // Left over from a copy that ended with an error: ignored, as PostgreSQL does.
            FrontendMessage::CopyData(_) | FrontendMessage::CopyDone | FrontendMessage::CopyFail(_) => {
                continue;
            }
            FrontendMessage::SyncOrFlush => continue,
            other => {
                let e = SqlError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!(
                        "{other:?}: the extended query protocol is not supported in a replication connection"
                    ),
                );
                return Err(conn.fatal(e).await);
            }
        };
        tracing::info!(peer = %conn.peer, command = %text, "walsender: received replication command");
        let ctx = &shared.ctx;
        let answered = match command::parse(&text) {
            Err(e) => Err(SqlError::error(sqlstate::SYNTAX_ERROR, e.to_string())),
            Ok(Command::Empty) => {
                backend::empty_query_response(&mut conn.out);
                Ok(())
            }
            Ok(Command::IdentifySystem) => answer::identify_system(&mut conn.out, ctx, upstream),
            Ok(Command::Show(name)) => answer::show(&mut conn.out, &name, upstream),
            Ok(Command::TimelineHistory(tli)) => answer::timeline_history(&mut conn.out, ctx, tli).await,
            Ok(Command::ReadReplicationSlot(_)) => {
                answer::read_replication_slot(&mut conn.out, ctx);
                Ok(())
            }
            Ok(Command::StartReplication { slot: _, start, timeline }) => {
                let req = Request { ctx, config: &shared.config, client, seg, start, timeline };
                match stream::start_replication(conn, req, shutdown).await {
                    Ok(Outcome::Done) => {
                        // PostgreSQL sends this tag too, after START_STREAMING.
                        backend::command_complete(&mut conn.out, "START_REPLICATION");
                        Ok(())
                    }
                    Ok(Outcome::Shutdown | Outcome::Terminated) => return Ok(()),
                    Err(Failure::Command(e)) => Err(e),
                    Err(Failure::Connection(e)) => return Err(e),
                }
            }
            Ok(Command::Unsupported(what)) => Err(SqlError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("tandem's walsender does not support {what}: it serves physical WAL streaming only"),
            )),
        };
        if let Err(e) = answered {
            tracing::info!(peer = %conn.peer, command = %text, error = %e, "walsender: command failed");
            backend::error_response(&mut conn.out, &e);
        }
        backend::ready_for_query(&mut conn.out);
        conn.flush().await?;
    }
}
