//! File metadata through two real `tandem` processes (the primary's daemon serves, the standby
//! pulls with `tandem sync once`), checked on the files themselves:
//!
//! - owners and groups arrive as numeric ids (the standby runs as root, like production);
//! - a hard-link pair arrives as one inode with link count 2 and its content once; a new link
//!   to an existing file, from the primary's journal, costs no content; a group the path
//!   filter splits arrives with its kept members only;
//! - extended attributes and an ACL round-trip (and are removed) on a tree that keeps them,
//!   and are absent on one that does not;
//! - a sparse file stays sparse (allocated blocks compared), sent whole and as a delta;
//! - sockets, FIFOs and device nodes are skipped and counted in the pass, `sync status` and
//!   its JSON.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tandem::sync::entry::Xattr;
use tandem::sync::meta::{Keep, read_xattrs};

use crate::cluster::Node;
use crate::support::wait_for;
use crate::sync_e2e::{assert_same, one_at_a_time};

const MIB: u64 = 1 << 20;

/// The trees both sides configure: `vault` keeps attributes and ACLs, `plain` does not.
const TREES: &str = "[sync]\n[sync.trees]\nvault = \"vault\"\nplain = \"plain\"\n\
                     [sync.metadata.vault]\nxattrs = true\nacls = true\n";

/// A primary serving `vault` and `plain`, and a standby pulling with `sync once`.
struct Pair {
    primary: Node,
    standby: Node,
}

impl Pair {
    fn new() -> Pair {
        let pair = Pair { primary: Node::new("primary", TREES), standby: Node::new("standby", TREES) };
        for tree in ["vault", "plain"] {
            fs::create_dir_all(pair.tree(tree)).unwrap();
        }
        pair
    }

    fn tree(&self, name: &str) -> PathBuf {
        self.primary.data().join("app").join(name)
    }

    fn copy(&self, name: &str) -> PathBuf {
        self.standby.data().join("app").join(name)
    }

