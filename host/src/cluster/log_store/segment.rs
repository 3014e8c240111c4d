//! One segment file `log-<first index, 20 digits>.seg`: its name, its record offsets and the
//! append/truncate/delete calls on it.
//!
//! A segment never decides when to roll, sync the directory or what is durable; the writer
//! does. Only the writer thread (and recovery, before the writer starts) touches segments.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::LogStoreError;

const PREFIX: &str = "log-";
const SUFFIX: &str = ".seg";
const INDEX_DIGITS: usize = 20;

/// File name of the segment whose first record holds `first`. Zero-padded so names sort in
/// index order.
pub(crate) fn file_name(first: u64) -> String {
    format!("{PREFIX}{first:0INDEX_DIGITS$}{SUFFIX}")
}

/// The first index encoded in a segment file name, or `None` for other files.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != INDEX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files in `dir`, sorted by first index.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogStoreError> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| LogStoreError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogStoreError::io("list", dir, e))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_file_name) {
            found.push((first, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(first, _)| *first);
    Ok(found)
}

/// A segment as the writer tracks it.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Index of the first record, as in the file name.
    pub first: u64,
    pub path: PathBuf,
    /// Byte offset of each record; record `i` holds index `first + i`. Kept so truncate can cut
    /// at an index without rescanning the file.
    pub offsets: Vec<u64>,
    /// Bytes of whole records in the file.
    pub len: u64,
    /// Open only while this is the active (last) segment.
    file: Option<File>,
}

impl Segment {
    /// Creates an empty segment for `first`. The caller makes the directory entry durable.
    pub(crate) fn create(dir: &Path, first: u64) -> Result<Self, LogStoreError> {
        let path = dir.join(file_name(first));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600) // every replicated value: this user's only (issue 14)
            .open(&path)
            .map_err(|e| LogStoreError::io("create segment", &path, e))?;
        Ok(Self { first, path, offsets: Vec::new(), len: 0, file: Some(file) })
    }

    /// A segment recovered from disk; `len` is where its valid records end.
    pub(crate) fn recovered(first: u64, path: PathBuf, offsets: Vec<u64>, len: u64) -> Self {
        Self { first, path, offsets, len, file: None }
    }

    /// Index the next record in this segment would hold.
    pub(crate) fn next_index(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    /// Last index held, `None` when empty.
    pub(crate) fn last_index(&self) -> Option<u64> {
        self.next_index().checked_sub(1).filter(|_| !self.offsets.is_empty())
    }

    fn file(&mut self) -> Result<&File, LogStoreError> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(|e| LogStoreError::io("open segment", &self.path, e))?;
            self.file = Some(f);
        }
        Ok(self.file.as_ref().expect("opened above"))
    }

    /// Writes whole records (`bytes`, made of records of `record_lens`) at the end. Not
    /// durable until [`Segment::sync`].
    pub(crate) fn write(&mut self, bytes: &[u8], record_lens: &[usize]) -> Result<(), LogStoreError> {
        let at = self.len;
        // Positional write: the file offset is ours, not the handle's, so a truncate never
        // leaves a stale cursor behind.
        self.file()?.write_all_at(bytes, at).map_err(|e| LogStoreError::io("write", &self.path, e))?;
        let mut offset = at;
        for len in record_lens {
            self.offsets.push(offset);
            offset += *len as u64;
        }
        debug_assert_eq!(offset, at + bytes.len() as u64);
        self.len = offset;
        Ok(())
    }

    /// `fdatasync`: makes written records durable.
    pub(crate) fn sync(&mut self) -> Result<(), LogStoreError> {
        let path = self.path.clone();
        self.file()?.sync_data().map_err(|e| LogStoreError::io("fdatasync", path, e))
    }

    /// Cuts the file so it ends before the record holding `index`, durably. `index` must be
    /// inside this segment and not its first record (delete the segment for that).
    pub(crate) fn truncate_from(&mut self, index: u64) -> Result<(), LogStoreError> {
        let keep = (index - self.first) as usize;
        let cut = self.offsets[keep];
        self.file()?.set_len(cut).map_err(|e| LogStoreError::io("truncate", &self.path, e))?;
        self.offsets.truncate(keep);
        self.len = cut;
        self.sync()
    }

    /// Closes the handle: the segment is no longer the active one.
    pub(crate) fn close(&mut self) {
        self.file = None;
    }

    /// Removes the file. The caller syncs the directory.
    pub(crate) fn delete(mut self) -> Result<(), LogStoreError> {
        self.close();
        fs::remove_file(&self.path).map_err(|e| LogStoreError::io("delete segment", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_index_and_parse_back() {
        assert_eq!(file_name(42), "log-00000000000000000042.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert!(file_name(9) < file_name(10));
        for other in ["vote", "log-1.seg", "log-0000000000000000004x.seg", "log-00000000000000000042.tmp"] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn write_tracks_offsets_and_truncate_cuts_at_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 10).unwrap();
        seg.write(&[1; 30], &[10, 20]).unwrap();
        seg.write(&[2; 5], &[5]).unwrap();
        assert_eq!(seg.offsets, [0, 10, 30]);
        assert_eq!((seg.last_index(), seg.next_index()), (Some(12), 13));
        seg.sync().unwrap();
        seg.truncate_from(11).unwrap();
        assert_eq!(fs::metadata(&seg.path).unwrap().len(), 10);
        assert_eq!(seg.last_index(), Some(10));
        // Appending after a truncate continues at the cut.
        seg.write(&[3; 4], &[4]).unwrap();
        assert_eq!(fs::read(&seg.path).unwrap(), [[1u8; 10].as_slice(), &[3; 4]].concat());
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed, vec![(10, seg.path.clone())]);
        seg.delete().unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
    }
}
