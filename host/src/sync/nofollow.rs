//! Filesystem operations that act on a path's own entry, never on what a symlink there
//! points at: removing trees, setting folder and link metadata, sweeping leftover temporaries.
//!
//! Must never: follow a symlink. Each function checks with `lstat` or opens with `O_NOFOLLOW`.

use std::ffi::CString;
use std::fs::{self, FileTimes, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use tracing::warn;

use crate::sync::names::is_temp_name;
use crate::sync::tree_error::TreeError;

/// Removes a directory tree, links inside it unlinked and never followed (std's
/// `remove_dir_all` works through descriptors). Without root, folders inside made read-only
/// are opened up first, since a read-only folder's entries cannot be removed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            open_up(path);
            fs::remove_dir_all(path)
        }
        done => done,
    }
}

/// Gives the owner full access to every real folder under `dir`, best effort.
fn open_up(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&d) else { continue };
        if !meta.is_dir() {
            continue;
        }
        let _ = fs::set_permissions(&d, Permissions::from_mode(meta.mode() | 0o700));
        let Ok(listing) = fs::read_dir(&d) else { continue };
        for dirent in listing.flatten() {
            if dirent.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(dirent.path());
            }
        }
    }
}

/// Removes a real directory at `path` so a file or link can take its name; anything else is
/// left for the rename to replace.
pub fn clear_dir(path: &Path) -> Result<(), TreeError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => remove_tree(path).map_err(TreeError::io("remove directory", path)),
        _ => Ok(()),
    }
}

/// Sets a directory's mode and mtime through a descriptor opened without following a link.
pub fn set_dir_meta(path: &Path, mode: u32, mtime_ns: i128) -> Result<(), TreeError> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
        .map_err(TreeError::io("open directory", path))?;
    let mtime = crate::sync::entry::system_time(mtime_ns);
    dir.set_times(FileTimes::new().set_modified(mtime)).map_err(TreeError::io("set mtime", path))?;
    dir.set_permissions(Permissions::from_mode(mode)).map_err(TreeError::io("chmod", path))
}

/// Sets a symlink's own mtime (std has no stable no-follow variant).
pub fn set_link_mtime(path: &Path, mtime_ns: i128) -> Result<(), TreeError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| TreeError::io("set link mtime", path)(io::ErrorKind::InvalidInput.into()))?;
    let secs = mtime_ns.div_euclid(1_000_000_000) as libc::time_t;
    let nanos = mtime_ns.rem_euclid(1_000_000_000) as libc::c_long;
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: secs, tv_nsec: nanos },
    ];
    // SAFETY: `c_path` is a valid NUL-terminated string and `times` two timespecs, both alive
    // for the call; AT_SYMLINK_NOFOLLOW makes it act on the link itself.
    let rc = unsafe {
        libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    };
    if rc != 0 {
        return Err(TreeError::io("set link mtime", path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Removes `.tandem-tmp.` files and links anywhere under `root` (never following links);
/// returns how many. Folders it cannot read are logged and passed over.
pub fn remove_leftovers(root: &Path) -> usize {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let listing = match fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot look for leftover temporaries");
                continue;
            }
        };
        for dirent in listing.flatten() {
            let Ok(ft) = dirent.file_type() else { continue };
            let path = dirent.path();
            if ft.is_dir() {
                stack.push(path);
            } else if is_temp_name(dirent.file_name().as_bytes()) {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) => warn!(path = %path.display(), error = %e, "cannot remove leftover temporary"),
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn remove_tree_leaves_link_targets_and_opens_read_only_folders() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"k").unwrap();
        fs::create_dir_all(t.path().join("d/ro")).unwrap();
        fs::write(t.path().join("d/ro/f"), b"x").unwrap();
        symlink(outside.path(), t.path().join("d/ro/out")).unwrap();
        fs::set_permissions(t.path().join("d/ro"), Permissions::from_mode(0o555)).unwrap();
        remove_tree(&t.path().join("d")).unwrap();
        assert!(!t.path().join("d").exists());
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn metadata_setters_act_on_the_entry_itself() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        symlink("d", t.path().join("l")).unwrap();
        set_link_mtime(&t.path().join("l"), -1_500_000_000).unwrap();
        let link = fs::symlink_metadata(t.path().join("l")).unwrap();
        assert_eq!((link.mtime(), link.mtime_nsec()), (-2, 500_000_000));
        assert!(set_dir_meta(&t.path().join("l"), 0o700, 0).is_err(), "a link is not opened as a folder");
        set_dir_meta(&t.path().join("d"), 0o750, 3).unwrap();
        let d = fs::symlink_metadata(t.path().join("d")).unwrap();
        assert_eq!((d.mode() & 0o7777, d.mtime(), d.mtime_nsec()), (0o750, 0, 3));
    }
}
