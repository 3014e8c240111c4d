//! File-tree sync from a primary to its standby: scanning a tree (symlinks are entries, never
//! followed), the persistent per-tree index that lets a pass with no change read no content,
//! the diff against the standby, and the standby's safe, batched, durable apply.
//!
//! Owns: the trees' bytes on both sides. Must never: write outside a tree (through `..`, an
//! absolute link target or a symlinked folder), delete at the standby what the primary could
//! not read, or show a half-written file under its real name.
//!
//! The delta engine (rolling weak hash + BLAKE3 strong hash over blocks, streaming, verified
//! by a whole-file hash) turns a changed file into a few copies and literals against the
//! standby's copy. Passes between hosts (`pass/`) start from the primary's change journal
//! (`journal`, fed by `watch` through `live`) when they can; a standby `follow`s its primary
//! and keeps a `status` per tree.
//!
//! Metadata is kept like `rsync -aHS` (modes, mtimes, symlinks, hard links as links, holes as
//! holes), plus owners when the standby is root and, per tree, extended attributes and ACLs
//! (`meta`, `hardlink`, `sparse`); sockets, FIFOs and devices are skipped and counted.

pub mod apply;
pub mod block_index;
pub mod config;
pub mod confine;
pub mod delta;
pub mod diff;
pub mod entry;
pub mod error;
mod file_writer;
pub mod filter;
pub mod follow;
pub mod hardlink;
pub mod index;
pub mod index_store;
pub mod journal;
pub mod live;
pub mod meta;
pub mod names;
pub mod nofollow;
pub mod pass;
pub mod patch;
pub mod protocol;
pub mod refresh;
pub mod rolling;
pub mod scan;
pub mod server;
pub mod signature;
pub mod sparse;
pub mod status;
pub mod tree_error;
pub mod watch;