    /// One pass of `tree` that must succeed, as `sync once --json` reports it.
    fn pass(&self, tree: &str) -> Value {
        let out =
            self.standby.ok(&["sync", "once", "--tree", tree, "--json", "--primary", &self.primary.peer]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
        assert_eq!(v["failed"], 0, "{v}");
        v
    }
}

/// False (and a note) when not root; under CI=true, which runs as root, a failure.
fn root() -> bool {
    if tandem::sync::meta::is_root() {
        return true;
    }
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "this test needs root, and CI runs as root");
    eprintln!("skipped: needs root");
    false
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn ids(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

fn xattrs(path: &Path) -> Vec<Xattr> {
    let all = Keep { owner: true, xattrs: true, acls: true, privileged: true };
    read_xattrs(path, &all).unwrap()
}

fn names(attrs: &[Xattr]) -> Vec<String> {
    attrs.iter().map(|x| String::from_utf8_lossy(&x.name).into_owned()).collect()
}

fn run(cmd: &str, args: &[&str], path: &Path) {
    let out = std::process::Command::new(cmd).args(args).arg(path).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
}

#[test]
fn owners_and_groups_arrive_with_their_numeric_ids() {
    if !root() {
        return;
    }
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let (v, copy) = (pair.tree("plain"), pair.copy("plain"));
    fs::create_dir_all(v.join("home")).unwrap();
    fs::write(v.join("home/app.db"), b"the application's own data\n").unwrap();
    fs::write(v.join("home/nobody.txt"), b"n\n").unwrap();
    fs::write(v.join("root.txt"), b"r\n").unwrap();
    std::os::unix::fs::symlink("app.db", v.join("home/link")).unwrap();
    chown(&v.join("home"), 1234, 5678);
    chown(&v.join("home/app.db"), 1234, 5678);
    chown(&v.join("home/nobody.txt"), 65534, 65534);
    chown(&v.join("home/link"), 4321, 8765);
    // setuid survives the chown (chown clears it; the mode is set after).
    fs::set_permissions(v.join("home/app.db"), fs::Permissions::from_mode(0o4750)).unwrap();
    pair.pass("plain");
    assert_same(&v, &copy, "the first copy");
    for (name, want) in [
        ("home", (1234, 5678)),
        ("home/app.db", (1234, 5678)),
        ("home/nobody.txt", (65534, 65534)),
        ("root.txt", (0, 0)),
    ] {
        assert_eq!(ids(&copy.join(name)), want, "{name}");
    }
    assert_eq!(ids(&copy.join("home/link")), (4321, 8765), "the link's own owner");
    assert_eq!(fs::metadata(copy.join("home/app.db")).unwrap().mode() & 0o7777, 0o4750);

    // A change of group alone is a change of metadata only: no content goes; nothing else moves.
    chown(&v.join("home/app.db"), 1234, 9999);
    let f = pair.pass("plain");
    assert_eq!(ids(&copy.join("home/app.db")), (1234, 9999), "{f}");
    assert_eq!((f["meta_only"].as_u64(), f["content_bytes"].as_u64()), (Some(1), Some(0)), "{f}");
    let f = pair.pass("plain");
    assert_eq!(
        (f["files_whole"].as_u64(), f["dirs_links"].as_u64()),
        (Some(0), Some(0)),
        "then nothing: {f}"
    );
}

#[test]
fn a_hard_link_pair_arrives_as_one_inode_and_its_content_once() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let (v, copy) = (pair.tree("plain"), pair.copy("plain"));
    fs::create_dir_all(v.join("d")).unwrap();
    let content = vec![7u8; 300_000];
    fs::write(v.join("a.bin"), &content).unwrap();
    fs::hard_link(v.join("a.bin"), v.join("d/b.bin")).unwrap();
    // The path filter leaves `*.tmp` out: this group's kept member arrives on its own.
    fs::write(v.join("c"), b"split by the filter").unwrap();
    fs::hard_link(v.join("c"), v.join("c.tmp")).unwrap();
    let f = pair.pass("plain");
    let (a, b) = (fs::metadata(copy.join("a.bin")).unwrap(), fs::metadata(copy.join("d/b.bin")).unwrap());
    assert_eq!((a.ino(), a.nlink(), b.nlink()), (b.ino(), 2, 2), "one inode, two names: {f}");
    assert_eq!(fs::read(copy.join("d/b.bin")).unwrap(), content);
    assert_eq!(f["hard_links"], 1, "{f}");
    assert_eq!(f["content_bytes"].as_u64().unwrap(), content.len() as u64 + 19, "content sent once: {f}");
    assert_eq!(fs::metadata(copy.join("c")).unwrap().nlink(), 1);
    assert!(!copy.join("c.tmp").exists());

    let f = pair.pass("plain");
    assert_eq!(
        (f["files_whole"].as_u64(), f["hard_links"].as_u64()),
        (Some(0), Some(0)),
        "nothing changed: {f}"
    );

    // Passes from the primary's journal, once it watches the tree: a new name for an existing
    // file is a link, no content.
    let mut n = 0;
    let journaled = wait_for(Duration::from_secs(20), || {
        n += 1;
        fs::write(v.join("seed"), format!("{n}\n")).unwrap();
        Some(()).filter(|()| pair.pass("plain")["full"] == false)
    });
    assert!(journaled.is_some(), "passes never came from the primary's journal");
    fs::hard_link(v.join("a.bin"), v.join("e.bin")).unwrap();
    let f = pair.pass("plain");
    assert_eq!(f["full"], false, "{f}");
    assert_eq!((f["hard_links"].as_u64(), f["content_bytes"].as_u64()), (Some(1), Some(0)), "{f}");
    assert_eq!(
        fs::metadata(copy.join("e.bin")).unwrap().ino(),
        fs::metadata(copy.join("a.bin")).unwrap().ino()
    );
    assert_eq!(fs::metadata(copy.join("a.bin")).unwrap().nlink(), 3);

    // Written in place through one name, changed under all three; then a save that replaces
    // one name with a file of its own leaves it apart.
    fs::write(v.join("d/b.bin"), b"changed through one name").unwrap();
    let f = pair.pass("plain");
    assert_eq!(fs::read(copy.join("e.bin")).unwrap(), b"changed through one name", "{f}");
    assert_eq!(fs::metadata(copy.join("a.bin")).unwrap().nlink(), 3, "{f}");
    fs::write(v.join("e.new"), b"a copy of its own").unwrap();
    fs::rename(v.join("e.new"), v.join("e.bin")).unwrap();
    pair.pass("plain");
    assert_eq!(fs::metadata(copy.join("a.bin")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(copy.join("e.bin")).unwrap().nlink(), 1);
    let full = pair.standby.ok(&[
        "sync",
        "once",
        "--tree",
        "plain",
        "--full",
        "--json",
        "--primary",
        &pair.primary.peer,
    ]);
    let full: Value = serde_json::from_str(&full).unwrap();
    assert_eq!((full["files_whole"].as_u64(), full["hard_links"].as_u64()), (Some(0), Some(0)), "{full}");
}

#[test]
fn attributes_and_an_acl_round_trip_on_a_tree_that_keeps_them_and_only_there() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    for tree in ["vault", "plain"] {
        let v = pair.tree(tree);
        fs::create_dir_all(v.join("shared")).unwrap();
        fs::write(v.join("shared/doc.txt"), b"doc\n").unwrap();
        fs::write(v.join("big.bin"), vec![1u8; 500_000]).unwrap();
        run("setfattr", &["-n", "user.origin", "-v", "primary"], &v.join("shared/doc.txt"));
        run("setfattr", &["-n", "user.empty"], &v.join("shared/doc.txt"));
        run("setfattr", &["-n", "user.big", "-v", "0x0102030405"], &v.join("big.bin"));
        run("setfacl", &["-m", "u:1234:rw"], &v.join("shared/doc.txt"));
        run("setfacl", &["-d", "-m", "g:5678:rx"], &v.join("shared"));
    }
    pair.pass("vault");
    pair.pass("plain");
    let (v, copy) = (pair.tree("vault"), pair.copy("vault"));
    for name in ["shared", "shared/doc.txt", "big.bin"] {
        assert!(!xattrs(&v.join(name)).is_empty(), "{name} has attributes on the primary");
        assert_eq!(xattrs(&copy.join(name)), xattrs(&v.join(name)), "{name}");
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&copy.join(name)), mode(&v.join(name)), "{name}: the mode agrees with the ACL");
    }
    assert_eq!(
        names(&xattrs(&copy.join("shared/doc.txt"))),
        ["system.posix_acl_access", "user.empty", "user.origin"]
    );
    let plain = pair.copy("plain");
    for name in ["shared", "shared/doc.txt", "big.bin"] {
        assert_eq!(names(&xattrs(&plain.join(name))), Vec::<String>::new(), "plain/{name}: not kept");
    }
    let f = pair.pass("vault");
    assert_eq!((f["files_whole"].as_u64(), f["files_delta"].as_u64()), (Some(0), Some(0)), "no change: {f}");

    // Removed and changed at the primary: the same at the standby.
    run("setfattr", &["-x", "user.origin"], &v.join("shared/doc.txt"));
    run("setfacl", &["-b"], &v.join("shared/doc.txt"));
    run("setfattr", &["-n", "user.big", "-v", "0x09"], &v.join("big.bin"));
    run("setfacl", &["-k"], &v.join("shared"));
    let f = pair.pass("vault");
    assert_eq!(names(&xattrs(&copy.join("shared/doc.txt"))), ["user.empty"], "{f}");
    assert_eq!(xattrs(&copy.join("big.bin"))[0].value, [9]);
    assert_eq!(names(&xattrs(&copy.join("shared"))), Vec::<String>::new());
    assert_same(&v, &copy, "attribute changes");
}

