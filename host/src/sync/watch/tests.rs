//! Tests of the tree watcher with real inotify in temporary folders.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use tokio::time::timeout;

use super::*;

const WAIT: Duration = Duration::from_secs(10);
const DEBOUNCE: Duration = Duration::from_millis(50);

fn set(paths: &[&str]) -> HashSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

/// Whether `path` or one of its ancestor directories (a subtree) is in `seen`.
fn covered(seen: &HashSet<String>, path: &str) -> bool {
    let mut prefix = String::new();
    path.split('/').any(|part| {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        seen.contains(&prefix)
    })
}

/// Gathers batches until every path in `want` was seen (or is covered by a directory).
async fn until_seen(w: &mut TreeWatcher, want: &[&str]) -> HashSet<String> {
    let mut seen = HashSet::new();
    let end = Instant::now() + WAIT;
    while !want.iter().all(|p| covered(&seen, p)) {
        let left = end.saturating_duration_since(Instant::now());
        match timeout(left, w.next()).await {
            Ok(Some(Changes::Paths(paths))) => {
                seen.extend(paths.into_iter().map(|p| String::from_utf8(p).unwrap()))
            }
            Ok(other) => panic!("unexpected {other:?} while waiting for {want:?}"),
            Err(_) => panic!("timed out waiting for {want:?}; saw {seen:?}"),
        }
    }
    seen
}

/// `w` once its walk has watched every folder (blocking: fine for these small trees).
fn walked(w: TreeWatcher) -> TreeWatcher {
    let end = Instant::now() + WAIT;
    while w.shared.lock().walk != Walk::Done {
        assert!(Instant::now() < end, "the walk never finished: {:?}", w.shared.lock().walk);
        std::thread::sleep(Duration::from_millis(2));
    }
    w
}

async fn next_rescan(w: &mut TreeWatcher) -> String {
    let end = Instant::now() + WAIT;
    loop {
        match timeout(end.saturating_duration_since(Instant::now()), w.next()).await {
            Ok(Some(Changes::Rescan { reason })) => return reason,
            Ok(Some(Changes::Paths(_))) => {}
            other => panic!("expected a rescan, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn create_modify_delete_rename_are_reported() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("d/e")).unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), DEBOUNCE).unwrap());

    fs::write(t.path().join("a.txt"), b"1").unwrap();
    fs::write(t.path().join("d/e/f.txt"), b"1").unwrap();
    let seen = until_seen(&mut w, &["a.txt", "d/e/f.txt"]).await;
    assert!(seen.contains("a.txt") && seen.contains("d/e/f.txt"), "{seen:?}");

    fs::OpenOptions::new().append(true).open(t.path().join("d/e/f.txt")).unwrap();
    fs::write(t.path().join("d/e/f.txt"), b"22").unwrap();
    assert!(until_seen(&mut w, &["d/e/f.txt"]).await.contains("d/e/f.txt"));

    fs::rename(t.path().join("a.txt"), t.path().join("d/b.txt")).unwrap();
    let seen = until_seen(&mut w, &["a.txt", "d/b.txt"]).await;
    assert!(seen.contains("a.txt") && seen.contains("d/b.txt"), "{seen:?}");

    fs::remove_file(t.path().join("d/b.txt")).unwrap();
    assert!(until_seen(&mut w, &["d/b.txt"]).await.contains("d/b.txt"));

    let mut perms = fs::metadata(t.path().join("d/e/f.txt")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(t.path().join("d/e/f.txt"), perms).unwrap();
    assert!(until_seen(&mut w, &["d/e/f.txt"]).await.contains("d/e/f.txt"));

    fs::remove_dir_all(t.path().join("d")).unwrap();
    until_seen(&mut w, &["d"]).await;
}

#[tokio::test]
async fn file_in_fresh_subdirectory_is_reported_and_the_subdirectory_is_watched() {
    let t = tempfile::tempdir().unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), DEBOUNCE).unwrap());

    fs::create_dir_all(t.path().join("new/deeper")).unwrap();
    fs::write(t.path().join("new/deeper/f"), b"x").unwrap();
    let seen = until_seen(&mut w, &["new/deeper/f"]).await;
    assert!(seen.contains("new"), "the new directory itself is reported: {seen:?}");

    // notify has added watches for the new directories by now: a later file is reported
    // under its own name.
    tokio::time::sleep(Duration::from_millis(100)).await;
    fs::write(t.path().join("new/deeper/g"), b"y").unwrap();
    let seen = until_seen(&mut w, &["new/deeper/g"]).await;
    assert!(seen.contains("new/deeper/g"), "{seen:?}");
}

#[tokio::test]
async fn directory_moved_in_is_reported_and_watched() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir_in(t.path()).unwrap();
    fs::create_dir(t.path().join("tree")).unwrap();
    fs::create_dir_all(outside.path().join("m/n")).unwrap();
    let mut w = walked(TreeWatcher::start(&t.path().join("tree"), DEBOUNCE).unwrap());

    fs::rename(outside.path().join("m"), t.path().join("tree/m")).unwrap();
    until_seen(&mut w, &["m"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    fs::write(t.path().join("tree/m/n/f"), b"x").unwrap();
    assert!(until_seen(&mut w, &["m/n/f"]).await.contains("m/n/f"));
}

#[tokio::test]
async fn temp_names_are_ignored() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("sub")).unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), DEBOUNCE).unwrap());

    fs::write(t.path().join(".tandem-tmp.1-1"), b"x").unwrap();
    fs::write(t.path().join("sub/.tandem-tmp.1-2"), b"x").unwrap();
    fs::rename(t.path().join("sub/.tandem-tmp.1-2"), t.path().join("sub/final")).unwrap();
    fs::remove_file(t.path().join(".tandem-tmp.1-1")).unwrap();
    // inotify keeps order: once the sentinel is seen, every earlier event has been too.
    fs::write(t.path().join("sentinel"), b"x").unwrap();
    let seen = until_seen(&mut w, &["sub/final", "sentinel"]).await;
    assert_eq!(seen, set(&["sub/final", "sentinel"]));
}

