//! Tests of the applier on real temporary trees, including a property test that a scanned,
//! diffed and applied tree comes out equal to its source.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::sync::entry::mtime_ns;
use crate::sync::index::{Index, diff, refresh};
use crate::sync::meta::Keep;
use crate::sync::nofollow::{set_dir_meta, set_link_mtime};
use crate::sync::scan::{Verdict, scan};

pub(super) fn n(s: &str) -> RelName {
    RelName::new(s.as_bytes()).unwrap()
}

pub(super) fn file_entry(path: &str, content: &[u8], mode: u32, mtime_ns: i128) -> Entry {
    let hash = Some(*blake3::hash(content).as_bytes());
    Entry { hash, ..Entry::new(n(path), EntryKind::File, content.len() as u64, mtime_ns, mode) }
}

pub(super) fn dir_entry(path: &str, mode: u32, mtime_ns: i128) -> Entry {
    Entry::new(n(path), EntryKind::Dir, 0, mtime_ns, mode)
}

pub(super) fn link_entry(path: &str, target: &str) -> Entry {
    let link = Some(target.to_string());
    Entry { link, ..Entry::new(n(path), EntryKind::Symlink, target.len() as u64, 5, 0o777) }
}

pub(super) fn put(a: &mut Applier, e: &Entry, content: &[u8]) -> Result<(), TreeError> {
    let mut w = a.begin_file(e)?;
    w.write_all(content).unwrap();
    a.finish_file(w)
}

/// Every entry of a tree with hashes, for comparing two trees.
pub(super) fn listing(root: &Path) -> Vec<Entry> {
    let scanned = scan(root, &mut |b: &[Entry]| vec![Verdict::Keep; b.len()]).unwrap();
    assert!(scanned.unreadable.is_empty(), "{:?}", scanned.unreadable);
    refresh(&Index::new(), scanned.entries, root).unwrap().0
}

#[test]
fn file_content_mode_and_mtime_land_exactly() {
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    let mtime = 1_600_000_000_123_456_789;
    let e = file_entry("d/f", b"payload", 0o640, mtime);
    put(&mut a, &e, b"payload").unwrap();
    put(&mut a, &file_entry("empty", b"", 0o600, -3_000_000_001), b"").unwrap();
    assert!(!t.path().join("d/f").exists(), "invisible before commit");
    let stats = a.commit().unwrap();
    assert_eq!((stats.files, stats.bytes, stats.file_syncs, stats.fs_syncs), (2, 7, 2, 0));
    assert!(stats.failed.is_empty());
    assert_eq!(fs::read(t.path().join("d/f")).unwrap(), b"payload");
    let m = fs::symlink_metadata(t.path().join("d/f")).unwrap();
    assert_eq!((m.mode() & 0o7777, mtime_ns(&m)), (0o640, mtime));
    let m = fs::symlink_metadata(t.path().join("empty")).unwrap();
    assert_eq!((m.len(), m.mode() & 0o7777, mtime_ns(&m)), (0, 0o600, -3_000_000_001));
    assert_eq!(listing(t.path()).len(), 3, "no temporaries left: d, d/f, empty");
}

/// A change of metadata alone (a move onto the file's own name) happens where the file is: a
/// reader never finds it missing, not even before the commit; the commit makes it durable.
#[test]
fn a_metadata_change_alone_keeps_the_file_in_place() {
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    let mtime = 1_600_000_000_000_000_000;
    let held = file_entry("d/f", b"payload", 0o644, mtime);
    put(&mut a, &held, b"payload").unwrap();
    a.commit().unwrap();
    let inode = fs::metadata(t.path().join("d/f")).unwrap().ino();
    let wanted = file_entry("d/f", b"payload", 0o600, mtime);
    a.adopt(&n("d/f"), &held, &wanted).unwrap();
    let m = fs::symlink_metadata(t.path().join("d/f")).expect("still there before the commit");
    assert_eq!((m.ino(), m.mode() & 0o7777), (inode, 0o600));
    let stats = a.commit().unwrap();
    assert_eq!((stats.files, stats.file_syncs), (0, 1), "nothing placed, the file synced");
    assert_eq!(listing(t.path()).len(), 2, "no temporaries: d, d/f");
}

