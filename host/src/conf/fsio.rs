//! The file system edge of the conf tree: symlink-refusing reads, atomic replacement (temp
//! file in the same folder, rename), removal, and batched folder fsyncs.
//!
//! Must never: follow a symlink anywhere below the root (each existing component is checked
//! with `symlink_metadata` first, so a planted link cannot redirect a replicated write outside
//! the root), or leave a temporary behind after a failed write. The check and the write are
//! not one atomic step; the root is expected to be writable only by tandem's user.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::conf::error::ConfError;
use crate::conf::relpath::RelPath;

/// Prefix of temporary files; a leading `.` keeps them out of `layout::classify`.
const TMP_PREFIX: &str = ".tandem-tmp";

/// Folders whose entries changed, fsynced once each at the end of a batch when durable.
pub(crate) struct DirSync {
    durable: bool,
    dirs: BTreeSet<PathBuf>,
}

impl DirSync {
    pub(crate) fn new(durable: bool) -> Self {
        DirSync { durable, dirs: BTreeSet::new() }
    }

    fn touch(&mut self, dir: &Path) {
        if self.durable {
            self.dirs.insert(dir.to_path_buf());
        }
    }

    /// Fsyncs every touched folder (one fsync each, however many files changed in it).
    pub(crate) fn finish(self) -> Result<(), ConfError> {
        for dir in &self.dirs {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ConfError::io(dir, e))?;
        }
        Ok(())
    }
}

/// Refuses if any existing component of `root/rel` is a symlink (components past the first
/// missing one cannot be links). Returns the metadata of `rel` itself if it exists (a path
/// through a regular file does not).
pub(crate) fn inspect(root: &Path, rel: &RelPath) -> Result<Option<fs::Metadata>, ConfError> {
    let mut path = root.to_path_buf();
    let mut last = None;
    for component in rel.components() {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(ConfError::Symlink { path }),
            Ok(meta) => last = Some(meta),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Ok(None);
            }
            Err(e) => return Err(ConfError::io(&path, e)),
        }
    }
    Ok(last)
}

/// Refuses if any existing component of `root/rel` is a symlink.
pub(crate) fn check_no_symlink(root: &Path, rel: &RelPath) -> Result<(), ConfError> {
    inspect(root, rel).map(drop)
}

/// The file's bytes, `None` if it does not exist. Anything but a regular file (a folder, a
/// FIFO that would block the read) is refused.
pub(crate) fn read(root: &Path, rel: &RelPath) -> Result<Option<Vec<u8>>, ConfError> {
    let path = root.join(rel.as_path());
    match inspect(root, rel)? {
        None => return Ok(None),
        Some(meta) if !meta.is_file() => return Err(ConfError::NotAFile { path }),
        Some(_) => {}
    }
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfError::io(&path, e)),
    }
}

/// Creates the missing folders above `rel`, one at a time so each new entry's parent is
/// recorded for fsync; returns the file's folder.
fn ensure_parent(root: &Path, rel: &RelPath, sync: &mut DirSync) -> Result<PathBuf, ConfError> {
    let mut dir = root.to_path_buf();
    let components: Vec<&str> = rel.components().collect();
    for component in &components[..components.len().saturating_sub(1)] {
        let parent = dir.clone();
        dir.push(component);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(ConfError::Symlink { path: dir }),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ConfError::io(&dir, e)),
        }
        match fs::create_dir(&dir) {
            Ok(()) => sync.touch(&parent),
            // Lost a race with another creator: fine if it is a real folder.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_no_symlink(root, rel)?,
            Err(e) => return Err(ConfError::io(&dir, e)),
        }
    }
    Ok(dir)
}

