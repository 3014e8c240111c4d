//! Small files tandem owns. Durable replacement (secrets, compiled plugins): write a new
//! temporary file beside the target, make it durable, rename it over the target, make the
//! rename durable; a crash leaves the old file or the new one, never a torn one. The lock
//! files that keep a second writer off a directory (the data folder, the raft log, the WAL
//! archive). Private folders. And bounded reads of small files a user names (a plugin, a
//! secret, a token): regular files only (a FIFO would block the reader, `/dev/zero` never
//! end), never past a size limit, and for credentials, never one other users can read or
//! change (as ssh refuses such keys).
//!
//! Must never: follow a pre-planted temporary file (the temporary is new for every write and
//! opened with `create_new`), or leave a temporary behind after a failed write.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often [`lock_exclusive`] tries again while it waits.
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// Replaces `path` with `bytes`, readable and writable by this user only (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, 0o600, None, |file| file.write_all(bytes))
}

/// Replaces `path` (mode 0600) with what `write` streams into the new file: a large file (a
/// snapshot) is never held in memory whole.
pub fn write_private_with(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    replace(path, 0o600, None, write)
}

/// Renames `from` over `to` (same folder or file system) and makes the rename durable; `from`
/// must already be durable (fsynced by its writer).
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_parent(to)
}

/// Replaces `path` with `bytes`, readable by all (mode 0644): a file other programs poll, such
/// as the listeners' addresses, which a reader must never see empty or half written.
pub fn write_readable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, 0o644, None, |file| file.write_all(bytes))
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

/// Replaces the existing file `path` with `bytes`, keeping its mode and owner (a file of
/// another program's, e.g. PostgreSQL's `pg_hba.conf`, rewritten by root).
pub fn replace_keeping_owner(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let meta = fs::metadata(path)?;
    replace(path, meta.mode() & 0o7777, Some((meta.uid(), meta.gid())), |file| file.write_all(bytes))
}

fn replace(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
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
        .and_then(|()| write(&mut file))
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

/// Creates `dir` (and its missing parents) with `mode`, or narrows an existing `dir` to `mode`
/// when it grants more (a folder tandem owns, made before this rule, or by hand). `mode` is
/// 0700, or 0711 where another user's program must open a file inside by name.
pub fn private_dir(dir: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(dir)?;
    let have = fs::metadata(dir)?.mode() & 0o777;
    if have & !mode != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
        tracing::info!(dir = %dir.display(), from = %format!("{have:04o}"), to = %format!("{mode:04o}"), "narrowed the folder's mode");
    }
    Ok(())
}

/// Creates the file `path` (for appending, empty) with `mode`, or narrows an existing one to
/// `mode` when it grants more. For files another library opens (the log appender).
pub fn private_file(path: &Path, mode: u32) -> io::Result<()> {
    let file = OpenOptions::new().append(true).create(true).mode(mode).open(path)?;
    if file.metadata()?.mode() & 0o777 & !mode != 0 {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Why a small file a user named could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SmallFileError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("{} is {len} bytes, over the {max} byte limit", path.display())]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error(
        "{} is open to other users (mode {mode:04o}) and holds a credential: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("{} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
}

impl SmallFileError {
    /// The file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SmallFileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads the regular file `path` (symlinks followed) of at most `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, SmallFileError> {
    read_checked(path, max, false)
}

/// Reads the text of a file holding a credential: as [`read_regular`], and refused when its
/// mode lets other users read or change it.
pub fn read_private(path: &Path, max: u64) -> Result<String, SmallFileError> {
    let bytes = read_checked(path, max, true)?;
    String::from_utf8(bytes).map_err(|_| SmallFileError::NotText { path: path.to_path_buf() })
}

fn read_checked(path: &Path, max: u64, private: bool) -> Result<Vec<u8>, SmallFileError> {
    let io = |source| SmallFileError::Io { path: path.to_path_buf(), source };
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(SmallFileError::NotRegular { path: path.to_path_buf() });
    }
    let mode = meta.mode() & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(SmallFileError::NotPrivate { path: path.to_path_buf(), mode });
    }
    let too_large = |len| SmallFileError::TooLarge { path: path.to_path_buf(), len, max };
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew since fstat.
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
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
        private_dir(path.parent().unwrap(), 0o700).unwrap();
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(create_private_once(&path, b"first").unwrap());
        assert!(!create_private_once(&path, b"second").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no draft left");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(dir.path(), 0o700).unwrap();
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

    /// Regression (issue 14): `plugins check` read `/dev/zero` until out of memory and hung on
    /// a FIFO; a world-readable secret was accepted.
    #[test]
    fn bounded_reads_refuse_devices_fifos_big_files_and_open_credentials() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_regular(Path::new("/dev/zero"), 10), Err(SmallFileError::NotRegular { .. })));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(read_regular(&fifo, 10), Err(SmallFileError::NotRegular { .. })));
        let big = dir.path().join("big");
        fs::write(&big, [0u8; 11]).unwrap();
        assert!(matches!(read_regular(&big, 10), Err(SmallFileError::TooLarge { len: 11, max: 10, .. })));
        assert_eq!(read_regular(&big, 11).unwrap().len(), 11);
        let missing = read_regular(&dir.path().join("missing"), 10).unwrap_err();
        assert!(missing.is_not_found(), "{missing}");

        let secret = dir.path().join("secret");
        fs::write(&secret, "s3cret\n").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        let open = read_private(&secret, 100).unwrap_err().to_string();
        let shown = secret.display();
        assert_eq!(
            open,
            format!(
                "{shown} is open to other users (mode 0644) and holds a credential: run `chmod 600 {shown}`"
            )
        );
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(read_private(&secret, 100), Err(SmallFileError::NotPrivate { mode: 0o640, .. })));
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&secret, 100).unwrap(), "s3cret\n");
    }

    /// Regression (issue 14): the log files (opened by the appender) were 0644.
    #[test]
    fn a_private_file_is_made_or_narrowed_and_keeps_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("tandem.log");
        fs::write(&old, "kept\n").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&old, 0o600).unwrap();
        private_file(&dir.path().join("peer.log"), 0o600).unwrap();
        for name in ["tandem.log", "peer.log"] {
            assert_eq!(fs::metadata(dir.path().join(name)).unwrap().mode() & 0o777, 0o600, "{name}");
        }
        assert_eq!(fs::read_to_string(&old).unwrap(), "kept\n");
    }

    #[test]
    fn a_private_dir_is_made_or_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("a/b");
        private_dir(&made, 0o700).unwrap();
        assert_eq!(fs::metadata(&made).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&made, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&made, 0o711).unwrap();
        assert_eq!(fs::metadata(&made).unwrap().mode() & 0o777, 0o711);
        private_dir(&made, 0o700).unwrap();
        assert_eq!(fs::metadata(&made).unwrap().mode() & 0o777, 0o700);
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
