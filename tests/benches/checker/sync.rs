//! Part B, tree sync: a primary and a standby that follows it (each in its own lab host when
//! run as root), a writer making random file writes, appends, renames and deletions in the
//! primary's tree while faults hit either side; after heal the standby's copy must equal the
//! primary's tree (kinds, contents, modes, file mtimes). Must never compare a tree the writer
//! is still changing.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::faults::{self, Played};
use crate::lab::Lab;
use crate::member::Member;
use crate::rng::Rng;
use crate::tally::Outcome;

/// Primary in host a, standby in host b (the names link cuts use).
const NAMES: [&str; 2] = ["a", "b"];
const LAB_PORTS: (u16, u16) = (7300, 7400);
const TREES: &str = "[sync.trees]\nvault = \"vault\"\n";
/// How long the healed pair has to bring the copy level before a difference is a violation.
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);
/// Pause between the writer's operations.
const WRITE_PAUSE: Duration = Duration::from_millis(15);
/// Files and folders the writer picks from (names repeat, so renames and deletions hit).
const FILES: u64 = 40;
const DIRS: u64 = 5;
const MAX_FILE: u64 = 96 << 10;

pub fn run(seed: u64, lab: Option<&Lab>, window: Duration, faults_per: usize) -> Outcome {
    let mut out = Outcome::default();
    let mut rng = Rng::new(seed);
    let schedule = faults::schedule(&mut rng, NAMES.len(), window, faults_per, lab.is_some());
    eprintln!("  faults: {}", faults::describe(&schedule, &NAMES));
    let home = tempfile::Builder::new().prefix("checker-home-").tempdir().unwrap();
    let vault = home.path().join("vault");
    std::fs::create_dir_all(&vault).unwrap();
    let mut seeder = Rng::new(seed ^ 0x5eed);
    for _ in 0..60 {
        op(&mut seeder, &vault);
    }
    let mut members = match pair(lab, home.path()) {
        Ok(m) => m,
        Err(e) => {
            out.violations.push(format!("sync seed {seed:#x}: the pair did not start: {e}"));
            return out;
        }
    };
    let copy = members[1].data().join("app/vault");
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, ops, vault) = (stop.clone(), ops.clone(), vault.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed.rotate_left(17));
            while !stop.load(Ordering::SeqCst) {
                op(&mut rng, &vault);
                ops.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(WRITE_PAUSE);
            }
        })
    };
    let mut played = Played::default();
    faults::play(&schedule, &mut members, lab, &mut played);
    faults::heal_all(&mut members, lab, &mut played);
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    out.file_ops = ops.load(Ordering::SeqCst);
    for (k, n) in &played.injected {
        *out.faults.entry(*k).or_default() += n;
    }
    for f in &played.failures {
        out.violations.push(format!("sync seed {seed:#x}: {f}"));
    }
    let start = Instant::now();
    let want = listing(&vault);
    let mut have = listing(&copy);
    while have != want && start.elapsed() < CONVERGE_LIMIT {
        std::thread::sleep(Duration::from_millis(250));
        have = listing(&copy);
    }
    out.converge_ms.push(start.elapsed().as_millis() as u64);
    if have != want {
        let differ: Vec<&String> =
            want.keys().chain(have.keys()).filter(|k| want.get(*k) != have.get(*k)).take(8).collect();
        let first =
            differ.first().map(|k| format!(" ({k}: primary {:?}, standby {:?})", want.get(*k), have.get(*k)));
        out.violations.push(format!(
            "sync seed {seed:#x}: after heal and {} s the standby's copy differs from the primary's tree in {} entries, e.g. {differ:?}{}; the standby's status: {}",
            CONVERGE_LIMIT.as_secs(),
            want.keys().chain(have.keys()).filter(|k| want.get(*k) != have.get(*k)).count(),
            first.unwrap_or_default(),
            claim(&members[1])
        ));
    }
    if !out.violations.is_empty() {
        out.kept.push(format!("primary's tree: {}", home.keep().display()));
        for m in members {
            let name = m.name.clone();
            out.kept.push(format!("{name}: {}", m.keep().display()));
        }
    }
    out
}