#[test]
fn content_that_does_not_match_its_hash_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    let e = file_entry("f", b"expected", 0o644, 0);
    assert!(matches!(put(&mut a, &e, b"tampered"), Err(TreeError::HashMismatch { .. })));
    assert_eq!(a.commit().unwrap().files, 0);
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0, "the temporary is gone");
}

#[test]
fn directories_get_their_mode_and_mtime_after_their_content() {
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    a.dir(&dir_entry("empty", 0o710, 42_000_000_007)).unwrap();
    a.dir(&dir_entry("ro", 0o555, 7)).unwrap();
    put(&mut a, &file_entry("ro/f", b"x", 0o444, 9), b"x").unwrap();
    a.commit().unwrap();
    let m = fs::symlink_metadata(t.path().join("empty")).unwrap();
    assert!(m.is_dir());
    assert_eq!((m.mode() & 0o7777, mtime_ns(&m)), (0o710, 42_000_000_007));
    let m = fs::symlink_metadata(t.path().join("ro")).unwrap();
    assert_eq!((m.mode() & 0o7777, mtime_ns(&m)), (0o555, 7));
    assert_eq!(fs::read(t.path().join("ro/f")).unwrap(), b"x");
    // A second pass can still write into the read-only folder.
    let mut a = Applier::open(t.path()).unwrap();
    a.dir(&dir_entry("ro", 0o555, 8)).unwrap();
    put(&mut a, &file_entry("ro/g", b"y", 0o444, 9), b"y").unwrap();
    assert!(a.commit().unwrap().failed.is_empty());
    fs::set_permissions(t.path().join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn later_batches_can_change_a_read_only_folder_and_keep_its_mode() {
    // Matters without root, where a 0o555 folder refuses new entries; as root it must hold too.
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    a.dir(&dir_entry("ro", 0o555, 11)).unwrap();
    put(&mut a, &file_entry("ro/old", b"o", 0o644, 1), b"o").unwrap();
    a.commit().unwrap();
    put(&mut a, &file_entry("ro/new", b"n", 0o644, 1), b"n").unwrap();
    a.delete(&n("ro/old")).unwrap();
    let stats = a.commit().unwrap();
    assert!(stats.failed.is_empty(), "{:?}", stats.failed);
    let m = fs::symlink_metadata(t.path().join("ro")).unwrap();
    assert_eq!((m.mode() & 0o7777, mtime_ns(&m)), (0o555, 11));
    let names: Vec<_> = listing(t.path()).iter().map(|e| e.path.display()).collect();
    assert_eq!(names, ["ro", "ro/new"]);
    fs::set_permissions(t.path().join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_symlinked_root_is_followed_once_and_synced_through_its_handle() {
    let real = tempfile::tempdir().unwrap();
    let holder = tempfile::tempdir().unwrap();
    symlink(real.path(), holder.path().join("vault")).unwrap();
    let mut a = Applier::open(&holder.path().join("vault")).unwrap();
    put(&mut a, &file_entry("f", b"x", 0o644, 1), b"x").unwrap();
    let stats = a.commit().unwrap();
    assert_eq!((stats.files, stats.dir_syncs), (1, 1));
    assert_eq!(fs::read(real.path().join("f")).unwrap(), b"x");
}

#[test]
fn symlinks_are_created_as_links_and_escaping_targets_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    a.symlink(&link_entry("d/up", "../x")).unwrap();
    a.symlink(&link_entry("dangling", "nowhere")).unwrap();
    let abs = a.symlink(&link_entry("abs", "/etc/passwd")).unwrap_err();
    assert!(matches!(abs, TreeError::LinkTarget { .. }), "{abs}");
    assert!(matches!(a.symlink(&link_entry("esc", "../outside")), Err(TreeError::LinkTarget { .. })));
    put(&mut a, &file_entry("after", b"1", 0o644, 0), b"1").unwrap();
    a.commit().unwrap();
    assert_eq!(fs::read_link(t.path().join("d/up")).unwrap(), Path::new("../x"));
    assert_eq!(mtime_ns(&fs::symlink_metadata(t.path().join("dangling")).unwrap()), 5);
    assert!(!t.path().join("abs").exists() && fs::symlink_metadata(t.path().join("esc")).is_err());
    assert!(t.path().join("after").exists(), "the rest of the batch continued");
}

#[test]
fn writes_refuse_a_symlinked_directory_component() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("victim"), b"original").unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    // The hostile sequence: a link to outside, then entries "through" it.
    a.symlink(&link_entry("evil", "inner")).unwrap();
    fs::remove_file(t.path().join("evil")).unwrap();
    symlink(outside.path(), t.path().join("evil")).unwrap();
    let unsafe_err = |r: Result<(), TreeError>| matches!(r, Err(TreeError::UnsafeComponent { .. }));
    assert!(a.begin_file(&file_entry("evil/victim", b"pwned", 0o644, 0)).is_err());
    assert!(unsafe_err(a.dir(&dir_entry("evil/sub", 0o755, 0))));
    assert!(unsafe_err(a.symlink(&link_entry("evil/l", "x"))));
    assert!(a.base_path(&n("evil/victim")).is_err());
    a.delete(&n("evil/victim")).unwrap();
    a.commit().unwrap();
    assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"original");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    assert!(fs::symlink_metadata(t.path().join("evil")).unwrap().file_type().is_symlink());
}

