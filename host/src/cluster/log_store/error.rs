//! The log store's error type, and its conversion to openraft's `StorageError` at the trait
//! boundary.
//!
//! Inside the module everything returns [`LogStoreError`]; only `raft_impl.rs` converts.

use std::io;
use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, NodeId, StorageError, StorageIOError};

/// What went wrong in the raft log store.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// A file-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk that are not a torn tail: refusing them beats silently losing or
    /// inventing committed entries.
    #[error("corrupt log file {} at offset {offset}: {reason}", file.display())]
    Corrupt { file: PathBuf, offset: u64, reason: String },

    /// Another `LogStore` (in this or another process) holds the directory.
    #[error("log directory {} is locked by another store", dir.display())]
    Locked { dir: PathBuf },

    /// Invalid [`LogStoreConfig`](super::LogStoreConfig).
    #[error("invalid log store config: {0}")]
    Config(String),

    /// An entry could not be serialized.
    #[error("encoding entry {index}: {source}")]
    Encode {
        index: u64,
        #[source]
        source: postcard::Error,
    },

    /// An entry's encoding exceeds `max_entry_bytes`.
    #[error("entry {index} encodes to {len} bytes, above the limit of {max}")]
    EntryTooLarge { index: u64, len: usize, max: u32 },

    /// The caller tried to leave a hole (or overlap) in the log.
    #[error("entry {got} does not follow the log, expected index {expected}")]
    NotContiguous { expected: u64, got: u64 },

    /// An earlier write or fsync failed, so what is on disk is unknown; the store refuses all
    /// further writes until it is reopened (and recovered) from disk.
    #[error("log store failed earlier and refuses writes: {0}")]
    Failed(String),

    /// The writer thread is gone (the store is shutting down).
    #[error("log writer has stopped")]
    WriterStopped,
}

impl LogStoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }

    /// openraft's append callback carries an `io::Error`; keep our message in it.
    pub(crate) fn to_io(&self) -> io::Error {
        io::Error::other(self.to_string())
    }

    /// Converts to openraft's error, naming what was being done to what.
    pub(crate) fn into_storage<NID: NodeId>(
        self,
        subject: ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> StorageError<NID> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_error_names_file_and_offset() {
        let e = LogStoreError::Corrupt { file: "/x/log-1.seg".into(), offset: 42, reason: "crc".into() };
        let msg = e.to_string();
        assert!(msg.contains("/x/log-1.seg") && msg.contains("42") && msg.contains("crc"), "{msg}");
    }

    #[test]
    fn converts_to_storage_error_keeping_the_message() {
        let e = LogStoreError::Failed("disk on fire".into());
        let s: StorageError<u64> = e.into_storage(ErrorSubject::Logs, ErrorVerb::Write);
        assert!(s.to_string().contains("disk on fire"), "{s}");
    }
}
