//! The error type of the tree-sync disk side (scan, index, apply): one enum a caller can match,
//! so a refused hostile entry can be told apart from a failing disk.
//!
//! Must never: carry raw non-UTF-8 bytes into messages (names are shown lossily).

use std::io;
use std::path::PathBuf;

use crate::sync::entry::EntryKind;

/// What went wrong while scanning, indexing or applying a tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A delta could not be applied (no usable base, a bad op, or the result's hash differs).
    #[error("delta not applied: {0}")]
    Delta(String),

    /// A relative name failed validation (absolute, `..`, empty component, NUL, too long).
    #[error("invalid tree path {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// An I/O operation failed on a path.
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The tree root is missing or not a directory.
    #[error("tree root {path:?} is not a usable directory: {reason}")]
    Root { path: PathBuf, reason: String },

    /// A directory component below the root is a symlink (or not a directory): writing
    /// through it could leave the tree, so the write is refused.
    #[error("refusing to go through {path:?}: {reason}")]
    UnsafeComponent { path: PathBuf, reason: &'static str },

    /// A symlink's target is absolute or climbs out of the tree.
    #[error("refusing symlink {name:?} -> {target:?}: {reason}")]
    LinkTarget { name: String, target: String, reason: &'static str },

    /// An entry of one kind was handed to the operation for another.
    #[error("{name:?} is a {got:?}, expected a {expected:?}")]
    WrongKind { name: String, expected: EntryKind, got: EntryKind },

    /// The standby's own file that a rename was to take is not what its index says (changed
    /// or gone since): the pass reports it and the next one sends the content.
    #[error("cannot take {name:?} for a rename: {reason}")]
    MoveSource { name: String, reason: &'static str },

    /// A hard-link member cannot be linked to its leader (missing, or not the same file).
    #[error("hard link {name:?} not made: {reason}")]
    LinkGroup { name: String, reason: String },

    /// Received metadata this standby refuses (attributes past the limit or outside the
    /// namespaces the tree keeps).
    #[error("metadata of {name:?} refused: {reason}")]
    Metadata { name: String, reason: String },

    /// A received file's content does not hash to the entry's hash.
    #[error("content of {name:?} does not match its hash")]
    HashMismatch { name: String },

    /// A scan filter returned a verdict count different from the batch it was given.
    #[error("scan filter returned {got} verdicts for {expected} entries")]
    FilterVerdicts { expected: usize, got: usize },

    /// The index could not be encoded.
    #[error("encoding the index: {0}")]
    IndexEncode(String),
}

impl TreeError {
    /// Wraps an I/O error with the operation and path it came from.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> TreeError {
        let path = path.into();
        move |source| TreeError::Io { op, path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_the_operation_and_path() {
        let e = TreeError::io("open", "/x/y")(io::Error::from(io::ErrorKind::NotFound));
        let text = e.to_string();
        assert!(text.starts_with("open \"/x/y\""), "{text}");
    }
}
