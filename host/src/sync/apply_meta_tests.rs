//! Tests of the applier's metadata beyond mode and mtime on real temporary trees: owners,
//! attributes and ACLs set before the rename, hard-link members linked to their leaders at
//! commit, holes left unwritten.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::tests::{dir_entry, file_entry, keep_all, link_entry, listing, n, put, xattrs_of};
use super::*;
use crate::sync::entry::mtime_ns;

/// True when running as root; tests that chown need it. Under CI=true its absence fails.
fn root_or_skip(test: &str) -> bool {
    if crate::sync::meta::is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs root, and CI runs as root");
    eprintln!("{test}: skipped, needs root");
    false
}

/// An ACL granting user 1234 read on a file of `mode`, as setfacl(1) writes it, and the mode
/// the file has with it (its group bits are the ACL's mask: the two always agree).
fn an_acl(dir: &Path, mode: u32) -> (Vec<u8>, u32) {
    let probe = dir.join("acl-probe");
    fs::write(&probe, b"").unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(mode)).unwrap();
    let out = std::process::Command::new("setfacl").args(["-m", "u:1234:r"]).arg(&probe).output().unwrap();
    assert!(out.status.success(), "setfacl: {out:?}");
    let acl = xattrs_of(&probe).into_iter().find(|x| x.name == b"system.posix_acl_access").unwrap();
    let mode = fs::metadata(&probe).unwrap().mode() & 0o7777;
    fs::remove_file(&probe).unwrap();
    (acl.value, mode)
}

#[test]
fn owners_attributes_and_acls_land_on_the_temporary_before_the_rename() {
    use crate::sync::entry::Xattr;
    if !root_or_skip("owners_attributes_and_acls_land_on_the_temporary_before_the_rename") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (acl, mode) = an_acl(t.path(), 0o4750);
    let mut a = Applier::open(t.path()).unwrap().with_keep(keep_all());
    let attrs = vec![
        Xattr { name: b"system.posix_acl_access".to_vec(), value: acl.clone() },
        Xattr { name: b"trusted.t".to_vec(), value: b"2".to_vec() },
        Xattr { name: b"user.u".to_vec(), value: b"1".to_vec() },
    ];
    // setuid survives: chown (which clears it) comes before chmod.
    let mut f = file_entry("d/f", b"data", mode, 7);
    (f.uid, f.gid) = (1234, 5678);
    f.set_xattrs(attrs.clone());
    let mut d = dir_entry("d", 0o750, 9);
    (d.uid, d.gid) = (4321, 8765);
    d.set_xattrs(vec![Xattr { name: b"user.folder".to_vec(), value: b"yes".to_vec() }]);
    let mut l = link_entry("d/l", "f");
    (l.uid, l.gid) = (1111, 2222);
    a.dir(&d).unwrap();
    put(&mut a, &f, b"data").unwrap();
    a.symlink(&l).unwrap();
    let stats = a.commit().unwrap();
    assert!(stats.failed.is_empty(), "{:?}", stats.failed);
    let m = fs::symlink_metadata(t.path().join("d/f")).unwrap();
    assert_eq!(mode & 0o4000, 0o4000);
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777, mtime_ns(&m)), (1234, 5678, mode, 7));
    assert_eq!(xattrs_of(&t.path().join("d/f")), attrs);
    let m = fs::symlink_metadata(t.path().join("d")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777, mtime_ns(&m)), (4321, 8765, 0o750, 9));
    assert_eq!(xattrs_of(&t.path().join("d")), d.xattrs());
    let m = fs::symlink_metadata(t.path().join("d/l")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1111, 2222), "the link itself, not its target");

    // The same file with fewer attributes: the others go (an attribute removed at the source).
    let mut a = Applier::open(t.path()).unwrap().with_keep(keep_all());
    f.set_xattrs(attrs[2..].to_vec());
    put(&mut a, &f, b"data").unwrap();
    assert!(a.commit().unwrap().failed.is_empty());
    assert_eq!(xattrs_of(&t.path().join("d/f")), &attrs[2..]);

    // A tree that keeps no attributes leaves them alone, and refuses an entry carrying some.
    let mut a = Applier::open(t.path()).unwrap().with_keep(Keep::rsync_a());
    let plain = Entry { extra: None, ..f.clone() };
    put(&mut a, &plain, b"data").unwrap();
    assert!(matches!(put(&mut a, &f, b"data"), Err(TreeError::Metadata { .. })));
    a.commit().unwrap();
    assert!(xattrs_of(&t.path().join("d/f")).is_empty(), "a new file has none of its own");
}