#[test]
fn base_path_finds_only_regular_files() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("d")).unwrap();
    fs::write(t.path().join("d/f"), b"x").unwrap();
    symlink("f", t.path().join("d/l")).unwrap();
    let a = Applier::open(t.path()).unwrap();
    assert_eq!(a.base_path(&n("d/f")).unwrap(), Some(t.path().join("d/f")));
    assert_eq!(a.base_path(&n("d/l")).unwrap(), None);
    assert_eq!(a.base_path(&n("d")).unwrap(), None);
    assert_eq!(a.base_path(&n("missing/f")).unwrap(), None);
}

#[test]
fn deleting_a_tree_removes_links_without_following_them() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("keep"), b"k").unwrap();
    fs::create_dir_all(t.path().join("d/e")).unwrap();
    fs::write(t.path().join("d/e/f"), b"x").unwrap();
    symlink(outside.path(), t.path().join("d/out")).unwrap();
    fs::write(t.path().join("file"), b"x").unwrap();
    symlink("file", t.path().join("link")).unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    for p in ["d", "link", "missing", "file/below"] {
        a.delete(&n(p)).unwrap();
    }
    a.commit().unwrap();
    let left: Vec<_> = fs::read_dir(t.path()).unwrap().map(|d| d.unwrap().file_name()).collect();
    assert_eq!(left, ["file"]);
    assert!(outside.path().join("keep").exists());
}

#[test]
fn a_path_changing_kind_is_replaced() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("was_dir/sub")).unwrap();
    fs::write(t.path().join("was_file"), b"x").unwrap();
    fs::create_dir(t.path().join("to_link")).unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    put(&mut a, &file_entry("was_dir", b"now a file", 0o644, 0), b"now a file").unwrap();
    a.dir(&dir_entry("was_file", 0o755, 0)).unwrap();
    a.symlink(&link_entry("to_link", "was_dir")).unwrap();
    assert!(a.commit().unwrap().failed.is_empty());
    assert_eq!(fs::read(t.path().join("was_dir")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(t.path().join("was_file")).unwrap().is_dir());
    assert!(fs::symlink_metadata(t.path().join("to_link")).unwrap().file_type().is_symlink());
}

#[test]
fn crash_leftovers_and_abandoned_writes_are_cleaned() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("a/b")).unwrap();
    fs::write(t.path().join(".tandem-tmp.999-1"), b"torn").unwrap();
    fs::write(t.path().join("a/b/.tandem-tmp.999-2"), b"torn").unwrap();
    symlink("x", t.path().join("a/.tandem-tmp.999-3")).unwrap();
    fs::write(t.path().join("a/keep"), b"k").unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    assert_eq!(a.cleaned_leftovers(), 3);
    let names: Vec<_> = listing(t.path()).iter().map(|e| e.path.display()).collect();
    assert_eq!(names, ["a", "a/b", "a/keep"]);

    // A writer dropped unfinished, and an applier dropped uncommitted, leave nothing.
    let w = a.begin_file(&file_entry("a/new", b"", 0o644, 0)).unwrap();
    drop(w);
    put(&mut a, &file_entry("a/queued", b"q", 0o644, 0), b"q").unwrap();
    drop(a);
    let names: Vec<_> = listing(t.path()).iter().map(|e| e.path.display()).collect();
    assert_eq!(names, ["a", "a/b", "a/keep"]);
    assert_eq!(fs::read_dir(t.path().join("a")).unwrap().count(), 2);
}