#[tokio::test]
async fn a_burst_is_grouped_into_few_batches() {
    let t = tempfile::tempdir().unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), Duration::from_millis(100)).unwrap());

    let names: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
    for name in &names {
        fs::write(t.path().join(name), b"burst").unwrap();
    }
    let mut batches = 0;
    let mut seen = HashSet::new();
    while let Ok(Some(changes)) = timeout(Duration::from_secs(1), w.next()).await {
        let Changes::Paths(paths) = changes else { panic!("unexpected {changes:?}") };
        batches += 1;
        seen.extend(paths);
    }
    assert_eq!(seen, names.iter().map(|n| n.as_bytes().to_vec()).collect());
    assert!(batches <= 3, "100 writes came in {batches} batches");
}

#[tokio::test]
async fn a_busy_tree_still_ships_after_max_delay() {
    let t = tempfile::tempdir().unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), Duration::from_millis(100)).unwrap());
    let path = t.path().join("busy");
    let writer = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            fs::write(&path, b"again").unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let start = Instant::now();
    let changes = timeout(WAIT, w.next()).await.unwrap().unwrap();
    let took = start.elapsed();
    writer.join().unwrap();
    assert_eq!(changes, Changes::Paths(vec![b"busy".to_vec()]));
    // max_delay is 400 ms after the first event; writes go on for 2 s.
    assert!(took < Duration::from_millis(1500), "next() took {took:?} on a busy tree");
}

#[test]
fn take_does_not_block() {
    let t = tempfile::tempdir().unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), DEBOUNCE).unwrap());
    let start = Instant::now();
    assert_eq!(w.take(), None);
    assert!(start.elapsed() < Duration::from_millis(50));

    fs::write(t.path().join("x"), b"x").unwrap();
    let end = Instant::now() + WAIT;
    let changes = loop {
        if let Some(c) = w.take() {
            break c;
        }
        assert!(Instant::now() < end, "take() never saw the write");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(changes, Changes::Paths(vec![b"x".to_vec()]));
    std::thread::sleep(Duration::from_millis(100)); // CLOSE_WRITE may trail MODIFY
    w.take();
    assert_eq!(w.take(), None);
}

