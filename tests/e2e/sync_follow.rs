//! Continuous tree sync with two real daemons: a standby whose configuration names its
//! primary follows every tree on its own. Shows the initial copy, each new write arriving by
//! itself (the write-to-standby times are printed; the goal lives in the benchmark), `sync
//! status` telling the truth, and a standby killed with `kill -9` resuming from where it was:
//! its next pass moves only what changed meanwhile, not a full copy.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::Node;
use crate::support::wait_for;
use crate::sync_e2e::{assert_same, listing, one_at_a_time};

fn vault_status(standby: &Node) -> Value {
    let out = standby.ok(&["sync", "status", "--json"]);
    let all: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
    all.as_array().unwrap().iter().find(|t| t["tree"] == "vault").cloned().expect("vault in the status")
}

/// Waits until the primary watches the vault tree (a folder made after its start is picked up
/// by a retry, every 5 s).
fn watched(primary: &Node) {
    wait_for(Duration::from_secs(20), || {
        primary.log().contains("watching the tree for changes tree=\"vault\"").then_some(())
    })
    .unwrap_or_else(|| panic!("the primary never watched the tree:\n{}", primary.log()));
}

/// One tree only: nested default trees (vault/reports) keep their own roots' times apart.
const VAULT_ONLY: &str = "[sync.trees]\nvault = \"vault\"\n";

/// A primary serving the vault under `home`.
fn primary_of(home: &std::path::Path) -> Node {
    Node::new("primary", &format!("[sync]\napp_home = \"{}\"\n{VAULT_ONLY}", home.display()))
}

/// A standby following `primary`'s vault.
fn standby_of(primary: &Node) -> Node {
    Node::new("standby", &format!("[sync]\nprimary = \"{}\"\n{VAULT_ONLY}", primary.peer))
}

/// Writes one file at a time until one arrives from the primary's journal: the full passes
/// of the start (no journal yet, then the first with one) are over. Returns how many it wrote.
fn until_from_journal(standby: &Node, vault: &std::path::Path, copy: &std::path::Path) -> u64 {
    for i in 0..50 {
        fs::write(vault.join(format!("first-{i}.txt")), b"first\n").unwrap();
        converge(vault, copy, "a first write");
        let from_journal = wait_for(Duration::from_secs(2), || {
            Some(vault_status(standby)).filter(|st| st["last_change"]["full"] == false)
        });
        if from_journal.is_some() {
            return i + 1;
        }
    }
    panic!("no pass from the journal: {}", vault_status(standby));
}

fn converge(primary: &std::path::Path, copy: &std::path::Path, after: &str) {
    let equal = wait_for(Duration::from_secs(30), || {
        (copy.is_dir() && listing(primary) == listing(copy)).then_some(())
    });
    if equal.is_none() {
        assert_same(primary, copy, after);
    }
}