/// Allocated bytes.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_sparse_file_stays_sparse_sent_whole_and_as_a_delta() {
    use std::io::{Seek, SeekFrom, Write};
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let (v, copy) = (pair.tree("plain"), pair.copy("plain"));
    let data = |seed: u8| -> Vec<u8> {
        (0..MIB).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
    };
    let mut f = fs::File::create(v.join("disk.img")).unwrap();
    f.write_all(&data(1)).unwrap();
    f.seek(SeekFrom::Start(32 * MIB)).unwrap();
    f.write_all(&data(2)).unwrap();
    f.set_len(64 * MIB).unwrap();
    drop(f);
    // A small one (small files usually travel packed, as data): 4 KiB at its end.
    let mut f = fs::File::create(v.join("small.img")).unwrap();
    f.seek(SeekFrom::Start(196 * 1024)).unwrap();
    f.write_all(&[5u8; 4096]).unwrap();
    drop(f);
    let primary_blocks = allocated(&v.join("disk.img"));
    assert!(primary_blocks <= 3 * MIB, "the primary's file is sparse: {primary_blocks}");
    let f = pair.pass("plain");
    assert_same(&v, &copy, "a sparse file");
    let standby_blocks = allocated(&copy.join("disk.img"));
    assert!(
        standby_blocks <= primary_blocks + 64 * 1024,
        "standby {standby_blocks} vs primary {primary_blocks}"
    );
    assert_eq!(f["content_bytes"].as_u64(), Some(2 * MIB + 4096), "holes are not sent: {f}");
    assert!(allocated(&copy.join("small.img")) <= allocated(&v.join("small.img")), "the small one too");
    assert!(f["wire_bytes"].as_u64().unwrap() < 3 * MIB, "{f}");

    // Changed in its second data region: a delta, and still sparse.
    let mut f = fs::OpenOptions::new().write(true).open(v.join("disk.img")).unwrap();
    f.seek(SeekFrom::Start(32 * MIB + 4096)).unwrap();
    f.write_all(&[0xab; 4096]).unwrap();
    drop(f);
    let f = pair.pass("plain");
    assert_eq!(f["files_delta"], 1, "{f}");
    assert_same(&v, &copy, "a change in a sparse file");
    let standby_blocks = allocated(&copy.join("disk.img"));
    assert!(
        standby_blocks <= allocated(&v.join("disk.img")) + 64 * 1024,
        "after the delta: {standby_blocks}"
    );
}

