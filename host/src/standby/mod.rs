//! The warm-standby pair: two hosts, one primary and one standby, each with its PostgreSQL and
//! its application's file trees. This module orchestrates what `wal` and `sync` do: it prepares
//! the local PostgreSQL for its role, records the pairing durably, starts and stops the jobs
//! (WAL streaming, tree sync) that the role needs, and fails over.
//!
//! Owns: the pairing record and the local PostgreSQL's role. Must never: promote while the old
//! primary still answers as a primary (unless forced), or discard a database without moving it
//! to a recovery location first.

pub mod config;
pub mod postgres;
