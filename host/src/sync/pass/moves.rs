//! Renames without content: a file that is new at the standby (or changed there) whose content
//! the standby already holds under a path this pass deletes goes as a `Move` of that file, not
//! as bytes. rsync cannot do this (its `--fuzzy` only finds a similar name in the same folder to
//! use as a delta base); tandem knows the standby's content hashes.
//!
//! The primary proves the content: it hashes its new file, and only files whose size matches
//! a deleted file's are hashed, so a pass with no deletions reads nothing more. The standby
//! proves its old file unchanged since its index recorded it (size and mtime, the test a pass
//! with no change trusts) before it takes it.
//!
//! Must never: pair one source with two targets (the first takes the file), or pair a source
//! whose hash is unknown.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::sync::entry::{Entry, EntryKind};
use crate::sync::index::{Index, refresh};
use crate::sync::names::RelName;

/// What [`pair`] found.
#[derive(Debug, Default)]
pub struct Paired {
    /// (the standby's file to take, the file it becomes, with its content hash).
    pub moves: Vec<(RelName, Entry)>,
    /// Files hashed to look for a match, and their bytes.
    pub hashed_files: u64,
    pub hashed_bytes: u64,
}

/// Takes out of `upserts` every file whose content the standby holds under a path in
/// `deletes` (a folder standing for its subtree), and returns them as moves.
pub fn pair(root: &Path, theirs: &Index, upserts: &mut Vec<Entry>, deletes: &[RelName]) -> Paired {
    let mut sources: HashMap<u64, Vec<(&RelName, [u8; 32])>> = HashMap::new();
    for d in deletes {
        for e in theirs.get(d).into_iter().chain(theirs.below(d)) {
            if let (EntryKind::File, Some(hash), true) = (e.kind, e.hash, e.size > 0) {
                sources.entry(e.size).or_default().push((&e.path, hash));
            }
        }
    }
    let mut paired = Paired::default();
    if sources.is_empty() {
        return paired;
    }
    let candidates: Vec<Entry> = upserts
        .iter()
        // A hard-link member carries no content of its own: it is linked, never moved.
        .filter(|e| {
            e.kind == EntryKind::File
                && e.size > 0
                && e.link_leader().is_none()
                && sources.contains_key(&e.size)
        })
        .cloned()
        .collect();
    if candidates.is_empty() {
        return paired;
    }
    // Hashed as a refresh would: a file that changes while it is read is left out (and sent).
    let Ok((hashed, stats)) = refresh(&Index::new(), candidates, root) else { return paired };
    paired.hashed_files = stats.hashed_files;
    paired.hashed_bytes = stats.hashed_bytes;
    let mut taken: HashSet<&RelName> = HashSet::new();
    for e in hashed {
        let Some(hash) = e.hash else { continue };
        let found = sources
            .get(&e.size)
            .and_then(|list| list.iter().find(|(p, h)| *h == hash && !taken.contains(p)).map(|(p, _)| *p));
        if let Some(from) = found {
            taken.insert(from);
            paired.moves.push((from.clone(), e));
        }
    }
    let moved: HashSet<&RelName> = paired.moves.iter().map(|(_, e)| &e.path).collect();
    upserts.retain(|e| !moved.contains(&e.path));
    paired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::scan::{Verdict, scan};

    fn name(p: &str) -> RelName {
        RelName::new(p.as_bytes()).unwrap()
    }

    /// The standby's index of a tree as it was: every file hashed.
    fn indexed(root: &Path) -> Index {
        let scanned = scan(root, &mut |b| vec![Verdict::Keep; b.len()]).unwrap();
        refresh(&Index::new(), scanned.entries, root).unwrap().0.into_iter().collect()
    }

    fn upserts_and_deletes(root: &Path, theirs: &Index) -> (Vec<Entry>, Vec<RelName>) {
        let scanned = scan(root, &mut |b| vec![Verdict::Keep; b.len()]).unwrap();
        let d = crate::sync::index::diff(&scanned.entries, theirs, &[]);
        (d.upserts, d.deletes)
    }

    #[test]
    fn renamed_files_pair_with_what_was_deleted_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("old")).unwrap();
        std::fs::write(r.join("old/a.txt"), b"alpha content").unwrap();
        std::fs::write(r.join("b.txt"), b"bravo content").unwrap();
        std::fs::write(r.join("same-size.txt"), b"charlie conte").unwrap();
        std::fs::write(r.join("twin-1"), b"twin").unwrap();
        let theirs = indexed(r);
        // A folder moved away with its file, a rename, a new file of a deleted file's size but
        // other content, and a deleted file copied to two names.
        std::fs::create_dir_all(r.join("new")).unwrap();
        std::fs::rename(r.join("old/a.txt"), r.join("new/a.txt")).unwrap();
        std::fs::remove_dir(r.join("old")).unwrap();
        std::fs::rename(r.join("b.txt"), r.join("b-renamed.txt")).unwrap();
        std::fs::remove_file(r.join("same-size.txt")).unwrap();
        std::fs::write(r.join("other.txt"), b"different 13").unwrap();
        std::fs::copy(r.join("twin-1"), r.join("twin-2")).unwrap();
        std::fs::rename(r.join("twin-1"), r.join("twin-3")).unwrap();
        let (mut upserts, deletes) = upserts_and_deletes(r, &theirs);
        let paired = pair(r, &theirs, &mut upserts, &deletes);
        let mut moves: Vec<(String, String)> =
            paired.moves.iter().map(|(f, e)| (f.display(), e.path.display())).collect();
        moves.sort();
        assert_eq!(moves.len(), 3, "{moves:?}");
        assert!(moves.contains(&("old/a.txt".into(), "new/a.txt".into())));
        assert!(moves.contains(&("b.txt".into(), "b-renamed.txt".into())));
        // One source, two copies: one takes it, the other is sent.
        assert_eq!(moves.iter().filter(|(f, _)| f == "twin-1").count(), 1);
        let sent: HashSet<String> = upserts.iter().map(|e| e.path.display()).collect();
        assert!(sent.contains("other.txt") && sent.contains("new"));
        assert!(sent.contains("twin-2") || sent.contains("twin-3"));
        assert!(paired.moves.iter().all(|(_, e)| e.hash.is_some()));
    }

    #[test]
    fn nothing_is_read_when_nothing_was_deleted() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("x"), b"x").unwrap();
        let theirs = Index::new();
        let (mut upserts, deletes) = upserts_and_deletes(t.path(), &theirs);
        let paired = pair(t.path(), &theirs, &mut upserts, &deletes);
        assert_eq!((paired.moves.len(), paired.hashed_files), (0, 0));
        assert_eq!(upserts.len(), 1);
        let _ = name("x");
    }

    #[test]
    fn a_source_without_a_known_hash_is_never_paired() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"same").unwrap();
        let mut theirs = indexed(t.path());
        let mut held = theirs.get(&name("a")).unwrap().clone();
        held.hash = None;
        theirs.insert(held);
        std::fs::rename(t.path().join("a"), t.path().join("b")).unwrap();
        let (mut upserts, deletes) = upserts_and_deletes(t.path(), &theirs);
        assert!(pair(t.path(), &theirs, &mut upserts, &deletes).moves.is_empty());
    }
}
