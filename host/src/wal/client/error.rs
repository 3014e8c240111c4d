//! Errors of the replication client, and [`ServerError`]: an `ErrorResponse` from PostgreSQL
//! with its SQLSTATE, so callers match on codes rather than on message text.
//!
//! Must never: lose the server's SQLSTATE or message on the way to the caller.

use std::fmt;
use std::io;

use crate::wal::lsn::{Lsn, ParseLsnError, SegmentSizeError};

/// SQLSTATE codes the client and its callers act on.
pub mod sqlstate {
    /// `duplicate_object`: e.g. the replication slot already exists.
    pub const DUPLICATE_OBJECT: &str = "42710";
    /// `undefined_object`: e.g. the replication slot does not exist.
    pub const UNDEFINED_OBJECT: &str = "42704";
    /// `object_in_use`: e.g. the slot is active for another process.
    pub const OBJECT_IN_USE: &str = "55006";
    /// `invalid_password`.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// `invalid_authorization_specification`: e.g. no pg_hba.conf entry.
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// `insufficient_privilege`: e.g. the role lacks REPLICATION.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
}

/// An `ErrorResponse` (or `NoticeResponse`) from the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerError {
    /// `ERROR`, `FATAL`, `PANIC` (or `WARNING`, `NOTICE`... for notices), never localized.
    pub severity: String,
    /// The five-character SQLSTATE.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (SQLSTATE {})", self.severity, self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Everything that can go wrong talking to the primary. Apart from [`WalClientError::Server`]
/// for a command's own failure, every variant leaves the connection unusable: reconnect.
#[derive(Debug, thiserror::Error)]
pub enum WalClientError {
    #[error("i/o with the server: {0}")]
    Io(#[from] io::Error),
    #[error("connecting to {addr} timed out after {ms} ms")]
    ConnectTimeout { addr: String, ms: u64 },
    #[error("the server closed the connection {0}")]
    Closed(&'static str),
    #[error("server error: {0}")]
    Server(#[from] ServerError),
    #[error("a server message of {len} bytes is over the {max} byte limit")]
    Oversized { len: u64, max: u64 },
    #[error("malformed message from the server: {0}")]
    Malformed(String),
    #[error("unexpected {got} from the server {during}")]
    Unexpected { got: String, during: &'static str },
    #[error("the server asks for {0} authentication, which this client does not support")]
    UnsupportedAuth(String),
    #[error("the server asks for a password and none is configured")]
    PasswordRequired,
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid replication slot name {0:?}: use 1 to 63 of a-z, 0-9 and _")]
    SlotName(String),
    #[error("unexpected result from {command}: {why}")]
    BadResult { command: &'static str, why: String },
    #[error(transparent)]
    Lsn(#[from] ParseLsnError),
    #[error(transparent)]
    SegmentSize(#[from] SegmentSizeError),
    #[error("refusing to report {field} {reported}: {why}")]
    BadStatus { field: &'static str, reported: Lsn, why: String },
    #[error(
        "the connection is out of step with the server (an earlier call was cancelled or failed mid-way)"
    )]
    Desynchronized,
    #[error("the WAL stream has ended")]
    StreamEnded,
}

impl WalClientError {
    /// The SQLSTATE if the server refused something.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            WalClientError::Server(e) => Some(&e.code),
            _ => None,
        }
    }

    pub(super) fn malformed(what: impl fmt::Display) -> Self {
        WalClientError::Malformed(what.to_string())
    }
}
