//! Filling in content hashes for a fresh scan: the index's hash is reused when a file's
//! (kind, size, mtime, mode) are unchanged, so a pass over an unchanged tree reads no content;
//! anything else is hashed (BLAKE3, streaming).
//!
//! Must never: record a hash for content that changed while it was read (the file's
//! metadata is compared before and after), follow a symlink at the file's own name, or drop
//! a file it could not read as if it were deleted: such files are returned in
//! [`RefreshStats::unreadable`] for the diff to protect.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use tracing::debug;

use crate::sync::entry::{Entry, EntryKind, MODE_BITS, mtime_ns};
use crate::sync::index::Index;
use crate::sync::names::RelName;
use crate::sync::tree_error::TreeError;

/// Read size while hashing.
const HASH_CHUNK: usize = 256 * 1024;
/// Times a file that keeps changing under the hasher is retried before it is reported.
const HASH_ATTEMPTS: u32 = 3;

/// What a refresh did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefreshStats {
    /// Files whose content was read and hashed.
    pub hashed_files: u64,
    /// Bytes read while hashing (retries included).
    pub hashed_bytes: u64,
    /// Files whose hash came from the index without reading them.
    pub reused: u64,
    /// Files that could not be hashed (unreadable, or changing on every attempt); left out of
    /// the returned entries. Pass them to [`crate::sync::index::diff`] with the scan's own list.
    pub unreadable: Vec<(RelName, String)>,
}

/// Fills in content hashes for `scanned` (entries of the tree at `root`): reuses `index`'s
/// hash when the file's stat is unchanged, else hashes the file. Directories and symlinks pass
/// through. A file hashed here gets the size, mtime and mode seen while it was read.
pub fn refresh(
    index: &Index,
    scanned: Vec<Entry>,
    root: &Path,
) -> Result<(Vec<Entry>, RefreshStats), TreeError> {
    let meta = fs::metadata(root).map_err(TreeError::io("stat tree root", root))?;
    if !meta.is_dir() {
        return Err(TreeError::Root { path: root.to_path_buf(), reason: "not a directory".into() });
    }
    let mut stats = RefreshStats::default();
    let mut out = Vec::with_capacity(scanned.len());
    let mut buf = vec![0u8; HASH_CHUNK];
    for mut entry in scanned {
        if entry.kind != EntryKind::File {
            out.push(entry);
            continue;
        }
        let known = index.get(&entry.path).filter(|old| old.same_stat(&entry)).and_then(|old| old.hash);
        if let Some(hash) = known {
            entry.hash = Some(hash);
            stats.reused += 1;
            out.push(entry);
            continue;
        }
        match hash_file(&root.join(entry.path.to_path()), &mut buf, &mut stats) {
            Ok(Hashed { hash, size, mtime_ns, mode }) => {
                entry.hash = Some(hash);
                (entry.size, entry.mtime_ns, entry.mode) = (size, mtime_ns, mode);
                stats.hashed_files += 1;
                out.push(entry);
            }
            // Gone since the scan: absent at the source, so leaving it out is the truth.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => stats.unreadable.push((entry.path, e.to_string())),
        }
    }
    debug!(
        hashed = stats.hashed_files,
        bytes = stats.hashed_bytes,
        reused = stats.reused,
        unreadable = stats.unreadable.len(),
        "refreshed hashes"
    );
    Ok((out, stats))
}

/// A file's hash with the stat it was taken under.
struct Hashed {
    hash: [u8; 32],
    size: u64,
    mtime_ns: i128,
    mode: u32,
}

/// Hashes one file, retrying while its metadata changes under the read.
fn hash_file(path: &Path, buf: &mut [u8], stats: &mut RefreshStats) -> io::Result<Hashed> {
    for _ in 0..HASH_ATTEMPTS {
        let mut file: File = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
        let before = file.metadata()?;
        if !before.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no longer a regular file"));
        }
        let mut hasher = blake3::Hasher::new();
        let mut read = 0u64;
        loop {
            let n = match file.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            read += n as u64;
        }
        stats.hashed_bytes += read;
        let after = file.metadata()?;
        let stable =
            read == before.len() && after.len() == before.len() && mtime_ns(&after) == mtime_ns(&before);
        if stable {
            let mode = before.mode() & MODE_BITS;
            return Ok(Hashed {
                hash: *hasher.finalize().as_bytes(),
                size: read,
                mtime_ns: mtime_ns(&before),
                mode,
            });
        }
    }
    Err(io::Error::other("file kept changing while being hashed"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::sync::scan::{Verdict, scan};

    fn scan_all(root: &Path) -> Vec<Entry> {
        scan(root, &mut |b: &[Entry]| vec![Verdict::Keep; b.len()]).unwrap().entries
    }

    #[test]
    fn unchanged_tree_reads_no_content_and_mtime_change_rehashes() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/a"), vec![7u8; 300_000]).unwrap();
        fs::write(t.path().join("b"), b"hello").unwrap();
        fs::write(t.path().join("empty"), b"").unwrap();

        let (first, stats) = refresh(&Index::new(), scan_all(t.path()), t.path()).unwrap();
        assert_eq!((stats.hashed_files, stats.hashed_bytes, stats.reused), (3, 300_005, 0));
        let b = first.iter().find(|e| e.path.as_bytes() == b"b").unwrap();
        assert_eq!(b.hash, Some(*blake3::hash(b"hello").as_bytes()));
        assert!(first.iter().filter(|e| e.kind == EntryKind::Dir).all(|e| e.hash.is_none()));

        let index: Index = first.iter().cloned().collect();
        let (second, stats) = refresh(&index, scan_all(t.path()), t.path()).unwrap();
        assert_eq!((stats.hashed_files, stats.hashed_bytes, stats.reused), (0, 0, 3));
        assert_eq!(second, first);

        // Same size, same content, new mtime: rehashed (only that file).
        let f = File::options().write(true).open(t.path().join("b")).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(60)).unwrap();
        let (third, stats) = refresh(&index, scan_all(t.path()), t.path()).unwrap();
        assert_eq!((stats.hashed_files, stats.hashed_bytes, stats.reused), (1, 5, 2));
        let b3 = third.iter().find(|e| e.path.as_bytes() == b"b").unwrap();
        assert_eq!(b3.hash, b.hash);
        assert_ne!(b3.mtime_ns, b.mtime_ns);
    }

    #[test]
    fn a_stale_hash_with_other_stat_is_not_reused() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"new content").unwrap();
        let mut scanned = scan_all(t.path());
        let mut old = scanned[0].clone();
        old.hash = Some([0; 32]);
        old.mode ^= 0o100;
        let index: Index = [old].into_iter().collect();
        let (out, stats) = refresh(&index, std::mem::take(&mut scanned), t.path()).unwrap();
        assert_eq!(stats.hashed_files, 1);
        assert_eq!(out[0].hash, Some(*blake3::hash(b"new content").as_bytes()));
    }

    #[test]
    fn vanished_files_drop_and_replaced_by_symlink_is_unreadable() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("gone"), b"x").unwrap();
        fs::write(t.path().join("swapped"), b"x").unwrap();
        let scanned = scan_all(t.path());
        fs::remove_file(t.path().join("gone")).unwrap();
        fs::remove_file(t.path().join("swapped")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", t.path().join("swapped")).unwrap();
        let (out, stats) = refresh(&Index::new(), scanned, t.path()).unwrap();
        assert!(out.is_empty());
        assert_eq!(stats.unreadable.len(), 1, "the symlink is not followed: {:?}", stats.unreadable);
        assert_eq!(stats.unreadable[0].0.as_bytes(), b"swapped");
    }
}
