//! Tuning knobs of the raft log store: segment size and the largest entry it accepts.
//!
//! Owns validation only; it never touches the disk.

use super::error::LogStoreError;

/// Default size at which the active segment is closed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Default upper bound on one encoded entry: the cluster's one limit of a replicated change
/// (the propose path refuses larger changes before they reach the store). A bound also lets
/// recovery reject an absurd length field instead of trusting it.
pub const DEFAULT_MAX_ENTRY_BYTES: u32 = crate::cluster::limits::MAX_ENTRY_BYTES;

/// Segment size used by `for_test`: small enough that a few dozen entries roll segments.
pub const TEST_SEGMENT_BYTES: u64 = 4 * 1024;

/// Smallest segment size `validate` accepts; below it every entry would get its own file.
pub const MIN_SEGMENT_BYTES: u64 = 1024;

/// Configuration of [`LogStore`](super::LogStore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStoreConfig {
    /// A segment is closed once it holds at least this many bytes; the next record starts a new
    /// segment file. One record may make a segment exceed it.
    pub segment_bytes: u64,
    /// Largest encoded entry accepted by `append` and believed by recovery.
    pub max_entry_bytes: u32,
    /// Accept an append that does not follow the log, as a map-backed store would: one past
    /// the next index leaves a hole (a new segment starts; recovery accepts a gap between
    /// segments), one at or below the last index first truncates from there. Entries at or
    /// below the purged id accepted this way do not survive a reopen. Raft never appends like
    /// this, so it is off by default and such an append is refused (a bug, or a lost segment
    /// at recovery); openraft's conformance suite needs it (it appends index 1 after purging
    /// up to 2, then index 3).
    pub lenient_appends: bool,
    /// Encoded bytes of entries one replication read clones out of the log (one entry
    /// always goes, however large): openraft asks for up to `max_payload_entries` at once.
    pub max_read_bytes: u64,
}

/// Default [`LogStoreConfig::max_read_bytes`]: what one append message carries by default.
pub const DEFAULT_MAX_READ_BYTES: u64 = 4 * 1024 * 1024;

impl Default for LogStoreConfig {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            lenient_appends: false,
            max_read_bytes: DEFAULT_MAX_READ_BYTES,
        }
    }
}

impl LogStoreConfig {
    /// Small segments so tests exercise rolling, truncation and purge across files.
    pub fn for_test() -> Self {
        Self { segment_bytes: TEST_SEGMENT_BYTES, ..Self::default() }
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), LogStoreError> {
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(LogStoreError::Config(format!(
                "segment_bytes {} is below the minimum {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        if self.max_entry_bytes == 0 {
            return Err(LogStoreError::Config("max_entry_bytes must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_test_configs_are_valid() {
        LogStoreConfig::default().validate().unwrap();
        LogStoreConfig::for_test().validate().unwrap();
    }

    #[test]
    fn tiny_segments_and_zero_entry_bound_are_refused() {
        let tiny = LogStoreConfig { segment_bytes: 10, ..LogStoreConfig::default() };
        assert!(matches!(tiny.validate(), Err(LogStoreError::Config(_))));
        let zero = LogStoreConfig { max_entry_bytes: 0, ..LogStoreConfig::default() };
        assert!(matches!(zero.validate(), Err(LogStoreError::Config(_))));
    }
}