#[test]
fn a_folders_default_acl_is_not_inherited_by_a_file_whose_entry_has_none() {
    // The standby's folder has a default ACL (its own, or the primary's): a temporary created
    // in it inherits an access ACL, which a tree keeping ACLs must remove when the primary's
    // file has none.
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("d")).unwrap();
    let out = std::process::Command::new("setfacl")
        .args(["-d", "-m", "u:1234:rw"])
        .arg(t.path().join("d"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let acls = Keep { acls: true, ..Keep::rsync_a() };
    let mut a = Applier::open(t.path()).unwrap().with_keep(acls);
    put(&mut a, &file_entry("d/f", b"x", 0o640, 1), b"x").unwrap();
    a.commit().unwrap();
    let names: Vec<_> = xattrs_of(&t.path().join("d/f")).into_iter().map(|x| x.name).collect();
    assert!(!names.contains(&b"system.posix_acl_access".to_vec()), "{names:?}");
    assert_eq!(fs::metadata(t.path().join("d/f")).unwrap().mode() & 0o7777, 0o640);
    // Without the option the inherited one stays, as with rsync without -A.
    let mut a = Applier::open(t.path()).unwrap();
    put(&mut a, &file_entry("d/g", b"x", 0o640, 1), b"x").unwrap();
    a.commit().unwrap();
    let names: Vec<_> = xattrs_of(&t.path().join("d/g")).into_iter().map(|x| x.name).collect();
    assert!(names.contains(&b"system.posix_acl_access".to_vec()), "{names:?}");
}

/// `e` as a member of a link group led by `leader`.
fn member(mut e: Entry, leader: &str) -> Entry {
    e.extra = Some(Box::new(crate::sync::entry::Extra {
        hardlink: Some(crate::sync::entry::HardLink { nlink: 2, leader: Some(n(leader)), inode: (0, 0) }),
        xattrs: Vec::new(),
    }));
    e
}

#[test]
fn hard_link_members_are_linked_to_leaders_of_this_batch_or_an_earlier_one() {
    let t = tempfile::tempdir().unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    let leader = file_entry("a", b"shared", 0o640, 5);
    // The member comes first in the stream's order of names, but is linked at commit.
    a.hard_link(&member(file_entry("0/b", b"shared", 0o640, 5), "a")).unwrap();
    put(&mut a, &leader, b"shared").unwrap();
    let stats = a.commit().unwrap();
    assert!(stats.failed.is_empty(), "{:?}", stats.failed);
    assert_eq!(stats.links, 1);
    let (ma, mb) = (fs::metadata(t.path().join("a")).unwrap(), fs::metadata(t.path().join("0/b")).unwrap());
    assert_eq!((ma.ino(), ma.nlink()), (mb.ino(), 2));

    // A later batch links a new member to the leader already in place, and an existing file
    // is replaced by a link.
    fs::write(t.path().join("c"), b"was a file of its own").unwrap();
    let mut a = Applier::open(t.path()).unwrap();
    a.hard_link(&member(file_entry("c", b"shared", 0o640, 5), "a")).unwrap();
    a.hard_link(&member(file_entry("0/b", b"shared", 0o640, 5), "a")).unwrap();
    let stats = a.commit().unwrap();
    assert!(stats.failed.is_empty(), "{:?}", stats.failed);
    assert_eq!(stats.links, 1, "0/b already was a name of a: nothing to do");
    assert_eq!(fs::metadata(t.path().join("a")).unwrap().nlink(), 3);
    assert_eq!(fs::read(t.path().join("c")).unwrap(), b"shared");

    // A member whose leader here is another file (another mtime) or missing fails alone.
    let mut a = Applier::open(t.path()).unwrap();
    a.hard_link(&member(file_entry("d", b"shared", 0o640, 6), "a")).unwrap();
    a.hard_link(&member(file_entry("e", b"shared", 0o640, 5), "missing")).unwrap();
    put(&mut a, &file_entry("f", b"ok", 0o644, 1), b"ok").unwrap();
    let stats = a.commit().unwrap();
    let failed: Vec<_> = stats.failed.iter().map(|(p, _)| p.display()).collect();
    assert_eq!(failed, ["d", "e"]);
    assert!(!t.path().join("d").exists() && !t.path().join("e").exists());
    assert_eq!(fs::read(t.path().join("f")).unwrap(), b"ok");
    assert!(a.hard_link(&file_entry("g", b"", 0o644, 1)).is_err(), "a member names its leader");

    // A later entry for the same name wins over a queued link.
    a.hard_link(&member(file_entry("h", b"shared", 0o640, 5), "a")).unwrap();
    put(&mut a, &file_entry("h", b"own", 0o644, 1), b"own").unwrap();
    a.commit().unwrap();
    assert_eq!(fs::metadata(t.path().join("h")).unwrap().nlink(), 1);
    assert_eq!(listing(t.path()).iter().filter(|e| e.path.as_bytes().starts_with(TEMP_PREFIX)).count(), 0);
}

/// Allocated bytes of a file.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn holes_are_left_unwritten_and_the_content_still_checked() {
    let t = tempfile::tempdir().unwrap();
    let mb = 1usize << 20;
    let mut content = vec![0u8; 16 * mb];
    content[..4096].fill(1);
    content[8 * mb..8 * mb + 4096].fill(2);
    let e = file_entry("whole", &content, 0o644, 3);
    let mut a = Applier::open(t.path()).unwrap();
    // Content sent whole: data and holes in order.
    let mut w = a.begin_file(&e).unwrap();
    w.write_all(&content[..4096]).unwrap();
    w.hole((8 * mb - 4096) as u64).unwrap();
    w.write_all(&content[8 * mb..8 * mb + 4096]).unwrap();
    w.hole((8 * mb - 4096) as u64).unwrap();
    assert!(w.hole(1).is_err(), "a hole past the entry's size is refused");
    a.finish_file(w).unwrap();
    // Content that arrives whole, zeros and all, with the primary's hole map (a delta).
    let holes = vec![(4096u64, 8 * mb as u64), (8 * mb as u64 + 4096, 16 * mb as u64)];
    let staged = a.stage(&file_entry("mapped", &content, 0o644, 3)).unwrap().with_holes(holes);
    let mut w = staged.open().unwrap();
    for piece in content.chunks(100_000) {
        w.write_all(piece).unwrap();
    }
    a.finish_file(w).unwrap();
    // A hole that does not add up to the content fails its hash.
    let mut w = a.begin_file(&file_entry("wrong", &content, 0o644, 3)).unwrap();
    w.hole(4096).unwrap();
    w.write_all(&content[4096..]).unwrap();
    assert!(matches!(a.finish_file(w), Err(TreeError::HashMismatch { .. })));
    assert!(a.commit().unwrap().failed.is_empty());
    for name in ["whole", "mapped"] {
        let path = t.path().join(name);
        assert_eq!(fs::read(&path).unwrap(), content, "{name}");
        assert!(allocated(&path) <= 64 << 10, "{name}: {} bytes allocated", allocated(&path));
    }
    // A map whose hole holds data: the data is written all the same.
    let mut a = Applier::open(t.path()).unwrap();
    let staged =
        a.stage(&file_entry("lying", &content, 0o644, 3)).unwrap().with_holes(vec![(0, 16 * mb as u64)]);
    let mut w = staged.open().unwrap();
    w.write_all(&content).unwrap();
    a.finish_file(w).unwrap();
    a.commit().unwrap();
    assert_eq!(fs::read(t.path().join("lying")).unwrap(), content);
}
