//! The archive directory as a handle: paths by name, durable whole-file replacement
//! (write a temp file, fsync, rename, fsync the directory), renames, removals and zero-filling.
//! The folder is 0700 and its files 0600: it holds the database's WAL.
//!
//! Owns the order of sync calls for whole-file writes. Must never decide *what* to write or
//! remove: callers (writer, recovery, retention) do.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::durability::Durability;
use super::error::{ArchiveError, Result};

/// Suffix of files being replaced; left-overs are removed when the archive opens.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
/// Mode of every file the archive creates: the database's WAL is for its owner only.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
/// Zero-fill chunk: PostgreSQL pads with XLOG_BLCKSZ blocks; bigger chunks mean fewer calls.
const ZERO_CHUNK: usize = 256 * 1024;

/// An open archive directory.
#[derive(Debug)]
pub(crate) struct Dir {
    path: PathBuf,
    handle: File,
    durability: Arc<dyn Durability>,
}

impl Dir {
    /// Opens (creating if needed) the directory at `path`, private: mode 0700, as PostgreSQL
    /// keeps its own WAL (an archive from an older tandem is made so too).
    pub(crate) fn open(path: &Path, durability: Arc<dyn Durability>) -> Result<Self> {
        crate::durable::create_private_dir(path).map_err(ArchiveError::io("create directory", path))?;
        let handle = File::open(path).map_err(ArchiveError::io("open directory", path))?;
        Ok(Dir { path: path.to_owned(), handle, durability })
    }

    /// Makes every file in the directory private (0600): an archive written by an older tandem
    /// left them 0644. One pass at open; new files are created 0600.
    pub(crate) fn make_files_private(&self) -> Result<()> {
        let entries = fs::read_dir(&self.path).map_err(ArchiveError::io("list", &self.path))?;
        for entry in entries {
            let entry = entry.map_err(ArchiveError::io("list", &self.path))?;
            let meta = entry.metadata().map_err(ArchiveError::io("stat", entry.path()))?;
            if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(PRIVATE_FILE))
                    .map_err(ArchiveError::io("chmod", entry.path()))?;
            }
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub(crate) fn durability(&self) -> &dyn Durability {
        &*self.durability
    }

    /// Makes creates, renames and removals in the directory durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.durability.sync_dir(&self.handle).map_err(ArchiveError::io("fsync directory", &self.path))
    }

    /// Replaces `name` with `content` atomically and durably: after a crash the file holds
    /// either the old or the new content, and once this returns, the new.
    pub(crate) fn write_atomic(&self, name: &str, content: &[u8]) -> Result<()> {
        let tmp = self.join(&format!("{name}{TEMP_SUFFIX}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE)
            .open(&tmp)
            .map_err(ArchiveError::io("create", &tmp))?;
        file.write_all(content).map_err(ArchiveError::io("write", &tmp))?;
        self.durability.sync_all(&file).map_err(ArchiveError::io("fsync", &tmp))?;
        drop(file);
        let path = self.join(name);
        fs::rename(&tmp, &path).map_err(ArchiveError::io("rename into place", &path))?;
        self.sync()
    }

    /// Renames `from` to `to` inside the directory; the caller syncs the directory.
    pub(crate) fn rename(&self, from: &str, to: &str) -> Result<()> {
        fs::rename(self.join(from), self.join(to)).map_err(ArchiveError::io("rename", self.join(from)))
    }

    /// Removes `name`; the caller syncs the directory. A missing file is not an error.
    pub(crate) fn remove(&self, name: &str) -> Result<()> {
        match fs::remove_file(self.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ArchiveError::io("remove", self.join(name))(e))
            }
            _ => Ok(()),
        }
    }
}

/// Writes zeros over `from..to` of `file` (at `path`, for errors).
pub(crate) fn zero_range(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], pos).map_err(ArchiveError::io("zero-fill", path))?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::archive::durability::CountingDurability;

    #[test]
    fn write_atomic_replaces_and_syncs_file_then_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let counter = Arc::new(CountingDurability::default());
        let dir = Dir::open(tmp.path(), counter.clone()).unwrap();
        dir.write_atomic("f", b"one").unwrap();
        dir.write_atomic("f", b"two").unwrap();
        assert_eq!(fs::read(tmp.path().join("f")).unwrap(), b"two");
        assert!(!tmp.path().join("f.tmp").exists());
        let counts = counter.counts();
        assert_eq!((counts.all, counts.dir), (2, 2));
    }

    #[test]
    fn zero_range_overwrites_only_the_range() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("z");
        fs::write(&path, vec![7u8; 600_000]).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        zero_range(&file, &path, 100, 500_000).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert!(bytes[..100].iter().all(|&b| b == 7));
        assert!(bytes[100..500_000].iter().all(|&b| b == 0));
        assert!(bytes[500_000..].iter().all(|&b| b == 7));
    }
}
