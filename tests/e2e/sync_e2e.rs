//! Tree sync end to end between two real `tandem` processes over the peer transport: the
//! primary's daemon serves its tree `vault`, the standby pulls it with `tandem sync once`.
//! Tested only through the CLI and the files on disk, so the tests hold whatever the pass's
//! internals become. They show that:
//!
//! - every kind of edit (in place, append, truncate, renames, deletions, chmod, touch, links,
//!   empty folders and files, a 200 MB file changed in its middle) leaves the trees equal in
//!   kind, content, mode, mtime and link target, and a big file's small change travels as a delta;
//! - hostile links (absolute, escaping) are refused and reported while the rest lands, odd but
//!   legal names sync, and nothing is ever written outside the standby's tree;
//! - `kill -9` of the standby mid-file shows no partial file, and the next pass finishes and
//!   leaves no temporaries;
//! - a connection cut midway fails clearly, and the next pass does not send again what landed;
//! - a pass with no change sends nothing; the figures report the bytes on the wire.
//!
//! The tests move hundreds of megabytes, so they run one at a time.

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use crate::cluster::Node;
use crate::support::{Relay, wait_for};

const MIB: u64 = 1 << 20;
const TEMP_PREFIX: &[u8] = b".tandem-tmp.";

/// The tests here each move up to 300 MB through two processes: one at a time.
pub(crate) fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The figures `sync once --json` prints.
#[derive(Debug, serde::Deserialize)]
struct Figures {
    files_whole: u64,
    files_delta: u64,
    content_bytes: u64,
    wire_bytes: u64,
    deleted: u64,
    dirs_links: u64,
    failed: u64,
    /// Whole trees compared (else the changed paths came from the primary's journal).
    full: bool,
}

fn figures(stdout: &[u8]) -> Figures {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("`sync once --json` printed {:?}: {e}", String::from_utf8_lossy(stdout)))
}

/// A primary daemon serving `vault` and a standby configured to pull from it.
struct Pair {
    primary: Node,
    standby: Node,
    /// The primary's peer address, passed to every `sync once`.
    addr: String,
}

impl Pair {
    fn new() -> Pair {
        Pair::with_primary("")
    }

    /// A pair whose primary has `extra` in its tandem.toml.
    fn with_primary(extra: &str) -> Pair {
        // No sync.primary: the standby's daemon does not follow, each pass is a `sync once`.
        let primary = Node::new("primary", extra);
        let standby = Node::new("standby", "");
        let addr = primary.peer.clone();
        let pair = Pair { primary, standby, addr };
        fs::create_dir_all(pair.vault()).unwrap();
        pair
    }

    /// The primary's tree.
    fn vault(&self) -> PathBuf {
        self.primary.data().join("app/vault")
    }

    /// The standby's copy.
    fn copy(&self) -> PathBuf {
        self.standby.data().join("app/vault")
    }

    fn sync_once_args(primary: &str) -> Vec<&str> {
        vec!["sync", "once", "--tree", "vault", "--json", "--primary", primary]
    }

    /// One pass that must succeed.
    fn pass(&self) -> Figures {
        figures(self.standby.ok(&Self::sync_once_args(&self.addr)).as_bytes())
    }

    /// One pass through another address, whatever its outcome.
    fn pass_via(&self, primary: &str) -> Output {
        self.standby.cli(&Self::sync_once_args(primary))
    }

    /// One pass that must apply everything and leave the trees equal.
    fn synced(&self, after: &str) -> Figures {
        let f = self.pass();
        assert_eq!(f.failed, 0, "after {after}: {f:?}");
        assert_same(&self.vault(), &self.copy(), after);
        f
    }
}

/// What a tree holds at one path, read without following links.
#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    File { len: u64, blake3: String },
    Dir,
    Link(PathBuf),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    what: What,
    mode: u32,
    mtime_ns: i128,
}

pub(crate) type Listing = BTreeMap<Vec<u8>, Meta>;

/// Everything below `root` (not the root itself), keyed by relative path bytes.
pub(crate) fn listing(root: &Path) -> Listing {
    let mut out = Listing::new();
    walk(root, b"", &mut out);
    out
}