#[test]
fn sockets_fifos_and_devices_are_skipped_and_counted() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let (v, copy) = (pair.tree("plain"), pair.copy("plain"));
    fs::create_dir_all(v.join("run")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(v.join("run/app.sock")).unwrap();
    run("mkfifo", &[], &v.join("run/pipe"));
    fs::write(v.join("run/pid"), b"42\n").unwrap();
    // A device node needs root to make (CI runs as root).
    let specials = if root() {
        let out = std::process::Command::new("mknod")
            .arg(v.join("run/null"))
            .args(["c", "1", "3"])
            .output()
            .unwrap();
        assert!(out.status.success(), "mknod: {out:?}");
        3
    } else {
        2
    };
    let f = pair.pass("plain");
    assert_eq!(f["skipped_special"], specials, "{f}");
    assert!(copy.join("run/pid").exists());
    assert!(
        fs::symlink_metadata(copy.join("run/app.sock")).is_err()
            && fs::symlink_metadata(copy.join("run/pipe")).is_err()
    );
    let out = pair.standby.ok(&["sync", "status", "--json"]);
    let all: Value = serde_json::from_str(&out).unwrap();
    let plain = all.as_array().unwrap().iter().find(|t| t["tree"] == "plain").unwrap();
    assert_eq!(plain["special_skipped"], specials, "{plain}");
    let text = pair.standby.ok(&["sync", "status"]);
    let header = text.lines().next().unwrap();
    let row = text.lines().find(|l| l.starts_with("plain")).unwrap();
    assert!(header.contains("special"), "{text}");
    let column = header.find("special").unwrap();
    let shown = specials.to_string();
    assert_eq!(row[..column + "special".len()].split_whitespace().last(), Some(shown.as_str()), "{text}");
    let out = pair.standby.ok(&["sync", "once", "--tree", "plain", "--primary", &pair.primary.peer]);
    assert!(out.contains(&format!("{specials} special skipped")), "{out}");
}
