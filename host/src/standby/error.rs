//! Errors of the warm-standby commands, each worded for the operator who ran the command.

use super::pairing::PairingError;
use super::postgres::PgError;

#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    /// The command does not fit this host's state (not paired, wrong role, ...).
    #[error("{0}")]
    State(String),
    /// The request itself is wrong (an address that is not host:port, ...).
    #[error("{0}")]
    BadRequest(String),
    /// The fencing check found the old primary alive.
    #[error("{0}")]
    Fenced(String),
    #[error("the peer: {0}")]
    Peer(String),
    /// The peer could not be reached: no connection, or no handshake, in time. Nothing was
    /// asked of it.
    #[error("the peer: {0}")]
    Unreachable(String),
    #[error("PostgreSQL: {0}")]
    Pg(#[from] PgError),
    #[error(transparent)]
    Pairing(#[from] PairingError),
    #[error("WAL streaming: {0}")]
    Wal(String),
    #[error("{0}")]
    Io(String),
    #[error("shutting down")]
    Shutdown,
}

impl StandbyError {
    /// Whether the operator asked for something the state forbids (a 409 rather than a 500).
    pub fn is_refusal(&self) -> bool {
        matches!(self, StandbyError::State(_) | StandbyError::Fenced(_))
    }
}