#[test]
fn a_following_standby_gets_each_write_by_itself_and_resumes_after_kill_9() {
    let _one = one_at_a_time();
    // The tree's folder exists before the primary starts, so it is watched from the start.
    let home = tempfile::tempdir().unwrap();
    let vault = home.path().join("vault");
    fs::create_dir_all(vault.join("docs/deep")).unwrap();
    let primary = primary_of(home.path());
    for i in 0..50 {
        fs::write(vault.join(format!("docs/deep/f{i}.txt")), format!("file {i}\n").repeat(i + 1)).unwrap();
    }
    let mut standby = standby_of(&primary);
    let copy = standby.data().join("app/vault");
    converge(&vault, &copy, "the initial copy");

    // The tree's folder was made after the daemon started: its watch comes on a retry.
    watched(&primary);
    let firsts = until_from_journal(&standby, &vault, &copy);
    let base = standby.data().join("sync/vault.standby.index");
    let stamp =
        |p: &std::path::Path| fs::metadata(p).map(|m| (m.ino(), m.mtime_nsec(), m.mtime(), m.len())).ok();
    let base_before = stamp(&base).expect("the standby's index base");

    // Each write ships by itself: no `sync once`.
    let mut lags = Vec::new();
    for i in 0..20 {
        let name = format!("docs/new-{i}.txt");
        let content = format!("written at step {i}\n");
        let written = Instant::now();
        fs::write(vault.join(&name), &content).unwrap();
        wait_for(Duration::from_secs(10), || {
            fs::read_to_string(copy.join(&name)).ok().filter(|c| *c == content)
        })
        .unwrap_or_else(|| panic!("{name} never reached the standby"));
        lags.push(written.elapsed());
    }
    lags.sort();
    eprintln!("write to standby: p50 {:?}, max {:?}", lags[lags.len() / 2], lags[lags.len() - 1]);
    converge(&vault, &copy, "20 single writes");
    // Twenty one-file passes appended to the index's log; none rewrote the whole index (each
    // did, once, and a 200,000-entry tree then took seconds per pass).
    assert_eq!(stamp(&base), Some(base_before), "a one-file pass rewrote the whole index");
    let log = stamp(&standby.data().join("sync/vault.standby.index.log")).expect("the index's change log");
    assert!(log.3 > 0 && log.3 < 64 << 10, "the log holds the passes' changes only: {} bytes", log.3);

    // The status file is written just after a pass lands: under load it may trail the files.
    let st = wait_for(Duration::from_secs(10), || {
        Some(vault_status(&standby)).filter(|st| st["files_total"].as_u64().unwrap_or(0) >= 70 + firsts)
    })
    .map(|(st, _)| st)
    .unwrap_or_else(|| {
        panic!("the status never counted the {} files: {}", 70 + firsts, vault_status(&standby))
    });
    assert_eq!(st["following"], true, "{st}");
    assert!(st["in_sync_ms"].as_u64().is_some(), "{st}");

    // kill -9 of the standby; the primary changes meanwhile; the restarted standby resumes.
    standby.kill9();
    fs::write(vault.join("docs/while-down.txt"), b"written while the standby was down\n").unwrap();
    fs::remove_file(vault.join("docs/deep/f3.txt")).unwrap();
    fs::write(vault.join("docs/deep/f4.txt"), b"changed\n").unwrap();
    let before = vault_status(&standby)["files_total"].as_u64().unwrap();
    standby.start();
    converge(&vault, &copy, "the standby's restart");
    // The status is written just after the pass lands.
    let moved = |st: &Value| st["files_total"].as_u64().unwrap() > before;
    let st = wait_for(Duration::from_secs(10), || Some(vault_status(&standby)).filter(moved))
        .map(|(st, _)| st)
        .expect("the resumed pass is in the status");
    // From the journal when the primary had confirmed the standby's last pass before the
    // kill, else a full comparison (the kill can land between the two): either way only the
    // changes travel.
    let change = &st["last_change"];
    assert_eq!(change["deleted"], 1, "{st}");
    assert_eq!(st["files_total"].as_u64().unwrap() - before, 2, "only the two changed files travelled: {st}");
    // The restarted standby read its index as base plus log: one more write travels alone.
    fs::write(vault.join("docs/after-restart.txt"), b"after\n").unwrap();
    converge(&vault, &copy, "a write after the restart");
}

/// A primary that cannot watch a tree yet (its folder appears only once the standby asks for
/// it; the watcher retries every 5 s) answers each waiting pass at once with a full pass: the
/// standby paces those instead of scanning the primary's tree back to back.
#[test]
fn a_standby_paces_its_passes_while_the_primary_has_no_journal() {
    let _one = one_at_a_time();
    let primary = Node::new("primary", &format!("[sync]\n{VAULT_ONLY}"));
    assert!(!primary.data().join("app/vault").exists(), "the tree's folder is missing at start");
    let _standby = standby_of(&primary);
    std::thread::sleep(Duration::from_secs(3));
    let log = primary.log();
    let served = log.lines().filter(|l| l.contains("sync pass served") && l.contains("tree=vault")).count();
    let watching = log.contains("watching the tree for changes tree=\"vault\"");
    assert!(served >= 1, "the standby passed at least once:\n{log}");
    // Unpaced, a loopback standby ran hundreds of full passes in these 3 s.
    assert!(served <= 12 || watching, "{served} full passes in 3 s without a journal");
}

