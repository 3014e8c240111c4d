//! What the primary cannot read is said, never silently skipped, through two real `tandem`
//! processes: the primary's daemon runs as root without the capabilities that override file
//! permissions, so a file or folder of mode 000 is unreadable to it as to any user.
//!
//! - the pass that meets them reports each path with the reason, `sync once` exits non-zero
//!   (as rsync's code 23), and the standby keeps the copies it had (nothing deleted);
//! - `sync status` (text and JSON) and the standby's status name them;
//! - a later pass from the primary's journal, about something else, still reports them (the
//!   primary tries them again), and once they are readable they arrive and the report clears;
//! - an unreadable folder does not stop the primary watching the rest of the tree, and is
//!   watched once its permissions allow.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Node;
use crate::support::wait_for;
use crate::sync_e2e::one_at_a_time;

const TREES: &str = "[sync]\n[sync.trees]\nvault = \"vault\"\n";

struct Pair {
    primary: Node,
    standby: Node,
}

impl Pair {
    fn tree(&self) -> PathBuf {
        self.primary.data().join("app/vault")
    }

    fn copy(&self) -> PathBuf {
        self.standby.data().join("app/vault")
    }

    /// One pass: (whether `sync once` succeeded, its figures).
    fn pass(&self) -> (bool, Value) {
        let out =
            self.standby.cli(&["sync", "once", "--tree", "vault", "--json", "--primary", &self.primary.peer]);
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{text} {}: {e}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), v)
    }
}

fn unreadable_paths(v: &Value) -> Vec<String> {
    let mut paths: Vec<String> = v["unreadable_paths"]
        .as_array()
        .map(|a| a.iter().map(|p| p["path"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

fn chmod(path: &std::path::Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn unreadable_paths_are_reported_kept_at_the_standby_and_tried_again() {
    if !tandem::sync::meta::is_root() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "this test needs root, and CI runs as root");
        eprintln!("skipped: needs root");
        return;
    }
    let _serial = one_at_a_time();
    let mut pair = Pair { primary: Node::new("primary", TREES), standby: Node::new("standby", TREES) };
    let (tree, copy) = (pair.tree(), pair.copy());
    fs::create_dir_all(tree.join("locked")).unwrap();
    fs::write(tree.join("open.txt"), b"open").unwrap();
    fs::write(tree.join("secret.txt"), b"v1").unwrap();
    fs::write(tree.join("locked/inside.txt"), b"inside").unwrap();
    let (ok, first) = pair.pass();
    assert!(ok && first["unreadable"] == 0, "{first}");
    assert_eq!(fs::read(copy.join("secret.txt")).unwrap(), b"v1");

    // From now on the primary reads as an ordinary user would.
    pair.primary.restart_without_dac_override();
    fs::write(tree.join("secret.txt"), b"v2").unwrap();
    chmod(&tree.join("secret.txt"), 0o000);
    chmod(&tree.join("locked"), 0o000);
    let (ok, second) = pair.pass();
    assert!(!ok, "a pass that could not read everything must not exit 0: {second}");
    assert_eq!(second["unreadable"], 2, "{second}");
    assert_eq!(unreadable_paths(&second), ["locked", "secret.txt"], "{second}");
    assert!(second.to_string().contains("Permission denied"), "{second}");
    // The standby keeps what it had: neither deleted nor replaced.
    assert_eq!(fs::read(copy.join("secret.txt")).unwrap(), b"v1");
    assert_eq!(fs::read(copy.join("locked/inside.txt")).unwrap(), b"inside");

    let status: Value = serde_json::from_str(&pair.standby.ok(&["sync", "status", "--json"])).unwrap();
    assert_eq!(status[0]["unreadable"], 2, "{status}");
    let text = pair.standby.ok(&["sync", "status"]);
    assert!(text.contains("2 path(s) unreadable on the primary") && text.contains("secret.txt"), "{text}");

    // A pass about something else, from the primary's journal, still says so.
    let mut n = 0;
    let third = wait_for(Duration::from_secs(30), || {
        n += 1;
        fs::write(tree.join(format!("new-{n}.txt")), b"new").unwrap();
        let (_, v) = pair.pass();
        (v["full"] == false).then_some(v)
    })
    .expect("a pass from the primary's journal")
    .0;
    assert_eq!(third["unreadable"], 2, "{third}");
    assert_eq!(unreadable_paths(&third), ["locked", "secret.txt"], "{third}");

    // Readable again: they arrive, the report clears.
    chmod(&tree.join("secret.txt"), 0o644);
    chmod(&tree.join("locked"), 0o755);
    fs::write(tree.join("locked/later.txt"), b"later").unwrap();
    let (ok, fourth) = pair.pass();
    assert!(ok && fourth["unreadable"] == 0, "{fourth}");
    assert_eq!(fs::read(copy.join("secret.txt")).unwrap(), b"v2");
    assert_eq!(fs::read(copy.join("locked/later.txt")).unwrap(), b"later");
    let status: Value = serde_json::from_str(&pair.standby.ok(&["sync", "status", "--json"])).unwrap();
    assert_eq!(status[0]["unreadable"], 0, "{status}");
    // The folder is watched now that it can be: a write inside it comes from the journal.
    fs::write(tree.join("locked/after.txt"), b"after").unwrap();
    let (ok, fifth) = pair.pass();
    assert!(ok && fifth["full"] == false && fifth["files_whole"] == 1, "{fifth}");
    assert_eq!(fs::read(copy.join("locked/after.txt")).unwrap(), b"after");
}
