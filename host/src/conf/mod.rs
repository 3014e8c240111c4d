//! The Splunk-style configuration model tandem replicates: an etc root of `.conf` files,
//! `.meta` permissions and data files (lookups, views, ...), the changes that edit it, and
//! snapshots of it. Pure model first, disk at the edge; no networking, no raft.
//!
//! # Layout
//! - [`scope`]: system / app / user scopes.
//! - [`change`]: `ConfChange` (target, op), its validation and display.
//! - [`names`]: the rules for names, stanzas, keys and values.
//! - [`relpath`]: `RelPath`, a validated path under the root.
//! - [`layout`]: which file a change writes, which layers a lookup reads, `classify`.
//! - [`parse`]: `ConfDoc`, the lossless `.conf` parser and renderer.
//! - `apply`: applying key and stanza ops to a `ConfDoc` (pure, idempotent).
//! - [`tree`]: `ConfTree`, the on-disk tree: apply, batch, read.
//! - `listing`: `ConfTree::replicable_files`, what a snapshot carries.
//! - [`layers`]: layered lookups (`default` < `local` < user).
//! - [`snapshot`]: the tar+zstd snapshot of the replicated files.
//! - `unpack`: reading and validating a snapshot into a staging folder before the tree is touched.
//! - [`error`]: the error type, `ConfError`.
//! - `fsio`: symlink-refusing reads, atomic writes, batched fsyncs.

mod apply;
pub mod change;
pub mod error;
mod fsio;
pub mod layers;
pub mod layout;
mod listing;
pub mod names;
pub mod parse;
pub mod relpath;
pub mod scope;
pub mod snapshot;
pub mod tree;
pub(crate) mod unpack;

#[cfg(test)]
mod proptests;

pub use change::{ConfChange, ConfChangeKey, Op, Target, TargetKind};
pub use error::ConfError;
pub use layers::{Layered, LayeredValue};
pub use layout::classify;
pub use parse::ConfDoc;
pub use relpath::RelPath;
pub use scope::Scope;
pub use tree::ConfTree;