/// What the standby's status file says about the tree (following, in sync, last error).
fn claim(standby: &Member) -> String {
    let text = std::fs::read_to_string(standby.data().join("sync/vault.status.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let in_sync = v["in_sync_ms"].as_u64().is_some() && v["last_error"].is_null();
    format!(
        "following {}, last error {}{}",
        v["following"],
        v["last_error"],
        if in_sync { " (it claims to be in sync)" } else { "" }
    )
}

/// The primary (its tree under `home`) and a standby following it.
fn pair(lab: Option<&Lab>, home: &Path) -> Result<Vec<Member>, String> {
    let place = |name: &str| match lab {
        Some(lab) => {
            let h = lab.host(name);
            (Some(h.ns.clone()), h.ip.clone(), LAB_PORTS)
        }
        None => (
            None,
            "127.0.0.1".to_string(),
            (crate::common::low_port(22_000, 400), crate::common::low_port(22_000, 400)),
        ),
    };
    let (ns, ip, ports) = place(NAMES[0]);
    let primary = Member::new(
        NAMES[0],
        ns,
        &ip,
        ports,
        &format!("[sync]\napp_home = \"{}\"\n{TREES}", home.display()),
    )?;
    let (ns, ip, ports) = place(NAMES[1]);
    let standby =
        Member::new(NAMES[1], ns, &ip, ports, &format!("[sync]\nprimary = \"{}\"\n{TREES}", primary.peer))?;
    Ok(vec![primary, standby])
}

/// One random operation on the tree: write, append, rename (file or folder), delete, chmod.
fn op(rng: &mut Rng, root: &Path) {
    let file = |rng: &mut Rng| -> PathBuf {
        let d = rng.range(0, DIRS + 1);
        let f = rng.range(0, FILES);
        if d == DIRS { root.join(format!("f{f}")) } else { root.join(format!("d{d}/f{f}")) }
    };
    let _ = match rng.range(0, 100) {
        0..35 => {
            let p = file(rng);
            let _ = std::fs::create_dir_all(p.parent().unwrap());
            let len = rng.range(0, MAX_FILE) as usize;
            let byte = rng.next() as u8;
            std::fs::write(&p, vec![byte; len])
        }
        35..50 => {
            use std::io::Write;
            let p = file(rng);
            std::fs::OpenOptions::new()
                .append(true)
                .open(&p)
                .and_then(|mut f| f.write_all(&rng.next().to_le_bytes()))
        }
        50..70 => {
            let (from, to) = (file(rng), file(rng));
            let _ = std::fs::create_dir_all(to.parent().unwrap());
            std::fs::rename(from, to)
        }
        70..85 => std::fs::remove_file(file(rng)),
        85..92 => {
            use std::os::unix::fs::PermissionsExt;
            let mode = if rng.range(0, 2) == 0 { 0o644 } else { 0o600 };
            std::fs::set_permissions(file(rng), std::fs::Permissions::from_mode(mode))
        }
        92..97 => {
            let (a, b) = (rng.range(0, DIRS), rng.range(0, DIRS));
            std::fs::rename(root.join(format!("d{a}")), root.join(format!("d{b}x")))
                .and_then(|_| std::fs::rename(root.join(format!("d{b}x")), root.join(format!("d{b}"))))
        }
        _ => std::fs::remove_dir(root.join(format!("d{}", rng.range(0, DIRS)))),
    };
}

/// What a tree holds: relative path -> kind, mode, and for files size, mtime and a hash.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            out.insert(rel, format!("dir {:o}", meta.mode() & 0o7777));
            walk(root, &path, out);
        } else {
            let data = std::fs::read(&path).unwrap_or_default();
            out.insert(
                rel,
                format!(
                    "file {:o} {} bytes mtime {}.{:09} blake3 {}",
                    meta.mode() & 0o7777,
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    &blake3::hash(&data).to_hex()[..16]
                ),
            );
        }
    }
}