fn walk(dir: &Path, rel: &[u8], out: &mut Listing) {
    let entries = match fs::read_dir(dir) {
        // A folder removed while a test polls a tree that is being applied.
        Err(e) if !rel.is_empty() && e.kind() == std::io::ErrorKind::NotFound => return,
        listed => listed.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())),
    };
    for dirent in entries {
        let dirent = dirent.unwrap();
        let path = dirent.path();
        let mut name = rel.to_vec();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(dirent.file_name().as_bytes());
        // A following standby may be applying while a test polls: an entry that vanished
        // between the listing and the look (a temporary renamed into place) is skipped.
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let meta = match fs::symlink_metadata(&path) {
            Err(e) if gone(&e) => continue,
            found => found.unwrap(),
        };
        let ft = meta.file_type();
        let what = if ft.is_symlink() {
            What::Link(fs::read_link(&path).unwrap())
        } else if ft.is_dir() {
            What::Dir
        } else if ft.is_file() {
            let mut hasher = blake3::Hasher::new();
            match File::open(&path) {
                Err(e) if gone(&e) => continue,
                opened => hasher.update_reader(opened.unwrap()).unwrap(),
            };
            What::File { len: meta.len(), blake3: hasher.finalize().to_hex().to_string() }
        } else {
            What::Other
        };
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        out.insert(name.clone(), Meta { what, mode: meta.mode() & 0o7777, mtime_ns });
        if ft.is_dir() {
            walk(&path, &name, out);
        }
    }
}

fn show(name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(name))
}

/// Panics with every difference when the listings differ.
fn assert_listings_equal(primary: &Listing, standby: &Listing, after: &str) {
    if primary == standby {
        return;
    }
    let mut lines = Vec::new();
    for (name, p) in primary {
        match standby.get(name) {
            None => lines.push(format!("only on the primary: {} {p:?}", show(name))),
            Some(s) if s != p => lines.push(format!("{}:\n  primary {p:?}\n  standby {s:?}", show(name))),
            Some(_) => {}
        }
    }
    for (name, s) in standby {
        if !primary.contains_key(name) {
            lines.push(format!("only on the standby: {} {s:?}", show(name)));
        }
    }
    panic!("trees differ after {after}:\n{}", lines.join("\n"));
}

pub(crate) fn assert_same(primary: &Path, standby: &Path, after: &str) {
    assert_listings_equal(&listing(primary), &listing(standby), after);
}

/// The applier's in-flight temporaries anywhere below `root`, with their sizes; tolerant of
/// a tree changing under it.
fn temporaries(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for dirent in entries.flatten() {
            let Ok(meta) = fs::symlink_metadata(dirent.path()) else { continue };
            if meta.is_dir() {
                dirs.push(dirent.path());
            } else if dirent.file_name().as_bytes().starts_with(TEMP_PREFIX) {
                found.push((dirent.path(), meta.len()));
            }
        }
    }
    found
}

/// Incompressible bytes, the same for the same seed.
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