#[tokio::test]
async fn symlinked_directory_outside_is_not_watched_through() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(outside.path().join("inner")).unwrap();
    symlink(outside.path(), t.path().join("link")).unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), DEBOUNCE).unwrap());

    symlink(outside.path(), t.path().join("link2")).unwrap();
    until_seen(&mut w, &["link2"]).await;
    fs::write(outside.path().join("x"), b"x").unwrap();
    fs::write(outside.path().join("inner/y"), b"y").unwrap();
    fs::create_dir(outside.path().join("newdir")).unwrap();
    fs::write(outside.path().join("newdir/z"), b"z").unwrap();
    fs::write(t.path().join("sentinel"), b"x").unwrap();
    let seen = until_seen(&mut w, &["sentinel"]).await;
    assert_eq!(seen, set(&["sentinel"]));

    // Replacing the link entry itself is a change of the tree.
    fs::remove_file(t.path().join("link")).unwrap();
    until_seen(&mut w, &["link"]).await;
}

#[tokio::test]
async fn too_many_paths_collapse_into_a_rescan() {
    let t = tempfile::tempdir().unwrap();
    let mut w = walked(TreeWatcher::start_with(t.path(), DEBOUNCE, DEBOUNCE * 4, 10).unwrap());

    for i in 0..20 {
        fs::write(t.path().join(format!("f{i}")), b"x").unwrap();
    }
    assert!(next_rescan(&mut w).await.contains("more than 10"));
    assert_eq!(w.take(), None, "the rescan took the paths along");

    // Afterwards paths are gathered again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.take();
    fs::write(t.path().join("after"), b"x").unwrap();
    assert_eq!(until_seen(&mut w, &["after"]).await, set(&["after"]));
}

#[tokio::test]
async fn root_moved_or_removed_asks_for_a_rescan() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("root")).unwrap();
    let mut w = walked(TreeWatcher::start(&t.path().join("root"), DEBOUNCE).unwrap());
    fs::rename(t.path().join("root"), t.path().join("moved")).unwrap();
    assert!(next_rescan(&mut w).await.contains("moved or removed"));

    fs::create_dir(t.path().join("root2")).unwrap();
    let mut w = walked(TreeWatcher::start(&t.path().join("root2"), DEBOUNCE).unwrap());
    fs::remove_dir(t.path().join("root2")).unwrap();
    assert!(next_rescan(&mut w).await.contains("moved or removed"));
}

#[test]
fn start_rejects_a_missing_root_or_a_file() {
    let t = tempfile::tempdir().unwrap();
    let err = TreeWatcher::start(&t.path().join("missing"), DEBOUNCE).err().unwrap();
    assert!(matches!(err, WatchError::Root { .. }), "{err}");
    fs::write(t.path().join("file"), b"x").unwrap();
    let err = TreeWatcher::start(&t.path().join("file"), DEBOUNCE).err().unwrap();
    assert!(matches!(err, WatchError::NotADirectory(_)), "{err}");
}

/// The regression behind this watcher: notify's mask included IN_OPEN, so every read of the
/// tree queued an event, and a reader overflowed the queue (16,384 here) over and over, each
/// time resetting the journal. Our mask asks for changes only.
#[tokio::test]
async fn reading_the_tree_queues_nothing() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("d/e")).unwrap();
    for i in 0..50 {
        fs::write(t.path().join(format!("d/e/f{i}")), b"content").unwrap();
    }
    let mut w = walked(TreeWatcher::start(t.path(), DEBOUNCE).unwrap());
    // The kernel's own record of what the watches ask for.
    let root_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(t.path()).unwrap());
    let masks = watch_masks(root_ino);
    assert!(!masks.is_empty(), "the root's watch is listed in /proc/self/fdinfo");
    let reads = (libc::IN_OPEN | libc::IN_ACCESS | libc::IN_CLOSE_NOWRITE) as u64;
    assert!(masks.iter().all(|m| m & reads == 0), "a watch asks for reads: {masks:x?}");
    // Far more opens and reads than the kernel queue holds, while nothing drains it.
    w.shared.hold_reader(true);
    for _ in 0..400 {
        for i in 0..50 {
            let _ = fs::read(t.path().join(format!("d/e/f{i}"))).unwrap();
        }
        let _ = fs::read_dir(t.path().join("d/e")).unwrap().count();
    }
    w.shared.hold_reader(false);
    tokio::time::sleep(DEBOUNCE * 3).await;
    assert_eq!(w.take(), None, "reads were reported as changes");
    fs::write(t.path().join("sentinel"), b"x").unwrap();
    assert_eq!(until_seen(&mut w, &["sentinel"]).await, set(&["sentinel"]), "no rescan, only the write");
}

