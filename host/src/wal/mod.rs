//! WAL streaming: the host receives the primary PostgreSQL's WAL on a replication slot it owns,
//! keeps it in a durable segment archive on the standby side and serves it to the standby
//! PostgreSQL.
//!
//! Owns: everything tandem says to PostgreSQL over the replication protocol, and the WAL it
//! keeps. Must never: report WAL flushed to the primary before it is durable here (the slot
//! would let the primary recycle WAL the standby does not have).
//!
//! Built so far:
//! - [`lsn`]: the vocabulary both halves speak: [`Lsn`], [`TimeLineId`], [`WalSegmentSize`]
//!   with the segment math, and PostgreSQL's WAL file names (pure).
//! - [`client`]: the replication-protocol client (connection, authentication, replication
//!   commands, the CopyBoth stream).
//! - [`archive`]: the durable segment archive (group commit, crash recovery, timelines,
//!   retention, disk cap) and its reader for the walsender side.
//! - [`upstream`]: whose WAL the archive holds (system id, server version, segment size).
//! - [`walsender`]: the server side of physical streaming replication: serves the archive's
//!   WAL to a standby PostgreSQL as a primary's walsender would.
//!
//! The receiver loop joining the two and base backups are the next steps.

pub mod archive;
pub mod base_backup;
pub mod client;
pub mod config;
pub mod lsn;
pub mod primary_sql;
pub mod receiver;
pub mod service;
pub mod status;
pub mod timeline_history;
pub mod upstream;
pub mod walsender;

pub use lsn::{Lsn, ParseLsnError, SegNo, SegmentSizeError, TimeLineId, WalFileName, WalSegmentSize};