/// Writes `len` incompressible bytes to `path` without holding them all in memory.
fn write_random(path: &Path, len: u64, seed: u64) {
    let mut xof = blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof();
    let mut file = File::create(path).unwrap();
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let when = UNIX_EPOCH + Duration::new(secs, nanos);
    File::open(path).unwrap().set_times(FileTimes::new().set_modified(when)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A pass after each edit; the trees compare equal path by path every time.
#[test]
fn every_kind_of_edit_leaves_the_standby_equal_to_the_primary() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let (v, copy) = (pair.vault(), pair.copy());
    fs::create_dir_all(v.join("docs/sub")).unwrap();
    fs::write(v.join("docs/a.txt"), b"alpha\n".repeat(100)).unwrap();
    fs::write(v.join("docs/b.txt"), b"bravo\n").unwrap();
    fs::write(v.join("docs/sub/c.bin"), random(100_000, 1)).unwrap();
    fs::write(v.join("notes.md"), b"# notes\n").unwrap();
    fs::write(v.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    chmod(&v.join("script.sh"), 0o755);

    let f = pair.synced("the initial copy");
    assert_eq!((f.files_whole, f.files_delta), (5, 0), "{f:?}");

    let mut a = OpenOptions::new().write(true).open(v.join("docs/a.txt")).unwrap();
    a.write_all(b"ALPHA!").unwrap();
    drop(a);
    let f = pair.synced("a modification in place");
    assert_eq!(f.files_whole + f.files_delta, 1, "{f:?}");

    OpenOptions::new().append(true).open(v.join("notes.md")).unwrap().write_all(b"- more\n").unwrap();
    let f = pair.synced("an append");
    assert_eq!(f.files_whole + f.files_delta, 1, "{f:?}");

    File::options().write(true).open(v.join("docs/sub/c.bin")).unwrap().set_len(50_000).unwrap();
    let f = pair.synced("a truncation");
    assert_eq!(f.files_whole + f.files_delta, 1, "{f:?}");
    assert_eq!(fs::metadata(copy.join("docs/sub/c.bin")).unwrap().len(), 50_000);

    fs::rename(v.join("docs/b.txt"), v.join("docs/b-renamed.txt")).unwrap();
    let f = pair.synced("a file rename");
    assert!(f.deleted >= 1 && !copy.join("docs/b.txt").exists(), "{f:?}");

    fs::rename(v.join("docs"), v.join("papers")).unwrap();
    let f = pair.synced("a folder rename");
    assert!(f.deleted >= 1 && !copy.join("docs").exists(), "{f:?}");

    fs::remove_file(v.join("notes.md")).unwrap();
    let f = pair.synced("a file deletion");
    assert_eq!(f.deleted, 1, "{f:?}");

    fs::remove_dir_all(v.join("papers/sub")).unwrap();
    let f = pair.synced("a non-empty folder's deletion");
    assert!(f.deleted >= 1 && !copy.join("papers/sub").exists(), "{f:?}");

    chmod(&v.join("script.sh"), 0o700);
    chmod(&v.join("papers"), 0o750);
    let f = pair.synced("a mode change");
    assert_eq!(fs::metadata(copy.join("script.sh")).unwrap().mode() & 0o7777, 0o700, "{f:?}");

    set_mtime(&v.join("script.sh"), 1_500_000_000, 123_456_789);
    set_mtime(&v.join("papers"), 1_400_000_000, 987_654_321);
    pair.synced("an mtime change");

    symlink("papers/a.txt", v.join("link")).unwrap();
    symlink("../script.sh", v.join("papers/up")).unwrap();
    pair.synced("new relative links");
    fs::remove_file(v.join("link")).unwrap();
    symlink("script.sh", v.join("link")).unwrap();
    pair.synced("a link's new target");
    assert_eq!(fs::read_link(copy.join("link")).unwrap(), Path::new("script.sh"));

    fs::create_dir_all(v.join("empty/deeper")).unwrap();
    fs::write(v.join("zero"), b"").unwrap();
    pair.synced("an empty folder and an empty file");
    assert_eq!(fs::metadata(copy.join("zero")).unwrap().len(), 0);

    write_random(&v.join("big.bin"), 200 * MIB, 2);
    let f = pair.synced("a 200 MB file");
    assert_eq!(f.files_whole, 1, "{f:?}");
    assert!(f.content_bytes >= 200 * MIB, "{f:?}");

    let mut big = OpenOptions::new().write(true).open(v.join("big.bin")).unwrap();
    big.seek(SeekFrom::Start(100 * MIB)).unwrap();
    big.write_all(&random(MIB as usize, 3)).unwrap();
    drop(big);
    let f = pair.synced("1 MiB changed in the middle of the 200 MB file");
    assert!(f.files_delta >= 1, "the big file travels as a delta: {f:?}");
    assert!(f.content_bytes < 8 * MIB, "about the changed MiB, not the file: {f:?}");
    assert!(f.wire_bytes < 20 * MIB, "{f:?}");
}

/// Hostile content: links out of the tree are refused and reported, the rest lands, and no
/// write goes through a link the standby holds where the primary has a folder.
#[test]
fn hostile_links_are_refused_and_nothing_is_written_outside_the_standby_tree() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let (v, copy) = (pair.vault(), pair.copy());
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("keep.txt"), b"outside, must stay as it is\n").unwrap();
    let outside_before = listing(outside.path());

    fs::create_dir_all(v.join("sub")).unwrap();
    fs::write(v.join("ok.txt"), b"fine\n").unwrap();
    fs::write(v.join("line\nbreak.txt"), b"a newline in the name\n").unwrap();
    fs::write(v.join("back\\slash.txt"), b"a backslash in the name\n").unwrap();
    fs::write(v.join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff.bin")), b"raw name bytes\n").unwrap();
    fs::create_dir_all(v.join("odd\ndir")).unwrap();
    fs::write(v.join("odd\ndir/in\\side"), b"both\n").unwrap();
    symlink("ok.txt", v.join("inside-link")).unwrap();
    symlink("../ok.txt", v.join("sub/up-link")).unwrap();
    let refused: [(&str, PathBuf); 5] = [
        ("abs-etc-link", "/etc".into()),
        ("abs-outside-link", outside.path().to_path_buf()),
        ("sub/escape-link", "../../outside".into()),
        ("climb-link", "../sibling".into()),
        ("sneaky-link", "sub/../../x".into()),
    ];
    for (name, target) in &refused {
        symlink(target, v.join(name)).unwrap();
    }
    // The primary has a real folder `evil`; the standby holds `evil` as a link to outside.
    fs::create_dir_all(v.join("evil")).unwrap();
    fs::write(v.join("evil/x"), b"must land inside the standby's tree\n").unwrap();
    fs::create_dir_all(&copy).unwrap();
    symlink(outside.path(), copy.join("evil")).unwrap();

    let out = pair.standby.cli(&Pair::sync_once_args(&pair.addr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = figures(&out.stdout);
    assert_eq!(f.failed, refused.len() as u64, "each hostile link is refused: {f:?}\n{stderr}");
    assert!(!out.status.success(), "a pass with refused entries says so in its exit code: {f:?}");
    for (name, _) in &refused {
        assert!(stderr.contains(name), "stderr names the refused link `{name}`:\n{stderr}");
    }

    assert_eq!(listing(outside.path()), outside_before, "the outside folder was touched");
    let evil = fs::symlink_metadata(copy.join("evil")).unwrap();
    assert!(evil.is_dir(), "`evil` is a real folder now, not a link: {evil:?}");
    let mut expected = listing(&v);
    for (name, _) in &refused {
        assert!(fs::symlink_metadata(copy.join(name)).is_err(), "refused link `{name}` exists");
        expected.remove(name.as_bytes());
    }
    assert_listings_equal(&expected, &listing(&copy), "a pass with hostile links");

    // Refused again, and nothing else moves.
    let out = pair.standby.cli(&Pair::sync_once_args(&pair.addr));
    let f = figures(&out.stdout);
    assert_eq!(f.failed, refused.len() as u64, "{f:?}");
    assert_eq!((f.files_whole, f.files_delta, f.deleted), (0, 0, 0), "{f:?}");
    assert_eq!(listing(outside.path()), outside_before, "the outside folder was touched");
}

/// The standby's `sync once` is killed while a 300 MB file is in its temporary file.
#[test]
fn kill_9_of_the_standby_mid_file_shows_no_partial_file_and_the_next_pass_finishes() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let (v, copy) = (pair.vault(), pair.copy());
    fs::write(v.join("huge.bin"), random(10_000, 4)).unwrap();
    fs::write(v.join("small.txt"), b"small\n").unwrap();
    pair.synced("the first copy");
    let before = listing(&copy);

    // Under 64 KiB before: the new version travels whole, through a temporary file.
    write_random(&v.join("huge.bin"), 300 * MIB, 5);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_remove("TANDEM_CONFIG")
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(pair.standby.config())
        .args(Pair::sync_once_args(&pair.addr))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let midway = wait_for(Duration::from_secs(60), || {
        if child.try_wait().unwrap().is_some() {
            return Some(None);
        }
        let temps = temporaries(&copy);
        temps.iter().any(|(_, len)| *len >= 16 * MIB).then_some(Some(temps))
    });
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let Some((Some(temps), _)) = midway else {
        panic!("never caught the pass mid-file ({output:?}): {}", String::from_utf8_lossy(&output.stderr))
    };
    assert!(!output.status.success(), "killed");

    let mut after = listing(&copy);
    after.retain(|name, _| !name.rsplit(|&b| b == b'/').next().unwrap().starts_with(TEMP_PREFIX));
    assert_listings_equal(&before, &after, "kill -9 mid-file (the old huge.bin must stay whole)");

    let f = pair.synced(&format!("the pass after kill -9 (temporaries then: {temps:?})"));
    assert_eq!(f.files_whole + f.files_delta, 1, "{f:?}");
    assert_eq!(temporaries(&copy), [], "temporaries left behind");
}

/// A standby's `sync once` caught in the middle of a 300 MiB file, then stopped (SIGSTOP): it
/// neither reads nor closes, as a host that froze or vanished behind a half-open connection.
fn a_standby_frozen_mid_pass(pair: &Pair) -> std::process::Child {
    let copy = pair.copy();
    write_random(&pair.vault().join("huge.bin"), 300 * MIB, 21);
    let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_remove("TANDEM_CONFIG")
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(pair.standby.config())
        .args(Pair::sync_once_args(&pair.addr))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), || {
        temporaries(&copy).iter().any(|(_, len)| *len >= 4 * MIB).then_some(())
    })
    .expect("the pass never reached the big file");
    assert!(Command::new("kill").args(["-STOP", &child.id().to_string()]).status().unwrap().success());
    child
}

