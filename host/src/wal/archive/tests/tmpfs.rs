//! A small real filesystem that fills up: a tmpfs mounted for one test (root only), and a
//! filler file that takes all but a chosen amount of its space. Off root the test is skipped,
//! loudly; with `CI=true` it fails instead (CI must never pass by skipping). Shared with the
//! e2e tests, which include this file: the including module provides `free_bytes`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_bytes;

/// A mounted tmpfs, unmounted on drop.
pub struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes`; `None` (after saying why) where that is not possible.
    pub fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let mounted = root
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "tmpfs"])
                .arg(&path)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            let why = if root { "mount -t tmpfs failed" } else { "not root" };
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "a small tmpfs is required on CI and could not be mounted: {why}"
            );
            eprintln!("SKIPPING a full-disk test: {why}");
            return None;
        }
        Some(Tmpfs { _dir: dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a filler file taking all but about `leave` bytes of the free space.
    pub fn fill_leaving(&self, leave: u64) {
        let free = free_bytes(&self.path).unwrap();
        let take = free.saturating_sub(leave) as usize;
        std::fs::write(self.filler(), vec![1u8; take]).unwrap();
    }

    /// Removes the filler: the space is back.
    pub fn free_filler(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
