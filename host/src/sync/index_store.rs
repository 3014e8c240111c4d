//! The standby's index on disk as a base plus a change log: the base is the index as
//! [`Index::save`] writes it; each pass appends what it changed (inserts and removals, one
//! fdatasync) to `<base>.log`, which names its base by the base's checksum. A pass then costs
//! its changes, not the tree: rewriting a 25 MB index after every one-file pass made each
//! pass of a 200,000-entry tree take seconds. Once the log outgrows half the base (at least
//! [`MIN_COMPACT_BYTES`]), the next save writes a new base and starts an empty log, so the
//! rewriting stays amortised linear in what changed.
//!
//! Must never: apply a log to a base it does not continue (a crash between writing a new base
//! and starting its log leaves the old log, which names the old base and is ignored), or
//! apply a torn or damaged record (replay stops at the first one and the log is cut there:
//! a pass whose log record did not land is repeated, as its `since` was not recorded).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::sync::index::{Change, Index};
use crate::sync::tree_error::TreeError;

/// First bytes of a change log; the last byte is the format version (follows the index's:
/// version 2 entries carry owners and out-of-line metadata). A log of another version is
/// never replayed, even after a base whose checksum it names (an empty index's payload is the
/// same in both versions).
const LOG_MAGIC: &[u8; 8] = b"TNDMLOG\x02";
/// Magic plus the checksum of the base the log continues.
const LOG_HEADER: usize = 8 + 32;
/// Each record: length (u32 LE), CRC32 of the payload (u32 LE), postcard of a [`Change`].
const RECORD_HEADER: usize = 8;
/// A log smaller than this is never compacted, however small the base.
pub const MIN_COMPACT_BYTES: u64 = 1 << 20;
/// A record larger than this is damage, not data (an entry is a path of at most 4 KiB plus
/// its metadata).
const MAX_RECORD: usize = 1 << 20;

/// The base and log files of one tree's index.
#[derive(Debug)]
pub struct IndexStore {
    base: PathBuf,
    log: PathBuf,
    /// The base's checksum, which the log's header must carry.
    base_sum: Option<[u8; 32]>,
    base_bytes: u64,
    log_bytes: u64,
}

impl IndexStore {
    /// Loads the index kept at `base` (and its log). A missing base is an empty index; a
    /// damaged one an empty index flagged [`Index::damaged`]. Only I/O failures are errors.
    pub fn open(base: &Path) -> Result<(IndexStore, Index), TreeError> {
        let mut log_name = base.file_name().unwrap_or_default().to_os_string();
        log_name.push(".log");
        let mut store = IndexStore {
            base: base.to_path_buf(),
            log: base.with_file_name(log_name),
            base_sum: None,
            base_bytes: 0,
            log_bytes: 0,
        };
        let bytes = match fs::read(base) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(TreeError::io("read index", base)(e)),
        };
        let mut index = if bytes.is_empty() { Index::new() } else { Index::from_bytes(&bytes, base) };
        if !index.damaged() {
            store.base_sum = Index::checksum_of(&bytes);
        }
        store.base_bytes = bytes.len() as u64;
        drop(bytes);
        store.replay(&mut index)?;
        Ok((store, index))
    }

    /// Applies the log's records that continue this base, and cuts off anything after the
    /// last good one.
    fn replay(&mut self, index: &mut Index) -> Result<(), TreeError> {
        let mut file = match OpenOptions::new().read(true).write(true).open(&self.log) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(TreeError::io("open index log", &self.log)(e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(TreeError::io("read index log", &self.log))?;
        let continues = bytes.len() >= LOG_HEADER
            && &bytes[..8] == LOG_MAGIC
            && self.base_sum.is_some_and(|sum| bytes[8..LOG_HEADER] == sum);
        if !continues {
            // Another base's log (a crash right after a new base) or damage: the base stands.
            debug!(log = %self.log.display(), "index log does not continue this base; ignored");
            drop(file);
            let _ = fs::remove_file(&self.log);
            return Ok(());
        }
        let mut at = LOG_HEADER;
        let mut applied = 0u64;
        while let Some((change, next)) = record_at(&bytes, at) {
            index.apply(change);
            at = next;
            applied += 1;
        }
        if at < bytes.len() {
            warn!(log = %self.log.display(), kept = applied, cut = bytes.len() - at, "index log ends in a torn or damaged record; cut there");
            file.set_len(at as u64)
                .and_then(|()| file.sync_data())
                .map_err(TreeError::io("cut index log", &self.log))?;
        }
        self.log_bytes = at as u64;
        Ok(())
    }

    /// Makes `changes` durable after what is stored (one fdatasync). A store whose base is
    /// missing or damaged cannot carry a log: it writes `index` as a new base instead.
    pub fn append(&mut self, changes: &[Change], index: &Index) -> Result<(), TreeError> {
        if changes.is_empty() {
            return Ok(());
        }
        if self.base_sum.is_none() || self.wants_base(changes) {
            return self.rewrite(index);
        }
        let mut out = Vec::new();
        if self.log_bytes == 0 {
            out.extend_from_slice(LOG_MAGIC);
            out.extend_from_slice(&self.base_sum.expect("checked above"));
        }
        for change in changes {
            let payload = postcard::to_stdvec(change).map_err(|e| TreeError::IndexEncode(e.to_string()))?;
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
        }
        let fresh = self.log_bytes == 0;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log)
            .map_err(TreeError::io("open index log", &self.log))?;
        if fresh {
            // A leftover from a base that failed to land would sit before our header.
            file.set_len(0).map_err(TreeError::io("reset index log", &self.log))?;
        }
        file.write_all(&out)
            .and_then(|()| file.sync_data())
            .map_err(TreeError::io("append index log", &self.log))?;
        if fresh {
            sync_folder(&self.log)?;
        }
        self.log_bytes += out.len() as u64;
        Ok(())
    }

    /// True when appending `changes` would take the log past half the base: time for a new
    /// base.
    fn wants_base(&self, changes: &[Change]) -> bool {
        let guess: u64 = changes.len() as u64 * 96;
        self.log_bytes + guess > (self.base_bytes / 2).max(MIN_COMPACT_BYTES)
    }

    /// Writes `index` as the new base (durably) and drops the log it replaces.
    pub fn rewrite(&mut self, index: &Index) -> Result<(), TreeError> {
        let bytes = index.to_bytes()?;
        crate::durable::write_private(&self.base, &bytes)
            .map_err(TreeError::io("write index", &self.base))?;
        self.base_sum = Index::checksum_of(&bytes);
        self.base_bytes = bytes.len() as u64;
        // The old log names the old base: ignored from now on even if this removal is lost.
        match fs::remove_file(&self.log) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(TreeError::io("remove index log", &self.log)(e));
            }
            _ => {}
        }
        self.log_bytes = 0;
        Ok(())
    }

    /// Bytes in the log now (tests and status).
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }
}

/// The record at `at` and where the next one starts, if it is whole and sound.
fn record_at(bytes: &[u8], at: usize) -> Option<(Change, usize)> {
    let head = bytes.get(at..at + RECORD_HEADER)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + RECORD_HEADER..at + RECORD_HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let change = postcard::from_bytes(payload).ok()?;
    Some((change, at + RECORD_HEADER + len))
}

/// Makes the creation of `path` durable.
fn sync_folder(path: &Path) -> Result<(), TreeError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(TreeError::io("fsync index folder", dir))
}

#[cfg(test)]
#[path = "index_store_tests.rs"]
mod tests;