/// SIGTERM stops a primary in the middle of serving a pass, even to a standby that stopped
/// reading: the pass is dropped where it stands. (The checker found primaries that never
/// exited: the pass was not told of the shutdown, and waited on the standby for ever.)
#[test]
fn sigterm_stops_a_primary_serving_a_standby_that_stopped_reading() {
    let _serial = one_at_a_time();
    let mut pair = Pair::new();
    let mut standby = a_standby_frozen_mid_pass(&pair);
    pair.primary.signal("-TERM");
    let stopped = pair.primary.wait_exit(Duration::from_secs(15));
    standby.kill().unwrap();
    standby.wait().unwrap();
    let status =
        stopped.unwrap_or_else(|| panic!("the primary did not stop on SIGTERM:\n{}", pair.primary.log()));
    assert!(status.success(), "{status:?}\n{}", pair.primary.log());
    assert!(pair.primary.log().contains("the pass in progress is dropped"), "{}", pair.primary.log());
}

/// A standby that stops taking what the primary sends, mid-pass, costs the primary that pass
/// only: after `sync.idle_timeout_ms` the pass is dropped as dead and said so in the log.
#[test]
fn a_standby_silent_mid_pass_is_dropped_after_the_idle_limit() {
    let _serial = one_at_a_time();
    let pair = Pair::with_primary("[sync]\nidle_timeout_ms = 2000\n");
    let mut standby = a_standby_frozen_mid_pass(&pair);
    let failed = wait_for(Duration::from_secs(30), || {
        pair.primary.log().lines().find(|l| l.contains("sync pass failed")).map(str::to_string)
    });
    standby.kill().unwrap();
    standby.wait().unwrap();
    let (line, _) = failed.unwrap_or_else(|| panic!("the pass was never dropped:\n{}", pair.primary.log()));
    assert!(line.contains("took nothing for 2s"), "{line}");
    // The primary still serves: the next pass copies the tree.
    pair.synced("the pass after the silent standby");
}