/// A process reading the whole tree over and over (a backup, the application, rsync) must not
/// cost the primary its journal: with notify's mask every open queued an event, the queue
/// overflowed, and each overflow reset the journal (full passes followed). Writes made while
/// the reader runs arrive each by itself, from the journal, and the journal is never reset.
#[test]
fn a_reader_going_through_the_tree_never_resets_the_primarys_journal() {
    let _one = one_at_a_time();
    let home = tempfile::tempdir().unwrap();
    let vault = home.path().join("vault");
    for d in 0..20 {
        fs::create_dir_all(vault.join(format!("d{d}"))).unwrap();
        for f in 0..20 {
            fs::write(vault.join(format!("d{d}/f{f}.txt")), format!("{d} {f}\n").repeat(20)).unwrap();
        }
    }
    let primary = primary_of(home.path());
    let standby = standby_of(&primary);
    let copy = standby.data().join("app/vault");
    converge(&vault, &copy, "the initial copy");
    watched(&primary);
    until_from_journal(&standby, &vault, &copy);
    let resets_before = primary.log().matches("tree journal reset").count();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, vault) = (stop.clone(), vault.clone());
        std::thread::spawn(move || {
            // It reads until told to stop and past the kernel queue's 16,384 events, so a
            // loaded machine writing fast cannot end the test before the queue could overflow.
            let mut opened = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || opened <= 20_000 {
                for d in 0..20 {
                    for f in 0..20 {
                        let _ = fs::read(vault.join(format!("d{d}/f{f}.txt")));
                        opened += 1;
                    }
                }
            }
            opened
        })
    };
    for i in 0..10 {
        let name = format!("d{i}/during-{i}.txt");
        fs::write(vault.join(&name), format!("written while the tree was read, {i}\n")).unwrap();
        wait_for(Duration::from_secs(10), || copy.join(&name).exists().then_some(()))
            .unwrap_or_else(|| panic!("{name} never reached the standby while the tree was read"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = reader.join().unwrap();
    let name = "d19/after-the-reads.txt";
    fs::write(vault.join(name), "written after the reader stopped\n").unwrap();
    wait_for(Duration::from_secs(10), || copy.join(name).exists().then_some(()))
        .unwrap_or_else(|| panic!("{name} never reached the standby after the tree was read"));
    converge(&vault, &copy, "the writes made while the tree was read");
    assert!(opened > 20_000, "the reader opened more files than the kernel queue holds events: {opened}");
    let resets = primary.log().matches("tree journal reset").count() - resets_before;
    assert_eq!(resets, 0, "the reader reset the primary's journal");
    let st = vault_status(&standby);
    let log = primary.log();
    let passes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sync pass served") || l.contains("journal") || l.contains("watch"))
        .collect();
    assert_eq!(
        st["last_change"]["full"],
        false,
        "the last pass came from the journal: {st}\n{}",
        passes.join("\n")
    );
}

/// A file a pass from the journal sent is held with its content hash: a change of its mode
/// alone afterwards goes as metadata only. (The journal recorded what it sent without a hash,
/// so the same chmod sent the whole file again.)
#[test]
fn a_mode_change_after_a_pass_from_the_journal_sends_no_content() {
    let _one = one_at_a_time();
    let home = tempfile::tempdir().unwrap();
    let vault = home.path().join("vault");
    fs::create_dir_all(&vault).unwrap();
    let primary = primary_of(home.path());
    let standby = standby_of(&primary);
    let copy = standby.data().join("app/vault");
    watched(&primary);
    until_from_journal(&standby, &vault, &copy);
    // One large file and one small (they go by different paths), sent from the journal.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(vault.join("big.bin"), &big).unwrap();
    fs::write(vault.join("small.txt"), b"small\n").unwrap();
    converge(&vault, &copy, "the new files");
    let st = vault_status(&standby);
    assert_eq!(st["last_change"]["full"], false, "sent from the journal: {st}");

    let now_ms =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for name in ["big.bin", "small.txt"] {
        let bytes_before = vault_status(&standby)["bytes_total"].as_u64();
        let mut perms = fs::metadata(vault.join(name)).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        fs::set_permissions(vault.join(name), perms).unwrap();
        wait_for(Duration::from_secs(30), || {
            (fs::metadata(copy.join(name)).unwrap().mode() & 0o777 == 0o600).then_some(())
        })
        .unwrap_or_else(|| panic!("the mode of {name} never arrived: {}", vault_status(&standby)));
        // The pass that applied it has written its status once a pass ends after now.
        let seen = now_ms();
        let (st, _) = wait_for(Duration::from_secs(30), || {
            Some(vault_status(&standby)).filter(|st| st["last_pass_ms"].as_u64() >= Some(seen))
        })
        .expect("no pass ended after the mode arrived");
        let change = &st["last_change"];
        assert_eq!(st["bytes_total"].as_u64(), bytes_before, "{name}: a mode change sends no content: {st}");
        assert_eq!(
            (change["full"].as_bool(), change["meta_only"].as_u64(), change["content_bytes"].as_u64()),
            (Some(false), Some(1), Some(0)),
            "{name}: {change}"
        );
    }
}
