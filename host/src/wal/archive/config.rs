//! The archive's configuration: segment size, flush policy, segment preallocation, retention
//! reserve and disk cap, each with a named default. Owns validation; never does I/O.

use std::time::Duration;

use super::error::{ArchiveError, Result};
use crate::wal::lsn::{DEFAULT_WAL_SEGMENT_SIZE, WalSegmentSize};

/// Segments kept beyond what the standby has replayed (512 MiB at 16 MiB segments).
pub const DEFAULT_RESERVE_SEGMENTS: u64 = 32;
/// Disk the archive may use before it stops accepting WAL.
pub const DEFAULT_DISK_CAP_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Group commit: flush once this many bytes wait.
pub const DEFAULT_GROUP_MAX_BYTES: u64 = 1024 * 1024;
/// Group commit: flush once the oldest unflushed byte is this old.
pub const DEFAULT_GROUP_MAX_DELAY: Duration = Duration::from_millis(10);
/// Longest group-commit delay `validate` accepts: the primary's slot waits on it.
pub const MAX_GROUP_DELAY: Duration = Duration::from_secs(10);

/// When written WAL is fsynced (and only then reported as flushed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every `append` is durable before it returns, like `pg_receivewal --synchronous`.
    EveryAppend,
    /// Group commit: flush once `max_bytes` wait or the oldest waiting byte is `max_delay` old.
    /// The delay is checked on each `append` and by the caller through
    /// `ArchiveWriter::flush_deadline` / `flush_if_due`.
    Group {
        /// Flush once this many written bytes wait.
        max_bytes: u64,
        /// Flush once the oldest waiting byte is this old.
        max_delay: Duration,
    },
}

impl FlushPolicy {
    /// Group commit with the default thresholds.
    pub fn group() -> Self {
        FlushPolicy::Group { max_bytes: DEFAULT_GROUP_MAX_BYTES, max_delay: DEFAULT_GROUP_MAX_DELAY }
    }
}

/// How a new segment file gets its full size before WAL is written into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentInit {
    /// Write zeros over the whole segment, fsync, then write WAL in place (`pg_receivewal`,
    /// PostgreSQL's `wal_init_zero`). Costs one extra write of each segment; in exchange every
    /// later flush is an `fdatasync` that updates no metadata, and a full disk shows at segment
    /// creation instead of in the middle of a record.
    Zeroed,
    /// `ftruncate` to full size and leave holes. Cheaper to create; each flush may also commit
    /// block allocations.
    Sparse,
}

/// Configuration of one WAL archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// WAL segment size of the cluster, in bytes (power of two, 1 MiB..=1 GiB).
    pub segment_size: u64,
    /// When written WAL is made durable.
    pub flush: FlushPolicy,
    /// How new segments are preallocated.
    pub segment_init: SegmentInit,
    /// Segments kept before the standby's replay position.
    pub reserve_segments: u64,
    /// Bytes the archive may use; `None` for no cap.
    pub disk_cap_bytes: Option<u64>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            segment_size: DEFAULT_WAL_SEGMENT_SIZE,
            flush: FlushPolicy::EveryAppend,
            segment_init: SegmentInit::Zeroed,
            reserve_segments: DEFAULT_RESERVE_SEGMENTS,
            disk_cap_bytes: Some(DEFAULT_DISK_CAP_BYTES),
        }
    }
}

impl ArchiveConfig {
    /// Small segments, synchronous flushes, a small reserve and no cap: fast tests.
    pub fn for_test() -> Self {
        ArchiveConfig {
            segment_size: crate::wal::lsn::MIN_WAL_SEGMENT_SIZE,
            flush: FlushPolicy::EveryAppend,
            segment_init: SegmentInit::Zeroed,
            reserve_segments: 2,
            disk_cap_bytes: None,
        }
    }

    /// Checks every field; returns the validated segment size.
    pub fn validate(&self) -> Result<WalSegmentSize> {
        let seg = WalSegmentSize::new(self.segment_size).map_err(|e| ArchiveError::Config(e.to_string()))?;
        if let FlushPolicy::Group { max_bytes, max_delay } = self.flush {
            if max_bytes == 0 || max_delay.is_zero() {
                return Err(ArchiveError::Config("group flush needs max_bytes > 0 and max_delay > 0".into()));
            }
            if max_delay > MAX_GROUP_DELAY {
                return Err(ArchiveError::Config(format!(
                    "group flush max_delay {max_delay:?} is over {MAX_GROUP_DELAY:?}"
                )));
            }
        }
        if let Some(cap) = self.disk_cap_bytes {
            // Room for the segment being written and the next one: below that nothing streams.
            let min = 2 * seg.bytes();
            if cap < min {
                return Err(ArchiveError::Config(format!(
                    "disk_cap_bytes {cap} is under two segments ({min})"
                )));
            }
        }
        Ok(seg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_test_config_validate() {
        assert_eq!(ArchiveConfig::default().validate().unwrap().bytes(), DEFAULT_WAL_SEGMENT_SIZE);
        assert!(ArchiveConfig::for_test().validate().is_ok());
        let group = ArchiveConfig { flush: FlushPolicy::group(), ..ArchiveConfig::default() };
        assert!(group.validate().is_ok());
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = [
            ArchiveConfig { segment_size: 3 << 20, ..ArchiveConfig::default() },
            ArchiveConfig {
                flush: FlushPolicy::Group { max_bytes: 0, max_delay: Duration::from_millis(1) },
                ..ArchiveConfig::default()
            },
            ArchiveConfig {
                flush: FlushPolicy::Group { max_bytes: 1, max_delay: Duration::from_secs(60) },
                ..ArchiveConfig::default()
            },
            ArchiveConfig { disk_cap_bytes: Some(DEFAULT_WAL_SEGMENT_SIZE), ..ArchiveConfig::default() },
        ];
        for config in bad {
            assert!(matches!(config.validate(), Err(ArchiveError::Config(_))), "{config:?}");
        }
    }
}