/// The relay drops the connection after 50 MiB of a 121 MiB tree; the next pass goes through.
#[test]
fn a_cut_connection_fails_clearly_and_the_next_pass_sends_only_what_is_missing() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let (v, copy) = (pair.vault(), pair.copy());
    // Path order sends big/ first: six 20 MiB files, then 300 small ones.
    fs::create_dir_all(v.join("big")).unwrap();
    fs::create_dir_all(v.join("small")).unwrap();
    for i in 0..6 {
        write_random(&v.join(format!("big/f{i}")), 20 * MIB, 10 + i);
    }
    for i in 0..300 {
        fs::write(v.join(format!("small/s{i:03}")), random(4096, 100 + i)).unwrap();
    }
    let total = 120 * MIB + 300 * 4096;

    let cut = Relay::start(&pair.primary.peer, Some(50 * MIB));
    let out = pair.pass_via(&cut.addr);
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert_eq!(cut.down.load(Ordering::SeqCst), 50 * MIB, "the relay cut after 50 MiB:\n{stderr}");
    assert!(!out.status.success(), "a cut pass fails: {out:?}");
    assert!(
        ["closed", "lost", "reset", "broken pipe", "eof"].iter().any(|w| stderr.contains(w)),
        "stderr says the connection was lost:\n{stderr}"
    );
    // What is visible under a real name is whole.
    let primary_files = listing(&v);
    for (name, meta) in listing(&copy) {
        if matches!(meta.what, What::File { .. })
            && !name.rsplit(|&b| b == b'/').next().unwrap().starts_with(TEMP_PREFIX)
        {
            assert_eq!(
                primary_files.get(&name).map(|m| &m.what),
                Some(&meta.what),
                "{} is partial",
                show(&name)
            );
        }
    }

    let healthy = Relay::start(&pair.primary.peer, None);
    let out = pair.pass_via(&healthy.addr);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f = figures(&out.stdout);
    assert_eq!(f.failed, 0, "{f:?}");
    assert_same(&v, &copy, "the pass after the cut");
    assert_eq!(temporaries(&copy), [], "temporaries left behind");
    // 50 MiB reached the standby before the cut: at least big/f0 and big/f1 whole.
    assert!(
        f.content_bytes <= total - 20 * MIB,
        "files that arrived whole before the cut are sent again: {} of {total} content bytes: {f:?}",
        f.content_bytes
    );
}

