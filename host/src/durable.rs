//! Small files tandem owns. Durable replacement (secrets, compiled plugins): write a new
//! temporary file beside the target, make it durable, rename it over the target, make the
//! rename durable; a crash leaves the old file or the new one, never a torn one. And the lock
//! files that keep a second writer off a directory (the raft log, the WAL archive).
//!
//! Must never: follow a pre-planted temporary file (the temporary is new for every write and
//! opened with `create_new`), or leave a temporary behind after a failed write.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often [`lock_exclusive`] tries again while it waits.
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// Replaces `path` with `bytes`, readable and writable by this user only (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, 0o600, None)
}

/// Creates `path` with `bytes` (mode 0600) unless it exists already, and never replaces it:
/// writers racing to create it all end up reading the first one's content. Returns whether
/// this call created it.
pub fn create_private_once(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    let mut draft = path.file_name().unwrap_or_default().to_os_string();
    draft.push(format!(".{}.new", std::process::id()));
    let draft = path.with_file_name(draft);
    write_private(&draft, bytes)?;
    // A hard link never replaces: EEXIST means another writer came first.
    let linked = fs::hard_link(&draft, path);
    let _ = fs::remove_file(&draft);
    match linked {
        Ok(()) => sync_parent(path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the folder `path` (and its parents) and makes it private: mode 0700, whatever it
/// was before.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// Replaces the existing file `path` with `bytes`, keeping its mode and owner (a file of
/// another program's, e.g. PostgreSQL's `pg_hba.conf`, rewritten by root).
pub fn replace_keeping_owner(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let meta = fs::metadata(path)?;
    replace(path, bytes, meta.mode() & 0o7777, Some((meta.uid(), meta.gid())))
}

fn replace(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    let written = owner
        .map_or(Ok(()), |(uid, gid)| std::os::unix::fs::fchown(&file, Some(uid), Some(gid)))
        // create_new's mode went through the umask; set it exactly.
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .and_then(|()| sync_parent(path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Opens the lock file `path` (creating it, never truncating) and takes an exclusive `flock`
/// on it, held until the returned file is dropped or the process dies (`kill -9` included).
/// `Ok(None)` if another holder still has it after `wait` (blocking the thread meanwhile).
pub fn lock_exclusive(path: &Path, wait: Duration) -> io::Result<Option<File>> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::WouldBlock) if started.elapsed() < wait => std::thread::sleep(LOCK_RETRY),
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Makes a rename or creation in `path`'s folder durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_privately_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
        // a write that cannot complete leaves nothing behind
        assert!(write_private(&dir.path().join("missing/x"), b"x").is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_created_once_is_never_replaced_and_folders_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret");
        create_private_dir(path.parent().unwrap()).unwrap();
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(create_private_once(&path, b"first").unwrap());
        assert!(!create_private_once(&path, b"second").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no draft left");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(dir.path()).unwrap();
        assert_eq!(
            fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777,
            0o700,
            "an existing folder too"
        );
    }

    #[test]
    fn a_replacement_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg_hba.conf");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        replace_keeping_owner(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
        assert!(replace_keeping_owner(&dir.path().join("missing"), b"x").is_err());
    }

    #[test]
    fn a_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let held = lock_exclusive(&path, Duration::ZERO).unwrap().expect("free lock");
        assert!(lock_exclusive(&path, Duration::from_millis(20)).unwrap().is_none());
        drop(held);
        assert!(lock_exclusive(&path, Duration::ZERO).unwrap().is_some());
        assert!(lock_exclusive(&dir.path().join("missing/LOCK"), Duration::ZERO).is_err());
    }
}