/// The masks of this process's inotify watches on inode `ino` (from /proc/self/fdinfo).
fn watch_masks(ino: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for fd in fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let Ok(text) = fs::read_to_string(fd.path()) else { continue };
        for line in text.lines().filter(|l| l.starts_with("inotify wd:")) {
            let field = |name: &str| {
                let v = line.split_whitespace().find_map(|f| f.strip_prefix(name))?;
                u64::from_str_radix(v, 16).ok()
            };
            if field("ino:") == Some(ino) {
                out.extend(field("mask:"));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_folder_renamed_inside_the_tree_reports_under_its_new_name() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("a/b/c")).unwrap();
    fs::create_dir_all(t.path().join("x")).unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), DEBOUNCE).unwrap());
    fs::rename(t.path().join("a"), t.path().join("x/renamed")).unwrap();
    assert_eq!(until_seen(&mut w, &["a", "x/renamed"]).await, set(&["a", "x/renamed"]));
    fs::write(t.path().join("x/renamed/b/c/f"), b"x").unwrap();
    assert_eq!(until_seen(&mut w, &["x/renamed/b/c/f"]).await, set(&["x/renamed/b/c/f"]));
}

#[tokio::test]
async fn a_folder_moved_out_of_the_tree_is_no_longer_watched() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    fs::create_dir_all(tree.join("gone/deep")).unwrap();
    let mut w = walked(TreeWatcher::start(&tree, DEBOUNCE).unwrap());
    fs::rename(tree.join("gone"), t.path().join("outside")).unwrap();
    assert_eq!(until_seen(&mut w, &["gone"]).await, set(&["gone"]));
    fs::write(t.path().join("outside/deep/f"), b"x").unwrap();
    fs::write(tree.join("sentinel"), b"x").unwrap();
    assert_eq!(until_seen(&mut w, &["sentinel"]).await, set(&["sentinel"]), "nothing from outside");
}

#[tokio::test]
async fn an_overflow_costs_one_rescan_and_a_walk_then_every_folder_is_watched_again() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("old")).unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), DEBOUNCE).unwrap());
    w.shared.hold_reader(true);
    // More events than the kernel queue holds, and a folder whose creation is among the lost.
    for i in 0..7_000 {
        fs::write(t.path().join(format!("old/f{i}")), b"x").unwrap();
    }
    fs::create_dir_all(t.path().join("born/during")).unwrap();
    w.shared.hold_reader(false);
    assert!(next_rescan(&mut w).await.contains("overflowed"));
    w.ready().await.unwrap();
    w.take();
    fs::write(t.path().join("born/during/f"), b"x").unwrap();
    assert_eq!(until_seen(&mut w, &["born/during/f"]).await, set(&["born/during/f"]));
}

#[test]
fn start_returns_before_a_large_tree_is_walked() {
    let t = tempfile::tempdir().unwrap();
    for i in 0..10_000 {
        fs::create_dir_all(t.path().join(format!("d{}/e{i}", i % 100))).unwrap();
    }
    let start = Instant::now();
    let w = TreeWatcher::start(t.path(), DEBOUNCE).unwrap();
    let returned = start.elapsed();
    let w = walked(w);
    let walked_in = start.elapsed();
    assert!(returned * 3 < walked_in, "start took {returned:?}, the walk {walked_in:?}");
    drop(w);
}

/// Latency from a write to `next()` returning, debounce 50 ms, over 200 writes. Run with
/// `cargo test -- --ignored --nocapture latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn latency() {
    let t = tempfile::tempdir().unwrap();
    let mut w = walked(TreeWatcher::start(t.path(), DEBOUNCE).unwrap());
    let mut lat = Vec::new();
    for i in 0..200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.take();
        let start = Instant::now();
        fs::write(t.path().join(format!("f{}", i % 10)), b"x").unwrap();
        let changes = timeout(WAIT, w.next()).await.unwrap().unwrap();
        lat.push(start.elapsed());
        assert!(matches!(changes, Changes::Paths(_)));
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "write -> next() latency, debounce 50 ms, n=200: min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(lat[0]),
        ms(lat[100]),
        ms(lat[197]),
        ms(lat[199])
    );
}