/// Renaming a received file into place adds a directory entry to its folder, which moves the
/// folder's mtime on the standby; the primary's folder did not change, so nothing re-sends it.
#[test]

fn a_file_replaced_in_an_unchanged_folder_keeps_the_folders_mtime() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let v = pair.vault();
    fs::create_dir_all(v.join("docs")).unwrap();
    fs::write(v.join("docs/a.txt"), b"first version\n").unwrap();
    pair.synced("the first copy");
    let folder_mtime = || fs::symlink_metadata(v.join("docs")).unwrap().modified().unwrap();
    let before = folder_mtime();
    fs::write(v.join("docs/a.txt"), b"other version\n").unwrap();
    assert_eq!(folder_mtime(), before, "a rewrite in place leaves the primary's folder alone");
    pair.synced("a rewrite in place");
    let f = pair.pass();
    assert_eq!((f.files_whole, f.dirs_links), (0, 0), "the next pass has nothing to send: {f:?}");
}

#[test]
fn a_pass_with_no_change_sends_nothing() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let v = pair.vault();
    fs::create_dir_all(v.join("a/b")).unwrap();
    fs::create_dir_all(v.join("empty")).unwrap();
    fs::write(v.join("a/b/data.bin"), random(300_000, 6)).unwrap();
    fs::write(v.join("a/text"), b"text\n".repeat(1000)).unwrap();
    fs::write(v.join("zero"), b"").unwrap();
    symlink("a/text", v.join("link")).unwrap();
    set_mtime(&v.join("a"), 1_300_000_000, 5);
    let f = pair.synced("the first copy");
    assert_eq!((f.files_whole, f.dirs_links), (3, 4), "{f:?}");

    let f = pair.synced("a pass with no change");
    assert_eq!(
        (f.files_whole, f.files_delta, f.deleted, f.dirs_links, f.content_bytes),
        (0, 0, 0, 0, 0),
        "{f:?}"
    );
    assert!(f.wire_bytes < 1024, "{f:?}");
}

/// `wire_bytes` is what crossed the wire after compression: at least the incompressible
/// content, less than the content when part of it compresses.
#[test]
fn sync_once_reports_the_bytes_on_the_wire() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let v = pair.vault();
    fs::write(v.join("random.bin"), random(4 * MIB as usize, 7)).unwrap();
    let text = b"a line that repeats\n".repeat(200_000);
    fs::write(v.join("text.log"), &text).unwrap();
    let f = pair.synced("the first copy");
    assert_eq!(f.content_bytes, 4 * MIB + text.len() as u64, "{f:?}");
    assert!(f.wire_bytes >= 4 * MIB, "the random file cannot shrink: {f:?}");
    assert!(f.wire_bytes < 6 * MIB, "the text compresses: {f:?}");
}

/// Regression (review): a pass from the primary's journal that breaks off leaves the standby
/// between old and new; the next pass must not trust the old picture (it compares whole
/// trees), or a file that landed in the broken pass and was deleted since would stay.
#[test]
fn a_broken_incremental_pass_is_followed_by_a_full_comparison() {
    let _serial = one_at_a_time();
    let pair = Pair::new();
    let (v, copy) = (pair.vault(), pair.copy());
    fs::write(v.join("seed"), b"first\n").unwrap();
    pair.synced("the first pass");
    // The primary watches the tree once its folder exists (it retries every few seconds):
    // wait until passes come from its journal.
    let mut n = 0;
    let journaled = wait_for(Duration::from_secs(20), || {
        n += 1;
        fs::write(v.join("seed"), format!("{n}\n")).unwrap();
        Some(()).filter(|()| !pair.synced("a small change").full)
    });
    assert!(journaled.is_some(), "passes never came from the primary's journal");
    for i in 0..4 {
        write_random(&v.join(format!("b{i}")), 20 * MIB, 40 + i);
    }
    let cut = Relay::start(&pair.primary.peer, Some(50 * MIB));
    assert!(!pair.pass_via(&cut.addr).status.success(), "the cut pass fails");
    let landed: Vec<_> = (0..4).map(|i| format!("b{i}")).filter(|n| copy.join(n).exists()).collect();
    assert!(!landed.is_empty(), "something landed before the cut");
    fs::remove_file(v.join(&landed[0])).unwrap();
    let f = pair.synced("the pass after the broken one");
    assert!(f.full, "the pass after a broken one compares whole trees: {f:?}");
    assert!(!copy.join(&landed[0]).exists(), "{} was deleted on the primary", landed[0]);
}
