//! Walking a tree on the source side: lists every path under a root, in [`RelName`] order,
//! with a caller's filter consulted once per directory batch, with the metadata the pass keeps
//! ([`Keep`]: owner ids, extended attributes) and each hard-link group's leader.
//!
//! Must never: follow a symlink (a symlink is an entry, a symlinked directory is not entered),
//! read file content, or drop a path it could not read as if it were gone: such paths go to
//! `unreadable` so the diff keeps them and everything below them at the destination.

use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tracing::debug;

use crate::sync::entry::{Entry, EntryKind};
use crate::sync::meta::{Keep, read_xattrs};
use crate::sync::names::{RelName, is_temp_name};
use crate::sync::tree_error::TreeError;

/// A filter's decision for one entry of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// List the entry (and walk into it if it is a directory).
    Keep,
    /// Leave the entry out but still walk into it if it is a directory.
    Skip,
    /// Leave the entry and, for a directory, everything below it out.
    Prune,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Kept entries in [`RelName`] order; `hash` is `None` (see [`crate::sync::index::refresh`]).
    pub entries: Vec<Entry>,
    /// Paths that exist but could not be read (a directory that could not be listed, a file
    /// that cannot be opened, a symlink whose target is not UTF-8), with the reason.
    pub unreadable: Vec<(RelName, String)>,
    /// Sockets, FIFOs and device nodes: never replicated.
    pub skipped_special: Vec<RelName>,
    /// Paths the filter skipped or pruned (a pruned directory stands for its whole subtree).
    pub excluded: Vec<RelName>,
}

impl ScanResult {
    /// Every path this scan did not cover: unreadable, special and excluded ones. Passed to
    /// [`crate::sync::index::diff`] so none of them, nor anything below them, is deleted at
    /// the destination. (A caller that wants excluded paths deleted passes only `unreadable`.)
    pub fn protected(&self) -> Vec<RelName> {
        let unreadable = self.unreadable.iter().map(|(p, _)| p.clone());
        unreadable.chain(self.skipped_special.iter().cloned()).chain(self.excluded.iter().cloned()).collect()
    }
}

/// One step of the depth-first walk: an entry to emit and/or a directory to list.
struct Pending {
    emit: Option<Entry>,
    descend: Option<RelName>,
}

/// Walks `root` without following symlinks (symlinks are entries), in [`RelName`] order,
/// keeping what `rsync -a` keeps ([`Keep::rsync_a`]); see [`scan_with`].
pub fn scan(root: &Path, filter: &mut dyn FnMut(&[Entry]) -> Vec<Verdict>) -> Result<ScanResult, TreeError> {
    scan_below(root, None, &Keep::rsync_a(), filter)
}

/// Walks `root` without following symlinks (symlinks are entries), in [`RelName`] order,
/// recording what `keep` asks for.
///
/// `filter` gets each directory's children as one batch and returns one [`Verdict`] per
/// entry. The root itself must be a readable directory (it may be reached through a symlink:
/// it is the configured tree, not something found inside it). Names starting with
/// [`crate::sync::names::TEMP_PREFIX`] are the applier's in-flight files and are ignored.
/// Files sharing an inode name their group's first kept path as leader (see
/// [`crate::sync::entry::HardLink`]): a name the filter leaves out is no member.
pub fn scan_with(
    root: &Path,
    keep: &Keep,
    filter: &mut dyn FnMut(&[Entry]) -> Vec<Verdict>,
) -> Result<ScanResult, TreeError> {
    scan_below(root, None, keep, filter)
}

