//! What differs between a source listing and a destination index: the entries to send and
//! the paths to delete.
//!
//! Must never: delete a path the source scan did not cover. Anything at or below a
//! protected path (unreadable at the source, special, excluded by the filter) is kept.

use std::collections::HashSet;

use crate::sync::entry::Entry;
use crate::sync::index::Index;
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
/// An entry is unchanged when kind, size, mtime, mode and link agree and the hashes do not
/// disagree (a hash missing on either side falls back to the stat comparison). `protected`
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
    old.same_stat(new) && old.link == new.link && hashes_agree
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
        Entry {
            path: n(path),
            kind: EntryKind::File,
            size: content.len() as u64,
            mtime_ns: 1,
            mode: 0o644,
            link: None,
            hash,
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: n(path),
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns: 1,
            mode: 0o755,
            link: None,
            hash: None,
        }
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
