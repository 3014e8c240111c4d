//! Keeping the applier's writes inside its tree: every directory component between the root
//! and a target is checked with `lstat` to be a real directory, never a symlink, before
//! anything is created, renamed or removed under it.
//!
//! Must never: let a write pass through a symlinked component below the root (a hostile tree
//! could plant `etc -> /etc` and then send `etc/passwd`). The root itself may be a symlink: it
//! is the configured tree, not something a peer sent.
//!
//! The check is path-based (`lstat` per component, cached per verified directory). That is
//! enough against a hostile *stream*, because only the applier changes the tree while it
//! runs and it drops cached verdicts for whatever it replaces or deletes; it does not defend
//! against another local process swapping directories concurrently.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::sync::names::RelName;
use crate::sync::tree_error::TreeError;

/// Mode of a directory the applier creates because a received entry needs it but its own
/// directory entry was not sent (the filter skipped it). Only the owner may write there.
pub const IMPLIED_DIR_MODE: u32 = 0o755;

/// The root plus the set of directories already verified to be real directories.
#[derive(Debug)]
pub struct Confined {
    root: PathBuf,
    /// Looked up once per file placed.
    verified: HashSet<RelName>,
    /// The same names sorted, so forgetting a folder costs its subtree, not the whole set (a
    /// tree of 100,000 folders forgets once per file it places; a file is never in here).
    verified_sorted: BTreeSet<RelName>,
    /// Folders (`None` = root) in which this walk created a directory: they need an fsync.
    created_in: Vec<Option<RelName>>,
}

impl Confined {
    /// Confinement to `root`.
    pub fn new(root: PathBuf) -> Confined {
        Confined { root, verified: HashSet::new(), verified_sorted: BTreeSet::new(), created_in: Vec::new() }
    }

    /// The tree root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The full path of `p` (no check).
    pub fn full(&self, p: &RelName) -> PathBuf {
        self.root.join(p.to_path())
    }

    /// Checks that `dir` (the root for `None`) and each directory above it is a real
    /// directory and returns its full path. A missing component is created (mode
    /// [`IMPLIED_DIR_MODE`]) when `create` is set, else the answer is `Ok(None)`. A symlink or
    /// non-directory component is an [`TreeError::UnsafeComponent`].
    pub fn dir(&mut self, dir: Option<&RelName>, create: bool) -> Result<Option<PathBuf>, TreeError> {
        let Some(dir) = dir else { return Ok(Some(self.root.clone())) };
        if self.verified.contains(dir) {
            return Ok(Some(self.full(dir)));
        }
        let mut chain: Vec<RelName> = dir.ancestors().collect();
        chain.reverse();
        chain.push(dir.clone());
        for prefix in chain {
            if self.verified.contains(&prefix) {
                continue;
            }
            let path = self.full(&prefix);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(TreeError::UnsafeComponent {
                        path,
                        reason: "a symlinked directory component",
                    });
                }
                Ok(meta) if !meta.is_dir() => {
                    return Err(TreeError::UnsafeComponent {
                        path,
                        reason: "a component is not a directory",
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match DirBuilder::new().mode(IMPLIED_DIR_MODE).create(&path) {
                        Ok(()) => self.created_in.push(prefix.parent()),
                        // Someone made it meanwhile; check what it is on the next call.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            return self.dir(Some(dir), create);
                        }
                        Err(e) => return Err(TreeError::io("create directory", path)(e)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(TreeError::io("stat", path)(e)),
            }
            self.verified_sorted.insert(prefix.clone());
            self.verified.insert(prefix);
        }
        Ok(Some(self.full(dir)))
    }

    /// Folders in which directories were created since the last call.
    pub fn take_created_in(&mut self) -> Vec<Option<RelName>> {
        std::mem::take(&mut self.created_in)
    }

    /// Forgets what is known about `p` and everything below it: the applier is about to
    /// replace or delete it.
    pub fn forget(&mut self, p: &RelName) {
        // Folders are verified outermost first, so below a name not verified there is none.
        if !self.verified.contains(p) {
            return;
        }
        for v in p.run_within(self.verified_sorted.range(p.clone()..)) {
            self.verified.remove(&v);
            self.verified_sorted.remove(&v);
        }
    }
}

/// Refuses a symlink target that is absolute or climbs out of the tree from `name`'s folder.
///
/// `..` is accepted only as a leading run (`../../lib/x`): after a named component it would
/// climb out of wherever that component leads, which may itself be a link, so a lexical
/// check could not bound it.
pub fn check_link_target(name: &RelName, target: &str) -> Result<(), TreeError> {
    let refuse =
        |reason| Err(TreeError::LinkTarget { name: name.display(), target: target.to_string(), reason });
    if target.is_empty() {
        return refuse("empty target");
    }
    if target.contains('\0') {
        return refuse("target contains NUL");
    }
    if target.starts_with('/') {
        return refuse("absolute target");
    }
    let mut room = name.depth() - 1;
    let mut named = false;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." if named => return refuse("`..` after a named component"),
            ".." if room == 0 => return refuse("target climbs out of the tree"),
            ".." => room -= 1,
            _ => named = true,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn n(s: &str) -> RelName {
        RelName::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn creates_missing_directories_and_refuses_symlinks_and_files() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), t.path().join("link")).unwrap();
        fs::write(t.path().join("file"), b"").unwrap();
        let mut c = Confined::new(t.path().to_path_buf());
        assert_eq!(c.dir(Some(&n("a/b")), false).unwrap(), None);
        assert_eq!(c.dir(Some(&n("a/b")), true).unwrap(), Some(t.path().join("a/b")));
        assert!(t.path().join("a/b").is_dir());
        assert_eq!(c.take_created_in(), [None, Some(n("a"))]);
        let err = c.dir(Some(&n("link/x")), true).unwrap_err();
        assert!(matches!(err, TreeError::UnsafeComponent { .. }), "{err}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "nothing created outside");
        assert!(matches!(c.dir(Some(&n("file/x")), true), Err(TreeError::UnsafeComponent { .. })));
    }

    #[test]
    fn forgetting_a_replaced_directory_rechecks_it() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Confined::new(t.path().to_path_buf());
        c.dir(Some(&n("d/e")), true).unwrap();
        fs::remove_dir_all(t.path().join("d")).unwrap();
        symlink("/", t.path().join("d")).unwrap();
        c.forget(&n("d"));
        assert!(matches!(c.dir(Some(&n("d/e")), true), Err(TreeError::UnsafeComponent { .. })));
    }

    #[test]
    fn link_targets_must_stay_inside() {
        let ok =
            [("l", "x"), ("l", "./x/y"), ("d/l", "../x"), ("d/e/l", "../../x"), ("l", "x/"), ("d/l", "..")];
        for (name, target) in ok {
            assert!(check_link_target(&n(name), target).is_ok(), "{name} -> {target}");
        }
        let bad = [
            ("l", "/etc"),
            ("l", ".."),
            ("l", "../x"),
            ("d/l", "../../x"),
            ("l", "x/../y"),
            ("l", ""),
            ("l", "a\0"),
        ];
        for (name, target) in bad {
            assert!(
                matches!(check_link_target(&n(name), target), Err(TreeError::LinkTarget { .. })),
                "{name} -> {target}"
            );
        }
    }
}
