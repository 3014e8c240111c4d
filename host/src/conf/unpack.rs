//! Reading a snapshot as a stream: zstd decompression cut off past the cap, every tar entry
//! checked (regular file, UTF-8 path that is a `RelPath` an op could have written, no
//! duplicates, size within the cap) and its bytes written to a staging folder, so `install`
//! touches the tree only once the whole snapshot is known good.
//!
//! Must never: hold a snapshot's files in memory (only the small metadata entry), read past
//! the cap (plus slack) of decompressed data, write outside the staging folder, or accept a
//! snapshot with a single bad entry.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::rc::Rc;

use crate::conf::change::ConfChangeKey;
use crate::conf::error::ConfError;
use crate::conf::layout::classify;
use crate::conf::relpath::RelPath;
use crate::conf::snapshot::META_ENTRY;

/// A bound on one entry's tar framing: header, GNU long-name header, padding.
const ENTRY_OVERHEAD: u64 = 2048;
/// Room for the end-of-archive blocks beyond the cap when limiting the raw tar stream.
const STREAM_SLACK: u64 = 64 << 10;
/// The metadata entry (the raft layer's snapshot meta: membership, recent batch ids) is the
/// one entry read into memory; it is small, and this bounds it whatever the cap.
pub const MAX_META_BYTES: u64 = 16 << 20;
/// Bytes moved at a time from the tar stream to a staged file.
const COPY_BUFFER: usize = 256 << 10;

/// A snapshot, read and validated whole, its files written under the staging folder (or only
/// checked, when there is none).
#[derive(Debug)]
pub(crate) struct Staged {
    pub(crate) meta: Vec<u8>,
    /// Every file of the snapshot, by path; its bytes are at the same path under the staging
    /// folder.
    pub(crate) files: BTreeMap<RelPath, ConfChangeKey>,
}

/// What an entry counts against the cap; the same in `pack` and `unpack`.
pub(crate) fn entry_cost(path_len: usize, size: u64) -> u64 {
    size.saturating_add(path_len as u64).saturating_add(ENTRY_OVERHEAD)
}

/// The decompressed tar stream, cut off past `left` bytes. The tar crate reads GNU long-name
/// and PAX entries whole before yielding the entry they describe, so the per-entry count
/// alone would not stop a bomb hidden in one of those.
struct Capped<R> {
    inner: R,
    left: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            self.hit.set(true);
            return Err(io::Error::other("snapshot stream exceeds the cap"));
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A tar reader over the decompressed snapshot, and the flag its cut-off sets.
fn open<R: Read>(src: R, cap: u64) -> Result<(tar::Archive<impl Read>, Rc<Cell<bool>>), ConfError> {
    let decoder =
        zstd::stream::read::Decoder::new(src).map_err(|e| ConfError::SnapshotCorrupt(e.to_string()))?;
    let hit = Rc::new(Cell::new(false));
    let capped = Capped { inner: decoder, left: cap.saturating_add(STREAM_SLACK), hit: hit.clone() };
    Ok((tar::Archive::new(capped), hit))
}

/// A read error of the tar stream: the cut-off, or a damaged snapshot.
fn stream_error(e: io::Error, hit: &Cell<bool>, cap: u64) -> ConfError {
    if hit.get() {
        ConfError::SnapshotTooLarge { limit: cap }
    } else {
        ConfError::SnapshotCorrupt(e.to_string())
    }
}

/// Reads every entry of the snapshot `src`, refusing the whole snapshot at the first bad one,
/// and writes each file's bytes under `staging` (a fresh folder the caller owns; `None`: check
/// only). Memory: one copy buffer and the file list, whatever the snapshot's size.
pub(crate) fn stage<R: Read>(src: R, cap: u64, staging: Option<&Path>) -> Result<Staged, ConfError> {
    let (mut archive, hit) = open(src, cap)?;
    let corrupt = |e| stream_error(e, &hit, cap);
    let mut total = 0u64;
    let mut meta = None;
    let mut files = BTreeMap::new();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw_path = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw_path).into_owned();
        let refuse = |reason| ConfError::SnapshotEntry { path: path.clone(), reason };
        if std::str::from_utf8(&raw_path).is_err() {
            return Err(refuse("path is not UTF-8"));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse("not a regular file"));
        }
        let size = entry.size();
        total = total.saturating_add(entry_cost(raw_path.len(), size));
        if total > cap {
            return Err(ConfError::SnapshotTooLarge { limit: cap });
        }
        if path == META_ENTRY {
            if size > MAX_META_BYTES {
                return Err(refuse("metadata entry over its limit"));
            }
            let mut data = Vec::new();
            entry.by_ref().take(size).read_to_end(&mut data).map_err(corrupt)?;
            if data.len() as u64 != size {
                return Err(refuse("truncated"));
            }
            if meta.replace(data).is_some() {
                return Err(refuse("duplicate entry"));
            }
            continue;
        }
        let rel = RelPath::new(path.as_str()).map_err(|_| refuse("absolute, escaping or malformed path"))?;
        let key = classify(&rel).ok_or_else(|| refuse("not a replicable path"))?;
        if files.contains_key(&rel) {
            return Err(refuse("duplicate entry"));
        }
        let copied = match staging {
            Some(dir) => {
                let target = dir.join(rel.as_path());
                let io = |e| ConfError::io(&target, e);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(io)?;
                }
                let mut out = io::BufWriter::new(fs::File::create(&target).map_err(io)?);
                let n = copy(&mut entry, &mut out, size, &corrupt, &io)?;
                out.flush().map_err(io)?;
                n
            }
            None => {
                copy(&mut entry, &mut io::sink(), size, &corrupt, &|e| ConfError::io(Path::new("<sink>"), e))?
            }
        };
        if copied != size {
            return Err(refuse("truncated"));
        }
        files.insert(rel, key);
    }
    // The tar reader stops at the end-of-archive block, or at an end of input between two
    // entries: a snapshot cut there would pass for a whole one with fewer files (and an
    // install deletes the files it lacks). Reading the zstd frame to its end checks that it is
    // complete and its checksum right.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(corrupt)?;
    Ok(Staged { meta: meta.ok_or(ConfError::SnapshotNoMeta)?, files })
}

