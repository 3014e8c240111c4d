//! Configuration replication: the captain commit log (openraft), its log store and state
//! machine, the member lifecycle (init, join, add, remove, clean), the outbox and recovery of
//! members that were cut off, history purge, and status.
//!
//! Owns: the order of replicated conf changes and who the members are. Must never:
//! acknowledge a change as committed before a majority has it durably, let an out-of-sync
//! member lead (raft's up-to-date vote check), reuse a node id, or dial itself.

mod append;
pub mod check;
mod client;
mod config;
mod download;
mod error;
pub mod limits;
pub mod log_store;
mod members;
mod network;
mod node;
mod outbox;
mod pending_base;
mod propose;
mod purge;
mod recovery;
pub mod rpc;
mod server;
mod shared;
mod snapshot;
mod snapshot_file;
mod state_machine;
mod status;
mod types;
mod whitelist;

pub use client::{CallError, Dialer, PeerClient};
pub use config::ClusterConfig;
pub use error::ClusterError;
pub use node::{ClusterNode, Identity, Joined};
pub use propose::{ChangeReport, Disposition};
pub use rpc::CHUNK_FRAME_SLACK;
pub use server::serve_connection;
pub use shared::{ApplyStall, RESYNC_MESSAGE};
pub use status::{ClusterStatus, MemberReport, MemberState};
pub use types::{Member, NodeId, Request, Response, TypeConfig};
