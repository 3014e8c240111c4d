//! The warm-standby pair: two hosts, one primary and one standby, each with its PostgreSQL and
//! its application's file trees. This module orchestrates what `wal` and `sync` do: it prepares
//! the local PostgreSQL for its role, records the pairing durably, starts and stops the jobs
//! (WAL streaming, tree sync) the role needs, fails over, and tells the truth about all of it.
//!
//! - `pairing`: the durable record (role, peer by identity, options, failover epoch).
//! - `plan` / `jobs`: which jobs a role runs, and the supervisor that swaps them.
//! - `protocol` / `service`: what the two hosts say to each other; the running pair.
//! - `fence`: the old primary's database stops taking writes before the standby promotes.
//! - `configure`, `failover` (convert-to-primary, rejoin), `off`: the operator's commands;
//!   `join` and `copy` are the steps configure and rejoin share.
//! - `tunnel`: the pair's side of the database tunnel (entry socket, exit gate).
//! - `keeper`: a standby's PostgreSQL whose postmaster died is restarted, with backoff.
//! - `status`: the facts, for the CLI, REST, the health check and the metrics.
//! - `postgres`: the local PostgreSQL's administration.
//!
//! Owns: the pairing record and the local PostgreSQL's role. Must never: promote while the old
//! primary still answers as a primary (unless forced; and never before fencing one that can
//! be reached), or discard a database without moving it
//! to a recovery location first.

pub mod check;
pub mod config;
pub mod configure;
pub mod copy;
pub mod error;
pub mod failover;
pub mod fence;
pub mod jobs;
pub mod join;
pub mod keeper;
pub mod off;
pub mod pairing;
pub mod plan;
pub mod postgres;
pub mod protocol;
pub mod service;
pub mod status;
pub mod status_text;
pub mod tunnel;

pub use configure::{ConfigureRequest, Report};
pub use error::StandbyError;
pub use pairing::{Options, Role};
pub use service::Standby;
pub use status::StandbyStatus;