#[test]
fn many_small_files_cost_far_fewer_syncs_than_files() {
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    let files = 300;
    for i in 0..files {
        let content = format!("file {i}");
        let e = file_entry(&format!("d{}/f{i}", i % 3), content.as_bytes(), 0o644, i);
        put(&mut a, &e, content.as_bytes()).unwrap();
    }
    let stats = a.commit().unwrap();
    assert_eq!(stats.files, files as u64);
    assert_eq!((stats.file_syncs, stats.fs_syncs), (0, 1), "one syncfs for the batch");
    // The root (three new folders) and each of the three folders.
    assert_eq!(stats.dir_syncs, 4);
    assert!(stats.file_syncs + stats.fs_syncs + stats.dir_syncs < files as u64 / 50);
    assert_eq!(fs::read(t.path().join("d2/f299")).unwrap(), b"file 299");
}

#[test]
fn files_across_many_folders_cost_two_syncfs_not_a_fsync_per_folder() {
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    for i in 0..100 {
        let content = format!("file {i}");
        let e = file_entry(&format!("d{i}/f"), content.as_bytes(), 0o644, i);
        put(&mut a, &e, content.as_bytes()).unwrap();
    }
    let stats = a.commit().unwrap();
    assert_eq!(stats.files, 100);
    assert_eq!((stats.file_syncs, stats.fs_syncs, stats.dir_syncs), (0, 2, 0), "{stats:?}");
    assert_eq!(fs::read(t.path().join("d99/f")).unwrap(), b"file 99");
}

/// A generated tree node: parent (index into earlier dirs, 0 = root), name, and kind.
#[derive(Debug, Clone)]
enum Node {
    File {
        content: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Link {
        target: &'static str,
    },
    /// Another name of an earlier file (index into the files made so far).
    HardLink {
        to: usize,
    },
}

/// Metadata a generated file or folder gets beyond mode and mtime: an owner (index into
/// [`OWNERS`], applied as root only) and a `user.p` attribute value.
type Extras = (usize, Option<u8>);

/// Owners the generated trees use (root only: chown needs it).
const OWNERS: [(u32, u32); 4] = [(0, 0), (1234, 5678), (1234, 9999), (65534, 65534)];

/// A generated node with where it goes: parent, name, kind, mtime seconds and nanoseconds.
type Placed = (usize, Vec<u8>, Node, i64, u32, Extras);

fn node() -> impl Strategy<Value = Placed> {
    let names = prop::sample::select(vec![
        b"a".to_vec(),
        b"b".to_vec(),
        b"a.b".to_vec(),
        b"x y".to_vec(),
        "é".as_bytes().to_vec(),
        b"\xff\xfe".to_vec(),
        b"...".to_vec(),
        b".hidden".to_vec(),
    ]);
    let kind = prop_oneof![
        4 => (prop::collection::vec(any::<u8>(), 0..3000), prop::sample::select(vec![0o644, 0o600, 0o755, 0o444]))
            .prop_map(|(content, mode)| Node::File { content, mode }),
        2 => prop::sample::select(vec![0o755, 0o700, 0o555]).prop_map(|mode| Node::Dir { mode }),
        1 => prop::sample::select(vec!["t", "a/b", "./c"]).prop_map(|target| Node::Link { target }),
        2 => (0usize..16).prop_map(|to| Node::HardLink { to }),
    ];
    let extras = (0..OWNERS.len(), prop::option::of(any::<u8>()));
    (0usize..8, names, kind, 0i64..2_000_000_000, 0u32..1_000_000_000, extras)
}

/// Sets `user.p` on `path` to `value`, or removes it.
fn set_attr(path: &Path, value: Option<u8>) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated path and name, a 1-byte value, all alive for the calls.
    let rc = unsafe {
        match value {
            Some(v) => libc::lsetxattr(c.as_ptr(), c"user.p".as_ptr(), (&raw const v).cast(), 1, 0),
            None => libc::lremovexattr(c.as_ptr(), c"user.p".as_ptr()),
        }
    };
    let err = std::io::Error::last_os_error();
    assert!(rc == 0 || err.raw_os_error() == Some(libc::ENODATA), "{}: {err}", path.display());
}

