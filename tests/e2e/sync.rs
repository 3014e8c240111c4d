//! One sync pass at a time between two trees over a real peer connection on loopback: the
//! first pass copies everything (files, an empty file, folders, an empty folder, a symlink,
//! modes and mtimes); after edits, a pass sends the big file as a delta and the rest whole,
//! deletes what went away, and leaves trees equal; a pass with no change sends nothing.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use tandem::peer::{ClusterSecret, PeerConnection, PeerIdentity};
use tandem::sync::entry::Entry;
use tandem::sync::index::{Index, refresh};
use tandem::sync::pass::{Filter, PassStats, PullState, ServeTree, pull_pass, serve_pass};
use tandem::sync::protocol::{SyncMsg, decode};
use tandem::sync::scan::{Verdict, scan};
use tokio::net::TcpListener;

const MAX_FRAME: u64 = 64 << 20;

/// Everything a tree holds, with content hashes, for comparing two trees.
fn listing(root: &Path) -> Vec<Entry> {
    let scanned = scan(root, &mut |b| vec![Verdict::Keep; b.len()]).unwrap();
    let (entries, _) = refresh(&Index::new(), scanned.entries, root).unwrap();
    entries
}

/// Runs one pass: the primary serves `primary`, the standby pulls into `standby`.
async fn pass(primary: &Path, standby: &Path, state: &Path) -> (PassStats, PassStats) {
    let secret = ClusterSecret::from_text("sync pass test secret 0123456789").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let root = primary.to_path_buf();
    let server_secret = secret.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let me = PeerIdentity::new("primary");
        let mut conn = PeerConnection::accept(stream, &server_secret, &me, MAX_FRAME).await.unwrap();
        let open = decode(conn.read_frame().await.unwrap()).unwrap();
        let SyncMsg::Open { tree, since, .. } = open else { panic!("{open:?}") };
        assert_eq!(tree, "vault");
        let filter: Filter = Box::new(|b: &[Entry]| vec![Verdict::Keep; b.len()]);
        let tree = ServeTree {
            root,
            filter,
            journal: None,
            workers: 2,
            keep: Vec::new(),
            meta: Default::default(),
            standby_root: tandem::sync::meta::is_root(),
        };
        serve_pass(&mut conn, since, false, tree).await.unwrap().0
    });
    let me = PeerIdentity::new("standby");
    let mut conn = PeerConnection::connect(addr, &secret, &me, MAX_FRAME).await.unwrap();
    let pull = PullState::new(state, "vault");
    let pulled =
        pull_pass(&mut conn, "vault", standby, &pull, Default::default(), Default::default()).await.unwrap();
    (server.await.unwrap(), pulled)
}

