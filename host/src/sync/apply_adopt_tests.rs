//! Tests of [`Applier::adopt`]: the standby takes its own file for a rename, and never one
//! that is not what its index says.

use std::fs::{self, FileTimes};

use super::*;
use crate::sync::entry::mtime_ns;

fn n(s: &str) -> RelName {
    RelName::new(s.as_bytes()).unwrap()
}

/// The index entry of the file at `path` below `root`, as a pass would have recorded it.
fn held(root: &Path, path: &str) -> Entry {
    let full = root.join(path);
    let meta = fs::symlink_metadata(&full).unwrap();
    let mut e = Entry::from_metadata(n(path), EntryKind::File, &meta, None);
    e.hash = Some(*blake3::hash(&fs::read(&full).unwrap()).as_bytes());
    e
}

#[test]
fn a_renamed_file_is_taken_whole_with_its_new_mode_and_time() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("old")).unwrap();
    fs::write(t.path().join("old/a.bin"), b"the content").unwrap();
    let was = held(t.path(), "old/a.bin");
    let mut target =
        Entry { path: n("new/deeper/a.bin"), mode: 0o600, mtime_ns: 1_234_000_000_000, ..was.clone() };
    target.hash = was.hash;
    let mut a = Applier::open(t.path()).unwrap();
    a.adopt(&n("old/a.bin"), &was, &target).unwrap();
    // Taken at once: a deletion of its old folder in the same batch cannot take it.
    a.delete(&n("old")).unwrap();
    a.commit().unwrap();
    let landed = t.path().join("new/deeper/a.bin");
    assert_eq!(fs::read(&landed).unwrap(), b"the content");
    let meta = fs::metadata(&landed).unwrap();
    assert_eq!((meta.permissions().mode() & 0o7777, mtime_ns(&meta)), (0o600, 1_234_000_000_000));
    assert!(!t.path().join("old").exists());
    let leftovers: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().as_bytes().starts_with(b".tandem-tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
}

#[test]
fn a_file_that_is_not_what_the_index_says_is_never_taken() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("a"), b"indexed").unwrap();
    let was = held(t.path(), "a");
    let target = Entry { path: n("b"), ..was.clone() };
    // Changed behind tandem's back after it was indexed (same size, another time).
    fs::write(t.path().join("a"), b"INDEXED").unwrap();
    filetime_forward(&t.path().join("a"));
    let mut a = Applier::open(t.path()).unwrap();
    let err = a.adopt(&n("a"), &was, &target).unwrap_err();
    assert!(matches!(err, TreeError::MoveSource { .. }), "{err}");
    // Content the index does not hold under that name, and a missing file: refused too.
    let other = Entry { hash: Some([7; 32]), ..target.clone() };
    assert!(matches!(a.adopt(&n("a"), &held(t.path(), "a"), &other), Err(TreeError::MoveSource { .. })));
    assert!(matches!(a.adopt(&n("gone"), &was, &target), Err(TreeError::MoveSource { .. })));
    a.commit().unwrap();
    assert_eq!(fs::read(t.path().join("a")).unwrap(), b"INDEXED", "the source stays where it was");
    assert!(!t.path().join("b").exists());
}

/// Moves `path`'s mtime one second on, so a same-size rewrite cannot look unchanged.
fn filetime_forward(path: &Path) {
    let meta = fs::metadata(path).unwrap();
    let later =
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos((mtime_ns(&meta) + 1_000_000_000) as u64);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(later))
        .unwrap();
}