/// Copies at most `size` bytes of `from` to `to`, telling a damaged stream (`read_err`) from a
/// failed write of the staging file (`write_err`).
fn copy(
    from: &mut impl Read,
    to: &mut impl Write,
    size: u64,
    read_err: &dyn Fn(io::Error) -> ConfError,
    write_err: &dyn Fn(io::Error) -> ConfError,
) -> Result<u64, ConfError> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut done = 0u64;
    while done < size {
        let want = buf.len().min(usize::try_from(size - done).unwrap_or(usize::MAX));
        let n = from.read(&mut buf[..want]).map_err(read_err)?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).map_err(write_err)?;
        done += n as u64;
    }
    Ok(done)
}

/// Finds the metadata entry, reading nothing else into memory.
pub(crate) fn meta<R: Read>(src: R, cap: u64) -> Result<Vec<u8>, ConfError> {
    let (mut archive, hit) = open(src, cap)?;
    let corrupt = |e| stream_error(e, &hit, cap);
    for entry in archive.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        if entry.path_bytes().as_ref() == META_ENTRY.as_bytes() {
            if entry.size() > MAX_META_BYTES.min(cap) {
                return Err(ConfError::SnapshotTooLarge { limit: MAX_META_BYTES.min(cap) });
            }
            let mut meta = Vec::new();
            entry.take(MAX_META_BYTES).read_to_end(&mut meta).map_err(corrupt)?;
            return Ok(meta);
        }
    }
    Err(ConfError::SnapshotNoMeta)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::conf::snapshot::ZSTD_LEVEL;

    /// A tar+zstd stream written header by header, bypassing the tar crate's path checks.
    pub(crate) fn raw(entries: &[(&str, tar::EntryType, u64, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for &(name, kind, size, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(kind);
            header.set_size(size);
            header.set_mode(0o644);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("target").unwrap();
            }
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        zstd::encode_all(builder.into_inner().unwrap().as_slice(), ZSTD_LEVEL).unwrap()
    }

    pub(crate) fn file(
        name: &'static str,
        data: &'static [u8],
    ) -> (&'static str, tar::EntryType, u64, &'static [u8]) {
        (name, tar::EntryType::Regular, data.len() as u64, data)
    }

    #[test]
    fn a_bomb_in_a_long_name_entry_is_cut_off() {
        let long_name = vec![b'a'; 200_000];
        let bytes = raw(&[
            file(META_ENTRY, b""),
            ("././@LongLink", tar::EntryType::GNULongName, long_name.len() as u64, long_name.leak()),
            file("apps/a/lookups/x.csv", b"x"),
        ]);
        assert!(matches!(
            stage(bytes.as_slice(), 100_000, None),
            Err(ConfError::SnapshotTooLarge { limit: 100_000 })
        ));
        // It is the stream cut-off that stopped it, before the long name was read whole.
        let (mut archive, hit) = open(bytes.as_slice(), 100_000).unwrap();
        let read: Result<Vec<_>, _> = archive.entries().unwrap().collect();
        assert!(read.is_err());
        assert!(hit.get());
    }

    #[test]
    fn total_size_is_capped_across_entries() {
        let bytes = raw(&[file(META_ENTRY, b""), file("apps/a/lookups/x.csv", &[b'x'; 600])]);
        let cost = entry_cost(META_ENTRY.len(), 0) + entry_cost("apps/a/lookups/x.csv".len(), 600);
        assert!(stage(bytes.as_slice(), cost, None).is_ok());
        assert!(matches!(stage(bytes.as_slice(), cost - 1, None), Err(ConfError::SnapshotTooLarge { .. })));
    }
}
