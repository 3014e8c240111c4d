//! Durable raft log for the captain commit log: openraft 0.9 `RaftLogStorage` (storage v2)
//! over append-only segment files with group commit.
//!
//! # Layout
//! - `config.rs`: [`LogStoreConfig`] (segment size, entry bound).
//! - `error.rs`: [`LogStoreError`], converted to openraft's `StorageError` at the trait edge.
//! - `record.rs`: record codec `[u32 len][u32 crc32][postcard payload]`, pure.
//! - `segment.rs`: one `log-<first index>.seg` file.
//! - `meta.rs`: the `vote`, `committed` and `purged` files (atomic replace).
//! - `recovery.rs`: rebuilds the log at open; cuts a torn tail, refuses other damage.
//! - `writer.rs`: the one thread doing all disk writes, one `fdatasync` per batch.
//! - `store.rs`: [`LogStore`], the in-memory log every read is served from.
//! - `raft_impl.rs`: the openraft trait impls.
//!
//! This module never applies entries or builds snapshots: that is the state machine's job.

mod config;
mod error;
mod meta;
mod raft_impl;
mod record;
mod recovery;
mod segment;
mod store;
mod writer;

#[cfg(test)]
mod test_support;

pub use config::{DEFAULT_MAX_ENTRY_BYTES, DEFAULT_SEGMENT_BYTES, LogStoreConfig};
pub use error::LogStoreError;
pub use record::encoded_len;
pub use store::{LogStore, LogStoreStats};
