//! File-tree sync from a primary to its standby: scanning a tree (symlinks are entries, never
//! followed), the persistent per-tree index that lets a pass with no change read no content,
//! the diff against the standby, and the standby's safe, batched, durable apply.
//!
//! Owns: the trees' bytes on both sides. Must never: write outside a tree (through `..`, an
//! absolute link target or a symlinked folder), delete at the standby what the primary could
//! not read, or show a half-written file under its real name.
//!
//! Not yet here: the delta transfer between hosts, the watcher and the CLI (issue 4).

pub mod apply;
pub mod confine;
pub mod diff;
pub mod entry;
pub mod index;
pub mod names;
pub mod nofollow;
pub mod refresh;
pub mod scan;
pub mod tree_error;