#[tokio::test]
async fn after_a_barrier_every_earlier_write_is_recorded() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    let w = walked(
        TreeWatcher::start(&tree, Duration::from_secs(5))
            .unwrap()
            .with_barrier(&t.path().join("barrier"))
            .unwrap(),
    );
    let mut w = w;
    for round in 0..20 {
        let name = format!("f{round}");
        fs::write(tree.join(&name), b"x").unwrap();
        assert!(w.barrier(WAIT).await, "the barrier's marker was seen");
        match w.take() {
            Some(Changes::Paths(p)) => {
                assert!(p.contains(&name.clone().into_bytes()), "{name} missing: {p:?}")
            }
            other => panic!("round {round}: {:?}", other.is_some()),
        }
    }
    // The barrier folder's own events never show up as tree changes.
    assert!(w.take().is_none());
    // Without a barrier folder there is no barrier.
    let plain = walked(TreeWatcher::start(&tree, DEBOUNCE).unwrap());
    assert!(!plain.barrier(Duration::from_millis(100)).await);
}

/// The fault checker's sync finding (seed 0xb64c684a5542b36d: the primary SIGSTOPped while a
/// writer renamed folders over each other, removed and recreated them): once the queued events
/// are read, a write in any folder of the tree is reported under its path (or a rescan is
/// asked for). Reader held = the primary stopped: every event of the churn lands in one batch.
#[tokio::test]
async fn folder_churn_read_in_one_batch_leaves_every_folder_reported() {
    for seed in 1..=40u64 {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in 0..5 {
            fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
            fs::write(root.join(format!("d{d}/f")), b"x").unwrap();
        }
        let mut w = walked(TreeWatcher::start(root, DEBOUNCE).unwrap());
        w.shared.hold_reader(true);
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for i in 0..60 {
            let (a, b) = (next(5), next(5));
            let _ = match next(4) {
                0 => fs::rename(root.join(format!("d{a}")), root.join(format!("d{b}x")))
                    .and_then(|_| fs::rename(root.join(format!("d{b}x")), root.join(format!("d{b}")))),
                1 => fs::remove_dir(root.join(format!("d{a}"))),
                2 => fs::remove_file(root.join(format!("d{a}/f"))),
                _ => fs::create_dir_all(root.join(format!("d{a}")))
                    .and_then(|_| fs::write(root.join(format!("d{a}/f{i}")), b"y")),
            };
        }
        w.shared.hold_reader(false);
        // Drain what the churn queued.
        while let Ok(Some(_)) = timeout(DEBOUNCE * 6, w.next()).await {}
        let mut folders = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                    folders.push(e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        // A rescan is a correct answer (the pass compares everything); after it, every folder
        // must be watched under its name.
        for round in 0..2 {
            let markers: Vec<String> = folders.iter().map(|f| format!("{f}/marker{round}")).collect();
            for m in &markers {
                fs::write(root.join(m), b"m").unwrap();
            }
            let mut seen = HashSet::new();
            let end = Instant::now() + WAIT;
            let mut rescanned = false;
            while !markers.iter().all(|m| covered(&seen, m)) {
                match timeout(end.saturating_duration_since(Instant::now()), w.next()).await {
                    Ok(Some(Changes::Paths(paths))) => {
                        seen.extend(paths.into_iter().map(|p| String::from_utf8(p).unwrap()))
                    }
                    Ok(Some(Changes::Rescan { .. })) if round == 0 => {
                        rescanned = true;
                        break;
                    }
                    other => panic!(
                        "seed {seed} round {round}: writes in {:?} never reported ({other:?}); saw {seen:?}",
                        markers.iter().filter(|m| !covered(&seen, m)).collect::<Vec<_>>()
                    ),
                }
            }
            if !rescanned {
                break;
            }
            w.ready().await.unwrap();
            while let Ok(Some(_)) = timeout(DEBOUNCE * 6, w.next()).await {}
        }
    }
}