/// Gives `path` owner `OWNERS[owner]` when running as root.
fn set_owner(path: &Path, owner: usize) {
    if crate::sync::meta::is_root() {
        let (uid, gid) = OWNERS[owner % OWNERS.len()];
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// Builds the generated tree under `root`; folder modes and mtimes are set last, deepest first.
fn build(root: &Path, nodes: &[Placed]) {
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut finals = Vec::new();
    for (parent, name, kind, secs, nanos, (owner, attr)) in nodes {
        let parent = &dirs[parent % dirs.len()];
        let rel = if parent.is_empty() { name.clone() } else { [parent.as_slice(), b"/", name].concat() };
        let path = root.join(OsStr::from_bytes(&rel));
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let mtime = i128::from(*secs) * 1_000_000_000 + i128::from(*nanos);
        match kind {
            Node::File { content, mode } => {
                fs::write(&path, content).unwrap();
                set_owner(&path, *owner);
                set_attr(&path, *attr);
                let f = fs::File::options().write(true).open(&path).unwrap();
                f.set_modified(crate::sync::entry::system_time(mtime)).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
                files.push(path);
            }
            Node::Dir { mode } => {
                fs::create_dir(&path).unwrap();
                set_owner(&path, *owner);
                set_attr(&path, *attr);
                finals.push((rel.clone(), *mode, mtime));
                dirs.push(rel);
            }
            Node::Link { target } => {
                symlink(target, &path).unwrap();
                set_owner(&path, *owner);
                set_link_mtime(&path, mtime).unwrap();
            }
            Node::HardLink { to } => {
                if !files.is_empty() {
                    fs::hard_link(&files[to % files.len()], &path).unwrap();
                }
            }
        }
    }
    finals.sort_by_key(|(rel, _, _)| std::cmp::Reverse(rel.iter().filter(|b| **b == b'/').count()));
    for (rel, mode, mtime) in finals {
        set_dir_meta(&root.join(OsStr::from_bytes(&rel)), mode, mtime).unwrap();
    }
}

/// A change made to a synced source tree.
#[derive(Debug, Clone)]
enum Change {
    Chmod(usize, u32),
    Chown(usize, usize),
    Attr(usize, Option<u8>),
    Touch(usize, i64),
    /// A new name (at the root) for a file.
    LinkTo(usize, u8),
    /// A file rewritten as a file of its own (an editor's save breaks a hard link).
    Unshare(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (any::<usize>(), prop::sample::select(vec![0o600, 0o640, 0o755]))
            .prop_map(|(i, m)| Change::Chmod(i, m)),
        (any::<usize>(), 0..OWNERS.len()).prop_map(|(i, o)| Change::Chown(i, o)),
        (any::<usize>(), prop::option::of(any::<u8>())).prop_map(|(i, v)| Change::Attr(i, v)),
        (any::<usize>(), 0i64..2_000_000_000).prop_map(|(i, t)| Change::Touch(i, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, n)| Change::LinkTo(i, n)),
        any::<usize>().prop_map(Change::Unshare),
    ]
}

/// Applies `changes` to the tree at `root`, each to the file or folder its index picks.
fn change_tree(root: &Path, changes: &[Change]) {
    for c in changes {
        let all = listing_kept(root);
        let files: Vec<_> =
            all.iter().filter(|e| e.kind == EntryKind::File).map(|e| root.join(e.path.to_path())).collect();
        let owned: Vec<_> = all
            .iter()
            .filter(|e| e.kind != EntryKind::Symlink)
            .map(|e| root.join(e.path.to_path()))
            .collect();
        let pick = |list: &[std::path::PathBuf], i: usize| list.get(i % list.len().max(1)).cloned();
        match c {
            Change::Chmod(i, mode) => {
                if let Some(p) = pick(&files, *i) {
                    fs::set_permissions(p, fs::Permissions::from_mode(*mode)).unwrap();
                }
            }
            Change::Chown(i, owner) => {
                if let Some(p) = pick(&owned, *i) {
                    set_owner(&p, *owner);
                }
            }
            Change::Attr(i, v) => {
                if let Some(p) = pick(&owned, *i) {
                    set_attr(&p, *v);
                }
            }
            Change::Touch(i, secs) => {
                if let Some(p) = pick(&files, *i) {
                    let f = fs::File::options().write(true).open(&p);
                    // A read-only file cannot be opened for writing without root.
                    if let Ok(f) = f {
                        f.set_modified(crate::sync::entry::system_time(i128::from(*secs) * 1_000_000_000))
                            .unwrap();
                    }
                }
            }
            Change::LinkTo(i, n) => {
                let name = root.join(format!("link{n}"));
                if let Some(p) = pick(&files, *i)
                    && fs::symlink_metadata(&name).is_err()
                {
                    fs::hard_link(p, name).unwrap();
                }
            }
            Change::Unshare(i) => {
                if let Some(p) = pick(&files, *i) {
                    let copy = p.with_file_name(".unshare");
                    fs::copy(&p, &copy).unwrap();
                    fs::rename(&copy, &p).unwrap();
                }
            }
        }
    }
}

/// Every entry of a tree with hashes, owners, attributes and link groups.
fn listing_kept(root: &Path) -> Vec<Entry> {
    let scanned =
        crate::sync::scan::scan_with(root, &keep_all(), &mut |b: &[Entry]| vec![Verdict::Keep; b.len()])
            .unwrap();
    assert!(scanned.unreadable.is_empty(), "{:?}", scanned.unreadable);
    refresh(&Index::new(), scanned.entries, root).unwrap().0
}

/// What the sync loop does with a diff: deletes first, then upserts in order, members last.
fn apply_diff(src: &Path, dst: &Path, d: &crate::sync::index::Diff) -> CommitStats {
    let mut a = Applier::open(dst).unwrap().with_keep(keep_all());
    for p in &d.deletes {
        a.delete(p).unwrap();
    }
    for e in &d.upserts {
        match e.kind {
            EntryKind::Dir => a.dir(e).unwrap(),
            EntryKind::Symlink => a.symlink(e).unwrap(),
            EntryKind::File if e.link_leader().is_some() => {}
            EntryKind::File => put(&mut a, e, &fs::read(src.join(e.path.to_path())).unwrap()).unwrap(),
        }
    }
    for e in d.upserts.iter().filter(|e| e.link_leader().is_some()) {
        a.hard_link(e).unwrap();
    }
    a.commit().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Trees with hard links, owners (as root) and attributes, then changes to modes, owners,
    /// attributes, times and link groups: each time the applied diff leaves the destination
    /// equal to the source in every kept respect (link counts included).
    #[test]
    fn scanned_diffed_and_applied_trees_come_out_equal(
        nodes in prop::collection::vec(node(), 0..30),
        stale in prop::collection::vec(node(), 0..8),
        changes in prop::collection::vec(change(), 0..8),
    ) {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        build(src.path(), &nodes);
        // The destination starts with unrelated content the diff must delete or overwrite.
        build(dst.path(), &stale);
        let dest_index: Index = listing_kept(dst.path()).into_iter().collect();

        let source = listing_kept(src.path());
        let d = diff(&source, &dest_index, &[]);
        let stats = apply_diff(src.path(), dst.path(), &d);
        prop_assert!(stats.failed.is_empty(), "{:?}", stats.failed);
        prop_assert_eq!(listing_kept(dst.path()), source.clone());

        // Against an empty index everything is an upsert and the result is the same.
        let fresh = tempfile::tempdir().unwrap();
        let d = diff(&source, &Index::new(), &[]);
        prop_assert!(d.deletes.is_empty());
        prop_assert_eq!(d.upserts.len(), source.len());
        apply_diff(src.path(), fresh.path(), &d);
        prop_assert_eq!(listing_kept(fresh.path()), source);

        // Metadata and link changes at the source converge too.
        change_tree(src.path(), &changes);
        let source = listing_kept(src.path());
        let dest_index: Index = listing_kept(dst.path()).into_iter().collect();
        let d = diff(&source, &dest_index, &[]);
        let stats = apply_diff(src.path(), dst.path(), &d);
        prop_assert!(stats.failed.is_empty(), "{:?}", stats.failed);
        prop_assert_eq!(listing_kept(dst.path()), source);
    }
}

/// `keep` that keeps everything there is.
pub(super) fn keep_all() -> Keep {
    Keep { owner: true, xattrs: true, acls: true, privileged: crate::sync::meta::is_root() }
}

pub(super) fn xattrs_of(path: &Path) -> Vec<crate::sync::entry::Xattr> {
    crate::sync::meta::read_xattrs(path, &keep_all()).unwrap()
}
