//! WAL streaming: the host receives the primary PostgreSQL's WAL on a replication slot it owns,
//! keeps it in a durable segment archive on the standby side and serves it to the standby
//! PostgreSQL.
//!
//! Owns: everything tandem says to PostgreSQL over the replication protocol, and the WAL it
//! keeps. Must never: report WAL flushed to the primary before it is durable here (the slot
//! would let the primary recycle WAL the standby does not have).
//!
//! # Layout
//! - [`lsn`]: the vocabulary both halves speak: [`Lsn`], [`TimeLineId`], [`WalSegmentSize`]
//!   with the segment math, and PostgreSQL's WAL file names (pure).
//! - [`client`]: the replication-protocol client (connection, authentication, replication
//!   commands, the CopyBoth stream).
//! - [`archive`]: the durable segment archive (group commit, crash recovery, timelines,
//!   retention, disk cap) and its reader for the walsender side.
//! - [`upstream`]: whose WAL the archive holds (system id, server version, segment size).
//! - [`timeline_history`]: history files parsed (pure).
//! - [`receiver`]: the primary -> archive loop on tandem's slot (disk thread, reconnects,
//!   timeline switches, disk cap).
//! - [`walsender`]: the server side of physical streaming replication: serves the archive's
//!   WAL to a standby PostgreSQL as a primary's walsender would.
//! - [`base_backup`]: a new standby from `pg_basebackup`, configured to stream from tandem.
//! - [`auto_conf`]: `postgresql.auto.conf` settings set and removed by name.
//! - [`primary_sql`]: slot state and the current LSN over plain SQL, for status.
//! - [`status`]: [`status::WalStatus`], every position and lag in one value.
//! - [`config`]: `[wal]` in tandem.toml.
//! - [`service`]: all of it started as one daemon service.

pub mod archive;
pub mod auto_conf;
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
