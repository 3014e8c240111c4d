//! `Entry`: what tandem knows about one path of a tree (kind, size, mtime, mode, symlink target
//! and, for files, a content hash), shared by the scanner, the index and the applier.
//!
//! Must never: hold anything read through a symlink: a symlink is described by its own
//! metadata and its raw target, never by what it points at.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sync::names::RelName;

/// Permission bits tandem replicates (rwx for all three classes plus setuid, setgid, sticky);
/// the file type lives in [`EntryKind`].
pub const MODE_BITS: u32 = 0o7777;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One path of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelName,
    pub kind: EntryKind,
    /// Bytes of content for a file, length of the target for a symlink, 0 for a directory
    /// (a directory's own size depends on the filesystem and would make every pass a change).
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (negative before it).
    pub mtime_ns: i128,
    /// Permission bits ([`MODE_BITS`]).
    pub mode: u32,
    /// A symlink's target as stored in the link, never resolved.
    pub link: Option<String>,
    /// BLAKE3 of a file's content, when known.
    pub hash: Option<[u8; 32]>,
}

impl Entry {
    /// An entry from `lstat` metadata; `link` is the target for a symlink. Hash unknown.
    pub fn from_metadata(path: RelName, kind: EntryKind, meta: &Metadata, link: Option<String>) -> Entry {
        let size = match kind {
            EntryKind::File => meta.len(),
            EntryKind::Dir => 0,
            EntryKind::Symlink => link.as_ref().map_or(0, |l| l.len() as u64),
        };
        Entry { path, kind, size, mtime_ns: mtime_ns(meta), mode: meta.mode() & MODE_BITS, link, hash: None }
    }

    /// True when the metadata that decides "may the old hash be reused" is unchanged.
    pub fn same_stat(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.mode == other.mode
    }

    /// The modification time as a `SystemTime`.
    pub fn mtime(&self) -> SystemTime {
        system_time(self.mtime_ns)
    }
}

/// Nanoseconds since the epoch of a file's modification time.
pub fn mtime_ns(meta: &Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// A `SystemTime` from nanoseconds since the epoch, saturating far outside the representable range.
pub fn system_time(ns: i128) -> SystemTime {
    let magnitude = ns.unsigned_abs();
    let secs = u64::try_from(magnitude / 1_000_000_000).unwrap_or(u64::MAX / 2);
    let span = Duration::new(secs, (magnitude % 1_000_000_000) as u32);
    let shifted = if ns >= 0 { UNIX_EPOCH.checked_add(span) } else { UNIX_EPOCH.checked_sub(span) };
    shifted.unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_system_time() {
        for ns in [0i128, 1, 1_700_000_000_123_456_789, -1_500_000_000] {
            let t = system_time(ns);
            let back = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            };
            assert_eq!(back, ns);
        }
    }

    #[test]
    fn directories_report_zero_size_and_mode_bits_only() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::symlink_metadata(dir.path()).unwrap();
        let e = Entry::from_metadata(RelName::new(b"d").unwrap(), EntryKind::Dir, &meta, None);
        assert_eq!(e.size, 0);
        assert_eq!(e.mode & !MODE_BITS, 0);
        assert_eq!(e.mtime_ns, mtime_ns(&meta));
    }
}
