//! The error type of the delta engine (signature, delta, patch): one enum a caller can match,
//! so a corrupt or hostile delta can be told apart from a failing disk.

use std::io;

/// What went wrong while signing a base, computing a delta or patching.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading the base or the new file, or writing the output, failed.
    #[error("delta i/o: {0}")]
    Io(#[from] io::Error),

    /// A block length outside what the engine accepts (zero, or past the bound that keeps the
    /// delta's window memory small).
    #[error("block length {0} is out of range")]
    InvalidBlockLen(u32),

    /// The base yielded a different number of bytes than its declared length: it changed
    /// while being signed. Reading stops one byte past `expected`, so `read` is at most that.
    #[error("base was declared {expected} bytes but yielded {read}")]
    BaseLenMismatch { expected: u64, read: u64 },

    /// A signature whose block list does not fit its file length and block length.
    #[error("signature has {actual} blocks, expected {expected} for its length")]
    BlockCount { expected: u64, actual: u64 },

    /// A delta asked for base blocks the base does not have.
    #[error("copy of blocks {block}..{end} is beyond the base's {base_blocks} blocks", end = u64::from(*.block) + u64::from(*.count))]
    CopyOutOfRange { block: u32, count: u32, base_blocks: u64 },

    /// The rebuilt file has a different length than the delta announced.
    #[error("patched file is {actual} bytes, expected {expected}")]
    LengthMismatch { expected: u64, actual: u64 },

    /// The rebuilt file does not hash to the delta's hash: the base changed since it was signed
    /// or the delta is corrupt.
    #[error("patched file does not match the new file's hash")]
    HashMismatch,
}
