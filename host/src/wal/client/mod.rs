//! PostgreSQL WAL over the physical replication protocol. So far: the client side, which
//! connects to the primary as a standby would, keeps a physical slot, streams WAL and reports
//! what is durable. Spoken directly over a socket with postgres-protocol's message codec
//! (tokio-postgres has no CopyBoth/replication support).
//!
//! Owns: the conversation with the primary. Must never: report WAL as flushed before the
//! caller says it is durable (the slot would let the primary recycle it), panic on anything
//! the server sends, or log a password.
//!
//! # Layout
//! - `config`: [`ConnConfig`], where and as whom to connect.
//! - `codec`: backend messages off the wire (pure, capped).
//! - `auth`: trust, cleartext, MD5 and SCRAM-SHA-256 as a pure state machine.
//! - `conn`: [`ReplicationConn`]: socket, startup, authentication, message I/O.
//! - `query`: simple-query exchanges and typed access to their result sets.
//! - `commands`: IDENTIFY_SYSTEM, slots, TIMELINE_HISTORY, START_REPLICATION.
//! - `stream`: [`WalStream`], the CopyBoth stream and the end-of-timeline handshake.
//! - `xlog`: the CopyData payloads ('w', 'k', 'r') and PostgreSQL timestamps (pure).
//! - `error`: [`WalClientError`] and [`ServerError`] (with SQLSTATE).

mod auth;
pub(crate) mod codec;
mod commands;
mod config;
mod conn;
mod error;
mod query;
mod stream;
pub(crate) mod xlog;

#[cfg(test)]
mod props;
#[cfg(test)]
pub(crate) mod tests;

pub use codec::Column;
pub use commands::{EnsuredSlot, SlotInfo, SystemIdentity, TimelineHistory, validate_slot_name};
pub use config::{
    ConnConfig, DEFAULT_APPLICATION_NAME, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HOST, DEFAULT_MAX_MESSAGE_LEN,
    DEFAULT_PORT, DEFAULT_USER,
};
pub use conn::ReplicationConn;
pub use error::{ServerError, WalClientError, sqlstate};
pub use query::{ResultSet, Row};
pub use stream::{Event, TimelineSwitch, WalStream};
pub use xlog::{PgTime, StandbyStatus};
