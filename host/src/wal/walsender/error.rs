//! The walsender's error types: [`WalSenderError`], why a connection ended (an error the
//! client was told about, a FATAL ErrorResponse, carries it), and [`Failure`], which tells a
//! command's ERROR (the session goes on) from the end of the connection.

use std::io;
use std::time::Duration;

use super::backend::SqlError;
use super::codec::CodecError;
use crate::wal::archive::ArchiveError;

/// Why a walsender connection (or `serve`'s set-up) failed.
#[derive(Debug, thiserror::Error)]
pub enum WalSenderError {
    /// Socket I/O.
    #[error("i/o with the client: {0}")]
    Io(#[from] io::Error),
    /// Bytes that are not the protocol.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The client went away.
    #[error("the client closed the connection {0}")]
    Closed(&'static str),
    /// The client was refused or dropped with this FATAL error (already sent to it).
    #[error("refused: {0}")]
    Fatal(SqlError),
    /// The archive failed underneath a read.
    #[error("WAL archive: {0}")]
    Archive(#[from] ArchiveError),
    /// The standby said nothing for too long.
    #[error("the standby was silent for {0:?} (replication timeout)")]
    Timeout(Duration),
    /// Startup and authentication took too long.
    #[error("startup did not finish within {0:?}")]
    StartupTimeout(Duration),
    /// Invalid configuration.
    #[error("invalid walsender configuration: {0}")]
    Config(String),
    /// The OS random source failed (nonces, salts).
    #[error("no randomness: {0}")]
    Random(#[from] getrandom::Error),
    /// A blocking archive read task died.
    #[error("archive read task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// How a command that runs for a while (START_REPLICATION) failed.
#[derive(Debug)]
pub enum Failure {
    /// The command failed (ERROR): answer it; the session goes on.
    Command(SqlError),
    /// The connection is done for.
    Connection(WalSenderError),
}

impl From<WalSenderError> for Failure {
    fn from(e: WalSenderError) -> Self {
        Failure::Connection(e)
    }
}

impl From<ArchiveError> for Failure {
    fn from(e: ArchiveError) -> Self {
        Failure::Connection(e.into())
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Self {
        Failure::Connection(e.into())
    }
}