/// What a pass moved, without the protocol's own bytes.
fn nothing(s: &PassStats) -> (u64, u64, u64, u64, u64, u64) {
    (s.files_whole, s.files_delta, s.content_bytes, s.deleted, s.dirs_links, s.failed)
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_copy_everything_then_only_what_changed_then_nothing() {
    let (primary, standby, state) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = primary.path();
    std::fs::create_dir_all(p.join("a/b")).unwrap();
    std::fs::create_dir_all(p.join("empty")).unwrap();
    std::fs::write(p.join("a/small.txt"), b"hello\n").unwrap();
    std::fs::write(p.join("a/b/zero"), b"").unwrap();
    std::fs::write(p.join("big.bin"), pseudo_random(3 << 20, 7)).unwrap();
    std::fs::write(p.join("a/text.log"), b"a line that repeats\n".repeat(20_000)).unwrap();
    std::fs::set_permissions(p.join("a/small.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    symlink("b/zero", p.join("a/link")).unwrap();

    let (served, pulled) = pass(p, standby.path(), state.path()).await;
    assert_eq!(listing(p), listing(standby.path()), "trees differ after the first pass");
    assert_eq!(served.files_whole, 4, "{served:?}");
    assert_eq!(pulled.failed, 0, "{pulled:?}");
    // The repetitive log went compressed: far fewer bytes on the wire than in the file.
    assert!(served.wire_bytes < (3 << 20) + 200_000, "{served:?}");

    // Edits: 4 KiB inside the big file, an append, a deletion, a rename, a mode change.
    let mut big = std::fs::read(p.join("big.bin")).unwrap();
    big[1_000_000..1_004_096].copy_from_slice(&pseudo_random(4096, 9));
    std::fs::write(p.join("big.bin"), &big).unwrap();
    std::fs::write(p.join("a/small.txt"), b"hello\nagain\n").unwrap();
    std::fs::remove_file(p.join("a/b/zero")).unwrap();
    std::fs::remove_file(p.join("a/link")).unwrap();
    std::fs::rename(p.join("a/text.log"), p.join("empty/moved.log")).unwrap();
    std::fs::set_permissions(p.join("big.bin"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let (served, pulled) = pass(p, standby.path(), state.path()).await;
    assert_eq!(listing(p), listing(standby.path()), "trees differ after the edits");
    assert_eq!(served.files_delta, 1, "the big file travels as a delta: {served:?}");
    assert!(served.wire_bytes < 200_000, "a 4 KiB edit of a 3 MiB file costs little: {served:?}");
    assert!(served.deleted >= 2, "{served:?}");
    assert_eq!(pulled.failed, 0);

    let (served, _) = pass(p, standby.path(), state.path()).await;
    assert_eq!(nothing(&served), nothing(&PassStats::default()), "nothing changed, nothing sent");
}

/// A file renamed or moved on the primary arrives as a rename of the standby's own copy: no
/// content travels (rsync sends it again). A standby copy that changed behind tandem's back is
/// not taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_cost_no_content_and_a_changed_copy_is_not_taken() {
    let (primary, standby, state) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = primary.path();
    std::fs::create_dir_all(p.join("docs/old")).unwrap();
    std::fs::write(p.join("docs/old/report.bin"), pseudo_random(2 << 20, 3)).unwrap();
    std::fs::write(p.join("docs/old/note.txt"), b"a note\n").unwrap();
    std::fs::write(p.join("big.bin"), pseudo_random(1 << 20, 4)).unwrap();
    std::fs::write(p.join("kept.txt"), b"kept\n").unwrap();
    pass(p, standby.path(), state.path()).await;

    // A folder moved with its files, a file renamed into another folder with a new mode.
    std::fs::rename(p.join("docs/old"), p.join("archive")).unwrap();
    std::fs::create_dir_all(p.join("moved")).unwrap();
    std::fs::rename(p.join("big.bin"), p.join("moved/big-renamed.bin")).unwrap();
    std::fs::set_permissions(p.join("moved/big-renamed.bin"), std::fs::Permissions::from_mode(0o600))
        .unwrap();
    let (served, pulled) = pass(p, standby.path(), state.path()).await;
    assert_eq!(listing(p), listing(standby.path()), "trees differ after the renames");
    assert_eq!((served.moved, pulled.moved), (3, 3), "{served:?}");
    assert_eq!(served.content_bytes, 0, "a rename sent content: {served:?}");
    assert_eq!((served.files_whole, served.files_delta, pulled.failed), (0, 0, 0), "{served:?}");

    // The standby's copy changes behind tandem's back: a full pass sees it in the standby's
    // index and sends the content instead (the applier's own check is a unit test).
    std::fs::write(standby.path().join("kept.txt"), b"KEPT\n").unwrap();
    std::fs::rename(p.join("kept.txt"), p.join("kept-renamed.txt")).unwrap();
    let (served, pulled) = pass(p, standby.path(), state.path()).await;
    assert_eq!((served.moved, served.files_whole, pulled.failed), (0, 1, 0), "{served:?}");
    assert_eq!(listing(p), listing(standby.path()));
}

/// Two real hosts: the primary's daemon serves, the standby pulls with `tandem sync once`;
/// the built-in path filter keeps temporaries out.
#[test]
fn sync_once_pulls_a_tree_from_the_primary_daemon_through_the_path_filter() {
    use crate::cluster::Node;
    let primary = Node::new("primary", "");
    let standby = Node::new("standby", "");
    let vault = primary.data().join("app/vault");
    std::fs::create_dir_all(vault.join("docs")).unwrap();
    std::fs::write(vault.join("docs/report.pdf"), pseudo_random(200_000, 3)).unwrap();
    std::fs::write(vault.join("docs/draft.tmp"), b"half written").unwrap();
    let out = standby.ok(&["sync", "once", "--tree", "vault", "--primary", &primary.peer]);
    assert!(out.contains("vault: 1 whole"), "{out}");
    let copy = standby.data().join("app/vault");
    assert_eq!(
        std::fs::read(copy.join("docs/report.pdf")).unwrap(),
        std::fs::read(vault.join("docs/report.pdf")).unwrap()
    );
    assert!(!copy.join("docs/draft.tmp").exists(), "the path filter skips temporaries");
    let out = standby.ok(&["sync", "once", "--tree", "vault", "--primary", &primary.peer]);
    assert!(out.contains("vault: 0 whole, 0 by delta, 0 renamed, 0 deleted"), "{out}");
    let out = standby.cli(&["sync", "once", "--tree", "nope", "--primary", &primary.peer]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no tree `nope`"));
}

/// A full pass of an outer tree leaves the roots of the trees nested in it alone at the
/// standby, even where the primary has no such folder yet (their own passes own them).
/// Regression: the standby's follower for etc/ssl/certs made its folder, and the etc_ssl pass
/// deleted it because the primary had none.
#[test]
fn an_outer_tree_never_deletes_a_nested_trees_root() {
    use crate::cluster::Node;
    let primary = Node::new("primary", "");
    let standby = Node::new("standby", "");
    std::fs::create_dir_all(primary.data().join("app/etc")).unwrap();
    std::fs::write(primary.data().join("app/etc/app.conf"), b"x = 1\n").unwrap();
    let nested = standby.data().join("app/etc/ssl/certs");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(nested.join("site.pem"), b"cert").unwrap();
    std::fs::write(standby.data().join("app/etc/stale.conf"), b"gone on the primary").unwrap();
    let out = standby.ok(&["sync", "once", "--tree", "etc", "--full", "--primary", &primary.peer]);
    assert!(out.contains("1 deleted"), "the outer tree's own stale file goes: {out}");
    assert!(nested.join("site.pem").exists(), "the nested tree's root and content stay");
    assert!(!standby.data().join("app/etc/stale.conf").exists());
}

/// Regression: a folder whose files span two apply batches (more than 2,000 files) kept the
/// mtime of its last write, so every later pass sent it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_spanning_apply_batches_keep_their_times() {
    let (primary, standby, state) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = primary.path().join("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..2_100 {
        std::fs::write(dir.join(format!("f{i:05}")), format!("{i}\n")).unwrap();
    }
    let (served, _) = pass(primary.path(), standby.path(), state.path()).await;
    assert_eq!(served.files_whole, 2_100);
    assert_eq!(listing(primary.path()), listing(standby.path()));
    let (served, _) = pass(primary.path(), standby.path(), state.path()).await;
    assert_eq!(nothing(&served), nothing(&PassStats::default()), "a pass with no change sends nothing");
}