/// [`scan_with`] of the subtree below folder `start` of the tree at `root` (`None`: all of
/// it); names stay relative to `root`. `start` itself is not listed, and must be a folder
/// reached without symlinks (the caller checked it with [`entry_at`]). Hard-link leaders are
/// those of the subtree: a group reaching outside it may name another leader in a whole scan.
pub fn scan_below(
    root: &Path,
    start: Option<&RelName>,
    keep: &Keep,
    filter: &mut dyn FnMut(&[Entry]) -> Vec<Verdict>,
) -> Result<ScanResult, TreeError> {
    let meta = fs::metadata(root).map_err(TreeError::io("stat tree root", root))?;
    if !meta.is_dir() {
        return Err(TreeError::Root { path: root.to_path_buf(), reason: "not a directory".into() });
    }
    let mut out = ScanResult::default();
    // Listing the top is done up front so an unreadable root is an error, not an empty tree
    // (an empty listing would delete everything at the destination).
    let top = list_children(root, start, keep, &mut out)
        .map_err(|e| TreeError::Root { path: root.to_path_buf(), reason: e })?;
    let mut stack = Vec::new();
    push_batch(top, filter, &mut out, &mut stack)?;
    while let Some(Pending { emit, descend }) = stack.pop() {
        if let Some(entry) = emit {
            out.entries.push(entry);
        }
        let Some(dir) = descend else { continue };
        match list_children(root, Some(&dir), keep, &mut out) {
            Ok(children) => push_batch(children, filter, &mut out, &mut stack)?,
            Err(reason) => out.unreadable.push((dir, reason)),
        }
    }
    name_leaders(&mut out.entries);
    debug!(
        root = %root.display(),
        entries = out.entries.len(),
        unreadable = out.unreadable.len(),
        special = out.skipped_special.len(),
        "scanned tree"
    );
    Ok(out)
}

/// Names each hard-link group's leader: its first member in path order (`entries` is sorted).
/// Costs a map entry per file with more than one link, nothing for the others.
fn name_leaders(entries: &mut [Entry]) {
    let mut leaders: std::collections::HashMap<(u64, u64), RelName> = std::collections::HashMap::new();
    for e in entries.iter_mut() {
        let Some(inode) = e.hardlink().map(|h| h.inode) else { continue };
        match leaders.entry(inode) {
            std::collections::hash_map::Entry::Occupied(first) => {
                e.set_link_leader(Some(first.get().clone()))
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(e.path.clone());
            }
        }
    }
}

/// Asks the filter about one directory's children and queues the kept ones, last first so
/// they pop in order.
fn push_batch(
    children: Vec<Entry>,
    filter: &mut dyn FnMut(&[Entry]) -> Vec<Verdict>,
    out: &mut ScanResult,
    stack: &mut Vec<Pending>,
) -> Result<(), TreeError> {
    if children.is_empty() {
        return Ok(());
    }
    let verdicts = filter(&children);
    if verdicts.len() != children.len() {
        return Err(TreeError::FilterVerdicts { expected: children.len(), got: verdicts.len() });
    }
    let mut batch = Vec::with_capacity(children.len());
    for (entry, verdict) in children.into_iter().zip(verdicts) {
        let is_dir = entry.kind == EntryKind::Dir;
        match verdict {
            Verdict::Keep => {
                let descend = is_dir.then(|| entry.path.clone());
                batch.push(Pending { emit: Some(entry), descend });
            }
            Verdict::Skip => {
                out.excluded.push(entry.path.clone());
                if is_dir {
                    batch.push(Pending { emit: None, descend: Some(entry.path) });
                }
            }
            Verdict::Prune => out.excluded.push(entry.path),
        }
    }
    stack.extend(batch.into_iter().rev());
    Ok(())
}

