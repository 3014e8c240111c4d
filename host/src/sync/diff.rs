//! What differs between a source listing and a destination index: the entries to send and
//! the paths to delete.
//!
//! Must never: delete a path the source scan did not cover. Anything at or below a
//! protected path (unreadable at the source, special, excluded by the filter) is kept.

use std::collections::HashSet;

use crate::sync::entry::Entry;
use crate::sync::index::Index;
use crate::sync::meta::ids_agree;
use crate::sync::names::RelName;

/// The changes that bring a destination in line with a source.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// New or changed entries, in path order (a directory before what it contains).
    pub upserts: Vec<Entry>,
    /// Paths to delete, in path order; a directory stands for its whole subtree, so nothing
    /// below a listed directory is listed again. Apply them before the upserts, so a path
    /// that changes kind (directory to file) is cleared first.
    pub deletes: Vec<RelName>,
}

/// Compares `source` (a refreshed scan) with `dest` (the destination's index).
///
/// An entry is unchanged when kind, size, mtime, mode, link target, owner ids, hard-link
/// leader and extended attributes agree and the hashes do not disagree (a hash missing on
/// either side falls back to the stat comparison; an id not kept agrees with any). `protected`
/// is the source's list of paths it did not cover (see
/// [`crate::sync::scan::ScanResult::protected`] plus [`crate::sync::index::RefreshStats::unreadable`]):
/// they and everything under them are never deleted.
pub fn diff(source: &[Entry], dest: &Index, protected: &[RelName]) -> Diff {
    let upserts =
        source.iter().filter(|e| dest.get(&e.path).is_none_or(|old| !unchanged(old, e))).cloned().collect();

    let present: HashSet<&[u8]> = source.iter().map(|e| e.path.as_bytes()).collect();
    let shielded: HashSet<&[u8]> = protected.iter().map(RelName::as_bytes).collect();
    let mut deletes: Vec<RelName> = Vec::new();
    for old in dest.iter() {
        if present.contains(old.path.as_bytes()) {
            continue;
        }
        if old.path.self_and_ancestors().any(|p| shielded.contains(p)) {
            continue;
        }
        // The index iterates in path order, so a deleted directory's subtree follows it directly.
        if deletes.last().is_some_and(|d| old.path.is_within(d)) {
            continue;
        }
        deletes.push(old.path.clone());
    }
    Diff { upserts, deletes }
}

/// True when `new` needs nothing sent over `old`.
pub fn unchanged(old: &Entry, new: &Entry) -> bool {
    let hashes_agree = match (old.hash, new.hash) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    old.same_stat(new)
        && old.link == new.link
        && hashes_agree
        && ids_agree(old.uid, new.uid)
        && ids_agree(old.gid, new.gid)
        && old.link_leader() == new.link_leader()
        && old.xattrs() == new.xattrs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::entry::EntryKind;

    fn n(s: &str) -> RelName {
        RelName::new(s.as_bytes()).unwrap()
    }

    fn file(path: &str, content: &[u8]) -> Entry {
        let hash = Some(*blake3::hash(content).as_bytes());
        Entry { hash, ..Entry::new(n(path), EntryKind::File, content.len() as u64, 1, 0o644) }
    }

    fn dir(path: &str) -> Entry {
        Entry::new(n(path), EntryKind::Dir, 0, 1, 0o755)
    }

    fn paths(list: &[RelName]) -> Vec<String> {
        list.iter().map(RelName::display).collect()
    }

    #[test]
    fn new_changed_and_deleted_entries() {
        let dest: Index = [
            dir("d"),
            file("d/same", b"1"),
            file("d/changed", b"2"),
            dir("old"),
            file("old/x", b""),
            file("old/y", b""),
        ]
        .into_iter()
        .collect();
        let mut changed = file("d/changed", b"3");
        changed.mtime_ns = 1;
        let source = vec![dir("d"), changed.clone(), file("d/new", b"n"), file("d/same", b"1")];
        let d = diff(&source, &dest, &[]);
        assert_eq!(d.upserts, [changed, file("d/new", b"n")]);
        assert_eq!(paths(&d.deletes), ["old"], "the subtree goes with its directory");
    }

    #[test]
    fn metadata_only_changes_and_unknown_hashes() {
        let dest: Index = [file("f", b"x"), file("g", b"x")].into_iter().collect();
        let mut chmod = file("f", b"x");
        chmod.mode = 0o600;
        let mut unhashed = file("g", b"x");
        unhashed.hash = None;
        let d = diff(&[chmod.clone(), unhashed], &dest, &[]);
        assert_eq!(d.upserts, [chmod]);
        assert!(d.deletes.is_empty());
    }

    #[test]
    fn owner_link_group_and_attribute_changes_are_changes() {
        use crate::sync::entry::{NO_ID, Xattr};
        let mut base = file("f", b"x");
        (base.uid, base.gid) = (1000, 1000);
        let mut chown = base.clone();
        chown.gid = 1001;
        let mut not_kept = base.clone();
        not_kept.clear_owner();
        assert!(!unchanged(&base, &chown), "a group change is a change");
        assert!(unchanged(&base, &not_kept) && unchanged(&not_kept, &base), "ids not kept agree");
        assert_eq!((not_kept.uid, not_kept.gid), (NO_ID, NO_ID));

        let mut attr = base.clone();
        attr.set_xattrs(vec![Xattr { name: b"user.a".to_vec(), value: b"1".to_vec() }]);
        let mut other_value = base.clone();
        other_value.set_xattrs(vec![Xattr { name: b"user.a".to_vec(), value: b"2".to_vec() }]);
        assert!(!unchanged(&base, &attr), "an added attribute");
        assert!(!unchanged(&attr, &base), "a removed attribute");
        assert!(!unchanged(&attr, &other_value), "a changed value");

        let linked = |leader: Option<&str>| {
            let mut e = base.clone();
            e.extra = Some(Box::new(crate::sync::entry::Extra {
                hardlink: Some(crate::sync::entry::HardLink {
                    nlink: 2,
                    leader: leader.map(n),
                    inode: (1, 1),
                }),
                xattrs: Vec::new(),
            }));
            e
        };
        assert!(!unchanged(&base, &linked(Some("a"))), "a new link to another file");
        assert!(!unchanged(&linked(Some("a")), &linked(Some("b"))), "linked to another leader");
        assert!(unchanged(&base, &linked(None)), "a leader carries its content like a lone file");
    }

    #[test]
    fn unreadable_paths_and_their_subtrees_are_never_deleted() {
        // Synthetic list: the rule must hold even where chmod cannot make a real unreadable
        // path (tests running as root).
        let dest: Index = [
            dir("locked"),
            file("locked/a", b""),
            dir("locked/sub"),
            file("locked/sub/b", b""),
            file("secret", b""),
            file("gone", b""),
            file("lockedx", b""),
        ]
        .into_iter()
        .collect();
        let source = vec![dir("locked")];
        let d = diff(&source, &dest, &[n("locked"), n("secret")]);
        assert_eq!(paths(&d.deletes), ["gone", "lockedx"]);
        assert!(d.upserts.is_empty());
        // Without the protection the same listing would delete them: the list is what saves them.
        let unprotected = diff(&source, &dest, &[]);
        assert_eq!(paths(&unprotected.deletes), ["gone", "locked/a", "locked/sub", "lockedx", "secret"]);
    }
}
