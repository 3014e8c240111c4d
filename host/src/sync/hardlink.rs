//! Hard links on both sides of a pass. A group's leader travels as a file; every other member
//! travels as a [`crate::sync::protocol::SyncMsg::HardLink`] sent after all content, which the
//! standby makes at commit, once the leader has landed: a link to the leader renamed over the
//! member's name. The primary checks just before sending that the member still shares the
//! leader's inode and the stat it was scanned with.
//!
//! Must never: link to anything but a regular file that has the member's size, mtime, mode and
//! (when kept) owner, so a link never lands on content other than the member's; or follow a
//! symlink (link(2) without `AT_SYMLINK_FOLLOW`, names checked with `lstat`).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sync::entry::{Entry, MODE_BITS, mtime_ns};
use crate::sync::meta::{Keep, ids_agree};
use crate::sync::nofollow::clear_dir;
use crate::sync::tree_error::TreeError;

/// Makes `path` a name of the file at `target` (the member's leader), atomically: a link made
/// at `tmp` (a free temporary name in `path`'s folder) is renamed over `path`. `false` when
/// `path` already was that file. Both folders are checked by the caller.
pub fn link_into_place(
    target: &Path,
    path: &Path,
    tmp: &Path,
    expect: &Entry,
    keep: &Keep,
) -> Result<bool, TreeError> {
    let refuse = |reason: String| TreeError::LinkGroup { name: expect.path.display(), reason };
    let meta = match fs::symlink_metadata(target) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Err(refuse("its leader is not a regular file here".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(refuse("its leader is missing here".into()));
        }
        Err(e) => return Err(TreeError::io("stat", target)(e)),
    };
    let owner_agrees =
        !keep.owner || (ids_agree(meta.uid(), expect.uid) && ids_agree(meta.gid(), expect.gid));
    let same = meta.len() == expect.size
        && mtime_ns(&meta) == expect.mtime_ns
        && meta.mode() & MODE_BITS == expect.mode
        && owner_agrees;
    if !same {
        return Err(refuse("its leader here is not the file the primary linked it to".into()));
    }
    if let Ok(current) = fs::symlink_metadata(path)
        && (current.dev(), current.ino()) == (meta.dev(), meta.ino())
    {
        // Renaming a link over another name of the same file would do nothing and leave the
        // temporary behind.
        return Ok(false);
    }
    fs::hard_link(target, tmp).map_err(TreeError::io("link", tmp))?;
    let placed = clear_dir(path)
        .and_then(|()| fs::rename(tmp, path).map_err(TreeError::io("rename link into place", path)));
    if placed.is_err() {
        let _ = fs::remove_file(tmp);
    }
    placed.map(|()| true)
}

/// On the primary, just before a member is sent as a link: true when `member` under `root`
/// still has the stat it was scanned with and still shares an inode with its leader. A member
/// that moved is left for the next pass (whose journal has the change).
pub fn still_linked(root: &Path, member: &Entry) -> bool {
    let Some(leader) = member.link_leader() else { return false };
    let stat = |p: &crate::sync::names::RelName| fs::symlink_metadata(root.join(p.to_path())).ok();
    let (Some(m), Some(l)) = (stat(&member.path), stat(leader)) else { return false };
    m.is_file()
        && (m.dev(), m.ino()) == (l.dev(), l.ino())
        && m.len() == member.size
        && mtime_ns(&m) == member.mtime_ns
        && m.mode() & MODE_BITS == member.mode
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::names::RelName;
    use crate::sync::scan::{Verdict, scan};

    fn entry_of(root: &Path, name: &str) -> Entry {
        let all = scan(root, &mut |b: &[Entry]| vec![Verdict::Keep; b.len()]).unwrap().entries;
        all.into_iter().find(|e| e.path.as_bytes() == name.as_bytes()).unwrap()
    }

    #[test]
    fn a_member_is_linked_to_its_leader_once_and_only_to_a_matching_one() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::write(r.join("a"), b"content").unwrap();
        fs::hard_link(r.join("a"), r.join("b")).unwrap();
        let member = entry_of(r, "b");
        assert_eq!(member.link_leader(), Some(&RelName::new(b"a").unwrap()));
        assert!(still_linked(r, &member));
        fs::remove_file(r.join("b")).unwrap();
        assert!(!still_linked(r, &member), "gone");

        // `b` is now another file: linking makes it a name of `a`.
        fs::write(r.join("b"), b"other").unwrap();
        let keep = Keep::rsync_a();
        assert!(link_into_place(&r.join("a"), &r.join("b"), &r.join(".tmp"), &member, &keep).unwrap());
        let (a, b) = (fs::metadata(r.join("a")).unwrap(), fs::metadata(r.join("b")).unwrap());
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert!(!r.join(".tmp").exists());
        // Again: nothing to do, no temporary left.
        assert!(!link_into_place(&r.join("a"), &r.join("b"), &r.join(".tmp"), &member, &keep).unwrap());
        assert!(!r.join(".tmp").exists());

        // A leader whose content is not the member's (another size) is refused.
        fs::write(r.join("c"), b"much longer content").unwrap();
        let err = link_into_place(&r.join("c"), &r.join("b"), &r.join(".tmp"), &member, &keep).unwrap_err();
        assert!(matches!(err, TreeError::LinkGroup { .. }), "{err}");
        let err =
            link_into_place(&r.join("none"), &r.join("b"), &r.join(".tmp"), &member, &keep).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::os::unix::fs::symlink("a", r.join("l")).unwrap();
        let err = link_into_place(&r.join("l"), &r.join("b"), &r.join(".tmp"), &member, &keep).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "a symlink is not followed: {err}");
    }
}