/// Lists one directory's children as entries, sorted. Children that cannot be examined go
/// to `out.unreadable`, special files to `out.skipped_special`. `Err` when the directory
/// itself cannot be listed.
fn list_children(
    root: &Path,
    dir: Option<&RelName>,
    keep: &Keep,
    out: &mut ScanResult,
) -> Result<Vec<Entry>, String> {
    let dir_path = dir.map_or_else(|| root.to_path_buf(), |d| root.join(d.to_path()));
    let mut names = Vec::new();
    for dirent in fs::read_dir(&dir_path).map_err(|e| e.to_string())? {
        let dirent = dirent.map_err(|e| e.to_string())?;
        let name = dirent.file_name();
        if !is_temp_name(name.as_bytes()) {
            names.push(name);
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let rel = match dir {
            None => RelName::new(name.as_bytes()),
            Some(d) => d.join(name.as_bytes()),
        };
        // Only a path past PATH_MAX gets here; the directory then cannot be covered fully.
        let rel = rel.map_err(|e| e.to_string())?;
        let path = dir_path.join(&name);
        if let Some(entry) = examine(&path, rel, keep, out) {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// What one path of a tree is now.
#[derive(Debug)]
pub enum Found {
    Entry(Entry),
    /// Not there (or below something that is not a folder).
    Absent,
    /// Below a symlinked folder: not this tree's to cover; keep the destination's copy.
    Protected,
    /// There but unreadable (why): keep the destination's copy, and say so.
    Unreadable(String),
    /// A socket, FIFO or device node: never replicated, the destination's copy kept.
    Special,
}

/// Examines one path of the tree at `root`, the way [`scan_with`] would list it: never through
/// a symlinked folder. A file with several links is its own leader here (a whole scan names
/// the group's real one).
pub fn entry_at(root: &Path, rel: &RelName, keep: &Keep) -> Found {
    let mut dir = root.to_path_buf();
    let parts: Vec<&[u8]> = rel.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push(std::ffi::OsStr::from_bytes(part));
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return Found::Protected,
            Ok(_) => return Found::Absent,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Absent,
            Err(e) => return Found::Unreadable(e.to_string()),
        }
    }
    let mut out = ScanResult::default();
    match examine(&dir.join(std::ffi::OsStr::from_bytes(rel.file_name())), rel.clone(), keep, &mut out) {
        Some(entry) => Found::Entry(entry),
        None if !out.skipped_special.is_empty() => Found::Special,
        None => match out.unreadable.pop() {
            Some((_, reason)) => Found::Unreadable(reason),
            None => Found::Absent,
        },
    }
}

/// One path as an entry; `None` when it is gone, or noted in `out` as unreadable or special.
fn examine(path: &Path, rel: RelName, keep: &Keep, out: &mut ScanResult) -> Option<Entry> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Gone since the listing: it is absent at the source now, which is the truth.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            out.unreadable.push((rel, e.to_string()));
            return None;
        }
    };
    let ft = meta.file_type();
    let entry = if ft.is_symlink() {
        match fs::read_link(path).map(|t| t.into_os_string().into_string()) {
            Ok(Ok(target)) => Entry::from_metadata(rel, EntryKind::Symlink, &meta, Some(target)),
            Ok(Err(_)) => {
                out.unreadable.push((rel, "symlink target is not UTF-8".into()));
                return None;
            }
            Err(e) => {
                out.unreadable.push((rel, e.to_string()));
                return None;
            }
        }
    } else if ft.is_dir() {
        Entry::from_metadata(rel, EntryKind::Dir, &meta, None)
    } else if ft.is_file() {
        let entry = Entry::from_metadata(rel, EntryKind::File, &meta, None);
        if let Err(reason) = check_readable(path, entry.mode) {
            out.unreadable.push((entry.path, reason));
            return None;
        }
        entry
    } else {
        out.skipped_special.push(rel);
        return None;
    };
    with_kept_meta(entry, path, keep, out)
}

/// The entry with what `keep` asks for beyond `lstat`: owner ids forgotten unless kept, the
/// kept extended attributes read. An entry whose attributes cannot be read is unreadable.
fn with_kept_meta(mut entry: Entry, path: &Path, keep: &Keep, out: &mut ScanResult) -> Option<Entry> {
    keep.trim(&mut entry);
    if keep.any_xattrs() {
        match read_xattrs(path, keep) {
            Ok(xattrs) => entry.set_xattrs(xattrs),
            // Gone since the lstat: absent now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                out.unreadable.push((entry.path, format!("extended attributes: {e}")));
                return None;
            }
        }
    }
    Some(entry)
}

