//! WAL streaming: the host receives the primary PostgreSQL's WAL on a replication slot it owns,
//! keeps it in a durable segment archive on the standby side and serves it to the standby
//! PostgreSQL.
//!
//! Owns: everything tandem says to PostgreSQL over the replication protocol. Must never:
//! report WAL flushed to the primary before it is durable here (the slot would let the primary
//! recycle WAL the standby does not have).
//!
//! Built so far: [`client`], the replication-protocol client (connection, authentication,
//! replication commands, the CopyBoth stream). The archive, the receiver loop, the walsender
//! and base backups are the next steps.

pub mod client;