/// Replaces (or creates) `rel` with `bytes`: a crash leaves the old content or the new one.
/// The file's data is fsynced before the rename; its folder is recorded (and fsynced now when
/// `sync` is durable, else by the caller's checkpoint).
pub(crate) fn write_atomic(
    root: &Path,
    rel: &RelPath,
    bytes: &[u8],
    sync: &mut DirSync,
) -> Result<(), ConfError> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    check_no_symlink(root, rel)?;
    let dir = ensure_parent(root, rel, sync)?;
    let target = root.join(rel.as_path());
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TMP_PREFIX}.{}.{n}", std::process::id()));
    let mut file =
        OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| ConfError::io(&tmp, e))?;
    let written = (|| {
        // Replacing must not widen or narrow who can read the file.
        if let Ok(meta) = fs::metadata(&target) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)?;
        // Always: renaming a file whose data is not on disk over one that is can leave an
        // empty file after a power loss (XFS, ext4 with noauto_da_alloc), losing keys no later
        // replay restores. Only the folder's fsync waits for a checkpoint when not durable.
        file.sync_data()?;
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(ConfError::io(&target, e));
    }
    sync.touch(&dir);
    Ok(())
}

/// Removes `rel`; returns whether it existed.
pub(crate) fn remove(root: &Path, rel: &RelPath, sync: &mut DirSync) -> Result<bool, ConfError> {
    check_no_symlink(root, rel)?;
    let path = root.join(rel.as_path());
    match fs::remove_file(&path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                sync.touch(dir);
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ConfError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn rel(p: &str) -> RelPath {
        RelPath::new(p).unwrap()
    }

    #[test]
    fn write_creates_folders_and_replaces_atomically() {
        let root = tempfile::tempdir().unwrap();
        let mut sync = DirSync::new(true);
        write_atomic(root.path(), &rel("a/b/c.txt"), b"one", &mut sync).unwrap();
        write_atomic(root.path(), &rel("a/b/c.txt"), b"two", &mut sync).unwrap();
        // The root (new "a"), "a" (new "b") and "a/b" (the file) each need one fsync.
        assert_eq!(sync.dirs.len(), 3);
        sync.finish().unwrap();
        assert_eq!(read(root.path(), &rel("a/b/c.txt")).unwrap().unwrap(), b"two");
        let names: Vec<_> =
            fs::read_dir(root.path().join("a/b")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["c.txt"], "no temporary left behind");
    }

    #[test]
    fn replacing_keeps_the_file_mode() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("f");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(root.path(), &rel("f"), b"y", &mut DirSync::new(false)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn symlinked_folder_inside_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.path().join("apps")).unwrap();
        let mut sync = DirSync::new(false);
        let err = write_atomic(root.path(), &rel("apps/x/local/a.conf"), b"k=v", &mut sync).unwrap_err();
        match &err {
            ConfError::Symlink { path } => assert_eq!(path, &root.path().join("apps")),
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("apps"), "{err}");
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing written outside");
        assert!(read(root.path(), &rel("apps/x/local/a.conf")).is_err());
        assert!(remove(root.path(), &rel("apps/x"), &mut sync).is_err());
    }

    #[test]
    fn symlinked_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        symlink(outside.path(), root.path().join("f")).unwrap();
        let err = write_atomic(root.path(), &rel("f"), b"x", &mut DirSync::new(false)).unwrap_err();
        assert!(matches!(err, ConfError::Symlink { .. }));
        assert!(fs::read(outside.path()).unwrap().is_empty());
    }

    #[test]
    fn remove_reports_whether_it_existed() {
        let root = tempfile::tempdir().unwrap();
        let mut sync = DirSync::new(false);
        assert!(!remove(root.path(), &rel("nope"), &mut sync).unwrap());
        fs::write(root.path().join("f"), b"x").unwrap();
        assert!(remove(root.path(), &rel("f"), &mut sync).unwrap());
        assert_eq!(read(root.path(), &rel("f")).unwrap(), None);
    }

    #[test]
    fn reading_a_folder_is_refused() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        assert!(matches!(read(root.path(), &rel("d")), Err(ConfError::NotAFile { .. })));
    }
}