/// Confirms a file whose mode does not grant read to everyone can be opened. Files readable
/// by all (the common case) are not opened, so a scan stays one `lstat` per path; anything
/// this misses (an ACL, say) surfaces when `refresh` hashes the file.
fn check_readable(path: &Path, mode: u32) -> Result<(), String> {
    if mode & 0o444 == 0o444 {
        return Ok(());
    }
    let opened: std::io::Result<File> =
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
    opened.map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn keep_all(batch: &[Entry]) -> Vec<Verdict> {
        vec![Verdict::Keep; batch.len()]
    }

    fn names(r: &ScanResult) -> Vec<String> {
        r.entries.iter().map(|e| e.path.display()).collect()
    }

    #[test]
    fn lists_in_path_order_with_kinds() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        fs::write(t.path().join("a/b/c"), b"xyz").unwrap();
        fs::write(t.path().join("a.b"), b"").unwrap();
        fs::write(t.path().join("z"), b"1").unwrap();
        fs::write(t.path().join(".tandem-tmp.1-2"), b"in flight").unwrap();
        let r = scan(t.path(), &mut keep_all).unwrap();
        assert_eq!(names(&r), ["a", "a/b", "a/b/c", "a.b", "z"]);
        let c = &r.entries[2];
        assert_eq!((c.kind, c.size, c.hash), (EntryKind::File, 3, None));
        assert_eq!((r.entries[0].kind, r.entries[0].size), (EntryKind::Dir, 0));
        assert!(r.unreadable.is_empty() && r.skipped_special.is_empty());
    }

    #[test]
    fn filter_sees_batches_and_prune_drops_subtree_while_skip_descends() {
        let t = tempfile::tempdir().unwrap();
        for d in ["keep/x", "skip/y", "prune/z"] {
            fs::create_dir_all(t.path().join(d)).unwrap();
            fs::write(t.path().join(d).join("f"), b"1").unwrap();
        }
        let mut batches = 0;
        let mut filter = |batch: &[Entry]| {
            batches += 1;
            let verdict = |e: &Entry| match e.path.as_bytes() {
                b"skip" => Verdict::Skip,
                b"prune" => Verdict::Prune,
                _ => Verdict::Keep,
            };
            batch.iter().map(verdict).collect()
        };
        let r = scan(t.path(), &mut filter).unwrap();
        assert_eq!(names(&r), ["keep", "keep/x", "keep/x/f", "skip/y", "skip/y/f"]);
        assert_eq!(batches, 5, "root, keep, keep/x, skip, skip/y: the pruned dir is never listed");
        let excluded: Vec<_> = r.excluded.iter().map(|p| p.display()).collect();
        assert_eq!(excluded, ["prune", "skip"]);
        let mut wrong = |_: &[Entry]| vec![];
        assert!(matches!(scan(t.path(), &mut wrong), Err(TreeError::FilterVerdicts { .. })));
    }

    #[test]
    fn non_utf8_names_are_listed_raw() {
        let t = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
        fs::create_dir(t.path().join(name)).unwrap();
        fs::write(t.path().join(name).join(std::ffi::OsStr::from_bytes(b"\xff")), b"x").unwrap();
        let r = scan(t.path(), &mut keep_all).unwrap();
        let raw: Vec<&[u8]> = r.entries.iter().map(|e| e.path.as_bytes()).collect();
        assert_eq!(raw, [&b"caf\xe9"[..], b"caf\xe9/\xff"]);
    }

    #[test]
    fn symlinks_are_entries_and_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"s").unwrap();
        symlink(outside.path(), t.path().join("dirlink")).unwrap();
        symlink("missing", t.path().join("dangling")).unwrap();
        let r = scan(t.path(), &mut keep_all).unwrap();
        assert_eq!(names(&r), ["dangling", "dirlink"]);
        let target = outside.path().to_str().unwrap();
        assert_eq!(r.entries[1].kind, EntryKind::Symlink);
        assert_eq!(r.entries[1].link.as_deref(), Some(target));
        assert_eq!(r.entries[1].size, target.len() as u64);
        assert_eq!(r.entries[0].link.as_deref(), Some("missing"));
    }

    #[test]
    fn special_files_are_skipped_and_reported() {
        let t = tempfile::tempdir().unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(t.path().join("sock")).unwrap();
        fs::write(t.path().join("file"), b"").unwrap();
        let r = scan(t.path(), &mut keep_all).unwrap();
        assert_eq!(names(&r), ["file"]);
        assert_eq!(r.skipped_special, [RelName::new(b"sock").unwrap()]);
        assert_eq!(r.protected(), [RelName::new(b"sock").unwrap()]);
        assert!(matches!(
            entry_at(t.path(), &RelName::new(b"sock").unwrap(), &Keep::default()),
            Found::Special
        ));
    }

    #[test]
    fn unreadable_paths_are_reported_not_dropped() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("locked")).unwrap();
        fs::write(t.path().join("locked/inner"), b"x").unwrap();
        fs::write(t.path().join("secret"), b"x").unwrap();
        fs::set_permissions(t.path().join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(t.path().join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
        let r = scan(t.path(), &mut keep_all).unwrap();
        fs::set_permissions(t.path().join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // root reads through mode 000, so there is nothing unreadable to observe here; the
            // protection itself is tested in index::diff with a synthetic list.
            assert!(r.unreadable.is_empty());
            return;
        }
        let bad: Vec<_> = r.unreadable.iter().map(|(p, _)| p.display()).collect();
        assert_eq!(bad, ["secret", "locked"]);
        assert_eq!(names(&r), ["locked"], "the locked dir is listed, its content and the secret are not");
    }

    #[test]
    fn hard_link_groups_name_their_first_kept_member_as_leader() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("d")).unwrap();
        fs::create_dir_all(t.path().join("x")).unwrap();
        fs::write(t.path().join("d/b"), b"shared").unwrap();
        for other in ["a", "d/c", "x/e"] {
            fs::hard_link(t.path().join("d/b"), t.path().join(other)).unwrap();
        }
        fs::write(t.path().join("lone"), b"one name").unwrap();
        let leader = |r: &ScanResult, name: &str| {
            let e = r.entries.iter().find(|e| e.path.as_bytes() == name.as_bytes()).unwrap();
            (e.hardlink().map(|h| h.nlink), e.link_leader().map(RelName::display))
        };
        let r = scan(t.path(), &mut keep_all).unwrap();
        assert_eq!(leader(&r, "a"), (Some(4), None), "the first in path order carries the content");
        assert_eq!(leader(&r, "d/b"), (Some(4), Some("a".into())));
        assert_eq!(leader(&r, "d/c"), (Some(4), Some("a".into())));
        assert_eq!(leader(&r, "x/e"), (Some(4), Some("a".into())));
        assert_eq!(leader(&r, "lone"), (None, None));

        // The filter leaves `a` out: the group's first kept member leads; a pruned folder's
        // member is no member.
        let mut filter = |batch: &[Entry]| {
            batch
                .iter()
                .map(|e| match e.path.as_bytes() {
                    b"a" => Verdict::Skip,
                    b"x" => Verdict::Prune,
                    _ => Verdict::Keep,
                })
                .collect()
        };
        let r = scan(t.path(), &mut filter).unwrap();
        assert_eq!(leader(&r, "d/b"), (Some(4), None));
        assert_eq!(leader(&r, "d/c"), (Some(4), Some("d/b".into())));
        assert!(r.entries.iter().all(|e| e.path.as_bytes() != b"x/e"));
    }

    #[test]
    fn owners_are_recorded_or_forgotten_and_attributes_read_only_when_kept() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"x").unwrap();
        let meta = fs::metadata(t.path().join("f")).unwrap();
        let c = std::ffi::CString::new(t.path().join("f").as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path and name, a 1-byte value, all alive for the call.
        let rc = unsafe { libc::setxattr(c.as_ptr(), c"user.tag".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        let owners = Keep { owner: true, ..Keep::default() };
        let r = scan_with(t.path(), &owners, &mut keep_all).unwrap();
        assert_eq!((r.entries[0].uid, r.entries[0].gid), (meta.uid(), meta.gid()));
        assert!(r.entries[0].xattrs().is_empty(), "attributes not kept: not read");
        let all = Keep { owner: false, xattrs: true, acls: true, privileged: false };
        let r = scan_with(t.path(), &all, &mut keep_all).unwrap();
        assert!(r.entries[0].owner_unknown());
        assert_eq!(r.entries[0].xattrs().len(), 1);
        assert_eq!(r.entries[0].xattrs()[0].name, b"user.tag");
        match entry_at(t.path(), &RelName::new(b"f").unwrap(), &all) {
            Found::Entry(e) => assert_eq!(e.xattrs(), r.entries[0].xattrs()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn root_must_be_a_readable_directory() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"").unwrap();
        assert!(matches!(scan(&t.path().join("f"), &mut keep_all), Err(TreeError::Root { .. })));
        assert!(matches!(scan(&t.path().join("nope"), &mut keep_all), Err(TreeError::Io { .. })));
    }
}
